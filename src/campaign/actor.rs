//! CampaignActor: paces one running campaign. Each tick takes a page of due recipients from
//! the store (as many as the campaign's rate allows since the last tick), hands each message
//! to the recipient's conversation, records the page, and schedules the next tick. It holds
//! nothing the store does not: a restart resumes where the store says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::model::{after_send, plan, CampaignSpec, Plan};
use super::CampaignError;
use crate::actors::{AccountMsg, AccountRouter, Engine};
use crate::conversation::ConversationEvent;
use crate::domain::{CampaignStatus, RecipientState};
use crate::sendgate::Health;
use crate::store::{CampaignRow, DueRecipient, RecipientUpdate};
use crate::telemetry::mask;
use crate::whatsapp::send::OutboundMessage;

/// Most recipients handed over in one tick.
const MAX_PAGE: usize = 256;
/// Health and halts are checked this often (a quality drop pauses within a second).
const GUARD_EVERY: Duration = Duration::from_millis(200);
/// Template states and the failure rate are checked this often.
const SLOW_GUARD_EVERY: Duration = Duration::from_secs(1);
/// The account's unsent business-initiated backlog is checked this often.
const BACKLOG_EVERY: Duration = Duration::from_millis(200);
/// The failure rate is judged once this many of the window's sends exist.
const MIN_FAILURE_SAMPLE: usize = 50;
/// Errors that count against the failure rate (131049 marketing cap, 131026 undeliverable).
const RATE_CODES: [i64; 2] = [131049, 131026];
/// Errors that mean the template cannot be sent (paused, disabled).
const TEMPLATE_CODES: [i64; 2] = [132015, 132016];
/// How long a send to a conversation may take before it counts as not handed over.
const HAND_TIMEOUT_MS: u64 = 10_000;

pub struct CampaignActor;

/// `webhooks.campaign_progress_every`, in ms (at least 1).
fn progress_every(engine: &Engine) -> i64 {
    (engine
        .settings()
        .webhooks
        .campaign_progress_every
        .as_millis() as i64)
        .max(1)
}

pub enum CampaignMsg {
    Tick,
}

pub struct CampaignArgs {
    pub engine: Arc<Engine>,
    pub router: AccountRouter,
    pub campaign: CampaignRow,
}

/// Tokens at the campaign's own rate, at most a fifth of a second's worth banked.
struct Pacer {
    per_sec: f64,
    credit: f64,
    cap: f64,
    last: Instant,
}

impl Pacer {
    fn new(per_minute: i64) -> Pacer {
        let per_sec = (per_minute.max(1) as f64) / 60.0;
        Pacer {
            per_sec,
            credit: 1.0,
            cap: (per_sec / 5.0).max(1.0),
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.credit = (self.credit + dt * self.per_sec).min(self.cap);
        self.last = now;
    }

    fn available(&self) -> usize {
        self.credit.max(0.0).floor() as usize
    }

    fn spend(&mut self, n: usize) {
        self.credit -= n as f64;
    }

    /// Bank nothing while the sender is behind.
    fn hold(&mut self) {
        self.credit = self.credit.min(0.0);
        self.last = Instant::now();
    }

    fn until_next(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.credit) / self.per_sec).max(0.0))
    }
}

pub struct CampaignState {
    engine: Arc<Engine>,
    router: AccountRouter,
    row: CampaignRow,
    spec: CampaignSpec,
    templates: Vec<(String, String)>,
    waba: String,
    status: CampaignStatus,
    pacer: Pacer,
    /// Keyset position in the recipients (a page starts after it).
    after: i64,
    /// Quality when this actor started (or last improved): worse pauses the campaign.
    baseline: Option<Health>,
    next_guard: Instant,
    next_slow_guard: Instant,
    next_backlog: Instant,
    max_backlog: i64,
    /// When (engine clock, ms) the next `campaign.progress` is due.
    next_progress: i64,
}

/// What a tick leaves to do.
enum Next {
    After(Duration),
    Stop,
}

/// How handing one message to its conversation ended.
enum Handed {
    /// The outbox row (new, or the one an earlier attempt created).
    Queued(i64),
    /// The conversation refused it (free-form outside the window).
    Refused(String),
    /// Not handed over (store down, account restarting): tried again later.
    NotYet(String),
}

