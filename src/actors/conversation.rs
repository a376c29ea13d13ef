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
use crate::conversation::plan::{origin_key, send_keys, step_key_prefix};
use crate::conversation::{
    plan, ConversationEvent, ConversationState, Effect, FlowRecord, Origin, Outcome, StepContext,
};
use crate::domain::{ConversationKey, UserKey};
use crate::metrics::metrics;
use crate::outbox::OutboxSender;
use crate::store::DeadInbox;
use crate::store::{DueTimer, InboxDispatch, NewDeadLetter, StoreError, TurnClock};
use crate::telemetry::mask;
use crate::whatsapp::event::WebhookEvent;

mod calls;

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
    /// The shop's answer to a flow's call.
    CommerceDone(crate::commerce::CommerceResult),
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
    pub user_key: UserKey,
    pub sender: OutboxSender,
    pub account_ref: ActorRef<AccountMsg>,
    /// What this conversation failed on before, and how many times.
    pub poison: Option<(Applying, u32)>,
    pub applying: Arc<ApplyingCell>,
    /// Calls made off the actor whose outcome has not been handled yet (the account does not
    /// passivate the conversation meanwhile).
    pub calls: Arc<AtomicUsize>,
}

/// What a conversation actor is applying, readable by its account after the actor failed: a
/// step that fails every time is dead-lettered rather than retried for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Applying {
    #[default]
    Nothing,
    /// An inbox row, by its seq (dead-lettered by the conversation's next replay).
    Event(i64),
    /// A timer, by its id (dead-lettered by the account: it would fire again for ever).
    Timer(i64),
}

/// [`Applying`] in one atomic word, written at every step: an inbox seq (> 0), minus a
/// timer's id (< 0), or 0.
#[derive(Debug, Default)]
pub struct ApplyingCell(AtomicI64);

impl ApplyingCell {
    pub fn set(&self, applying: Applying) {
        let word = match applying {
            Applying::Nothing => 0,
            Applying::Event(seq) => seq,
            Applying::Timer(id) => -id,
        };
        self.0.store(word, Ordering::SeqCst);
    }

    pub fn get(&self) -> Applying {
        match self.0.load(Ordering::SeqCst) {
            0 => Applying::Nothing,
            seq if seq > 0 => Applying::Event(seq),
            id => Applying::Timer(-id),
        }
    }
}

/// Where the actor stands with its stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started (or its state dropped): the state is read before the next event.
    Unloaded,
    /// The state in memory is the committed one: events are applied as they come.
    Ready,
    /// A commit failed (it may have landed all the same): later events wait in the inbox
    /// until a replay reads the state back and applies them.
    Stalled,
}

pub struct ConversationActorState {
    args: ConversationArgs,
    /// This conversation: the account's number and the customer.
    key: ConversationKey,
    myself: Option<ActorRef<ConversationMsg>>,
    conv: ConversationState,
    last_applied_seq: i64,
    phase: Phase,
    /// A `Replay` message is on its way (at most one at a time).
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
        // Held (no outbox row yet), or held and released by a later step (its rows carry
        // that step's keys): a reminder handed over again after a crash is not held twice.
        if self.conv.knows_held_request(request_id) {
            return Some(Ok(CommandOutcome {
                ids: Vec::new(),
                held: true,
                duplicate: true,
            }));
        }
        // Its rows' keys, whatever the place of its send among the step's effects.
        let prefix = step_key_prefix(
            &self.args.account.phone_number_id,
            &self.args.user_key,
            &origin_key(event, 0),
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
        if self.phase == Phase::Ready {
            return Ok(());
        }
        let stored = self.engine().store.load_conversation(&self.key).await?;
        if let Some(stored) = stored {
            self.conv = serde_json::from_str(&stored.state_json)
                .map_err(|e| StoreError::Corrupt(format!("conversation state: {e}")))?;
            self.conv.last_inbound_at = stored.last_inbound_at.or(self.conv.last_inbound_at);
            self.last_applied_seq = stored.last_applied_seq;
        } else if let Some(seed) = self.engine().store.contact_seed(&self.key).await? {
            // A contact made before the customer first wrote (admin API, import): its tags,
            // profile fields and block are the conversation's from the start.
            self.conv.contact.tags = seed.tags;
            self.conv.contact.fields.extend(seed.profile);
            self.conv.contact.blocked = seed.blocked;
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
        self.phase = Phase::Ready;
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
            self.unseen = false;
        }
    }

