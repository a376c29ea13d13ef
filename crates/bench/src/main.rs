//! Load driver for a running `parleyd` (started here as a subprocess, on a fresh SQLite or
//! PostgreSQL store, against an in-process fake Graph API).
//!
//! One module per benchmark (`ingest`, `wrk`, `shop`, `commerce`, `startup`, `matrix`, `bots`,
//! `reload`, `send`, `campaign`, `gate_core`, `memory`, `soak`); `daemon`, `load` and `report` hold what they
//! share.

mod bots;
mod campaign;
mod commerce;
mod daemon;
mod gate_core;
mod hooks;
mod ingest;
mod load;
mod matrix;
mod memory;
mod reload;
mod report;
mod send;
mod shop;
mod soak;
mod startup;
mod wrk;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::wrk::WrkLoad;

const PNID: &str = "106540352242922";
const SECRET: &str = "bench-secret";
const ADMIN: &str = "bench-admin-token-0123456789abcdef";

#[derive(Parser, Clone)]
#[command(name = "parley-bench", about = "Load driver for parleyd")]
struct Cli {
    /// The daemon binary to start.
    #[arg(long, global = true, default_value = "target/release/parleyd")]
    daemon: PathBuf,
    /// Store URL; default a fresh SQLite file in a temp dir. A postgres:// URL names a server
    /// database to create a fresh database on (e.g. postgres://postgres@127.0.0.1/test).
    #[arg(long, global = true)]
    store: Option<String>,
    /// Send read receipts for inbound messages (the account's `mark_read`).
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    mark_read: bool,
    /// The account's SendGate rate (`messages_per_second`). The engine figures are taken far
    /// above Meta's limits so that the gate's pacing does not hide the engine's own cost.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    mps: u32,
    /// The account's `pair_rate_interval` ("0s": off, as the shop bench replies ~30 times a
    /// second to each user).
    #[arg(long, global = true, default_value = "0s")]
    pair_rate_interval: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Clone)]
