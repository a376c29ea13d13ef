//! The event catalog, version 1: every event type the business's systems can subscribe to.
//! Names are stable (README, "Webhook events"); a new field in `data` is not a new version, a
//! renamed or removed one is.

use std::fmt;
use std::str::FromStr;

/// The catalog's version, sent nowhere on the wire but documented with it.
pub const CATALOG_VERSION: u32 = 1;

/// An event type of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// A customer's message was received (once per message, however often Meta redelivers).
    MessageReceived,
    /// One of our messages moved: sent, delivered, read, or failed (with its error code).
    MessageStatus,
    /// A human took the conversation (an admin's handoff, a flow's or bot's).
    ConversationHandoff,
    /// The human gave the conversation back to the bot (or the handoff timed out).
    ConversationReleased,
    /// An order was placed (chat checkout, catalog order).
    OrderCreated,
    /// The owner moved an order (processing, completed, cancelled).
    OrderStatus,
    /// A material fell below its `min_stock` (once per crossing).
    StockLow,
    /// A flow session ended at its last node.
    FlowCompleted,
    /// A flow session stopped on an error (also kept as a dead letter).
    FlowFailed,
    /// A flow session was left before its end (another flow started, or the customer came
    /// back only after its `session_timeout`).
    FlowAbandoned,
    /// A payment was paid in time.
    PaymentPaid,
    /// A payment's time ran out unpaid.
    PaymentExpired,
    /// A payment was paid after it had expired.
    PaymentPaidLate,
    /// A chatbot handed the conversation to a human (with `conversation.handoff`).
    BotHandoff,
    /// A running campaign's counts, every `webhooks.campaign_progress_every`.
    CampaignProgress,
    /// A campaign ended: completed, cancelled or failed.
    CampaignFinished,
    /// A campaign paused (itself, on a quality drop or a failure rate, or by an admin).
    CampaignPaused,
    /// An account's health moved (quality, account decisions, halts, pauses, resumes).
    AccountHealth,
    /// Business-initiated sending halted, or all sending paused, until resumed.
    AccountHalted,
    /// An endpoint was disabled (410 Gone, or failing for `webhooks.disable_after`).
    EndpointDisabled,
    /// A test event an admin asked for (`POST /admin/v1/webhooks/{id}/test`).
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 21] = [
        EventType::MessageReceived,
        EventType::MessageStatus,
        EventType::ConversationHandoff,
        EventType::ConversationReleased,
        EventType::OrderCreated,
        EventType::OrderStatus,
        EventType::StockLow,
        EventType::FlowCompleted,
        EventType::FlowFailed,
        EventType::FlowAbandoned,
        EventType::PaymentPaid,
        EventType::PaymentExpired,
        EventType::PaymentPaidLate,
        EventType::BotHandoff,
        EventType::CampaignProgress,
        EventType::CampaignFinished,
        EventType::CampaignPaused,
        EventType::AccountHealth,
        EventType::AccountHalted,
        EventType::EndpointDisabled,
        EventType::WebhookTest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::MessageStatus => "message.status",
            EventType::ConversationHandoff => "conversation.handoff",
            EventType::ConversationReleased => "conversation.released",
            EventType::OrderCreated => "order.created",
            EventType::OrderStatus => "order.status",
            EventType::StockLow => "stock.low",
            EventType::FlowCompleted => "flow.completed",
            EventType::FlowFailed => "flow.failed",
            EventType::FlowAbandoned => "flow.abandoned",
            EventType::PaymentPaid => "payment.paid",
            EventType::PaymentExpired => "payment.expired",
            EventType::PaymentPaidLate => "payment.paid_late",
            EventType::BotHandoff => "bot.handoff",
            EventType::CampaignProgress => "campaign.progress",
            EventType::CampaignFinished => "campaign.finished",
            EventType::CampaignPaused => "campaign.paused",
            EventType::AccountHealth => "account.health",
            EventType::AccountHalted => "account.halted",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::WebhookTest => "webhook.test",
        }
    }

    /// Sent whatever the endpoint's filter says (a test event goes to one endpoint only).
    pub const fn always(self) -> bool {
        matches!(self, EventType::WebhookTest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEvent(pub String);

impl FromStr for EventType {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<EventType, UnknownEvent> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_string()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which events an endpoint wants: all (empty list) or those named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter(pub Vec<EventType>);

impl EventFilter {
    pub fn wants(&self, e: EventType) -> bool {
        e.always() || self.0.is_empty() || self.0.contains(&e)
    }

    /// As stored: the names, comma-separated (empty: every event).
    pub fn stored(&self) -> String {
        self.0
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn parse_stored(s: &str) -> Result<EventFilter, UnknownEvent> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(EventFilter)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its next attempt (`next_at`).
    Pending,
    /// A 2xx came back.
    Succeeded,
    /// A final refusal (a 4xx other than 408/409/425/429, a 410, a refused URL): no retry.
    Failed,
    /// Every attempt of the schedule failed.
    Exhausted,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Exhausted => "exhausted",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<DeliveryState, UnknownEvent> {
        Ok(match s {
            "pending" => DeliveryState::Pending,
            "succeeded" => DeliveryState::Succeeded,
            "failed" => DeliveryState::Failed,
            "exhausted" => DeliveryState::Exhausted,
            _ => return Err(UnknownEvent(s.to_string())),
        })
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_reads_back_from_its_name() {
        for e in EventType::ALL {
            assert_eq!(e.as_str().parse::<EventType>().unwrap(), e);
        }
        assert!("message.nope".parse::<EventType>().is_err());
    }

    #[test]
    fn a_filter_wants_what_it_names_or_everything_when_empty() {
        let f = EventFilter::parse_stored("message.received, payment.paid").unwrap();
        assert!(f.wants(EventType::PaymentPaid));
        assert!(!f.wants(EventType::MessageStatus));
        assert!(f.wants(EventType::WebhookTest), "always");
        assert!(!f.wants(EventType::EndpointDisabled));
        assert!(EventFilter::default().wants(EventType::OrderCreated));
        assert_eq!(
            EventFilter::parse_stored(&f.stored()).unwrap(),
            f,
            "stored form reads back"
        );
        assert!(EventFilter::parse_stored("nope").is_err());
    }
}
