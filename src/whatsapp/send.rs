//! Outbound message bodies for `POST /{version}/{phone_number_id}/messages` (cloud-api.md §3).
//!
//! [`OutboundMessage`] is *our* stored form (JSON in the outbox, tagged by `kind`);
//! [`OutboundMessage::to_request_body`] renders Meta's exact Graph body, and
//! [`OutboundMessage::validate`] checks WhatsApp's documented limits before sending.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboundMessage {
    Text {
        body: String,
        #[serde(default)]
        preview_url: bool,
    },
    /// Interactive reply buttons (1–3).
    Buttons {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
        buttons: Vec<ReplyButton>,
    },
    /// Interactive list.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
        /// Label of the button that opens the list.
        button: String,
        sections: Vec<ListSection>,
    },
    /// Interactive call-to-action URL button.
    CtaUrl {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
        display_text: String,
        url: String,
    },
    Template {
        name: String,
        /// Language code, e.g. `en_US`.
        language: String,
        /// Meta's component objects, passed through unchanged.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        components: Vec<Value>,
    },
    Media {
        media_type: MediaType,
        source: MediaSource,
        /// Not sent for audio/sticker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// Only sent for documents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    Location {
        latitude: Coordinate,
        longitude: Coordinate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// React to a user's message; `emoji == ""` removes our reaction.
    Reaction { message_id: String, emoji: String },
    /// Mark a received message (and earlier ones) read; optionally show "typing…" (≤ 25 s).
    /// Not a normal message: no `to`, no callback data; the response is `{"success":true}`.
    MarkRead {
        message_id: String,
        #[serde(default)]
        typing_indicator: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyButton {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaType {
    /// Meta's `type` string (also the key of the media object).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Document => "document",
            MediaType::Sticker => "sticker",
        }
    }

    /// Whether Meta accepts a `caption` for this media type.
    pub fn accepts_caption(self) -> bool {
        !matches!(self, MediaType::Audio | MediaType::Sticker)
    }
}

/// An uploaded media id, or a public HTTPS link. Serialises as `{"id":..}` / `{"link":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    Id(String),
    Link(String),
}

/// A latitude or longitude in decimal degrees, kept as the decimal it was written as (never
/// through float formatting) and sent as a JSON string, as Meta's API types it. Read from a
/// JSON or YAML number or from a string ("-6.2", " 106.8 "); exponents are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coordinate(Decimal);

impl Coordinate {
    pub fn value(self) -> Decimal {
        self.0
    }
}

impl FromStr for Coordinate {
    type Err = rust_decimal::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s.trim()).map(Coordinate)
    }
}

impl From<Decimal> for Coordinate {
    fn from(d: Decimal) -> Self {
        Coordinate(d)
    }
}

