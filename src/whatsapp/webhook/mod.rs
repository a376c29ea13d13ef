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
//!
//! `mod.rs` the entry points, what was skipped (the report), error objects and the decoder's
//! state; `envelope.rs` the envelope, its entries and changes, a `messages` change's value and
//! other fields' account events; `message.rs` one message: its head, sender, context;
//! `content.rs` a message's content by its type; `status.rs` one status; `fields.rs` lenient
//! scalar fields (string or number ids, coordinates, exact money, empty strings).

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

mod content;
mod envelope;
mod fields;
mod message;
mod status;

use envelope::RawEnvelope;
use fields::StrOrNum;

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

fn error_info(e: RawError) -> ErrorInfo {
    ErrorInfo {
        code: e.code.as_ref().and_then(StrOrNum::as_i64).unwrap_or(0),
        title: e.title,
        message: e.message,
        details: e.error_data.and_then(|d| d.details),
    }
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
            include_str!(concat!("../../../tests/fixtures/webhooks/", $name, ".json"))
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