async fn hand(
    engine: &Engine,
    account: &ActorRef<AccountMsg>,
    pnid: &str,
    user: &str,
    request_id: &str,
    message: OutboundMessage,
) -> Handed {
    let event = ConversationEvent::Outgoing {
        request_id: request_id.to_string(),
        message,
        reply_to: None,
        // A free-form campaign message outside the window is refused (the campaign then
        // uses its fallback template or skips the recipient with the reason).
        policy: None,
    };
    let user_key = user.to_string();
    let answer = ractor::call_t!(
        account,
        |reply| AccountMsg::CampaignSend {
            user_key: user_key.into(),
            event,
            reply,
        },
        HAND_TIMEOUT_MS
    );
    match answer {
        Ok(Ok(done)) => match done.ids.first() {
            Some(id) => Handed::Queued(*id),
            // Handed over before (a restart between the hand-over and its record): the
            // outbox kept the first row and refused the duplicate.
            None => match engine
                .store
                .campaign_outbox_id(pnid, user, request_id)
                .await
            {
                Ok(Some(id)) => Handed::Queued(id),
                Ok(None) => Handed::NotYet("no outbox row for an accepted message".into()),
                Err(e) => Handed::NotYet(e.to_string()),
            },
        },
        Ok(Err(reason)) if reason.contains("window") => Handed::Refused(reason),
        Ok(Err(reason)) => Handed::NotYet(reason),
        Err(e) => Handed::NotYet(e.to_string()),
    }
}

impl CampaignState {
    fn id(&self) -> i64 {
        self.row.id
    }

    /// Why the campaign must pause now, if it must.
    async fn guard(&mut self) -> Result<Option<String>, CampaignError> {
        let now = Instant::now();
        if now < self.next_guard {
            return Ok(None);
        }
        self.next_guard = now + GUARD_EVERY;
        if let Some(gate) = self.engine.gates.get(&self.row.account) {
            let control = gate.with_gate(|g| g.control().clone());
            let q = control.quality;
            let base = *self.baseline.get_or_insert(q);
            if q > base {
                return Ok(Some(format!(
                    "quality dropped to {} ({})",
                    format!("{q:?}").to_lowercase(),
                    control.quality_event.as_deref().unwrap_or("quality update")
                )));
            }
            self.baseline = Some(q);
            if let Some(h) = &control.halted {
                return Ok(Some(format!(
                    "business-initiated sending halted on the number: {}",
                    h.reason
                )));
            }
            if let Some(p) = &control.paused {
                return Ok(Some(format!("sending paused on the number: {}", p.reason)));
            }
        }
        if now < self.next_slow_guard {
            return Ok(None);
        }
        self.next_slow_guard = now + SLOW_GUARD_EVERY;
        for (name, language) in &self.templates {
            if let Some(state) = self
                .engine
                .store
                .template_state(&self.waba, name, language)
                .await?
            {
                let s = state.to_ascii_uppercase();
                if matches!(
                    s.as_str(),
                    "PAUSED" | "DISABLED" | "REJECTED" | "DELETED" | "PENDING_DELETION"
                ) {
                    return Ok(Some(format!("template {name} ({language}) is {s}")));
                }
            }
        }
        let window = i64::from(self.spec.failure_window);
        let codes = self
            .engine
            .store
            .campaign_recent_codes(self.id(), window)
            .await?;
        if let Some(code) = codes
            .iter()
            .take(20)
            .flatten()
            .find(|c| TEMPLATE_CODES.contains(c))
        {
            return Ok(Some(format!(
                "the template is paused or disabled (Meta error {code})"
            )));
        }
        let failed = codes
            .iter()
            .flatten()
            .filter(|c| RATE_CODES.contains(c))
            .count();
        let n = codes.len();
        if n >= MIN_FAILURE_SAMPLE.min(window as usize)
            && failed as f64 > self.spec.failure_threshold * n as f64
        {
            return Ok(Some(format!(
                "failure rate: {failed} of the last {n} sends failed with 131049/131026 (over {:.1} %)",
                self.spec.failure_threshold * 100.0
            )));
        }
        Ok(None)
    }

