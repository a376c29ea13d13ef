//! The outbox sender of one account: sends committed outbox rows to the Graph API.
//!
//! One message in flight per conversation (so replies keep their order), up to
//! `outbox.max_in_flight` conversations at once. Every attempt passes the account's SendGate
//! first ([`crate::sendgate`]): a conversation that must wait (pair rate, 131056) is parked
//! without holding up the others; service replies are tried before business-initiated
//! messages; account-wide waits (throughput, cool-off, daily cap) stop the queue until due. Retryable failures (429, 5xx, 130429,
//! timeouts) back off exponentially with jitter, never sooner than Retry-After; permanent ones
//! fail the row, write a dead letter and tell the conversation.
//!
//! After a crash, only a send that may have reached Meta is in doubt. A row is committed
//! `pending`; the sender marks it `sending` just before handing its request to the HTTP
//! client (the marks of concurrent sends share the writers' group commits). On restart a
//! `pending` row is sent at once, in its conversation's order; a `sending` row waits for a
//! status webhook echoing its id for `outbox.ambiguous_resend_after` counted from its send
//! (time this process was not answering webhooks does not count: Meta holds and redelivers
//! them), and is sent again if none came. Its conversation's later replies wait behind it,
//! so order holds and the silence is bounded by that window.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{AccountSettings, Settings};
pub use crate::domain::backoff;
use crate::engine::Engine;
use crate::metrics::metrics;
use crate::sendgate::{
    apply_effects, AccountGate, BlockRequest, Decision, Outcome as GateOutcome, Scope, SendClass,
    TierWrite,
};
use crate::store::writer::OutboxRecord;
use crate::store::{GateWrite, OutboxUpdate};
use crate::telemetry::mask;
use crate::whatsapp::client::ReceiptConn;
use crate::whatsapp::graph_error::{PermanentAction, SendOutcome};
use crate::whatsapp::send::OutboundMessage;

/// Prefix of the `biz_opaque_callback_data` we attach, so a status can name its outbox row.
pub const CALLBACK_PREFIX: &str = "parley:";

/// The `biz_opaque_callback_data` of outbox row `id` of conversation `user_key`. Meta echoes it
/// in the row's status webhooks, which then go to the writer that owns the row even when
/// their `recipient_id` is not the conversation's key (a number Meta normalised, a status
/// without one): one writer per outbox row, whatever Meta reports.
pub fn callback_data(id: i64, user_key: &str) -> String {
    format!("{CALLBACK_PREFIX}{id}:{user_key}")
}

/// What [`callback_data`] made: (outbox id, conversation key). A row sent before the key was
/// part of it gives only its id.
pub fn parse_callback(data: &str) -> Option<(i64, Option<&str>)> {
    let rest = data.strip_prefix(CALLBACK_PREFIX)?;
    let (id, user_key) = match rest.split_once(':') {
        Some((id, user_key)) if !user_key.is_empty() => (id, Some(user_key)),
        Some((id, _)) => (id, None),
        None => (rest, None),
    };
    Some((id.parse().ok()?, user_key))
}

enum Cmd {
    Enqueue(Vec<OutboxRecord>),
    /// (user, newest inbound wamid to mark read)
    MarkRead(String, String),
    Shutdown(oneshot::Sender<()>),
}

/// A message the sender gave up on for good (its row is `failed` and a dead letter kept),
/// for the conversation that sent it.
#[derive(Debug, Clone)]
pub struct SendFailure {
    pub user_key: String,
    pub outbox_id: i64,
    pub code: Option<i64>,
    pub detail: String,
    /// The message, when the sender has it (else the conversation reads it back).
    pub message: Option<OutboundMessage>,
}

/// Where the sender reports a [`SendFailure`]: handed in by whoever starts it (the account
/// actor routes it to the conversation), so the sender knows no actor.
pub type FailureReport = Arc<dyn Fn(SendFailure) + Send + Sync>;

/// Handle on an account's sender task.
#[derive(Clone)]
pub struct OutboxSender {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl OutboxSender {
    pub fn start(
        engine: Arc<Engine>,
        account: Arc<AccountSettings>,
        report: FailureReport,
        resume_through: i64,
    ) -> OutboxSender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, account, report, resume_through, rx));
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
    /// Its outcome is unknown: it was in flight (state `sending`) when the process last
    /// stopped, or its last attempt got no answer.
    ambiguous: bool,
    class: SendClass,
    /// Attempts made by this process.
    attempts: u32,
    /// Admitted by the gate once (counted against the day and the tier).
    counted: bool,
    /// When it was first admitted (for a refund of the daily unit).
    admitted_at: i64,
    /// The tier slot its admission took, released if Meta definitely refuses it.
    tier: Option<TierWrite>,
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

/// Per-conversation FIFO queues, two lanes of conversations ready to send (service replies
/// before business-initiated traffic), and conversations parked until a time.
#[derive(Default)]
struct Queues {
    queues: HashMap<String, VecDeque<Queued>>,
    /// Conversations whose head may be tried, by the head's class: [service, business].
    ready: [VecDeque<String>; 2],
    /// Conversations waiting for their own time (pair rate, 131056, a retry's backoff), and
    /// whether a gate limit (not a retry's backoff) parked them.
    parked: BTreeMap<(i64, u64), (String, bool)>,
    park_seq: u64,
    /// Conversations with a send in flight.
    sending: HashSet<String>,
    /// Conversations ready, parked or sending.
    scheduled: HashSet<String>,
    /// Outbox ids queued or in flight (a row is never queued twice).
    known: HashSet<i64>,
    /// Messages of paused campaigns, set aside by campaign until it is resumed (they stay in
    /// `known`: never queued twice).
    aside: BTreeMap<i64, Vec<Queued>>,
}

