//! The group-commit writer: one task owns every write to the store.
//!
//! Callers (webhook handlers, conversation actors, outbox senders) send an operation and wait
//! for its commit. The task takes everything that queued up while the previous transaction
//! was committing and writes it in one transaction with multi-row statements, so durability
//! costs one fsync per batch rather than one per event. If a batch fails, each operation is
//! retried on its own so one bad operation cannot fail its neighbours.
//!
//! New inbound messages are handed to the dispatcher *by this task, in sequence order*: that
//! is what keeps one conversation's events in inbox order. They are handed over while their
//! transaction is still open, so that the conversation's step can join it (one commit per
//! message instead of two); the step names its batch and is refused if the batch fails, and
//! nothing a step does outside the store happens before its commit. A message whose batch
//! fails and is written again alone is handed over again after that commit.
//!
//! # One writer per row: no deadlocks by construction
//!
//! On PostgreSQL several writers commit side by side, and each holds the row locks its batch
//! takes until its COMMIT. Two writers that each lock a row the other then wants deadlock;
//! PostgreSQL breaks the cycle only after `deadlock_timeout` (1 s) by aborting one batch,
//! which is then written again op by op. So no row is written by two writers; the order of
//! statements inside a batch then cannot matter, since a writer never waits on another's
//! row lock. Every operation goes to the writer that owns the rows it changes:
//! - A conversation's rows (conversation, contact, inbox messages, timers, flow and chatbot
//!   records, its dead letters' chain, **and its outbox rows**) belong to the writer of
//!   `(account, user_key)`. Steps, dead letters, inbound messages and status webhooks go
//!   there — a status by the conversation's key our callback data carries (Meta's
//!   `recipient_id` may be another form of the number), else by its recipient — and so does
//!   every [`OutboxUpdate`] — the sender's `Sending`, `Sent`, `Retrying`, `Failed`, `Unsent`
//!   and `Cancelled`,
//!   for replies, campaign and admin sends, retries and in-doubt resends alike: each carries
//!   its row's `user_key` for that. A `Sent` applies statuses that came before it on the same
//!   writer.
//! - Rows without a conversation have one fixed owner: SendGate's by `("gate", waba)` (tier
//!   reaches, template states) or `("gate", account)` (daily usage, account control,
//!   unreachable contacts); an inbox event without a user (account events, change errors) by
//!   its dedup key, inserted once and never updated.
//! - A unique key two writers could insert at once would make one wait for the other: inbox
//!   dedup keys and outbox and timer idem keys are made from their conversation's events, so
//!   they too come to one writer.
//!
//! Tables written outside the writers, through the pool (campaigns, accounts, media, flow
//! versions), are never written by a writer. One gap is left: a status for a message sent
//! before its callback data carried the conversation's key, naming another recipient than
//! that conversation, may update a row another writer owns. `parley_store_deadlocks_total` and `parley_store_batch_fallbacks_total` count what still
//! happens.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::exec::{for_connection, int, text, Col, SyncTx, Values, WriterConn};
use super::sql::{in_list, std_chunks, typed_values_list, values_list, Val};
use super::{Dialect, Store, StoreError};
use crate::metrics::metrics;
use crate::whatsapp::event::{DeliveryStatus, InboundMessage};

/// Largest number of operations in one transaction.
const OPS_PER_BATCH: usize = 2048;

/// A row to append to the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxRow {
    pub account: String,
    pub user_key: Option<String>,
    /// message | status | change_error | account_event
    pub kind: &'static str,
    pub dedup_key: String,
    pub wamid: Option<String>,
    pub payload: String,
    pub received_at: i64,
    /// pending | done | unrouted
    pub state: &'static str,
    /// For a status row: how it moves the outbound message it names.
    pub status: Option<StatusApply>,
    /// For a message row: handed to the conversation once committed.
    pub dispatch: Option<Arc<InboundMessage>>,
    /// When its webhook arrived (for the latency metrics; not stored).
    pub arrived: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub struct StatusApply {
    pub status: String,
    pub rank: i64,
    pub at_ms: i64,
    /// Our outbox id, from `biz_opaque_callback_data`.
    pub outbox_id: Option<i64>,
    pub error_code: Option<i64>,
    pub error_detail: Option<String>,
}

impl StatusApply {
    /// What a `failed` status says, for a dead letter or the conversation.
    pub fn failure(&self) -> String {
        match (self.error_code, &self.error_detail) {
            (Some(c), Some(d)) => format!("failed status from Meta, error {c}: {d}"),
            (Some(c), None) => format!("failed status from Meta, error {c}"),
            (None, _) => "failed status from Meta".to_string(),
        }
    }
}

/// An inbound message handed to its conversation.
#[derive(Debug, Clone)]
pub struct InboxDispatch {
    pub seq: i64,
    pub account: String,
    pub user_key: String,
    pub message: Arc<InboundMessage>,
    /// `Some(batch)`: handed over while the transaction that appends it is still open, so that
    /// the conversation's step can join that transaction (one commit instead of two). The
    /// step must name the batch in [`StepCommit::batch`]; if the batch fails, the step is
    /// refused and the conversation replays from the store. `None`: already committed.
    pub batch: Option<u64>,
    /// When its webhook arrived, if this process received it.
    pub arrived: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// webhook_malformed | inbox_event | outbox_send | timer
    pub kind: &'static str,
    pub account: Option<String>,
    pub user_key: Option<String>,
    pub ref_id: Option<i64>,
    pub reason: String,
    pub raw: Option<Vec<u8>>,
}

/// A dead letter of this kind takes its timer (`ref_id`) out of the pending ones.
pub const TIMER_DEAD_LETTER: &str = "timer_event";

/// An inbox message the conversation gives up on, chained into its history like an applied
/// one.
#[derive(Debug, Clone, Copy)]
pub struct DeadInbox {
    pub seq: i64,
    /// The conversation's message applied before it (0: none).
    pub prev_seq: i64,
}

#[derive(Debug, Clone)]
pub struct ContactUpsert {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    /// The contact's tags as a JSON array (None: unchanged), so campaigns can select by tag.
    pub tags: Option<String>,
    /// Some(at): opted out of campaigns at `at`; Some(0): opted back in; None: unchanged.
    pub opted_out_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    pub idem_key: String,
    /// message | mark_read
    pub kind: &'static str,
    /// `OutboundMessage` as JSON.
    pub message_json: String,
    pub reply_to: Option<String>,
    pub source_seq: Option<i64>,
    /// service | business (see `sendgate::SendClass`).
    pub class: &'static str,
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub idem_key: String,
    pub name: String,
    pub payload: String,
    pub due_at: i64,
}

/// Everything one conversation step changes, committed atomically.
#[derive(Debug, Clone)]
pub struct StepCommit {
    pub account: String,
    pub user_key: String,
    pub state_json: String,
    pub last_inbound_at: Option<i64>,
    pub last_applied_seq: i64,
    /// The inbox row this step applied.
    pub inbox_done: Option<i64>,
    /// The conversation's message applied before it (0: none): the applied messages of a
    /// conversation form a chain from `conversations.last_applied_seq` back through
    /// `inbox.prev_seq`, its history, so the inbox needs no index at each conversation's
    /// place (a page written per message).
    pub prev_seq: i64,
    /// The timer this step consumed.
    pub timer_fired: Option<i64>,
    pub contact: Option<ContactUpsert>,
    pub outbox: Vec<NewOutboxRow>,
    pub timers: Vec<NewTimer>,
    /// Flow sessions this step moved.
    pub flow_records: Vec<crate::domain::FlowRecord>,
    pub bot_records: Vec<crate::domain::BotSummary>,
    pub now: i64,
    /// The still-open batch whose inbox row this step applies (see [`InboxDispatch::batch`]).
    pub batch: Option<u64>,
}

/// An outbox row as the sender needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub id: i64,
    pub account: String,
    pub user_key: String,
    pub kind: String,
    pub message_json: String,
    pub reply_to: Option<String>,
    pub state: String,
    pub updated_at: i64,
    /// service | business (see `sendgate::SendClass`).
    pub class: String,
    /// For a chatbot's reply: when its turn's answer came (not stored; only for the metrics).
    pub turn: Option<TurnClock>,
    /// The campaign that sent it (read from its idem key), so a pause can withhold it.
    pub campaign: Option<i64>,
}

/// A chatbot turn's clock, carried by its reply to the send so that Parley's time in the turn
/// is measured to the request to the Graph API, not only to the hand-over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnClock {
    /// The model's answer was received.
    pub answered_at: std::time::Instant,
    /// The turn's time from the webhook's arrival to the model call's start, if this process
    /// received the webhook.
    pub before_call: Option<std::time::Duration>,
}

