//! ConversationActor: the one writer of one conversation. Loads its state, applies events in
//! inbox order through the pure `step`, commits state + outbox + timers + "inbox done" in one
//! transaction, then hands the new sends to the account's outbox sender.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::account::AccountMsg;
use super::Engine;
use crate::config::AccountSettings;
use crate::conversation::{ConversationEvent, ConversationState, Effect, FlowRecord, StepContext};
use crate::metrics::metrics;
use crate::outbox::OutboxSender;
use crate::sendgate::SendClass;
use crate::store::writer::{ContactUpsert, DeadInbox};
use crate::store::{
    DueTimer, InboxDispatch, NewDeadLetter, NewOutboxRow, NewTimer, StepCommit, StoreError,
    TurnClock,
};
use crate::telemetry::mask;
use crate::whatsapp::event::WebhookEvent;

pub struct ConversationActor;

/// What a business command did: the outbox rows it created, or that it was held for the
/// customer-service window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandOutcome {
    pub ids: Vec<i64>,
    pub held: bool,
    /// A retry of a request already carried out: `ids` are the rows it queued then.
    pub duplicate: bool,
}

pub enum ConversationMsg {
    Inbound(InboxDispatch),
    /// The business acts on the conversation (a send, a handoff, an agent's reply, a
    /// release); replies with the ids of the outbox rows it created, or why it was refused.
    Command {
        event: ConversationEvent,
        reply: RpcReplyPort<Result<CommandOutcome, String>>,
    },
    /// The outcome of a flow's HTTP call.
    HttpDone(crate::outcall::HttpOutcome),
    /// A model's answer to a chatbot's call, when it came, and how long the turn had taken
    /// in Parley before the call started (if this process received its message).
    BotDone(
        crate::chatbot::session::BotAnswer,
        Instant,
        Option<Duration>,
    ),
    /// An inbound media file fetched (or not).
    MediaDone(crate::media::MediaResult),
    Timer(DueTimer),
    SendFailed {
        outbox_id: i64,
        code: Option<i64>,
        detail: String,
        message: Option<crate::whatsapp::send::OutboundMessage>,
    },
    /// Apply every pending inbox row of this conversation (after a restart, a store outage,
    /// or when the sweep finds rows waiting).
    Replay,
}

pub struct ConversationArgs {
    pub engine: Arc<Engine>,
    pub account: Arc<AccountSettings>,
    pub user_key: String,
    pub sender: OutboxSender,
    pub account_ref: ActorRef<AccountMsg>,
    /// The seq this conversation failed on before, and how many times.
    pub poison: Option<(i64, u32)>,
    pub applying: Arc<AtomicI64>,
    /// Calls made off the actor whose outcome has not been handled yet (the account does not
    /// passivate the conversation meanwhile).
    pub calls: Arc<AtomicUsize>,
}

pub struct ConversationActorState {
    args: ConversationArgs,
    myself: Option<ActorRef<ConversationMsg>>,
    conv: ConversationState,
    last_applied_seq: i64,
    loaded: bool,
    /// A commit failed: later events wait in the inbox until a replay succeeds.
    stalled: bool,
    retry_scheduled: bool,
    /// A message handed over while its batch was still open went unapplied: the next replay
    /// first waits for the writer to end that batch (see `try_replay`).
    unseen: bool,
    /// The outbox rows of commits reported failed, by the step's time and idem keys: such a
    /// commit may have landed all the same (a PostgreSQL connection cut during COMMIT), and
    /// then its rows are in the store and no one has handed them to the sender. The next
    /// load looks for them (see `load`).
    unconfirmed: Vec<(i64, Vec<String>)>,
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not encode: {0}")]
    Encode(#[from] serde_json::Error),
}

impl ConversationActorState {
    fn engine(&self) -> &Engine {
        &self.args.engine
    }

