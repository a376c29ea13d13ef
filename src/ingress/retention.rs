//! The retention sweeper: every `retention.every`, one pass over the stored data, off the
//! webhook's and the conversations' paths. Decided by the pure [`crate::retention`] policy,
//! read and deleted through store/retention.rs on the store's ordinary pool (never the
//! conversation writer's group commit), at most `batches_per_pass` statements of `batch`
//! rows per table and pass with `pause` between them, at the injected clock's time. After a
//! pass that deleted rows, SQLite gives back up to `vacuum_pages` free pages; every
//! quarter of an hour the tables' sizes are sampled for the metrics. A finished campaign's
//! counters are frozen before the rows they are counted from go (store/campaign_totals.rs).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{RetentionSettings, Settings};
use crate::engine::Engine;
use crate::metrics::{metrics, StorageSample};
use crate::retention::{Policy, RowMeta, Verdict};
use crate::store::{Store, StoreError, Walk, WalkRow};

/// How often the tables' sizes are sampled for the metrics (counting reads every row, and
/// SQLite's `dbstat` every page).
const SAMPLE_EVERY: Duration = Duration::from_secs(900);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rows whose body was erased (the row kept).
    pub erased: u64,
    pub deleted: u64,
    /// Media files removed from disk.
    pub files: u64,
}

/// Start the sweeper (it stops when the engine is dropped).
pub fn spawn(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut sampled: Option<Instant> = None;
        loop {
            let every = match engine.upgrade() {
                Some(e) => e.settings().retention.every,
                None => return,
            };
            tokio::time::sleep(every).await;
            let Some(e) = engine.upgrade() else { return };
            let settings = e.settings_arc();
            let now = e.clock.now_ms();
            let started = Instant::now();
            match pass(&e.store, &settings, now).await {
                Ok(r) if r.deleted + r.erased + r.files > 0 => tracing::info!(
                    erased = r.erased,
                    deleted = r.deleted,
                    files = r.files,
                    ms = started.elapsed().as_millis() as u64,
                    "Retention pass."
                ),
                Ok(_) => {}
                // Shutting down: the store was closed under the pass.
                Err(StoreError::Database(sqlx::Error::PoolClosed)) => return,
                Err(err) => {
                    metrics()
                        .retention_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %err, "The retention pass failed; the next one tries again.");
                }
            }
            if sampled.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY) {
                sampled = Some(Instant::now());
                if let Err(err) = sample(&e.store, now).await {
                    tracing::warn!(error = %err, "Cannot read the tables' sizes.");
                }
            }
        }
    });
}

/// Read the tables' sizes into the metrics.
pub async fn sample(store: &Store, now: i64) -> Result<(), StoreError> {
    let report = store.storage().await?;
    let sample = StorageSample {
        tables: report
            .tables
            .iter()
            .map(|t| {
                (
                    t.table.clone(),
                    t.rows,
                    t.bytes,
                    t.oldest_at.map(|at| (now - at).max(0)),
                )
            })
            .collect(),
        database_bytes: report.database_bytes,
        free_bytes: report.free_bytes,
        bytes_method: report.bytes_method.to_string(),
    };
    if let Ok(mut m) = metrics().storage.lock() {
        *m = sample;
    }
    Ok(())
}

/// The walks of one pass, in order: deletions before erasures (fewer rows to erase).
#[derive(Debug, Clone, Copy)]
enum Job {
    InboxDelete,
    InboxErase,
    OutboxDelete,
    OutboxErase,
    Search,
    FlowSteps,
    HookAttempts,
    HookDeliveries,
    DeadLetters,
}