/// A change to outbox rows. Each names the conversation of its row (`account`, `user_key`):
/// it is written by that conversation's writer, the only one that writes the row (see the
/// module doc).
#[derive(Debug, Clone)]
pub enum OutboxUpdate {
    /// About to POST: a crash from here on leaves the outcome ambiguous.
    Sending {
        id: i64,
        account: String,
        user_key: String,
        at: i64,
    },
    /// Never attempted (still queued at a clean stop): send at once on the next start.
    /// `rows`: (user_key, id); split among their writers.
    Unsent {
        account: String,
        rows: Vec<(String, i64)>,
    },
    /// Withheld for a cancelled campaign: settled unsent, for good. `rows` as for `Unsent`.
    Cancelled {
        account: String,
        rows: Vec<(String, i64)>,
        at: i64,
    },
    Sent {
        id: i64,
        account: String,
        user_key: String,
        wamid: Option<String>,
        at: i64,
    },
    Retrying {
        id: i64,
        account: String,
        user_key: String,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
    /// Permanent failure: the row is failed and a dead letter is written.
    Failed {
        id: i64,
        account: String,
        user_key: String,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
}

enum WriteOp {
    Append {
        rows: Vec<NewInboxRow>,
        reply: oneshot::Sender<Result<Vec<Option<i64>>, StoreError>>,
    },
    DeadLetter {
        dl: NewDeadLetter,
        /// Mark this inbox row dead in the same transaction.
        inbox_dead: Option<DeadInbox>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Step {
        commit: Box<StepCommit>,
        reply: oneshot::Sender<Result<Vec<OutboxRecord>, StoreError>>,
    },
    Outbox {
        update: OutboxUpdate,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Gate {
        write: GateWrite,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// SendGate state that must survive a restart.
#[derive(Debug, Clone)]
pub enum GateWrite {
    /// The account may send up to `reserved` messages on `day` (set exactly).
    Daily {
        account: String,
        day: String,
        reserved: i64,
        used: i64,
        at: i64,
    },
    /// `user_key` was reached with a business-initiated message (before the send).
    TierReach {
        waba: String,
        user_key: String,
        account: String,
        at: i64,
    },
    /// Undo a reach Meta refused: back to `previous`, or gone.
    TierRelease {
        waba: String,
        user_key: String,
        at: i64,
        previous: Option<i64>,
    },
    /// The account's health, halt and pause (JSON of `sendgate::Control`).
    Control {
        account: String,
        state_json: String,
        at: i64,
    },
    Unreachable {
        account: String,
        user_key: String,
        code: Option<i64>,
        at: i64,
    },
    Template {
        waba: String,
        name: String,
        language: String,
        status: String,
        reason: Option<String>,
        at: i64,
    },
}

type Dispatcher = Box<dyn Fn(Vec<InboxDispatch>) + Send + Sync>;

/// Handle on the writer task. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    /// One queue per writer. A conversation always goes to the same writer (by a hash of its
    /// key), so its inbox rows commit, and are dispatched, in sequence order.
    writers: Arc<[mpsc::Sender<WriteOp>]>,
    dispatcher: Arc<OnceLock<Dispatcher>>,
}

/// Which writer owns a conversation (or any other key).
fn partition(key: (&str, &str), writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % writers as u64) as usize
}

impl WriterHandle {
    /// Start the writers, each on its own thread with its own connection to `store`: one for
    /// SQLite (it has one writer anyway), `writers` for PostgreSQL.
    pub fn spawn(store: &Store, writers: usize) -> Result<WriterHandle, StoreError> {
        let n = match store.dialect() {
            super::Dialect::Sqlite => 1,
            super::Dialect::Postgres => writers.max(1),
        };
        let dispatcher: Arc<OnceLock<Dispatcher>> = Arc::new(OnceLock::new());
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel(65_536);
            let conn = WriterConn::open(store.url(), store.dialect())?;
            let d = dispatcher.clone();
            let url: Arc<str> = store.url().into();
            // SQLite: WAL frames are copied back into the database by a thread of their own,
            // so a commit never waits behind a checkpoint. It stops when the writer does.
            let checkpointer = match store.dialect() {
                super::Dialect::Sqlite => Some(super::exec::spawn_checkpointer(store.url())?),
                super::Dialect::Postgres => None,
            };
            std::thread::Builder::new()
                .name(format!("parley-writer-{i}"))
                .spawn(move || {
                    run(conn, rx, d, &url);
                    drop(checkpointer);
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
            senders.push(tx);
        }
        Ok(WriterHandle {
            writers: senders.into(),
            dispatcher,
        })
    }

    fn writer_for(&self, key: (&str, &str)) -> &mpsc::Sender<WriteOp> {
        &self.writers[partition(key, self.writers.len())]
    }

    /// Where committed inbound messages go (set once, when the actors are up).
    pub fn set_dispatcher(&self, f: impl Fn(Vec<InboxDispatch>) + Send + Sync + 'static) {
        let _ = self.dispatcher.set(Box::new(f));
    }

    async fn submit<T>(
        &self,
        key: (&str, &str),
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        Self::submit_to(self.writer_for(key), op, rx).await
    }

    async fn submit_to<T>(
        writer: &mpsc::Sender<WriteOp>,
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        writer
            .send(op)
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Append rows; returns, per row, the new seq or `None` for a duplicate.
    pub async fn append_inbox(
        &self,
        rows: Vec<NewInboxRow>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let key_of = |r: &NewInboxRow| -> usize {
            let key = r.user_key.as_deref().unwrap_or(&r.dedup_key);
            partition((&r.account, key), self.writers.len())
        };
        if self.writers.len() == 1 || rows.iter().all(|r| key_of(r) == key_of(&rows[0])) {
            let (reply, rx) = oneshot::channel();
            let first = rows.first().map(&key_of).unwrap_or(0);
            let tx = &self.writers[first];
            tx.send(WriteOp::Append { rows, reply })
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            return rx
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        }
        // Rows of several conversations: each part to its writer; all must commit.
        let n = rows.len();
        let mut parts: Vec<(Vec<usize>, Vec<NewInboxRow>)> =
            vec![(Vec::new(), Vec::new()); self.writers.len()];
        for (i, row) in rows.into_iter().enumerate() {
            let p = key_of(&row);
            parts[p].0.push(i);
            parts[p].1.push(row);
        }
        let mut waits = Vec::new();
        for (p, (idx, part)) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            self.writers[p]
                .send(WriteOp::Append { rows: part, reply })
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            waits.push((idx, rx));
        }
        let mut out = vec![None; n];
        for (idx, rx) in waits {
            let seqs = rx
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))??;
            for (i, seq) in idx.into_iter().zip(seqs) {
                out[i] = seq;
            }
        }
        Ok(out)
    }

    pub async fn dead_letter(
        &self,
        dl: NewDeadLetter,
        inbox_dead: Option<DeadInbox>,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        let key = (
            dl.account.clone().unwrap_or_default(),
            dl.user_key.clone().unwrap_or_default(),
        );
        self.submit(
            (&key.0, &key.1),
            WriteOp::DeadLetter {
                dl,
                inbox_dead,
                reply,
            },
            rx,
        )
        .await
    }

    /// Commit one conversation step; returns the outbox rows it created.
    pub async fn commit_step(&self, commit: StepCommit) -> Result<Vec<OutboxRecord>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let key = (commit.account.clone(), commit.user_key.clone());
        self.submit(
            (&key.0, &key.1),
            WriteOp::Step {
                commit: Box::new(commit),
                reply,
            },
            rx,
        )
        .await
    }

    /// Run an empty operation through every writer thread and wait for it: the watchdog's
    /// proof that the writers take work and commit.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut waits = Vec::with_capacity(self.writers.len());
        for tx in self.writers.iter() {
            waits.push(Self::send_empty(tx).await?);
        }
        for rx in waits {
            rx.await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))??;
        }
        Ok(())
    }

    /// Wait until everything the writer of this conversation had taken before this call is
    /// committed (or failed) and its new messages handed out. A conversation restarted after a
    /// failure passes this before reading its inbox: its previous actor may have been handed
    /// messages of a batch that was still open, and lost them with its mailbox; read before
    /// that batch commits, the inbox would not show them, and a later message would be applied
    /// over their heads.
    pub async fn barrier(&self, account: &str, user_key: &str) -> Result<(), StoreError> {
        let rx = Self::send_empty(self.writer_for((account, user_key))).await?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Queue an operation that writes nothing.
    async fn send_empty(
        tx: &mpsc::Sender<WriteOp>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let update = OutboxUpdate::Unsent {
            account: String::new(),
            rows: Vec::new(),
        };
        tx.send(WriteOp::Outbox { update, reply })
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        Ok(rx)
    }

    /// Record a change to outbox rows, on the writer of each row's conversation.
    pub async fn outbox(&self, update: OutboxUpdate) -> Result<(), StoreError> {
        let writer = match &update {
            OutboxUpdate::Unsent { account, rows } => {
                return self
                    .split(account, rows, |account, rows| OutboxUpdate::Unsent {
                        account,
                        rows,
                    })
                    .await;
            }
            OutboxUpdate::Cancelled { account, rows, at } => {
                let at = *at;
                return self
                    .split(account, rows, |account, rows| OutboxUpdate::Cancelled {
                        account,
                        rows,
                        at,
                    })
                    .await;
            }
            OutboxUpdate::Sending {
                account, user_key, ..
            }
            | OutboxUpdate::Sent {
                account, user_key, ..
            }
            | OutboxUpdate::Retrying {
                account, user_key, ..
            }
            | OutboxUpdate::Failed {
                account, user_key, ..
            } => self.writer_for((account, user_key)),
        };
        let (reply, rx) = oneshot::channel();
        Self::submit_to(writer, WriteOp::Outbox { update, reply }, rx).await
    }

    /// Rows of many conversations: each writer gets its own (`update` makes its part); all
    /// must commit.
    async fn split(
        &self,
        account: &str,
        rows: &[(String, i64)],
        update: impl Fn(String, Vec<(String, i64)>) -> OutboxUpdate,
    ) -> Result<(), StoreError> {
        let mut parts: Vec<Vec<(String, i64)>> = vec![Vec::new(); self.writers.len()];
        for (user_key, id) in rows {
            parts[partition((account, user_key), self.writers.len())].push((user_key.clone(), *id));
        }
        let mut waits = Vec::new();
        for (p, rows) in parts.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let update = update(account.to_string(), rows);
            self.writers[p]
                .send(WriteOp::Outbox { update, reply })
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            waits.push(rx);
        }
        for rx in waits {
            rx.await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))??;
        }
        Ok(())
    }

    /// Make SendGate state durable (returns once committed).
    pub async fn gate(&self, write: GateWrite) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        let key = match &write {
            GateWrite::TierReach { waba, .. }
            | GateWrite::TierRelease { waba, .. }
            | GateWrite::Template { waba, .. } => waba.clone(),
            GateWrite::Daily { account, .. }
            | GateWrite::Control { account, .. }
            | GateWrite::Unreachable { account, .. } => account.clone(),
        };
        self.submit(("gate", &key), WriteOp::Gate { write, reply }, rx)
            .await
    }
}