enum Cmd {
    Ingest {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "15")]
        seconds: u64,
    },
    /// The same load from wrk (a lean C driver, as in DESIGN.md §5) with pre-signed bodies.
    Wrk {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "8")]
        seconds: u64,
        /// Distinct pre-signed webhooks to prepare (each is sent once).
        #[arg(long, default_value_t = 250_000)]
        requests: usize,
        /// Post status webhooks (`delivered`, each for a different wamid, as Meta sends two or
        /// three per message sent) instead of messages.
        #[arg(long)]
        statuses: bool,
        /// First run the same requests against this box's ingest ceiling (a bare axum server
        /// that checks the signature, decodes the webhook and answers 200, nothing durable),
        /// then against the daemon, and print the ratio.
        #[arg(long)]
        ceiling: bool,
    },
    /// The ingest ceiling `wrk --ceiling` runs in its own process.
    #[command(hide = true)]
    CeilingServer {
        #[arg(long)]
        port: u16,
    },
    /// The shop conversation end to end: each user plays the whole conversation, waiting for
    /// every reply at the fake Graph API before answering.
    Shop {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value = "10")]
        seconds: u64,
        /// Subscribe a local receiver to `message.received` and report webhook deliveries/s.
        #[arg(long)]
        hooks: bool,
    },
    /// Whole purchases: each user buys over and over (catalog → cart → check out → a VA at a
    /// fake Xendit that answers after --gateway-ms and posts the PAID callback --callback-ms
    /// later → the receipt): orders/s, webhook → reply latency, callbacks/s accepted, daemon
    /// CPU per order.
    Commerce {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value = "20")]
        seconds: u64,
        /// The fake gateway's answer to a create comes after this long.
        #[arg(long, default_value_t = 50)]
        gateway_ms: u64,
        /// The PAID callback is posted this long after the create's answer.
        #[arg(long, default_value_t = 200)]
        callback_ms: u64,
        /// Products in the catalog, 1 to 9 (one page of the list).
        #[arg(long, default_value_t = 5)]
        products: usize,
    },
    /// Start-up time with N conversations stored (SQLite): must not grow with N.
    Startup {
        #[arg(long, default_value_t = 1_000_000)]
        conversations: usize,
    },
    /// The shop benchmark at 1, 10 and 100 users on SQLite, and on PostgreSQL with --pg.
    Matrix {
        #[arg(long, default_value = "8")]
        seconds: u64,
        /// A PostgreSQL server URL to create fresh databases on.
        #[arg(long)]
        pg: Option<String>,
    },
    /// Chatbot conversations against a fake model answering after --delay-ms.
    Bots {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value = "15")]
        seconds: u64,
        #[arg(long, default_value_t = 200)]
        delay_ms: u64,
        /// The provider's concurrency setting.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Each user's pause between an answer and the next message (0: none, a closed loop
        /// that keeps the provider's limit saturated).
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
    },
    /// Reload a folder of N flow files (copies of the shop flow) while a thread steps the
    /// shop conversation through the same registry: reload time, and step latency during
    /// reloads against before.
    Reload {
        #[arg(long, default_value_t = 1000)]
        files: usize,
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
    /// The SendGate's pacing: queue business-initiated templates to distinct users through
    /// the admin API and measure the rate they reach the fake Graph API at (use `--mps`).
    Send {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// A campaign through the admin API: `--recipients` distinct users at
    /// `--rate-per-minute`, paced under the account's gate (`--mps`); the achieved rate at the
    /// fake Graph API, RSS while it runs, daemon CPU per message.
    Campaign {
        #[arg(long, default_value_t = 100_000)]
        recipients: usize,
        #[arg(long, default_value_t = 60_000)]
        rate_per_minute: u32,
    },
    /// The SendGate's decision alone, in process (no daemon): ns per admitted message.
    GateCore {
        #[arg(long, default_value_t = 2_000_000)]
        decisions: u64,
        #[arg(long, default_value_t = 100_000)]
        users: u64,
    },
    /// The shop conversation at a steady rate for --minutes with short retention windows:
    /// database size, WAL size, RSS and reply p99 sampled every --sample-secs into
    /// OUT/soak.csv and drawn in OUT/soak.png. Disk and memory should be flat once the
    /// windows are full.
    Soak {
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Each user's pause between a reply and its next message (the rate is about
        /// users / think).
        #[arg(long, default_value_t = 250)]
        think_ms: u64,
        #[arg(long, default_value_t = 5)]
        sample_secs: u64,
        /// Every retention window the soak sets (inbox, dedup, outbox, messages, flow_steps).
        #[arg(long, default_value = "2m")]
        window: String,
        #[arg(long, default_value = "soak")]
        out: PathBuf,
    },
    Memory {
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// Passivation timeout given to the daemon.
        #[arg(long, default_value = "20")]
        idle_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ingest {
            users,
            connections,
            seconds,
        } => ingest::ingest(&cli, users, connections, seconds).await,
        Cmd::Memory {
            conversations,
            idle_seconds,
        } => memory::memory(&cli, conversations, idle_seconds).await,
        Cmd::Wrk {
            users,
            connections,
            seconds,
            requests,
            statuses,
            ceiling,
        } => {
            let load = WrkLoad {
                users,
                connections,
                seconds,
                requests,
                statuses,
            };
            wrk::with_wrk(&cli, &load, ceiling).await
        }
        Cmd::CeilingServer { port } => wrk::ceiling_server(port).await,
        Cmd::Shop {
            users,
            seconds,
            hooks,
        } => shop::shop(&cli, users, seconds, hooks).await,
        Cmd::Soak {
            minutes,
            users,
            think_ms,
            sample_secs,
            ref window,
            ref out,
        } => {
            let s = soak::Soak {
                minutes,
                users,
                think_ms,
                sample_secs,
                window: window.clone(),
                out: out.clone(),
            };
            soak::soak(&cli, s).await
        }
        Cmd::Commerce {
            users,
            seconds,
            gateway_ms,
            callback_ms,
            products,
        } => commerce::commerce(&cli, users, seconds, gateway_ms, callback_ms, products).await,
        Cmd::Reload { files, rounds } => reload::reload(files, rounds),
        Cmd::Startup { conversations } => startup::startup(&cli, conversations).await,
        Cmd::Matrix { seconds, ref pg } => matrix::matrix(&cli, seconds, pg.clone()).await,
        Cmd::Bots {
            users,
            seconds,
            delay_ms,
            concurrency,
            think_ms,
        } => bots::bots(&cli, users, seconds, delay_ms, concurrency, think_ms).await,
        Cmd::Send {
            messages,
            concurrency,
        } => send::send(&cli, messages, concurrency).await,
        Cmd::Campaign {
            recipients,
            rate_per_minute,
        } => campaign::campaign(&cli, recipients, rate_per_minute).await,
        Cmd::GateCore { decisions, users } => {
            gate_core::gate_core(decisions, users);
            Ok(())
        }
    }
}