fn lane(class: SendClass) -> usize {
    match class {
        SendClass::Service => 0,
        SendClass::Business => 1,
    }
}

impl Queues {
    fn push(&mut self, record: OutboxRecord, ambiguous: bool) -> bool {
        if !self.known.insert(record.id) {
            return false;
        }
        let user = record.user_key.clone();
        let class = SendClass::parse(&record.class);
        self.queues
            .entry(user.clone())
            .or_default()
            .push_back(Queued {
                record,
                ambiguous,
                class,
                attempts: 0,
                counted: false,
                admitted_at: 0,
                tier: None,
            });
        if self.scheduled.insert(user.clone()) {
            self.ready[lane(class)].push_back(user);
        }
        true
    }

    fn head_mut(&mut self, user: &str) -> Option<&mut Queued> {
        self.queues.get_mut(user).and_then(|q| q.front_mut())
    }

    /// Put `user` back in its lane (at the front: it was next).
    fn ready_front(&mut self, user: String) {
        if let Some(class) = self.head_mut(&user).map(|h| h.class) {
            self.ready[lane(class)].push_front(user);
        } else {
            self.scheduled.remove(&user);
        }
    }

    fn ready_back(&mut self, user: String) {
        if let Some(class) = self.head_mut(&user).map(|h| h.class) {
            self.ready[lane(class)].push_back(user);
        } else {
            self.scheduled.remove(&user);
        }
    }

    /// `by_gate`: a gate limit parked it (the gate is asked again when its limits change).
    fn park(&mut self, user: String, at: i64, by_gate: bool) {
        self.park_seq += 1;
        self.parked.insert((at, self.park_seq), (user, by_gate));
    }

    fn unpark_due(&mut self, now: i64) {
        while let Some(entry) = self.parked.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (user, _) = entry.remove();
            self.ready_back(user);
        }
    }

    /// The gate's limits changed: what it parked is decided again (a retry's backoff stays).
    fn unpark_gate_waits(&mut self) {
        let gate_waits: Vec<(i64, u64)> = self
            .parked
            .iter()
            .filter(|(_, (_, by_gate))| *by_gate)
            .map(|(k, _)| *k)
            .collect();
        for k in gate_waits {
            if let Some((user, _)) = self.parked.remove(&k) {
                self.ready_back(user);
            }
        }
    }

    fn next_park(&self) -> Option<i64> {
        self.parked.keys().next().map(|k| k.0)
    }

    /// (user_key, id) of the rows never handed to a send by this process (a row that was
    /// tried stays `sending`, so the next process treats its outcome as unknown). Rows
    /// committed by this process are `pending` already; a row from before the last stop that
    /// was marked again and then not tried is set back.
    fn unsent(&self) -> Vec<(String, i64)> {
        self.queues
            .iter()
            .flat_map(|(user, q)| {
                let skip = usize::from(self.sending.contains(user));
                q.iter().skip(skip)
            })
            .chain(self.aside.values().flatten())
            .filter(|queued| queued.attempts == 0 && !queued.ambiguous)
            .map(|queued| (queued.record.user_key.clone(), queued.record.id))
            .collect()
    }

    /// Set the head of `user`'s queue (not in flight) aside for its paused campaign; the
    /// conversation's next message, if any, may go. Returns the row's (user_key, id) if it
    /// was never tried (it can be marked unsent).
    fn set_aside_head(&mut self, user: String, campaign: i64) -> Option<(String, i64)> {
        self.sending.remove(&user);
        let q = self.queues.get_mut(&user)?;
        let head = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&user);
            self.scheduled.remove(&user);
        } else {
            self.ready_front(user);
        }
        let unsent = (head.attempts == 0 && !head.ambiguous)
            .then(|| (head.record.user_key.clone(), head.record.id));
        self.aside.entry(campaign).or_default().push(head);
        unsent
    }

    /// Queue again, at the end of their conversations, the messages set aside for campaigns
    /// no longer withheld (in the order they were created). Returns how many.
    fn release_aside(&mut self, withheld: impl Fn(i64) -> bool) -> usize {
        let mut rows = self.take_aside(|c| !withheld(c));
        rows.sort_by_key(|r| r.record.id);
        let n = rows.len();
        for queued in rows {
            let user = queued.record.user_key.clone();
            let class = queued.class;
            self.queues
                .entry(user.clone())
                .or_default()
                .push_back(queued);
            if self.scheduled.insert(user.clone()) {
                self.ready[lane(class)].push_back(user);
            }
        }
        n
    }

    /// Take out the messages set aside for the campaigns `which` names (they stay in `known`
    /// until settled).
    fn take_aside(&mut self, which: impl Fn(i64) -> bool) -> Vec<Queued> {
        let gone: Vec<i64> = self.aside.keys().copied().filter(|c| which(*c)).collect();
        gone.iter()
            .filter_map(|c| self.aside.remove(c))
            .flatten()
            .collect()
    }

    /// The head of `user`'s queue is settled: the next one may go.
    fn finished_head(&mut self, user: String) {
        self.sending.remove(&user);
        if let Some(q) = self.queues.get_mut(&user) {
            if let Some(done) = q.pop_front() {
                self.known.remove(&done.record.id);
            }
            if q.is_empty() {
                self.queues.remove(&user);
                self.scheduled.remove(&user);
            } else {
                self.ready_back(user);
            }
        } else {
            self.scheduled.remove(&user);
        }
    }
}

