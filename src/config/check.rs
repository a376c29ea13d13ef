//! Checking the settings: every bad value named with its key and the files it came from;
//! strict problems and warnings; the parsers of durations, tiers and time zones.

use super::*;

impl Settings {
    /// Check every value; all problems are reported at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if let Some(t) = &self.media.transcription {
            if !self.ai.providers.contains_key(&t.provider) {
                errors.push(format!(
                    "media.transcription.provider: `{}` is not under [ai.providers]",
                    t.provider
                ));
            }
            if rust_decimal::Decimal::from_str_exact(t.price_per_minute.trim()).is_err() {
                errors.push(format!(
                    "media.transcription.price_per_minute: `{}` is not a decimal",
                    t.price_per_minute
                ));
            }
        }
        for (name, p) in &self.ai.providers {
            if !p.base_url.starts_with("https://") && !p.base_url.starts_with("http://") {
                errors.push(format!(
                    "ai.providers.{name}.base_url: `{}` must be an http(s) URL",
                    p.base_url
                ));
            }
        }
        self.payments.check(&self.accounts, &mut errors);
        self.commerce.check(&mut errors);
        self.retention.check(&mut errors);
        if self.webhooks.schedule.is_empty() {
            errors.push("webhooks.schedule: needs at least one attempt".into());
        }
        if self.webhooks.concurrency == 0 {
            errors.push("webhooks.concurrency: must be at least 1".into());
        }
        if self.webhooks.timeout.is_zero() || self.webhooks.timeout > Duration::from_secs(60) {
            errors.push("webhooks.timeout: must be more than 0 and at most 60s".into());
        }
        if self.webhooks.poll.is_zero() {
            errors.push("webhooks.poll: must be more than 0".into());
        }
        if self.webhooks.campaign_progress_every < Duration::from_millis(100) {
            errors.push("webhooks.campaign_progress_every: must be at least 100ms".into());
        }
        for c in &self.flows.http_allow {
            if let Err(e) = c.parse::<crate::outcall::Cidr>() {
                errors.push(format!("flows.http_allow: {e}"));
            }
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "http.listen: `{}` is not an address like 127.0.0.1:8080",
                self.http.listen
            ));
        }
        if let Err(e) = crate::telemetry::filter_for(&self.log.level) {
            errors.push(format!("log.level: `{}` {e}", self.log.level));
        }
        if self.http.max_body_bytes < 1024 {
            errors.push("http.max_body_bytes: must be at least 1024".into());
        }
        if let Some(admin) = &self.http.admin_listen {
            match admin.parse::<SocketAddr>() {
                Err(_) => errors.push(format!(
                    "http.admin_listen: `{admin}` is not an address like 127.0.0.1:9090"
                )),
                Ok(a) if a.port() != 0 && Some(a) == self.http.listen.parse().ok() => {
                    errors.push("http.admin_listen: must differ from http.listen".into())
                }
                Ok(_) => {}
            }
        }
        for (key, d) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.keep_alive_timeout", self.http.keep_alive_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
        ] {
            if d < Duration::from_millis(100) {
                errors.push(format!("{key}: must be at least 100ms"));
            }
        }
        if self.http.max_connections == 0 {
            errors.push("http.max_connections: must be at least 1".into());
        }
        if self.http.max_unauthenticated_body_bytes < self.http.max_body_bytes {
            errors.push(
                "http.max_unauthenticated_body_bytes: must be at least http.max_body_bytes".into(),
            );
        }
        if self.http.auth_failures_burst == 0 {
            errors.push("http.auth_failures_burst: must be at least 1".into());
        }
        if !(self.whatsapp.graph_base_url.starts_with("http://")
            || self.whatsapp.graph_base_url.starts_with("https://"))
            || reqwest::Url::parse(&self.whatsapp.graph_base_url).is_err()
        {
            errors.push(format!(
                "whatsapp.graph_base_url: `{}` is not an http(s) URL",
                self.whatsapp.graph_base_url
            ));
        }
        if !self.whatsapp.api_version.starts_with('v') {
            errors.push(format!(
                "whatsapp.api_version: `{}` should look like v23.0",
                self.whatsapp.api_version
            ));
        }
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres://")
            || self.store.url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "store.url: `{}` must start with sqlite: or postgres://",
                redact_url(&self.store.url)
            ));
        }
        if self.store.writers == 0 || self.store.writers > 64 {
            errors.push("store.writers: must be between 1 and 64".into());
        }
        if self.store.max_connections == 0 {
            errors.push("store.max_connections: must be at least 1".into());
        }
        if let Some(url) = &self.redis.url {
            if !url.is_empty() && !url.starts_with("redis://") && !url.starts_with("rediss://") {
                errors.push(format!(
                    "redis.url: `{}` must start with redis://",
                    redact_url(url)
                ));
            }
        }
        if self.outbox.max_in_flight == 0 {
            errors.push("outbox.max_in_flight: must be at least 1".into());
        }
        if self.outbox.max_attempts == 0 {
            errors.push("outbox.max_attempts: must be at least 1".into());
        }
        if self.conversation.max_event_attempts == 0 {
            errors.push("conversation.max_event_attempts: must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            if a.phone_number_id.is_empty()
                || !a.phone_number_id.chars().all(|c| c.is_ascii_digit())
            {
                errors.push(format!(
                    "{}: `{}` must be the numeric id Meta shows for the number",
                    key("phone_number_id"),
                    a.phone_number_id
                ));
            }
            if !seen.insert(a.phone_number_id.clone()) {
                errors.push(format!(
                    "{}: `{}` is listed twice",
                    key("phone_number_id"),
                    a.phone_number_id
                ));
            }
            if a.messages_per_second == 0 {
                errors.push(format!(
                    "{}: must be at least 1",
                    key("messages_per_second")
                ));
            }
            if a.daily_limit == Some(0) {
                errors.push(format!(
                    "{}: 0 would block every send; remove the key for no limit",
                    key("daily_limit")
                ));
            }
            if let Err(e) = validate_timezone(&a.timezone) {
                errors.push(format!("{}: {e}", key("timezone")));
            }
            match (&a.webhook_url, &a.webhook_secret) {
                (Some(url), Some(secret)) => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        errors.push(format!("{}: must be an https URL", key("webhook_url")));
                    }
                    if crate::hooks::sign(secret, "msg_check", 0, b"").is_err() {
                        errors.push(format!(
                            "{}: must be `whsec_` and base64 (the value is not shown)",
                            key("webhook_secret")
                        ));
                    }
                }
                (Some(_), None) => errors.push(format!(
                    "{}: needs webhook_secret (`whsec_` and base64 of 24+ random bytes)",
                    key("webhook_url")
                )),
                _ => {}
            }
            if let Some(owner) = &a.owner_wa_id {
                if !is_wa_id(owner) {
                    errors.push(format!(
                        "{}: `{owner}` must be a WhatsApp number in digits, country code first, \
                         without `+` or spaces (8 to 15 digits, like 6281234567890)",
                        key("owner_wa_id")
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                sources: describe_sources(&self.sources),
                errors,
            })
        }
    }

    /// Warnings worth logging at start (valid but unusual settings).
    /// What `parleyd check` refuses although the daemon runs with it (and warns): rules
    /// added after deployments and tools outside the repository were written. Under systemd
    /// the unit's `ExecStartPre=parleyd check` refuses them before the daemon starts.
    pub fn strict_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(token) = self.admin.enabled_token() {
            let chars = token.expose_secret().chars().count();
            if chars < MIN_ADMIN_TOKEN_CHARS {
                problems.push(format!(
                    "admin.token: {chars} characters; it must have at least \
                     {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
                ));
            }
        }
        problems
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.strict_problems();
        if self.whatsapp.app_secret.expose_secret().is_empty() {
            w.push(
                "whatsapp.app_secret is empty: every POST /webhook will be refused with 401."
                    .into(),
            );
        } else if self.whatsapp.app_secret.expose_secret().chars().count() < 32 {
            // Meta's app secrets are 32 hex digits: a shorter one is a typo or a test value.
            w.push(format!(
                "whatsapp.app_secret is {} characters; Meta's app secrets are 32: check it is the app secret of the Meta app.",
                self.whatsapp.app_secret.expose_secret().chars().count()
            ));
        }
        if self.whatsapp.verify_token.expose_secret().is_empty() {
            w.push(
                "whatsapp.verify_token is empty: Meta's subscription handshake will be refused."
                    .into(),
            );
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.messages_per_second > 1000 {
                w.push(format!(
                    "accounts[{i}].messages_per_second = {} is above Meta's 1,000 per second.",
                    a.messages_per_second
                ));
            }
        }
        self.retention.warnings(&mut w);
        w
    }
}