    async fn pause_self(&mut self, reason: &str) -> Result<Next, CampaignError> {
        let now = self.engine.clock.now_ms();
        // Withheld first, so that once the campaign reads `paused` nothing more of it leaves
        // but what was already with the HTTP client.
        let gate = self.engine.gates.get(&self.row.account);
        if let Some(g) = &gate {
            g.withdraw_campaign(self.id());
        }
        let paused = match self
            .engine
            .store
            .set_campaign_status(
                self.id(),
                &[CampaignStatus::Running],
                CampaignStatus::Paused,
                Some(reason),
                now,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // Still running: its messages go on (the guard decides again next tick).
                if let Some(g) = &gate {
                    g.release_campaign(self.id());
                }
                return Err(e.into());
            }
        };
        if paused {
            crate::metrics::metrics()
                .campaign_pauses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(campaign = self.id(), reason = %reason, "Campaign paused itself.");
        }
        Ok(Next::Stop)
    }

    async fn tick(&mut self) -> Result<Next, CampaignError> {
        let engine = self.engine.clone();
        let store = &engine.store;
        let now_ms = engine.clock.now_ms();
        if self.status == CampaignStatus::Scheduled {
            let at = self.row.scheduled_for.unwrap_or(0);
            if now_ms < at {
                return Ok(Next::After(Duration::from_millis(
                    (at - now_ms).clamp(1, 1_000) as u64,
                )));
            }
            if !store
                .set_campaign_status(
                    self.id(),
                    &[CampaignStatus::Scheduled],
                    CampaignStatus::Running,
                    None,
                    now_ms,
                )
                .await?
            {
                return Ok(Next::Stop);
            }
            tracing::info!(campaign = self.id(), "Scheduled campaign started.");
            self.status = CampaignStatus::Running;
        }
        if let Some(reason) = self.guard().await? {
            return self.pause_self(&reason).await;
        }
        if now_ms >= self.next_progress {
            let every = progress_every(&engine);
            self.next_progress = now_ms + every;
            // A report, not a change: a store error skips this one.
            if let Err(e) = store
                .campaign_progress(&self.row, now_ms / every, now_ms)
                .await
            {
                tracing::warn!(campaign = self.id(), error = %e, "Campaign progress not reported.");
            }
        }
        let now = Instant::now();
        if now >= self.next_backlog {
            self.next_backlog = now + BACKLOG_EVERY;
            let backlog = store.unsettled_business(&self.row.account).await?;
            if backlog >= self.max_backlog {
                // The gate holds back what was handed over (a limit, a cool-off): wait for it
                // instead of piling up more.
                self.pacer.hold();
                return Ok(Next::After(Duration::from_millis(50)));
            }
        }
        self.pacer.refill();
        let n = self.pacer.available().min(MAX_PAGE);
        if n == 0 {
            return Ok(Next::After(
                self.pacer.until_next().max(Duration::from_millis(2)),
            ));
        }
        let page = store
            .due_recipients(self.id(), &self.row.account, self.after, now_ms, n as i64)
            .await?;
        if page.is_empty() {
            if self.after > 0 {
                self.after = 0;
                return Ok(Next::After(Duration::from_millis(2)));
            }
            let (pending, unsettled) = store.campaign_remaining(self.id()).await?;
            if pending == 0 && unsettled == 0 {
                if store
                    .set_campaign_status(
                        self.id(),
                        &[CampaignStatus::Running],
                        CampaignStatus::Completed,
                        None,
                        now_ms,
                    )
                    .await?
                {
                    tracing::info!(campaign = self.id(), "Campaign completed.");
                }
                return Ok(Next::Stop);
            }
            // Drip steps not yet due, or sends still settling.
            return Ok(Next::After(Duration::from_millis(if pending > 0 {
                500
            } else {
                250
            })));
        }
        let Some(account) = self.router.get(&self.row.account) else {
            return Ok(Next::After(Duration::from_secs(1)));
        };
        let last_id = page.last().map_or(self.after, |r| r.id);
        let (updates, handed, not_yet) = self.run_page(&account, page, now_ms).await;
        store
            .record_campaign_page(self.id(), &updates, now_ms)
            .await?;
        self.pacer.spend(handed);
        crate::metrics::metrics()
            .campaign_messages
            .fetch_add(handed as u64, std::sync::atomic::Ordering::Relaxed);
        if not_yet {
            // Those recipients stay pending: the next pass from the start takes them again.
            self.after = 0;
            return Ok(Next::After(Duration::from_millis(500)));
        }
        self.after = last_id;
        Ok(Next::After(Duration::ZERO))
    }

    /// Decide and hand over one page; the updates to record, how many messages were handed
    /// over, and whether some could not be (yet).
    async fn run_page(
        &self,
        account: &ActorRef<AccountMsg>,
        page: Vec<DueRecipient>,
        now_ms: i64,
    ) -> (Vec<RecipientUpdate>, usize, bool) {
        let engine = &self.engine;
        let pnid = self.row.account.as_str();
        let spec = &self.spec;
        let id = self.id();
        let work = page.iter().map(|r| async move {
            match plan(spec, id, r, now_ms) {
                Plan::End { state, reason } => Some(RecipientUpdate {
                    id: r.id,
                    state,
                    step: r.step,
                    due_offset: 0,
                    variant: r.variant,
                    reason: Some(reason),
                    sent: None,
                }),
                Plan::Send {
                    step,
                    variant,
                    request_id,
                    message,
                    fallback,
                } => {
                    let mut outcome =
                        hand(engine, account, pnid, &r.user_key, &request_id, message).await;
                    if let (Handed::Refused(_), Some((fid, fmsg))) = (&outcome, fallback) {
                        outcome = hand(engine, account, pnid, &r.user_key, &fid, fmsg).await;
                    }
                    match outcome {
                        Handed::Queued(outbox_id) => {
                            let (state, next, due_offset) = after_send(spec, step);
                            Some(RecipientUpdate {
                                id: r.id,
                                state,
                                step: next,
                                due_offset,
                                variant,
                                reason: None,
                                sent: Some((step, outbox_id)),
                            })
                        }
                        Handed::Refused(reason) => Some(RecipientUpdate {
                            id: r.id,
                            state: if step > 0 {
                                RecipientState::Stopped
                            } else {
                                RecipientState::Skipped
                            },
                            step,
                            due_offset: 0,
                            variant,
                            reason: Some(reason),
                            sent: None,
                        }),
                        Handed::NotYet(reason) => {
                            tracing::debug!(campaign = id, user = %mask(&r.user_key), reason = %reason, "Campaign message not handed over yet.");
                            None
                        }
                    }
                }
            }
        });
        let results = futures::future::join_all(work).await;
        let not_yet = results.iter().any(Option::is_none);
        let updates: Vec<RecipientUpdate> = results.into_iter().flatten().collect();
        let handed = updates.iter().filter(|u| u.sent.is_some()).count();
        (updates, handed, not_yet)
    }
}

