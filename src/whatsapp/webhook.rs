//! Decoder for Meta's webhook POST body (`object = "whatsapp_business_account"`).
//!
//! Design:
//! * One `serde_json::from_slice` pass over the envelope. Every `changes[].value`, and every
//!   element of `messages[]`, `statuses[]`, `contacts[]`, `errors[]`, is captured as a borrowed
//!   `&RawValue` (no copy, no `serde_json::Value`) and then deserialized on its own into
//!   private typed structs. That isolates failures: one odd message, status or change is
//!   skipped (and reported) without failing the batch.
//! * Money (`order.product_items[].item_price`) is read from the number's source text via
//!   `RawValue` and parsed as `Decimal`, never through `f64`.
//! * Within one change, events come out as messages, then statuses, then `value.errors[]`
//!   (Meta sends one kind per change in practice); entries, changes and array elements keep
//!   document order.
//! * Signature verification is NOT done here: check `X-Hub-Signature-256` on the raw bytes first.

use std::borrow::Cow;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::event::{
    AccountEvent, ChangeError, DeliveryStatus, ErrorInfo, InboundMessage, Media, MessageContent,
    MessageContext, OrderItem, ParsedWebhook, ReferredProduct, StatusUpdate, WebhookEvent,
};

/// The value of `object` for WhatsApp Business Account webhooks.
pub const WHATSAPP_OBJECT: &str = "whatsapp_business_account";

#[derive(Debug, thiserror::Error)]
pub enum WebhookParseError {
    /// The bytes are not JSON, or not the `{object, entry:[{changes:[...]}]}` envelope.
    #[error("webhook body is not a valid webhook envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// `object` is not `whatsapp_business_account` (empty string when absent).
    #[error("webhook object is {0:?}, expected \"whatsapp_business_account\"")]
    NotWhatsApp(String),
}

/// Something inside an otherwise valid webhook that was dropped or degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedItem {
    /// JSON path of the item, e.g. `entry[0].changes[1].value.messages[2]`.
    pub path: String,
    pub reason: String,
    /// Nothing of it came out (else it came out degraded: an unsupported message, a
    /// timestamp of 0).
    pub dropped: bool,
}

/// [`parse_webhook`] plus what had to be skipped (for logs / dead-lettering).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookReport {
    pub webhook: ParsedWebhook,
    pub skipped: Vec<SkippedItem>,
}

/// Parse one webhook POST body into typed events, in document order.
///
/// Fails only when the body is not JSON / not the envelope, or `object` is wrong.
/// Odd items inside are skipped (see [`parse_webhook_report`] to learn which).
pub fn parse_webhook(body: &[u8]) -> Result<ParsedWebhook, WebhookParseError> {
    parse_webhook_report(body).map(|r| r.webhook)
}

/// Like [`parse_webhook`], also returning the items that were skipped or degraded.
pub fn parse_webhook_report(body: &[u8]) -> Result<WebhookReport, WebhookParseError> {
    let env: RawEnvelope<'_> = serde_json::from_slice(body)?;
    match env.object.as_deref() {
        Some(WHATSAPP_OBJECT) => {}
        other => {
            return Err(WebhookParseError::NotWhatsApp(
                other.unwrap_or("").to_string(),
            ))
        }
    }
    let mut out = Decoder::default();
    for (ei, entry) in env.entry.iter().enumerate() {
        let waba_id = entry.id.as_ref().map(|s| s.0.clone()).unwrap_or_default();
        for (ci, change) in entry.changes.iter().enumerate() {
            let path = format!("entry[{ei}].changes[{ci}]");
            out.change(&path, &waba_id, change);
        }
    }
    Ok(WebhookReport {
        webhook: ParsedWebhook { events: out.events },
        skipped: out.skipped,
    })
}

// ---------------------------------------------------------------------------------------------
// Raw (Meta-shaped) structs. All private; every field optional / defaulted; unknown fields ignored.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(default)]
    id: Option<StrOrNum>,
    #[serde(default, borrow)]
    changes: Vec<RawChange<'a>>,
}

#[derive(Deserialize)]
struct RawChange<'a> {
    #[serde(default, borrow)]
    field: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    display_phone_number: Option<StrOrNum>,
    #[serde(default)]
    phone_number_id: Option<StrOrNum>,
}

/// Only the metadata of any change value (used for non-`messages` fields).
#[derive(Deserialize)]
struct RawMetaOnly {
    #[serde(default)]
    metadata: Option<RawMetadata>,
}

#[derive(Deserialize)]
struct RawMessagesValue<'a> {
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default, borrow)]
    contacts: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    statuses: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    errors: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawContact {
    #[serde(default)]
    profile: Option<RawProfile>,
    #[serde(default)]
    wa_id: Option<StrOrNum>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct RawProfile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: Option<StrOrNum>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_data: Option<RawErrorData>,
}

#[derive(Deserialize)]
struct RawErrorData {
    #[serde(default)]
    details: Option<String>,
}