/// How one attempt ended, for the sender's queues.
enum Finished {
    /// Sent, or failed for good: the next message of the conversation may go.
    Settled,
    /// Try the same message again, not before `at` (and through the gate again).
    /// `maybe_sent`: the attempt may have reached Meta (timeout, 5xx), so the next one counts
    /// against the daily cap again.
    Retry {
        attempts: u32,
        at: i64,
        maybe_sent: bool,
        /// When an attempt that got no answer was made (its outcome is then unknown).
        in_doubt_since: Option<i64>,
    },
    /// Sending is paused or halted: the gate holds the message until resumed.
    Held { attempts: u32 },
    /// Its campaign was paused before the request was handed to the HTTP client: set aside
    /// until the campaign is resumed.
    Withdrawn { campaign: i64 },
    /// Shutdown came first.
    Cancelled,
}

/// What a send task needs.
struct Job {
    record: OutboxRecord,
    class: SendClass,
    attempts: u32,
    admitted_at: i64,
    /// A tier slot to make durable before the POST (first admission only).
    tier_write: Option<TierWrite>,
    /// The tier slot this message holds (released on a definite refusal).
    tier_held: Option<TierWrite>,
}

async fn run(
    engine: Arc<Engine>,
    account: Arc<AccountSettings>,
    report: FailureReport,
    resume_through: i64,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let max_in_flight = engine.settings().outbox.max_in_flight;
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
    let mut in_flight: JoinSet<(String, Finished)> = JoinSet::new();
    // Sends in doubt waiting for their status (they hold no send slot).
    let mut doubts: JoinSet<(String, Doubt)> = JoinSet::new();
    let mut receipts = Receipts::default();
    let mut lanes = ReceiptLanes::new();
    let mut stopping: Option<oneshot::Sender<()>> = None;

    // The gate first (its counts and holds are in the store), then the rows left from
    // before the last stop, oldest first.
    let gate = loop {
        // The limits in force now (a reload may have changed them since the account started).
        let limits = engine
            .settings()
            .account(&account.phone_number_id)
            .cloned()
            .unwrap_or_else(|| (*account).clone());
        match engine
            .gates
            .open(&engine.store, &limits, engine.clock.now_ms())
            .await
        {
            Ok(g) => {
                // A reload between reading the limits and registering the gate did not find
                // it: take the limits in force once more now that it is registered.
                if let Some(now) = engine.settings().account(&account.phone_number_id) {
                    if let Ok(limits) = crate::sendgate::GateSettings::from_account(now) {
                        g.with_gate(|g| g.retune(limits));
                    }
                }
                break g;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading the send gate failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match engine
            .store
            .open_outbox(&account.phone_number_id, resume_through)
            .await
        {
            Ok(rows) => {
                let n = rows.len();
                let mut in_doubt = 0;
                for rec in rows {
                    // Marked at its hand-over to the HTTP client: it may have reached Meta.
                    let ambiguous = rec.state == "sending";
                    in_doubt += usize::from(ambiguous);
                    q.push(rec, ambiguous);
                }
                metrics()
                    .outbox_pending
                    .fetch_add(n as i64, Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(account = %account.phone_number_id, pending = n, in_doubt, "Resuming unsent outbox rows.");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading the outbox failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    // Durable blocks of the daily quota, reserved ahead of need.
    let mut blocks: JoinSet<(BlockRequest, bool)> = JoinSet::new();
    let mut block_retry_at = 0i64;
    // The campaign holds last looked at (a pause or resume changes their version).
    let mut holds_seen = u64::MAX;
    // Rows set aside for a paused campaign, never tried: marked unsent in the store.
    let mut set_aside: Vec<(String, i64)> = Vec::new();

    loop {
        let mut wake_at: Option<i64> = None;
        let now = engine.clock.now_ms();
        if gate.retuned.swap(false, Ordering::SeqCst) {
            q.unpark_gate_waits();
        }
        let holds_now = gate.with_holds(|h| h.version());
        if holds_now != holds_seen {
            holds_seen = holds_now;
            let released = q.release_aside(|c| gate.with_holds(|h| h.is_withdrawn(c)));
            if released > 0 {
                tracing::info!(account = %account.phone_number_id, released, "Messages of a resumed campaign queued again.");
            }
        }
        if stopping.is_none() {
            if blocks.is_empty() && now >= block_retry_at {
                if let Some(req) = gate.with_gate(|g| g.daily().want_block(now)) {
                    let (engine, account_id) = (engine.clone(), account.phone_number_id.clone());
                    blocks.spawn(async move {
                        let write = GateWrite::Daily {
                            account: account_id,
                            day: req.day.to_string(),
                            reserved: req.reserved as i64,
                            used: req.used as i64,
                            at: engine.clock.now_ms(),
                        };
                        let ok = engine.writer.gate(write).await.is_ok();
                        (req, ok)
                    });
                }
            }
            q.unpark_due(now);
            let mut business_wait: Option<i64> = None;
            while in_flight.len() < max_in_flight {
                let user = if let Some(u) = q.ready[0].pop_front() {
                    u
                } else if business_wait.is_none() {
                    match q.ready[1].pop_front() {
                        Some(u) => u,
                        None => break,
                    }
                } else {
                    break;
                };
                let Some(head) = q.head_mut(&user) else {
                    q.scheduled.remove(&user);
                    continue;
                };
                if let Some(c) = head.record.campaign {
                    if gate.with_holds(|h| h.is_withdrawn(c)) {
                        set_aside.extend(q.set_aside_head(user, c));
                        continue;
                    }
                }
                let Some(head) = q.head_mut(&user) else {
                    continue;
                };
                if head.ambiguous {
                    // In doubt: wait for its status outside the send slots.
                    let record = head.record.clone();
                    q.sending.insert(user.clone());
                    let (engine, account, cancel) =
                        (engine.clone(), account.clone(), cancel_rx.clone());
                    doubts.spawn(async move {
                        let doubt = await_settlement(&engine, &account, &record, cancel).await;
                        (user, doubt)
                    });
                    continue;
                }
                let (class, counted) = (head.class, head.counted);
                match gate.decide(now, &user, class, counted) {
                    Decision::Admit { tier } => {
                        let m = metrics();
                        match class {
                            SendClass::Service => &m.gate_admitted_service,
                            SendClass::Business => &m.gate_admitted_business,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                        if !head.counted {
                            head.counted = true;
                            head.admitted_at = now;
                            head.tier = tier.clone();
                        }
                        let job = Job {
                            record: head.record.clone(),
                            class,
                            attempts: head.attempts,
                            admitted_at: head.admitted_at,
                            tier_write: tier,
                            tier_held: head.tier.clone(),
                        };
                        q.sending.insert(user.clone());
                        let (engine, account, report, cancel, url, gate) = (
                            engine.clone(),
                            account.clone(),
                            report.clone(),
                            cancel_rx.clone(),
                            url.clone(),
                            gate.clone(),
                        );
                        in_flight.spawn(async move {
                            let finished =
                                deliver(&engine, &account, &gate, &url, &report, job, cancel).await;
                            (user, finished)
                        });
                    }
                    Decision::RetryAt { at, reason } => {
                        metrics()
                            .gate_waits
                            .inc(&format!("reason=\"{}\"", reason.as_str()));
                        match reason.scope() {
                            Scope::User => {
                                q.park(user, at, true);
                            }
                            Scope::Business => {
                                q.ready_front(user);
                                business_wait = Some(at);
                            }
                            Scope::Account => {
                                q.ready_front(user);
                                wake_at = Some(at);
                                break;
                            }
                        }
                    }
                    Decision::Refuse { reason } => {
                        metrics().gate_refusals.inc("reason=\"unreachable\"");
                        let record = head.record.clone();
                        q.sending.insert(user.clone());
                        let (engine, report) = (engine.clone(), report.clone());
                        in_flight.spawn(async move {
                            fail(&engine, &report, &record, 0, Some(131026), reason).await;
                            (user, Finished::Settled)
                        });
                    }
                }
            }
            if !set_aside.is_empty() {
                mark_unsent(
                    &engine,
                    &account.phone_number_id,
                    &mut q,
                    std::mem::take(&mut set_aside),
                )
                .await;
            }
            if !q.aside.is_empty() {
                let dropped = q.take_aside(|c| gate.with_holds(|h| h.is_cancelled(c)));
                if !dropped.is_empty() {
                    settle_cancelled(&engine, &account.phone_number_id, &mut q, dropped).await;
                }
            }
            if !q.ready[1].is_empty() {
                wake_at = min_opt(wake_at, business_wait);
            }
            wake_at = min_opt(wake_at, q.next_park());
            while lanes.busy < max_in_flight {
                let Some((user, wamid)) = receipts.next() else {
                    break;
                };
                if let Some(user) = lanes.send(&engine, &account, &url, user, wamid) {
                    receipts.finished(user);
                }
            }
        } else if in_flight.is_empty() && doubts.is_empty() {
            // A block being reserved lands first; then give back what was reserved of today
            // and not used.
            while let Some(joined) = blocks.join_next().await {
                if let Ok((req, ok)) = joined {
                    gate.with_gate(|g| {
                        if ok {
                            g.daily().block_written(&req)
                        } else {
                            g.daily().block_failed(&req)
                        }
                    });
                }
            }
            if let Some(req) = gate.with_gate(|g| g.daily().release()) {
                let write = GateWrite::Daily {
                    account: account.phone_number_id.clone(),
                    day: req.day.to_string(),
                    reserved: req.reserved as i64,
                    used: req.used as i64,
                    at: engine.clock.now_ms(),
                };
                if let Err(e) = engine.writer.gate(write).await {
                    tracing::warn!(error = %e, "Could not give back the unused daily reservation (it stays counted).");
                }
            }
            if let Some(done) = stopping.take() {
                let _ = done.send(());
            }
            return;
        }
        // Waits are re-checked at least every second: the clock may be moved (tests) and a
        // day or a tier slot may come free.
        let sleep_for = wake_at.map(|at| Duration::from_millis((at - now).clamp(1, 1_000) as u64));
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
                    lanes = ReceiptLanes::new();
                    let _ = cancel_tx.send(true);
                    // Rows still queued were never attempted: the next start sends them at
                    // once instead of waiting for a status that cannot come.
                    let unsent = q.unsent();
                    if !unsent.is_empty() {
                        let _ = engine.writer.outbox(OutboxUpdate::Unsent {
                            account: account.phone_number_id.clone(),
                            rows: unsent,
                        }).await;
                    }
                    stopping = Some(done);
                }
                None => return,
            },
            _ = gate.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::ZERO)), if sleep_for.is_some() => {}
            Some(joined) = blocks.join_next() => {
                if let Ok((req, ok)) = joined {
                    gate.with_gate(|g| if ok {
                        g.daily().block_written(&req)
                    } else {
                        g.daily().block_failed(&req)
                    });
                    if !ok {
                        tracing::warn!("Reserving today's send quota failed; retrying in 1 s.");
                        block_retry_at = engine.clock.now_ms() + 1_000;
                    }
                }
            }
            Some(done) = lanes.done.recv() => match done {
                LaneDone::Sent(user, lane) => {
                    lanes.finished(lane);
                    receipts.finished(user);
                }
                LaneDone::Retired(lane) => lanes.idle.retain(|l| !l.same_channel(&lane)),
            },
            Some(joined) = doubts.join_next() => {
                let Ok((user, doubt)) = joined else { continue };
                match doubt {
                    Doubt::Settled => {
                        metrics().outbox_pending.fetch_sub(1, Ordering::Relaxed);
                        q.finished_head(user);
                    }
                    Doubt::Resend => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.ambiguous = false;
                            // Marked `sending` again at its hand-over: a crash after it waits
                            // from that send.
                            head.record.state = "pending".into();
                        }
                        q.ready_front(user);
                    }
                    Doubt::Cancelled => {
                        q.sending.remove(&user);
                    }
                }
            }
            Some(joined) = in_flight.join_next() => {
                let Ok((user, finished)) = joined else { continue };
                match finished {
                    Finished::Settled => {
                        metrics().outbox_pending.fetch_sub(1, Ordering::Relaxed);
                        q.finished_head(user);
                    }
                    Finished::Retry { attempts, at, maybe_sent, in_doubt_since } => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.attempts = attempts;
                            head.record.state = "sending".into();
                            head.ambiguous = in_doubt_since.is_some();
                            if let Some(since) = in_doubt_since {
                                head.record.updated_at = since;
                            }
                            if maybe_sent {
                                head.counted = false;
                            }
                        }
                        q.park(user, at, false);
                    }
                    Finished::Held { attempts } => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.attempts = attempts;
                            head.record.state = "sending".into();
                            head.ambiguous = false;
                        }
                        q.ready_front(user);
                    }
                    Finished::Withdrawn { campaign } => {
                        set_aside.extend(q.set_aside_head(user, campaign));
                    }
                    Finished::Cancelled => {
                        q.sending.remove(&user);
                    }
                }
            }
        }
    }
}