    /// A business's request seen before (a retry with its idempotency key, e.g. after it was
    /// told of a commit that failed but landed): its message is already queued, so it is
    /// answered as a duplicate without a step, which would count it again. Campaigns keep
    /// their own record of what they sent and are not looked up.
    async fn seen_request(
        &self,
        event: &ConversationEvent,
    ) -> Option<Result<CommandOutcome, String>> {
        let (ConversationEvent::Outgoing { request_id, .. }
        | ConversationEvent::AgentReply { request_id, .. }) = event
        else {
            return None;
        };
        if crate::domain::is_campaign_request(request_id) {
            return None;
        }
        // Its rows' keys, whatever the place of its send among the step's effects.
        let prefix = step_key_prefix(
            &self.args.account.phone_number_id,
            &self.args.user_key,
            &origin(event, 0),
        );
        match self.engine().store.outbox_ids_of_step(prefix).await {
            Ok(ids) if ids.is_empty() => None,
            Ok(ids) => Some(Ok(CommandOutcome {
                ids,
                held: false,
                duplicate: true,
            })),
            Err(e) => Some(Err(e.to_string())),
        }
    }

    async fn load(&mut self) -> Result<(), StoreError> {
        if self.loaded {
            return Ok(());
        }
        let stored = self
            .engine()
            .store
            .load_conversation(&self.args.account.phone_number_id, &self.args.user_key)
            .await?;
        if let Some(stored) = stored {
            self.conv = serde_json::from_str(&stored.state_json)
                .map_err(|e| StoreError::Corrupt(format!("conversation state: {e}")))?;
            self.conv.last_inbound_at = stored.last_inbound_at.or(self.conv.last_inbound_at);
            self.last_applied_seq = stored.last_applied_seq;
        }
        // Before any event is applied again: rows of a commit that did not land are not
        // there, and the event's new rows (with a new time) are handed over as usual.
        if !self.unconfirmed.is_empty() {
            let landed = self
                .engine()
                .store
                .unconfirmed_outbox(&self.unconfirmed)
                .await?;
            self.unconfirmed.clear();
            if !landed.is_empty() {
                tracing::warn!(user = %mask(&self.args.user_key), rows = landed.len(), "A commit reported failed had landed; sending its messages.");
                self.args.sender.enqueue(landed);
            }
        }
        self.loaded = true;
        // Calls the stored state waits on, whose outcome was lost (with the previous process,
        // or with a commit that failed), are made again before any new event can make calls
        // of its own. One still out as well costs a second call; the first answer settles it.
        let resumed = self.args.engine.logic.resume(&self.conv);
        self.call_models(&resumed, None);
        self.run_calls(&resumed);
        Ok(())
    }

    /// Apply every pending inbox row after `last_applied_seq`, in order.
    async fn replay(&mut self, myself: &ActorRef<ConversationMsg>) {
        if let Err(e) = self.try_replay().await {
            tracing::warn!(user = %mask(&self.args.user_key), error = %e, "Conversation stalled; will retry from the inbox.");
            self.stall(myself);
        } else {
            self.stalled = false;
            self.unseen = false;
        }
    }

