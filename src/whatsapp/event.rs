//! Typed inbound events: what the webhook decoder produces and what the inbox stores.
//!
//! These are *our* types, parsed once at the edge from Meta's JSON. They serialise to
//! JSON with our own tagging so that an inbox row can be read back exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Everything one webhook POST carried, in the order it appeared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedWebhook {
    pub events: Vec<WebhookEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A customer's message (`field == "messages"`, `value.messages[]`).
    Message(InboundMessage),
    /// A delivery status of one of our messages (`value.statuses[]`).
    Status(StatusUpdate),
    /// `value.errors[]` of a `messages` change: an app/system level problem.
    ChangeError(ChangeError),
    /// Any other `field` (account_update, phone_number_quality_update, template status, ...).
    /// Kept raw: the account/health logic reads what it knows and ignores the rest.
    AccountEvent(AccountEvent),
}

/// Meta's error object, as it appears in webhooks and Graph responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `error_data.details`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// `value.metadata.phone_number_id`: the business number (routing key part 1).
    pub phone_number_id: String,
    #[serde(default)]
    pub display_phone_number: String,
    /// `messages[].from`: the user's wa_id (phone). May be absent for username users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Business-scoped user id (`contacts[].user_id` / `messages[].from_user_id`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `contacts[].profile.name` of the matching contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// `messages[].id` (`wamid.…`).
    pub wamid: String,
    /// Unix seconds (`messages[].timestamp`, a string in Meta's JSON).
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<MessageContext>,
    /// Click-to-WhatsApp referral, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<serde_json::Value>,
    /// `messages[].errors[]` (e.g. 131051 on an unsupported type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorInfo>,
    pub content: MessageContent,
}

impl InboundMessage {
    /// The stable user key of the conversation: the wa_id when present, else the BSUID.
    pub fn user_key(&self) -> Option<&str> {
        self.from
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.user_id.as_deref().filter(|s| !s.is_empty()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageContext {
    /// The business number (reply-to) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The wamid of our message the user replied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frequently_forwarded: bool,
    /// Product inquiry: `referred_product {catalog_id, product_retailer_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referred_product: Option<ReferredProduct>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferredProduct {
    pub catalog_id: String,
    pub product_retailer_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Media id, to fetch the URL from the Graph API.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_retailer_id: String,
    pub quantity: i64,
    /// Money is Decimal, never float.
    pub item_price: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    Text {
        body: String,
    },
    /// Reply to our reply-button message.
    ButtonReply {
        id: String,
        title: String,
    },
    /// Reply to our list message.
    ListReply {
        id: String,
        title: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// WhatsApp Flow completion (`nfm_reply`); `response_json` is the raw JSON string Meta sent.
    FlowReply {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        response_json: String,
    },
    /// Quick-reply button of a template (`type: "button"`).
    TemplateButton {
        payload: String,
        text: String,
    },
    Image {
        media: Media,
    },
    Video {
        media: Media,
    },
    Audio {
        media: Media,
        /// Recorded in-app (a voice note).
        voice: bool,
    },
    Document {
        media: Media,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    Sticker {
        media: Media,
        animated: bool,
    },
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// Shared contact cards, kept as sent (every field may be missing).
    Contacts {
        contacts: serde_json::Value,
    },
    /// A reaction to one of our messages; `emoji == None` means the reaction was removed.
    Reaction {
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
    },
    Order {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        catalog_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        items: Vec<OrderItem>,
    },
    /// `system` messages, e.g. `user_changed_number` (with the new wa_id).
    System {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_wa_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
    },
    /// `unsupported`/`unknown`, or a type this version does not know (never fails the batch).
    Unsupported {
        /// The `type` string Meta sent.
        original_type: String,
    },
}

impl MessageContent {
    /// The text a flow or bot sees as "what the user said", when there is one.
    pub fn user_text(&self) -> Option<&str> {
        match self {
            MessageContent::Text { body } => Some(body),
            MessageContent::ButtonReply { id, .. } | MessageContent::ListReply { id, .. } => {
                Some(id)
            }
            MessageContent::TemplateButton { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Short type name for records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::ButtonReply { .. } => "button_reply",
            MessageContent::ListReply { .. } => "list_reply",
            MessageContent::FlowReply { .. } => "flow_reply",
            MessageContent::TemplateButton { .. } => "button",
            MessageContent::Image { .. } => "image",
            MessageContent::Video { .. } => "video",
            MessageContent::Audio { .. } => "audio",
            MessageContent::Document { .. } => "document",
            MessageContent::Sticker { .. } => "sticker",
            MessageContent::Location { .. } => "location",
            MessageContent::Contacts { .. } => "contacts",
            MessageContent::Reaction { .. } => "reaction",
            MessageContent::Order { .. } => "order",
            MessageContent::System { .. } => "system",
            MessageContent::Unsupported { .. } => "unsupported",
        }
    }
}

/// Meta's delivery status of one of our messages. Only ever moves forward:
/// sent < delivered < read; failed is terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
    /// A status string this version does not know (e.g. "played"); recorded, never ranked.
    #[serde(untagged)]
    Other(String),
}

impl DeliveryStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Other(s) => s,
        }
    }

    /// Rank for the forward-only rule; 0 for statuses that never move a message.
    pub fn rank(&self) -> i64 {
        match self {
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
            Self::Other(_) => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub phone_number_id: String,
    /// Our message's wamid.
    pub wamid: String,
    pub status: DeliveryStatus,
    /// Unix seconds.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    /// Echo of what we sent in `biz_opaque_callback_data` (our outbox id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorInfo>,
    /// `pricing` and `conversation` objects, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    pub errors: Vec<ErrorInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountEvent {
    /// `entry[].id` (the WABA id).
    pub waba_id: String,
    /// `changes[].field`, e.g. `phone_number_quality_update`.
    pub field: String,
    /// `value.metadata.phone_number_id` when the change has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    pub value: serde_json::Value,
}