/// How long an open transaction waits for the steps of the inbound messages it just handed
/// out early. A step that comes in time commits with its inbox row: one commit and one fsync
/// per message instead of two, and the reply leaves one commit sooner. A step that comes later
/// simply commits in the next batch.
const STEP_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// A batch opened with this many operations or more does not wait (measured with the shop
/// benchmark at 100 users: waiting at every size lost ~8 % of the replies per second; waiting
/// only below this kept the fewer commits at low load and gained ~5 % at full load).
const STEP_WAIT_BELOW: usize = 16;

/// Batch numbers, unique across the writers, that early dispatches and their steps name.
static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What became of this writer's recent batches, so that a step naming one is refused if its
/// inbox row was rolled back. Steps come within moments of their batch; one naming a batch
/// older than [`BatchLog::RETAIN`] (whose fate is no longer kept) is refused too, and its
/// conversation simply replays from the store.
#[derive(Default)]
struct BatchLog {
    ended: std::collections::VecDeque<(u64, std::time::Instant)>,
    failed: std::collections::HashSet<u64>,
    /// Every batch up to this one ended more than `RETAIN` ago.
    horizon: u64,
}

impl BatchLog {
    const RETAIN: std::time::Duration = std::time::Duration::from_secs(60);

    fn ended(&mut self, batch: u64, failed: bool) {
        let now = std::time::Instant::now();
        if failed {
            self.failed.insert(batch);
        }
        self.ended.push_back((batch, now));
        while let Some(&(old, at)) = self.ended.front() {
            if now.duration_since(at) < Self::RETAIN {
                break;
            }
            self.ended.pop_front();
            self.failed.remove(&old);
            self.horizon = old;
        }
    }

    /// Whether `op` is a step of a failed (or forgotten) batch; if so it is answered here.
    fn refuse(&self, op: WriteOp) -> Option<WriteOp> {
        match op {
            WriteOp::Step { commit, reply }
                if commit
                    .batch
                    .is_some_and(|b| b <= self.horizon || self.failed.contains(&b)) =>
            {
                let _ = reply.send(Err(StoreError::Unavailable(
                    "the inbox row this step applied was not committed".into(),
                )));
                None
            }
            op => Some(op),
        }
    }
}

fn run(
    mut conn: WriterConn,
    mut rx: mpsc::Receiver<WriteOp>,
    dispatcher: Arc<OnceLock<Dispatcher>>,
    url: &str,
) {
    // Only for waiting on the queue with a deadline inside a transaction.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "The store writer could not start.");
            return;
        }
    };
    let mut batches = BatchLog::default();
    let mut batch = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        crate::metrics::give_back_if_asked();
        // Everything that queued while the last transaction committed goes into this one:
        // the batch grows with the load, and an idle writer commits at once. (Lingering for
        // more was measured: fewer commits, but no less CPU and a lower closed-loop rate.)
        // The one wait is for the steps of the messages this batch hands out (`STEP_WAIT`).
        batch.extend(batches.refuse(first));
        take_queued(&mut rx, &batches, &mut batch);
        if batch.is_empty() {
            continue;
        }
        let id = NEXT_BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = dispatcher.get();
        let mut handed = 0;
        let written = conn.transaction(|tx| {
            let mut results = write_ops(tx, &batch, false)?;
            if let Some(d) = d {
                handed = gather_steps(tx, &rt, &mut rx, &batches, d, id, &mut batch, &mut results)?;
            }
            Ok(results)
        });
        let written = faults::acknowledge(url, &batch, written);
        let ops = std::mem::take(&mut batch);
        let m = metrics();
        m.commit_batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.commit_batch_hist.observe(ops.len() as u64);
        match written {
            // Its new messages were handed out while it was open.
            Ok(results) => {
                batches.ended(id, false);
                let joined = ops.iter().filter(
                    |op| matches!(op, WriteOp::Step { commit, .. } if commit.batch == Some(id)),
                );
                m.steps_joined
                    .fetch_add(joined.count() as u64, std::sync::atomic::Ordering::Relaxed);
                finish(ops, results, None)
            }
            Err(e) => {
                if e.is_deadlock() {
                    m.store_deadlocks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                batches.ended(id, true);
                // Handed out, rolled back: dispatched again if a retry below commits them.
                m.inbox_dispatched
                    .fetch_sub(handed as u64, std::sync::atomic::Ordering::Relaxed);
                m.commit_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ops.len() == 1 {
                    tracing::warn!(error = %e, "Store write failed.");
                    fail(ops, &e);
                    continue;
                }
                tracing::warn!(error = %e, ops = ops.len(), "Group commit failed; retrying each operation alone.");
                m.batch_fallbacks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for op in ops {
                    // A step of this batch applied a row that is not in the store.
                    let Some(op) = batches.refuse(op) else {
                        continue;
                    };
                    let one = [op];
                    // The failed batch may have landed all the same (a PostgreSQL COMMIT cut
                    // after the server made it durable): this op's outbox rows may be in the
                    // store already. Nothing was handed to the sender, so they are reclaimed.
                    match faults::acknowledge(
                        url,
                        &one,
                        conn.transaction(|tx| write_ops(tx, &one, true)),
                    ) {
                        Ok(results) => finish(one.into(), results, dispatcher.get()),
                        Err(e) => {
                            if e.is_deadlock() {
                                m.store_deadlocks
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            fail(one.into(), &e)
                        }
                    }
                }
            }
        }
    }
}

/// Add what is already queued to `ops`, up to [`OPS_PER_BATCH`] (steps of failed batches are
/// answered instead).
fn take_queued(rx: &mut mpsc::Receiver<WriteOp>, batches: &BatchLog, ops: &mut Vec<WriteOp>) {
    while ops.len() < OPS_PER_BATCH {
        match rx.try_recv() {
            Ok(op) => ops.extend(batches.refuse(op)),
            Err(_) => break,
        }
    }
}

