//! Flows as conversation behaviour: the core step (contact, window, read receipt), then the
//! flow engine on the user's message or a flow timer. Pure, like the rest of `step`.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bot::{bot_of, settle_bot, start_bot, text_of};
use super::load_all;
use crate::chatbot::session::{self as bot_session, Outcome, BOT_TIMER};
use crate::chatbot::BotSet;
use crate::conversation::{
    enter_handoff, settle_window, step as core_step, ConversationEvent, ConversationLogic,
    ConversationState, Effect, FlowRecord, HandoffBy, Layer, StepContext,
};
use crate::domain::FlowRunStatus;
use crate::flow::model::OnUpdate;
use crate::flow::{
    step as flow_step, FlowAction, FlowContext, FlowError, FlowInput, FlowSet, FlowState, MAX_STEPS,
};
use crate::whatsapp::event::{InboundMessage, Media, MessageContent};

/// Key of the flow state inside `ConversationState::ext`.
const STATE_KEY: &str = "flow";
/// Key of a voice note being transcribed inside `ConversationState::ext`.
const VOICE_KEY: &str = "voice";
/// Prefix of the timers a flow asks for.
const TIMER_PREFIX: &str = "flow:";

/// The flows in force, swapped whole on reload, plus the earlier sets that conversations
/// started on (a conversation keeps the version of the flow it started with).
#[derive(Clone)]
pub struct FlowRegistry(Arc<RwLock<Registry>>);

struct Registry {
    current: Arc<FlowSet>,
    older: Vec<Arc<FlowSet>>,
    last_error: Option<Vec<String>>,
    bots: Arc<BotSet>,
    /// The configured model providers, checked on reload (None: not checked).
    providers: Option<Vec<String>>,
    /// (account, bot) of every account's `default_bot`: a reload must keep each bot.
    default_bots: Vec<(String, String)>,
}

impl FlowRegistry {
    pub fn new(set: FlowSet) -> Self {
        Self::with_bots(set, BotSet::default(), None)
    }

    /// Flows and bots loaded together (see [`super::load_all`]).
    pub fn with_bots(set: FlowSet, bots: BotSet, providers: Option<Vec<String>>) -> Self {
        FlowRegistry(Arc::new(RwLock::new(Registry {
            current: Arc::new(set),
            older: Vec::new(),
            last_error: None,
            bots: Arc::new(bots),
            providers,
            default_bots: Vec::new(),
        })))
    }

    /// An account's `default_bot` (None: it has none): a reload that removes that bot is
    /// refused, as the start is, naming the account and the bot.
    pub fn require_default_bot(&self, account: &str, bot: Option<String>) {
        let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
        reg.default_bots.retain(|(a, _)| a != account);
        if let Some(bot) = bot {
            reg.default_bots.push((account.to_string(), bot));
        }
    }

