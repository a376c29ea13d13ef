//! A full reload (SIGHUP, `POST /admin/v1/reload`, `parleyd reload`): the flows are reloaded
//! (all valid files, or nothing changes), and the configuration is read again from the same
//! sources. Of the keys that changed, the live ones (those [`take_live_key`] takes) are
//! applied at once, all together or none; the others are named as needing a restart and
//! keep their running value until then.
//!
//! A live key is one that is read where it is used (through [`Engine::settings`]), or whose
//! user takes the new value here in one step: the log filter, the flows' HTTP client, the
//! accounts' send gates.

use serde::{Deserialize, Serialize};

use crate::actors::Engine;
use crate::config::{AccountSettings, Settings};

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
    /// Config keys whose new value is in force now.
    pub applied: Vec<String>,
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

/// The configuration read again, against the one running.
#[derive(Debug)]
pub struct ConfigChange {
    /// The running settings with the live keys that changed taken from disk (its fingerprint
    /// says so, so they are not reported again).
    pub next: Settings,
    /// Changed keys that `next` carries.
    pub applied: Vec<String>,
    /// Changed keys that keep their running value until a restart.
    pub restart_required: Vec<String>,
}

/// Sort the keys that differ between `running` and `on_disk` into applied and
/// restart-required, and build the settings to run with. Pure: nothing is swapped here.
pub fn plan(running: &Settings, on_disk: &Settings) -> ConfigChange {
    let mut next = running.clone();
    let (mut applied, mut restart_required) = (Vec::new(), Vec::new());
    for key in running.fingerprint.changed_keys(&on_disk.fingerprint) {
        if take_live_key(&mut next, on_disk, &key) {
            applied.push(key);
        } else {
            restart_required.push(key);
        }
    }
    next.fingerprint = running.fingerprint.adopt(&on_disk.fingerprint, &applied);
    ConfigChange {
        next,
        applied,
        restart_required,
    }
}

/// `campaigns.opt_out_keywords[2]` → `campaigns.opt_out_keywords`.
fn list_base(key: &str) -> &str {
    let mut base = key;
    while let Some(open) = base.strip_suffix(']').and_then(|b| b.rfind('[')) {
        base = &base[..open];
    }
    base
}

/// `accounts[3].daily_limit` → (3, `daily_limit`).
fn account_key(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("accounts[")?;
    let (index, field) = rest.split_once("].")?;
    Some((index.parse().ok()?, field))
}

/// Copy `key`'s value from `disk` into `next` if it is live; false if it is not. This is the
/// list of live keys (a list key such as `flows.http_allow` covers its elements). An
/// `[[accounts]]` key is live only while the block at that index is the same number, and
/// `daily_limit` only from one number to another: adding or removing the limit needs a
/// restart (the day's count is kept durably only under a limit).
fn take_live_key(next: &mut Settings, disk: &Settings, key: &str) -> bool {
    if let Some((i, field)) = account_key(key) {
        return match (next.accounts.get_mut(i), disk.accounts.get(i)) {
            (Some(running), Some(disk)) if running.phone_number_id == disk.phone_number_id => {
                take_account_key(running, disk, field)
            }
            _ => false,
        };
    }
    // Read by each reconciliation pass: the whole section is taken, templates included.
    if key == "commerce" || key.starts_with("commerce.") {
        next.commerce = disk.commerce.clone();
        return true;
    }
    // Read by the webhook sender on each pass.
    if key == "webhooks" || key.starts_with("webhooks.") {
        next.webhooks = disk.webhooks.clone();
        return true;
    }
    // Read by the retention sweeper on each pass.
    if key == "retention" || key.starts_with("retention.") {
        next.retention = disk.retention.clone();
        return true;
    }
    match list_base(key) {
        "log.level" => next.log.level = disk.log.level.clone(),
        "admin.token" => next.admin.token = disk.admin.token.clone(),
        "whatsapp.app_secret" => next.whatsapp.app_secret = disk.whatsapp.app_secret.clone(),
        "whatsapp.verify_token" => next.whatsapp.verify_token = disk.whatsapp.verify_token.clone(),
        "whatsapp.access_token" => next.whatsapp.access_token = disk.whatsapp.access_token.clone(),
        "flows.http_allow" => next.flows.http_allow = disk.flows.http_allow.clone(),
        "conversation.idle_timeout" => {
            next.conversation.idle_timeout = disk.conversation.idle_timeout
        }
        "conversation.max_event_attempts" => {
            next.conversation.max_event_attempts = disk.conversation.max_event_attempts
        }
        "conversation.outside_window" => {
            next.conversation.outside_window = disk.conversation.outside_window.clone()
        }
        "conversation.hold_for" => next.conversation.hold_for = disk.conversation.hold_for,
        "handoff.timeout" => next.handoff.timeout = disk.handoff.timeout,
        "media.download" => next.media.download = disk.media.download,
        "campaigns.opt_out_keywords" => {
            next.campaigns.opt_out_keywords = disk.campaigns.opt_out_keywords.clone()
        }
        "campaigns.opt_in_keywords" => {
            next.campaigns.opt_in_keywords = disk.campaigns.opt_in_keywords.clone()
        }
        "outbox.max_attempts" => next.outbox.max_attempts = disk.outbox.max_attempts,
        "outbox.backoff_base" => next.outbox.backoff_base = disk.outbox.backoff_base,
        "outbox.backoff_max" => next.outbox.backoff_max = disk.outbox.backoff_max,
        "outbox.ambiguous_resend_after" => {
            next.outbox.ambiguous_resend_after = disk.outbox.ambiguous_resend_after
        }
        _ => return false,
    }
    true
}