/// Hand the messages the open batch appended to their conversations now, and take the steps
/// they answer with into the same transaction: wait up to [`STEP_WAIT`] for them, writing
/// whatever else arrives meanwhile too. Returns how many messages were handed out.
#[allow(clippy::too_many_arguments)]
fn gather_steps(
    tx: &mut dyn SyncTx,
    rt: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<WriteOp>,
    batches: &BatchLog,
    dispatcher: &Dispatcher,
    batch_id: u64,
    ops: &mut Vec<WriteOp>,
    results: &mut Vec<OpResult>,
) -> Result<usize, StoreError> {
    use std::collections::HashSet;
    // A writer with a backlog does not wait: what queued behind it is ready to commit now,
    // and the steps it hands out still start before its fsync instead of after.
    let wait = ops.len() < STEP_WAIT_BELOW;
    let deadline = std::time::Instant::now() + STEP_WAIT;
    // The conversations whose step may still come: one whose step is already in this batch is
    // waiting for this commit and cannot step again before it.
    let mut stepped: HashSet<(String, String)> = HashSet::new();
    let mut waiting: HashSet<(String, String)> = HashSet::new();
    let (mut done, mut total) = (0, 0);
    loop {
        let handed = dispatches(&ops[done..], &results[done..], Some(batch_id));
        // Anything else that came while waiting (a model's answer, a send's record) has a
        // caller waiting on this commit with a reply or the next send behind it.
        let mut urgent = false;
        if wait {
            for op in &ops[done..] {
                match op {
                    WriteOp::Step { commit, .. } => {
                        let key = (commit.account.clone(), commit.user_key.clone());
                        waiting.remove(&key);
                        stepped.insert(key);
                        urgent |= done > 0 && commit.batch != Some(batch_id);
                    }
                    WriteOp::Append { .. } => {}
                    _ => urgent |= done > 0,
                }
            }
            for d in &handed {
                let key = (d.account.clone(), d.user_key.clone());
                if !stepped.contains(&key) {
                    waiting.insert(key);
                }
            }
        }
        if !handed.is_empty() {
            total += handed.len();
            dispatcher(handed);
        }
        done = ops.len();
        if !wait || urgent || waiting.is_empty() || ops.len() >= OPS_PER_BATCH {
            return Ok(total);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(total);
        }
        let Ok(Some(op)) = rt.block_on(async { tokio::time::timeout(left, rx.recv()).await })
        else {
            return Ok(total);
        };
        ops.extend(batches.refuse(op));
        take_queued(rx, batches, ops);
        if ops.len() > done {
            let more = write_ops(tx, &ops[done..], false)?;
            results.extend(more);
        }
    }
}

/// Fault injection for tests: a commit that lands but is reported failed, as when a
/// PostgreSQL connection is cut after the server made the COMMIT durable and before its
/// answer arrived. Armed per store URL, so tests running side by side do not see each
/// other's faults; unarmed, it costs one relaxed load per commit.
pub mod faults {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use crate::store::StoreError;

    static ARMED: AtomicBool = AtomicBool::new(false);
    static LOST: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

    /// The store a URL names: the options after `?` (which the store may add) aside.
    fn base(url: &str) -> &str {
        url.split('?').next().unwrap_or(url)
    }

    /// The next `n` commits of the writer on `url` that hold a conversation's step land and
    /// are reported failed.
    pub fn lose_commit_acks(url: &str, n: usize) {
        let url = base(url);
        let mut lost = LOST.lock().unwrap_or_else(|e| e.into_inner());
        lost.retain(|(u, _)| u != url);
        if n > 0 {
            lost.push((url.to_string(), n));
        }
        ARMED.store(!lost.is_empty(), Ordering::Relaxed);
    }

    /// `result` of a commit on `url`, or the lost acknowledgement if one is armed.
    pub(super) fn acknowledge<T>(
        url: &str,
        ops: &[super::WriteOp],
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !ARMED.load(Ordering::Relaxed)
            || result.is_err()
            || !ops
                .iter()
                .any(|op| matches!(op, super::WriteOp::Step { .. }))
        {
            return result;
        }
        let url = base(url);
        let mut lost = LOST.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = lost.iter().position(|(u, _)| u == url) else {
            return result;
        };
        lost[i].1 -= 1;
        if lost[i].1 == 0 {
            lost.remove(i);
        }
        ARMED.store(!lost.is_empty(), Ordering::Relaxed);
        Err(StoreError::Unavailable(
            "connection lost during COMMIT (injected; the commit landed)".into(),
        ))
    }
}

enum OpResult {
    Append(Vec<Option<i64>>),
    Unit,
    Step(Vec<OutboxRecord>),
}

