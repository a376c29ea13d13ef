//! A full reload (SIGHUP, `POST /admin/v1/reload`, `parleyd reload`): the flows are reloaded
//! (all valid files, or nothing changes), and the configuration is read again from the same
//! sources to name the keys that changed. No config key is applied live: the engine's
//! settings are fixed at start, so a changed key is reported as needing a restart.

use serde::{Deserialize, Serialize};

use crate::actors::Engine;
use crate::config::Settings;

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadOutcome {
    /// The flows now running (id, version), when the reload applied them.
    pub flows: Vec<FlowVersion>,
    /// Why the flows were not reloaded (`file:line:col: message`); the old flows run on.
    pub flow_errors: Vec<String>,
    /// Why the configuration files could not be read again (nothing of them applied).
    pub config_errors: Vec<String>,
    /// Config keys whose value changed and that only a restart applies.
    pub restart_required: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowVersion {
    pub id: String,
    pub version: String,
}

impl ReloadOutcome {
    /// Everything that changed on disk is running now.
    pub fn is_complete(&self) -> bool {
        self.flow_errors.is_empty()
            && self.config_errors.is_empty()
            && self.restart_required.is_empty()
    }
}

/// Read the configuration again from the sources the daemon started with (the same
/// `--config FILE`, defaults, credentials and environment) and name the keys that differ.
pub fn config_changes(running: &Settings) -> Result<Vec<String>, Vec<String>> {
    match Settings::load(running.config_file.as_deref()) {
        Ok(on_disk) => Ok(running.fingerprint.changed_keys(&on_disk.fingerprint)),
        Err(e) => Err(e.to_string().lines().map(str::to_string).collect()),
    }
}

/// Reload flows and compare the configuration; `STATUS=` shows what was refused.
pub async fn reload(engine: &Engine) -> ReloadOutcome {
    let mut outcome = ReloadOutcome::default();
    match config_changes(&engine.settings) {
        Ok(keys) => {
            if !keys.is_empty() {
                tracing::warn!(keys = ?keys, "Configuration changed on disk; these keys apply only after a restart.");
            }
            crate::systemd::set_restart_needed(keys.clone());
            outcome.restart_required = keys;
        }
        Err(errors) => {
            tracing::error!(errors = ?errors, "Configuration no longer loads; the running one stays.");
            outcome.config_errors = errors;
        }
    }
    match &engine.flows {
        Some(registry) => {
            match crate::app::reload_flows(registry, &engine.settings.flows.dir, &engine.store)
                .await
            {
                Ok(loaded) => {
                    outcome.flows = loaded
                        .into_iter()
                        .map(|(id, version)| FlowVersion { id, version })
                        .collect()
                }
                Err(errors) => outcome.flow_errors = errors,
            }
        }
        None => {
            // No flows to reload (a test plugged its own logic): still tell systemd.
            crate::systemd::reloading().done(None);
        }
    }
    outcome
}

/// `parleyd reload`: ask the daemon configured by `settings` (its `http.listen` and
/// `admin.token`) to reload, wait for the outcome, and turn a refusal into an error that
/// lists every reason. Returns the summary to print on success.
pub async fn request(settings: &Settings, timeout: std::time::Duration) -> anyhow::Result<String> {
    use anyhow::Context;
    use secrecy::ExposeSecret;

    let token = settings.admin.enabled_token().ok_or_else(|| {
        anyhow::anyhow!("admin.token is not set: `parleyd reload` needs the admin API")
    })?;
    let mut addr: std::net::SocketAddr = settings
        .http
        .listen
        .parse()
        .context("http.listen is not an address")?;
    if addr.port() == 0 {
        anyhow::bail!("http.listen has port 0: the daemon's port is not known");
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/admin/v1/reload");
    let response = reqwest::Client::builder()
        .timeout(timeout)
        .build()?
        .post(&url)
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .with_context(|| format!("no answer from parleyd at {url}: is it running?"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let outcome: ReloadOutcome = match serde_json::from_str(&body) {
        Ok(outcome) if [200, 409, 422].contains(&status.as_u16()) => outcome,
        _ => anyhow::bail!(
            "the daemon refused the reload ({status}): {}",
            body.chars().take(500).collect::<String>()
        ),
    };
    let flows: Vec<String> = outcome
        .flows
        .iter()
        .map(|f| format!("{}@{}", f.id, f.version))
        .collect();
    let mut problems = Vec::new();
    if !outcome.flow_errors.is_empty() {
        problems.push("flows not reloaded; the running flows stay:".to_string());
        problems.extend(outcome.flow_errors.iter().cloned());
    }
    if !outcome.config_errors.is_empty() {
        problems.push("configuration not reloaded; the running one stays:".to_string());
        problems.extend(outcome.config_errors.iter().cloned());
    }
    if !outcome.restart_required.is_empty() {
        problems.push(format!(
            "configuration changed; only a restart applies these keys: {}",
            outcome.restart_required.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(format!(
            "ok: reloaded; {} flow(s) running: {}",
            flows.len(),
            flows.join(", ")
        ));
    }
    if outcome.flow_errors.is_empty() && !flows.is_empty() {
        problems.insert(0, format!("flows reloaded: {}", flows.join(", ")));
    }
    anyhow::bail!("reload incomplete:\n{}", problems.join("\n"))
}