/// Rows set aside for a paused campaign were never tried: in the store they are `pending`
/// again, so a restart sends them at once (once resumed) instead of waiting for a status that
/// cannot come; in memory too, so that their send marks them `sending` first.
async fn mark_unsent(engine: &Engine, account: &str, q: &mut Queues, rows: Vec<(String, i64)>) {
    let n = rows.len();
    let ids: HashSet<i64> = rows.iter().map(|(_, id)| *id).collect();
    match engine
        .writer
        .outbox(OutboxUpdate::Unsent {
            account: account.to_string(),
            rows,
        })
        .await
    {
        Ok(()) => {
            for queued in q.aside.values_mut().flatten() {
                if ids.contains(&queued.record.id) {
                    queued.record.state = "pending".into();
                }
            }
            tracing::info!(withheld = n, "Messages of a paused campaign withheld.");
        }
        // They stay `sending`: a restart treats them as in doubt (as any queued row).
        Err(e) => tracing::warn!(error = %e, "Marking withheld campaign messages unsent failed."),
    }
}

/// Messages withheld for a cancelled campaign are settled `cancelled` (never sent, no dead
/// letter). If that cannot be written they stay aside and are tried again at the next turn.
async fn settle_cancelled(engine: &Engine, account: &str, q: &mut Queues, dropped: Vec<Queued>) {
    let rows: Vec<(String, i64)> = dropped
        .iter()
        .map(|queued| (queued.record.user_key.clone(), queued.record.id))
        .collect();
    let update = OutboxUpdate::Cancelled {
        account: account.to_string(),
        rows,
        at: engine.clock.now_ms(),
    };
    match engine.writer.outbox(update).await {
        Ok(()) => {
            for queued in &dropped {
                q.known.remove(&queued.record.id);
            }
            metrics()
                .outbox_pending
                .fetch_sub(dropped.len() as i64, Ordering::Relaxed);
            tracing::info!(
                dropped = dropped.len(),
                "Messages of a cancelled campaign dropped unsent."
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "Settling a cancelled campaign's messages failed; trying again.");
            for queued in dropped {
                let campaign = queued.record.campaign.unwrap_or_default();
                q.aside.entry(campaign).or_default().push(queued);
            }
        }
    }
}