fn clone_err(e: &StoreError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn fail(ops: Vec<WriteOp>, e: &StoreError) {
    for op in ops {
        match op {
            WriteOp::Append { reply, .. } => {
                let _ = reply.send(Err(clone_err(e)));
            }
            WriteOp::DeadLetter { reply, .. } => {
                let _ = reply.send(Err(clone_err(e)));
            }
            WriteOp::Step { reply, .. } => {
                let _ = reply.send(Err(clone_err(e)));
            }
            WriteOp::Outbox { reply, .. } | WriteOp::Gate { reply, .. } => {
                let _ = reply.send(Err(clone_err(e)));
            }
        }
    }
}

/// The new messages among `ops` that go to their conversations, in sequence order.
fn dispatches(ops: &[WriteOp], results: &[OpResult], batch: Option<u64>) -> Vec<InboxDispatch> {
    let mut out = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        if let (WriteOp::Append { rows, .. }, OpResult::Append(seqs)) = (op, result) {
            for (row, seq) in rows.iter().zip(seqs) {
                if let (Some(seq), Some(msg), Some(user)) = (seq, &row.dispatch, &row.user_key) {
                    if row.state == "pending" {
                        out.push(InboxDispatch {
                            seq: *seq,
                            account: row.account.clone(),
                            user_key: user.clone(),
                            message: msg.clone(),
                            batch,
                            arrived: row.arrived,
                        });
                    }
                }
            }
        }
    }
    if !out.is_empty() {
        out.sort_by_key(|d| d.seq);
        metrics()
            .inbox_dispatched
            .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    out
}

/// Answer every operation of a committed batch; hand its new messages to `dispatcher` unless
/// they were handed out before the commit.
fn finish(ops: Vec<WriteOp>, results: Vec<OpResult>, dispatcher: Option<&Dispatcher>) {
    if let Some(d) = dispatcher {
        let handed = dispatches(&ops, &results, None);
        if !handed.is_empty() {
            d(handed);
        }
    }
    for (op, result) in ops.into_iter().zip(results) {
        match (op, result) {
            (WriteOp::Append { reply, .. }, OpResult::Append(seqs)) => {
                let _ = reply.send(Ok(seqs));
            }
            (WriteOp::Step { reply, .. }, OpResult::Step(records)) => {
                let _ = reply.send(Ok(records));
            }
            (WriteOp::DeadLetter { reply, .. }, _)
            | (WriteOp::Outbox { reply, .. }, _)
            | (WriteOp::Gate { reply, .. }, _) => {
                let _ = reply.send(Ok(()));
            }
            (WriteOp::Append { reply, .. }, _) => {
                let _ = reply.send(Err(StoreError::Corrupt("result mismatch".into())));
            }
            (WriteOp::Step { reply, .. }, _) => {
                let _ = reply.send(Err(StoreError::Corrupt("result mismatch".into())));
            }
        }
    }
}

/// Run a fixed statement (written with `$N` parameters).
fn exec(tx: &mut dyn SyncTx, sql: &'static str, vals: Vec<Val>) -> Result<u64, StoreError> {
    let text = kept_text(tx, (sql.as_ptr() as usize, sql.len()), || sql.to_string());
    tx.exec(&text, vals)
}

/// The text of a multi-row statement for `rows` rows, `build(rows)`, as the connection runs it.
/// `build` is a plain function (a closure that captures nothing), so one function always makes
/// one text, and the text is kept per function and row count.
fn shaped(tx: &dyn SyncTx, rows: usize, build: fn(usize) -> String) -> Rc<str> {
    kept_text(tx, (build as usize, rows), || build(rows))
}

thread_local! {
    /// Statement texts in the writer's connection's form, made once per writer thread: a batch
    /// looks a text up instead of formatting kilobytes of SQL and rewriting its parameters for
    /// every statement (~9 % of the writer thread in the shop benchmark).
    static TEXTS: RefCell<HashMap<(Dialect, usize, usize), Rc<str>>> = RefCell::new(HashMap::new());
}

fn kept_text(tx: &dyn SyncTx, key: (usize, usize), build: impl FnOnce() -> String) -> Rc<str> {
    let key = (tx.dialect(), key.0, key.1);
    TEXTS.with(|texts| {
        if let Some(text) = texts.borrow().get(&key) {
            return text.clone();
        }
        let text: Rc<str> = for_connection(key.0, &build()).into();
        texts.borrow_mut().insert(key, text.clone());
        text
    })
}

fn text_col(row: &Values, i: usize) -> &str {
    text(row, i).unwrap_or("")
}

/// Write `ops` in the open transaction `tx`, with multi-row statements per kind; returns one
/// result per operation.
/// Write `ops` in `tx`. `reclaim`: they are written again after their batch reported a
/// failure (see [`commit_steps`]).
fn write_ops(
    tx: &mut dyn SyncTx,
    ops: &[WriteOp],
    reclaim: bool,
) -> Result<Vec<OpResult>, StoreError> {
    let (inserted, outbox_ids) = (|| {
        // 1. Inbox appends, all ops together.
        let appends: Vec<&Vec<NewInboxRow>> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Append { rows, .. } => Some(rows),
                _ => None,
            })
            .collect();
        let inserted = append_rows(tx, &appends)?;

        // 2. Steps.
        let steps: Vec<&StepCommit> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Step { commit, .. } => Some(commit.as_ref()),
                _ => None,
            })
            .collect();
        let outbox_ids = commit_steps(tx, &steps, reclaim)?;

        // 3. Dead letters (rare, one statement each) and outbox updates (batched).
        let mut updates = Vec::new();
        for op in ops {
            match op {
                WriteOp::DeadLetter { dl, inbox_dead, .. } => {
                    insert_dead_letter(tx, dl)?;
                    if let (TIMER_DEAD_LETTER, Some(timer)) = (dl.kind, dl.ref_id) {
                        exec(
                            tx,
                            "UPDATE timers SET state = 'dead' WHERE id = $1 AND state = 'pending'",
                            vec![Val::I(timer)],
                        )?;
                    }
                    if let Some(dead) = inbox_dead {
                        let sql = "UPDATE inbox SET state = 'dead', prev_seq = $1 WHERE seq = $2";
                        exec(tx, sql, vec![Val::I(dead.prev_seq), Val::I(dead.seq)])?;
                        // The history's head moves past it as a step's would.
                        let sql = "UPDATE conversations SET last_applied_seq = $1 \
                                   WHERE account = $2 AND user_key = $3 AND last_applied_seq < $1";
                        exec(
                            tx,
                            sql,
                            vec![
                                Val::I(dead.seq),
                                Val::OptS(dl.account.clone()),
                                Val::OptS(dl.user_key.clone()),
                            ],
                        )?;
                    }
                }
                WriteOp::Outbox { update, .. } => updates.push(update),
                _ => {}
            }
        }
        apply_outbox_updates(tx, &updates)?;
        // 4. SendGate state.
        let gate: Vec<&GateWrite> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Gate { write, .. } => Some(write),
                _ => None,
            })
            .collect();
        apply_gate_writes(tx, &gate)?;
        Ok::<_, StoreError>((inserted, outbox_ids))
    })()?;
    let mut results: Vec<OpResult> = Vec::with_capacity(ops.len());

    for op in ops {
        results.push(match op {
            WriteOp::Append { rows, .. } => OpResult::Append(
                rows.iter()
                    .map(|r| {
                        inserted
                            .get(&(r.account.as_str(), r.dedup_key.as_str()))
                            .copied()
                    })
                    .collect(),
            ),
            WriteOp::Step { commit, .. } => OpResult::Step(
                commit
                    .outbox
                    .iter()
                    .filter_map(|o| {
                        outbox_ids.get(o.idem_key.as_str()).map(|id| OutboxRecord {
                            id: *id,
                            account: commit.account.clone(),
                            user_key: commit.user_key.clone(),
                            kind: o.kind.to_string(),
                            message_json: o.message_json.clone(),
                            reply_to: o.reply_to.clone(),
                            state: "pending".into(),
                            updated_at: commit.now,
                            class: o.class.to_string(),
                            turn: None,
                            campaign: crate::domain::campaign_of_idem_key(&o.idem_key),
                        })
                    })
                    .collect(),
            ),
            _ => OpResult::Unit,
        });
    }
    Ok(results)
}

/// Insert inbox rows; returns (account, dedup_key) → seq for the rows this call inserted.
/// A key repeated within the batch is inserted once, and only its first row gets the seq.
fn append_rows<'a>(
    tx: &mut dyn SyncTx,
    appends: &[&'a Vec<NewInboxRow>],
) -> Result<HashMap<(&'a str, &'a str), i64>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&NewInboxRow> = appends
        .iter()
        .flat_map(|rows| rows.iter())
        .filter(|r| seen.insert((r.account.as_str(), r.dedup_key.as_str())))
        .collect();
    let mut inserted: HashMap<(&str, &str), i64> = HashMap::with_capacity(unique.len());
    let mut fresh_status: Vec<&NewInboxRow> = Vec::new();
    for chunk in std_chunks(&unique) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO inbox (account, user_key, kind, dedup_key, wamid, status, payload, received_at, state) VALUES {} \
             ON CONFLICT (account, dedup_key) DO NOTHING RETURNING seq, account, dedup_key",
            values_list(n, 9, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 9);
        for r in chunk {
            vals.push(Val::S(r.account.clone()));
            vals.push(Val::OptS(r.user_key.clone()));
            vals.push(Val::S(r.kind.to_string()));
            vals.push(Val::S(r.dedup_key.clone()));
            vals.push(Val::OptS(r.wamid.clone()));
            vals.push(Val::OptS(r.status.as_ref().map(|s| s.status.clone())));
            vals.push(Val::S(r.payload.clone()));
            vals.push(Val::I(r.received_at));
            vals.push(Val::S(r.state.to_string()));
        }
        let rows = tx.query(&text, vals, &[Col::Int, Col::Text, Col::Text])?;
        let mut by_key: HashMap<(&str, &str), i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            by_key.insert((text_col(row, 1), text_col(row, 2)), int(row, 0));
        }
        for r in chunk {
            if let Some(seq) = by_key.get(&(r.account.as_str(), r.dedup_key.as_str())) {
                inserted.insert((r.account.as_str(), r.dedup_key.as_str()), *seq);
                if r.status.is_some() {
                    fresh_status.push(r);
                }
            }
        }
    }
    for r in fresh_status {
        if let (Some(s), Some(wamid)) = (&r.status, &r.wamid) {
            apply_status(tx, &r.account, wamid, s)?;
        }
    }
    let m = metrics();
    for r in &unique {
        let new = inserted.contains_key(&(r.account.as_str(), r.dedup_key.as_str()));
        m.inbox_events.inc(match (r.kind, new) {
            ("message", true) => "kind=\"message\",new=\"true\"",
            ("message", false) => "kind=\"message\",new=\"false\"",
            ("status", true) => "kind=\"status\",new=\"true\"",
            ("status", false) => "kind=\"status\",new=\"false\"",
            (_, true) => "kind=\"other\",new=\"true\"",
            (_, false) => "kind=\"other\",new=\"false\"",
        });
    }
    Ok(inserted)
}

/// Move an outbound message forward (never back) on a status webhook. Matches by our outbox
/// id (echoed callback data) or by wamid. A status for a send we have not recorded yet is
/// kept in the inbox and applied when the wamid is recorded.
fn apply_status(
    tx: &mut dyn SyncTx,
    account: &str,
    wamid: &str,
    s: &StatusApply,
) -> Result<(), StoreError> {
    if s.rank == 0 {
        return Ok(());
    }
    let moved = exec(tx,
        "UPDATE outbox SET status = $1, status_rank = $2, status_at = $3, wamid = COALESCE(wamid, $4), \
         state = CASE WHEN state IN ('pending', 'sending') THEN 'sent' ELSE state END, \
         error_code = COALESCE($5, error_code), error_detail = COALESCE($6, error_detail), updated_at = $3 \
         WHERE account = $7 AND (wamid = $4 OR id = $8) AND status_rank < $2",
        vec![
            Val::S(s.status.clone()),
            Val::I(s.rank),
            Val::I(s.at_ms),
            Val::S(wamid.to_string()),
            Val::OptI(s.error_code),
            Val::OptS(s.error_detail.clone()),
            Val::S(account.to_string()),
            Val::I(s.outbox_id.unwrap_or(-1)),
        ],
    )
    ?;
    if moved > 0 && s.status == "failed" {
        // Meta took the message and then could not deliver it (131026 unreachable, 131049
        // ecosystem, 131047 window…): kept for a human like a send the API refused.
        let reason = s.failure();
        exec(
            tx,
            "INSERT INTO dead_letters (kind, account, user_key, ref_id, reason, raw, created_at) \
             SELECT 'delivery_failed', account, user_key, id, $1, NULL, $2 FROM outbox \
             WHERE account = $3 AND (wamid = $4 OR id = $5) AND status = 'failed'",
            vec![
                Val::S(reason),
                Val::I(super::now_ms()),
                Val::S(account.to_string()),
                Val::S(wamid.to_string()),
                Val::I(s.outbox_id.unwrap_or(-1)),
            ],
        )?;
        metrics().dead_letters.inc("kind=\"delivery_failed\"");
    }
    Ok(())
}

