//! The sections of the configuration, with their defaults.

use super::*;
use crate::domain::AccountId;

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

pub(super) fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_keep_alive_timeout() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_min_body_rate() -> u64 {
    64 * 1024
}
pub(super) fn default_max_connections_http() -> usize {
    8192
}
pub(super) fn default_max_unauthenticated_body_bytes() -> usize {
    64 * 1024 * 1024
}
pub(super) fn default_auth_failures_burst() -> u32 {
    10
}
pub(super) fn default_auth_failures_interval() -> Duration {
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
pub(super) fn default_writers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

pub(super) fn default_max_connections() -> u32 {
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

pub(super) fn default_media_dir() -> PathBuf {
    PathBuf::from("data/media")
}
pub(super) fn default_media_max() -> u64 {
    100 * 1024 * 1024
}
pub(super) fn default_transcription_model() -> String {
    "whisper-1".into()
}
pub(super) fn default_transcription_price() -> String {
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

pub(super) fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}
pub(super) fn default_ai_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_ai_retries() -> u32 {
    2
}
pub(super) fn default_ai_concurrency() -> usize {
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

pub(super) fn default_outside_window() -> crate::domain::WindowPolicy {
    crate::domain::WindowPolicy::Fail
}
pub(super) fn default_hold_for() -> Duration {
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
    pub phone_number_id: AccountId,
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
    /// The currency the account sells in (ISO 4217; default IDR).
    #[serde(default)]
    pub currency: crate::domain::Currency,
    /// The payment provider (`[payments.providers.NAME]`) a flow's `payment` node uses
    /// when it names none.
    #[serde(default)]
    pub payments: Option<String>,
    /// The owner's WhatsApp number (digits, country code first): told of a material below
    /// its minimum and of payments held for them (PAID_LATE, MISMATCH).
    #[serde(default)]
    pub owner_wa_id: Option<String>,
    /// A shorthand for one webhook endpoint of this account (every event), kept in step with
    /// the configuration at each start; signed with `webhook_secret` (`whsec_…`, required).
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// Store this account's message bodies (unset: `retention.log_messages`).
    #[serde(default)]
    pub log_messages: Option<bool>,
}

pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_mps() -> u32 {
    80
}
pub(super) fn default_pair_interval() -> Duration {
    Duration::from_secs(6)
}
pub(super) fn default_pair_burst() -> u32 {
    45
}
pub(super) fn default_tier() -> MessagingTier {
    MessagingTier::Limited(250)
}
pub(super) fn default_timezone() -> String {
    "UTC".into()
}

/// `[commerce]`: the shop's reminders (read by each reconciliation pass, so every key is live).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommerceSettings {
    /// An open cart with items and no order, untouched for this long, gets one reminder.
    #[serde(deserialize_with = "de_duration")]
    pub abandoned_after: Duration,
    /// Sent instead of the reminder outside the 24 h window; without it the reminder is held
    /// until the customer writes again. Body parameters: `{{total}}`, `{{count}}`, `{{items}}`.
    pub abandoned_template: Option<ReminderTemplate>,
    /// An active subscription is told this long before its period ends.
    #[serde(deserialize_with = "de_duration")]
    pub renewal_notice: Duration,
    /// Sent instead of the renewal notice outside the window (else it is held). Body
    /// parameters: `{{plan}}`, `{{end_date}}`.
    pub renewal_template: Option<ReminderTemplate>,
    /// Sent instead of an order's new status (changed through the admin API) outside the
    /// window (else it is held). Body parameters: `{{order}}`, `{{status}}`, `{{total}}`.
    pub order_status_template: Option<ReminderTemplate>,
    /// Sent instead of a message to the account's owner (`owner_wa_id`: held payments,
    /// custom orders, materials low, failed refunds) outside the owner's window (else it is
    /// held until they write). Body parameters: `{{topic}}`, `{{text}}`.
    pub owner_template: Option<ReminderTemplate>,
}

impl Default for CommerceSettings {
    fn default() -> Self {
        CommerceSettings {
            abandoned_after: Duration::from_secs(2 * 3600),
            abandoned_template: None,
            renewal_notice: Duration::from_secs(3 * 24 * 3600),
            renewal_template: None,
            order_status_template: None,
            owner_template: None,
        }
    }
}

/// The placeholders `commerce.abandoned_template.body_params` may use.
pub const ABANDONED_PARAMS: &[&str] = &["total", "count", "items"];
/// The placeholders `commerce.renewal_template.body_params` may use.
pub const RENEWAL_PARAMS: &[&str] = &["plan", "end_date"];
/// The placeholders `commerce.order_status_template.body_params` may use.
pub const ORDER_STATUS_PARAMS: &[&str] = &["order", "status", "total"];
/// The placeholders `commerce.owner_template.body_params` may use.
pub const OWNER_PARAMS: &[&str] = &["topic", "text"];

/// Longest text a template's body parameter is given (Meta refuses a hydrated body past its
/// limit, 132005): a longer one is cut, with `…`.
const PARAM_MAX_CHARS: usize = 1000;

/// A body parameter as Meta takes it: no new line or tab, never more than 4 spaces in a row
/// (131008 otherwise): each run of white space becomes one space; cut at
/// [`PARAM_MAX_CHARS`].
fn param_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > PARAM_MAX_CHARS {
        out = out.chars().take(PARAM_MAX_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// An approved template sent outside the 24 h window: its body parameters in order, each a
/// text where `{{name}}` is replaced by the reminder's value of that name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderTemplate {
    pub name: String,
    /// Its language code, e.g. `id` or `en_US`.
    pub language: String,
    #[serde(default)]
    pub body_params: Vec<String>,
}

impl ReminderTemplate {
    /// Why it cannot be sent: a name that is not Meta's (lower-case letters, digits and `_`),
    /// no language, a placeholder outside `known` or left open.
    pub fn problems(&self, known: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(format!(
                "name: `{}` must be a template name (lower-case letters, digits and _)",
                self.name
            ));
        }
        if self.language.trim().is_empty() {
            problems.push("language: must be set (e.g. id, en_US)".into());
        }
        for (i, p) in self.body_params.iter().enumerate() {
            if let Err(e) = placeholders(p).and_then(|names| {
                match names.iter().find(|n| !known.contains(&n.as_str())) {
                    Some(n) => Err(format!(
                        "`{{{{{n}}}}}` is not one of {}",
                        known
                            .iter()
                            .map(|k| format!("{{{{{k}}}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    None => Ok(()),
                }
            }) {
                problems.push(format!("body_params[{i}]: {e}"));
            }
        }
        problems
    }

    /// Each body parameter with its placeholders replaced by `values` (`name` → text); a
    /// placeholder without a value is left as written (the settings' check refuses those).
    pub fn body(&self, values: &[(&str, &str)]) -> Vec<String> {
        self.body_params
            .iter()
            .map(|p| {
                let mut out = String::with_capacity(p.len());
                let mut rest = p.as_str();
                while let Some(start) = rest.find("{{") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + 2..];
                    let Some(end) = after.find("}}") else {
                        out.push_str(&rest[start..]);
                        rest = "";
                        break;
                    };
                    let name = after[..end].trim();
                    match values.iter().find(|(n, _)| *n == name) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&rest[start..start + 2 + end + 2]),
                    }
                    rest = &after[end + 2..];
                }
                out.push_str(rest);
                param_text(&out)
            })
            .collect()
    }
}

/// The `{{name}}`s of a parameter, or why it does not parse.
fn placeholders(p: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = p;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("`{p}` has a `{{{{` without its `}}}}`"))?;
        names.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// `[webhooks]`: outbound webhooks to the business's systems (every key live on reload).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// How long an endpoint has to answer one delivery.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// An endpoint whose deliveries have failed for this long is disabled (and an
    /// `endpoint.disabled` event goes to the others).
    #[serde(deserialize_with = "de_duration")]
    pub disable_after: Duration,
    /// The waits before each attempt, the first included (`"0s"`: at once). Jitter of ±10 %
    /// is added; `Retry-After` is waited at least.
    #[serde(deserialize_with = "de_durations")]
    pub schedule: Vec<Duration>,
    /// Deliveries in flight at once, all endpoints together.
    pub concurrency: usize,
    /// How often the sender looks for due deliveries (a new event is also sent on this beat).
    #[serde(deserialize_with = "de_duration")]
    pub poll: Duration,
    /// After a rotation, how long the previous secret still signs (a second signature).
    #[serde(deserialize_with = "de_duration")]
    pub rotation_overlap: Duration,
    /// How often a running campaign reports its counters (`campaign.progress`).
    #[serde(deserialize_with = "de_duration")]
    pub campaign_progress_every: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 86_400),
            schedule: crate::hooks::DEFAULT_SCHEDULE.to_vec(),
            concurrency: 16,
            poll: Duration::from_secs(1),
            rotation_overlap: Duration::from_secs(24 * 3600),
            campaign_progress_every: Duration::from_secs(60),
        }
    }
}

pub(super) fn de_durations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Duration>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}
