//! One message: decoded whole, or kept as unsupported from its head; its sender matched to
//! the change's contacts; its context.

use super::content::{
    content_of, RawButton, RawInteractive, RawLocation, RawMedia, RawOrder, RawReaction, RawSystem,
    RawText,
};
use super::fields::non_empty;
use super::*;

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

impl Decoder {
    pub(super) fn message(
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
