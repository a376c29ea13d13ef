//! The outbox sender of one account: sends committed outbox rows to the Graph API.
//!
//! One message in flight per conversation (so replies keep their order), up to
//! `outbox.max_in_flight` conversations at once. Retryable failures (429, 5xx, 130429,
//! timeouts) back off exponentially with jitter, never sooner than Retry-After; permanent ones
//! fail the row, write a dead letter and tell the conversation. A row that was in flight when
//! the process died is resent only after `outbox.ambiguous_resend_after`, unless a status
//! webhook echoing its id settled it first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::actors::{AccountMsg, Engine};
use crate::config::AccountSettings;
use crate::metrics::metrics;
use crate::store::writer::OutboxRecord;
use crate::store::OutboxUpdate;
use crate::telemetry::mask;
use crate::whatsapp::graph_error::SendOutcome;
use crate::whatsapp::send::OutboundMessage;

/// Prefix of the `biz_opaque_callback_data` we attach, so a status can name its outbox row.
pub const CALLBACK_PREFIX: &str = "parley:";

enum Cmd {
    Enqueue(Vec<OutboxRecord>),
    /// (user, newest inbound wamid to mark read)
    MarkRead(String, String),
    Shutdown(oneshot::Sender<()>),
}

/// Handle on an account's sender task.
#[derive(Clone)]
pub struct OutboxSender {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl OutboxSender {
    pub fn start(
        engine: Arc<Engine>,
        account: Arc<AccountSettings>,
        account_ref: ActorRef<AccountMsg>,
    ) -> OutboxSender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, account, account_ref, rx));
        OutboxSender { tx }
    }

    /// Queue committed rows (in the order the conversation created them).
    pub fn enqueue(&self, records: Vec<OutboxRecord>) {
        metrics()
            .outbox_pending
            .fetch_add(records.len() as i64, Ordering::Relaxed);
        let _ = self.tx.send(Cmd::Enqueue(records));
    }

    /// Mark `user`'s messages read up to `wamid` (marking one read marks the earlier ones
    /// too, so a burst needs one receipt). Receipts are not stored: one lost to a crash costs
    /// a blue tick, never a message; and they do not wait behind the conversation's replies.
    pub fn mark_read(&self, user_key: &str, wamid: String) {
        let _ = self.tx.send(Cmd::MarkRead(user_key.to_string(), wamid));
    }

    /// Stop launching sends; wait for the ones in flight (bounded by the request timeout).
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Queued {
    record: OutboxRecord,
    /// Was in flight (state `sending`) when the process last stopped.
    ambiguous: bool,
}

/// Read receipts to send: at most one in flight per conversation, and only the newest
/// waiting one (it marks the earlier messages read too).
#[derive(Default)]
struct Receipts {
    newest: HashMap<String, String>,
    ready: VecDeque<String>,
    busy: HashSet<String>,
}

impl Receipts {
    fn push(&mut self, user: String, wamid: String) {
        let fresh = self.newest.insert(user.clone(), wamid).is_none();
        if fresh && !self.busy.contains(&user) {
            self.ready.push_back(user);
        }
    }

    fn next(&mut self) -> Option<(String, String)> {
        let user = self.ready.pop_front()?;
        let wamid = self.newest.remove(&user)?;
        self.busy.insert(user.clone());
        Some((user, wamid))
    }

    fn finished(&mut self, user: String) {
        self.busy.remove(&user);
        if self.newest.contains_key(&user) {
            self.ready.push_back(user);
        }
    }
}

/// Per-conversation FIFO queues and the conversations waiting for a send slot.
#[derive(Default)]
struct Queues {
    queues: HashMap<String, VecDeque<Queued>>,
    /// Conversations whose head may be sent, in turn.
    ready: VecDeque<String>,
    /// Conversations in `ready` or with a send in flight.
    scheduled: HashSet<String>,
    /// Outbox ids queued or in flight (a row is never queued twice).
    known: HashSet<i64>,
}

impl Queues {
    fn push(&mut self, record: OutboxRecord, ambiguous: bool) -> bool {
        if !self.known.insert(record.id) {
            return false;
        }
        let user = record.user_key.clone();
        self.queues
            .entry(user.clone())
            .or_default()
            .push_back(Queued { record, ambiguous });
        if self.scheduled.insert(user.clone()) {
            self.ready.push_back(user);
        }
        true
    }

