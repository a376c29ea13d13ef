//! The batch protocol: take what queued, write it in one transaction, hand inbound
//! messages to the dispatcher while it is open, and on failure write each op alone.

use super::*;

/// How long an open transaction waits for the steps of the inbound messages it just handed
/// out early. A step that comes in time commits with its inbox row: one commit and one fsync
/// per message instead of two, and the reply leaves one commit sooner. A step that comes later
/// simply commits in the next batch.
pub(super) const STEP_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// A batch opened with this many operations or more does not wait (measured with the shop
/// benchmark at 100 users: waiting at every size lost ~8 % of the replies per second; waiting
/// only below this kept the fewer commits at low load and gained ~5 % at full load).
pub(super) const STEP_WAIT_BELOW: usize = 16;

/// Batch numbers, unique across the writers, that early dispatches and their steps name.
pub(super) static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What became of this writer's recent batches, so that a step naming one is refused if its
/// inbox row was rolled back. Steps come within moments of their batch; one naming a batch
/// older than [`BatchLog::RETAIN`] (whose fate is no longer kept) is refused too, and its
/// conversation simply replays from the store.
#[derive(Default)]
pub(super) struct BatchLog {
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

pub(super) fn run(
    mut conn: WriterConn,
    mut rx: mpsc::Receiver<WriteOp>,
    dispatcher: Arc<OnceLock<Dispatcher>>,
    url: &str,
) {
    // The endpoints' view this writer writes webhook events by.
    super::super::hooks::bind_writer_thread(url);
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
pub(super) fn take_queued(
    rx: &mut mpsc::Receiver<WriteOp>,
    batches: &BatchLog,
    ops: &mut Vec<WriteOp>,
) {
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
pub(super) fn gather_steps(
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
    let mut stepped: HashSet<(AccountId, UserKey)> = HashSet::new();
    let mut waiting: HashSet<(AccountId, UserKey)> = HashSet::new();
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
                    // A webhook attempt's record has no reply waiting behind it.
                    WriteOp::Append { .. } | WriteOp::HookWrites { .. } => {}
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

pub(super) enum OpResult {
    Append(Vec<Option<i64>>),
    Unit,
    Step(Vec<OutboxRecord>),
}

pub(super) fn clone_err(e: &StoreError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn fail(ops: Vec<WriteOp>, e: &StoreError) {
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
            WriteOp::Outbox { reply, .. }
            | WriteOp::Gate { reply, .. }
            | WriteOp::HookWrites { reply, .. } => {
                let _ = reply.send(Err(clone_err(e)));
            }
        }
    }
}

/// The new messages among `ops` that go to their conversations, in sequence order.
pub(super) fn dispatches(
    ops: &[WriteOp],
    results: &[OpResult],
    batch: Option<u64>,
) -> Vec<InboxDispatch> {
    let mut out = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        if let (WriteOp::Append { rows, .. }, OpResult::Append(seqs)) = (op, result) {
            for (row, seq) in rows.iter().zip(seqs) {
                if let (Some(seq), Some(msg), Some(user)) = (seq, &row.dispatch, &row.user_key) {
                    if row.state == crate::domain::InboxState::Pending {
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
pub(super) fn finish(ops: Vec<WriteOp>, results: Vec<OpResult>, dispatcher: Option<&Dispatcher>) {
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
            | (WriteOp::Gate { reply, .. }, _)
            | (WriteOp::HookWrites { reply, .. }, _) => {
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
