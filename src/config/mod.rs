//! Settings: `config/default.toml`, then `--config FILE`, then `PARLEY__SECTION__KEY`.
//!
//! The raw tree is deserialised with serde, then [`Settings::validate`] checks every value and
//! names the key (and the files it came from) in each error.
//!
//! # Where its parts are
//! `mod.rs` [`Settings`] and its loading; `sections.rs` each section's struct and defaults;
//! `payments.rs` `[payments]`, the payment gateways' providers, and their checks;
//! `sources.rs` credential files, the reload fingerprint, redaction of secrets in errors;
//! `retention.rs` `[retention]`, its windows (a duration or "forever");
//! `check.rs` [`Settings::validate`], strict problems, warnings, and the value parsers.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

pub use crate::telemetry::{LogFormat, LogSettings};

mod check;
mod payments;
mod retention;
mod sections;
mod sources;

pub use check::parse_duration;
use check::*;
pub use payments::{is_provider_name, PaymentProviderSettings, PaymentSettings};
pub use retention::{RetentionSettings, Window};
pub use sections::*;
use sources::*;
pub use sources::{holds_secret, Fingerprint};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid configuration ({sources}):\n{}", errors.join("\n"))]
    Invalid {
        sources: String,
        errors: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub whatsapp: WhatsAppSettings,
    pub store: StoreSettings,
    #[serde(default)]
    pub redis: RedisSettings,
    pub flows: FlowSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    pub conversation: ConversationSettings,
    #[serde(default)]
    pub handoff: HandoffSettings,
    #[serde(default)]
    pub ai: AiSettings,
    #[serde(default)]
    pub media: MediaSettings,
    #[serde(default)]
    pub payments: PaymentSettings,
    pub outbox: OutboxSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub campaigns: CampaignSettings,
    #[serde(default)]
    pub commerce: CommerceSettings,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub accounts: Vec<AccountSettings>,
    /// Which files were read, for error messages.
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
    /// The `--config FILE` this was loaded from: a reload reads it again.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// A digest of every key's value, to name the keys a reload would change.
    #[serde(skip)]
    pub fingerprint: Fingerprint,
}

const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

impl Settings {
    /// Load the layered configuration. `config/default.toml` is read from the working
    /// directory when present, else the copy compiled into the binary is used.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Self::load_with_env(file, None, credentials.as_deref())
    }

    /// [`Settings::load`] with the `PARLEY__*` variables taken from `env` instead of the
    /// process environment when given, and the credentials from `credentials`.
    fn load_with_env(
        file: Option<&Path>,
        env: Option<config::Map<String, String>>,
        credentials: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let mut sources = Vec::new();
        let mut builder = config::Config::builder();
        let default_path = Path::new("config/default.toml");
        if default_path.exists() {
            builder = builder.add_source(config::File::from(default_path));
            sources.push(default_path.to_path_buf());
        } else {
            builder = builder.add_source(config::File::from_str(
                DEFAULT_CONFIG,
                config::FileFormat::Toml,
            ));
        }
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Load(format!(
                    "{}: config file not found",
                    file.display()
                )));
            }
            builder = builder.add_source(config::File::from(file));
            sources.push(file.to_path_buf());
        }
        let mut redactor = Redactor::default();
        if let Some(dir) = credentials {
            let credentials = Credentials::read(dir)?;
            // A credential is a secret whatever key it is named after (a token saved under
            // the wrong name fails to parse as that key's type, quoting the value).
            for (_, value) in &credentials.0 {
                redactor.add(value);
            }
            if !credentials.0.is_empty() {
                sources.push(dir.to_path_buf());
                builder = builder.add_source(credentials);
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("PARLEY")
                .prefix_separator("__")
                .separator("__")
                // Values stay strings until a typed key reads them (a number or a flag
                // parses then): a secret such as `00123` must not become 123.
                .try_parsing(false)
                .source(env),
        );
        let source_list = describe_sources(&sources);
        let raw = builder.build().map_err(|e| match e {
            config::ConfigError::FileParse { uri, cause } => {
                // The file as it was named (the crate names it relative to the working dir).
                let file = uri.map(|uri| {
                    let same = |p: &PathBuf| {
                        std::fs::canonicalize(p).ok() == std::fs::canonicalize(&uri).ok()
                    };
                    sources
                        .iter()
                        .find(|p| same(p))
                        .map_or(uri.clone(), |p| p.display().to_string())
                });
                ConfigError::Load(syntax_error(file.as_deref(), cause.as_ref()))
            }
            e => ConfigError::Load(redactor.scrub(&format!("{e} ({source_list})"))),
        })?;
        let tree: config::Value = raw
            .clone()
            .try_deserialize()
            .map_err(|e| ConfigError::Load(redactor.scrub(&format!("{e} ({source_list})"))))?;
        // From here on, errors may quote values (`invalid type: string "…"`): every value a
        // secret key (or a section holding one) has in the merged tree is scrubbed from them.
        redactor.add_secrets_of(&tree);
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(redactor.scrub(&format!("{e} ({source_list})"))))?;
        settings.sources = sources;
        settings.config_file = file.map(Path::to_path_buf);
        settings.fingerprint = Fingerprint::of(&tree);
        settings.validate().map_err(|e| redactor.scrub_error(e))?;
        Ok(settings)
    }

    pub fn account(&self, phone_number_id: &str) -> Option<&AccountSettings> {
        self.accounts
            .iter()
            .find(|a| a.phone_number_id == phone_number_id)
    }
}

