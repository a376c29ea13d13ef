//! The document's shared shapes: the problem (what [`crate::ingress::problem`] emits) and
//! the webhook event catalog ([`EventType`], bodies of [`crate::hooks::body`]) as the
//! OpenAPI 3.1 top-level `webhooks`: one entry per event type, each a POST to the business's
//! endpoint with the Standard Webhooks headers.

use serde_json::{json, Value};

use super::shape::shape;
use crate::hooks::{EventType, CATALOG_VERSION};

/// An RFC 9457 problem, with the admin API's extension members.
pub(super) const PROBLEM: &str = "{type: str, title: str, status: int, detail: str, \
     error: str, errors?: [any], required_role?: str, details?: any}";

/// The members of each event's `data` (beside `account`, `conversation`, `sequence`).
fn data_of(e: EventType) -> &'static str {
    match e {
        EventType::MessageReceived => {
            "wamid: str, from: str, user_id?: str?, profile_name?: str?, timestamp?: any, \
             content: obj, context?: any, inbox_seq?: int?"
        }
        EventType::MessageStatus => {
            "wamid: str, status: str(sent|delivered|read|failed), at_ms?: int?, \
             outbox_id?: int?, error_code?: int?, error_detail?: str?"
        }
        EventType::ConversationHandoff => {
            "reason?: str?, since?: int?, by?: {kind: str(admin|flow|bot), bot?: str}"
        }
        EventType::ConversationReleased => "reason?: str?",
        EventType::OrderCreated => {
            "order_id: int, order_number: str, source?: str, currency: str, subtotal: str, \
             discount?: str, total: str, items: [obj]"
        }
        EventType::OrderStatus => "order_id: int, order_number: str, status: str",
        EventType::StockLow => "material: str, unit: str, stock: str, min_stock: str",
        EventType::FlowCompleted | EventType::FlowAbandoned => {
            "flow_id: str, version?: any, started_at?: int?"
        }
        EventType::FlowFailed => "flow_id: str, version?: any, started_at?: int?, error: str",
        EventType::PaymentPaid | EventType::PaymentExpired | EventType::PaymentPaidLate => {
            "payment_id: int, order_id?: int?, status: str, provider: str, method?: str?, \
             amount: str, paid_amount?: str?, currency: str"
        }
        EventType::BotHandoff => "bot: str, reason: str, since: int",
        EventType::CampaignProgress | EventType::CampaignPaused | EventType::CampaignFinished => {
            "campaign_id: int, name: str, status: str, reason?: str?, counters: {total: int, \
             queued: int, sent: int, delivered: int, read: int, failed: int, skipped: int, \
             stopped: int, pending: int}"
        }
        EventType::AccountHealth => {
            "health: str(healthy|warning|critical), previous: str(healthy|warning|critical), \
             quality: str, quality_event?: str?, account_status: str, account_event?: str?, \
             messaging_limit?: str?, halted: bool, paused: bool"
        }
        EventType::AccountHalted => {
            "scope: str(business_initiated|all), code?: int?, reason: str, since: int"
        }
        EventType::EndpointDisabled => "endpoint_id: str, reason: str",
        EventType::WebhookTest => "endpoint_id: str",
    }
}

fn header(name: &str, about: &str) -> Value {
    json!({"name": name, "in": "header", "required": true, "description": about,
           "schema": {"type": "string"}})
}

/// The `webhooks` section.
pub(super) fn webhooks() -> Value {
    let mut out = serde_json::Map::new();
    for e in EventType::ALL {
        let data = format!(
            "{{account: str, conversation?: str, sequence?: int, {}}}",
            data_of(e)
        );
        let body = format!(
            "{{type: str({}), timestamp: str, data: {data}}}",
            e.as_str()
        );
        let schema = serde_json::to_value(shape(&body)).expect("a schema");
        out.insert(
            e.as_str().to_string(),
            json!({"post": {
                "operationId": format!("event_{}", e.as_str().replace('.', "_")),
                "summary": format!("`{}` (catalog version {CATALOG_VERSION})", e.as_str()),
                "description": "Posted to each active endpoint that wants this event, at \
                    least once, signed as Standard Webhooks v1 has it. `data.conversation` \
                    and `data.sequence` (1, 2, 3, … per conversation) are there when a \
                    conversation is concerned. Any 2xx is success; 410 disables the \
                    endpoint; 5xx, 408, 409, 425, 429 and no answer are retried.",
                "parameters": [
                    header("webhook-id", "`msg_…`: the same on every attempt of one event (the receiver's idempotency key)."),
                    header("webhook-timestamp", "Unix seconds of this attempt."),
                    header("webhook-signature", "`v1,<base64 HMAC-SHA256(key, \"{id}.{timestamp}.{body}\")>`, the key being the base64 after `whsec_`; two, space-separated, while a rotated secret still signs."),
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
                "responses": {"2XX": {"description": "Taken: not sent again."}},
            }}),
        );
    }
    Value::Object(out)
}
