//! Parley: a WhatsApp conversation engine.
//!
//! - [`ingress`]: Meta's webhook (signature, parse, durable inbox), health, metrics, admin API.
//! - [`store`]: SQLite or PostgreSQL through one group-commit writer.
//! - [`actors`]: RootSupervisor → AccountActor → ConversationActor.
//! - [`conversation`]: the pure `step(state, event, ctx) -> (state, effects)`.
//! - [`outbox`]: per-account sending to the Graph API, ordered per conversation, with retries.
//! - [`sendgate`]: per-account limits every send passes (rate, pair rate, daily cap, tier, health).
//! - [`whatsapp`]: Cloud API types, decoder, send bodies, client, error classification.

pub mod actors;
pub mod app;
pub mod campaign;
pub mod chatbot;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod flow;
pub mod fuzzing;
pub mod ingress;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod outcall;
pub mod reload;
pub mod sendgate;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod testing;
pub mod whatsapp;