    pub fn bots(&self) -> Arc<BotSet> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .bots
            .clone()
    }

    pub fn current(&self) -> Arc<FlowSet> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone()
    }

    /// The set holding the flow version this conversation runs, else the current one.
    pub fn for_state(&self, state: &FlowState) -> Arc<FlowSet> {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let (Some(id), Some(version)) = (&state.flow, &state.version) {
            let holds = |set: &FlowSet| set.get(id).is_some_and(|f| &f.version == version);
            if !holds(&reg.current) {
                if let Some(old) = reg.older.iter().find(|s| holds(s)) {
                    return old.clone();
                }
            }
        }
        reg.current.clone()
    }

    /// The set to run this conversation's next step in, per its flow's `on_update`; and the
    /// flow to start over, when the flow changed and says `restart` (or `migrate` and its
    /// node is gone). A session that migrates takes the new version: it runs it from now on,
    /// its records name it, and the next step does not migrate again.
    pub fn resolve(&self, state: &mut FlowState) -> (Arc<FlowSet>, Option<String>) {
        let current = self.current();
        let (Some(id), Some(version)) = (&state.flow, &state.version) else {
            return (current, None);
        };
        let Some(flow) = current.get(id) else {
            // Removed from the files: finish where it started, if that set is still loaded.
            return (self.for_state(state), None);
        };
        if &flow.version == version {
            return (current, None);
        }
        match flow.on_update {
            OnUpdate::Pin => (self.for_state(state), None),
            OnUpdate::Migrate => {
                let node_kept = state
                    .node
                    .as_deref()
                    .is_some_and(|n| flow.nodes.contains_key(n));
                let restart = (!node_kept).then(|| id.clone());
                if node_kept {
                    state.version = Some(flow.version.clone());
                }
                (current, restart)
            }
            OnUpdate::Restart => (current.clone(), Some(id.clone())),
        }
    }

    /// Validate every file of `dir`; swap them in only if all are valid. On error the running
    /// flows stay and the errors are kept for `last_error`.
    pub fn reload(&self, dir: &std::path::Path) -> Result<Vec<(String, String)>, Vec<String>> {
        let (providers, default_bots) = {
            let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
            (reg.providers.clone(), reg.default_bots.clone())
        };
        let loaded = load_all(dir, providers.as_deref()).and_then(|(set, bots)| {
            let missing: Vec<String> = default_bots
                .iter()
                .filter(|(_, bot)| bots.get(bot).is_none())
                .map(|(account, bot)| {
                    format!(
                        "accounts.default_bot: `{bot}` (account {account}) is not a bot in {}",
                        dir.join("bots").display()
                    )
                })
                .collect();
            if missing.is_empty() {
                Ok((set, bots))
            } else {
                Err(missing)
            }
        });
        match loaded {
            Ok((set, bots)) => {
                let versions = set
                    .flows()
                    .iter()
                    .map(|f| (f.id.clone(), f.version.clone()))
                    .collect();
                let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
                let previous = std::mem::replace(&mut reg.current, Arc::new(set));
                reg.bots = Arc::new(bots);
                // Kept while a session may run it: see `keep_in_use`.
                reg.older.insert(0, previous);
                reg.last_error = None;
                Ok(versions)
            }
            Err(errors) => {
                self.0.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(errors.clone());
                Err(errors)
            }
        }
    }

    /// (id, version, source) of every current flow, to keep in the store.
    pub fn sources(&self) -> Vec<(String, String, Arc<str>)> {
        self.current()
            .flows()
            .iter()
            .map(|f| (f.id.clone(), f.version.clone(), f.source.clone()))
            .collect()
    }

    /// Earlier versions that conversations still run (read back from the store at start):
    /// each becomes a set of its own that `for_state` finds.
    pub fn add_pinned(&self, sets: Vec<FlowSet>) {
        let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
        for set in sets {
            reg.older.push(Arc::new(set));
        }
    }

    /// Drop the earlier sets no session is pinned to: `in_use` is every (flow, version) that
    /// an unfinished session runs (from the store, after a reload). A set holding any of them
    /// stays, however many reloads ago it was current, and so does the set the last reload
    /// replaced (a session may have started on it and not be in the store yet).
    pub fn keep_in_use(&self, in_use: &[(String, String)]) {
        let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut first = true;
        reg.older.retain(|set| {
            let keep = first
                || set.flows().iter().any(|f| {
                    in_use
                        .iter()
                        .any(|(id, version)| *id == f.id && *version == f.version)
                });
            first = false;
            keep
        });
    }

    /// (id, version) of the current flows, and the errors of the last failed reload.
    pub fn status(&self) -> (Vec<(String, String)>, Option<Vec<String>>) {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        let flows = reg
            .current
            .flows()
            .iter()
            .map(|f| (f.id.clone(), f.version.clone()))
            .collect();
        (flows, reg.last_error.clone())
    }
}

fn record(st: &FlowState, status: FlowRunStatus, node: Option<String>) -> Option<Effect> {
    Some(Effect::FlowRecord(FlowRecord {
        flow_id: st.flow.clone()?,
        version: st.version.clone().unwrap_or_default(),
        started_at: st.started_at_ms,
        status,
        node,
        error: None,
    }))
}

/// Session records for one step, in the order they happened: the one before, if the step
/// left it without reaching its end; the sessions that reached their end (`ended`, which
/// also holds a flow that began and ended within the step); the one after as running or
/// paused.
///
/// A session left without reaching its end was either handed on — a jump or a subflow call
/// goes on in another flow within the same session (its `started_at` kept): completed, its
/// part done — or abandoned: the customer started another flow (a global trigger), wrote
/// again only after its `session_timeout` (without an `on_expire` branch), or the flow was
/// changed under it and starts over.
fn records(before: &FlowState, after: &FlowState, ended: Vec<FlowRecord>) -> Vec<Effect> {
    let same = |a: &FlowState, b: &FlowState| {
        a.flow.is_some() && a.flow == b.flow && a.started_at_ms == b.started_at_ms
    };
    let before_ended = ended
        .iter()
        .any(|r| Some(&r.flow_id) == before.flow.as_ref() && r.started_at == before.started_at_ms);
    let mut out: Vec<Effect> = Vec::new();
    if before.is_active() && !same(before, after) && !before_ended {
        let handed_on = (after.is_active() && after.started_at_ms == before.started_at_ms)
            || ended.iter().any(|r| r.started_at == before.started_at_ms);
        let status = if handed_on {
            FlowRunStatus::Completed
        } else {
            FlowRunStatus::Abandoned
        };
        out.extend(record(before, status, None));
    }
    out.extend(ended.into_iter().map(Effect::FlowRecord));
    if after.is_active() {
        let status = if after.waiting_timer.is_some() {
            FlowRunStatus::Paused
        } else {
            FlowRunStatus::Running
        };
        out.extend(record(after, status, after.node.clone()));
    }
    out
}

