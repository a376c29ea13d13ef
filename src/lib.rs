//! Parley: a WhatsApp conversation engine.
//!
//! # Floors
//!
//! Each top-level module stands on a floor; its `crate::` imports point to lower floors only,
//! and modules of one floor do not import each other, so no import circle can form.
//! `tests/layering.rs` reads the lines below and checks every `crate::` path in `src/`
//! against them. One line per module, bottom to top:
//!
//! - 0 [`whatsapp`]: Cloud API wire formats: types, webhook decoder, send bodies, client, errors.
//! - 0 [`metrics`]: process metrics in Prometheus text format.
//! - 0 [`telemetry`]: logging (JSON or terminal), masked phone numbers.
//! - 0 [`outcall`]: HTTP calls to the business's own systems, behind an SSRF guard.
//! - 1 [`domain`]: the business's vocabulary: meaningful ids, time zones, the messaging window, session records.
//! - 1 [`definitions`]: definition files (flows, bots): reading a folder, YAML errors as file:line:col, keywords, durations.
//! - 0 [`hooks`]: outbound webhooks' pure parts: the event catalog, Standard Webhooks signing, the retry schedule.
//! - 2 [`analytics`]: analytics' pure parts: rows folded into per-day figures in the account's time zone, periods, histograms.
//! - 2 [`config`]: settings from files and `PARLEY__*`, checked into typed values.
//! - 3 [`store`]: SQLite or PostgreSQL through one group-commit writer.
//! - 3 [`retention`]: the pure retention policy: which stored rows are old enough to erase or delete, which are still needed.
//! - 4 [`media`]: inbound media downloads and voice transcription.
//! - 4 [`payments`]: payment gateways: each kind's wire shapes, the client, callback verification.
//! - 5 [`commerce`]: selling in the conversation: the calls a flow makes to the shop (catalog, cart, checkout, orders), made against the store once each.
//! - 6 [`conversation`]: the pure `step(state, event, ctx) -> (state, effects)`.
//! - 7 [`flow`]: flow files, validation, the pure flow executor (no chatbot: `behaviour` joins them).
//! - 7 [`chatbot`]: AI chatbots: definitions, the pure session, model providers.
//! - 8 [`behaviour`]: flows and chatbots together: loaded and checked as one set, the logic that runs them.
//! - 9 [`sendgate`]: per-account limits every send passes (rate, pair rate, daily cap, tier, health).
//! - 10 [`engine`]: the handles every actor and sender shares (settings, store, writer, behaviours, gates, clock).
//! - 11 [`hooksend`]: the webhook sender: due deliveries from the store, signed, with retries.
//! - 11 [`outbox`]: per-account sending to the Graph API, ordered per conversation, with retries.
//! - 12 [`actors`]: RootSupervisor → AccountActor → ConversationActor, thin shells.
//! - 13 [`campaign`]: campaigns: a supervisor and one pacing actor per running campaign, under the gate.
//! - 14 [`systemd`]: the service contract (`READY=1`, `STATUS=`, the watchdog).
//! - 15 [`reload`]: reloading flows and live configuration keys.
//! - 16 [`ingress`]: Meta's webhook (signature, parse, durable inbox), health, metrics, admin API.
//! - 17 [`app`]: wiring only: store → writer → actors → HTTP, and the ordered shutdown.
//! - 18 [`cli`]: the `parleyd` command line.

pub mod actors;
pub mod analytics;
pub mod app;
pub mod behaviour;
pub mod campaign;
pub mod chatbot;
pub mod cli;
pub mod commerce;
pub mod config;
pub mod conversation;
pub mod definitions;
pub mod domain;
pub mod engine;
pub mod flow;
pub mod hooks;
pub mod hooksend;
pub mod ingress;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod outcall;
pub mod payments;
pub mod reload;
pub mod retention;
pub mod sendgate;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod whatsapp;