    async fn try_replay(&mut self) -> Result<(), ApplyError> {
        if self.unseen {
            // A message handed over from a batch still open was not applied (this actor was
            // stalled, or its predecessor failed with it in the mailbox). Read before that
            // batch commits, the inbox would not show it, and the next message would be
            // applied over its head: wait until the writer has ended the batch.
            let (account, user) = (&self.args.account.phone_number_id, &self.args.user_key);
            self.engine().writer.barrier(account, user).await?;
        }
        self.load().await?;
        let rows = self
            .engine()
            .store
            .pending_inbox(
                &self.args.account.phone_number_id,
                &self.args.user_key,
                self.last_applied_seq,
            )
            .await?;
        for row in rows {
            if row.seq <= self.last_applied_seq {
                continue;
            }
            let poisoned = self.args.poison.is_some_and(|(seq, n)| {
                seq == row.seq && n >= self.engine().settings().conversation.max_event_attempts
            });
            let message = match serde_json::from_str::<WebhookEvent>(&row.payload) {
                Ok(WebhookEvent::Message(m)) if !poisoned => Arc::new(m),
                Ok(_) | Err(_) => {
                    let reason = if poisoned {
                        "the conversation failed on this event repeatedly".to_string()
                    } else {
                        "inbox payload is not a message".to_string()
                    };
                    self.dead_letter(row.seq, reason, row.payload.into_bytes())
                        .await?;
                    continue;
                }
            };
            self.apply(
                ConversationEvent::Inbound {
                    seq: row.seq,
                    message,
                },
                Some(row.seq),
                None,
                None,
                None,
                None,
            )
            .await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        seq: i64,
        reason: String,
        raw: Vec<u8>,
    ) -> Result<(), StoreError> {
        tracing::error!(user = %mask(&self.args.user_key), seq, reason = %reason, "Event dead-lettered; the conversation moves on.");
        self.engine()
            .writer
            .dead_letter(
                NewDeadLetter {
                    kind: "inbox_event",
                    account: Some(self.args.account.phone_number_id.clone()),
                    user_key: Some(self.args.user_key.clone()),
                    ref_id: Some(seq),
                    reason,
                    raw: Some(raw),
                },
                Some(DeadInbox {
                    seq,
                    prev_seq: self.last_applied_seq,
                }),
            )
            .await?;
        self.last_applied_seq = self.last_applied_seq.max(seq);
        Ok(())
    }

    fn stall(&mut self, myself: &ActorRef<ConversationMsg>) {
        self.stalled = true;
        // The replay reads the state back: a commit reported failed may have landed (a
        // PostgreSQL connection cut during COMMIT), and the next step must not be taken from
        // the state before it.
        self.loaded = false;
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            drop(myself.send_after(Duration::from_secs(1), || ConversationMsg::Replay));
        }
    }