fn media_input<'m>(kind: &'static str, m: &'m Media) -> FlowInput<'m> {
    FlowInput::Media {
        kind,
        id: m.id.as_str(),
        caption: m.caption.as_deref(),
    }
}

pub struct FlowLogic {
    pub flows: FlowRegistry,
}

fn flow_state(state: &ConversationState) -> FlowState {
    state
        .ext
        .get(STATE_KEY)
        .and_then(Layer::read::<FlowState>)
        .unwrap_or_default()
}

/// A voice note being transcribed, and the messages that came after it (handled once its
/// text is known, so nothing is answered out of order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VoicePending {
    voice: Arc<InboundMessage>,
    #[serde(default)]
    deferred: Vec<Arc<InboundMessage>>,
}

/// Messages kept behind a voice note being transcribed (the rest are dropped).
const MAX_VOICE_DEFERRED: usize = 20;

fn voice_of(state: &ConversationState) -> Option<VoicePending> {
    state
        .ext
        .get(VOICE_KEY)
        .and_then(Layer::read::<VoicePending>)
}

fn is_voice_note(message: &InboundMessage) -> bool {
    matches!(message.content, MessageContent::Audio { voice: true, .. })
}

impl ConversationLogic for FlowLogic {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        let (mut state, effects) = self.layers(state, event, ctx);
        // Flows' and bots' sends meet the 24 h window like everyone's.
        let effects = settle_window(&mut state, effects, ctx, event);
        (state, effects)
    }

    /// After a restart: the HTTP or shop call a flow was waiting on, the model call a chatbot was
    /// waiting on, and the voice note being transcribed are asked for again (same ids, so
    /// a repeat can be recognised).
    fn resume(&self, state: &ConversationState) -> Vec<Effect> {
        let flow = flow_state(state);
        let http = flow.http.map(Effect::Http);
        let shop = flow.commerce.map(Effect::Commerce);
        let bots = self.flows.bots();
        let bot = bot_of(state)
            .and_then(|s| bot_session::pending_call(bots.get(&s.bot)?, &s))
            .map(Effect::BotCall);
        let voice = voice_of(state)
            .and_then(|p| crate::conversation::media_fetch(&p.voice, true))
            .map(Effect::FetchMedia);
        http.into_iter()
            .chain(shop)
            .chain(bot)
            .chain(voice)
            .collect()
    }
}

impl FlowLogic {
    /// The core step, then voice notes, bots and flows.
    fn layers(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        let was_handed_off = state.handoff.is_some();
        let (mut state, mut effects) = core_step(state, event, ctx);
        let released = was_handed_off && state.handoff.is_none();
        // A blocked contact's messages are kept, and nothing answers them; a forgotten
        // conversation has nothing for flows or bots to go on with.
        let blocked = state.contact.blocked && matches!(event, ConversationEvent::Inbound { .. });
        if blocked || matches!(event, ConversationEvent::Forget) {
            return (state, effects);
        }
        let pending = voice_of(&state);
        match (event, pending) {
            // A voice note is being transcribed: later messages wait for its text.
            (ConversationEvent::Inbound { message, .. }, Some(mut p))
                if !matches!(message.content, MessageContent::System { .. }) =>
            {
                if p.deferred.len() < MAX_VOICE_DEFERRED {
                    p.deferred.push(message.clone());
                }
                if let Some(v) = Layer::of(&p) {
                    state.ext.insert(VOICE_KEY.to_string(), v);
                }
                (state, effects)
            }
            (ConversationEvent::Inbound { message, .. }, None)
                if ctx.transcribe
                    && ctx.fetch_media
                    && is_voice_note(message)
                    && state.handoff.is_none() =>
            {
                let p = VoicePending {
                    voice: message.clone(),
                    deferred: Vec::new(),
                };
                if let Some(v) = Layer::of(&p) {
                    state.ext.insert(VOICE_KEY.to_string(), v);
                }
                (state, effects)
            }
            (ConversationEvent::MediaReady(r), Some(p))
                if media_id_of(&p.voice) == Some(&r.media_id) =>
            {
                state.ext.remove(VOICE_KEY);
                // The transcript is the user's message; without one the flow gets the audio.
                let first = match r.transcript.as_ref().filter(|t| !t.text.is_empty()) {
                    Some(t) => {
                        let mut m = (*p.voice).clone();
                        m.content = MessageContent::Text {
                            body: t.text.clone(),
                        };
                        Arc::new(m)
                    }
                    None => p.voice.clone(),
                };
                for message in std::iter::once(first).chain(p.deferred) {
                    let event = ConversationEvent::Inbound { seq: 0, message };
                    (state, effects) = self.react(state, effects, &event, ctx, false);
                }
                (state, effects)
            }
            _ => self.react(state, effects, event, ctx, released),
        }
    }
}

