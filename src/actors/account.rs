//! AccountActor: one per business number. Routes events to conversation actors (spawning
//! them on demand, passivating them when idle, restarting them when they fail) and owns the
//! account's outbox sender.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::conversation::{
    Applying, ApplyingCell, ConversationActor, ConversationArgs, ConversationMsg,
};
use super::Engine;
use crate::config::AccountSettings;
use crate::conversation::ConversationEvent;
use crate::domain::UserKey;
use crate::metrics::metrics;
use crate::outbox::OutboxSender;
use crate::store::TIMER_DEAD_LETTER;
use crate::store::{DueTimer, InboxDispatch, NewDeadLetter};
use crate::telemetry::mask;

/// How long shutdown waits for this account's conversations to stop.
const CHILDREN_STOP_WAIT: Duration = Duration::from_secs(5);

/// How long a conversation started only for a campaign message stays resident.
const CAMPAIGN_IDLE: Duration = Duration::from_secs(2);

/// How long an inbox row may stay pending before the sweep hands it to its conversation again.
const SWEEP_AGE: Duration = Duration::from_secs(5);
/// At most this often, freed memory is handed back to the system after passivation.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(15);

pub struct AccountActor;

pub enum AccountMsg {
    /// An inbound message, committed or in a batch still committing (see
    /// `InboxDispatch::batch`).
    Dispatch(InboxDispatch),
    /// The business acts on a conversation (send, handoff, agent reply, release); replies
    /// with the outbox ids created, or why it was refused.
    Command {
        user_key: UserKey,
        event: ConversationEvent,
        reply: RpcReplyPort<Result<super::conversation::CommandOutcome, String>>,
    },
    /// A campaign's message for one recipient (as `Command`). A conversation started only for
    /// it is passivated soon after, so a large campaign does not keep its recipients resident.
    CampaignSend {
        user_key: UserKey,
        event: ConversationEvent,
        reply: RpcReplyPort<Result<super::conversation::CommandOutcome, String>>,
    },
    /// A durable timer of one conversation came due.
    Timer(DueTimer),
    /// Meta refused a message for good.
    SendFailed(crate::outbox::SendFailure),
    /// A conversation that had failed has applied an event again.
    Recovered(UserKey),
    /// Load this conversation if it is not resident: the calls its stored state waits on
    /// are made again (a payment whose create call died with the previous process).
    Wake(UserKey),
    /// Passivate idle conversations; re-dispatch stale pending rows.
    Tick,
    /// Stop sending (in-flight sends finish or are left for the restart) and reply.
    Shutdown(RpcReplyPort<()>),
    /// Conversation actors resident now.
    LiveConversations(RpcReplyPort<usize>),
}

pub struct AccountArgs {
    pub engine: Arc<Engine>,
    pub account: Arc<AccountSettings>,
}

struct Live {
    actor: ActorRef<ConversationMsg>,
    last_routed: Instant,
    /// Started for a campaign message and nothing else since: passivated after CAMPAIGN_IDLE.
    campaign_only: bool,
    /// Model calls, HTTP calls and media fetches it is waiting on (see
    /// `ConversationArgs::calls`): it is not passivated while any is out.
    calls: Arc<AtomicUsize>,
}

pub struct AccountState {
    engine: Arc<Engine>,
    account: Arc<AccountSettings>,
    sender: OutboxSender,
    live: HashMap<UserKey, Live>,
    /// Per live actor: its conversation and what it is applying, readable after it failed.
    by_id: HashMap<ractor::ActorId, (UserKey, Arc<ApplyingCell>)>,
    /// Per conversation: what it failed on and how many times in a row. Passed to the
    /// restarted actor so that a poison event is dead-lettered instead of crashing it forever.
    failures: HashMap<UserKey, (Applying, u32)>,
    last_sweep: Instant,
    last_give_back: Instant,
    /// A wave of conversations was passivated: give its memory back on the next tick allowed.
    give_back_next_tick: bool,
    stopping: bool,
}