    /// Ids of the rows not yet handed to a send (the heads of busy conversations excluded).
    fn unsent(&self) -> Vec<i64> {
        let waiting: HashSet<&String> = self.ready.iter().collect();
        self.queues
            .iter()
            .flat_map(|(user, q)| {
                let skip = usize::from(!waiting.contains(user));
                q.iter().skip(skip).map(|queued| queued.record.id)
            })
            .collect()
    }

    /// The head of `user`'s queue is settled: the next one may go.
    fn finished_head(&mut self, user: String) {
        if let Some(q) = self.queues.get_mut(&user) {
            if let Some(done) = q.pop_front() {
                self.known.remove(&done.record.id);
            }
            if q.is_empty() {
                self.queues.remove(&user);
                self.scheduled.remove(&user);
            } else {
                self.ready.push_back(user);
            }
        }
    }
}

async fn run(
    engine: Arc<Engine>,
    account: Arc<AccountSettings>,
    account_ref: ActorRef<AccountMsg>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let max_in_flight = engine.settings.outbox.max_in_flight;
    let url = match engine.graph.messages_url(&account.phone_number_id) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            tracing::error!(error = %e, account = %account.phone_number_id, "No Graph API URL for this account; it cannot send.");
            return;
        }
    };
    let mut q = Queues::default();
    // Tells sends waiting in a backoff to give up at shutdown (the row stays `sending` and is
    // settled or resent by the next process).
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut in_flight: JoinSet<String> = JoinSet::new();
    let mut receipts = Receipts::default();
    let mut receipts_in_flight: JoinSet<String> = JoinSet::new();
    let mut stopping: Option<oneshot::Sender<()>> = None;

    // Rows left from before the last stop, oldest first.
    loop {
        match engine.store.open_outbox(&account.phone_number_id).await {
            Ok(rows) => {
                let n = rows.len();
                for rec in rows {
                    let ambiguous = rec.state == "sending";
                    q.push(rec, ambiguous);
                }
                metrics()
                    .outbox_pending
                    .fetch_add(n as i64, Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(account = %account.phone_number_id, pending = n, "Resuming unsent outbox rows.");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading the outbox failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    loop {
        if stopping.is_none() {
            while in_flight.len() < max_in_flight {
                let Some(user) = q.ready.pop_front() else {
                    break;
                };
                let Some(head) = q.queues.get(&user).and_then(|q| q.front()) else {
                    q.scheduled.remove(&user);
                    continue;
                };
                let record = head.record.clone();
                let ambiguous = head.ambiguous;
                let (engine, account, account_ref, cancel, url) = (
                    engine.clone(),
                    account.clone(),
                    account_ref.clone(),
                    cancel_rx.clone(),
                    url.clone(),
                );
                in_flight.spawn(async move {
                    deliver(
                        &engine,
                        &account,
                        &url,
                        &account_ref,
                        record,
                        ambiguous,
                        cancel,
                    )
                    .await;
                    user
                });
            }
            while receipts_in_flight.len() < max_in_flight {
                let Some((user, wamid)) = receipts.next() else {
                    break;
                };
                let (engine, account, url) = (engine.clone(), account.clone(), url.clone());
                receipts_in_flight.spawn(async move {
                    send_receipt(&engine, &account, &url, wamid).await;
                    user
                });
            }
        } else if in_flight.is_empty() {
            if let Some(done) = stopping.take() {
                let _ = done.send(());
            }
            return;
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Enqueue(records)) => {
                    let mut dup = 0;
                    for rec in records {
                        if !q.push(rec, false) {
                            dup += 1;
                        }
                    }
                    if dup > 0 {
                        metrics().outbox_pending.fetch_sub(dup, Ordering::Relaxed);
                    }
                }
                Some(Cmd::MarkRead(user, wamid)) => receipts.push(user, wamid),
                Some(Cmd::Shutdown(done)) => {
                    receipts = Receipts::default();
                    receipts_in_flight.abort_all();
                    let _ = cancel_tx.send(true);
                    // Rows still queued were never attempted: the next start sends them at
                    // once instead of waiting for a status that cannot come.
                    let unsent = q.unsent();
                    if !unsent.is_empty() {
                        let _ = engine.writer.outbox(OutboxUpdate::Unsent { ids: unsent }).await;
                    }
                    stopping = Some(done);
                }
                None => return,
            },
            Some(joined) = receipts_in_flight.join_next() => {
                if let Ok(user) = joined {
                    receipts.finished(user);
                }
            }
            Some(joined) = in_flight.join_next() => {
                let Ok(user) = joined else { continue };
                metrics().outbox_pending.fetch_sub(1, Ordering::Relaxed);
                q.finished_head(user);
            }
        }
    }
}

pub fn token_for<'a>(engine: &'a Engine, account: &'a AccountSettings) -> &'a SecretString {
    account
        .access_token
        .as_ref()
        .unwrap_or(&engine.settings.whatsapp.access_token)
}

/// A read receipt: a few quick attempts, then given up (it is cosmetic).
async fn send_receipt(
    engine: &Engine,
    account: &AccountSettings,
    url: &reqwest::Url,
    wamid: String,
) {
    let token = token_for(engine, account);
    for attempt in 0..3u32 {
        match engine.graph.send_read_receipt(url, token, &wamid).await {
            SendOutcome::Accepted { .. } => {
                metrics()
                    .sends
                    .inc("kind=\"mark_read\",result=\"accepted\",code=\"\"");
                return;
            }
            SendOutcome::Retry { retry_after, .. } => {
                metrics()
                    .sends
                    .inc("kind=\"mark_read\",result=\"retry\",code=\"\"");
                let base = engine.settings.outbox.backoff_base;
                tokio::time::sleep(backoff(base, base * 8, attempt, retry_after)).await;
            }
            SendOutcome::Permanent { code, .. } => {
                metrics().sends.inc(&format!(
                    "kind=\"mark_read\",result=\"failed\",code=\"{}\"",
                    code.unwrap_or(0)
                ));
                return;
            }
        }
    }
}

/// Write an outbox update, retrying while the store is down: a send's outcome is never dropped.
async fn record(engine: &Engine, update: OutboxUpdate) {
    let mut delay = Duration::from_millis(100);
    loop {
        match engine.writer.outbox(update.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "Recording a send outcome failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Exponential backoff with jitter: base·2^attempt capped at max, then a random 50–100 %,
/// and never less than the server's Retry-After.
pub fn backoff(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
    match retry_after {
        Some(ra) => jittered.max(ra),
        None => jittered,
    }
}

/// Sleep for `d`; true if shutdown came first.
async fn cancelled(cancel: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *cancel.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.wait_for(|stop| *stop) => true,
    }
}

async fn deliver(
    engine: &Engine,
    account: &AccountSettings,
    url: &reqwest::Url,
    account_ref: &ActorRef<AccountMsg>,
    rec: OutboxRecord,
    ambiguous: bool,
    mut cancel: watch::Receiver<bool>,
) {
    let settings = &engine.settings.outbox;
    if ambiguous {
        // The previous process may have had this accepted by Meta. Give the status webhook
        // (which echoes our id) time to settle it before sending again.
        let wait_until = rec.updated_at + settings.ambiguous_resend_after.as_millis() as i64;
        let now = engine.clock.now_ms();
        if wait_until > now
            && cancelled(
                &mut cancel,
                Duration::from_millis((wait_until - now) as u64),
            )
            .await
        {
            return;
        }
        match engine.store.outbox_state(rec.id).await {
            Ok(Some(state)) if state == "sent" || state == "failed" => return,
            _ => {}
        }
    }
    let message: OutboundMessage = match serde_json::from_str(&rec.message_json) {
        Ok(m) => m,
        Err(e) => {
            fail(
                engine,
                account_ref,
                &rec,
                0,
                None,
                format!("stored message does not decode: {e}"),
            )
            .await;
            return;
        }
    };
    let body = if rec.kind == "mark_read" {
        message.to_request_body(&rec.user_key, None, None)
    } else {
        let callback = format!("{CALLBACK_PREFIX}{}", rec.id);
        message.to_request_body(&rec.user_key, rec.reply_to.as_deref(), Some(&callback))
    };
    if ambiguous || rec.state == "pending" {
        // Rows committed by this process are already `sending` (the step commits them so,
        // sparing a commit per send). A row from before a stop is marked again: from here a
        // crash leaves its outcome unknown once more.
        record(
            engine,
            OutboxUpdate::Sending {
                id: rec.id,
                at: engine.clock.now_ms(),
            },
        )
        .await;
    }
    let token = token_for(engine, account);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let outcome = engine.graph.send_message(url, token, &body).await;
        match outcome {
            SendOutcome::Accepted { wamid } => {
                metrics().sends.inc(&format!(
                    "kind=\"{}\",result=\"accepted\",code=\"\"",
                    rec.kind
                ));
                record(
                    engine,
                    OutboxUpdate::Sent {
                        id: rec.id,
                        account: rec.account.clone(),
                        wamid,
                        at: engine.clock.now_ms(),
                    },
                )
                .await;
                return;
            }
            SendOutcome::Retry {
                code,
                http_status,
                retry_after,
                reason,
            } => {
                metrics().sends.inc(&format!(
                    "kind=\"{}\",result=\"retry\",code=\"{}\"",
                    rec.kind,
                    code.map_or_else(|| http_status.to_string(), |c| c.to_string())
                ));
                if attempt >= settings.max_attempts {
                    fail(
                        engine,
                        account_ref,
                        &rec,
                        attempt,
                        code,
                        format!("gave up after {attempt} attempts: {reason}"),
                    )
                    .await;
                    return;
                }
                let delay = backoff(
                    settings.backoff_base,
                    settings.backoff_max,
                    attempt - 1,
                    retry_after,
                );
                tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, attempt, http_status, code = ?code, reason = %reason, delay_ms = delay.as_millis() as u64, "Send failed; retrying.");
                let _ = engine
                    .writer
                    .outbox(OutboxUpdate::Retrying {
                        id: rec.id,
                        attempts: attempt as i64,
                        code,
                        detail: reason,
                        at: engine.clock.now_ms(),
                    })
                    .await;
                if cancelled(&mut cancel, delay).await {
                    return;
                }
            }
            SendOutcome::Permanent {
                code,
                http_status,
                details,
                action,
            } => {
                metrics().sends.inc(&format!(
                    "kind=\"{}\",result=\"failed\",code=\"{}\"",
                    rec.kind,
                    code.map_or_else(|| http_status.to_string(), |c| c.to_string())
                ));
                tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, http_status, code = ?code, action = ?action, "Send refused by the Graph API.");
                fail(engine, account_ref, &rec, attempt, code, details).await;
                return;
            }
        }
    }
}

