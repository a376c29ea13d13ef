//! WhatsApp Cloud API: typed inbound events, the webhook decoder, outbound bodies, the Graph
//! client and the classification of its errors.

pub mod client;
// `WebhookEvent::Message` is the common case and is moved, not copied; boxing it would only
// add an allocation per message.
#[allow(clippy::large_enum_variant)]
pub mod event;
pub mod graph_error;
pub mod send;
pub mod webhook;