    /// Run `step`, commit its result, hand the sends to the sender. Returns the effects and
    /// the ids of the outbox rows created, in effect order.
    async fn apply(
        &mut self,
        event: ConversationEvent,
        seq: Option<i64>,
        timer_id: Option<i64>,
        batch: Option<u64>,
        arrived: Option<Instant>,
        answered: Option<TurnClock>,
    ) -> Result<(Vec<Effect>, Vec<i64>), ApplyError> {
        let engine = self.args.engine.clone();
        let now = engine.clock.now_ms();
        let ctx = {
            // The settings in force for this step (a reload may change the live ones).
            let settings = engine.settings();
            let account = settings.account(&self.args.account.phone_number_id);
            StepContext {
                now_ms: now,
                mark_read: account.map_or(self.args.account.mark_read, |a| a.mark_read),
                handoff_timeout_ms: settings.handoff.timeout.as_millis() as i64,
                default_bot: self.args.account.default_bot.clone(),
                fetch_media: settings.media.download,
                transcribe: engine.media.transcribes(),
                outside_window: settings.conversation.outside_window.clone(),
                hold_ms: settings.conversation.hold_for.as_millis() as i64,
            }
        };
        // What the account dead-letters if this step keeps failing: an inbox seq, or a
        // timer as minus its id.
        let applying = match (seq, timer_id) {
            (Some(seq), _) => seq,
            (None, Some(timer)) => -timer,
            (None, None) => 0,
        };
        self.args.applying.store(applying, Ordering::SeqCst);
        let (next, effects) = engine.logic.step(self.conv.clone(), &event, &ctx);

        let account = &self.args.account.phone_number_id;
        let user = &self.args.user_key;
        let origin = origin(&event, now);
        // A message sent while the customer-service window is open is a service reply;
        // anything else is business-initiated (counted against the messaging tier, and
        // sent after the account's service replies).
        // A campaign's template is business-initiated even inside the window (only its
        // free-form messages to open windows are service replies).
        let campaign_template = matches!(&event, ConversationEvent::Outgoing { request_id, message, .. }
            if crate::domain::is_campaign_request(request_id) && !message.is_free_form());
        let class = if next.window_open(now) && !campaign_template {
            SendClass::Service
        } else {
            SendClass::Business
        }
        .as_str();
        let mut outbox = Vec::new();
        let mut timers = Vec::new();
        let mut receipts = Vec::new();
        let mut flow_records = Vec::new();
        let mut bot_records = Vec::new();
        for (n, effect) in effects.iter().enumerate() {
            match effect {
                Effect::Send {
                    message, reply_to, ..
                } => outbox.push(NewOutboxRow {
                    idem_key: outbox_idem_key(account, user, &event, &origin, n),
                    kind: "message",
                    message_json: serde_json::to_string(message)?,
                    reply_to: reply_to.clone(),
                    source_seq: seq,
                    class,
                }),
                // Read receipts are cosmetic: sent after the commit, not stored.
                Effect::MarkRead { wamid } => receipts.push(wamid.clone()),
                Effect::StartTimer {
                    name,
                    due_at,
                    payload,
                } => timers.push(NewTimer {
                    idem_key: format!("{account}:{user}:{origin}:{n}"),
                    name: name.clone(),
                    payload: payload.to_string(),
                    due_at: *due_at,
                }),
                Effect::Refuse { reason }
                    if !matches!(
                        event,
                        ConversationEvent::Outgoing { .. } | ConversationEvent::AgentReply { .. }
                    ) =>
                {
                    // A flow's or bot's message the window policy refused: nobody to answer.
                    tracing::warn!(user = %mask(user), reason = %reason, "A message was not sent.");
                    metrics().dead_letters.inc("kind=\"refused_send\"");
                }
                Effect::Refuse { .. }
                | Effect::Held
                | Effect::Http(_)
                | Effect::BotCall(_)
                | Effect::FetchMedia(_) => {}
                Effect::FlowRecord(r) => flow_records.push(r.clone()),
                Effect::BotRecord(r) => bot_records.push(r.clone()),
            }
        }
        let unchanged = next == self.conv
            && outbox.is_empty()
            && timers.is_empty()
            && flow_records.is_empty()
            && bot_records.is_empty()
            && seq.is_none()
            && timer_id.is_none();
        // A model call starts before the step that records it commits: it acts on nothing
        // outside (its answer is ignored unless the committed state waits for that call), so
        // the commit's fsync overlaps the model's time instead of adding to the reply's. If
        // the commit fails or the process dies first, the event is applied again and makes a
        // new call: at most one call is paid twice.
        self.call_models(&effects, arrived);
        let mut records = if unchanged {
            Vec::new()
        } else {
            // Campaigns select contacts by tag and skip those who opted out: both are
            // mirrored into `contacts` with the step.
            let tags_changed = next.contact.tags != self.conv.contact.tags;
            let opted_out_at = match &event {
                ConversationEvent::Inbound { message, .. } => message
                    .content
                    .user_text()
                    .and_then(|t| engine.settings().campaigns.opt_out_change(t))
                    .map(|out| if out { now } else { 0 }),
                _ => None,
            };
            let tags = tags_changed
                .then(|| serde_json::to_string(&next.contact.tags))
                .transpose()?;
            // The row is written when something in it changes (a first message, a new
            // profile name, tags, an opt-out), not on every message: when the contact last
            // wrote is the conversation's `last_inbound_at`, already in this commit.
            let (was, is) = (&self.conv.contact, &next.contact);
            let details_changed = self.conv.last_inbound_at.is_none()
                || was.wa_id != is.wa_id
                || was.user_id != is.user_id
                || was.profile_name != is.profile_name;
            let contact = (matches!(event, ConversationEvent::Inbound { .. }) && details_changed
                || tags_changed
                || opted_out_at.is_some())
            .then(|| ContactUpsert {
                wa_id: next.contact.wa_id.clone(),
                user_id: next.contact.user_id.clone(),
                profile_name: next.contact.profile_name.clone(),
                tags,
                opted_out_at,
            });
            let commit = StepCommit {
                account: account.clone(),
                user_key: user.clone(),
                state_json: serde_json::to_string(&next)?,
                last_inbound_at: next.last_inbound_at,
                last_applied_seq: self.last_applied_seq.max(seq.unwrap_or(0)),
                inbox_done: seq,
                prev_seq: self.last_applied_seq,
                timer_fired: timer_id,
                contact,
                outbox,
                timers,
                flow_records,
                bot_records,
                now,
                batch,
            };
            match engine.writer.commit_step(commit).await {
                Ok(records) => records,
                Err(e) => {
                    // It may have landed: the state is read back and the rows looked for.
                    let keys: Vec<String> = effects
                        .iter()
                        .enumerate()
                        .filter(|(_, effect)| matches!(effect, Effect::Send { .. }))
                        .map(|(n, _)| outbox_idem_key(account, user, &event, &origin, n))
                        .collect();
                    if !keys.is_empty() {
                        self.unconfirmed.push((now, keys));
                    }
                    if let Some(me) = self.myself.clone() {
                        self.stall(&me);
                    }
                    return Err(e.into());
                }
            }
        };
        self.args.applying.store(0, Ordering::SeqCst);
        self.conv = next;
        if let Some(seq) = seq {
            self.last_applied_seq = self.last_applied_seq.max(seq);
            metrics().inbox_applied.fetch_add(1, Ordering::Relaxed);
            if self.args.poison.take().is_some() {
                let _ = self
                    .args
                    .account_ref
                    .cast(AccountMsg::Recovered(user.clone()));
            }
        }
        let ids = records.iter().map(|r| r.id).collect();
        if let Some(newest) = receipts.pop() {
            self.args.sender.mark_read(&self.args.user_key, newest);
        }
        if !records.is_empty() {
            if let Some(reply) = records.iter_mut().find(|r| r.kind == "message") {
                reply.turn = answered;
            }
            self.args.sender.enqueue(records);
        }
        self.run_calls(&effects);
        for effect in &effects {
            if let Effect::FlowRecord(FlowRecord {
                flow_id,
                error: Some(why),
                ..
            }) = effect
            {
                // A flow stopped by the runaway guard or an error: kept for a human; the
                // conversation goes on.
                let letter = NewDeadLetter {
                    kind: "flow_failed",
                    account: Some(account.clone()),
                    user_key: Some(user.clone()),
                    ref_id: seq,
                    reason: format!("flow `{flow_id}` stopped: {why}"),
                    raw: None,
                };
                // Counted by the writer as it records it (not here too).
                if let Err(e) = engine.writer.dead_letter(letter, None).await {
                    tracing::warn!(error = %e, "Recording a failed flow failed.");
                }
            }
        }
        Ok((effects, ids))
    }