fn describe_sources(sources: &[PathBuf]) -> String {
    let mut parts: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    if parts.is_empty() {
        parts.push("built-in defaults".into());
    }
    parts.push("PARLEY__* environment".into());
    format!("from {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn template_parameters_are_flattened_as_meta_takes_them() {
        let t = ReminderTemplate {
            name: "owner_news".into(),
            language: "id".into(),
            body_params: vec!["{{topic}}: {{text}}".into()],
        };
        let text = "New custom order #1:\nA cake\t for     20";
        assert_eq!(
            t.body(&[("topic", "custom_order"), ("text", text)]),
            vec!["custom_order: New custom order #1: A cake for 20".to_string()]
        );
        let long = "x".repeat(5000);
        let got = &t.body(&[("topic", "t"), ("text", &long)])[0];
        assert_eq!(got.chars().count(), 1000);
        assert!(got.ends_with('…'));
    }

    #[test]
    fn store_urls_lose_their_password() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://data/p.db"), "sqlite://data/p.db");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("6s").unwrap(), Duration::from_secs(6));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("6 parsecs").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn environment_values_keep_their_text_until_a_typed_key_reads_them() {
        const NUMERIC_TOKEN: &str = "00123456789012345678901234567890123";
        let env = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<config::Map<String, String>>(),
            )
        };
        let s = Settings::load_with_env(
            None,
            env(&[
                ("PARLEY__ADMIN__TOKEN", NUMERIC_TOKEN),
                ("PARLEY__OUTBOX__MAX_IN_FLIGHT", "7"),
                ("PARLEY__FLOWS__WATCH", "false"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            s.admin
                .token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            Some(NUMERIC_TOKEN.to_string()),
            "a secret that looks like a number is kept as written"
        );
        assert_eq!(s.outbox.max_in_flight, 7);
        assert!(!s.flows.watch);
        // A bad store URL is named without its password.
        let err = Settings::load_with_env(
            None,
            env(&[("PARLEY__STORE__URL", "mysql://app:hunter2@db/parley")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("store.url") && err.contains("app:***@db"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn built_in_defaults_are_valid() {
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_CONFIG,
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        s.validate().unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:8080");
        assert_eq!(s.store.url, "sqlite://data/parley.db");
    }

    #[test]
    fn commerce_reminders_default_and_bad_values_name_their_key() {
        let parse = |text: &str| -> Result<Settings, String> {
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml))
                .build()
                .unwrap()
                .try_deserialize()
                .map_err(|e| e.to_string())
        };
        let s = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(s.commerce, CommerceSettings::default());
        assert_eq!(s.commerce.abandoned_after, Duration::from_secs(7200));
        assert_eq!(s.commerce.renewal_notice, Duration::from_secs(3 * 86400));
        let text = DEFAULT_CONFIG
            .replace(
                "abandoned_after = \"2h\"",
                "abandoned_after = \"5s\"\nabandoned_template = { name = \"Cart Reminder\", \
                 language = \"\", body_params = [\"{{items}}\", \"{{price}}\", \"{{total\"] }",
            )
            .replace(
                "renewal_notice = \"3d\"",
                "renewal_notice = \"400d\"\nrenewal_template = { name = \"plan_renewal\", \
                 language = \"id\", body_params = [\"{{plan}}\", \"{{end_date}}\"] }",
            );
        let err = parse(&text).unwrap().validate().unwrap_err().to_string();
        for key in [
            "commerce.abandoned_after: must be at least 1m",
            "commerce.renewal_notice: must be at most 366d",
            "commerce.abandoned_template.name: `Cart Reminder`",
            "commerce.abandoned_template.language",
            "commerce.abandoned_template.body_params[1]: `{{price}}` is not one of {{total}}, {{count}}, {{items}}",
            "commerce.abandoned_template.body_params[2]",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(!err.contains("renewal_template"), "{err}");
        assert!(!err.contains("body_params[0]"), "{err}");
        // A misspelt key or a duration that does not parse is refused by name.
        let err =
            parse(&DEFAULT_CONFIG.replace("renewal_notice = \"3d\"", "renewal_notise = \"3d\""))
                .unwrap_err();
        assert!(err.contains("renewal_notise"), "{err}");
        let err = parse(&DEFAULT_CONFIG.replace("\"2h\"", "\"two hours\"")).unwrap_err();
        assert!(err.contains("two hours"), "{err}");
    }

    #[test]
    fn bad_account_values_name_their_key() {
        let text = format!(
            "{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"abc\"\nmessages_per_second = 0\ntimezone = \"Mars\"\npayments = \"nope\"\nowner_wa_id = \"+62 812\"\n"
        );
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("accounts[0].phone_number_id"), "{err}");
        assert!(err.contains("accounts[0].messages_per_second"), "{err}");
        assert!(err.contains("accounts[0].timezone"), "{err}");
        assert!(err.contains("accounts[0].payments: `nope`"), "{err}");
        assert!(err.contains("accounts[0].owner_wa_id: `+62 812`"), "{err}");
    }

    #[test]
    fn an_accounts_webhook_url_needs_a_well_formed_secret_never_shown() {
        let check = |extra: &str| {
            let text = format!(
                "{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"106540352242922\"\n{extra}"
            );
            let s: Settings = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap();
            s.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let err = check("webhook_url = \"https://x.example/h\"\n");
        assert!(
            err.contains("accounts[0].webhook_url: needs webhook_secret"),
            "{err}"
        );
        let err = check(
            "webhook_url = \"https://x.example/h\"\nwebhook_secret = \"hunter2-not-base64!\"\n",
        );
        assert!(err.contains("accounts[0].webhook_secret"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = check("webhook_url = \"ftp://x.example/h\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n");
        assert!(
            err.contains("accounts[0].webhook_url: must be an https URL"),
            "{err}"
        );
        let ok = check("webhook_url = \"https://x.example/h\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n");
        assert!(!ok.contains("webhook"), "{ok}");
    }

    #[test]
    fn credential_files_named_after_keys_are_read_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("whatsapp.app_secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("accounts[0].access_token"), "tok").unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        std::fs::write(dir.path().join("Admin.Token"), "not lowercase").unwrap();
        let c = Credentials::read(dir.path()).unwrap();
        assert_eq!(
            c.0,
            vec![
                ("accounts[0].access_token".to_string(), "tok".to_string()),
                ("whatsapp.app_secret".to_string(), "s3cret".to_string()),
            ]
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug shows names only"
        );
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                &format!("{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"1\"\n"),
                config::FileFormat::Toml,
            ))
            .add_source(c)
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(s.whatsapp.app_secret.expose_secret(), "s3cret");
        let token = s.accounts[0].access_token.as_ref().unwrap();
        assert_eq!(token.expose_secret(), "tok");
    }

    #[test]
    fn config_keys_are_dotted_lowercase_paths() {
        assert!(is_config_key("admin.token"));
        assert!(is_config_key("ai.providers.openai.api_key"));
        assert!(is_config_key("accounts[12].access_token"));
        assert!(!is_config_key("token"));
        assert!(!is_config_key("accounts[x].access_token"));
        assert!(!is_config_key("a..b"));
        assert!(!is_config_key("../etc"));
    }

    #[test]
    fn the_fingerprint_names_changed_added_and_removed_keys_only() {
        let tree = |text: &str| -> config::Value {
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap()
        };
        let a = Fingerprint::of(&tree(
            "[http]\nlisten = \"a\"\nmax = 1\n[[accounts]]\nid = \"1\"\n",
        ));
        let b = Fingerprint::of(&tree("[http]\nlisten = \"a\"\nmax = 2\n[[accounts]]\nid = \"1\"\n[[accounts]]\nid = \"2\"\n[admin]\ntoken = \"t\"\n"));
        assert_eq!(
            a.changed_keys(&b),
            ["accounts[1].id", "admin.token", "http.max"]
        );
        assert_eq!(b.changed_keys(&a), a.changed_keys(&b));
        assert!(a.changed_keys(&a).is_empty());
        assert_eq!(format!("{a:?}"), "Fingerprint(3 keys)");
    }

    #[test]
    fn tier_accepts_only_meta_tiers() {
        let ok = format!("{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"1\"\nmessaging_tier = \"unlimited\"\n");
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(&ok, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(s.accounts[0].messaging_tier, MessagingTier::Unlimited);
        let bad = format!(
            "{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"1\"\nmessaging_tier = 300\n"
        );
        let r: Result<Settings, _> = config::Config::builder()
            .add_source(config::File::from_str(&bad, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize();
        assert!(r.unwrap_err().to_string().contains("messaging_tier"));
    }

    /// `text` as a `--config FILE` in a temp dir: the error's text and the file's path.
    fn load_error(text: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, text).unwrap();
        let err = Settings::load_with_env(Some(&path), None, None)
            .unwrap_err()
            .to_string();
        (err, path.display().to_string())
    }

    #[test]
    fn a_syntax_error_on_a_secret_line_names_file_line_and_column_but_not_the_secret() {
        for (text, line) in [
            // An unclosed quote.
            ("[whatsapp]\naccess_token = \"EAAG-SECRET-1\n", 2),
            // No quotes.
            ("[whatsapp]\naccess_token = EAAG-SECRET-2\n", 2),
            // A typo in the key as well.
            ("[whatsapp]\nacess_token = \"EAAG-SECRET-3\n", 2),
            ("[whatsapp]\naccess_tok en = \"EAAG-SECRET-4\"\n", 2),
            // One quote too many, a literal string, a multi-line string left open.
            ("[admin]\ntoken = \"EAAG-SECRET-5\"\"\n", 2),
            (
                "[[accounts]]\nphone_number_id = \"1\"\naccess_token = 'EAAG-SECRET-6\n",
                3,
            ),
            ("[ai.providers.x]\napi_key = \"\"\"EAAG-SECRET-7\n", 2),
            // The secret on the line before the error.
            ("[whatsapp]\napp_secret = \"EAAG-SECRET-8\" x\n", 2),
        ] {
            let (err, path) = load_error(text);
            assert!(!err.contains("SECRET"), "the secret is shown: {err}");
            let located = format!("{path}:{line}:");
            assert!(err.starts_with(&located), "{located} expected: {err}");
            let col = err[located.len()..].split(':').next().unwrap();
            assert!(col.parse::<u32>().is_ok(), "a column: {err}");
            assert!(
                err.len() > located.len() + 5,
                "what is wrong is said: {err}"
            );
        }
    }

    #[test]
    fn values_that_fail_to_parse_are_not_quoted_when_they_may_be_secrets() {
        let env = |k: &str, v: &str| Some(config::Map::from([(k.to_string(), v.to_string())]));
        // A secret where a section was expected, from the environment.
        for key in [
            "PARLEY__WHATSAPP",
            "PARLEY__ADMIN",
            "PARLEY__AI__PROVIDERS",
            "PARLEY__ACCOUNTS",
        ] {
            let err = Settings::load_with_env(None, env(key, "EAAG-SECRET-env"), None)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("SECRET"), "{key}: {err}");
            assert!(err.contains("invalid type"), "{key}: {err}");
        }
        // A value that cannot be a secret is still shown.
        let err = Settings::load_with_env(None, env("PARLEY__OUTBOX__MAX_IN_FLIGHT", "lots"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lots") && err.contains("outbox.max_in_flight"),
            "{err}"
        );
        // A secret in a section's place in a file.
        let (err, _) = load_error("whatsapp = \"EAAG-SECRET-file\"\n");
        assert!(!err.contains("SECRET") && err.contains("whatsapp"), "{err}");
    }

    #[test]
    fn a_credential_saved_under_the_wrong_key_is_not_shown_by_its_error() {
        let dir = tempfile::tempdir().unwrap();
        // A number key and a validated key: both errors would quote the value.
        std::fs::write(dir.path().join("outbox.max_in_flight"), "EAAG-SECRET-a\n").unwrap();
        let err = Settings::load_with_env(None, None, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("SECRET") && err.contains("outbox.max_in_flight"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("outbox.max_in_flight")).unwrap();
        std::fs::write(dir.path().join("whatsapp.api_version"), "EAAG\"SECRET\\b").unwrap();
        let err = Settings::load_with_env(None, None, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("SECRET") && err.contains("whatsapp.api_version"),
            "{err}"
        );
    }

    #[test]
    fn keys_that_hold_secrets_are_the_secret_keys_their_sections_and_below() {
        for key in [
            "whatsapp.access_token",
            "whatsapp",
            "admin",
            "admin.token",
            "accounts",
            "accounts[3]",
            "accounts[3].access_token",
            "accounts.3.access_token",
            "ai.providers.openai",
            "ai.providers.openai.api_key",
            "WHATSAPP.APP_SECRET",
            "whatsapp.access_token.oops",
        ] {
            assert!(holds_secret(key), "{key}");
        }
        for key in [
            "whatsapp.api_version",
            "accounts[3].daily_limit",
            "ai.providers.openai.base_url",
            "admin.tokens",
            "http.listen",
            "outbox.max_in_flight",
        ] {
            assert!(!holds_secret(key), "{key}");
        }
    }

    #[test]
    fn the_secret_keys_are_every_secret_string_field_of_the_settings() {
        // Every `SecretString` field of the settings structs (here and in sections.rs).
        let source = concat!(
            include_str!("mod.rs"),
            include_str!("sections.rs"),
            include_str!("payments.rs")
        );
        let field = regex::Regex::new(
            r"(?m)^\s*pub\s+([a-z_0-9]+)\s*:\s*(?:Option<)?(?:secrecy::)?SecretString>?\s*,",
        )
        .unwrap();
        let fields: Vec<&str> = field
            .captures_iter(source)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        assert_eq!(
            fields.len(),
            SECRET_KEYS.len(),
            "each SecretString field ({fields:?}) has its key in SECRET_KEYS"
        );
        for f in &fields {
            assert!(
                SECRET_KEYS.iter().any(|k| k.ends_with(&format!(".{f}"))),
                "{f} is not in SECRET_KEYS"
            );
        }
        // And each listed key is one: the settings' Debug hides the value set there.
        let dir = tempfile::tempdir().unwrap();
        for key in SECRET_KEYS {
            let path = key.replace("[*]", "[0]").replace('*', "p");
            std::fs::write(dir.path().join(&path), "MARKER-of-a-secret").unwrap();
        }
        let text = format!(
            "{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"1\"\n\
             display_phone_number = \"MARKER-shown\"\n\
             [ai.providers.p]\nkind = \"openai\"\nbase_url = \"http://x\"\n\
             [payments.providers.p]\nkind = \"finpay\"\nbase_url = \"http://x\"\n"
        );
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(Credentials::read(dir.path()).unwrap())
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("MARKER-shown"), "a plain value is shown");
        assert!(!shown.contains("MARKER-of-a-secret"), "{shown}");
        assert_eq!(
            s.ai.providers["p"].api_key.expose_secret(),
            "MARKER-of-a-secret"
        );
    }

    #[test]
    fn an_admin_token_under_32_characters_is_a_strict_problem_and_an_unset_one_is_not() {
        let load = |token: Option<&str>| {
            let env = token
                .map(|t| config::Map::from([("PARLEY__ADMIN__TOKEN".to_string(), t.to_string())]));
            Settings::load_with_env(None, env, None).expect("loads: serve runs with it")
        };
        let short = load(Some("0123456789abcdef0123456789abcde"));
        let problems = short.strict_problems().join("\n");
        assert!(
            problems.contains("admin.token: 31 characters") && problems.contains("at least 32"),
            "{problems}"
        );
        assert!(!problems.contains("0123456789abcdef"), "{problems}");
        assert!(short
            .warnings()
            .join("\n")
            .contains("admin.token: 31 characters"));
        assert!(load(Some("0123456789abcdef0123456789abcdef"))
            .strict_problems()
            .is_empty());
        assert!(
            load(Some("")).strict_problems().is_empty(),
            "empty: the admin API is off"
        );
        assert!(load(None).strict_problems().is_empty());
    }
}