impl CommerceSettings {
    /// The reminders' durations and templates.
    fn check(&self, errors: &mut Vec<String>) {
        if self.abandoned_after < Duration::from_secs(60) {
            errors.push("commerce.abandoned_after: must be at least 1m".into());
        }
        if self.renewal_notice < Duration::from_secs(60) {
            errors.push("commerce.renewal_notice: must be at least 1m".into());
        }
        if self.renewal_notice > Duration::from_secs(366 * 24 * 3600) {
            errors.push("commerce.renewal_notice: must be at most 366d".into());
        }
        for (key, template, known) in [
            (
                "abandoned_template",
                &self.abandoned_template,
                ABANDONED_PARAMS,
            ),
            ("renewal_template", &self.renewal_template, RENEWAL_PARAMS),
            (
                "order_status_template",
                &self.order_status_template,
                ORDER_STATUS_PARAMS,
            ),
            ("owner_template", &self.owner_template, OWNER_PARAMS),
        ] {
            if let Some(t) = template {
                for p in t.problems(known) {
                    errors.push(format!("commerce.{key}.{p}"));
                }
            }
        }
    }
}

pub(super) fn validate_timezone(tz: &str) -> Result<(), String> {
    crate::domain::Zone::parse(tz).map(|_| ())
}

/// Parse `500ms`, `6s`, `10m`, `24h`, `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 6s, 10m, 24h"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
    }
}

pub(super) fn de_tier<'de, D: Deserializer<'de>>(d: D) -> Result<MessagingTier, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }
    let tier = match Raw::deserialize(d)? {
        Raw::Num(n) => n,
        Raw::Text(s) if s.eq_ignore_ascii_case("unlimited") => return Ok(MessagingTier::Unlimited),
        Raw::Text(s) => s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "messaging_tier `{s}` must be 250, 2000, 10000, 100000 or \"unlimited\""
            ))
        })?,
    };
    match tier {
        250 | 2000 | 10000 | 100000 => Ok(MessagingTier::Limited(tier)),
        other => Err(serde::de::Error::custom(format!(
            "messaging_tier {other} must be 250, 2000, 10000, 100000 or \"unlimited\""
        ))),
    }
}

/// A WhatsApp number as Meta writes a `wa_id`: 8 to 15 digits, country code first.
pub(super) fn is_wa_id(text: &str) -> bool {
    (8..=15).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
}