    /// Make the model calls among `effects` off the actor; each answer comes back as a
    /// message.
    fn call_models(&self, effects: &[Effect], arrived: Option<Instant>) {
        for effect in effects {
            if let Effect::BotCall(call) = effect {
                let before = arrived.map(|at| at.elapsed());
                if let Some(before) = before {
                    metrics()
                        .bot_before_call_us
                        .observe(before.as_micros() as u64);
                }
                let (providers, call, me) = (
                    self.args.engine.bots.clone(),
                    call.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let answer = providers.call(&call).await;
                    crate::metrics::metrics().bot_answer(
                        &call.bot,
                        answer.error.is_some(),
                        answer.latency_ms,
                    );
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::BotDone(answer, Instant::now(), before));
                    }
                });
            }
        }
    }

    /// Make the HTTP calls and media fetches among `effects` off the actor (after the step
    /// that asked for them committed); each outcome comes back as a message.
    fn run_calls(&self, effects: &[Effect]) {
        for effect in effects {
            if let Effect::BotRecord(r) = effect {
                if r.started {
                    crate::metrics::metrics().bot_session(&r.bot, "started");
                }
                if r.status != crate::chatbot::session::BotStatus::Active {
                    crate::metrics::metrics().bot_session(&r.bot, r.status.as_str());
                }
            }
            if let Effect::FetchMedia(fetch) = effect {
                let (engine, account, user, fetch, me) = (
                    self.args.engine.clone(),
                    self.args.account.clone(),
                    self.args.user_key.clone(),
                    fetch.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let settings = engine.settings_arc();
                    let token = crate::outbox::token_for(&settings, &account.phone_number_id);
                    let result = match fetch.id() {
                        Ok(id) => {
                            engine
                                .media
                                .fetch(&account.phone_number_id, token, &id, &fetch)
                                .await
                        }
                        // Never put into a Graph URL: kept for a human, and the
                        // conversation hears the fetch failed.
                        Err(e) => {
                            let (result, letter) =
                                fetch.refused(&account.phone_number_id, &user, &e);
                            if let Err(e) = engine.writer.dead_letter(letter, None).await {
                                tracing::warn!(error = %e, "Recording an invalid media id failed.");
                            }
                            result
                        }
                    };
                    if let Some(e) = &result.error {
                        tracing::warn!(user = %mask(&user), media = %fetch.media_id, error = %e, "Media not stored.");
                    }
                    if let Err(e) = engine
                        .store
                        .record_media(&result.row(&account.phone_number_id, &user))
                        .await
                    {
                        tracing::warn!(error = %e, "Recording a media file failed.");
                    }
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::MediaDone(result));
                    }
                });
            }
            if let Effect::Http(call) = effect {
                let (caller, call, me) = (
                    self.args.engine.outcall.load_full(),
                    call.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let outcome = caller.call(&call).await;
                    crate::metrics::metrics().flow_http_calls(outcome.status);
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::HttpDone(outcome));
                    }
                });
            }
        }
    }
}