fn take_account_key(running: &mut AccountSettings, disk: &AccountSettings, field: &str) -> bool {
    match field {
        "access_token" => running.access_token = disk.access_token.clone(),
        "mark_read" => running.mark_read = disk.mark_read,
        "log_messages" => running.log_messages = disk.log_messages,
        "messages_per_second" => running.messages_per_second = disk.messages_per_second,
        "pair_rate_interval" => running.pair_rate_interval = disk.pair_rate_interval,
        "pair_rate_burst" => running.pair_rate_burst = disk.pair_rate_burst,
        "messaging_tier" => running.messaging_tier = disk.messaging_tier,
        "daily_limit" if running.daily_limit.is_some() && disk.daily_limit.is_some() => {
            running.daily_limit = disk.daily_limit
        }
        _ => return false,
    }
    true
}

/// Read the configuration again and apply its live keys: everything that can fail (reading,
/// validating, building the new log filter, flows' HTTP client and gate limits) happens
/// before anything is swapped, so a reload applies all its live keys or none.
fn reload_config(engine: &Engine) -> Result<(Vec<String>, Vec<String>), Vec<String>> {
    let running = engine.settings_arc();
    let on_disk = Settings::load(running.config_file.as_deref()).map_err(|e| {
        e.to_string()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    })?;
    let ConfigChange {
        next,
        applied,
        restart_required,
    } = plan(&running, &on_disk);
    if applied.is_empty() {
        return Ok((applied, restart_required));
    }
    let touched = |base: &str| applied.iter().any(|k| list_base(k) == base);
    let log_filter = if touched("log.level") {
        Some(
            crate::telemetry::filter_for(&next.log.level)
                .map_err(|e| vec![format!("log.level: {e}")])?,
        )
    } else {
        None
    };
    let outcall = if touched("flows.http_allow") {
        Some(
            crate::outcall::OutCaller::new(next.flows.http_allow())
                .map_err(|e| vec![format!("flows.http_allow: the HTTP client for flows: {e}")])?,
        )
    } else {
        None
    };
    let mut gates = Vec::new();
    for (i, account) in next.accounts.iter().enumerate() {
        let prefix = format!("accounts[{i}].");
        if applied.iter().any(|k| k.starts_with(&prefix)) {
            let limits = crate::sendgate::GateSettings::from_account(account)
                .map_err(|e| vec![format!("{prefix}timezone: {e}")])?;
            gates.push((account.phone_number_id.clone(), limits));
        }
    }
    // Nothing below fails.
    engine.settings.store(std::sync::Arc::new(next));
    if let Some(filter) = log_filter {
        crate::telemetry::set_level(filter);
    }
    if let Some(outcall) = outcall {
        engine.outcall.store(std::sync::Arc::new(outcall));
    }
    for (account, limits) in gates {
        engine.gates.retune(&account, limits);
    }
    Ok((applied, restart_required))
}