/// A campaign send handed to the HTTP client, until its request ends (or is dropped).
struct CampaignSend<'a> {
    gate: &'a AccountGate,
    campaign: i64,
}

impl Drop for CampaignSend<'_> {
    fn drop(&mut self) {
        self.gate.with_holds(|h| h.end_send(self.campaign));
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The bearer for `account`'s Graph API calls, from the settings in force (a reload may
/// rotate it): the account's own token, else `whatsapp.access_token`.
pub fn token_for<'a>(settings: &'a Settings, account: &str) -> &'a SecretString {
    settings
        .account(account)
        .and_then(|a| a.access_token.as_ref())
        .unwrap_or(&settings.whatsapp.access_token)
}

type Lane = mpsc::UnboundedSender<(String, String)>;

/// A lane idle this long closes its connection and ends (as the pool's idle connections
/// did): lanes made for a burst do not hold their connections, and the allocator pages
/// around them, for good.
const LANE_IDLE: Duration = Duration::from_secs(60);

enum LaneDone {
    /// The lane is done with a user's receipt and free again.
    Sent(String, Lane),
    /// The lane idled past [`LANE_IDLE`] and ended.
    Retired(Lane),
}

/// Read receipts go out over lanes of their own: a lane is a task holding one keep-alive
/// connection to the Graph API ([`ReceiptConn`]) that sends one receipt at a time, so a
/// receipt costs no task, pool checkout or hand-over between tasks. Lanes are added while
/// every lane is busy (up to `outbox.max_in_flight`) and end after [`LANE_IDLE`] without
/// work, or with the sender.
struct ReceiptLanes {
    idle: Vec<Lane>,
    busy: usize,
    tasks: JoinSet<()>,
    done: mpsc::UnboundedReceiver<LaneDone>,
    done_tx: mpsc::UnboundedSender<LaneDone>,
}