// The actor's task holds its handler's future inline for as long as the actor lives, so
// the large step/commit futures are boxed: they cost memory only while they run, and an
// idle resident conversation stays small.
impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationActorState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConversationArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Nothing slow here: the account waits for pre_start. Loading happens in post_start.
        metrics().live_conversations.fetch_add(1, Ordering::Relaxed);
        // Restarted after a failure: the failed actor may have been handed messages of a
        // batch still open, and lost them with its mailbox.
        let unseen = args.poison.is_some();
        Ok(ConversationActorState {
            args,
            myself: None,
            conv: ConversationState::default(),
            last_applied_seq: 0,
            loaded: false,
            stalled: false,
            retry_scheduled: false,
            unseen,
            unconfirmed: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Before any queued message: events committed earlier come first.
        state.myself = Some(myself.clone());
        Box::pin(state.replay(&myself)).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        metrics().live_conversations.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConversationMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConversationMsg::Inbound(d) => {
                if state.stalled || !state.loaded {
                    // It is in the inbox (or its batch fails and Meta sends it again); the
                    // scheduled replay applies it in order.
                    state.unseen |= d.batch.is_some();
                    return Ok(());
                }
                if d.seq <= state.last_applied_seq {
                    return Ok(());
                }
                let event = ConversationEvent::Inbound {
                    seq: d.seq,
                    message: d.message,
                };
                if let Err(e) =
                    Box::pin(state.apply(event, Some(d.seq), None, d.batch, d.arrived, None)).await
                {
                    tracing::warn!(user = %mask(&state.args.user_key), seq = d.seq, error = %e, "Commit failed; conversation stalled until the store answers.");
                    state.stall(&myself);
                }
            }
            ConversationMsg::Replay => {
                state.retry_scheduled = false;
                Box::pin(state.replay(&myself)).await;
            }
            ConversationMsg::Command { event, reply } => {
                if state.stalled || !state.loaded {
                    Box::pin(state.replay(&myself)).await;
                }
                let result = if state.stalled {
                    Err("store unavailable".to_string())
                } else if let Some(seen) = state.seen_request(&event).await {
                    seen
                } else {
                    match Box::pin(state.apply(event, None, None, None, None, None)).await {
                        Ok((effects, ids)) => match effects.iter().find_map(|e| match e {
                            Effect::Refuse { reason } => Some(reason.clone()),
                            _ => None,
                        }) {
                            Some(reason) => Err(reason),
                            None => Ok(CommandOutcome {
                                ids,
                                held: effects.contains(&Effect::Held),
                                duplicate: false,
                            }),
                        },
                        Err(e) => Err(e.to_string()),
                    }
                };
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            msg @ (ConversationMsg::HttpDone(_)
            | ConversationMsg::BotDone(..)
            | ConversationMsg::MediaDone(_)) => {
                state.args.calls.fetch_sub(1, Ordering::AcqRel);
                if state.stalled || !state.loaded {
                    Box::pin(state.replay(&myself)).await;
                }
                let (event, answered) = match msg {
                    ConversationMsg::HttpDone(o) => (ConversationEvent::HttpResult(o), None),
                    // Its reply's send measures the turn (see `outbox::deliver`).
                    ConversationMsg::BotDone(a, answered_at, before_call) => (
                        ConversationEvent::BotResult(a),
                        Some(TurnClock {
                            answered_at,
                            before_call,
                        }),
                    ),
                    ConversationMsg::MediaDone(r) => (ConversationEvent::MediaReady(r), None),
                    _ => unreachable!("matched above"),
                };
                match Box::pin(state.apply(event, None, None, None, None, answered)).await {
                    Ok(_) => {}
                    // The call stays pending in the committed state: the replay reads that
                    // state back and makes the call again.
                    Err(e) => {
                        tracing::warn!(user = %mask(&state.args.user_key), error = %e, "Recording a call's outcome failed; the call will be made again.");
                        state.stall(&myself);
                    }
                }
            }
            ConversationMsg::Timer(t) => {
                if state.stalled || !state.loaded {
                    return Ok(()); // the timer stays pending and fires again
                }
                let event = ConversationEvent::TimerFired {
                    timer_id: t.id,
                    name: t.name,
                    payload: serde_json::from_str(&t.payload).unwrap_or(serde_json::Value::Null),
                };
                if let Err(e) =
                    Box::pin(state.apply(event, None, Some(t.id), None, None, None)).await
                {
                    tracing::warn!(error = %e, "Timer step failed; it will fire again.");
                }
            }
            ConversationMsg::SendFailed {
                outbox_id,
                code,
                detail,
                mut message,
            } => {
                if !state.loaded {
                    Box::pin(state.replay(&myself)).await;
                }
                if message.is_none() && code == Some(crate::conversation::WINDOW_CLOSED_CODE) {
                    // From a status webhook: the message goes through the window policy.
                    message = state
                        .engine()
                        .store
                        .outbox_message(outbox_id)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|json| serde_json::from_str(&json).ok());
                }
                let event = ConversationEvent::SendFailed {
                    outbox_id,
                    code,
                    detail,
                    message,
                };
                if let Err(e) = Box::pin(state.apply(event, None, None, None, None, None)).await {
                    tracing::warn!(error = %e, "Recording a send failure in the conversation failed.");
                }
            }
        }
        Ok(())
    }
}