/// Just enough of a message to keep it when the full decode fails.
#[derive(Deserialize)]
struct RawMessageHead<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    from: Option<StrOrNum>,
    #[serde(default)]
    timestamp: Option<StrOrNum>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    from: Option<StrOrNum>,
    #[serde(default)]
    from_user_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    timestamp: Option<StrOrNum>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    context: Option<RawContext>,
    #[serde(default)]
    referral: Option<serde_json::Value>,
    #[serde(default)]
    errors: Vec<RawError>,

    #[serde(default)]
    text: Option<RawText>,
    #[serde(default, borrow)]
    interactive: Option<RawInteractive<'a>>,
    #[serde(default)]
    button: Option<RawButton>,
    #[serde(default)]
    image: Option<RawMedia>,
    #[serde(default)]
    video: Option<RawMedia>,
    #[serde(default)]
    audio: Option<RawMedia>,
    #[serde(default)]
    document: Option<RawMedia>,
    #[serde(default)]
    sticker: Option<RawMedia>,
    #[serde(default)]
    location: Option<RawLocation>,
    #[serde(default)]
    contacts: Option<serde_json::Value>,
    #[serde(default)]
    reaction: Option<RawReaction>,
    #[serde(default, borrow)]
    order: Option<RawOrder<'a>>,
    #[serde(default)]
    system: Option<RawSystem>,
}

#[derive(Deserialize)]
struct RawContext {
    #[serde(default)]
    from: Option<StrOrNum>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    forwarded: Option<bool>,
    #[serde(default)]
    frequently_forwarded: Option<bool>,
    #[serde(default)]
    referred_product: Option<RawReferredProduct>,
}

#[derive(Deserialize)]
struct RawReferredProduct {
    #[serde(default)]
    catalog_id: Option<StrOrNum>,
    #[serde(default)]
    product_retailer_id: Option<StrOrNum>,
}

#[derive(Deserialize)]
struct RawText {
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct RawInteractive<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    button_reply: Option<RawReply>,
    #[serde(default)]
    list_reply: Option<RawReply>,
    #[serde(default)]
    nfm_reply: Option<RawNfmReply>,
}

#[derive(Deserialize)]
struct RawReply {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawNfmReply {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    body: Option<String>,
    /// A JSON *string* per Meta; an object is accepted and re-serialised.
    #[serde(default)]
    response_json: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawButton {
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct RawMedia {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    voice: Option<bool>,
    #[serde(default)]
    animated: Option<bool>,
}

#[derive(Deserialize)]
struct RawLocation {
    #[serde(default)]
    latitude: Option<F64OrStr>,
    #[serde(default)]
    longitude: Option<F64OrStr>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawReaction {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct RawOrder<'a> {
    #[serde(default)]
    catalog_id: Option<StrOrNum>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default, borrow)]
    product_items: Vec<RawOrderItem<'a>>,
}

#[derive(Deserialize)]
struct RawOrderItem<'a> {
    #[serde(default)]
    product_retailer_id: Option<StrOrNum>,
    #[serde(default)]
    quantity: Option<StrOrNum>,
    /// Raw source text of the number (or string) so the Decimal never goes through f64.
    #[serde(default, borrow)]
    item_price: Option<&'a RawValue>,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct RawSystem {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    wa_id: Option<StrOrNum>,
    #[serde(default)]
    new_wa_id: Option<StrOrNum>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    timestamp: Option<StrOrNum>,
    #[serde(default)]
    recipient_id: Option<StrOrNum>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<RawError>,
    #[serde(default)]
    pricing: Option<serde_json::Value>,
    #[serde(default)]
    conversation: Option<serde_json::Value>,
}

/// A JSON string or number, kept as its textual form (ids, timestamps, codes).
/// Numbers are taken as serde_json reads them (integers exactly).
struct StrOrNum(String);

impl StrOrNum {
    fn into_string(self) -> String {
        self.0
    }
    fn as_i64(&self) -> Option<i64> {
        let s = self.0.trim();
        s.parse::<i64>().ok().or_else(|| {
            // "1700000000.0" or 1.7e9: accept a finite float, truncated.
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f as i64)
        })
    }
}

impl<'de> Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrNum;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A coordinate: JSON number, or a numeric string.
struct F64OrStr(Option<f64>);

