//! Process metrics in Prometheus text format. Counters are atomics; labelled families
//! are small maps behind a mutex (touched once per event, never held across await).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(Default)]
pub struct Metrics {
    pub webhooks: Labelled,
    /// Wrong admin bearer or verify tokens, by endpoint and result (`refused`: answered 401 or
    /// 403; `throttled`: answered 429 before the token was looked at).
    pub auth_failures: Labelled,
    /// Connections the listener closed for a limit, by reason (`header_timeout`, `idle`).
    pub connections_closed: Labelled,
    /// Outbound webhook attempts by what followed: `succeeded`, `retry`, `failed`,
    /// `exhausted`.
    pub hook_attempts: Labelled,
    pub inbox_events: Labelled,
    pub unknown_account_events: AtomicU64,
    pub inbox_dispatched: AtomicU64,
    pub inbox_applied: AtomicU64,
    /// Messages committed to the inbox and not yet applied, as last read from the store
    /// (-1 until the first read).
    pub inbox_pending: AtomicI64,
    /// How long the oldest of them has waited, ms (0 when none).
    pub inbox_oldest_pending_ms: AtomicI64,
    pub outbox_pending: AtomicI64,
    pub sends: Labelled,
    pub live_conversations: AtomicI64,
    pub conversation_restarts: AtomicU64,
    pub dead_letters: Labelled,
    /// Sends found in doubt at a start (marked `sending`, no outcome recorded), by how they
    /// ended: `settled` by a status webhook, `resent` after `outbox.ambiguous_resend_after`.
    pub outbox_in_doubt: Labelled,
    pub commit_batches: AtomicU64,
    /// Steps committed in the same transaction as the inbox row they applied.
    pub steps_joined: AtomicU64,
    pub commit_rows: AtomicU64,
    pub commit_batch_hist: Histogram,
    /// How long the writers' COMMITs took (SQLite: writing the WAL frames and the fsync;
    /// PostgreSQL: the round trip with the server's flush), µs.
    pub commit_us: Histogram<Micros>,
    pub commit_failures: AtomicU64,
    /// PostgreSQL deadlocks (SQLSTATE 40P01) a writer's transaction was chosen to break.
    pub store_deadlocks: AtomicU64,
    /// Group commits that failed and were written again one operation at a time.
    pub batch_fallbacks: AtomicU64,
    pub flow_http: Labelled,
    /// Flow reloads by result (`applied`, `refused`: a file did not validate, nothing changed).
    pub flow_reloads: Labelled,
    pub bot_sessions: Labelled,
    pub bot_answers: Labelled,
    pub bot_response_ms: Labelled,
    /// A chatbot turn's time in Parley before the model call starts (webhook received →
    /// call started), µs.
    pub bot_before_call_us: Histogram<Micros>,
    /// A chatbot turn's time in Parley after the model answered (answer received → reply
    /// committed, admitted by the SendGate and its request to the Graph API started), µs.
    pub bot_after_answer_us: Histogram<Micros>,
    /// The two together, per turn: Parley's own time in a chatbot turn, µs.
    pub bot_turn_us: Histogram<Micros>,
    /// SendGate: messages admitted, by class.
    pub gate_admitted_service: AtomicU64,
    pub gate_admitted_business: AtomicU64,
    /// SendGate: decisions that made a message wait, by reason.
    pub gate_waits: Labelled,
    /// SendGate: messages refused by the gate, by reason.
    pub gate_refusals: Labelled,
    /// SendGate alerts: business-initiated sending halted, by code.
    pub gate_halts: Labelled,
    /// SendGate: all sending paused (190 and the like), by code.
    pub gate_pauses: Labelled,
    /// SendGate: 130429 answers that slowed a number down.
    pub gate_throttles: AtomicU64,
    /// SendGate: contacts marked unreachable (131026).
    pub gate_unreachable: AtomicU64,
    /// Campaigns: messages handed to conversations.
    pub campaign_messages: AtomicU64,
    /// Campaigns that paused themselves (quality, template, failure rate, halt).
    pub campaign_pauses: AtomicU64,
    /// Materials that fell below their minimum, once per crossing, by account.
    pub low_stock_alerts: Labelled,
    /// Messages to an account's owner (`owner_wa_id`), by what they were about and how they
    /// ended (`sent`, `held` until the owner writes, `no_owner` configured, `failed`).
    pub owner_messages: Labelled,
    /// Retention: rows erased (body only) or deleted, by table and action.
    pub retention_rows: Labelled,
    /// Retention: files of downloaded media deleted.
    pub retention_files: AtomicU64,
    /// Retention passes that failed (the next one tries again).
    pub retention_failures: AtomicU64,
    /// The tables' sizes as last sampled by the retention sweeper.
    pub storage: Mutex<StorageSample>,
}

