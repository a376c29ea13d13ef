//! Settings: `config/default.toml`, then `--config FILE`, then `PARLEY__SECTION__KEY`.
//!
//! The raw tree is deserialised with serde, then [`Settings::validate`] checks every value and
//! names the key (and the files it came from) in each error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

pub use crate::telemetry::{LogFormat, LogSettings};

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
    pub outbox: OutboxSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub campaigns: CampaignSettings,
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

/// Per config key (`http.listen`, `accounts[0].daily_limit`), a SHA-256 of its value. Kept
/// in memory only and never printed, so secrets can be compared without being held in clear.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(std::collections::BTreeMap<String, [u8; 32]>);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({} keys)", self.0.len())
    }
}

impl Fingerprint {
    fn of(tree: &config::Value) -> Fingerprint {
        use sha2::Digest;
        let mut out = std::collections::BTreeMap::new();
        for_each_leaf(tree, &mut |key, leaf| {
            out.insert(
                key.to_string(),
                sha2::Sha256::digest(leaf_text(leaf)).into(),
            );
        });
        Fingerprint(out)
    }

    /// The keys whose value differs between the two (added, removed or changed), sorted.
    pub fn changed_keys(&self, other: &Fingerprint) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| other.0.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(other.0.keys().filter(|k| !self.0.contains_key(*k)).cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// This fingerprint with `keys` taken from `other` (a key `other` lacks is dropped): the
    /// running configuration after a reload applied those keys.
    pub fn adopt(&self, other: &Fingerprint, keys: &[String]) -> Fingerprint {
        let mut out = self.0.clone();
        for k in keys {
            match other.0.get(k) {
                Some(v) => out.insert(k.clone(), *v),
                None => out.remove(k),
            };
        }
        Fingerprint(out)
    }
}

/// Secrets from systemd's `LoadCredential=`: each file in `$CREDENTIALS_DIRECTORY` named after
/// a config key (`whatsapp.app_secret`, `admin.token`, `accounts[0].access_token`) sets that
/// key, one trailing newline removed. Layered above the config files, below `PARLEY__*`.
#[derive(Clone)]
struct Credentials(Vec<(String, String)>);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "Credentials({names:?})")
    }
}

impl Credentials {
    fn read(dir: &Path) -> Result<Credentials, ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigError::Load(format!("$CREDENTIALS_DIRECTORY {}: {e}", dir.display()))
        })?;
        let mut found = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_config_key(&name) {
                continue;
            }
            let mut value = std::fs::read_to_string(entry.path()).map_err(|e| {
                ConfigError::Load(format!("credential {name}: {e} (it must be UTF-8 text)"))
            })?;
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            found.push((name, value));
        }
        found.sort();
        Ok(Credentials(found))
    }
}

/// `section.key`, `section.sub.key` or `accounts[0].key`: lowercase words, dots, indexes.
fn is_config_key(name: &str) -> bool {
    let mut parts = 0;
    for part in name.split('.') {
        let word = part.split('[').next().unwrap_or("");
        let indexes = &part[word.len()..];
        let word_ok = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        let indexes_ok = indexes.is_empty()
            || indexes
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .is_some_and(|n| {
                    n.split("][")
                        .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                });
        if !word_ok || !indexes_ok {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

impl config::Source for Credentials {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        let origin = "$CREDENTIALS_DIRECTORY".to_string();
        Ok(self
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    config::Value::new(Some(&origin), config::ValueKind::String(v.clone())),
                )
            })
            .collect())
    }
}

/// The config keys whose values are secrets: `*` stands for any one name or index. Every
/// `SecretString` field of the settings is here (a test counts them), and a configuration
/// error never shows the value of one of these keys, or of a section that holds one.
pub const SECRET_KEYS: &[&str] = &[
    "whatsapp.app_secret",
    "whatsapp.verify_token",
    "whatsapp.access_token",
    "admin.token",
    "accounts[*].access_token",
    "ai.providers.*.api_key",
];

/// `accounts[0].access_token` (or `accounts.0.access_token`, as the environment spells it) →
/// `accounts`, `0`, `access_token`.
fn key_segments(key: &str) -> impl Iterator<Item = &str> {
    key.split(['.', '[', ']']).filter(|s| !s.is_empty())
}

/// True for a secret key, a section that holds one (`whatsapp`, `accounts[0]`: a value there
/// may be a secret in the wrong shape), and anything under one.
pub fn holds_secret(key: &str) -> bool {
    SECRET_KEYS.iter().any(|pattern| {
        key_segments(key)
            .zip(key_segments(pattern))
            .all(|(k, p)| p == "*" || k.eq_ignore_ascii_case(p))
    })
}