/// Reload flows and configuration; `RELOADING=1` … `READY=1` around it, and `STATUS=` shows
/// what was refused.
pub async fn reload(engine: &Engine) -> ReloadOutcome {
    let _one_at_a_time = engine.reload_lock.lock().await;
    let notified = crate::systemd::reloading();
    let mut outcome = ReloadOutcome::default();
    match reload_config(engine) {
        Ok((applied, restart)) => {
            if !applied.is_empty() {
                tracing::info!(keys = ?applied, "Configuration reloaded; these keys are in force now.");
            }
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "Configuration changed on disk; these keys apply only after a restart.");
            }
            crate::systemd::set_restart_needed(restart.clone());
            outcome.applied = applied;
            outcome.restart_required = restart;
        }
        Err(errors) => {
            tracing::error!(errors = ?errors, "Configuration no longer loads; the running one stays.");
            outcome.config_errors = errors;
        }
    }
    if let Some(registry) = &engine.flows {
        let dir = engine.settings().flows.dir.clone();
        match reload_flows_within(registry, &dir, &engine.store).await {
            Ok(loaded) => {
                outcome.flows = loaded
                    .into_iter()
                    .map(|(id, version)| FlowVersion { id, version })
                    .collect()
            }
            Err(errors) => outcome.flow_errors = errors,
        }
    }
    notified.done(engine.flows.as_ref());
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
    // The admin API is on `http.admin_listen` when that is set.
    let (key, listen) = match &settings.http.admin_listen {
        Some(admin) => ("http.admin_listen", admin),
        None => ("http.listen", &settings.http.listen),
    };
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("{key} is not an address"))?;
    if addr.port() == 0 {
        anyhow::bail!("{key} has port 0: the daemon's port is not known");
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
    let applied = (!outcome.applied.is_empty())
        .then(|| format!("configuration applied: {}", outcome.applied.join(", ")));
    if !outcome.restart_required.is_empty() {
        problems.push(format!(
            "configuration changed; only a restart applies these keys: {}",
            outcome.restart_required.join(", ")
        ));
    }
    if problems.is_empty() {
        let mut summary = format!(
            "ok: reloaded; {} flow(s) running: {}",
            flows.len(),
            flows.join(", ")
        );
        if let Some(applied) = applied {
            summary.push_str(&format!("\n{applied}"));
        }
        return Ok(summary);
    }
    if let Some(applied) = applied {
        problems.insert(0, applied);
    }
    if outcome.flow_errors.is_empty() && !flows.is_empty() {
        problems.insert(0, format!("flows reloaded: {}", flows.join(", ")));
    }
    anyhow::bail!("reload incomplete:\n{}", problems.join("\n"))
}

/// Reload the flows alone and log the outcome (the watcher and the admin API), one reload at
/// a time with SIGHUP's ([`reload`] takes the same lock), so two reloads never
/// race to swap sets or to tell systemd. Reading and validating runs on a blocking thread, so
/// a large set never holds up conversations; they see the new set once it is swapped in whole.
pub async fn reload_flows(
    engine: &Engine,
    flows: &crate::behaviour::FlowRegistry,
    dir: &std::path::Path,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let _one_at_a_time = engine.reload_lock.lock().await;
    let notified = crate::systemd::reloading();
    let outcome = reload_flows_within(flows, dir, &engine.store).await;
    notified.done(Some(flows));
    outcome
}

