//! Parley: a WhatsApp conversation engine.
//!
//! # Floors
//!
//! Each top-level module stands on a floor; its `crate::` imports point to lower floors only,
//! and modules of one floor do not import each other. `tests/layering.rs` reads the lines
//! below and checks every `crate::` path in `src/` against them (with the list of imports
//! that still point up, which may only shrink). One line per module, bottom to top:
//!
//! - 0 [`whatsapp`]: Cloud API wire formats: types, webhook decoder, send bodies, client, errors.
//! - 0 [`metrics`]: process metrics in Prometheus text format.
//! - 0 [`telemetry`]: logging (JSON or terminal), masked phone numbers.
//! - 0 [`outcall`]: HTTP calls to the business's own systems, behind an SSRF guard.
//! - 1 [`domain`]: the business's vocabulary: meaningful ids, time zones, the messaging window, session records.
//! - 2 [`config`]: settings from files and `PARLEY__*`, checked into typed values.
//! - 3 [`store`]: SQLite or PostgreSQL through one group-commit writer.
//! - 4 [`media`]: inbound media downloads and voice transcription.
//! - 5 [`conversation`]: the pure `step(state, event, ctx) -> (state, effects)`.
//! - 6 [`flow`]: flow files, validation, the pure flow executor.
//! - 6 [`chatbot`]: AI chatbots: definitions, the pure session, model providers.
//! - 7 [`sendgate`]: per-account limits every send passes (rate, pair rate, daily cap, tier, health).
//! - 8 [`outbox`]: per-account sending to the Graph API, ordered per conversation, with retries.
//! - 9 [`campaign`]: campaigns paced under the gate.
//! - 10 [`actors`]: RootSupervisor → AccountActor → ConversationActor, thin shells.
//! - 11 [`systemd`]: the service contract (`READY=1`, `STATUS=`, the watchdog).
//! - 12 [`reload`]: reloading flows and live configuration keys.
//! - 13 [`ingress`]: Meta's webhook (signature, parse, durable inbox), health, metrics, admin API.
//! - 14 [`app`]: wiring only: store → writer → actors → HTTP, and the ordered shutdown.
//! - 15 [`cli`]: the `parleyd` command line.
//! - 16 [`testing`]: fakes and webhook builders for the tests and benchmarks.
//! - 16 [`fuzzing`]: the fuzz targets' harnesses.

pub mod actors;
pub mod app;
pub mod campaign;
pub mod chatbot;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod domain;
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