const JOBS: [Job; 9] = [
    Job::InboxDelete,
    Job::InboxErase,
    Job::OutboxDelete,
    Job::OutboxErase,
    Job::Search,
    Job::FlowSteps,
    Job::HookAttempts,
    Job::HookDeliveries,
    Job::DeadLetters,
];

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::InboxDelete => "inbox_delete",
            Job::InboxErase => "inbox_erase",
            Job::OutboxDelete => "outbox_delete",
            Job::OutboxErase => "outbox_erase",
            Job::Search => "search",
            Job::FlowSteps => "flow_steps",
            Job::HookAttempts => "hook_attempts",
            Job::HookDeliveries => "hook_deliveries",
            Job::DeadLetters => "dead_letters",
        }
    }

    fn walk(self) -> Walk {
        match self {
            Job::InboxDelete | Job::InboxErase => Walk::Inbox,
            Job::OutboxDelete | Job::OutboxErase => Walk::Outbox,
            Job::Search => Walk::Search,
            Job::FlowSteps => Walk::FlowSteps,
            Job::HookAttempts => Walk::HookAttempts,
            Job::HookDeliveries => Walk::HookDeliveries,
            Job::DeadLetters => Walk::DeadLetters,
        }
    }

    fn erases(self) -> bool {
        matches!(self, Job::InboxErase | Job::OutboxErase)
    }

    /// Rows dated from then on are left by this job (the walk stops there); `None`: the job
    /// has nothing to do under this policy.
    fn horizon(self, p: &Policy) -> Option<i64> {
        let w = &p.windows;
        match self {
            Job::InboxDelete => p.inbox_delete_horizon(),
            Job::InboxErase => p.inbox_erase_horizon(),
            Job::OutboxDelete => p.outbox_delete_horizon(),
            Job::OutboxErase => p.outbox_erase_horizon(),
            Job::Search => p.search_horizon(),
            Job::FlowSteps => p.cutoff(w.flow_steps),
            Job::HookAttempts | Job::HookDeliveries => p.cutoff(w.webhook_log),
            Job::DeadLetters => p.cutoff(w.dead_letters),
        }
    }

    fn verdict(self, p: &Policy, r: &WalkRow) -> Verdict {
        let meta = || RowMeta {
            id: r.id,
            at: r.at,
            account: r.account.clone(),
            kind: r.kind.clone(),
            state: r.state.clone(),
            erased: r.flag,
        };
        let w = &p.windows;
        match self {
            Job::InboxDelete => p.inbox_delete(&meta()),
            Job::InboxErase => p.inbox_erase(&meta()),
            Job::OutboxDelete => p.outbox_delete(&meta()),
            Job::OutboxErase => p.outbox_erase(&meta()),
            Job::Search => p.search_delete(&r.account, r.at),
            Job::FlowSteps => p.step_delete(r.at),
            Job::HookAttempts => p.aged(r.at, w.webhook_log, false),
            // A delivery still to be attempted is needed.
            Job::HookDeliveries => p.aged(r.at, w.webhook_log, r.state == "pending"),
            Job::DeadLetters => p.aged(r.at, w.dead_letters, false),
        }
    }
}

/// One pass at `now` over every kind of data (engine-free: a test runs it at any time).
pub async fn pass(store: &Store, settings: &Settings, now: i64) -> Result<PassReport, StoreError> {
    let policy = Policy::new(settings, now);
    let s = &settings.retention;
    let mut report = PassReport::default();
    // First, before any row a campaign's counters are counted from can go (its outbox
    // rows by the walks, its recipients and messages below).
    freeze_campaigns(store, &policy, s, now).await?;
    for job in JOBS {
        walk(store, job, &policy, s, &mut report).await?;
    }
    let limit = i64::from(s.batch);
    if let Some(before) = policy.cutoff(s.webhook_log) {
        in_batches(s, &mut report, "hook_events", || {
            store.delete_old_hook_events(before, limit)
        })
        .await?;
    }
    if let Some(before) = policy.cutoff(s.flow_steps) {
        in_batches(s, &mut report, "flow_executions", || {
            store.delete_old_flow_executions(before, limit)
        })
        .await?;
    }
    if let Some(before) = policy.cutoff(s.sessions) {
        in_batches(s, &mut report, "chatbot_sessions", || {
            store.delete_old_bot_sessions(before, limit)
        })
        .await?;
        in_batches(s, &mut report, "conversation_handoffs", || {
            store.delete_old_handoffs(before, limit)
        })
        .await?;
        in_batches(s, &mut report, "timers", || {
            store.delete_old_timers(before, limit)
        })
        .await?;
    }
    if let Some(before) = policy.cutoff(s.campaign_recipients) {
        finished_campaigns(store, before, s, &mut report).await?;
    }
    if let Some(before) = policy.cutoff(s.media) {
        media(store, &settings.media.dir, before, limit, &mut report).await?;
    }
    if report.deleted > 0 {
        store.incremental_vacuum(s.vacuum_pages).await?;
    }
    Ok(report)
}

/// How many campaigns a pass freezes or deletes the rows of, at most (counting a big
/// campaign's counters reads every one of its messages).
const CAMPAIGNS_PER_PASS: i64 = 16;

/// Freeze the counters of the finished campaigns whose rows may be deleted from now on (see
/// store/campaign_totals.rs): at retention time rather than when a campaign finishes, so that
/// late status webhooks and replies count until its window ends.
async fn freeze_campaigns(
    store: &Store,
    policy: &Policy,
    s: &RetentionSettings,
    now: i64,
) -> Result<(), StoreError> {
    let due = store
        .campaigns_to_freeze(
            policy.cutoff(s.campaign_recipients),
            policy.cutoff(s.messages),
            CAMPAIGNS_PER_PASS,
        )
        .await?;
    for campaign in due {
        if store.freeze_campaign_counters(campaign, now).await? {
            tracing::info!(
                campaign,
                "A finished campaign's counters are frozen for retention."
            );
        }
        tokio::time::sleep(s.pause).await;
    }
    Ok(())
}