/// On a retry after an in-doubt commit, the step's own rows come back (see [`commit_steps`]).
const RECLAIM: &str = "DO UPDATE SET updated_at = excluded.updated_at \
     WHERE outbox.created_at = excluded.created_at AND outbox.state = 'pending'";

fn outbox_insert(rows: usize, conflict: &str) -> String {
    format!(
        "INSERT INTO outbox (account, user_key, idem_key, kind, message, reply_to, source_seq, state, created_at, updated_at, class) VALUES {} \
         ON CONFLICT (idem_key) {conflict} RETURNING id, idem_key",
        values_list(rows, 11, 1)
    )
}

/// Write the steps' state and rows; returns the ids of the outbox rows by idem key.
///
/// An outbox row whose key is taken is not written again and not returned (the step ran
/// before and its sends were handed over then), except with `reclaim`: the step is written
/// again after its batch reported a failure, and a row with its key, its `created_at` and
/// still `pending` is this very step's, committed by that batch after all and never handed
/// to the sender; it is returned as if inserted now.
fn commit_steps(
    tx: &mut dyn SyncTx,
    steps: &[&StepCommit],
    reclaim: bool,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut ids = HashMap::new();
    if steps.is_empty() {
        return Ok(ids);
    }
    for chunk in std_chunks(steps) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO conversations (account, user_key, state, last_inbound_at, last_applied_seq, created_at, updated_at) VALUES {} \
             ON CONFLICT (account, user_key) DO UPDATE SET state = excluded.state, last_inbound_at = excluded.last_inbound_at, \
             last_applied_seq = excluded.last_applied_seq, updated_at = excluded.updated_at \
             WHERE conversations.last_applied_seq <= excluded.last_applied_seq",
            values_list(n, 7, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 7);
        for s in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(s.state_json.clone()),
                Val::OptI(s.last_inbound_at),
                Val::I(s.last_applied_seq),
                Val::I(s.now),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }

    let contacts: Vec<(&StepCommit, &ContactUpsert)> = steps
        .iter()
        .filter_map(|s| s.contact.as_ref().map(|c| (*s, c)))
        .collect();
    for chunk in std_chunks(&contacts) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO contacts (account, user_key, wa_id, user_id, profile_name, first_seen_at, last_seen_at, tags, opted_out_at) VALUES {} \
             ON CONFLICT (account, user_key) DO UPDATE SET wa_id = COALESCE(excluded.wa_id, contacts.wa_id), \
             user_id = COALESCE(excluded.user_id, contacts.user_id), \
             profile_name = COALESCE(excluded.profile_name, contacts.profile_name), last_seen_at = excluded.last_seen_at, \
             tags = COALESCE(excluded.tags, contacts.tags), \
             opted_out_at = CASE WHEN excluded.opted_out_at IS NULL THEN contacts.opted_out_at \
             WHEN excluded.opted_out_at = 0 THEN NULL ELSE excluded.opted_out_at END",
            values_list(n, 9, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 9);
        for (s, c) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::OptS(c.wa_id.clone()),
                Val::OptS(c.user_id.clone()),
                Val::OptS(c.profile_name.clone()),
                Val::I(s.now),
                Val::I(s.now),
                Val::OptS(c.tags.clone()),
                // A first row never records an opt-in (0): NULL is the same.
                Val::OptI(c.opted_out_at),
            ]);
        }
        tx.exec(&text, vals)?;
    }

    let done: Vec<(i64, i64)> = steps
        .iter()
        .filter_map(|s| s.inbox_done.map(|seq| (seq, s.prev_seq)))
        .collect();
    for chunk in std_chunks(&done) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
                "UPDATE inbox SET state = 'done', prev_seq = v.column2 \
             FROM (VALUES {}) AS v WHERE inbox.seq = v.column1",
                typed_values_list(n, &["BIGINT", "BIGINT"])
            )
        });
        let vals = chunk
            .iter()
            .flat_map(|(seq, prev)| [Val::I(*seq), Val::I(*prev)])
            .collect();
        tx.exec(&text, vals)?;
    }
    let fired: Vec<i64> = steps.iter().filter_map(|s| s.timer_fired).collect();
    for chunk in std_chunks(&fired) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
                "UPDATE timers SET state = 'fired' WHERE id IN ({})",
                in_list(n, 1)
            )
        });
        tx.exec(&text, chunk.iter().map(|s| Val::I(*s)).collect())?;
    }

    let outbox: Vec<(&StepCommit, &NewOutboxRow)> = steps
        .iter()
        .flat_map(|s| s.outbox.iter().map(move |o| (*s, o)))
        .collect();
    for chunk in std_chunks(&outbox) {
        // Each form its own plain function: a text is kept per function (see `shaped`).
        let build: fn(usize) -> String = if reclaim {
            |n| outbox_insert(n, RECLAIM)
        } else {
            |n| outbox_insert(n, "DO NOTHING")
        };
        let text = shaped(tx, chunk.len(), build);
        let mut vals = Vec::with_capacity(chunk.len() * 11);
        for (s, o) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(o.idem_key.clone()),
                Val::S(o.kind.to_string()),
                Val::S(o.message_json.clone()),
                Val::OptS(o.reply_to.clone()),
                Val::OptI(o.source_seq),
                // Not yet handed to the HTTP client: the sender marks it `sending` (batched
                // with other sends' marks) just before the POST. After a crash a `pending` row
                // is sent at once; only a `sending` one may have reached Meta.
                Val::S("pending".into()),
                Val::I(s.now),
                Val::I(s.now),
                Val::S(o.class.to_string()),
            ]);
        }
        for row in tx.query(&text, vals, &[Col::Int, Col::Text])? {
            ids.insert(text_col(&row, 1).to_string(), int(&row, 0));
        }
    }

    let timers: Vec<(&StepCommit, &NewTimer)> = steps
        .iter()
        .flat_map(|s| s.timers.iter().map(move |t| (*s, t)))
        .collect();
    for chunk in std_chunks(&timers) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO timers (account, user_key, idem_key, name, payload, due_at, state, created_at) VALUES {} \
             ON CONFLICT (idem_key) DO NOTHING",
            values_list(n, 8, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 8);
        for (s, t) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(t.idem_key.clone()),
                Val::S(t.name.clone()),
                Val::S(t.payload.clone()),
                Val::I(t.due_at),
                Val::S("pending".into()),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    let bots: Vec<(&StepCommit, &crate::domain::BotSummary)> = steps
        .iter()
        .flat_map(|s| s.bot_records.iter().map(move |r| (*s, r)))
        .collect();
    for chunk in std_chunks(&bots) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost, cost_micros, response_ms, updated_at) VALUES {} \
             ON CONFLICT (account, user_key, bot, started_at) DO UPDATE SET status = excluded.status, turns = excluded.turns, \
             tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, cost = excluded.cost, cost_micros = excluded.cost_micros, \
             response_ms = excluded.response_ms, updated_at = excluded.updated_at",
            values_list(n, 12, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 12);
        for (s, r) in chunk {
            let micros = rust_decimal::prelude::ToPrimitive::to_i64(
                &(r.cost * rust_decimal::Decimal::from(1_000_000)).round(),
            )
            .unwrap_or(i64::MAX);
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.bot.clone()),
                Val::I(r.started_at),
                Val::S(r.status.as_str().to_string()),
                Val::I(i64::from(r.turns)),
                Val::I(r.tokens_in as i64),
                Val::I(r.tokens_out as i64),
                Val::S(r.cost.normalize().to_string()),
                Val::I(micros),
                Val::I(r.response_ms as i64),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    let records: Vec<(&StepCommit, &crate::domain::FlowRecord)> = steps
        .iter()
        .flat_map(|s| s.flow_records.iter().map(move |r| (*s, r)))
        .collect();
    for chunk in std_chunks(&records) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO flow_executions (account, user_key, flow_id, started_at, version, status, node, steps, updated_at, ended_at) VALUES {} \
             ON CONFLICT (account, user_key, flow_id, started_at) DO UPDATE SET status = excluded.status, node = excluded.node, \
             steps = flow_executions.steps + 1, updated_at = excluded.updated_at, ended_at = excluded.ended_at",
            values_list(n, 10, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 10);
        for (s, r) in chunk {
            let ended = matches!(r.status, "completed" | "failed").then_some(s.now);
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::S(r.version.clone()),
                Val::S(r.status.to_string()),
                Val::OptS(r.node.clone()),
                Val::I(1),
                Val::I(s.now),
                Val::OptI(ended),
            ]);
        }
        tx.exec(&text, vals)?;
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO flow_execution_steps (account, user_key, flow_id, started_at, node, status, at) VALUES {}",
            values_list(n, 7, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 7);
        for (s, r) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::OptS(r.node.clone()),
                Val::S(r.status.to_string()),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    Ok(ids)
}