fn media_id_of(message: &InboundMessage) -> Option<&String> {
    crate::conversation::media_of(&message.content).map(|(_, m, _)| &m.id)
}

impl FlowLogic {
    /// Flows and bots on one event, after the core step.
    fn react(
        &self,
        mut state: ConversationState,
        mut effects: Vec<Effect>,
        event: &ConversationEvent,
        ctx: &StepContext,
        released: bool,
    ) -> (ConversationState, Vec<Effect>) {
        let bots = self.flows.bots();

        // A chatbot session, while active, has the user's text, its model's answers and its
        // timer. When it ends, a flow that started it goes on.
        let mut bot_done = false;
        if let Some(mut session) = bot_of(&state) {
            let before = session.summary(false);
            let now = ctx.now_ms;
            let out = match (bots.get(&session.bot), event) {
                // A human has the conversation (an admin's handoff or reply, a flow's handoff
                // node): the bot stops speaking, and the answer of a call in flight is
                // ignored when it comes. A flow's chatbot node then waits for the release,
                // as when its bot hands off by itself.
                _ if state.handoff.is_some() => {
                    bot_session::handed_to_human(&mut session, now);
                    Some(Outcome::default())
                }
                (None, _) => {
                    // The bot's file is gone: the session ends.
                    session.status = bot_session::BotStatus::Completed;
                    Some(Outcome::default())
                }
                (Some(bot), ConversationEvent::Inbound { message, .. })
                    if state.handoff.is_none() =>
                {
                    text_of(&message.content)
                        .map(|t| bot_session::user_text(bot, &mut session, t, now))
                }
                (Some(bot), ConversationEvent::BotResult(answer)) => {
                    Some(bot_session::answer(bot, &mut session, answer, now))
                }
                (Some(bot), ConversationEvent::TimerFired { name, payload, .. })
                    if name == BOT_TIMER =>
                {
                    let since = payload.get("since").and_then(serde_json::Value::as_i64);
                    Some(bot_session::timer_fired(bot, &mut session, since, now))
                }
                _ => None,
            };
            if let Some(out) = out {
                match settle_bot(&mut state, &mut effects, ctx, session, Some(before), out) {
                    Some(ended) if ended.from_flow && state.handoff.is_none() => bot_done = true,
                    _ => return (state, effects),
                }
            }
        }

        let timer_name;
        let (news, access_text);
        let mut referral = None;
        let mut message_id = None;
        let input = match event {
            _ if bot_done => FlowInput::BotDone,
            // While a human has the conversation the bot is silent.
            ConversationEvent::Inbound { .. } if state.handoff.is_some() => {
                return (state, effects)
            }
            ConversationEvent::Inbound { message, .. } => {
                message_id = Some(message.wamid.as_str());
                referral = message
                    .referral
                    .as_ref()
                    .and_then(|r| r.get("source_id"))
                    .and_then(|v| v.as_str());
                match &message.content {
                    MessageContent::Image { media: m } => media_input("image", m),
                    MessageContent::Video { media: m } => media_input("video", m),
                    MessageContent::Audio { media: m, .. } => media_input("audio", m),
                    MessageContent::Document { media: m, .. } => media_input("document", m),
                    MessageContent::Sticker { media: m, .. } => media_input("sticker", m),
                    MessageContent::System { .. } => return (state, effects),
                    MessageContent::Order { items, text, .. } => FlowInput::Order {
                        items,
                        text: text.as_deref(),
                    },
                    content => FlowInput::Message {
                        text: text_of(content),
                        reply_id: match content {
                            MessageContent::ButtonReply { id, .. }
                            | MessageContent::ListReply { id, .. } => Some(id.as_str()),
                            MessageContent::TemplateButton { payload, .. } => {
                                Some(payload.as_str())
                            }
                            _ => None,
                        },
                    },
                }
            }
            ConversationEvent::TimerFired { name, .. } => match name.strip_prefix(TIMER_PREFIX) {
                Some(n) => {
                    timer_name = n.to_string();
                    FlowInput::Timer { name: &timer_name }
                }
                None if released => FlowInput::Released,
                None => return (state, effects),
            },
            ConversationEvent::Release { .. } if released => FlowInput::Released,
            ConversationEvent::HttpResult(outcome) => FlowInput::Http(outcome),
            ConversationEvent::CommerceResult(result) => FlowInput::Commerce(result),
            ConversationEvent::PaymentUpdate {
                payment_id,
                status,
                order,
                amount,
                access,
            } => {
                let fs = flow_state(&state);
                // What the plans bought give.
                let access = crate::commerce::payment::access_text(*status, access);
                let text = |body: String| Effect::Send {
                    message: crate::whatsapp::send::OutboundMessage::Text {
                        body,
                        preview_url: false,
                    },
                    reply_to: None,
                    policy: None,
                };
                if fs.opening_payment() {
                    // Its news beat the shop's answer: the flow keeps it (and the access)
                    // until the answer names the payment.
                    news = crate::commerce::payment::news_text(*status, order, amount);
                    access_text = access;
                    FlowInput::Payment {
                        id: *payment_id,
                        status: *status,
                        news: news.as_deref(),
                        access: access_text.as_deref(),
                    }
                } else {
                    // Sent whatever the flow does next.
                    effects.extend(access.map(text));
                    if fs.payment != Some(*payment_id) {
                        // No flow waits on it (the customer went elsewhere meanwhile): the
                        // customer still hears what became of the payment.
                        effects.extend(
                            crate::commerce::payment::news_text(*status, order, amount).map(text),
                        );
                        return (state, effects);
                    }
                    FlowInput::Payment {
                        id: *payment_id,
                        status: *status,
                        news: None,
                        access: None,
                    }
                }
            }
            _ => return (state, effects),
        };
        let mut flow_state = flow_state(&state);
        let (flows, restart) = self.flows.resolve(&mut flow_state);
        let before = flow_state.clone();
        let contact = &state.contact;
        let fctx = FlowContext {
            now_ms: ctx.now_ms,
            contact: Some(contact),
            contact_key: contact.wa_id.as_deref().or(contact.user_id.as_deref()),
            referral,
            message_id,
            max_steps: MAX_STEPS,
        };
        let outcome = match restart {
            // The flow changed under this conversation and says to start over.
            Some(id) => crate::flow::exec::start(&flows, &id, &fctx),
            None => flow_step(&flows, flow_state, input, &fctx),
        };
        let mut ended = Vec::new();
        let mut policy = None;
        let mut took = before.is_active();
        let next = match outcome {
            Ok((next, actions)) => {
                took |= next.is_active() || !actions.is_empty();
                for action in actions {
                    match action {
                        FlowAction::OutsideWindow(p) => policy = Some(p),
                        FlowAction::Send(message) => effects.push(Effect::Send {
                            message,
                            reply_to: None,
                            policy: policy.take(),
                        }),
                        FlowAction::StartTimer { name, after_ms } => {
                            effects.push(Effect::StartTimer {
                                name: format!("{TIMER_PREFIX}{name}"),
                                due_at: ctx.now_ms + after_ms,
                                payload: json!({}),
                            })
                        }
                        FlowAction::Http(call) => effects.push(Effect::Http(call)),
                        FlowAction::Commerce(call) => effects.push(Effect::Commerce(call)),
                        FlowAction::Handoff { reason } => {
                            enter_handoff(&mut state, &reason, HandoffBy::Flow, ctx, &mut effects)
                        }
                        FlowAction::StartBot { bot, until } => {
                            if let Some(bot) = bots.get(&bot) {
                                start_bot(bot, &mut state, &mut effects, ctx, true, until, None)
                            }
                        }
                        FlowAction::Ended {
                            flow,
                            version,
                            started_at_ms,
                        } => ended.push(FlowRecord {
                            flow_id: flow,
                            version,
                            started_at: started_at_ms,
                            status: FlowRunStatus::Completed,
                            node: None,
                            error: None,
                        }),
                        FlowAction::Contact(c) => {
                            state.contact.access = c.access;
                            state.contact.fields = c.fields;
                            state.contact.tags = c.tags;
                        }
                    }
                }
                next
            }
            // A runaway or broken flow ends; the conversation goes on.
            Err(e) => {
                took = true;
                // The session that failed: the one running, or one this event started.
                let (flow, started_at_ms) = match &e {
                    FlowError::Runaway {
                        flow,
                        started_at_ms,
                    } => (flow, *started_at_ms),
                    FlowError::Eval { flow, .. } => (flow, ctx.now_ms),
                };
                let failed = if before.flow.as_ref() == Some(flow) {
                    before.clone()
                } else {
                    FlowState {
                        flow: Some(flow.clone()),
                        version: flows.get(flow).map(|f| f.version.clone()),
                        started_at_ms,
                        ..FlowState::default()
                    }
                };
                if let Some(Effect::FlowRecord(mut r)) =
                    record(&failed, FlowRunStatus::Failed, None)
                {
                    r.error = Some(e.to_string());
                    effects.push(Effect::FlowRecord(r));
                }
                FlowState::default()
            }
        };
        if !effects
            .iter()
            .any(|e| matches!(e, Effect::FlowRecord(r) if r.status == FlowRunStatus::Failed))
        {
            effects.extend(records(&before, &next, ended));
        }
        match Layer::of(&next) {
            Some(v) if next != FlowState::default() => {
                state.ext.insert(STATE_KEY.to_string(), v);
            }
            _ => {
                state.ext.remove(STATE_KEY);
            }
        }
        // A message no flow took: a bot's keyword starts its session; else the account's
        // default bot answers it.
        if let (false, ConversationEvent::Inbound { message, .. }) = (took, event) {
            if let Some(text) = text_of(&message.content) {
                let (bot, first) = match bots.triggered_by(text) {
                    Some(bot) => (Some(bot), None),
                    None => (
                        ctx.default_bot.as_deref().and_then(|id| bots.get(id)),
                        Some(text),
                    ),
                };
                if let Some(bot) = bot {
                    start_bot(bot, &mut state, &mut effects, ctx, false, vec![], first);
                }
            }
        }
        (state, effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chatbot::session::{BotAnswer, BotCall, BotStatus};
    use crate::conversation::WindowPolicy;
    use crate::flow::{FlowContext, FlowInput};
    use crate::whatsapp::send::OutboundMessage;

    const BOT: &str = "provider: p\nmodel: m\nsystem_prompt: be brief\n";

    fn logic(flows: &[(&str, &str)]) -> FlowLogic {
        let files: Vec<(String, String)> = flows
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        let set = FlowSet::load(&files).unwrap();
        let bots = BotSet::load(&[("bots/helper.yaml".into(), BOT.into())], None).unwrap();
        FlowLogic {
            flows: FlowRegistry::with_bots(set, bots, None),
        }
    }

    fn ctx(now_ms: i64) -> StepContext {
        StepContext {
            now_ms,
            mark_read: false,
            handoff_timeout_ms: 0,
            default_bot: Some("helper".into()),
            fetch_media: false,
            transcribe: false,
            outside_window: WindowPolicy::Fail,
            hold_ms: 0,
        }
    }

    fn says(text: &str, at_ms: i64) -> ConversationEvent {
        ConversationEvent::Inbound {
            seq: at_ms,
            message: Arc::new(InboundMessage {
                phone_number_id: "1".into(),
                display_phone_number: String::new(),
                from: Some("6281234567890".into()),
                user_id: None,
                profile_name: None,
                wamid: format!("wamid.{at_ms}"),
                timestamp: at_ms / 1000,
                context: None,
                referral: None,
                errors: vec![],
                content: MessageContent::Text { body: text.into() },
            }),
        }
    }

    fn call_of(effects: &[Effect]) -> BotCall {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::BotCall(c) => Some(c.clone()),
                _ => None,
            })
            .expect("a model call")
    }