impl std::fmt::Display for Coordinate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Coordinate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Coordinate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a coordinate in decimal degrees, as a number or a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Coordinate, E> {
                s.parse()
                    .map_err(|_| E::custom(format_args!("{s:?} is not a decimal number")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Coordinate, E> {
                Ok(Coordinate(Decimal::from(n)))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Coordinate, E> {
                Ok(Coordinate(Decimal::from(n)))
            }
            // A number already parsed as f64 (serde_json, YAML): its shortest text that reads
            // back as the same f64 is what was written for any coordinate of ≤ 15 digits.
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Coordinate, E> {
                if !n.is_finite() {
                    return Err(E::custom("a coordinate must be finite"));
                }
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A WhatsApp limit an outbound message breaks. `field` is a path like `buttons[1].title`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendLimitError {
    #[error("{field} is {actual} characters long; WhatsApp allows at most {max}")]
    TooLong {
        field: String,
        max: usize,
        actual: usize,
    },
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} has {actual} item(s); WhatsApp allows {min} to {max}")]
    Count {
        field: String,
        min: usize,
        max: usize,
        actual: usize,
    },
    #[error("{field} {value:?} is used more than once; it must be unique")]
    Duplicate { field: String, value: String },
    #[error("{field} is required: {reason}")]
    Required { field: String, reason: &'static str },
    #[error("{field} = {value} is outside {min}..={max}")]
    OutOfRange {
        field: String,
        value: Decimal,
        min: Decimal,
        max: Decimal,
    },
}

// WhatsApp limits (cloud-api.md §3), in characters.
pub const TEXT_BODY_MAX: usize = 4096;
pub const INTERACTIVE_BODY_MAX: usize = 1024;
pub const HEADER_TEXT_MAX: usize = 60;
pub const FOOTER_TEXT_MAX: usize = 60;
pub const BUTTONS_MAX: usize = 3;
pub const BUTTON_TITLE_MAX: usize = 20;
pub const BUTTON_ID_MAX: usize = 256;
pub const LIST_BUTTON_MAX: usize = 20;
pub const LIST_SECTIONS_MAX: usize = 10;
pub const LIST_ROWS_TOTAL_MAX: usize = 10;
pub const SECTION_TITLE_MAX: usize = 24;
pub const ROW_ID_MAX: usize = 200;
pub const ROW_TITLE_MAX: usize = 24;
pub const ROW_DESCRIPTION_MAX: usize = 72;
pub const CTA_DISPLAY_TEXT_MAX: usize = 20;
pub const CAPTION_MAX: usize = 1024;

#[derive(Default)]
struct Checker {
    errors: Vec<SendLimitError>,
}

impl Checker {
    fn max_len(&mut self, field: impl Into<String>, s: &str, max: usize) {
        let actual = s.chars().count();
        if actual > max {
            self.errors.push(SendLimitError::TooLong {
                field: field.into(),
                max,
                actual,
            });
        }
    }

    /// Non-empty (after trimming) and at most `max` characters.
    fn required(&mut self, field: impl Into<String>, s: &str, max: Option<usize>) {
        let field = field.into();
        if s.trim().is_empty() {
            self.errors.push(SendLimitError::Empty { field });
        } else if let Some(max) = max {
            self.max_len(field, s, max);
        }
    }

    fn opt(&mut self, field: &str, s: &Option<String>, max: usize) {
        if let Some(s) = s {
            self.max_len(field, s, max);
        }
    }

    fn count(&mut self, field: &str, actual: usize, min: usize, max: usize) {
        if actual < min || actual > max {
            self.errors.push(SendLimitError::Count {
                field: field.into(),
                min,
                max,
                actual,
            });
        }
    }

    fn range(&mut self, field: &str, value: Decimal, min: i64, max: i64) {
        let (min, max) = (Decimal::from(min), Decimal::from(max));
        if !(min..=max).contains(&value) {
            self.errors.push(SendLimitError::OutOfRange {
                field: field.into(),
                value,
                min,
                max,
            });
        }
    }

    fn interactive_common(&mut self, header: &Option<String>, body: &str, footer: &Option<String>) {
        self.opt("header", header, HEADER_TEXT_MAX);
        self.required("body", body, Some(INTERACTIVE_BODY_MAX));
        self.opt("footer", footer, FOOTER_TEXT_MAX);
    }
}

fn text_obj(s: &str) -> Value {
    json!({ "text": s })
}

fn header_obj(s: &str) -> Value {
    json!({ "type": "text", "text": s })
}

impl OutboundMessage {
    /// Meta's message `type` for this message (`"mark_read"` for [`OutboundMessage::MarkRead`]).
    pub fn kind_name(&self) -> &'static str {
        match self {
            OutboundMessage::Text { .. } => "text",
            OutboundMessage::Buttons { .. }
            | OutboundMessage::List { .. }
            | OutboundMessage::CtaUrl { .. } => "interactive",
            OutboundMessage::Template { .. } => "template",
            OutboundMessage::Media { media_type, .. } => media_type.as_str(),
            OutboundMessage::Location { .. } => "location",
            OutboundMessage::Reaction { .. } => "reaction",
            OutboundMessage::MarkRead { .. } => "mark_read",
        }
    }

    /// True for mark-read / typing (answered with `{"success":true}`, no wamid).
    pub fn is_mark_read(&self) -> bool {
        matches!(self, OutboundMessage::MarkRead { .. })
    }

    /// A message that may only be sent inside the 24 h customer-service window (everything
    /// but a template; a read receipt is not a message).
    pub fn is_free_form(&self) -> bool {
        !matches!(
            self,
            OutboundMessage::Template { .. } | OutboundMessage::MarkRead { .. }
        )
    }

    /// The exact JSON body for `POST /{version}/{phone_number_id}/messages`.
    ///
    /// `to` is the user's wa_id / E.164 number; `reply_to` adds `context.message_id`;
    /// `callback_data` becomes `biz_opaque_callback_data` (echoed in status webhooks).
    /// For `MarkRead` the three arguments are ignored.
    pub fn to_request_body(
        &self,
        to: &str,
        reply_to: Option<&str>,
        callback_data: Option<&str>,
    ) -> Value {
        if let OutboundMessage::MarkRead {
            message_id,
            typing_indicator,
        } = self
        {
            let mut body = json!({
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": message_id,
            });
            if *typing_indicator {
                body["typing_indicator"] = json!({ "type": "text" });
            }
            return body;
        }

        let type_name = self.kind_name();
        let payload = self.type_payload();
        let mut body = Map::with_capacity(7);
        body.insert("messaging_product".into(), "whatsapp".into());
        body.insert("recipient_type".into(), "individual".into());
        body.insert("to".into(), to.into());
        body.insert("type".into(), type_name.into());
        body.insert(type_name.into(), payload);
        if let Some(id) = reply_to {
            body.insert("context".into(), json!({ "message_id": id }));
        }
        if let Some(data) = callback_data {
            body.insert("biz_opaque_callback_data".into(), data.into());
        }
        Value::Object(body)
    }

    /// The object under the `<type>` key.
    fn type_payload(&self) -> Value {
        match self {
            OutboundMessage::Text { body, preview_url } => {
                let mut t = json!({ "body": body });
                if *preview_url {
                    t["preview_url"] = true.into();
                }
                t
            }
            OutboundMessage::Buttons {
                header,
                body,
                footer,
                buttons,
            } => {
                let buttons: Vec<Value> = buttons
                    .iter()
                    .map(|b| json!({ "type": "reply", "reply": { "id": b.id, "title": b.title } }))
                    .collect();
                interactive(
                    "button",
                    header,
                    body,
                    footer,
                    json!({ "buttons": buttons }),
                )
            }
            OutboundMessage::List {
                header,
                body,
                footer,
                button,
                sections,
            } => {
                let sections: Vec<Value> = sections
                    .iter()
                    .map(|s| {
                        let rows: Vec<Value> = s
                            .rows
                            .iter()
                            .map(|r| {
                                let mut row = json!({ "id": r.id, "title": r.title });
                                if let Some(d) = &r.description {
                                    row["description"] = d.as_str().into();
                                }
                                row
                            })
                            .collect();
                        let mut sec = Map::new();
                        if let Some(t) = &s.title {
                            sec.insert("title".into(), t.as_str().into());
                        }
                        sec.insert("rows".into(), rows.into());
                        Value::Object(sec)
                    })
                    .collect();
                interactive(
                    "list",
                    header,
                    body,
                    footer,
                    json!({ "button": button, "sections": sections }),
                )
            }
            OutboundMessage::CtaUrl {
                header,
                body,
                footer,
                display_text,
                url,
            } => interactive(
                "cta_url",
                header,
                body,
                footer,
                json!({
                    "name": "cta_url",
                    "parameters": { "display_text": display_text, "url": url },
                }),
            ),
            OutboundMessage::Template {
                name,
                language,
                components,
            } => {
                let mut t = json!({ "name": name, "language": { "code": language } });
                if !components.is_empty() {
                    t["components"] = components.clone().into();
                }
                t
            }
            OutboundMessage::Media {
                media_type,
                source,
                caption,
                filename,
            } => {
                let mut m = match source {
                    MediaSource::Id(id) => json!({ "id": id }),
                    MediaSource::Link(link) => json!({ "link": link }),
                };
                if let Some(c) = caption.as_deref().filter(|_| media_type.accepts_caption()) {
                    m["caption"] = c.into();
                }
                if let Some(f) = filename
                    .as_deref()
                    .filter(|_| *media_type == MediaType::Document)
                {
                    m["filename"] = f.into();
                }
                m
            }
            OutboundMessage::Location {
                latitude,
                longitude,
                name,
                address,
            } => {
                // Strings, as Meta types them (the serialisation of `Coordinate`).
                let mut l = json!({ "latitude": latitude, "longitude": longitude });
                if let Some(n) = name {
                    l["name"] = n.as_str().into();
                }
                if let Some(a) = address {
                    l["address"] = a.as_str().into();
                }
                l
            }
            OutboundMessage::Reaction { message_id, emoji } => {
                json!({ "message_id": message_id, "emoji": emoji })
            }
            OutboundMessage::MarkRead { .. } => Value::Null, // handled in to_request_body
        }
    }

    /// Check WhatsApp's limits (characters, not bytes). Returns every violation found.
    pub fn validate(&self) -> Result<(), Vec<SendLimitError>> {
        let mut c = Checker::default();
        match self {
            OutboundMessage::Text { body, .. } => {
                c.required("text.body", body, Some(TEXT_BODY_MAX))
            }
            OutboundMessage::Buttons {
                header,
                body,
                footer,
                buttons,
            } => {
                c.interactive_common(header, body, footer);
                c.count("buttons", buttons.len(), 1, BUTTONS_MAX);
                for (i, b) in buttons.iter().enumerate() {
                    c.required(format!("buttons[{i}].id"), &b.id, Some(BUTTON_ID_MAX));
                    c.required(
                        format!("buttons[{i}].title"),
                        &b.title,
                        Some(BUTTON_TITLE_MAX),
                    );
                    // WhatsApp refuses a message whose buttons share an id.
                    if buttons[..i].iter().any(|o| o.id == b.id) {
                        c.errors.push(SendLimitError::Duplicate {
                            field: format!("buttons[{i}].id"),
                            value: b.id.clone(),
                        });
                    }
                    if buttons[..i].iter().any(|o| o.title == b.title) {
                        c.errors.push(SendLimitError::Duplicate {
                            field: format!("buttons[{i}].title"),
                            value: b.title.clone(),
                        });
                    }
                }
            }
            OutboundMessage::List {
                header,
                body,
                footer,
                button,
                sections,
            } => {
                c.interactive_common(header, body, footer);
                c.required("button", button, Some(LIST_BUTTON_MAX));
                c.count("sections", sections.len(), 1, LIST_SECTIONS_MAX);
                let total_rows: usize = sections.iter().map(|s| s.rows.len()).sum();
                c.count("rows (all sections)", total_rows, 1, LIST_ROWS_TOTAL_MAX);
                for (si, s) in sections.iter().enumerate() {
                    match &s.title {
                        Some(t) => {
                            c.required(format!("sections[{si}].title"), t, Some(SECTION_TITLE_MAX))
                        }
                        None if sections.len() > 1 => c.errors.push(SendLimitError::Required {
                            field: format!("sections[{si}].title"),
                            reason: "a list with more than one section needs section titles",
                        }),
                        None => {}
                    }
                    for (ri, r) in s.rows.iter().enumerate() {
                        let p = format!("sections[{si}].rows[{ri}]");
                        c.required(format!("{p}.id"), &r.id, Some(ROW_ID_MAX));
                        // Row ids are unique across the whole list, or WhatsApp refuses it.
                        let earlier = sections[..si]
                            .iter()
                            .flat_map(|s| &s.rows)
                            .chain(&s.rows[..ri]);
                        if earlier.into_iter().any(|o| o.id == r.id) {
                            c.errors.push(SendLimitError::Duplicate {
                                field: format!("{p}.id"),
                                value: r.id.clone(),
                            });
                        }
                        c.required(format!("{p}.title"), &r.title, Some(ROW_TITLE_MAX));
                        if let Some(d) = &r.description {
                            c.max_len(format!("{p}.description"), d, ROW_DESCRIPTION_MAX);
                        }
                    }
                }
            }
            OutboundMessage::CtaUrl {
                header,
                body,
                footer,
                display_text,
                url,
            } => {
                c.interactive_common(header, body, footer);
                c.required("display_text", display_text, Some(CTA_DISPLAY_TEXT_MAX));
                c.required("url", url, None);
            }
            OutboundMessage::Template { name, language, .. } => {
                c.required("template.name", name, None);
                c.required("template.language", language, None);
            }
            OutboundMessage::Media {
                source, caption, ..
            } => {
                match source {
                    MediaSource::Id(s) => c.required("media.id", s, None),
                    MediaSource::Link(s) => c.required("media.link", s, None),
                }
                c.opt("caption", caption, CAPTION_MAX);
            }
            OutboundMessage::Location {
                latitude,
                longitude,
                ..
            } => {
                c.range("latitude", latitude.value(), -90, 90);
                c.range("longitude", longitude.value(), -180, 180);
            }
            OutboundMessage::Reaction { message_id, .. } => {
                c.required("reaction.message_id", message_id, None)
            }
            OutboundMessage::MarkRead { message_id, .. } => {
                c.required("message_id", message_id, None)
            }
        }
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(c.errors)
        }
    }
}

fn interactive(
    kind: &str,
    header: &Option<String>,
    body: &str,
    footer: &Option<String>,
    action: Value,
) -> Value {
    let mut i = Map::with_capacity(5);
    i.insert("type".into(), kind.into());
    if let Some(h) = header {
        i.insert("header".into(), header_obj(h));
    }
    i.insert("body".into(), text_obj(body));
    if let Some(f) = footer {
        i.insert("footer".into(), text_obj(f));
    }
    i.insert("action".into(), action);
    Value::Object(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: &str = "16315551181";
    const WAMID: &str = "wamid.HBgLMTYzMTU1NTExODEVAgASGBQzQUFFMjM0";

    fn round_trip(m: &OutboundMessage) {
        let s = serde_json::to_string(m).unwrap();
        let back: OutboundMessage = serde_json::from_str(&s).unwrap();
        assert_eq!(&back, m, "{s}");
    }

    fn buttons(titles: &[&str]) -> OutboundMessage {
        OutboundMessage::Buttons {
            header: None,
            body: "Pick one".into(),
            footer: None,
            buttons: titles
                .iter()
                .enumerate()
                .map(|(i, t)| ReplyButton {
                    id: format!("b{i}"),
                    title: t.to_string(),
                })
                .collect(),
        }
    }

    fn row(id: &str, title: &str) -> ListRow {
        ListRow {
            id: id.into(),
            title: title.into(),
            description: None,
        }
    }

    #[test]
    fn text_body() {
        let m = OutboundMessage::Text {
            body: "Hello".into(),
            preview_url: false,
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"text","text":{"body":"Hello"}})
        );
        let m = OutboundMessage::Text {
            body: "see https://example.com".into(),
            preview_url: true,
        };
        assert_eq!(
            m.to_request_body(TO, Some(WAMID), Some("outbox:42")),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"text",
                   "text":{"body":"see https://example.com","preview_url":true},
                   "context":{"message_id":WAMID},"biz_opaque_callback_data":"outbox:42"})
        );
        round_trip(&m);
        assert_eq!(m.kind_name(), "text");
        assert!(m.validate().is_ok());
        // Stored form, and preview_url defaulting when absent.
        assert_eq!(
            serde_json::from_value::<OutboundMessage>(json!({"kind":"text","body":"x"})).unwrap(),
            OutboundMessage::Text {
                body: "x".into(),
                preview_url: false
            }
        );
    }