async fn fail(
    engine: &Engine,
    account_ref: &ActorRef<AccountMsg>,
    rec: &OutboxRecord,
    attempts: u32,
    code: Option<i64>,
    detail: String,
) {
    record(
        engine,
        OutboxUpdate::Failed {
            id: rec.id,
            account: rec.account.clone(),
            user_key: rec.user_key.clone(),
            attempts: attempts as i64,
            code,
            detail: detail.clone(),
            at: engine.clock.now_ms(),
        },
    )
    .await;
    if rec.kind == "message" {
        let _ = account_ref.cast(AccountMsg::SendFailed {
            user_key: rec.user_key.clone(),
            outbox_id: rec.id,
            code,
            detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_receipts_for_one_user_sends_the_newest_once_the_first_is_done() {
        let mut r = Receipts::default();
        r.push("u1".into(), "w1".into());
        r.push("u2".into(), "x1".into());
        assert_eq!(r.next(), Some(("u1".into(), "w1".into())));
        r.push("u1".into(), "w2".into());
        r.push("u1".into(), "w3".into());
        assert_eq!(r.next(), Some(("u2".into(), "x1".into())));
        assert_eq!(r.next(), None, "u1 has one in flight");
        r.finished("u1".into());
        assert_eq!(
            r.next(),
            Some(("u1".into(), "w3".into())),
            "only the newest"
        );
        r.finished("u1".into());
        r.finished("u2".into());
        assert_eq!(r.next(), None);
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..10 {
            let d = backoff(base, max, attempt, None);
            let full = base.saturating_mul(1 << attempt).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(base, max, 0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