    fn answered(call: &BotCall, text: &str) -> ConversationEvent {
        ConversationEvent::BotResult(BotAnswer {
            id: call.id.clone(),
            text: Some(text.into()),
            handoff: false,
            tokens_in: 10,
            tokens_out: 5,
            latency_ms: 800,
            error: None,
        })
    }

    fn sent(effects: &[Effect]) -> Vec<&str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    message: OutboundMessage::Text { body, .. },
                    ..
                } => Some(body.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_handoff_while_the_model_answers_silences_the_bot_until_the_release() {
        for human in [
            ConversationEvent::Handoff {
                reason: "vip".into(),
            },
            ConversationEvent::AgentReply {
                request_id: "r".into(),
                message: OutboundMessage::Text {
                    body: "Ana here".into(),
                    preview_url: false,
                },
            },
        ] {
            let l = logic(&[]);
            let s = ConversationState::default();
            let now = 1_700_000_000_000;
            let (s, e) = l.step(s, &says("when do you open?", now), &ctx(now));
            let call = call_of(&e);
            // A message while the model thinks would be put to it after the answer.
            let (s, _) = l.step(s, &says("and close?", now + 100), &ctx(now + 100));
            let (s, e) = l.step(s, &human, &ctx(now + 200));
            assert!(s.handoff.is_some());
            assert!(bot_of(&s).is_none(), "the session ended with the handoff");
            assert!(
                e.iter()
                    .any(|e| matches!(e, Effect::BotRecord(r) if r.status == BotStatus::HandedOff)),
                "{e:?}"
            );
            // The answer comes while a human has the conversation: nothing is sent, nothing
            // asked again.
            let (s, e) = l.step(s, &answered(&call, "We open at 8."), &ctx(now + 800));
            assert!(sent(&e).is_empty(), "{e:?}");
            assert!(!e.iter().any(|e| matches!(e, Effect::BotCall(_))), "{e:?}");
            let (s, e) = l.step(s, &says("hello?", now + 900), &ctx(now + 900));
            assert!(sent(&e).is_empty() && !e.iter().any(|e| matches!(e, Effect::BotCall(_))));
            // Released: the bot answers again.
            let release = ConversationEvent::Release {
                reason: "done".into(),
            };
            let (s, _) = l.step(s, &release, &ctx(now + 1_000));
            let (s, e) = l.step(s, &says("thanks", now + 1_100), &ctx(now + 1_100));
            let call = call_of(&e);
            let (_, e) = l.step(s, &answered(&call, "Welcome."), &ctx(now + 1_200));
            assert_eq!(sent(&e), vec!["Welcome."]);
        }
    }

    #[test]
    fn a_reload_that_removes_a_default_bot_is_refused_naming_account_and_bot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bots")).unwrap();
        std::fs::write(dir.path().join("bots/helper.yaml"), BOT).unwrap();
        let l = logic(&[]);
        l.flows
            .require_default_bot("15550001", Some("helper".into()));
        assert!(l.flows.reload(dir.path()).is_ok());
        std::fs::rename(
            dir.path().join("bots/helper.yaml"),
            dir.path().join("bots/other.yaml"),
        )
        .unwrap();
        let errors = l.flows.reload(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`helper`") && errors[0].contains("account 15550001"),
            "{errors:?}"
        );
        assert!(
            l.flows.bots().get("helper").is_some(),
            "the running bots stay"
        );
        assert!(l.flows.bots().get("other").is_none());
    }

    fn texts(call: &BotCall) -> Vec<&str> {
        call.messages.iter().map(|t| t.text.as_str()).collect()
    }

    #[test]
    fn only_the_first_session_after_a_human_is_told_of_the_human() {
        let l = logic(&[]);
        let timeout = l.flows.bots().get("helper").unwrap().timeout_ms;
        let now = 1_700_000_000_000;
        let (s, e) = l.step(ConversationState::default(), &says("q1", now), &ctx(now));
        assert_eq!(texts(&call_of(&e)), vec!["q1"]);
        let handoff = ConversationEvent::Handoff {
            reason: "vip".into(),
        };
        let (s, _) = l.step(s, &handoff, &ctx(now + 1));
        let release = ConversationEvent::Release {
            reason: "done".into(),
        };
        let (s, _) = l.step(s, &release, &ctx(now + 2));
        assert!(s.human_handled_at.is_some());

        // The session after the release: the note opens every call of it.
        let (s, e) = l.step(s, &says("q2", now + 3), &ctx(now + 3));
        let call = call_of(&e);
        assert_eq!(texts(&call), vec![bot_session::HUMAN_NOTE, "q2"]);
        assert_eq!(call.system, "be brief", "the bot's own prompt, unchanged");
        assert!(s.human_handled_at.is_none(), "the note is taken once");
        let (s, _) = l.step(s, &answered(&call, "a2"), &ctx(now + 4));
        let (s, e) = l.step(s, &says("q3", now + 5), &ctx(now + 5));
        assert_eq!(
            texts(&call_of(&e)),
            vec![bot_session::HUMAN_NOTE, "q2", "a2", "q3"]
        );
        let call = call_of(&e);
        let (s, _) = l.step(s, &answered(&call, "a3"), &ctx(now + 6));

        // That session times out; the next one knows nothing of the human.
        let fired = ConversationEvent::TimerFired {
            timer_id: 1,
            name: BOT_TIMER.into(),
            payload: json!({ "since": now + 3 }),
        };
        let later = now + 6 + timeout;
        let (s, _) = l.step(s, &fired, &ctx(later));
        assert!(bot_of(&s).is_none());
        let (_, e) = l.step(s, &says("q4", later + 1), &ctx(later + 1));
        assert_eq!(texts(&call_of(&e)), vec!["q4"]);
    }

    #[test]
    fn a_migrated_session_takes_the_new_version_once() {
        let flow = |question: &str| {
            format!(
                "id: x\non_update: migrate\ntriggers:\n  - keyword: go\nstart: q\nnodes:\n  q:\n    ask: {{type: text, prompt: \"{question}\", save: a}}\n    next: bye\n  bye:\n    send: {{text: \"bye\"}}\n    end: true\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, flow("v1?")).unwrap();
        let registry = FlowRegistry::new(crate::flow::load_dir(dir.path()).unwrap());
        let ctx = FlowContext {
            now_ms: 0,
            contact: None,
            referral: None,
            message_id: None,
            contact_key: Some("u"),
            max_steps: MAX_STEPS,
        };
        let go = FlowInput::Message {
            text: Some("go"),
            reply_id: None,
        };
        let (mut state, _) =
            flow_step(&registry.current(), FlowState::default(), go, &ctx).unwrap();
        let v1 = state.version.clone().unwrap();
        std::fs::write(&path, flow("v2?")).unwrap();
        registry.reload(dir.path()).unwrap();
        let v2 = registry.current().get("x").unwrap().version.clone();
        assert_ne!(v1, v2);

        let (set, restart) = registry.resolve(&mut state);
        assert!(restart.is_none());
        assert_eq!(set.get("x").unwrap().version, v2);
        assert_eq!(state.version.as_deref(), Some(v2.as_str()), "still on v1");
        // Migrated once: the next resolve finds nothing to do.
        let before = state.clone();
        registry.resolve(&mut state);
        assert_eq!(state, before);
    }

    #[test]
    fn earlier_sets_stay_exactly_while_a_session_runs_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        let write = |n: usize| {
            let text = format!(
                "id: x\ntriggers: [{{keyword: go}}]\nstart: a\nnodes:\n  a:\n    send: {{text: \"v{n}\"}}\n"
            );
            std::fs::write(&path, text).unwrap();
        };
        write(0);
        let registry = FlowRegistry::new(crate::flow::load_dir(dir.path()).unwrap());
        let v0 = registry.current().get("x").unwrap().version.clone();
        for n in 1..=20 {
            write(n);
            registry.reload(dir.path()).unwrap();
        }
        let older = |r: &FlowRegistry| r.0.read().unwrap().older.len();
        assert_eq!(older(&registry), 20, "nothing dropped by count");
        let pinned = FlowState {
            flow: Some("x".into()),
            version: Some(v0.clone()),
            node: Some("a".into()),
            ..FlowState::default()
        };
        registry.keep_in_use(&[("x".into(), v0.clone())]);
        // The set v0 is in, and the one the last reload replaced.
        assert_eq!(older(&registry), 2);
        assert_eq!(registry.for_state(&pinned).get("x").unwrap().version, v0);
        registry.keep_in_use(&[]);
        assert_eq!(older(&registry), 1);
        assert_ne!(registry.for_state(&pinned).get("x").unwrap().version, v0);
    }

    /// (flow, status) of each session record a step wrote, in order.
    fn sessions(effects: &[Effect]) -> Vec<(&str, FlowRunStatus)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::FlowRecord(r) => Some((r.flow_id.as_str(), r.status)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_session_left_for_another_flow_or_for_silence_is_abandoned_and_one_handed_on_is_not() {
        // A flow that asks, then jumps to `then` (or ends).
        let ask = |id: &str, extra: &str, then: &str| {
            format!(
                "id: {id}\ntriggers: [{{keyword: {id}, global: true}}]\n{extra}start: q\nnodes:\n  q:\n    ask: {{type: text, prompt: \"{id}?\", save: a}}\n{then}"
            )
        };
        let to = |flow: &str| format!("    next: j\n  j:\n    jump: {{flow: {flow}}}\n");
        let hi = "id: hi\ntriggers: [{keyword: hi, global: true}]\nstart: s\nnodes:\n  s:\n    send: {text: \"hello\"}\n";
        let (menu, slow, jumps, ends) = (
            ask("menu", "", ""),
            ask("slow", "session_timeout: 1m\n", ""),
            ask("jumps", "", &to("menu")),
            ask("ends", "", &to("hi")),
        );
        let l = logic(&[
            ("menu.yaml", &menu),
            ("slow.yaml", &slow),
            ("hi.yaml", hi),
            ("jumps.yaml", &jumps),
            ("ends.yaml", &ends),
        ]);
        use FlowRunStatus::*;
        let s = ConversationState::default();
        let (s, e) = l.step(s, &says("menu", 1_000), &ctx(1_000));
        assert_eq!(sessions(&e), [("menu", Running)]);
        // Another flow's trigger: the one waiting was abandoned (recorded first).
        let (s, e) = l.step(s, &says("hi", 2_000), &ctx(2_000));
        assert_eq!(sessions(&e), [("menu", Abandoned), ("hi", Completed)]);
        // A jump hands the session on: the flow it left did its part.
        let (s, _) = l.step(s, &says("jumps", 3_000), &ctx(3_000));
        let (s, e) = l.step(s, &says("yes", 3_500), &ctx(3_500));
        assert_eq!(sessions(&e), [("jumps", Completed), ("menu", Running)]);
        let (s, e) = l.step(s, &says("ends", 4_000), &ctx(4_000));
        assert_eq!(sessions(&e), [("menu", Abandoned), ("ends", Running)]);
        // ... also to a flow that ends within the step.
        let (s, e) = l.step(s, &says("yes", 4_500), &ctx(4_500));
        assert_eq!(sessions(&e), [("ends", Completed), ("hi", Completed)]);
        // Back only after the session timeout: abandoned; the message starts nothing.
        let (s, _) = l.step(s, &says("slow", 5_000), &ctx(5_000));
        let (_, e) = l.step(s, &says("later", 200_000), &ctx(200_000));
        assert_eq!(sessions(&e), [("slow", Abandoned)]);
    }
}