/// What caused a step, as its outbox rows' idem keys name it.
fn origin(event: &ConversationEvent, now: i64) -> String {
    match event {
        ConversationEvent::Inbound { seq, .. } => format!("in{seq}"),
        ConversationEvent::TimerFired { timer_id, .. } => format!("t{timer_id}"),
        ConversationEvent::Outgoing { request_id, .. }
        | ConversationEvent::AgentReply { request_id, .. } => format!("out{request_id}"),
        ConversationEvent::SendFailed { outbox_id, .. } => format!("f{outbox_id}"),
        ConversationEvent::Handoff { .. } | ConversationEvent::Release { .. } => {
            format!("c{now}")
        }
        ConversationEvent::HttpResult(o) => format!("h{}", o.id),
        ConversationEvent::BotResult(a) => format!("b{}", a.id),
        ConversationEvent::MediaReady(r) => format!("m{}", r.media_id),
    }
}

/// An outbox row's idempotency key (unique in the store: a step that runs again inserts
/// nothing new). A reply to an inbound message is keyed by that message's inbox seq alone,
/// `in{seq:020}:{n}`: seqs are unique and rise with arrival, so the replies a commit inserts
/// sit together at the end of the unique index instead of one page each at their contact's
/// place (~5 KB fewer written per message on the shop workload); the admin view finds them
/// along the conversation's inbound chain ([`crate::store::inbound_reply_key_range`]). Every
/// other origin keeps `{account}:{user}:{origin}:{n}`, read per conversation as a key range.
fn outbox_idem_key(
    account: &str,
    user: &str,
    event: &ConversationEvent,
    origin: &str,
    n: usize,
) -> String {
    match event {
        ConversationEvent::Inbound { seq, .. } => crate::store::inbound_reply_key(*seq, n),
        _ => format!("{}{n}", step_key_prefix(account, user, origin)),
    }
}

/// What the idem keys of a step's rows start with, for every origin but an inbound message:
/// `{account}:{user}:{origin}:` (the effect's place follows).
fn step_key_prefix(account: &str, user: &str, origin: &str) -> String {
    format!("{account}:{user}:{origin}:")
}
