//! A message's content by its `type`: text, replies, media, location, contacts, reaction,
//! order, system; anything else (or a type without its object) as unsupported.

use super::fields::{non_empty, parse_decimal_raw, F64OrStr};
use super::*;

#[derive(Deserialize)]
pub(super) struct RawText {
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawInteractive<'a> {
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
pub(super) struct RawButton {
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawMedia {
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
pub(super) struct RawLocation {
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
pub(super) struct RawReaction {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    emoji: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawOrder<'a> {
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
pub(super) struct RawSystem {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    wa_id: Option<StrOrNum>,
    #[serde(default)]
    new_wa_id: Option<StrOrNum>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
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
pub(super) fn content_of(
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
