//! What a campaign is (the admin API's request, the stored spec) and the pure decisions of
//! a campaign step: what one due recipient gets, and where it stands afterwards. No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::RecipientState;
use crate::store::DueRecipient;
use crate::whatsapp::send::OutboundMessage;

use super::CampaignError;

pub use crate::domain::{
    campaign_of_idem_key, is_campaign_request, request_id, CAMPAIGN_REQUEST_PREFIX,
};

/// Contacts Meta called unreachable are skipped this long (as the gate refuses them).
const UNREACHABLE_FOR_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    Broadcast,
    Drip,
    #[serde(alias = "ab_test", alias = "a/b")]
    Ab,
}

impl CampaignKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CampaignKind::Broadcast => "broadcast",
            CampaignKind::Drip => "drip",
            CampaignKind::Ab => "ab",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSpec {
    pub name: String,
    pub language: String,
    /// Body parameters; `{{var}}` is replaced by the recipient's variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_params: Vec<String>,
    /// Further components, sent as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Value>,
}

/// A template, or free-form text (for recipients inside their 24 h window; the others get
/// `fallback_template` if given, else are skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_template: Option<TemplateSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Offset {
    Text(String),
    Millis(i64),
}

#[derive(Debug, Clone, Deserialize)]
pub struct StepRequest {
    /// From enrollment: "0s", "2d", "36h" (or milliseconds).
    #[serde(default)]
    pub offset: Option<Offset>,
    pub message: MessageSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariantRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    pub message: MessageSpec,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecipientRequest {
    pub wa_id: String,
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RecipientsRequest {
    List(Vec<RecipientRequest>),
    Tag { tag: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum When {
    Millis(i64),
    Text(String),
}

/// `POST /admin/v1/campaigns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub name: String,
    pub phone_number_id: crate::domain::AccountId,
    #[serde(rename = "type", default = "broadcast")]
    pub kind: CampaignKind,
    #[serde(default)]
    pub message: Option<MessageSpec>,
    #[serde(default)]
    pub steps: Option<Vec<StepRequest>>,
    #[serde(default)]
    pub variants: Option<Vec<VariantRequest>>,
    pub recipients: RecipientsRequest,
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    #[serde(default)]
    pub start: bool,
    /// Unix milliseconds or RFC 3339.
    #[serde(default)]
    pub scheduled_for: Option<When>,
    /// Pause when more than this share of the last `failure_window` sends failed with 131049
    /// or 131026 (default 0.05 of 200).
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    #[serde(default)]
    pub failure_window: Option<u32>,
}

fn broadcast() -> CampaignKind {
    CampaignKind::Broadcast
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub offset_ms: i64,
    pub message: MessageSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    pub message: MessageSpec,
}

/// What is stored with the campaign and drives its actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub kind: CampaignKind,
    /// Broadcast and A/B: one step at offset 0 (A/B takes its message from the variant).
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    pub failure_threshold: f64,
    pub failure_window: u32,
}

/// Default campaign pace when the request names none.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 600;

fn check_message(m: &MessageSpec, what: &str) -> Result<(), CampaignError> {
    match (&m.template, &m.text) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(CampaignError::Invalid(format!(
            "{what}: give exactly one of `template` or `text`"
        ))),
    }
}

fn parse_offset(o: &Option<Offset>) -> Result<i64, CampaignError> {
    match o {
        None => Ok(0),
        Some(Offset::Millis(ms)) if *ms >= 0 => Ok(*ms),
        Some(Offset::Millis(_)) => Err(CampaignError::Invalid("negative offset".into())),
        Some(Offset::Text(t)) => crate::config::parse_duration(t)
            .map(|d| d.as_millis() as i64)
            .map_err(CampaignError::Invalid),
    }
}

/// Parse `scheduled_for` into unix milliseconds.
pub fn parse_when(w: &When) -> Result<i64, CampaignError> {
    match w {
        When::Millis(ms) => Ok(*ms),
        When::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| CampaignError::Invalid(format!("scheduled_for `{t}`: {e}"))),
    }
}