impl Actor for CampaignActor {
    type Msg = CampaignMsg;
    type State = CampaignState;
    type Arguments = CampaignArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CampaignArgs,
    ) -> Result<CampaignState, ActorProcessingErr> {
        let spec: CampaignSpec = serde_json::from_str(&args.campaign.spec)
            .map_err(|e| CampaignError::Spec(e).to_string())?;
        let waba = args
            .engine
            .settings()
            .account(&args.campaign.account)
            .map(crate::sendgate::waba_key)
            .unwrap_or_default();
        let per_sec = (args.campaign.rate_per_minute as f64 / 60.0).ceil() as i64;
        let now = Instant::now();
        Ok(CampaignState {
            templates: spec.templates(),
            pacer: Pacer::new(args.campaign.rate_per_minute),
            status: args.campaign.status,
            spec,
            waba,
            after: 0,
            baseline: None,
            next_guard: now,
            next_slow_guard: now,
            next_backlog: now,
            next_progress: args.engine.clock.now_ms() + progress_every(&args.engine),
            // Two seconds of the campaign's rate may wait at the gate.
            max_backlog: (2 * per_sec).max(50),
            engine: args.engine,
            router: args.router,
            row: args.campaign,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut CampaignState,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(campaign = state.id(), account = %state.row.account, kind = state.spec.kind.as_str(), rate_per_minute = state.row.rate_per_minute, "Campaign running.");
        // Running: nothing of it is withheld (a resume released it already; this covers a
        // gate that opened while it was paused and read it so).
        if let Some(g) = state.engine.gates.get(&state.row.account) {
            g.release_campaign(state.id());
        }
        let _ = myself.cast(CampaignMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: CampaignMsg,
        state: &mut CampaignState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CampaignMsg::Tick => match Box::pin(state.tick()).await {
                Ok(Next::After(d)) if d.is_zero() => {
                    let _ = myself.cast(CampaignMsg::Tick);
                }
                Ok(Next::After(d)) => {
                    drop(myself.send_after(d, || CampaignMsg::Tick));
                }
                Ok(Next::Stop) => myself.stop(None),
                Err(e) => {
                    tracing::warn!(campaign = state.id(), error = %e, "Campaign step failed; trying again in a second.");
                    drop(myself.send_after(Duration::from_secs(1), || CampaignMsg::Tick));
                }
            },
        }
        Ok(())
    }
}