impl<'de> Deserialize<'de> for F64OrStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F64OrStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F64OrStr, E> {
                Ok(F64OrStr(v.trim().parse().ok()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a money amount from the JSON source text of a number or string, exactly.
fn parse_decimal_raw(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get().trim();
    let owned;
    let s = if text.starts_with('"') {
        owned = serde_json::from_str::<String>(text).ok()?;
        owned.trim()
    } else {
        text
    };
    if s.is_empty() {
        return None;
    }
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

fn error_info(e: RawError) -> ErrorInfo {
    ErrorInfo {
        code: e.code.as_ref().and_then(StrOrNum::as_i64).unwrap_or(0),
        title: e.title,
        message: e.message,
        details: e.error_data.and_then(|d| d.details),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Decoder {
    events: Vec<WebhookEvent>,
    skipped: Vec<SkippedItem>,
}

struct ContactInfo {
    wa_id: Option<String>,
    user_id: Option<String>,
    name: Option<String>,
}

impl Decoder {
    /// An item dropped whole.
    fn skip(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(SkippedItem {
            path: path.into(),
            reason: reason.into(),
            dropped: true,
        });
    }

    /// An item that comes out, but not all of it.
    fn degrade(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(SkippedItem {
            path: path.into(),
            reason: reason.into(),
            dropped: false,
        });
    }

    fn change(&mut self, path: &str, waba_id: &str, change: &RawChange<'_>) {
        let Some(field) = change.field.as_deref() else {
            self.skip(path, "change without `field`");
            return;
        };
        let Some(value) = change.value else {
            self.skip(path, "change without `value`");
            return;
        };
        if field == "messages" {
            self.messages_change(path, value);
        } else {
            self.account_event(path, waba_id, field, value);
        }
    }

    fn account_event(&mut self, path: &str, waba_id: &str, field: &str, value: &RawValue) {
        let phone_number_id = serde_json::from_str::<RawMetaOnly>(value.get())
            .ok()
            .and_then(|m| m.metadata)
            .and_then(|m| m.phone_number_id)
            .map(StrOrNum::into_string);
        match serde_json::from_str::<serde_json::Value>(value.get()) {
            Ok(value) => self.events.push(WebhookEvent::AccountEvent(AccountEvent {
                waba_id: waba_id.to_string(),
                field: field.to_string(),
                phone_number_id,
                value,
            })),
            Err(e) => self.skip(format!("{path}.value"), e.to_string()),
        }
    }

    fn messages_change(&mut self, path: &str, value: &RawValue) {
        let v: RawMessagesValue<'_> = match serde_json::from_str(value.get()) {
            Ok(v) => v,
            Err(e) => {
                self.skip(format!("{path}.value"), format!("bad messages value: {e}"));
                return;
            }
        };
        let (phone_number_id, display) = match v.metadata {
            Some(m) => (
                m.phone_number_id.map(StrOrNum::into_string),
                m.display_phone_number
                    .map(StrOrNum::into_string)
                    .unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let phone_number_id = phone_number_id.filter(|s| !s.is_empty());

        if let Some(pnid) = phone_number_id.as_deref() {
            let contacts: Vec<ContactInfo> = v
                .contacts
                .iter()
                .filter_map(|c| serde_json::from_str::<RawContact>(c.get()).ok())
                .map(|c| ContactInfo {
                    wa_id: c.wa_id.map(StrOrNum::into_string),
                    user_id: non_empty(c.user_id),
                    name: c.profile.and_then(|p| p.name),
                })
                .collect();
            for (i, raw) in v.messages.iter().enumerate() {
                let mpath = format!("{path}.value.messages[{i}]");
                self.message(&mpath, pnid, &display, &contacts, raw);
            }
            for (i, raw) in v.statuses.iter().enumerate() {
                let spath = format!("{path}.value.statuses[{i}]");
                self.status(&spath, pnid, raw);
            }
        } else if !v.messages.is_empty() || !v.statuses.is_empty() {
            self.skip(
                format!("{path}.value"),
                format!(
                    "messages change without metadata.phone_number_id: {} message(s), {} status(es) skipped",
                    v.messages.len(),
                    v.statuses.len()
                ),
            );
        }

        if !v.errors.is_empty() {
            let mut errors = Vec::with_capacity(v.errors.len());
            for (i, raw) in v.errors.iter().enumerate() {
                match serde_json::from_str::<RawError>(raw.get()) {
                    Ok(e) => errors.push(error_info(e)),
                    Err(e) => self.skip(format!("{path}.value.errors[{i}]"), e.to_string()),
                }
            }
            if !errors.is_empty() {
                self.events.push(WebhookEvent::ChangeError(ChangeError {
                    phone_number_id: phone_number_id.clone(),
                    errors,
                }));
            }
        }
    }

    fn message(
        &mut self,
        path: &str,
        pnid: &str,
        display: &str,
        contacts: &[ContactInfo],
        raw: &RawValue,
    ) {
        let m: RawMessage<'_> = match serde_json::from_str(raw.get()) {
            Ok(m) => m,
            Err(e) => {
                // Keep the message (as Unsupported) if at least its head is readable.
                let reason = format!("message body not decodable ({e}); kept as unsupported");
                self.degraded_message(path, pnid, display, contacts, raw, reason);
                return;
            }
        };
        let Some(wamid) = non_empty(m.id.clone()) else {
            self.skip(path, "message without `id` (wamid)");
            return;
        };
        let timestamp = self.timestamp(path, m.timestamp.as_ref());
        let from = m
            .from
            .as_ref()
            .map(|s| s.0.clone())
            .filter(|s| !s.is_empty());
        let msg_user_id =
            non_empty(m.from_user_id.clone()).or_else(|| non_empty(m.user_id.clone()));
        let contact = match_contact(contacts, from.as_deref(), msg_user_id.as_deref());

        let context = m.context.map(|c| MessageContext {
            from: c.from.map(StrOrNum::into_string),
            id: c.id,
            forwarded: c.forwarded.unwrap_or(false),
            frequently_forwarded: c.frequently_forwarded.unwrap_or(false),
            referred_product: c.referred_product.map(|p| ReferredProduct {
                catalog_id: p.catalog_id.map(StrOrNum::into_string).unwrap_or_default(),
                product_retailer_id: p
                    .product_retailer_id
                    .map(StrOrNum::into_string)
                    .unwrap_or_default(),
            }),
        });
        let errors = m.errors.into_iter().map(error_info).collect();
        let kind = m.kind.as_deref().unwrap_or("").to_string();
        let content = content_of(
            &kind,
            m.text,
            m.interactive,
            m.button,
            [m.image, m.video, m.audio, m.document, m.sticker],
            m.location,
            m.contacts,
            m.reaction,
            m.order,
            m.system,
        );

        self.events.push(WebhookEvent::Message(InboundMessage {
            phone_number_id: pnid.to_string(),
            display_phone_number: display.to_string(),
            from: from.or_else(|| contact.and_then(|c| c.wa_id.clone())),
            user_id: msg_user_id.or_else(|| contact.and_then(|c| c.user_id.clone())),
            profile_name: contact.and_then(|c| c.name.clone()),
            wamid,
            timestamp,
            context,
            referral: m.referral,
            errors,
            content,
        }));
    }

    fn degraded_message(
        &mut self,
        path: &str,
        pnid: &str,
        display: &str,
        contacts: &[ContactInfo],
        raw: &RawValue,
        reason: String,
    ) {
        let head = match serde_json::from_str::<RawMessageHead<'_>>(raw.get()) {
            Ok(h) => h,
            Err(e) => {
                self.skip(path, format!("message not decodable: {e}"));
                return;
            }
        };
        let Some(wamid) = non_empty(head.id) else {
            self.skip(path, "message without `id` (wamid)");
            return;
        };
        let timestamp = self.timestamp(path, head.timestamp.as_ref());
        let from = head
            .from
            .map(StrOrNum::into_string)
            .filter(|s| !s.is_empty());
        let contact = match_contact(contacts, from.as_deref(), None);
        self.degrade(path, reason);
        self.events.push(WebhookEvent::Message(InboundMessage {
            phone_number_id: pnid.to_string(),
            display_phone_number: display.to_string(),
            from: from.or_else(|| contact.and_then(|c| c.wa_id.clone())),
            user_id: contact.and_then(|c| c.user_id.clone()),
            profile_name: contact.and_then(|c| c.name.clone()),
            wamid,
            timestamp,
            context: None,
            referral: None,
            errors: Vec::new(),
            content: MessageContent::Unsupported {
                original_type: head.kind.as_deref().unwrap_or("").to_string(),
            },
        }));
    }

    /// Unix seconds; 0 (and a report entry) when missing or unreadable.
    fn timestamp(&mut self, path: &str, ts: Option<&StrOrNum>) -> i64 {
        match ts.and_then(StrOrNum::as_i64) {
            Some(t) => t,
            None => {
                self.degrade(
                    format!("{path}.timestamp"),
                    "missing or invalid timestamp; using 0",
                );
                0
            }
        }
    }

    fn status(&mut self, path: &str, pnid: &str, raw: &RawValue) {
        let s: RawStatus = match serde_json::from_str(raw.get()) {
            Ok(s) => s,
            Err(e) => {
                self.skip(path, format!("status not decodable: {e}"));
                return;
            }
        };
        let Some(wamid) = non_empty(s.id) else {
            self.skip(path, "status without `id` (wamid)");
            return;
        };
        let Some(status) = non_empty(s.status) else {
            self.skip(path, "status without `status`");
            return;
        };
        let timestamp = self.timestamp(path, s.timestamp.as_ref());
        self.events.push(WebhookEvent::Status(StatusUpdate {
            phone_number_id: pnid.to_string(),
            wamid,
            status: DeliveryStatus::parse(&status),
            timestamp,
            recipient_id: s.recipient_id.map(StrOrNum::into_string),
            biz_opaque_callback_data: s.biz_opaque_callback_data,
            errors: s.errors.into_iter().map(error_info).collect(),
            pricing: s.pricing,
            conversation: s.conversation,
        }));
    }
}

/// The contact whose `wa_id` is the sender, else whose `user_id` matches, else the only one.
fn match_contact<'c>(
    contacts: &'c [ContactInfo],
    from: Option<&str>,
    user_id: Option<&str>,
) -> Option<&'c ContactInfo> {
    from.and_then(|f| contacts.iter().find(|c| c.wa_id.as_deref() == Some(f)))
        .or_else(|| user_id.and_then(|u| contacts.iter().find(|c| c.user_id.as_deref() == Some(u))))
        .or(if contacts.len() == 1 {
            contacts.first()
        } else {
            None
        })
}

fn media_of(m: RawMedia) -> Media {
    Media {
        id: m.id.unwrap_or_default(),
        mime_type: m.mime_type,
        sha256: m.sha256,
        caption: m.caption,
    }
}

#[allow(clippy::too_many_arguments)]
fn content_of(
    kind: &str,
    text: Option<RawText>,
    interactive: Option<RawInteractive<'_>>,
    button: Option<RawButton>,
    media: [Option<RawMedia>; 5],
    location: Option<RawLocation>,
    contacts: Option<serde_json::Value>,
    reaction: Option<RawReaction>,
    order: Option<RawOrder<'_>>,
    system: Option<RawSystem>,
) -> MessageContent {
    let unsupported = |t: &str| MessageContent::Unsupported {
        original_type: t.to_string(),
    };
    let [image, video, audio, document, sticker] = media;
    match kind {
        "text" => match text {
            Some(t) => MessageContent::Text {
                body: t.body.unwrap_or_default(),
            },
            None => unsupported(kind),
        },
        "interactive" => {
            let Some(i) = interactive else {
                return unsupported(kind);
            };
            match i.kind.as_deref().unwrap_or("") {
                "button_reply" => match i.button_reply {
                    Some(r) => MessageContent::ButtonReply {
                        id: r.id.unwrap_or_default(),
                        title: r.title.unwrap_or_default(),
                    },
                    None => unsupported("interactive.button_reply"),
                },
                "list_reply" => match i.list_reply {
                    Some(r) => MessageContent::ListReply {
                        id: r.id.unwrap_or_default(),
                        title: r.title.unwrap_or_default(),
                        description: r.description,
                    },
                    None => unsupported("interactive.list_reply"),
                },
                "nfm_reply" => match i.nfm_reply {
                    Some(r) => MessageContent::FlowReply {
                        name: r.name.unwrap_or_default(),
                        body: r.body,
                        response_json: match r.response_json {
                            Some(serde_json::Value::String(s)) => s,
                            Some(serde_json::Value::Null) | None => String::new(),
                            Some(other) => other.to_string(),
                        },
                    },
                    None => unsupported("interactive.nfm_reply"),
                },
                other => unsupported(&format!("interactive.{other}")),
            }
        }
        "button" => match button {
            Some(b) => MessageContent::TemplateButton {
                payload: b.payload.unwrap_or_default(),
                text: b.text.unwrap_or_default(),
            },
            None => unsupported(kind),
        },
        "image" => image.map_or_else(
            || unsupported(kind),
            |m| MessageContent::Image { media: media_of(m) },
        ),
        "video" => video.map_or_else(
            || unsupported(kind),
            |m| MessageContent::Video { media: media_of(m) },
        ),
        "audio" => audio.map_or_else(
            || unsupported(kind),
            |m| {
                let voice = m.voice.unwrap_or(false);
                MessageContent::Audio {
                    media: media_of(m),
                    voice,
                }
            },
        ),
        "document" => document.map_or_else(
            || unsupported(kind),
            |mut m| {
                let filename = m.filename.take();
                MessageContent::Document {
                    media: media_of(m),
                    filename,
                }
            },
        ),
        "sticker" => sticker.map_or_else(
            || unsupported(kind),
            |m| {
                let animated = m.animated.unwrap_or(false);
                MessageContent::Sticker {
                    media: media_of(m),
                    animated,
                }
            },
        ),
        "location" => match location {
            Some(RawLocation {
                latitude: Some(F64OrStr(Some(latitude))),
                longitude: Some(F64OrStr(Some(longitude))),
                name,
                address,
                url,
            }) => MessageContent::Location {
                latitude,
                longitude,
                name,
                address,
                url,
            },
            _ => unsupported(kind),
        },
        "contacts" => match contacts {
            Some(c) => MessageContent::Contacts { contacts: c },
            None => unsupported(kind),
        },
        "reaction" => match reaction {
            Some(r) => MessageContent::Reaction {
                message_id: r.message_id.unwrap_or_default(),
                emoji: non_empty(r.emoji),
            },
            None => unsupported(kind),
        },
        "order" => match order {
            Some(o) => MessageContent::Order {
                catalog_id: o.catalog_id.map(StrOrNum::into_string),
                text: o.text,
                items: o
                    .product_items
                    .into_iter()
                    .filter_map(|it| {
                        Some(OrderItem {
                            product_retailer_id: it
                                .product_retailer_id
                                .map(StrOrNum::into_string)
                                .unwrap_or_default(),
                            quantity: it.quantity.as_ref().and_then(StrOrNum::as_i64).unwrap_or(1),
                            // An item whose price is not a readable amount is dropped.
                            item_price: parse_decimal_raw(it.item_price?)?,
                            currency: it.currency.unwrap_or_default(),
                        })
                    })
                    .collect(),
            },
            None => unsupported(kind),
        },
        "system" => match system {
            Some(s) => MessageContent::System {
                body: s.body,
                new_wa_id: s
                    .wa_id
                    .or(s.new_wa_id)
                    .map(StrOrNum::into_string)
                    .filter(|s| !s.is_empty()),
                kind: s.kind,
            },
            None => unsupported(kind),
        },
        other => unsupported(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNID: &str = "106540352242922";
    const DISPLAY: &str = "15550783881";
    const U1: &str = "16315551181";
    const U2: &str = "16315551182";
    const WAMID: &str = "wamid.HBgLMTYzMTU1NTExODEVAgASGBQzQUFFMjM0";
    const OURS: &str = "wamid.HBgLMTYzMTU1NTExODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/webhooks/", $name, ".json"))
        };
    }

    fn events(json: &str) -> Vec<WebhookEvent> {
        let report = parse_webhook_report(json.as_bytes()).expect("parses");
        assert!(
            report.skipped.is_empty(),
            "unexpected skips: {:?}",
            report.skipped
        );
        report.webhook.events
    }

    fn one_message(json: &str) -> InboundMessage {
        let mut ev = events(json);
        assert_eq!(ev.len(), 1, "{ev:?}");
        match ev.remove(0) {
            WebhookEvent::Message(m) => {
                assert_eq!(m.phone_number_id, PNID);
                assert_eq!(m.display_phone_number, DISPLAY);
                assert_eq!(m.wamid, WAMID);
                assert_eq!(m.timestamp, 1_739_321_024);
                assert_eq!(m.from.as_deref(), Some(U1));
                m
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn one_status(json: &str) -> StatusUpdate {
        let mut ev = events(json);
        assert_eq!(ev.len(), 1, "{ev:?}");
        match ev.remove(0) {
            WebhookEvent::Status(s) => {
                assert_eq!(s.phone_number_id, PNID);
                assert_eq!(s.wamid, OURS);
                assert_eq!(s.timestamp, 1_739_321_030);
                assert_eq!(s.recipient_id.as_deref(), Some(U1));
                s
            }
            other => panic!("expected a status, got {other:?}"),
        }
    }

    fn reply_context() -> Option<MessageContext> {
        Some(MessageContext {
            from: Some(DISPLAY.into()),
            id: Some(OURS.into()),
            ..Default::default()
        })
    }

    #[test]
    fn text() {
        let m = one_message(fixture!("text"));
        assert_eq!(m.profile_name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(m.user_key(), Some(U1));
        assert_eq!(
            m.content,
            MessageContent::Text {
                body: "Hola! ¿Tienen envíos a Madrid?".into()
            }
        );
        assert!(m.context.is_none() && m.referral.is_none() && m.errors.is_empty());
    }

    #[test]
    fn button_reply() {
        let m = one_message(fixture!("button_reply"));
        assert_eq!(
            m.content,
            MessageContent::ButtonReply {
                id: "confirm_yes".into(),
                title: "Yes, confirm".into()
            }
        );
        assert_eq!(m.context, reply_context());
    }

    #[test]
    fn list_reply() {
        let m = one_message(fixture!("list_reply"));
        assert_eq!(
            m.content,
            MessageContent::ListReply {
                id: "priority_express".into(),
                title: "Express".into(),
                description: Some("Next day to 2 days".into())
            }
        );
        assert_eq!(m.context, reply_context());
    }

    #[test]
    fn nfm_reply() {
        let m = one_message(fixture!("nfm_reply"));
        let MessageContent::FlowReply {
            name,
            body,
            response_json,
        } = m.content
        else {
            panic!("{:?}", m.content)
        };
        assert_eq!(name, "flow");
        assert_eq!(body.as_deref(), Some("Sent"));
        let v: serde_json::Value = serde_json::from_str(&response_json).unwrap();
        assert_eq!(v["flow_token"], "AQAAAAACS5FpgQ_cAAAAAD0QI3s.");
    }

    #[test]
    fn template_button() {
        let m = one_message(fixture!("template_button"));
        assert_eq!(
            m.content,
            MessageContent::TemplateButton {
                payload: "STOP_PROMOTIONS".into(),
                text: "Stop promotions".into()
            }
        );
        assert_eq!(m.context, reply_context());
    }

    #[test]
    fn image() {
        let m = one_message(fixture!("image"));
        assert_eq!(
            m.content,
            MessageContent::Image {
                media: Media {
                    id: "1003383421387256".into(),
                    mime_type: Some("image/jpeg".into()),
                    sha256: Some("nSJh4MvPxNFvOhUrZPsGTbFT6aqgTWrRGcjlvFvWV+c=".into()),
                    caption: Some("My broken order".into()),
                }
            }
        );
    }

    #[test]
    fn video() {
        let m = one_message(fixture!("video"));
        let MessageContent::Video { media } = m.content else {
            panic!("{:?}", m.content)
        };
        assert_eq!(media.id, "1166846181421424");
        assert_eq!(media.mime_type.as_deref(), Some("video/mp4"));
        assert_eq!(media.caption.as_deref(), Some("unboxing"));
    }

    #[test]
    fn audio_voice() {
        let m = one_message(fixture!("audio_voice"));
        let MessageContent::Audio { media, voice } = m.content else {
            panic!("{:?}", m.content)
        };
        assert!(voice);
        assert_eq!(media.id, "1090395985834522");
        assert_eq!(media.mime_type.as_deref(), Some("audio/ogg; codecs=opus"));
    }

    #[test]
    fn audio_voice_defaults_to_false() {
        let json = fixture!("audio_voice").replace("\"voice\": true", "\"x\": 1");
        let m = one_message(&json);
        assert!(matches!(
            m.content,
            MessageContent::Audio { voice: false, .. }
        ));
    }

    #[test]
    fn document() {
        let m = one_message(fixture!("document"));
        let MessageContent::Document { media, filename } = m.content else {
            panic!("{:?}", m.content)
        };
        assert_eq!(filename.as_deref(), Some("invoice-2025-03.pdf"));
        assert_eq!(media.caption.as_deref(), Some("Invoice March"));
        assert_eq!(media.id, "1376223850470843");
    }

    #[test]
    fn sticker() {
        let m = one_message(fixture!("sticker"));
        let MessageContent::Sticker { media, animated } = m.content else {
            panic!("{:?}", m.content)
        };
        assert!(!animated);
        assert_eq!(media.mime_type.as_deref(), Some("image/webp"));
    }

    #[test]
    fn location() {
        let m = one_message(fixture!("location"));
        assert_eq!(
            m.content,
            MessageContent::Location {
                latitude: 37.483307,
                longitude: -122.148981,
                name: Some("Meta Headquarters".into()),
                address: Some("1 Hacker Way, Menlo Park, CA 94025".into()),
                url: Some("https://www.meta.com".into()),
            }
        );
    }

    #[test]
    fn location_pin_without_name() {
        let json = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"S"},"wa_id":"16315551181"}],"messages":[{"from":"16315551181","id":"wamid.HBgLMTYzMTU1NTExODEVAgASGBQzQUFFMjM0","timestamp":"1739321024","type":"location","location":{"latitude":1.5,"longitude":-2}}]}}]}]}"#;
        let m = one_message(json);
        assert_eq!(
            m.content,
            MessageContent::Location {
                latitude: 1.5,
                longitude: -2.0,
                name: None,
                address: None,
                url: None
            }
        );
    }

    #[test]
    fn contacts() {
        let m = one_message(fixture!("contacts"));
        let MessageContent::Contacts { contacts } = m.content else {
            panic!("{:?}", m.content)
        };
        assert_eq!(contacts[0]["name"]["formatted_name"], "Pablo Morales");
        assert_eq!(contacts[0]["phones"][0]["wa_id"], "19405551234");
    }

    #[test]
    fn reaction() {
        let m = one_message(fixture!("reaction"));
        assert_eq!(
            m.content,
            MessageContent::Reaction {
                message_id: OURS.into(),
                emoji: Some("\u{1F44D}".into())
            }
        );
    }

    #[test]
    fn reaction_removed() {
        let m = one_message(fixture!("reaction_removed"));
        assert_eq!(
            m.content,
            MessageContent::Reaction {
                message_id: OURS.into(),
                emoji: None
            }
        );
        let json = fixture!("reaction").replace("\"\\ud83d\\udc4d\"", "\"\"");
        assert_ne!(json, fixture!("reaction"));
        let m = one_message(&json);
        assert!(matches!(
            m.content,
            MessageContent::Reaction { emoji: None, .. }
        ));
    }

    #[test]
    fn order() {
        let m = one_message(fixture!("order"));
        let MessageContent::Order {
            catalog_id,
            text,
            items,
        } = m.content
        else {
            panic!("{:?}", m.content)
        };
        assert_eq!(catalog_id.as_deref(), Some("194836987003835"));
        assert_eq!(text.as_deref(), Some("Please deliver before 5pm"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].product_retailer_id, "di9ozbzfi4");
        assert_eq!(items[0].quantity, 2);
        assert_eq!(items[0].item_price.to_string(), "12.34");
        assert_eq!(items[0].currency, "USD");
        assert_eq!(items[1].quantity, 1);
        assert_eq!(items[1].item_price.to_string(), "0.10");
    }

    #[test]
    fn price_is_exact_decimal_not_float() {
        let base = fixture!("order");
        for (src, want) in [
            ("12.34", "12.34"),
            ("0.1", "0.1"),
            ("19.990000000000001", "19.990000000000001"),
            ("\"7.05\"", "7.05"),
            ("1e2", "100"),
        ] {
            let json = base.replace("\"item_price\": 12.34", &format!("\"item_price\": {src}"));
            let m = one_message(&json);
            let MessageContent::Order { items, .. } = m.content else {
                panic!()
            };
            assert_eq!(
                items[0].item_price,
                Decimal::from_str(want).unwrap(),
                "{src}"
            );
            assert_eq!(items[0].item_price.to_string(), want, "{src}");
        }
    }

    #[test]
    fn system() {
        let mut ev = events(fixture!("system"));
        let WebhookEvent::Message(m) = ev.remove(0) else {
            panic!()
        };
        assert_eq!(m.profile_name, None);
        assert_eq!(
            m.content,
            MessageContent::System {
                body: Some("User A changed from +1 631-555-1181 to +1 631-555-1190".into()),
                new_wa_id: Some("16315551190".into()),
                kind: Some("user_changed_number".into()),
            }
        );
    }

    #[test]
    fn unsupported() {
        let m = one_message(fixture!("unsupported"));
        assert_eq!(
            m.content,
            MessageContent::Unsupported {
                original_type: "unsupported".into()
            }
        );
        assert_eq!(
            m.errors,
            vec![ErrorInfo {
                code: 131051,
                title: Some("Message type unknown".into()),
                message: Some("Message type unknown".into()),
                details: Some("Message type is currently not supported.".into()),
            }]
        );
    }

    #[test]
    fn unknown_type() {
        let m = one_message(fixture!("unknown_type"));
        assert_eq!(
            m.content,
            MessageContent::Unsupported {
                original_type: "hologram".into()
            }
        );
    }

    #[test]
    fn status_sent() {
        let s = one_status(fixture!("status_sent"));
        assert_eq!(s.status, DeliveryStatus::Sent);
        assert_eq!(
            s.biz_opaque_callback_data.as_deref(),
            Some("outbox:8f14e45f")
        );
        assert_eq!(s.pricing.as_ref().unwrap()["pricing_model"], "PMP");
        assert_eq!(
            s.conversation.as_ref().unwrap()["origin"]["type"],
            "service"
        );
        assert!(s.errors.is_empty());
    }

    #[test]
    fn status_delivered() {
        let s = one_status(fixture!("status_delivered"));
        assert_eq!(s.status, DeliveryStatus::Delivered);
        assert_eq!(s.biz_opaque_callback_data, None);
    }

    #[test]
    fn status_read() {
        let s = one_status(fixture!("status_read"));
        assert_eq!(s.status, DeliveryStatus::Read);
        assert!(s.pricing.is_none() && s.conversation.is_none());
    }

    #[test]
    fn status_failed() {
        let s = one_status(fixture!("status_failed"));
        assert_eq!(s.status, DeliveryStatus::Failed);
        assert_eq!(
            s.biz_opaque_callback_data.as_deref(),
            Some("outbox:c9f0f895")
        );
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].code, 131047);
        assert_eq!(s.errors[0].title.as_deref(), Some("Re-engagement message"));
        assert!(s.errors[0]
            .details
            .as_deref()
            .unwrap()
            .contains("more than 24 hours"));
    }

    #[test]
    fn status_unknown_string_and_numeric_timestamp() {
        let json = fixture!("status_read")
            .replace("\"status\": \"read\"", "\"status\": \"played\"")
            .replace("\"1739321030\"", "1739321030");
        let s = one_status(&json);
        assert_eq!(s.status, DeliveryStatus::Other("played".into()));
    }

    #[test]
    fn batch() {
        let ev = events(fixture!("batch"));
        let msgs: Vec<&InboundMessage> = ev
            .iter()
            .map(|e| match e {
                WebhookEvent::Message(m) => m,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].from.as_deref(), Some(U1));
        assert_eq!(msgs[0].profile_name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(msgs[0].content.user_text(), Some("first from Sheena"));
        assert_eq!(msgs[1].from.as_deref(), Some(U2));
        assert_eq!(msgs[1].profile_name.as_deref(), Some("Pablo Morales"));
        assert_eq!(msgs[1].content.user_text(), Some("first from Pablo"));
        assert_eq!(msgs[2].from.as_deref(), Some(U1));
        assert_eq!(msgs[2].content.kind(), "image");
        assert_eq!(
            msgs.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
            [1_739_321_024, 1_739_321_025, 1_739_321_026]
        );
    }

    #[test]
    fn batch_message_without_id_skips_only_that_message() {
        let json = fixture!("batch").replacen(
            "\"id\": \"wamid.HBgLMTYzMTU1NTExODIVAgASGBQzQUZBOEE0RkE3QzM1OTk0NkE4QgA=\"",
            "\"idx\": \"nope\"",
            1,
        );
        assert_ne!(json, fixture!("batch"));
        let r = parse_webhook_report(json.as_bytes()).unwrap();
        assert_eq!(r.webhook.events.len(), 2);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].path, "entry[0].changes[0].value.messages[1]");
    }

    #[test]
    fn ill_typed_message_is_kept_as_unsupported() {
        // `text` is a number: the typed decode fails, the head is kept.
        let json = fixture!("text").replace(
            "\"text\": {\n                  \"body\": \"Hola! \\u00bfTienen env\\u00edos a Madrid?\"\n                }",
            "\"text\": 42",
        );
        assert_ne!(json, fixture!("text"));
        let r = parse_webhook_report(json.as_bytes()).unwrap();
        assert_eq!(r.skipped.len(), 1);
        let [WebhookEvent::Message(m)] = &r.webhook.events[..] else {
            panic!("{:?}", r.webhook.events)
        };
        assert_eq!(m.wamid, WAMID);
        assert_eq!(m.profile_name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(
            m.content,
            MessageContent::Unsupported {
                original_type: "text".into()
            }
        );
    }

    #[test]
    fn account_update() {
        let ev = events(fixture!("account_update"));
        let [WebhookEvent::AccountEvent(a)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(a.waba_id, "102290129340398");
        assert_eq!(a.field, "account_update");
        assert_eq!(a.phone_number_id, None);
        assert_eq!(a.value["event"], "ACCOUNT_VIOLATION");
    }

    #[test]
    fn quality_update() {
        let ev = events(fixture!("quality_update"));
        let [WebhookEvent::AccountEvent(a)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(a.field, "phone_number_quality_update");
        assert_eq!(a.value["event"], "FLAGGED");
        assert_eq!(a.value["current_limit"], "TIER_10K");
    }

    #[test]
    fn change_errors() {
        let ev = events(fixture!("change_errors"));
        let [WebhookEvent::ChangeError(c)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(c.phone_number_id.as_deref(), Some(PNID));
        assert_eq!(c.errors[0].code, 131000);
        assert_eq!(
            c.errors[0].details.as_deref(),
            Some("Message failed to send due to an unknown error.")
        );
    }

    #[test]
    fn non_json_is_error() {
        assert!(matches!(
            parse_webhook(b"hub.mode=subscribe"),
            Err(WebhookParseError::Json(_))
        ));
        assert!(matches!(
            parse_webhook(b""),
            Err(WebhookParseError::Json(_))
        ));
        assert!(matches!(
            parse_webhook(br#"{"object":"whatsapp_business_account","entry":"x"}"#),
            Err(WebhookParseError::Json(_))
        ));
    }

    #[test]
    fn wrong_object_is_error() {
        let json = fixture!("text").replace("whatsapp_business_account", "page");
        match parse_webhook(json.as_bytes()) {
            Err(WebhookParseError::NotWhatsApp(o)) => assert_eq!(o, "page"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_webhook(br#"{"entry":[]}"#),
            Err(WebhookParseError::NotWhatsApp(_))
        ));
    }

    #[test]
    fn unknown_fields_ignored() {
        let json = fixture!("text")
            .replace(
                "\"type\": \"text\",",
                "\"type\": \"text\", \"brand_new\": {\"a\": [1, 2, {\"b\": null}]},",
            )
            .replace(
                "\"messaging_product\": \"whatsapp\",",
                "\"messaging_product\": \"whatsapp\", \"future\": 7,",
            );
        assert_ne!(json, fixture!("text"));
        let m = one_message(&json);
        assert_eq!(
            m.content.user_text(),
            Some("Hola! ¿Tienen envíos a Madrid?")
        );
    }

    #[test]
    fn messages_without_phone_number_id_are_skipped() {
        let json = fixture!("text").replace("\"phone_number_id\": \"106540352242922\"", "\"x\": 1");
        let r = parse_webhook_report(json.as_bytes()).unwrap();
        assert!(r.webhook.events.is_empty());
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn user_id_and_contact_matching() {
        // Username user: no `from`, BSUID on message and contact.
        let json = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"A"},"wa_id":"16315551181"},{"profile":{"name":"Bee"},"user_id":"US.1502576394655843"}],"messages":[{"from_user_id":"US.1502576394655843","id":"wamid.X","timestamp":1739321024,"type":"text","text":{"body":"hi"}}]},"field":"messages"}]}]}"#;
        let ev = events(json);
        let [WebhookEvent::Message(m)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(m.from, None);
        assert_eq!(m.user_id.as_deref(), Some("US.1502576394655843"));
        assert_eq!(m.profile_name.as_deref(), Some("Bee"));
        assert_eq!(m.user_key(), Some("US.1502576394655843"));
        assert_eq!(m.timestamp, 1_739_321_024);
    }

    #[test]
    fn context_forwarded_and_referral() {
        let json = fixture!("text").replace(
            "\"type\": \"text\",",
            r#""type": "text", "context": {"forwarded": true, "referred_product": {"catalog_id": "194836987003835", "product_retailer_id": "di9ozbzfi4"}}, "referral": {"source_type": "ad", "ctwa_clid": "abc"},"#,
        );
        let m = one_message(&json);
        let c = m.context.unwrap();
        assert!(c.forwarded && !c.frequently_forwarded);
        assert_eq!(
            c.referred_product.unwrap().product_retailer_id,
            "di9ozbzfi4"
        );
        assert_eq!(m.referral.unwrap()["ctwa_clid"], "abc");
    }

    #[test]
    fn events_round_trip_through_serde() {
        let ev = events(fixture!("order"));
        let s = serde_json::to_string(&ev).unwrap();
        let back: Vec<WebhookEvent> = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ev);
    }
}