/// Calls `f` with every leaf of a config tree and its key (`http.listen`,
/// `accounts[0].daily_limit`); an empty table or list is a leaf.
fn for_each_leaf(tree: &config::Value, f: &mut impl FnMut(&str, &config::ValueKind)) {
    fn walk(prefix: &str, v: &config::Value, f: &mut impl FnMut(&str, &config::ValueKind)) {
        match &v.kind {
            config::ValueKind::Table(t) if !t.is_empty() => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, f);
                }
            }
            config::ValueKind::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, f);
                }
            }
            leaf => f(prefix, leaf),
        }
    }
    walk("", tree, f);
}

/// The text of a leaf (what `{}` shows of it, and what a parse error would quote).
fn leaf_text(leaf: &config::ValueKind) -> String {
    match leaf {
        config::ValueKind::Table(_) => "{}".to_string(),
        config::ValueKind::Array(_) => "[]".to_string(),
        other => other.to_string(),
    }
}

/// Values that must not appear in a configuration error: each is replaced by `***`.
/// (No `Debug`: it holds secrets in clear.)
#[derive(Default)]
struct Redactor(Vec<String>);

impl Redactor {
    /// Shorter values are left alone: replacing a one-letter value would garble every message
    /// and protect nothing.
    const MIN_CHARS: usize = 4;

    fn add(&mut self, value: &str) {
        if value.chars().count() < Self::MIN_CHARS {
            return;
        }
        // `invalid type: string "…"` quotes a value with Rust's escapes.
        let quoted = format!("{value:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != value {
            self.0.push(escaped.to_string());
        }
        self.0.push(value.to_string());
    }

    /// Every value under a key that [`holds_secret`].
    fn add_secrets_of(&mut self, tree: &config::Value) {
        for_each_leaf(tree, &mut |key, leaf| {
            if holds_secret(key) {
                self.add(&leaf_text(leaf));
            }
        });
    }

    fn scrub(&self, text: &str) -> String {
        let mut values: Vec<&str> = self.0.iter().map(String::as_str).collect();
        // The longest first, so that a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
            .into_iter()
            .fold(text.to_string(), |text, value| text.replace(value, "***"))
    }

    fn scrub_error(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::Load(message) => ConfigError::Load(self.scrub(&message)),
            ConfigError::Invalid { sources, errors } => ConfigError::Invalid {
                sources,
                errors: errors.iter().map(|e| self.scrub(e)).collect(),
            },
        }
    }
}

/// `file:line:col: what is wrong` for a config file that does not parse. The parser's own
/// message shows the offending line, and that may be a secret's (`access_token = "EAAG…`
/// without its closing quote, or without quotes, or with a typo in the key): only the
/// position is kept, never the text.
fn syntax_error(
    uri: Option<&str>,
    cause: &(dyn std::error::Error + Send + Sync + 'static),
) -> String {
    let file = uri.unwrap_or("configuration");
    let Some(e) = cause.downcast_ref::<toml::de::Error>() else {
        // The conversions after parsing (a number out of range) name no value.
        return format!("{file}: {cause}");
    };
    // With a position, its text starts `TOML parse error at line L, column C`.
    let text = e.to_string();
    let at = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("TOML parse error at line "))
        .and_then(|rest| rest.split_once(", column "));
    match at {
        Some((line, col)) => format!("{file}:{line}:{col}: {}", e.message()),
        None => format!("{file}: {}", e.message()),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: String,
    /// A second address for `/admin/v1/` and `/metrics`: when set, they are served only
    /// there, and `listen` serves the webhook and the health checks alone.
    #[serde(default)]
    pub admin_listen: Option<String>,
    pub max_body_bytes: usize,
    /// A request's head must arrive whole within this long of the connection opening or of
    /// the previous response on it.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight that sends no byte for this long is closed.
    #[serde(
        default = "default_keep_alive_timeout",
        deserialize_with = "de_duration"
    )]
    pub keep_alive_timeout: Duration,
    /// A request body must arrive within this long of its head, plus one second for every
    /// `min_body_rate` bytes received.
    #[serde(
        default = "default_body_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub body_read_timeout: Duration,
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// Open connections at most (more wait in the kernel's accept queue).
    #[serde(default = "default_max_connections_http")]
    pub max_connections: usize,
    /// Webhook body bytes read but not yet authenticated, all connections together; past it
    /// a webhook gets 503 (Meta redelivers).
    #[serde(default = "default_max_unauthenticated_body_bytes")]
    pub max_unauthenticated_body_bytes: usize,
    /// Wrong admin tokens or verify tokens from one client address before it is answered
    /// 429, and how fast that allowance comes back (one failure forgiven per interval).
    #[serde(default = "default_auth_failures_burst")]
    pub auth_failures_burst: u32,
    #[serde(
        default = "default_auth_failures_interval",
        deserialize_with = "de_duration"
    )]
    pub auth_failures_interval: Duration,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_keep_alive_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_body_rate() -> u64 {
    64 * 1024
}
fn default_max_connections_http() -> usize {
    8192
}
fn default_max_unauthenticated_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_auth_failures_burst() -> u32 {
    10
}
fn default_auth_failures_interval() -> Duration {
    Duration::from_secs(6)
}