fn insert_dead_letter(tx: &mut dyn SyncTx, dl: &NewDeadLetter) -> Result<(), StoreError> {
    exec(tx,
        "INSERT INTO dead_letters (kind, account, user_key, ref_id, reason, raw, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            Val::S(dl.kind.to_string()),
            Val::OptS(dl.account.clone()),
            Val::OptS(dl.user_key.clone()),
            Val::OptI(dl.ref_id),
            Val::S(dl.reason.clone()),
            Val::Bytes(dl.raw.clone()),
            Val::I(super::now_ms()),
        ],
    )
    ?;
    metrics().dead_letters.inc(&format!("kind=\"{}\"", dl.kind));
    Ok(())
}

/// The frequent updates (sending, sent) as a few multi-row statements; the rare ones alone.
fn apply_outbox_updates(tx: &mut dyn SyncTx, updates: &[&OutboxUpdate]) -> Result<(), StoreError> {
    let mut sending: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut sending_at = 0;
    let mut sent_plain: Vec<i64> = Vec::new();
    let mut sent_plain_at = 0;
    let mut sent: Vec<(i64, &str, &str, i64)> = Vec::new();
    for u in updates {
        match u {
            OutboxUpdate::Sending {
                id, account, at, ..
            } => {
                sending.entry(account.as_str()).or_default().push(*id);
                sending_at = sending_at.max(*at);
            }
            OutboxUpdate::Sent {
                id,
                wamid: None,
                at,
                ..
            } => {
                sent_plain.push(*id);
                sent_plain_at = sent_plain_at.max(*at);
            }
            OutboxUpdate::Sent {
                id,
                account,
                wamid: Some(w),
                at,
                ..
            } => sent.push((*id, account.as_str(), w.as_str(), *at)),
            other => apply_outbox_update(tx, other)?,
        }
    }
    for (account, ids) in &sending {
        for chunk in std_chunks(ids) {
            // By account and id: the open rows' index answers it in one descent per row.
            // (Without the account PostgreSQL may read that partial index whole, with every
            // entry of a row sent since the last vacuum.)
            let text = shaped(tx, chunk.len(), |n| {
                format!(
                    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = $1 \
                 WHERE account = $2 AND state IN ('pending', 'sending') AND id IN ({})",
                    in_list(n, 3)
                )
            });
            let mut vals = vec![Val::I(sending_at), Val::S(account.to_string())];
            vals.extend(chunk.iter().map(|id| Val::I(*id)));
            tx.exec(&text, vals)?;
        }
    }
    for chunk in std_chunks(&sent_plain) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
                "UPDATE outbox SET state = 'sent', updated_at = $1 WHERE id IN ({})",
                in_list(n, 2)
            )
        });
        let mut vals = vec![Val::I(sent_plain_at)];
        vals.extend(chunk.iter().map(|id| Val::I(*id)));
        tx.exec(&text, vals)?;
    }
    // Statuses that arrived before we recorded the wamid: the UPDATE itself says which rows
    // have one (one probe of `inbox_status_wamid` per row, no extra round trip); those few
    // are read and applied below.
    let mut early: Vec<(i64, &str, &str, i64)> = Vec::new();
    for chunk in std_chunks(&sent) {
        let mut vals = Vec::with_capacity(chunk.len() * 3);
        for (id, _, wamid, at) in chunk {
            vals.extend([Val::I(*id), Val::S(wamid.to_string()), Val::I(*at)]);
        }
        let text = shaped(tx, chunk.len(), |n| {
            let rows = typed_values_list(n, &["BIGINT", "TEXT", "BIGINT"]);
            format!(
                "UPDATE outbox SET state = 'sent', wamid = v.column2, \
             status = CASE WHEN outbox.status_rank = 0 THEN 'sent' ELSE outbox.status END, \
             status_rank = CASE WHEN outbox.status_rank = 0 THEN 1 ELSE outbox.status_rank END, \
             status_at = COALESCE(outbox.status_at, v.column3), updated_at = v.column3 \
             FROM (VALUES {rows}) AS v WHERE outbox.id = v.column1 \
             RETURNING outbox.id, CAST(CASE WHEN EXISTS (SELECT 1 FROM inbox \
             WHERE inbox.kind = 'status' AND inbox.account = outbox.account \
             AND inbox.wamid = outbox.wamid) THEN 1 ELSE 0 END AS BIGINT)"
            )
        });
        let found = tx.query(&text, vals, &[Col::Int, Col::Int])?;
        for row in found.iter().filter(|r| super::exec::int(r, 1) == 1) {
            let id = super::exec::int(row, 0);
            early.extend(chunk.iter().filter(|(i, ..)| *i == id));
        }
    }
    let mut by_account: HashMap<&str, Vec<(i64, &str, i64)>> = HashMap::new();
    for (id, account, wamid, at) in &early {
        by_account
            .entry(account)
            .or_default()
            .push((*id, wamid, *at));
    }
    for (account, rows) in by_account {
        for chunk in std_chunks(&rows) {
            let text = shaped(tx, chunk.len(), |n| {
                format!(
                "SELECT wamid, status FROM inbox WHERE kind = 'status' AND account = $1 AND wamid IN ({})",
                in_list(n, 2)
            )
            });
            let mut vals = vec![Val::S(account.to_string())];
            vals.extend(chunk.iter().map(|(_, w, _)| Val::S(w.to_string())));
            let found = tx.query(&text, vals, &[Col::Text, Col::OptText])?;
            let mut best: HashMap<String, DeliveryStatus> = HashMap::new();
            for r in &found {
                let wamid = text_col(r, 0).to_string();
                let status = DeliveryStatus::parse(super::exec::text(r, 1).unwrap_or(""));
                match best.get(&wamid) {
                    Some(b) if b.rank() >= status.rank() => {}
                    _ => {
                        best.insert(wamid, status);
                    }
                }
            }
            for (id, wamid, at) in chunk {
                if let Some(status) = best.get(*wamid).filter(|s| s.rank() > 1) {
                    let apply = StatusApply {
                        status: status.as_str().to_string(),
                        rank: status.rank(),
                        at_ms: *at,
                        outbox_id: Some(*id),
                        error_code: None,
                        error_detail: None,
                    };
                    apply_status(tx, account, wamid, &apply)?;
                }
            }
        }
    }
    Ok(())
}