impl CampaignRequest {
    /// Validate the request and build the stored spec.
    pub fn spec(&self) -> Result<CampaignSpec, CampaignError> {
        if self.name.trim().is_empty() {
            return Err(CampaignError::Invalid("`name` is required".into()));
        }
        if self.rate_limit_per_minute == Some(0) {
            return Err(CampaignError::Invalid(
                "`rate_limit_per_minute` must be positive".into(),
            ));
        }
        let threshold = self.failure_threshold.unwrap_or(0.05);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(CampaignError::Invalid(
                "`failure_threshold` is a share between 0 and 1".into(),
            ));
        }
        let (steps, variants) = match self.kind {
            CampaignKind::Broadcast => {
                let m = self.message.clone().ok_or_else(|| {
                    CampaignError::Invalid("a broadcast needs a `message`".into())
                })?;
                check_message(&m, "message")?;
                (
                    vec![Step {
                        offset_ms: 0,
                        message: m,
                    }],
                    Vec::new(),
                )
            }
            CampaignKind::Drip => {
                let steps = self
                    .steps
                    .as_ref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| CampaignError::Invalid("a drip needs `steps`".into()))?;
                let mut out = Vec::new();
                for (i, s) in steps.iter().enumerate() {
                    check_message(&s.message, &format!("steps[{i}].message"))?;
                    let offset_ms = parse_offset(&s.offset)?;
                    if out.last().is_some_and(|p: &Step| p.offset_ms > offset_ms) {
                        return Err(CampaignError::Invalid(format!(
                            "steps[{i}]: offsets must not decrease"
                        )));
                    }
                    out.push(Step {
                        offset_ms,
                        message: s.message.clone(),
                    });
                }
                (out, Vec::new())
            }
            CampaignKind::Ab => {
                let vs = self
                    .variants
                    .as_ref()
                    .filter(|v| v.len() >= 2)
                    .ok_or_else(|| {
                        CampaignError::Invalid("an A/B test needs two or more `variants`".into())
                    })?;
                let mut out = Vec::new();
                for (i, v) in vs.iter().enumerate() {
                    check_message(&v.message, &format!("variants[{i}].message"))?;
                    out.push(Variant {
                        name: v
                            .name
                            .clone()
                            .unwrap_or_else(|| ((b'A' + (i as u8 % 26)) as char).to_string()),
                        weight: v.weight,
                        message: v.message.clone(),
                    });
                }
                if out.iter().all(|v| v.weight == 0) {
                    return Err(CampaignError::Invalid(
                        "variants need a positive weight".into(),
                    ));
                }
                let first = out[0].message.clone();
                (
                    vec![Step {
                        offset_ms: 0,
                        message: first,
                    }],
                    out,
                )
            }
        };
        if let RecipientsRequest::Tag { tag } = &self.recipients {
            if tag.is_empty() || tag.contains(['%', '_', '"', '\\']) {
                return Err(CampaignError::Invalid(format!("tag `{tag}` is not usable")));
            }
        }
        Ok(CampaignSpec {
            kind: self.kind,
            steps,
            variants,
            failure_threshold: threshold,
            failure_window: self.failure_window.unwrap_or(200).max(1),
        })
    }
}