/// [`reload_flows`] inside a reload that tells systemd itself (`RELOADING=1` … `READY=1`).
pub async fn reload_flows_within(
    flows: &crate::behaviour::FlowRegistry,
    dir: &std::path::Path,
    store: &crate::store::Store,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let (registry, path) = (flows.clone(), dir.to_path_buf());
    let outcome = tokio::task::spawn_blocking(move || registry.reload(&path))
        .await
        .unwrap_or_else(|e| Err(vec![format!("the reload task failed: {e}")]));
    match &outcome {
        Ok(loaded) => {
            crate::metrics::metrics()
                .flow_reloads
                .inc("result=\"applied\"");
            tracing::info!(flows = loaded.len(), "Flows reloaded.");
            // Sessions that start on these versions can finish on them after a restart.
            if let Err(e) = store.save_flow_versions(&flows.sources()).await {
                tracing::warn!(error = %e, "Recording the new flow versions failed.");
            }
            // Earlier versions stay loaded exactly while a session still runs them.
            match store.flow_versions_in_use().await {
                Ok(rows) => {
                    let in_use: Vec<(String, String)> =
                        rows.into_iter().map(|(id, v, _)| (id, v)).collect();
                    flows.keep_in_use(&in_use);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the flow versions in use failed; every earlier version stays loaded.")
                }
            }
        }
        Err(errors) => {
            crate::metrics::metrics()
                .flow_reloads
                .inc("result=\"refused\"");
            tracing::error!(errors = ?errors, "Flow reload refused; the running flows stay.")
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const ACCOUNT: &str = "[[accounts]]\nphone_number_id = \"111\"\ndaily_limit = 1000\n";
    const OLD_TOKEN: &str = "old-admin-token-0123456789abcdef";
    const NEW_TOKEN: &str = "new-admin-token-0123456789abcdef";

    fn load(text: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(Some(&path)).unwrap()
    }

    #[test]
    fn live_keys_are_applied_and_the_others_named() {
        let running = load(&format!(
            "[admin]\ntoken = \"{OLD_TOKEN}\"\n[store]\nurl = \"sqlite://a.db\"\n{ACCOUNT}"
        ));
        let disk = load(&format!(
            "[admin]\ntoken = \"{NEW_TOKEN}\"\n[store]\nurl = \"sqlite://b.db\"\n[log]\nlevel = \"debug\"\n\
             [flows]\nhttp_allow = [\"10.0.0.0/8\", \"127.0.0.1\"]\n\
             [[accounts]]\nphone_number_id = \"111\"\ndaily_limit = 2000\nmessages_per_second = 5\n\
             access_token = \"acct\"\n",
        ));
        let change = plan(&running, &disk);
        assert_eq!(
            change.applied,
            [
                "accounts[0].access_token",
                "accounts[0].daily_limit",
                "accounts[0].messages_per_second",
                "admin.token",
                // The empty list was one key; its elements are new keys.
                "flows.http_allow",
                "flows.http_allow[0]",
                "flows.http_allow[1]",
                "log.level",
            ]
        );
        assert_eq!(change.restart_required, ["store.url"]);
        let next = &change.next;
        assert_eq!(
            next.admin.token.as_ref().unwrap().expose_secret(),
            NEW_TOKEN
        );
        assert_eq!(
            next.store.url, "sqlite://a.db",
            "a restart-only key keeps running"
        );
        assert_eq!(next.log.level, "debug");
        assert_eq!(next.flows.http_allow.len(), 2);
        let a = &next.accounts[0];
        assert_eq!((a.daily_limit, a.messages_per_second), (Some(2000), 5));
        assert_eq!(a.access_token.as_ref().unwrap().expose_secret(), "acct");

        // Read again: only the restart-only key is still reported.
        let again = plan(next, &disk);
        assert!(again.applied.is_empty(), "{:?}", again.applied);
        assert_eq!(again.restart_required, ["store.url"]);
    }

    #[test]
    fn a_changed_number_or_an_added_limit_needs_a_restart() {
        let running = load(&format!(
            "{ACCOUNT}[[accounts]]\nphone_number_id = \"222\"\n"
        ));
        let disk = load(
            "[[accounts]]\nphone_number_id = \"333\"\ndaily_limit = 5\n\
             [[accounts]]\nphone_number_id = \"222\"\ndaily_limit = 7\nmark_read = false\n\
             [[accounts]]\nphone_number_id = \"444\"\n",
        );
        let change = plan(&running, &disk);
        assert_eq!(change.applied, ["accounts[1].mark_read"]);
        assert_eq!(
            change.restart_required,
            [
                "accounts[0].daily_limit",
                "accounts[0].phone_number_id",
                "accounts[1].daily_limit",
                "accounts[2].phone_number_id",
            ]
        );
        assert_eq!(change.next.accounts.len(), 2, "no account added live");
        assert_eq!(change.next.accounts[0].daily_limit, Some(1000));
        assert_eq!(change.next.accounts[1].daily_limit, None);
        assert!(!change.next.accounts[1].mark_read);
        // Removing a limit is a restart too.
        let disk = load(
            "[[accounts]]\nphone_number_id = \"111\"\n[[accounts]]\nphone_number_id = \"222\"\n",
        );
        assert_eq!(
            plan(&running, &disk).restart_required,
            ["accounts[0].daily_limit"]
        );
    }

    #[test]
    fn retention_and_log_messages_are_live() {
        let running = load(ACCOUNT);
        let disk = load(&format!(
            "[retention]\nmessages = \"30d\"\nmedia = \"forever\"\n{ACCOUNT}log_messages = false\n"
        ));
        let change = plan(&running, &disk);
        assert!(
            change.restart_required.is_empty(),
            "{:?}",
            change.restart_required
        );
        assert_eq!(change.next.retention, disk.retention);
        assert_eq!(change.next.retention.media, crate::config::Window::Forever);
        assert_eq!(change.next.accounts[0].log_messages, Some(false));
    }

    #[test]
    fn the_shop_reminders_are_live() {
        let running = load(ACCOUNT);
        let disk = load(&format!(
            "[commerce]\nabandoned_after = \"30m\"\n\
             renewal_template = {{ name = \"plan_renewal\", language = \"id\", body_params = [\"{{{{plan}}}}\"] }}\n{ACCOUNT}"
        ));
        let change = plan(&running, &disk);
        assert!(
            change.restart_required.is_empty(),
            "{:?}",
            change.restart_required
        );
        assert!(
            change
                .applied
                .contains(&"commerce.abandoned_after".to_string()),
            "{:?}",
            change.applied
        );
        assert_eq!(change.next.commerce, disk.commerce);
        assert_eq!(
            change.next.commerce.abandoned_after,
            std::time::Duration::from_secs(1800)
        );
    }

    #[test]
    fn list_and_account_keys_parse() {
        assert_eq!(
            list_base("campaigns.opt_out_keywords[2]"),
            "campaigns.opt_out_keywords"
        );
        assert_eq!(list_base("log.level"), "log.level");
        assert_eq!(
            account_key("accounts[12].daily_limit"),
            Some((12, "daily_limit"))
        );
        assert_eq!(account_key("accounts"), None);
        assert_eq!(account_key("admin.token"), None);
    }
}