/// Rows, bytes and the oldest row's age of each table, and the database's size.
#[derive(Debug, Clone, Default)]
pub struct StorageSample {
    /// (table, rows, bytes, age of the oldest row in ms when it has rows).
    pub tables: Vec<(String, i64, i64, Option<i64>)>,
    pub database_bytes: i64,
    pub free_bytes: Option<i64>,
    /// How the bytes were found (dbstat, estimate, pg_total_relation_size).
    pub bytes_method: String,
}

/// The one registry of this process.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

#[derive(Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Metrics {
    /// A flow's HTTP call finished with `status` (0: no response or refused).
    pub fn flow_http_calls(&self, status: u16) {
        let class = match status {
            0 => "failed",
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        self.flow_http.inc(&format!("result=\"{class}\""));
    }
}

impl Metrics {
    /// A chatbot session `started`, or ended with this status (`done`, `handoff`, …).
    pub fn bot_session(&self, bot: &str, status: &str) {
        self.bot_sessions
            .inc(&format!("bot=\"{bot}\",status=\"{status}\""));
    }

    /// A model answered (`failed`: with an error) for `bot`, after `latency_ms`.
    pub fn bot_answer(&self, bot: &str, failed: bool, latency_ms: u64) {
        let result = if failed { "failed" } else { "ok" };
        self.bot_answers
            .inc(&format!("bot=\"{bot}\",result=\"{result}\""));
        self.bot_response_ms
            .add(&format!("bot=\"{bot}\""), latency_ms);
    }
}

impl Labelled {
    /// `labels` is the inside of `{}` in the exposition format, e.g. `result="ok"`.
    pub fn inc(&self, labels: &str) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = m.get_mut(labels) {
            *v += n;
        } else {
            m.insert(labels.to_string(), n);
        }
    }

    pub fn get(&self, labels: &str) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(labels).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, v) in m.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The upper bounds of a histogram's buckets (at most 15).
pub trait Buckets: Default {
    const LIMITS: &'static [u64];
}

/// Operations per group commit.
#[derive(Default)]
pub struct BatchSizes;
impl Buckets for BatchSizes {
    const LIMITS: &'static [u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];
}

/// Microseconds, fine around the few milliseconds a conversation turn should take.
#[derive(Default)]
pub struct Micros;
impl Buckets for Micros {
    const LIMITS: &'static [u64] = &[
        250, 500, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 6_000, 7_500, 10_000, 20_000, 50_000,
        100_000,
    ];
}

#[derive(Default)]
pub struct Histogram<B: Buckets = BatchSizes> {
    counts: [AtomicU64; 16],
    sum: AtomicU64,
    count: AtomicU64,
    _buckets: B,
}