fn apply_outbox_update(tx: &mut dyn SyncTx, update: &OutboxUpdate) -> Result<(), StoreError> {
    match update {
        OutboxUpdate::Unsent { account, rows } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            for chunk in std_chunks(&ids) {
                let text = shaped(tx, chunk.len(), |n| {
                    format!(
                    "UPDATE outbox SET state = 'pending' WHERE account = $1 AND state = 'sending' AND id IN ({})",
                    in_list(n, 2)
                )
                });
                let mut vals = vec![Val::S(account.clone())];
                vals.extend(chunk.iter().map(|id| Val::I(*id)));
                tx.exec(&text, vals)?;
            }
        }
        OutboxUpdate::Cancelled { account, rows, at } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            for chunk in std_chunks(&ids) {
                let text = shaped(tx, chunk.len(), |n| {
                    format!(
                        "UPDATE outbox SET state = 'cancelled', updated_at = $1 \
                     WHERE account = $2 AND state IN ('pending', 'sending') AND id IN ({})",
                        in_list(n, 3)
                    )
                });
                let mut vals = vec![Val::I(*at), Val::S(account.clone())];
                vals.extend(chunk.iter().map(|id| Val::I(*id)));
                tx.exec(&text, vals)?;
            }
        }
        // Batched by `apply_outbox_updates`, which sends only the other kinds here.
        OutboxUpdate::Sent { .. } | OutboxUpdate::Sending { .. } => {}
        OutboxUpdate::Retrying {
            id,
            attempts,
            code,
            detail,
            at,
            ..
        } => {
            exec(tx,
                "UPDATE outbox SET attempts = $1, error_code = $2, error_detail = $3, updated_at = $4 WHERE id = $5",
                vec![Val::I(*attempts), Val::OptI(*code), Val::S(detail.clone()), Val::I(*at), Val::I(*id)],
            )
            ?;
        }
        OutboxUpdate::Failed {
            id,
            account,
            user_key,
            attempts,
            code,
            detail,
            at,
        } => {
            exec(tx,
                "UPDATE outbox SET state = 'failed', attempts = $1, error_code = $2, error_detail = $3, updated_at = $4 WHERE id = $5",
                vec![Val::I(*attempts), Val::OptI(*code), Val::S(detail.clone()), Val::I(*at), Val::I(*id)],
            )
            ?;
            insert_dead_letter(
                tx,
                &NewDeadLetter {
                    kind: "outbox_send",
                    account: Some(account.clone()),
                    user_key: Some(user_key.clone()),
                    ref_id: Some(*id),
                    reason: match code {
                        Some(c) => format!("Graph API error {c}: {detail}"),
                        None => detail.clone(),
                    },
                    raw: None,
                },
            )?;
        }
    }
    Ok(())
}

/// SendGate writes: reaches (the frequent kind) as multi-row upserts, the rest one by one.
fn apply_gate_writes(tx: &mut dyn SyncTx, writes: &[&GateWrite]) -> Result<(), StoreError> {
    // One row per (waba, user): PostgreSQL refuses to upsert the same key twice in a statement.
    let mut reaches: HashMap<(&str, &str), (&str, i64)> = HashMap::new();
    for w in writes {
        match w {
            GateWrite::TierReach {
                waba,
                user_key,
                account,
                at,
            } => {
                let e = reaches
                    .entry((waba.as_str(), user_key.as_str()))
                    .or_insert((account.as_str(), *at));
                if *at >= e.1 {
                    *e = (account.as_str(), *at);
                }
            }
            GateWrite::TierRelease {
                waba,
                user_key,
                at,
                previous,
            } => {
                if reaches
                    .get(&(waba.as_str(), user_key.as_str()))
                    .is_some_and(|r| r.1 == *at)
                {
                    reaches.remove(&(waba.as_str(), user_key.as_str()));
                }
                match previous {
                    None => exec(
                        tx,
                        "DELETE FROM tier_reach WHERE waba = $1 AND user_key = $2 AND reached_at = $3",
                        vec![waba.as_str().into(), user_key.as_str().into(), Val::I(*at)],
                    )?,
                    Some(prev) => exec(
                        tx,
                        "UPDATE tier_reach SET reached_at = $1 WHERE waba = $2 AND user_key = $3 AND reached_at = $4",
                        vec![
                            Val::I(*prev),
                            waba.as_str().into(),
                            user_key.as_str().into(),
                            Val::I(*at),
                        ],
                    )?,
                };
            }
            GateWrite::Daily {
                account,
                day,
                reserved,
                used,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO send_daily_usage (account, day, reserved, used, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (account, day) DO UPDATE SET reserved = excluded.reserved, used = excluded.used, \
                     updated_at = excluded.updated_at",
                    vec![
                        account.as_str().into(),
                        day.as_str().into(),
                        Val::I(*reserved),
                        Val::I(*used),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Control {
                account,
                state_json,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO account_gate (account, state, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (account) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    vec![
                        account.as_str().into(),
                        state_json.as_str().into(),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Unreachable {
                account,
                user_key,
                code,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO unreachable_contacts (account, user_key, code, at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account, user_key) DO UPDATE SET code = excluded.code, at = excluded.at",
                    vec![
                        account.as_str().into(),
                        user_key.as_str().into(),
                        Val::OptI(*code),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Template {
                waba,
                name,
                language,
                status,
                reason,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO template_states (waba, name, language, status, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (waba, name, language) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                     updated_at = excluded.updated_at",
                    vec![
                        waba.as_str().into(),
                        name.as_str().into(),
                        language.as_str().into(),
                        status.as_str().into(),
                        Val::OptS(reason.clone()),
                        Val::I(*at),
                    ],
                )?;
            }
        }
    }
    let reaches: Vec<(&str, &str, &str, i64)> = reaches
        .into_iter()
        .map(|((waba, user), (account, at))| (waba, user, account, at))
        .collect();
    for chunk in std_chunks(&reaches) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO tier_reach (waba, user_key, account, reached_at) VALUES {} \
             ON CONFLICT (waba, user_key) DO UPDATE SET account = excluded.account, reached_at = excluded.reached_at",
            values_list(n, 4, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 4);
        for (waba, user, account, at) in chunk {
            vals.extend([
                Val::S(waba.to_string()),
                Val::S(user.to_string()),
                Val::S(account.to_string()),
                Val::I(*at),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert_t(rows: usize) -> String {
        format!("INSERT INTO t (a) VALUES {}", values_list(rows, 1, 1))
    }

    #[test]
    fn a_statement_text_is_made_once_per_function_and_row_count() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db", dir.path().display());
        let mut conn = WriterConn::open(&url, Dialect::Sqlite).unwrap();
        conn.transaction(|tx| {
            let two = shaped(tx, 2, insert_t);
            assert_eq!(&*two, "INSERT OR FAIL INTO t (a) VALUES (?),(?)");
            assert!(
                Rc::ptr_eq(&two, &shaped(tx, 2, insert_t)),
                "kept, not made again"
            );
            assert_eq!(
                &*shaped(tx, 1, insert_t),
                "INSERT OR FAIL INTO t (a) VALUES (?)"
            );
            exec(tx, "CREATE TABLE t (a INTEGER PRIMARY KEY)", vec![])?;
            tx.exec(&two, vec![Val::I(1), Val::I(2)])
        })
        .unwrap();
    }

    fn step(user: &str, now: i64) -> StepCommit {
        StepCommit {
            account: "acct".into(),
            user_key: user.into(),
            state_json: "{}".into(),
            last_inbound_at: None,
            last_applied_seq: 0,
            inbox_done: None,
            prev_seq: 0,
            timer_fired: None,
            contact: None,
            outbox: vec![NewOutboxRow {
                idem_key: format!("acct:{user}:out1:0"),
                kind: "message",
                message_json: "{}".into(),
                reply_to: None,
                source_seq: None,
                class: "service",
            }],
            timers: Vec::new(),
            flow_records: Vec::new(),
            bot_records: Vec::new(),
            now,
            batch: None,
        }
    }

    /// Steps that shared a batch reported failed are written again one by one; if that batch
    /// landed, each one's outbox row is already there. It is still returned (nothing was handed
    /// to the sender), and a row from an earlier time with the same key is not.
    #[test]
    fn steps_of_a_batch_that_landed_but_was_reported_failed_get_their_outbox_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db", dir.path().display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(async {
            let store = Store::connect(&url, 1).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
        // "old" ran before (another process): its row is not this step's.
        let run_ops = |ops: Vec<StepCommit>, lose: usize| {
            let (tx, rx) = mpsc::channel(16);
            let mut replies = Vec::new();
            for commit in ops {
                let (reply, answer) = oneshot::channel();
                tx.try_send(WriteOp::Step {
                    commit: Box::new(commit),
                    reply,
                })
                .unwrap();
                replies.push(answer);
            }
            drop(tx);
            // Queued before the writer starts: one batch.
            faults::lose_commit_acks(&url, lose);
            let conn = WriterConn::open(store.url(), store.dialect()).unwrap();
            let u = store.url().to_string();
            std::thread::spawn(move || run(conn, rx, Arc::new(OnceLock::new()), &u))
                .join()
                .unwrap();
            replies
                .into_iter()
                .map(|r| r.blocking_recv().unwrap().unwrap())
                .collect::<Vec<_>>()
        };
        let first = run_ops(vec![step("old", 1_000)], 0);
        assert_eq!(first[0].len(), 1);

        let results = run_ops(
            vec![step("a", 2_000), step("b", 2_000), step("old", 2_000)],
            1,
        );
        let ids: Vec<usize> = results.iter().map(Vec::len).collect();
        assert_eq!(ids, [1, 1, 0], "a and b reclaimed; old's row is not theirs");
        let rows: i64 = rt.block_on(async {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
                .fetch_one(store.pool())
                .await
                .unwrap()
        });
        assert_eq!(rows, 3, "each key written once");
    }
}
