//! Outbound webhooks to the business's systems, their pure parts: the versioned event catalog
//! ([`EventType`]), Standard Webhooks signing and secrets ([`sign`]), and the retry schedule's
//! decisions ([`schedule`]). The rows live in `store::hooks`, the sender in `hooksend`, the
//! admin routes in `ingress::hooks`.
//!
//! Events are written in the same transaction as the change that caused them (a transactional
//! outbox), only when some active endpoint wants them; the sender delivers each one to each
//! endpoint that wanted it, at least once, with the same `webhook-id` on every attempt.

pub mod body;
pub mod catalog;
pub mod schedule;
pub mod sign;

pub use body::*;
pub use catalog::*;
pub use schedule::*;
pub use sign::*;