    async fn try_replay(&mut self) -> Result<(), ApplyError> {
        if self.unseen {
            // A message handed over from a batch still open was not applied (this actor was
            // stalled, or its predecessor failed with it in the mailbox). Read before that
            // batch commits, the inbox would not show it, and the next message would be
            // applied over its head: wait until the writer has ended the batch.
            self.engine().writer.barrier(&self.key).await?;
        }
        self.load().await?;
        let rows = self
            .engine()
            .store
            .pending_inbox(&self.key, self.last_applied_seq)
            .await?;
        for row in rows {
            if row.seq <= self.last_applied_seq {
                continue;
            }
            let poisoned = self.args.poison.is_some_and(|(failed, n)| {
                failed == Applying::Event(row.seq)
                    && n >= self.engine().settings().conversation.max_event_attempts
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
            let origin = Origin::Inbox {
                seq: row.seq,
                batch: None,
                arrived: None,
            };
            let event = ConversationEvent::Inbound {
                seq: row.seq,
                message,
            };
            self.apply(event, origin).await?;
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
        // The replay reads the state back: a commit reported failed may have landed (a
        // PostgreSQL connection cut during COMMIT), and the next step must not be taken from
        // the state before it.
        self.phase = Phase::Stalled;
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            drop(myself.send_after(Duration::from_secs(1), || ConversationMsg::Replay));
        }
    }

    /// Run `step`, plan its outcome ([`crate::conversation::plan`]), commit the plan, hand
    /// the sends to the sender and run the other effects. Returns the effects and the ids of
    /// the outbox rows created, in effect order.
    async fn apply(
        &mut self,
        event: ConversationEvent,
        origin: Origin,
    ) -> Result<(Vec<Effect>, Vec<i64>), ApplyError> {
        let engine = self.args.engine.clone();
        let now = engine.clock.now_ms();
        let settings = engine.settings_arc();
        let ctx = {
            // The settings in force for this step (a reload may change the live ones).
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
        self.args
            .applying
            .set(match (origin.seq(), origin.timer()) {
                (Some(seq), _) => Applying::Event(seq),
                (None, Some(timer)) => Applying::Timer(timer),
                (None, None) => Applying::Nothing,
            });
        let (next, effects) = engine.logic.step(self.conv.clone(), &event, &ctx);
        let opt_out = match &event {
            ConversationEvent::Inbound { message, .. } => message
                .content
                .user_text()
                .and_then(|t| settings.campaigns.opt_out_change(t)),
            _ => None,
        };
        let (account, user) = (&self.args.account.phone_number_id, &self.args.user_key);
        let plan = plan(&Outcome {
            account,
            user,
            before: &self.conv,
            after: &next,
            event: &event,
            effects: &effects,
            origin,
            last_applied_seq: self.last_applied_seq,
            now,
            opt_out,
        })?;
        for reason in &plan.unheard_refusals {
            tracing::warn!(user = %mask(user), reason = %reason, "A message was not sent.");
            metrics().dead_letters.inc("kind=\"refused_send\"");
        }
        // A model call starts before the step that records it commits: it acts on nothing
        // outside (its answer is ignored unless the committed state waits for that call), so
        // the commit's fsync overlaps the model's time instead of adding to the reply's. If
        // the commit fails or the process dies first, the event is applied again and makes a
        // new call: at most one call is paid twice.
        self.call_models(&effects, origin.arrived());
        let mut records = match plan.commit {
            None => Vec::new(),
            Some(commit) => match engine.writer.commit_step(commit).await {
                Ok(records) => records,
                Err(e) => {
                    // It may have landed: the state is read back and the rows looked for.
                    let keys = send_keys(account, user, &event, &effects, now);
                    if !keys.is_empty() {
                        self.unconfirmed.push((now, keys));
                    }
                    if let Some(me) = self.myself.clone() {
                        self.stall(&me);
                    }
                    return Err(e.into());
                }
            },
        };
        self.args.applying.set(Applying::Nothing);
        self.conv = next;
        let (account, user) = (&self.args.account.phone_number_id, &self.args.user_key);
        if let Some(seq) = origin.seq() {
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
        if let Some(newest) = plan.receipt {
            self.args.sender.mark_read(user, newest);
        }
        if !records.is_empty() {
            if let Some(reply) = records
                .iter_mut()
                .find(|r| r.kind == crate::domain::OutboxKind::Message)
            {
                reply.turn = origin.answered();
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
                    ref_id: origin.seq(),
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
            key: ConversationKey::new(args.account.phone_number_id.as_str(), args.user_key.clone()),
            args,
            myself: None,
            conv: ConversationState::default(),
            last_applied_seq: 0,
            phase: Phase::Unloaded,
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
                if state.phase != Phase::Ready {
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
                let origin = Origin::Inbox {
                    seq: d.seq,
                    batch: d.batch,
                    arrived: d.arrived,
                };
                if let Err(e) = Box::pin(state.apply(event, origin)).await {
                    tracing::warn!(user = %mask(&state.args.user_key), seq = d.seq, error = %e, "Commit failed; conversation stalled until the store answers.");
                    state.stall(&myself);
                }
            }
            ConversationMsg::Replay => {
                state.retry_scheduled = false;
                Box::pin(state.replay(&myself)).await;
            }
            ConversationMsg::Command { event, reply } => {
                if state.phase != Phase::Ready {
                    Box::pin(state.replay(&myself)).await;
                }
                let result = if state.phase != Phase::Ready {
                    Err("store unavailable".to_string())
                } else if let Some(seen) = state.seen_request(&event).await {
                    seen
                } else {
                    match Box::pin(state.apply(event, Origin::Command)).await {
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
            | ConversationMsg::MediaDone(_)
            | ConversationMsg::CommerceDone(_)) => {
                state.args.calls.fetch_sub(1, Ordering::AcqRel);
                if state.phase != Phase::Ready {
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
                    ConversationMsg::CommerceDone(r) => {
                        (ConversationEvent::CommerceResult(r), None)
                    }
                    _ => unreachable!("matched above"),
                };
                match Box::pin(state.apply(event, Origin::CallOutcome { answered })).await {
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
                if state.phase != Phase::Ready {
                    return Ok(()); // the timer stays pending and fires again
                }
                let event = ConversationEvent::TimerFired {
                    timer_id: t.id,
                    name: t.name,
                    payload: serde_json::from_str(&t.payload).unwrap_or(serde_json::Value::Null),
                };
                if let Err(e) = Box::pin(state.apply(event, Origin::Timer { id: t.id })).await {
                    tracing::warn!(error = %e, "Timer step failed; it will fire again.");
                }
            }
            ConversationMsg::SendFailed {
                outbox_id,
                code,
                detail,
                mut message,
            } => {
                if state.phase != Phase::Ready {
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
                if let Err(e) = Box::pin(state.apply(event, Origin::Command)).await {
                    tracing::warn!(error = %e, "Recording a send failure in the conversation failed.");
                }
            }
        }
        Ok(())
    }
}