    #[test]
    fn buttons_body() {
        let m = OutboundMessage::Buttons {
            header: Some("Order #1234".into()),
            body: "Confirm your order?".into(),
            footer: Some("Lucky Shrub".into()),
            buttons: vec![
                ReplyButton {
                    id: "yes".into(),
                    title: "Yes".into(),
                },
                ReplyButton {
                    id: "no".into(),
                    title: "No".into(),
                },
            ],
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"interactive",
                "interactive":{"type":"button",
                    "header":{"type":"text","text":"Order #1234"},
                    "body":{"text":"Confirm your order?"},
                    "footer":{"text":"Lucky Shrub"},
                    "action":{"buttons":[
                        {"type":"reply","reply":{"id":"yes","title":"Yes"}},
                        {"type":"reply","reply":{"id":"no","title":"No"}}]}}})
        );
        round_trip(&m);
        let bare = buttons(&["A"]);
        assert_eq!(
            bare.to_request_body(TO, None, None)["interactive"],
            json!({"type":"button","body":{"text":"Pick one"},"action":{"buttons":[{"type":"reply","reply":{"id":"b0","title":"A"}}]}})
        );
        round_trip(&bare);
        assert_eq!(m.kind_name(), "interactive");
        assert!(m.validate().is_ok());
    }

    #[test]
    fn list_body() {
        let m = OutboundMessage::List {
            header: None,
            body: "Choose shipping".into(),
            footer: None,
            button: "Options".into(),
            sections: vec![ListSection {
                title: None,
                rows: vec![
                    ListRow {
                        id: "express".into(),
                        title: "Express".into(),
                        description: Some("Next day".into()),
                    },
                    row("normal", "Normal"),
                ],
            }],
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"interactive",
                "interactive":{"type":"list","body":{"text":"Choose shipping"},
                    "action":{"button":"Options","sections":[{"rows":[
                        {"id":"express","title":"Express","description":"Next day"},
                        {"id":"normal","title":"Normal"}]}]}}})
        );
        round_trip(&m);
        assert!(m.validate().is_ok());
        let titled = OutboundMessage::List {
            header: Some("H".into()),
            body: "B".into(),
            footer: Some("F".into()),
            button: "Go".into(),
            sections: vec![
                ListSection {
                    title: Some("S1".into()),
                    rows: vec![row("a", "A")],
                },
                ListSection {
                    title: Some("S2".into()),
                    rows: vec![row("b", "B")],
                },
            ],
        };
        assert_eq!(
            titled.to_request_body(TO, None, None)["interactive"],
            json!({"type":"list","header":{"type":"text","text":"H"},"body":{"text":"B"},"footer":{"text":"F"},
                "action":{"button":"Go","sections":[{"title":"S1","rows":[{"id":"a","title":"A"}]},
                                                     {"title":"S2","rows":[{"id":"b","title":"B"}]}]}})
        );
        round_trip(&titled);
        assert!(titled.validate().is_ok());
    }

    #[test]
    fn cta_url_body() {
        let m = OutboundMessage::CtaUrl {
            header: None,
            body: "Track your parcel".into(),
            footer: Some("Lucky Shrub".into()),
            display_text: "Track".into(),
            url: "https://example.com/t/123".into(),
        };
        assert_eq!(
            m.to_request_body(TO, None, Some("cb")),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"interactive",
                "interactive":{"type":"cta_url","body":{"text":"Track your parcel"},"footer":{"text":"Lucky Shrub"},
                    "action":{"name":"cta_url","parameters":{"display_text":"Track","url":"https://example.com/t/123"}}},
                "biz_opaque_callback_data":"cb"})
        );
        round_trip(&m);
        assert!(m.validate().is_ok());
    }

    #[test]
    fn template_body() {
        let m = OutboundMessage::Template {
            name: "order_update".into(),
            language: "en_US".into(),
            components: vec![json!({"type":"body","parameters":[{"type":"text","text":"1234"}]})],
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"template",
                "template":{"name":"order_update","language":{"code":"en_US"},
                    "components":[{"type":"body","parameters":[{"type":"text","text":"1234"}]}]}})
        );
        round_trip(&m);
        let bare = OutboundMessage::Template {
            name: "hello_world".into(),
            language: "en_US".into(),
            components: vec![],
        };
        assert_eq!(
            bare.to_request_body(TO, None, None)["template"],
            json!({"name":"hello_world","language":{"code":"en_US"}})
        );
        round_trip(&bare);
        assert_eq!(bare.kind_name(), "template");
    }

    #[test]
    fn media_bodies() {
        let img = OutboundMessage::Media {
            media_type: MediaType::Image,
            source: MediaSource::Id("1003383421387256".into()),
            caption: Some("Your receipt".into()),
            filename: Some("ignored.jpg".into()),
        };
        assert_eq!(
            img.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"image",
                   "image":{"id":"1003383421387256","caption":"Your receipt"}})
        );
        let doc = OutboundMessage::Media {
            media_type: MediaType::Document,
            source: MediaSource::Link("https://example.com/i.pdf".into()),
            caption: Some("Invoice".into()),
            filename: Some("invoice.pdf".into()),
        };
        assert_eq!(
            doc.to_request_body(TO, None, None)["document"],
            json!({"link":"https://example.com/i.pdf","caption":"Invoice","filename":"invoice.pdf"})
        );
        let audio = OutboundMessage::Media {
            media_type: MediaType::Audio,
            source: MediaSource::Id("55".into()),
            caption: Some("dropped".into()),
            filename: None,
        };
        assert_eq!(
            audio.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"audio","audio":{"id":"55"}})
        );
        let sticker = OutboundMessage::Media {
            media_type: MediaType::Sticker,
            source: MediaSource::Link("https://example.com/s.webp".into()),
            caption: None,
            filename: None,
        };
        assert_eq!(
            sticker.to_request_body(TO, None, None)["sticker"],
            json!({"link":"https://example.com/s.webp"})
        );
        for (m, k) in [
            (&img, "image"),
            (&doc, "document"),
            (&audio, "audio"),
            (&sticker, "sticker"),
        ] {
            round_trip(m);
            assert_eq!(m.kind_name(), k);
            assert!(m.validate().is_ok());
        }
        let video = OutboundMessage::Media {
            media_type: MediaType::Video,
            source: MediaSource::Id("9".into()),
            caption: None,
            filename: None,
        };
        assert_eq!(video.kind_name(), "video");
        assert_eq!(
            serde_json::to_value(&video).unwrap(),
            json!({"kind":"media","media_type":"video","source":{"id":"9"}})
        );
        round_trip(&video);
    }

    fn coord(s: &str) -> Coordinate {
        s.parse().unwrap()
    }

    #[test]
    fn location_body() {
        let m = OutboundMessage::Location {
            latitude: coord("37.483307"),
            longitude: coord("-122.148981"),
            name: Some("Meta HQ".into()),
            address: Some("1 Hacker Way".into()),
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"location",
                "location":{"latitude":"37.483307","longitude":"-122.148981","name":"Meta HQ","address":"1 Hacker Way"}})
        );
        round_trip(&m);
        let bare = OutboundMessage::Location {
            latitude: coord("1"),
            longitude: coord("2.0"),
            name: None,
            address: None,
        };
        assert_eq!(
            bare.to_request_body(TO, None, None)["location"],
            json!({"latitude":"1","longitude":"2.0"})
        );
        round_trip(&bare);
        assert!(m.validate().is_ok());
    }

    #[test]
    fn coordinates_are_sent_as_the_decimal_text_they_were_written_as() {
        // As a flow writes them (YAML numbers reach us as f64) and as stored before they
        // were strings: numbers; as a template renders them: strings.
        let m: OutboundMessage = serde_json::from_value(json!({
            "kind": "location", "latitude": -6.2, "longitude": 106.8
        }))
        .unwrap();
        assert_eq!(
            m.to_request_body(TO, None, None)["location"],
            json!({"latitude":"-6.2","longitude":"106.8"})
        );
        let from_yaml: Value =
            serde_norway::from_str("{kind: location, latitude: 0.1, longitude: -0.000001}")
                .unwrap();
        let m: OutboundMessage = serde_json::from_value(from_yaml).unwrap();
        assert_eq!(
            m.to_request_body(TO, None, None)["location"],
            json!({"latitude":"0.1","longitude":"-0.000001"})
        );
        let m: OutboundMessage = serde_json::from_value(json!({
            "kind": "location", "latitude": " -6.20000000000000018", "longitude": 106
        }))
        .unwrap();
        assert_eq!(
            m.to_request_body(TO, None, None)["location"],
            json!({"latitude":"-6.20000000000000018","longitude":"106"})
        );
        // The stored form keeps the text too.
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"kind":"location","latitude":"-6.20000000000000018","longitude":"106"})
        );
        for bad in [
            json!("north"),
            json!("1e5"),
            json!(""),
            json!(true),
            json!(null),
        ] {
            let r = serde_json::from_value::<OutboundMessage>(
                json!({"kind": "location", "latitude": bad, "longitude": 1}),
            );
            assert!(r.is_err(), "{bad} taken as a coordinate");
        }
    }

    #[test]
    fn reaction_body() {
        let m = OutboundMessage::Reaction {
            message_id: WAMID.into(),
            emoji: "\u{1F44D}".into(),
        };
        assert_eq!(
            m.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":TO,"type":"reaction",
                "reaction":{"message_id":WAMID,"emoji":"\u{1F44D}"}})
        );
        round_trip(&m);
        let remove = OutboundMessage::Reaction {
            message_id: WAMID.into(),
            emoji: String::new(),
        };
        assert!(remove.validate().is_ok());
        assert_eq!(
            remove.to_request_body(TO, None, None)["reaction"]["emoji"],
            ""
        );
    }

    #[test]
    fn mark_read_body() {
        let m = OutboundMessage::MarkRead {
            message_id: WAMID.into(),
            typing_indicator: false,
        };
        assert_eq!(
            m.to_request_body(TO, Some("x"), Some("cb")),
            json!({"messaging_product":"whatsapp","status":"read","message_id":WAMID})
        );
        let typing = OutboundMessage::MarkRead {
            message_id: WAMID.into(),
            typing_indicator: true,
        };
        assert_eq!(
            typing.to_request_body(TO, None, None),
            json!({"messaging_product":"whatsapp","status":"read","message_id":WAMID,"typing_indicator":{"type":"text"}})
        );
        round_trip(&m);
        round_trip(&typing);
        assert_eq!(m.kind_name(), "mark_read");
        assert!(m.is_mark_read());
        assert_eq!(
            serde_json::to_value(&typing).unwrap(),
            json!({"kind":"mark_read","message_id":WAMID,"typing_indicator":true})
        );
    }

    #[test]
    fn text_limit_counts_chars_not_bytes() {
        let ok = OutboundMessage::Text {
            body: "é".repeat(4096),
            preview_url: false,
        };
        assert!(ok.validate().is_ok());
        let long = OutboundMessage::Text {
            body: "a".repeat(4097),
            preview_url: false,
        };
        let errs = long.validate().unwrap_err();
        assert_eq!(
            errs,
            vec![SendLimitError::TooLong {
                field: "text.body".into(),
                max: 4096,
                actual: 4097
            }]
        );
        assert_eq!(
            errs[0].to_string(),
            "text.body is 4097 characters long; WhatsApp allows at most 4096"
        );
        let empty = OutboundMessage::Text {
            body: " ".into(),
            preview_url: false,
        };
        assert!(matches!(
            &empty.validate().unwrap_err()[0],
            SendLimitError::Empty { .. }
        ));
    }

    #[test]
    fn button_limits() {
        assert!(matches!(
            &buttons(&[]).validate().unwrap_err()[..],
            [SendLimitError::Count { actual: 0, .. }]
        ));
        assert!(matches!(
            &buttons(&["a", "b", "c", "d"]).validate().unwrap_err()[..],
            [SendLimitError::Count {
                actual: 4,
                max: 3,
                ..
            }]
        ));
        let long = "x".repeat(21);
        let errs = buttons(&["ok", &long]).validate().unwrap_err();
        assert_eq!(
            errs,
            vec![SendLimitError::TooLong {
                field: "buttons[1].title".into(),
                max: 20,
                actual: 21
            }]
        );
        assert!(buttons(&["ñ".repeat(20).as_str()]).validate().is_ok());
        let errs = buttons(&["Yes", "No", "Yes"]).validate().unwrap_err();
        assert_eq!(
            errs,
            vec![SendLimitError::Duplicate {
                field: "buttons[2].title".into(),
                value: "Yes".into()
            }]
        );
        let OutboundMessage::Buttons {
            header,
            body,
            footer,
            mut buttons,
        } = buttons(&["Yes", "No"])
        else {
            unreachable!()
        };
        buttons[1].id = "b0".into();
        let same_ids = OutboundMessage::Buttons {
            header,
            body,
            footer,
            buttons,
        };
        assert_eq!(
            same_ids.validate().unwrap_err(),
            vec![SendLimitError::Duplicate {
                field: "buttons[1].id".into(),
                value: "b0".into()
            }]
        );
        let row = |id: &str, title: &str| ListRow {
            id: id.into(),
            title: title.into(),
            description: None,
        };
        let list = OutboundMessage::List {
            header: None,
            body: "Pick".into(),
            footer: None,
            button: "Choose".into(),
            sections: vec![
                ListSection {
                    title: Some("A".into()),
                    rows: vec![row("x", "X"), row("y", "Y")],
                },
                ListSection {
                    title: Some("B".into()),
                    rows: vec![row("z", "Z"), row("x", "X again")],
                },
            ],
        };
        assert_eq!(
            list.validate().unwrap_err(),
            vec![SendLimitError::Duplicate {
                field: "sections[1].rows[1].id".into(),
                value: "x".into()
            }]
        );
        let m = OutboundMessage::Buttons {
            header: Some("h".repeat(61)),
            body: "b".repeat(1025),
            footer: Some("f".repeat(61)),
            buttons: vec![ReplyButton {
                id: "i".repeat(257),
                title: "t".into(),
            }],
        };
        let fields: Vec<String> = m
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| match e {
                SendLimitError::TooLong { field, .. } => field,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(fields, ["header", "body", "footer", "buttons[0].id"]);
    }

    #[test]
    fn list_limits() {
        let eleven: Vec<ListRow> = (0..11).map(|i| row(&format!("r{i}"), "Row")).collect();
        let m = OutboundMessage::List {
            header: None,
            body: "b".into(),
            footer: None,
            button: "b".repeat(21),
            sections: vec![
                ListSection {
                    title: None,
                    rows: eleven[..6].to_vec(),
                },
                ListSection {
                    title: Some("t".repeat(25)),
                    rows: eleven[6..].to_vec(),
                },
            ],
        };
        let errs = m.validate().unwrap_err();
        assert!(errs.contains(&SendLimitError::TooLong {
            field: "button".into(),
            max: 20,
            actual: 21
        }));
        assert!(errs.contains(&SendLimitError::Count {
            field: "rows (all sections)".into(),
            min: 1,
            max: 10,
            actual: 11
        }));
        assert!(errs.iter().any(|e| matches!(e,
            SendLimitError::Required { field, .. } if field == "sections[0].title")));
        assert!(errs.contains(&SendLimitError::TooLong {
            field: "sections[1].title".into(),
            max: 24,
            actual: 25
        }));
        assert_eq!(errs.len(), 4, "{errs:?}");

        let m = OutboundMessage::List {
            header: None,
            body: "b".into(),
            footer: None,
            button: "Go".into(),
            sections: vec![ListSection {
                title: None,
                rows: vec![ListRow {
                    id: "i".repeat(201),
                    title: "t".repeat(25),
                    description: Some("d".repeat(73)),
                }],
            }],
        };
        let errs = m.validate().unwrap_err();
        assert_eq!(
            errs,
            vec![
                SendLimitError::TooLong {
                    field: "sections[0].rows[0].id".into(),
                    max: 200,
                    actual: 201
                },
                SendLimitError::TooLong {
                    field: "sections[0].rows[0].title".into(),
                    max: 24,
                    actual: 25
                },
                SendLimitError::TooLong {
                    field: "sections[0].rows[0].description".into(),
                    max: 72,
                    actual: 73
                },
            ]
        );
        let many_sections = OutboundMessage::List {
            header: None,
            body: "b".into(),
            footer: None,
            button: "Go".into(),
            sections: (0..11)
                .map(|i| ListSection {
                    title: Some(format!("S{i}")),
                    rows: vec![],
                })
                .collect(),
        };
        let errs = many_sections.validate().unwrap_err();
        assert!(errs.iter().any(|e| matches!(e,
            SendLimitError::Count { field, actual: 11, .. } if field == "sections")));
    }

    #[test]
    fn cta_caption_location_limits() {
        let m = OutboundMessage::CtaUrl {
            header: None,
            body: "b".into(),
            footer: None,
            display_text: "d".repeat(21),
            url: String::new(),
        };
        let errs = m.validate().unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "display_text is 21 characters long; WhatsApp allows at most 20"
        );
        assert_eq!(errs[1].to_string(), "url must not be empty");

        let m = OutboundMessage::Media {
            media_type: MediaType::Video,
            source: MediaSource::Id("1".into()),
            caption: Some("c".repeat(1025)),
            filename: None,
        };
        assert_eq!(
            m.validate().unwrap_err(),
            vec![SendLimitError::TooLong {
                field: "caption".into(),
                max: 1024,
                actual: 1025
            }]
        );
        let m = OutboundMessage::Location {
            latitude: coord("90.000000000000000001"),
            longitude: coord("-180"),
            name: None,
            address: None,
        };
        let errs = m.validate().unwrap_err();
        assert!(matches!(&errs[..], [SendLimitError::OutOfRange { .. }]));
        assert_eq!(
            errs[0].to_string(),
            "latitude = 90.000000000000000001 is outside -90..=90"
        );
    }
}