impl<B: Buckets> Histogram<B> {
    pub fn observe(&self, v: u64) {
        let i = B::LIMITS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(B::LIMITS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in B::LIMITS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[B::LIMITS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let r = Ordering::Relaxed;
        self.webhooks.render(
            &mut out,
            "parley_webhooks_total",
            "Webhook POSTs by result.",
        );
        self.auth_failures.render(
            &mut out,
            "parley_auth_failures_total",
            "Failed admin and verify-token authentications, by endpoint and result.",
        );
        self.connections_closed.render(
            &mut out,
            "parley_http_connections_closed_total",
            "Connections the listener closed for a limit, by reason.",
        );
        self.hook_attempts.render(
            &mut out,
            "parley_outbound_webhook_attempts_total",
            "Outbound webhook attempts by what followed (succeeded, retry, failed, exhausted).",
        );
        self.inbox_events.render(
            &mut out,
            "parley_inbox_events_total",
            "Inbox events by kind and whether new or duplicate.",
        );
        counter(
            &mut out,
            "parley_unknown_account_events_total",
            "Events for a phone_number_id not in the config.",
            self.unknown_account_events.load(r),
        );
        gauge(
            &mut out,
            "parley_inbox_lag",
            "Inbox messages committed but not yet applied to their conversation (read from the store every 2 s; -1 before the first read).",
            self.inbox_pending.load(r),
        );
        let oldest = self.inbox_oldest_pending_ms.load(r);
        let _ = writeln!(
            out,
            "# HELP parley_inbox_oldest_pending_seconds How long the oldest unapplied inbox message has waited.\n# TYPE parley_inbox_oldest_pending_seconds gauge\nparley_inbox_oldest_pending_seconds {:.3}",
            oldest as f64 / 1000.0
        );
        counter(
            &mut out,
            "parley_inbox_dispatched_total",
            "Inbox messages handed to conversations as they were committed.",
            self.inbox_dispatched.load(r),
        );
        counter(
            &mut out,
            "parley_inbox_applied_total",
            "Inbox events applied to conversations.",
            self.inbox_applied.load(r),
        );
        gauge(
            &mut out,
            "parley_outbox_pending",
            "Outbound requests queued or in flight.",
            self.outbox_pending.load(r),
        );
        self.sends.render(
            &mut out,
            "parley_sends_total",
            "Graph API send attempts by result and error code.",
        );
        self.bot_sessions.render(
            &mut out,
            "parley_bot_sessions_total",
            "Chatbot sessions started, and ended by how.",
        );
        self.bot_answers.render(
            &mut out,
            "parley_bot_answers_total",
            "Model calls by chatbot and result.",
        );
        self.bot_response_ms.render(
            &mut out,
            "parley_bot_response_ms_total",
            "Sum of model answer latencies per chatbot (ms; divide by answers for the mean).",
        );
        self.flow_http.render(
            &mut out,
            "parley_flow_http_calls_total",
            "HTTP calls made by flows, by result.",
        );
        self.flow_reloads.render(
            &mut out,
            "parley_flow_reloads_total",
            "Flow reloads by result (refused: a file did not validate and the running flows stay).",
        );
        gauge(
            &mut out,
            "parley_live_conversations",
            "Conversation actors resident in memory.",
            self.live_conversations.load(r),
        );
        counter(
            &mut out,
            "parley_conversation_restarts_total",
            "Conversation actors restarted after a failure.",
            self.conversation_restarts.load(r),
        );
        self.dead_letters.render(
            &mut out,
            "parley_dead_letters_total",
            "Dead letters by kind.",
        );
        self.outbox_in_doubt.render(
            &mut out,
            "parley_outbox_in_doubt_total",
            "Sends whose outcome a stop left unknown, by how they ended (settled by a status, resent).",
        );
        let memory = process_memory();
        gauge(
            &mut out,
            "parley_sqlite_memory_bytes",
            "Memory SQLite holds across every connection (page caches, statements, schema); each connection's page cache is capped by its cache_size.",
            memory.sqlite,
        );
        gauge(
            &mut out,
            "parley_sqlite_memory_peak_bytes",
            "The most memory SQLite has held since the start.",
            memory.sqlite_peak,
        );
        gauge(
            &mut out,
            "parley_heap_committed_bytes",
            "Memory the allocator (mimalloc) has mapped read-write, SQLite's included; on Linux an estimate that counts pages never touched, which RSS does not.",
            memory.heap_committed,
        );
        counter(
            &mut out,
            "parley_commit_batches_total",
            "Group-commit transactions.",
            self.commit_batches.load(r),
        );
        counter(
            &mut out,
            "parley_steps_joined_total",
            "Conversation steps committed in the same transaction as the inbox row they applied.",
            self.steps_joined.load(r),
        );
        counter(
            &mut out,
            "parley_commit_failures_total",
            "Group-commit transactions that failed.",
            self.commit_failures.load(r),
        );
        counter(
            &mut out,
            "parley_store_deadlocks_total",
            "Writer transactions PostgreSQL aborted to break a deadlock (SQLSTATE 40P01).",
            self.store_deadlocks.load(r),
        );
        counter(
            &mut out,
            "parley_store_batch_fallbacks_total",
            "Group commits that failed and were written again one operation at a time.",
            self.batch_fallbacks.load(r),
        );
        self.commit_batch_hist.render(
            &mut out,
            "parley_commit_batch_ops",
            "Operations per group-commit transaction.",
        );
        self.commit_us.render(
            &mut out,
            "parley_commit_us",
            "The writers' COMMIT statements: microseconds until durable (SQLite: WAL write and fsync).",
        );
        self.bot_before_call_us.render(
            &mut out,
            "parley_bot_before_call_us",
            "Chatbot turns: microseconds from the webhook's arrival to the model call's start.",
        );
        self.bot_after_answer_us.render(
            &mut out,
            "parley_bot_after_answer_us",
            "Chatbot turns: microseconds from the model's answer to the start of the reply's request to the Graph API.",
        );
        self.bot_turn_us.render(
            &mut out,
            "parley_bot_turn_us",
            "Chatbot turns: Parley's own microseconds per turn (before the model call plus after its answer).",
        );
        let _ = writeln!(
            out,
            "# HELP parley_gate_admitted_total Messages the SendGate let through, by class.\n# TYPE parley_gate_admitted_total counter\nparley_gate_admitted_total{{class=\"service\"}} {}\nparley_gate_admitted_total{{class=\"business\"}} {}",
            self.gate_admitted_service.load(r),
            self.gate_admitted_business.load(r)
        );
        self.gate_waits.render(
            &mut out,
            "parley_gate_waits_total",
            "SendGate decisions that made a message wait, by reason (throughput, pair_rate, daily_limit, tier, paused, halted, ...).",
        );
        self.gate_refusals.render(
            &mut out,
            "parley_gate_refusals_total",
            "Messages the SendGate refused, by reason.",
        );
        self.gate_halts.render(
            &mut out,
            "parley_gate_halts_total",
            "ALERT: business-initiated sending halted on a number (131048, 131031, 368, account events).",
        );
        self.gate_pauses.render(
            &mut out,
            "parley_gate_pauses_total",
            "ALERT: all sending paused on a number until resumed (190 and other credential errors).",
        );
        counter(
            &mut out,
            "parley_gate_throttles_total",
            "130429 answers that made the SendGate cool off and lower the rate.",
            self.gate_throttles.load(r),
        );
        counter(
            &mut out,
            "parley_gate_unreachable_total",
            "Contacts marked unreachable (131026).",
            self.gate_unreachable.load(r),
        );
        counter(
            &mut out,
            "parley_campaign_messages_total",
            "Campaign messages handed to their conversations (then sent through the SendGate).",
            self.campaign_messages.load(r),
        );
        counter(
            &mut out,
            "parley_campaign_pauses_total",
            "ALERT: campaigns that paused themselves (quality drop, template, failure rate, halt).",
            self.campaign_pauses.load(r),
        );
        self.low_stock_alerts.render(
            &mut out,
            "parley_low_stock_alerts_total",
            "ALERT: materials that fell below their minimum (once per crossing), by account.",
        );
        self.owner_messages.render(
            &mut out,
            "parley_owner_messages_total",
            "Messages to an account's owner, by topic and result.",
        );
        self.retention_rows.render(
            &mut out,
            "parley_retention_rows_total",
            "Rows retention erased (the body only) or deleted, by table and action.",
        );
        counter(
            &mut out,
            "parley_retention_files_total",
            "Downloaded media files retention deleted.",
            self.retention_files.load(r),
        );
        counter(
            &mut out,
            "parley_retention_failures_total",
            "Retention passes that failed (the next one tries again).",
            self.retention_failures.load(r),
        );
        if let Ok(sample) = self.storage.lock() {
            sample.render(&mut out);
        }
        out
    }
}

impl StorageSample {
    fn render(&self, out: &mut String) {
        if self.tables.is_empty() {
            return;
        }
        let method = &self.bytes_method;
        let _ = writeln!(out, "# HELP parley_table_rows Rows per table (sampled by the retention sweeper).\n# TYPE parley_table_rows gauge");
        for (t, rows, _, _) in &self.tables {
            let _ = writeln!(out, "parley_table_rows{{table=\"{t}\"}} {rows}");
        }
        let _ = writeln!(out, "# HELP parley_table_bytes Bytes per table with its indexes (method: dbstat, estimate or pg_total_relation_size).\n# TYPE parley_table_bytes gauge");
        for (t, _, bytes, _) in &self.tables {
            let _ = writeln!(
                out,
                "parley_table_bytes{{table=\"{t}\",method=\"{method}\"}} {bytes}"
            );
        }
        let _ = writeln!(out, "# HELP parley_table_oldest_row_age_seconds Age of each table's oldest row when sampled.\n# TYPE parley_table_oldest_row_age_seconds gauge");
        for (t, _, _, age) in &self.tables {
            if let Some(age) = age {
                let _ = writeln!(
                    out,
                    "parley_table_oldest_row_age_seconds{{table=\"{t}\"}} {:.3}",
                    *age as f64 / 1000.0
                );
            }
        }
        gauge(
            out,
            "parley_database_bytes",
            "The database's size (SQLite: the main file, WAL excluded).",
            self.database_bytes,
        );
        if let Some(free) = self.free_bytes {
            gauge(
                out,
                "parley_database_free_bytes",
                "SQLite: bytes of free pages in the file, reused before it grows.",
                free,
            );
        }
    }
}

/// Where the daemon's memory is: what SQLite holds, and what the allocator holds in all.
pub struct ProcessMemory {
    pub sqlite: i64,
    pub sqlite_peak: i64,
    pub heap_committed: i64,
}

/// Read the process's memory figures (cheap: two counters SQLite and mimalloc keep anyway).
#[allow(unsafe_code)]
pub fn process_memory() -> ProcessMemory {
    let (mut current, mut peak) = (0i64, 0i64);
    // SAFETY: sqlite3_status64 writes two integers through the pointers given, which live on
    // this stack frame; SQLITE_STATUS_MEMORY_USED is a valid operation code, reset flag 0.
    unsafe {
        rusqlite::ffi::sqlite3_status64(
            rusqlite::ffi::SQLITE_STATUS_MEMORY_USED,
            &mut current,
            &mut peak,
            0,
        );
    }
    let mut v = [0usize; 8];
    // SAFETY: mi_process_info writes one usize through each pointer, all into `v`.
    unsafe {
        let [a, b, c, d, e, f, g, h] = &mut v;
        libmimalloc_sys::mi_process_info(a, b, c, d, e, f, g, h);
    }
    ProcessMemory {
        sqlite: current,
        sqlite_peak: peak,
        heap_committed: v[5] as i64,
    }
}

/// Bumped each time freed memory should go back to the operating system.
static GIVE_BACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static GIVEN_BACK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Return freed memory to the operating system (mimalloc, the daemon's allocator, keeps
/// pages per thread: this thread's now, every runtime worker's the next time it goes idle,
/// through [`give_back_if_asked`]).
pub fn give_back_memory() {
    GIVE_BACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    give_back_if_asked();
}

/// How often memory freed since is handed back to the system, whatever the load.
pub const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Every [`GIVE_BACK_EVERY`], ask every thread to return what it freed: a daemon that runs
/// for months then holds about what it uses, not the pages it once used and keeps for reuse
/// (mimalloc keeps freed pages per thread until asked or until the thread needs them).
pub fn spawn_give_back() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(GIVE_BACK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            give_back_memory();
        }
    })
}