#[derive(Debug, Clone, Deserialize)]
pub struct WhatsAppSettings {
    pub app_secret: SecretString,
    pub verify_token: SecretString,
    pub access_token: SecretString,
    pub graph_base_url: String,
    pub api_version: String,
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Parallel writers on PostgreSQL (conversations are spread over them by key; each
    /// conversation always uses the same one). SQLite always has one.
    #[serde(default = "default_writers")]
    pub writers: usize,
}

/// This host's cores, 2 to 8: a writer's batch grows with the replies waiting for it, and
/// each batch costs the server a fixed number of statements, so writers beyond the cores
/// that can run them only make batches smaller (on 2 cores, 2 writers gave ~15 % more
/// replies/s than 4 and twice those of 8).
fn default_writers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

fn default_max_connections() -> u32 {
    8
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisSettings {
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlowSettings {
    pub dir: PathBuf,
    pub watch: bool,
    /// Addresses (IPs or CIDR ranges) flows' http nodes may call although they are private
    /// or loopback; plain http is allowed to them too. Empty: https to public addresses only.
    #[serde(default)]
    pub http_allow: Vec<String>,
}

impl FlowSettings {
    /// `http_allow` parsed (validated at start, so the entries here parse).
    pub fn http_allow(&self) -> Vec<crate::outcall::Cidr> {
        self.http_allow
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

/// `[media]`: inbound media downloads and voice-note transcription.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaSettings {
    #[serde(default = "default_media_dir")]
    pub dir: PathBuf,
    /// Download every inbound media message (image, audio, video, document, sticker).
    #[serde(default = "yes")]
    pub download: bool,
    #[serde(default = "default_media_max")]
    pub max_bytes: u64,
    /// Transcribe voice notes (the text goes to the flow or bot as the user's message).
    #[serde(default)]
    pub transcription: Option<TranscriptionSettings>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            dir: default_media_dir(),
            download: true,
            max_bytes: default_media_max(),
            transcription: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TranscriptionSettings {
    /// A name under [ai.providers] with an OpenAI-compatible `/audio/transcriptions`.
    pub provider: String,
    #[serde(default = "default_transcription_model")]
    pub model: String,
    /// Decimal string, per minute of audio.
    #[serde(default = "default_transcription_price")]
    pub price_per_minute: String,
}

fn default_media_dir() -> PathBuf {
    PathBuf::from("data/media")
}
fn default_media_max() -> u64 {
    100 * 1024 * 1024
}
fn default_transcription_model() -> String {
    "whisper-1".into()
}
fn default_transcription_price() -> String {
    "0.006".into()
}

/// `[ai.providers.NAME]`: the model providers bots may name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AiSettings {
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, ProviderSettings>,
}

impl AiSettings {
    pub fn names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, Groq, Together, Mistral, Ollama, LocalAI,
    /// vLLM): `{base_url}/chat/completions`.
    Openai,
    /// Anthropic Messages: `{base_url}/v1/messages`.
    Anthropic,
    /// Google Gemini: `{base_url}/v1beta/models/{model}:generateContent`.
    Gemini,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(default = "empty_secret")]
    pub api_key: SecretString,
    #[serde(default = "default_ai_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Retries of a 429, 5xx or timeout.
    #[serde(default = "default_ai_retries")]
    pub max_retries: u32,
    /// Calls in flight at once to this provider.
    #[serde(default = "default_ai_concurrency")]
    pub concurrency: usize,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}
fn default_ai_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_ai_retries() -> u32 {
    2
}
fn default_ai_concurrency() -> usize {
    16
}

#[derive(Debug, Clone, Deserialize)]
pub struct HandoffSettings {
    /// A conversation with a human returns to the bot after this long without a message
    /// either way. "0s": only when released.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for HandoffSettings {
    fn default() -> Self {
        HandoffSettings {
            timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[campaigns]`: what every campaign shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CampaignSettings {
    /// A message that is exactly one of these (any case, surrounding spaces ignored) opts the
    /// contact out of campaigns, durably.
    pub opt_out_keywords: Vec<String>,
    /// A message that is exactly one of these opts the contact back in.
    pub opt_in_keywords: Vec<String>,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        CampaignSettings {
            opt_out_keywords: vec!["STOP".into(), "BERHENTI".into(), "UNSUBSCRIBE".into()],
            opt_in_keywords: vec!["START".into(), "MULAI".into()],
        }
    }
}

impl CampaignSettings {
    /// Some(true): opt out; Some(false): opt back in; None: an ordinary message.
    pub fn opt_out_change(&self, text: &str) -> Option<bool> {
        let t = text.trim();
        if self
            .opt_out_keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(t))
        {
            Some(true)
        } else if self
            .opt_in_keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(t))
        {
            Some(false)
        } else {
            None
        }
    }
}

/// The shortest `admin.token` accepted: the admin API can send messages and read every
/// conversation, and anyone who reaches the listener may guess.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdminSettings {
    #[serde(default)]
    pub token: Option<SecretString>,
}

impl AdminSettings {
    /// The token, if the admin API is enabled (set and non-empty).
    pub fn enabled_token(&self) -> Option<&SecretString> {
        self.token
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConversationSettings {
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    pub max_event_attempts: u32,
    /// A free-form message (a flow's or bot's reply) outside the 24 h window: "fail"
    /// (refused, counted, logged) or "hold" (sent when the user writes again). A flow's send
    /// node may name a template instead.
    #[serde(default = "default_outside_window")]
    pub outside_window: crate::domain::WindowPolicy,
    /// Held messages older than this are dropped.
    #[serde(default = "default_hold_for", deserialize_with = "de_duration")]
    pub hold_for: Duration,
}

fn default_outside_window() -> crate::domain::WindowPolicy {
    crate::domain::WindowPolicy::Fail
}
fn default_hold_for() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    pub max_in_flight: usize,
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub ambiguous_resend_after: Duration,
}

/// A store URL fit for logs and errors: the password, if any, shown as `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Messaging tier: unique users reached by business-initiated messages per rolling 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingTier {
    Limited(u64),
    Unlimited,
}

impl MessagingTier {
    pub fn limit(&self) -> Option<u64> {
        match self {
            MessagingTier::Limited(n) => Some(*n),
            MessagingTier::Unlimited => None,
        }
    }
}

impl fmt::Display for MessagingTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessagingTier::Limited(n) => write!(f, "{n}"),
            MessagingTier::Unlimited => f.write_str("unlimited"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    pub phone_number_id: String,
    #[serde(default)]
    pub display_phone_number: String,
    #[serde(default)]
    pub waba_id: String,
    #[serde(default)]
    pub access_token: Option<SecretString>,
    #[serde(default = "yes")]
    pub mark_read: bool,
    #[serde(default = "default_mps")]
    pub messages_per_second: u32,
    #[serde(default = "default_pair_interval", deserialize_with = "de_duration")]
    pub pair_rate_interval: Duration,
    #[serde(default = "default_pair_burst")]
    pub pair_rate_burst: u32,
    #[serde(default)]
    pub daily_limit: Option<u64>,
    #[serde(default = "default_tier", deserialize_with = "de_tier")]
    pub messaging_tier: MessagingTier,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A bot (id of a file in `{flows.dir}/bots/`) that answers messages no flow takes.
    #[serde(default)]
    pub default_bot: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_mps() -> u32 {
    80
}
fn default_pair_interval() -> Duration {
    Duration::from_secs(6)
}
fn default_pair_burst() -> u32 {
    45
}
fn default_tier() -> MessagingTier {
    MessagingTier::Limited(250)
}
fn default_timezone() -> String {
    "UTC".into()
}

const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

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
        w
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

fn validate_timezone(tz: &str) -> Result<(), String> {
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

fn de_tier<'de, D: Deserializer<'de>>(d: D) -> Result<MessagingTier, D::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn bad_account_values_name_their_key() {
        let text = format!(
            "{DEFAULT_CONFIG}\n[[accounts]]\nphone_number_id = \"abc\"\nmessages_per_second = 0\ntimezone = \"Mars\"\n"
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
        // Every `SecretString` field declared here (settings structs live in this file).
        let source = include_str!("config.rs");
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
             [ai.providers.p]\nkind = \"openai\"\nbase_url = \"http://x\"\n"
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