impl ReceiptLanes {
    fn new() -> ReceiptLanes {
        let (done_tx, done) = mpsc::unbounded_channel();
        ReceiptLanes {
            idle: Vec::new(),
            busy: 0,
            tasks: JoinSet::new(),
            done,
            done_tx,
        }
    }

    fn send(
        &mut self,
        engine: &Arc<Engine>,
        account: &Arc<AccountSettings>,
        url: &hyper::Uri,
        user: String,
        wamid: String,
    ) -> Option<String> {
        let lane = self.idle.pop().unwrap_or_else(|| {
            let (lane, mut rx) = mpsc::unbounded_channel::<(String, String)>();
            let (engine, account, done, me) = (
                engine.clone(),
                account.clone(),
                self.done_tx.clone(),
                lane.clone(),
            );
            let mut conn = engine.graph.receipt_conn(url);
            self.tasks.spawn(async move {
                loop {
                    match tokio::time::timeout(LANE_IDLE, rx.recv()).await {
                        Ok(Some((user, wamid))) => {
                            send_receipt(&engine, &account, &mut conn, wamid).await;
                            if done.send(LaneDone::Sent(user, me.clone())).is_err() {
                                return;
                            }
                        }
                        // Idle too long: take no more. What raced in is still received
                        // above; then the closed lane ends. (Its task holds a sender of
                        // its own, so only a close ends it.)
                        Err(_) => rx.close(),
                        Ok(None) => {
                            let _ = done.send(LaneDone::Retired(me));
                            return;
                        }
                    }
                }
            });
            lane
        });
        // A lane that retired before its retirement reached `idle` refuses the receipt: it
        // is dropped (receipts are cosmetic) and the user handed back, so that the user's
        // next receipt can go.
        match lane.send((user, wamid)) {
            Ok(()) => {
                self.busy += 1;
                None
            }
            Err(mpsc::error::SendError((user, _))) => Some(user),
        }
    }

    fn finished(&mut self, lane: Lane) {
        self.busy = self.busy.saturating_sub(1);
        self.idle.push(lane);
    }
}