/// The recipients, then the messages, of campaigns that finished before `before` and whose
/// counters are frozen: in `batch`-row statements, at most `batches_per_pass` of them in all.
async fn finished_campaigns(
    store: &Store,
    before: i64,
    s: &RetentionSettings,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    let limit = i64::from(s.batch);
    let mut budget = s.batches_per_pass;
    for campaign in store
        .finished_campaigns_with_rows(before, CAMPAIGNS_PER_PASS)
        .await?
    {
        for table in ["campaign_recipients", "campaign_messages"] {
            loop {
                if budget == 0 {
                    return Ok(());
                }
                budget -= 1;
                let n = if table == "campaign_recipients" {
                    store.delete_campaign_recipients(campaign, limit).await?
                } else {
                    store.delete_campaign_messages(campaign, limit).await?
                };
                counted(report, table, "delete", n);
                tokio::time::sleep(s.pause).await;
                if n < limit as u64 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Run `delete` (at most `batch` rows a time) until a batch comes back short or the pass's
/// `batches_per_pass` are spent, pausing between batches.
async fn in_batches<F, Fut>(
    s: &RetentionSettings,
    report: &mut PassReport,
    table: &str,
    mut delete: F,
) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    for _ in 0..s.batches_per_pass {
        let n = delete().await?;
        counted(report, table, "delete", n);
        if n < u64::from(s.batch) {
            break;
        }
        tokio::time::sleep(s.pause).await;
    }
    Ok(())
}

fn counted(report: &mut PassReport, table: &str, action: &str, n: u64) {
    if n == 0 {
        return;
    }
    if action == "erase" {
        report.erased += n;
    } else {
        report.deleted += n;
    }
    metrics()
        .retention_rows
        .add(&format!("table=\"{table}\",action=\"{action}\""), n);
}

/// Walk one table from its cursor: act on the rows the policy says, in statements of at
/// most `batch` rows; keep the cursor at the first row left for later.
async fn walk(
    store: &Store,
    job: Job,
    policy: &Policy,
    s: &RetentionSettings,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    let Some(horizon) = job.horizon(policy) else {
        return Ok(());
    };
    let fingerprint = policy.fingerprint(job.name());
    let start = store.retention_cursor(job.name(), &fingerprint).await?;
    let (mut seen, mut settled) = (start, start);
    let mut waiting = false;
    let batch = i64::from(s.batch);
    for _ in 0..s.batches_per_pass {
        let rows = store.walk(job.walk(), seen, batch).await?;
        let mut act = Vec::new();
        let mut young = false;
        for r in &rows {
            if r.at >= horizon {
                young = true;
                break;
            }
            match job.verdict(policy, r) {
                Verdict::Act => act.push(r.id),
                Verdict::Pass => {}
                Verdict::Later => waiting = true,
            }
            seen = r.id;
            if !waiting {
                settled = r.id;
            }
        }
        if !act.is_empty() {
            let table = job.walk().table();
            if job.erases() {
                let n = store.retention_erase(job.walk(), &act).await?;
                counted(report, table, "erase", n);
            } else {
                let n = store.retention_delete(job.walk(), &act).await?;
                counted(report, table, "delete", n);
            }
            tokio::time::sleep(s.pause).await;
        }
        if young || (rows.len() as i64) < batch {
            break;
        }
    }
    if settled != start {
        store
            .set_retention_cursor(job.name(), settled, &fingerprint)
            .await?;
    }
    Ok(())
}

/// Downloaded media past its window: the file, then its row. A file outside `media.dir`
/// is not Parley's to remove (the row goes, the file stays, and that is logged).
async fn media(
    store: &Store,
    dir: &Path,
    before: i64,
    limit: i64,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    let root = std::fs::canonicalize(dir).ok();
    for m in store.old_media(before, limit).await? {
        if let Some(path) = m.path.as_deref().map(Path::new) {
            let inside = match (&root, std::fs::canonicalize(path)) {
                (Some(root), Ok(file)) => file.starts_with(root),
                (_, Err(_)) => true, // already gone
                (None, Ok(_)) => false,
            };
            if inside {
                match tokio::fs::remove_file(path).await {
                    Ok(()) => {
                        report.files += 1;
                        metrics()
                            .retention_files
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "Cannot delete an old media file; its row is kept and the next pass tries again.");
                        continue;
                    }
                }
            } else {
                tracing::warn!(path = %path.display(), "An old media file is outside media.dir: its row is deleted, the file left.");
            }
        }
        let n = store.delete_media_row(&m.account, &m.media_id).await?;
        counted(report, "media_files", "delete", n);
    }
    Ok(())
}
