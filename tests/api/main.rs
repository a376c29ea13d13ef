//! End-to-end tests of the daemon: webhook in, store, actors, outbox, fake Graph API out.
//! Every scenario runs on SQLite and on PostgreSQL.

mod helpers;

mod admin;
mod analytics;
mod analytics_bench;
mod campaign_retention;
mod campaigns;
mod chatbot;
mod commerce_admin;
mod contact_imports;
mod contacts;
mod conventions;
mod conversations;
mod custom_orders;
mod dead_letters;
mod delivery;
mod edges;
mod flows;
mod graph_schema;
mod handoff;
mod hook_events;
mod hooks;
mod keys;
mod materials;
mod media;
mod openapi;
mod payments;
mod profile;
mod reload;
mod retention;
mod sendgate;
mod store;
mod sweeps;
mod vouchers;
mod webhook;
mod window;