impl CampaignSpec {
    /// Every template the campaign sends (for the template-state guard).
    pub fn templates(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let messages = self
            .steps
            .iter()
            .map(|s| &s.message)
            .chain(self.variants.iter().map(|v| &v.message));
        for m in messages {
            for t in [&m.template, &m.fallback_template].into_iter().flatten() {
                let key = (t.name.clone(), t.language.clone());
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// The sticky variant of `user` (the same user always gets the same one).
    pub fn variant_for(&self, campaign: i64, user: &str) -> i64 {
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            return 0;
        }
        let mut point = fnv1a(format!("{campaign}:{user}").as_bytes()) % total;
        for (i, v) in self.variants.iter().enumerate() {
            if point < u64::from(v.weight) {
                return i as i64;
            }
            point -= u64::from(v.weight);
        }
        0
    }

    fn message(&self, step: usize, variant: i64) -> Option<&MessageSpec> {
        if self.variants.is_empty() {
            self.steps.get(step).map(|s| &s.message)
        } else {
            self.variants
                .get(variant.max(0) as usize)
                .map(|v| &v.message)
        }
    }
}

/// FNV-1a: a stable hash (the same across builds), for sticky variants.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Replace `{{var}}` in `s` by the recipient's variables; a missing one is an error.
fn fill(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("no value for `{{{{{name}}}}}`")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn template_message(
    t: &TemplateSpec,
    vars: &BTreeMap<String, String>,
) -> Result<OutboundMessage, String> {
    let mut components = t.components.clone();
    if !t.body_params.is_empty() {
        let params = t
            .body_params
            .iter()
            .map(|p| fill(p, vars).map(|text| json!({"type": "text", "text": text})))
            .collect::<Result<Vec<_>, _>>()?;
        components.push(json!({"type": "body", "parameters": params}));
    }
    Ok(OutboundMessage::Template {
        name: t.name.clone(),
        language: t.language.clone(),
        components,
    })
}

/// The message (and the template for a closed window, if any) for one recipient.
pub fn render(
    m: &MessageSpec,
    vars: &BTreeMap<String, String>,
) -> Result<(OutboundMessage, Option<OutboundMessage>), String> {
    let fallback = m
        .fallback_template
        .as_ref()
        .map(|t| template_message(t, vars))
        .transpose()?;
    match (&m.template, &m.text) {
        (Some(t), _) => Ok((template_message(t, vars)?, None)),
        (None, Some(text)) => Ok((
            OutboundMessage::Text {
                body: fill(text, vars)?,
                preview_url: false,
            },
            fallback,
        )),
        (None, None) => Err("the step has no message".into()),
    }
}

/// The variables of a recipient: its own, then `wa_id`, and `name` from its WhatsApp profile
/// when it gave none.
pub fn recipient_vars(r: &DueRecipient) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = r
        .vars
        .as_deref()
        .and_then(|v| serde_json::from_str::<BTreeMap<String, Value>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect();
    vars.entry("wa_id".into())
        .or_insert_with(|| r.user_key.clone().into());
    if let Some(name) = &r.profile_name {
        vars.entry("name".into()).or_insert_with(|| name.clone());
    }
    vars
}

/// What to do with one due recipient.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per recipient of a page, short-lived
pub enum Plan {
    /// Hand this message to the recipient's conversation.
    Send {
        step: i64,
        variant: i64,
        request_id: String,
        message: OutboundMessage,
        /// Sent instead (under its own key) if the conversation refuses the free-form message
        /// because the window is closed.
        fallback: Option<(String, OutboundMessage)>,
    },
    /// Nothing is sent; the recipient ends here.
    End {
        state: RecipientState,
        reason: String,
    },
}

/// Decide the due step of `r` (pure).
pub fn plan(spec: &CampaignSpec, campaign: i64, r: &DueRecipient, now_ms: i64) -> Plan {
    use RecipientState::{Done, Skipped, Stopped};
    let later = r.step > 0;
    let end = |state: RecipientState, reason: &str| Plan::End {
        state,
        reason: reason.to_string(),
    };
    if r.blocked_at.is_some() {
        return end(Skipped, "blocked");
    }
    if r.opted_out_at.is_some_and(|t| t > 0) {
        return end(if later { Stopped } else { Skipped }, "opted out");
    }
    if r.unreachable_at
        .is_some_and(|t| now_ms - t < UNREACHABLE_FOR_MS)
    {
        return end(
            if later { Stopped } else { Skipped },
            "unreachable (131026)",
        );
    }
    if spec.kind == CampaignKind::Drip && r.last_inbound_at.is_some_and(|t| t > r.enrolled_at) {
        return end(Stopped, "replied");
    }
    let variant = if spec.variants.is_empty() {
        0
    } else if r.variant >= 0 {
        r.variant
    } else {
        spec.variant_for(campaign, &r.user_key)
    };
    let Some(m) = spec.message(r.step as usize, variant) else {
        return end(Done, "no such step");
    };
    match render(m, &recipient_vars(r)) {
        Ok((message, fallback)) => Plan::Send {
            step: r.step,
            variant,
            request_id: request_id(campaign, r.id, r.step, false),
            message,
            fallback: fallback.map(|f| (request_id(campaign, r.id, r.step, true), f)),
        },
        Err(e) => end(Skipped, &e),
    }
}

/// Where a recipient stands once its step `step` was handed over: (state, next step, the
/// next step's offset from enrollment).
pub fn after_send(spec: &CampaignSpec, step: i64) -> (RecipientState, i64, i64) {
    let next = step + 1;
    match spec.steps.get(next as usize) {
        Some(s) if spec.variants.is_empty() => (RecipientState::Pending, next, s.offset_ms),
        _ => (RecipientState::Done, next, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(id: i64, user: &str) -> DueRecipient {
        DueRecipient {
            id,
            user_key: user.into(),
            vars: Some(r#"{"name":"Budi","n":3}"#.into()),
            variant: -1,
            step: 0,
            enrolled_at: 1_000,
            profile_name: None,
            opted_out_at: None,
            blocked_at: None,
            unreachable_at: None,
            last_inbound_at: None,
        }
    }

    fn request(v: Value) -> CampaignRequest {
        serde_json::from_value(v).expect("request")
    }

    fn issue_example() -> CampaignRequest {
        request(
            json!({"name": "promo-nov", "phone_number_id": "1", "type": "broadcast",
            "message": {"template": {"name": "promo_nov", "language": "id", "body_params": ["{{name}}", "x{{ n }}"]}},
            "recipients": [{"wa_id": "6281", "vars": {"name": "Budi"}}],
            "rate_limit_per_minute": 600, "start": true}),
        )
    }

    #[test]
    fn the_issues_example_renders_per_recipient_parameters() {
        let spec = issue_example().spec().unwrap();
        let Plan::Send {
            message,
            request_id,
            ..
        } = plan(&spec, 7, &recipient(3, "6281"), 0)
        else {
            panic!("sends")
        };
        assert_eq!(request_id, "campaign:7:3:0");
        let OutboundMessage::Template { components, .. } = message else {
            panic!("template")
        };
        assert_eq!(
            components[0]["parameters"],
            json!([{"type": "text", "text": "Budi"}, {"type": "text", "text": "x3"}])
        );
    }

    #[test]
    fn a_missing_variable_skips_the_recipient_with_the_reason() {
        let spec = issue_example().spec().unwrap();
        let mut r = recipient(1, "6281");
        r.vars = None;
        match plan(&spec, 1, &r, 0) {
            Plan::End { state, reason } => {
                assert_eq!(state, RecipientState::Skipped);
                assert!(reason.contains("name"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // The profile name fills `name` when the list gave none.
        r.vars = Some(r#"{"n": 1}"#.into());
        r.profile_name = Some("Ani".into());
        assert!(matches!(plan(&spec, 1, &r, 0), Plan::Send { .. }));
    }

    #[test]
    fn opted_out_blocked_and_unreachable_recipients_are_skipped() {
        let spec = issue_example().spec().unwrap();
        let mut r = recipient(1, "6281");
        r.opted_out_at = Some(5);
        assert!(matches!(
            plan(&spec, 1, &r, 10),
            Plan::End {
                state: RecipientState::Skipped,
                ..
            }
        ));
        r.opted_out_at = Some(0); // opted back in
        assert!(matches!(plan(&spec, 1, &r, 10), Plan::Send { .. }));
        r.blocked_at = Some(1);
        assert!(matches!(
            plan(&spec, 1, &r, 10),
            Plan::End {
                state: RecipientState::Skipped,
                ..
            }
        ));
        r.blocked_at = None;
        r.unreachable_at = Some(10);
        assert!(matches!(plan(&spec, 1, &r, 20), Plan::End { .. }));
        assert!(matches!(
            plan(&spec, 1, &r, 10 + UNREACHABLE_FOR_MS),
            Plan::Send { .. }
        ));
    }

    #[test]
    fn drip_steps_follow_their_offsets_and_stop_on_a_reply() {
        let spec = request(json!({"name": "d", "phone_number_id": "1", "type": "drip",
            "steps": [{"offset": "0s", "message": {"text": "hi"}},
                      {"offset": "2d", "message": {"template": {"name": "t2", "language": "id"}}},
                      {"offset": "7d", "message": {"template": {"name": "t7", "language": "id"}}}],
            "recipients": {"tag": "vip"}}))
        .spec()
        .unwrap();
        assert_eq!(
            after_send(&spec, 0),
            (RecipientState::Pending, 1, 2 * 86_400_000)
        );
        assert_eq!(
            after_send(&spec, 1),
            (RecipientState::Pending, 2, 7 * 86_400_000)
        );
        assert_eq!(after_send(&spec, 2).0, RecipientState::Done);
        let mut r = recipient(1, "6281");
        r.step = 1;
        r.last_inbound_at = Some(r.enrolled_at + 1);
        assert_eq!(
            plan(&spec, 1, &r, 0),
            Plan::End {
                state: RecipientState::Stopped,
                reason: "replied".into()
            }
        );
        assert_eq!(spec.templates().len(), 2);
    }

    #[test]
    fn ab_variants_are_sticky_and_follow_the_weights() {
        let spec = request(json!({"name": "ab", "phone_number_id": "1", "type": "ab",
            "variants": [{"weight": 3, "message": {"text": "A"}}, {"weight": 1, "message": {"text": "B"}}],
            "recipients": [{"wa_id": "1"}]}))
        .spec()
        .unwrap();
        let mut counts = [0; 2];
        for i in 0..4000 {
            let user = format!("62{i}");
            let v = spec.variant_for(9, &user);
            assert_eq!(v, spec.variant_for(9, &user), "sticky");
            counts[v as usize] += 1;
        }
        assert!(counts[0] > 2700 && counts[0] < 3300, "{counts:?}");
        assert_eq!(after_send(&spec, 0).0, RecipientState::Done);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let bad = [
            json!({"name": "x", "phone_number_id": "1", "recipients": []}),
            json!({"name": "x", "phone_number_id": "1", "message": {"text": "a", "template": {"name": "t", "language": "id"}}, "recipients": []}),
            json!({"name": "x", "phone_number_id": "1", "type": "drip", "steps": [], "recipients": []}),
            json!({"name": "x", "phone_number_id": "1", "type": "ab", "variants": [{"message": {"text": "a"}}], "recipients": []}),
            json!({"name": "x", "phone_number_id": "1", "message": {"text": "a"}, "recipients": {"tag": "v%"}}),
        ];
        for b in bad {
            assert!(request(b.clone()).spec().is_err(), "{b}");
        }
    }
}
