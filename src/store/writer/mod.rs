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
//! that conversation, may update a row another writer owns. `parley_store_deadlocks_total`
//! and `parley_store_batch_fallbacks_total` count what still happens.
//!
//! # Where its parts are
//! - `mod.rs`: the handle callers use ([`WriterHandle`]) and the partition of rows to writers;
//! - `batch.rs`: the batch protocol (gather, commit, hand over, fall back op by op);
//! - `write.rs`: one batch's ops, grouped by kind, handed to the tables' writes;
//! - `steps.rs`: a conversation step's rows across its tables; `faults.rs`: fault injection
//!   for the tests.
//!
//! The rows, the reads and the batched writes of each table are in its own module beside
//! this one (`store/{inbox,conversations,outbox,timers,gate,dead_letters,flows}.rs`), each
//! multi-row write through `exec::exec_rows`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::exec::{exec, SyncTx, WriterConn};
use super::sql::Val;
use super::*;
use crate::domain::{AccountId, ConversationKey, UserKey};
use crate::metrics::metrics;

/// Largest number of operations in one transaction.
const OPS_PER_BATCH: usize = 2048;

mod batch;
// Fault injection exists only in test builds: the unit tests, and the integration tests,
// whose dev-dependency `parley-testkit` turns the `faults` feature on. `cargo build` of the
// daemon leaves it out (the shim below answers every commit as it went).
#[cfg(any(test, feature = "faults"))]
pub mod faults;
#[cfg(not(any(test, feature = "faults")))]
mod faults {
    pub(super) fn acknowledge<T>(
        _url: &str,
        _ops: &[super::WriteOp],
        result: Result<T, super::StoreError>,
    ) -> Result<T, super::StoreError> {
        result
    }
}
mod steps;
mod write;

use batch::*;
use steps::*;
use write::*;

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
    /// The outbound webhook sender's writes (SQLite only: see [`WriterHandle::hook_writes`]).
    HookWrites {
        statements: Vec<(std::borrow::Cow<'static, str>, Vec<Val>)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
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

    /// The webhook sender's writes (its leases, its attempts' records) in the next group
    /// commit, in one transaction. For SQLite, whose one write lock the writer holds batch
    /// after batch under load: a sender writing through the pool waited behind every batch,
    /// and deliveries crawled while conversations were busy. PostgreSQL writes them through
    /// the pool ([`Store::record_hook_attempts`]): its rows lock one by one, and these rows
    /// are no conversation writer's.
    pub async fn hook_writes(
        &self,
        statements: Vec<(std::borrow::Cow<'static, str>, Vec<Val>)>,
    ) -> Result<(), StoreError> {
        if statements.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::HookWrites { statements, reply };
        Self::submit_to(&self.writers[0], op, rx).await
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
    pub async fn barrier(&self, key: &ConversationKey) -> Result<(), StoreError> {
        let rx = Self::send_empty(self.writer_for((&key.account, &key.user))).await?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Queue an operation that writes nothing.
    async fn send_empty(
        tx: &mpsc::Sender<WriteOp>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let update = OutboxUpdate::Unsent {
            account: String::new().into(),
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
                        account: account.into(),
                        rows,
                    })
                    .await;
            }
            OutboxUpdate::Cancelled { account, rows, at } => {
                let at = *at;
                return self
                    .split(account, rows, |account, rows| OutboxUpdate::Cancelled {
                        account: account.into(),
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
        rows: &[(UserKey, i64)],
        update: impl Fn(String, Vec<(UserKey, i64)>) -> OutboxUpdate,
    ) -> Result<(), StoreError> {
        let mut parts: Vec<Vec<(UserKey, i64)>> = vec![Vec::new(); self.writers.len()];
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
            | GateWrite::Unreachable { account, .. } => account.clone().into(),
        };
        self.submit(("gate", &key), WriteOp::Gate { write, reply }, rx)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                kind: crate::domain::OutboxKind::Message,
                message_json: "{}".into(),
                reply_to: None,
                source_seq: None,
                class: crate::domain::SendClass::Service,
            }],
            timers: Vec::new(),
            flow_records: Vec::new(),
            bot_records: Vec::new(),
            hook_events: Vec::new(),
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