/// Called by each runtime worker as it parks: one atomic load, and a heap collection only
/// after [`give_back_memory`] asked for one.
#[allow(unsafe_code)]
pub fn give_back_if_asked() {
    let asked = GIVE_BACK.load(std::sync::atomic::Ordering::Relaxed);
    GIVEN_BACK.with(|done| {
        if done.get() != asked {
            done.set(asked);
            // SAFETY: mi_collect only walks mimalloc's heaps; it takes no pointer of ours.
            unsafe { libmimalloc_sys::mi_collect(true) }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_memory_is_counted_and_grows_with_a_page_cache() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA cache_size = -4096; CREATE TABLE t (v BLOB);")
            .unwrap();
        let before = process_memory();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(8192))", [])
                .unwrap();
        }
        let after = process_memory();
        // 1.6 MB of rows in an in-memory database: its pages are SQLite's memory.
        assert!(
            after.sqlite >= before.sqlite + 1_000_000,
            "{} -> {}",
            before.sqlite,
            after.sqlite
        );
        assert!(after.sqlite_peak >= after.sqlite);
        assert!(after.heap_committed > 0);
        let text = metrics().render();
        assert!(text.contains("\nparley_sqlite_memory_bytes "), "{text}");
        assert!(text.contains("\nparley_heap_committed_bytes "), "{text}");
    }
}