/// A read receipt: a few quick attempts, then given up (it is cosmetic).
async fn send_receipt(
    engine: &Engine,
    account: &AccountSettings,
    conn: &mut ReceiptConn,
    wamid: String,
) {
    for attempt in 0..3u32 {
        let settings = engine.settings_arc();
        let token = token_for(&settings, &account.phone_number_id);
        match conn.send(token, &wamid).await {
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
                let base = settings.outbox.backoff_base;
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

/// Make a tier reservation durable before the send; false if shutdown came first.
async fn write_tier(
    engine: &Engine,
    gate: &AccountGate,
    w: &TierWrite,
    cancel: &mut watch::Receiver<bool>,
) -> bool {
    let write = GateWrite::TierReach {
        waba: gate.waba.clone(),
        user_key: w.user_key.clone(),
        account: gate.account.clone(),
        at: w.at,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match engine.writer.gate(write.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "Recording a tier reservation failed; retrying before sending.");
                if cancelled(cancel, delay).await {
                    return false;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Meta definitely refused a message: its tier slot and daily unit are free again.
async fn refund(engine: &Engine, gate: &AccountGate, job: &Job) {
    let now = engine.clock.now_ms();
    gate.with_gate(|g| {
        let zone = g.settings().zone;
        if zone.day(job.admitted_at) == zone.day(now) {
            g.refund_daily(now);
        }
    });
    if let Some(w) = &job.tier_held {
        gate.with_tier(|t| t.release(w));
        let write = GateWrite::TierRelease {
            waba: gate.waba.clone(),
            user_key: w.user_key.clone(),
            at: w.at,
            previous: w.previous,
        };
        if let Err(e) = engine.writer.gate(write).await {
            // The slot stays taken in the store: conservative.
            tracing::warn!(error = %e, "Releasing a tier reservation failed.");
        }
    }
}

/// How the wait for a send in doubt ended.
enum Doubt {
    /// A status webhook settled it (`sent` or `failed`): it is not sent again.
    Settled,
    /// No status came in time: it is sent again.
    Resend,
    /// Shutdown came first.
    Cancelled,
}

/// Wait for a status webhook to settle a send whose request may have reached Meta (the
/// previous process, or this one's attempt that got no answer, made it). Not in a send slot:
/// other conversations go on meanwhile; this one's later messages wait behind it.
async fn await_settlement(
    engine: &Engine,
    account: &AccountSettings,
    rec: &OutboxRecord,
    mut cancel: watch::Receiver<bool>,
) -> Doubt {
    // Give the status webhook (which echoes our id) time to settle it before sending again,
    // counted from the send (`updated_at` is the moment it was marked `sending`): Meta's
    // `sent` status comes about a second after it. Time no process answered webhooks does
    // not count (Meta holds its webhooks meanwhile and redelivers them late), and neither
    // does the time the row waited in the queue before it was sent.
    let opened = tokio::select! {
        at = engine.webhooks.since() => at,
        _ = cancel.wait_for(|stop| *stop) => return Doubt::Cancelled,
    };
    let resend_after = engine.settings().outbox.ambiguous_resend_after;
    let wait_until = rec.updated_at.max(opened) + resend_after.as_millis() as i64;
    // Checked now and then while waiting: a status usually comes within seconds.
    let wait = Duration::from_millis((wait_until - engine.clock.now_ms()).max(0) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match engine.store.outbox_state(rec.id).await {
            Ok(Some(state)) if state == "sent" || state == "failed" => {
                metrics().outbox_in_doubt.inc("result=\"settled\"");
                return Doubt::Settled;
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            metrics().outbox_in_doubt.inc("result=\"resent\"");
            tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, "No status came for a send in doubt; sending it again.");
            return Doubt::Resend;
        }
        if cancelled(&mut cancel, left.min(Duration::from_millis(500))).await {
            return Doubt::Cancelled;
        }
    }
}

/// One attempt at one admitted message.
async fn deliver(
    engine: &Engine,
    account: &AccountSettings,
    gate: &AccountGate,
    url: &hyper::Uri,
    report: &FailureReport,
    job: Job,
    mut cancel: watch::Receiver<bool>,
) -> Finished {
    let rec = &job.record;
    if let Some(w) = &job.tier_write {
        if !write_tier(engine, gate, w, &mut cancel).await {
            return Finished::Cancelled;
        }
    }
    let message: OutboundMessage = match serde_json::from_str(&rec.message_json) {
        Ok(m) => m,
        Err(e) => {
            fail(
                engine,
                report,
                rec,
                0,
                None,
                format!("stored message does not decode: {e}"),
            )
            .await;
            refund(engine, gate, &job).await;
            return Finished::Settled;
        }
    };
    let body = if rec.kind == "mark_read" {
        message.to_request_body(&rec.user_key, None, None)
    } else {
        let callback = callback_data(rec.id, &rec.user_key);
        message.to_request_body(&rec.user_key, rec.reply_to.as_deref(), Some(&callback))
    };
    if rec.state == "pending" {
        // The hand-over: from here a crash leaves the outcome unknown. Awaited, so the mark is
        // durable before the request can leave; the writer batches it with the other sends'
        // marks and the steps it is committing anyway.
        record(
            engine,
            OutboxUpdate::Sending {
                id: rec.id,
                account: rec.account.clone(),
                user_key: rec.user_key.clone(),
                at: engine.clock.now_ms(),
            },
        )
        .await;
    }
    // Taken now, so a send after a reload goes with the rotated token and the new limits.
    let live = engine.settings_arc();
    let settings = &live.outbox;
    let token = token_for(&live, &account.phone_number_id);
    let attempt = job.attempts + 1;
    if let (Some(turn), 0) = (rec.turn, job.attempts) {
        let after = turn.answered_at.elapsed();
        let m = metrics();
        m.bot_after_answer_us.observe(after.as_micros() as u64);
        if let Some(before) = turn.before_call {
            m.bot_turn_us.observe((before + after).as_micros() as u64);
        }
    }
    // The boundary of a campaign's pause: from here the request is the HTTP client's. A pause
    // taken before this point withholds the message; one taken after counts it in flight.
    let started = match rec.campaign {
        Some(campaign) if !gate.with_holds(|h| h.begin_send(campaign)) => {
            return Finished::Withdrawn { campaign };
        }
        Some(campaign) => Some(CampaignSend { gate, campaign }),
        None => None,
    };
    let outcome = engine.graph.send_message(url, token, &body).await;
    drop(started);
    let now = engine.clock.now_ms();
    match outcome {
        SendOutcome::Accepted { wamid } => {
            metrics().sends.inc(&format!(
                "kind=\"{}\",result=\"accepted\",code=\"\"",
                rec.kind
            ));
            gate.with_gate(|g| g.on_outcome(now, &rec.user_key, &GateOutcome::Accepted));
            record(
                engine,
                OutboxUpdate::Sent {
                    id: rec.id,
                    account: rec.account.clone(),
                    user_key: rec.user_key.clone(),
                    wamid,
                    at: now,
                },
            )
            .await;
            Finished::Settled
        }
        SendOutcome::Retry {
            code,
            http_status,
            retry_after,
            reason,
            in_doubt,
        } => {
            metrics().sends.inc(&format!(
                "kind=\"{}\",result=\"retry\",code=\"{}\"",
                rec.kind,
                code.map_or_else(|| http_status.to_string(), |c| c.to_string())
            ));
            // Flow control (the number's rate, the user's pair rate) is the gate's business:
            // it slows down instead of failing the message, so it gets more attempts.
            let gate_outcome = match code {
                Some(130429) => GateOutcome::Throttled { retry_after },
                None if http_status == 429 => GateOutcome::Throttled { retry_after },
                Some(131056) => GateOutcome::PairLimited,
                _ => GateOutcome::Transient,
            };
            let flow_control = gate_outcome != GateOutcome::Transient;
            if matches!(gate_outcome, GateOutcome::Throttled { .. }) {
                metrics().gate_throttles.fetch_add(1, Ordering::Relaxed);
            }
            gate.with_gate(|g| g.on_outcome(now, &rec.user_key, &gate_outcome));
            let max = if flow_control {
                settings.max_attempts.saturating_mul(4)
            } else {
                settings.max_attempts
            };
            if attempt >= max {
                fail(
                    engine,
                    report,
                    rec,
                    attempt,
                    code,
                    format!("gave up after {attempt} attempts: {reason}"),
                )
                .await;
                return Finished::Settled;
            }
            let delay = if flow_control {
                // The gate holds the number or the user for as long as needed.
                Duration::ZERO
            } else {
                backoff(
                    settings.backoff_base,
                    settings.backoff_max,
                    attempt - 1,
                    retry_after,
                )
            };
            tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, attempt, http_status, code = ?code, reason = %reason, delay_ms = delay.as_millis() as u64, "Send failed; retrying.");
            let _ = engine
                .writer
                .outbox(OutboxUpdate::Retrying {
                    id: rec.id,
                    account: rec.account.clone(),
                    user_key: rec.user_key.clone(),
                    attempts: attempt as i64,
                    code,
                    detail: reason,
                    at: now,
                })
                .await;
            Finished::Retry {
                attempts: attempt,
                at: now + delay.as_millis() as i64,
                // No answer, or a 5xx: Meta may have taken it.
                maybe_sent: http_status == 0 || http_status >= 500,
                // No answer at all: it is not sent again until a status webhook had time to
                // say it arrived (a read receipt has no status: it is simply sent again).
                in_doubt_since: (in_doubt && rec.kind != "mark_read").then_some(now),
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
            let code_or_status = code.unwrap_or(i64::from(http_status));
            // What the gate learns from the refusal (the number paused or halted, the
            // recipient unreachable), if anything.
            let outcome = match action {
                PermanentAction::PauseAccount => Some(GateOutcome::Pause {
                    code,
                    reason: details.clone(),
                }),
                PermanentAction::HaltBusinessInitiated => Some(GateOutcome::Halt {
                    code,
                    reason: details.clone(),
                }),
                PermanentAction::RecipientUnreachable => Some(GateOutcome::Unreachable),
                _ => None,
            };
            if let Some(outcome) = outcome {
                let fx = gate.with_gate(|g| g.on_outcome(now, &rec.user_key, &outcome));
                apply_effects(
                    &engine.writer,
                    gate,
                    &fx,
                    code_or_status,
                    &rec.user_key,
                    now,
                )
                .await;
            }
            match action {
                // Kept: sent once the account is resumed.
                PermanentAction::PauseAccount => return Finished::Held { attempts: attempt },
                PermanentAction::HaltBusinessInitiated if job.class == SendClass::Business => {
                    return Finished::Held { attempts: attempt }
                }
                _ => {}
            }
            fail(engine, report, rec, attempt, code, details).await;
            refund(engine, gate, &job).await;
            Finished::Settled
        }
    }
}

async fn fail(
    engine: &Engine,
    report: &FailureReport,
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
        report(SendFailure {
            user_key: rec.user_key.clone(),
            outbox_id: rec.id,
            code,
            detail,
            message: serde_json::from_str(&rec.message_json).ok(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_callback_names_the_row_and_the_conversation_that_owns_it() {
        let data = callback_data(42, "6281234567890");
        assert_eq!(parse_callback(&data), Some((42, Some("6281234567890"))));
        assert_eq!(
            parse_callback("parley:42"),
            Some((42, None)),
            "sent before the key was added"
        );
        assert_eq!(parse_callback("parley:42:"), Some((42, None)));
        assert_eq!(parse_callback("parley:x:1"), None);
        assert_eq!(parse_callback("someone-else:42"), None);
    }

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
}