impl AccountState {
    async fn conversation(
        &mut self,
        myself: &ActorRef<AccountMsg>,
        user_key: &str,
    ) -> Result<ActorRef<ConversationMsg>, ActorProcessingErr> {
        if let Some(live) = self.live.get_mut(user_key) {
            live.last_routed = Instant::now();
            live.campaign_only = false;
            return Ok(live.actor.clone());
        }
        let applying = Arc::new(ApplyingCell::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (actor, _) = Actor::spawn_linked(
            None,
            ConversationActor,
            ConversationArgs {
                engine: self.engine.clone(),
                account: self.account.clone(),
                user_key: user_key.to_string().into(),
                sender: self.sender.clone(),
                account_ref: myself.clone(),
                poison: self.failures.get(user_key).copied(),
                applying: applying.clone(),
                calls: calls.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        self.by_id
            .insert(actor.get_id(), (user_key.to_string().into(), applying));
        self.live.insert(
            user_key.to_string().into(),
            Live {
                actor: actor.clone(),
                last_routed: Instant::now(),
                campaign_only: false,
                calls,
            },
        );
        Ok(actor)
    }

    async fn route(
        &mut self,
        myself: &ActorRef<AccountMsg>,
        user_key: &str,
        msg: ConversationMsg,
    ) -> Result<(), ActorProcessingErr> {
        let actor = self.conversation(myself, user_key).await?;
        if let Err(e) = actor.cast(msg) {
            // The actor is stopping; the event is in the store and the sweep will redeliver it.
            tracing::debug!(user = %mask(user_key), error = %e, "Conversation actor gone; event left for the sweep.");
        }
        Ok(())
    }

    /// Hand every conversation with stale pending rows to its actor.
    async fn sweep(&mut self, myself: &ActorRef<AccountMsg>, older_than: Option<i64>) {
        match self
            .engine
            .store
            .conversations_with_pending(&self.account.phone_number_id, older_than)
            .await
        {
            Ok(users) => {
                for user in users {
                    if let Err(e) = self.route(myself, &user, ConversationMsg::Replay).await {
                        tracing::error!(user = %mask(&user), error = %e, "Could not start a conversation for its pending events.");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Pending-inbox sweep failed; will try again."),
        }
    }
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        // Rows left unsent before this actor started are the sender's to resume (those in
        // `sending` may have reached Meta). Rows above this mark are committed by the
        // conversations this actor starts, which hand them over themselves, in their order.
        let resume_through = args.engine.store.outbox_high_water().await?;
        // A flows reload must keep this account's default bot (checked at start too).
        if let Some(flows) = &args.engine.flows {
            flows.require_default_bot(
                &args.account.phone_number_id,
                args.account.default_bot.clone(),
            );
        }
        let report: crate::outbox::FailureReport = {
            let me = myself.clone();
            Arc::new(move |f: crate::outbox::SendFailure| {
                let _ = me.cast(AccountMsg::SendFailed(f));
            })
        };
        let sender = OutboxSender::start(
            args.engine.clone(),
            args.account.clone(),
            report,
            resume_through,
        );
        Ok(AccountState {
            engine: args.engine,
            account: args.account,
            sender,
            live: HashMap::new(),
            by_id: HashMap::new(),
            failures: HashMap::new(),
            last_sweep: Instant::now(),
            last_give_back: Instant::now() - GIVE_BACK_EVERY,
            give_back_next_tick: false,
            stopping: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        // Conversations with events that were committed but not applied before the last stop.
        state.sweep(&myself, None).await;
        let idle = state.engine.settings().conversation.idle_timeout;
        let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        myself.send_interval(period, || AccountMsg::Tick);
        tracing::info!(account = %state.account.phone_number_id, "Account started.");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: AccountMsg,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        // A campaign's send marks a conversation it woke as the campaign's only.
        let campaign = matches!(msg, AccountMsg::CampaignSend { .. });
        match msg {
            AccountMsg::Dispatch(d) => {
                let user = d.user_key.clone();
                state
                    .route(&myself, &user, ConversationMsg::Inbound(d))
                    .await?;
            }
            AccountMsg::Command {
                user_key,
                event,
                reply,
            }
            | AccountMsg::CampaignSend {
                user_key,
                event,
                reply,
            } => {
                if state.stopping {
                    let _ = reply.send(Err("shutting down".into()));
                    return Ok(());
                }
                let fresh = !state.live.contains_key(&user_key);
                state
                    .route(
                        &myself,
                        &user_key,
                        ConversationMsg::Command { event, reply },
                    )
                    .await?;
                if campaign {
                    if let Some(live) = state.live.get_mut(&user_key) {
                        live.campaign_only = fresh;
                    }
                }
            }
            AccountMsg::Timer(t) => {
                let user = t.user_key.clone();
                state
                    .route(&myself, &user, ConversationMsg::Timer(t))
                    .await?;
            }
            AccountMsg::SendFailed(crate::outbox::SendFailure {
                user_key,
                outbox_id,
                code,
                detail,
                message,
            }) => {
                state
                    .route(
                        &myself,
                        &user_key,
                        ConversationMsg::SendFailed {
                            outbox_id,
                            code,
                            detail,
                            message,
                        },
                    )
                    .await?;
            }
            AccountMsg::Recovered(user) => {
                state.failures.remove(user.as_str());
            }
            AccountMsg::Wake(user) => {
                if !state.stopping {
                    state.route(&myself, &user, ConversationMsg::Replay).await?;
                }
            }
            AccountMsg::Tick => {
                if state.stopping {
                    return Ok(());
                }
                let idle = state.engine.settings().conversation.idle_timeout;
                let idle_users: Vec<UserKey> = state
                    .live
                    .iter()
                    .filter(|(_, l)| {
                        let quiet = l.last_routed.elapsed();
                        // A call's answer goes to this actor alone: stopped before it comes,
                        // the conversation would wait for it until the customer writes again.
                        (quiet >= idle || (l.campaign_only && quiet >= CAMPAIGN_IDLE))
                            && l.calls.load(Ordering::Acquire) == 0
                    })
                    .map(|(u, _)| u.clone())
                    .collect();
                // Messages are handed to conversations while their batch is still open. One
                // routed to an idle conversation before this tick is committed once every
                // batch open now has ended; only then may a successor started for a later
                // message read the inbox without missing it. (If the store does not answer,
                // nobody is passivated this tick.)
                let idle_users =
                    if idle_users.is_empty() || state.engine.writer.ping().await.is_ok() {
                        idle_users
                    } else {
                        Vec::new()
                    };
                let passivated = idle_users.len();
                for user in idle_users {
                    if let Some(live) = state.live.remove(&user) {
                        // Its state is already in the store; nothing is routed to it any more.
                        live.actor.stop(Some("idle".into()));
                    }
                }
                if passivated > 0 && state.live.capacity() > 4 * state.live.len().max(64) {
                    // Give back the table of a burst of conversations that has gone quiet.
                    state.live.shrink_to_fit();
                    state.by_id.shrink_to_fit();
                }
                if state.give_back_next_tick && state.last_give_back.elapsed() >= GIVE_BACK_EVERY {
                    // A wave stopped before this tick and its memory is free: ask the
                    // allocator to return those pages to the system rather than keep them
                    // for reuse. (That walks the heap, so at most every GIVE_BACK_EVERY.)
                    state.give_back_next_tick = false;
                    state.last_give_back = Instant::now();
                    crate::metrics::give_back_memory();
                }
                if passivated >= 1000 && passivated >= state.live.len() {
                    // Most conversations went quiet at once. Their actors stop after this
                    // message, so their memory is given back on a later tick. A wave that
                    // spans several ticks is given back whole: what its last tick stopped
                    // waits for the next turn rather than being forgotten.
                    state.give_back_next_tick = true;
                }
                if state.last_sweep.elapsed() >= SWEEP_AGE {
                    state.last_sweep = Instant::now();
                    let cutoff = state.engine.clock.now_ms() - SWEEP_AGE.as_millis() as i64;
                    state.sweep(&myself, Some(cutoff)).await;
                }
            }
            AccountMsg::LiveConversations(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(state.live.len());
                }
            }
            AccountMsg::Shutdown(reply) => {
                state.stopping = true;
                // Conversations first: each finishes the step it is in (its commit) and stops,
                // so no send is queued after the sender takes stock of what it never tried.
                state.live.clear();
                // Bounded here: ractor's own timed wait panics when it expires. What a
                // conversation had not committed is replayed from the inbox on the next start.
                let wait = myself.stop_children_and_wait(None, None);
                if tokio::time::timeout(CHILDREN_STOP_WAIT, wait)
                    .await
                    .is_err()
                {
                    tracing::warn!("Some conversations did not stop in time.");
                }
                state.sender.shutdown().await;
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((user, _)) = state.by_id.remove(&cell.get_id()) {
                    if state
                        .live
                        .get(&user)
                        .is_some_and(|l| l.actor.get_id() == cell.get_id())
                    {
                        state.live.remove(&user);
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some((user, applying)) = state.by_id.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let failed = applying.get();
                if state
                    .live
                    .get(&user)
                    .is_some_and(|l| l.actor.get_id() == cell.get_id())
                {
                    state.live.remove(&user);
                }
                metrics()
                    .conversation_restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let entry = state.failures.entry(user.clone()).or_insert((failed, 0));
                if entry.0 != failed {
                    *entry = (failed, 0);
                }
                entry.1 += 1;
                tracing::error!(user = %mask(&user), error = %err, applying = ?failed, failures = entry.1, "Conversation failed; restarting it from its stored state.");
                let attempts = state.engine.settings().conversation.max_event_attempts;
                if let (Applying::Timer(timer), true) = (failed, entry.1 >= attempts) {
                    // A timer whose step fails every time: it would fire again for ever.
                    // (An inbox event is dead-lettered by its conversation's replay.)
                    state.failures.remove(&user);
                    let letter = NewDeadLetter {
                        kind: TIMER_DEAD_LETTER,
                        account: Some(state.account.phone_number_id.clone()),
                        user_key: Some(user.clone()),
                        ref_id: Some(timer),
                        reason: format!("the conversation failed on this timer {attempts} times"),
                        raw: None,
                    };
                    match state.engine.writer.dead_letter(letter, None).await {
                        Ok(()) => {
                            tracing::error!(user = %mask(&user), timer, "Timer dead-lettered; the conversation moves on.")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, timer, "Could not dead-letter a failing timer; it fires again.")
                        }
                    }
                }
                if !state.stopping {
                    // Restart now: it replays its unapplied events from the inbox.
                    state.route(&myself, &user, ConversationMsg::Replay).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
