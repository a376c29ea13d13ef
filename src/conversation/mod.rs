//! The pure core of a conversation: `step(state, event, ctx) -> (state, effects)`.
//!
//! No I/O and no clock: the actor loads the state, passes the time in [`StepContext`], commits
//! the new state and the effects in one transaction, then runs the effects. That is what makes
//! exactly-once application, replay and simulation possible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::whatsapp::event::{InboundMessage, MessageContent};
use crate::whatsapp::send::OutboundMessage;

/// WhatsApp's customer-service window: free-form messages only within 24 h of the user's
/// last message.
pub const SERVICE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Meta error code for a free-form message outside the window.
pub const WINDOW_CLOSED_CODE: i64 = 131047;

/// Timer that ends a handoff after `handoff.timeout` without activity.
pub const HANDOFF_TIMER: &str = "handoff:timeout";

/// What a contact may reach: flows and menu options can require a level.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    #[default]
    Public,
    Registered,
    Activated,
}

impl AccessLevel {
    pub fn parse(s: &str) -> Option<AccessLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public" => Some(AccessLevel::Public),
            "registered" => Some(AccessLevel::Registered),
            "activated" => Some(AccessLevel::Activated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Public => "public",
            AccessLevel::Registered => "registered",
            AccessLevel::Activated => "activated",
        }
    }

    fn is_public(&self) -> bool {
        *self == AccessLevel::Public
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<crate::domain::WaId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    #[serde(default, skip_serializing_if = "AccessLevel::is_public")]
    pub access: AccessLevel,
    /// Fields the business keeps on the contact (set by flows: `contact.email`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Blocked by the business: the customer's messages are kept (and count), but no bot or
    /// flow answers them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

impl ContactInfo {
    /// `contact.<field>` as flows read it: name, wa_id (or phone), access, tags (comma
    /// separated), else a business field ("" when unset).
    pub fn get(&self, field: &str) -> String {
        match field {
            "name" => self.profile_name.clone().unwrap_or_default(),
            "wa_id" | "phone" => self.wa_id.clone().map(String::from).unwrap_or_default(),
            "user_id" => self.user_id.clone().unwrap_or_default(),
            "access" => self.access.as_str().to_string(),
            "tags" => self.tags.iter().cloned().collect::<Vec<_>>().join(","),
            other => self.fields.get(other).cloned().unwrap_or_default(),
        }
    }
}

/// Where a handoff to a human stands. While it lasts the bot is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStatus {
    /// Handed off; no agent has answered yet.
    Waiting,
    /// An agent has answered.
    WithAgent,
}

/// Who handed a conversation to a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HandoffBy {
    /// The admin API (`handoff`, or an agent's reply).
    Admin,
    /// A flow's `handoff` node.
    Flow,
    /// A chatbot (its handoff keyword, tool, failures or cost limit).
    Bot { bot: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    pub status: HandoffStatus,
    pub reason: String,
    /// Who handed it over (absent in states stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<HandoffBy>,
    /// When it began (ms); also names its timeout timers.
    pub since: i64,
    /// Last message either way (ms): the timeout runs from here.
    pub last_activity: i64,
}

/// What a conversation remembers between events. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    #[serde(default)]
    pub contact: ContactInfo,
    /// When the user last wrote (ms): opens the 24 h customer-service window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_inbound_at: Option<i64>,
    /// Meta told us the window is closed (131047) even though our clock said open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub window_closed: bool,
    /// Handed to a human: bot → waiting for agent → with agent → bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// When a human last handed the conversation back (the bot's context notes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_handled_at: Option<i64>,
    /// Free-form messages held until the user writes again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// The request ids of the last held messages that went out (at most
    /// [`RELEASED_REMEMBERED`]): their outbox rows carry the releasing step's keys, so the
    /// same request sent again is known by these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_requests: Vec<String>,
    #[serde(default)]
    pub inbound_count: u64,
    #[serde(default)]
    pub outbound_count: u64,
    /// Room for the layers built on this core (flow execution, chatbot), each kept as JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ext: BTreeMap<String, Layer>,
}

/// A layer's state as JSON text. A step clones, compares and writes it as it is; only the
/// layer reads it, into its own type. (As a `serde_json::Value` tree, cloning, dropping and
/// converting it cost ~3 % of the daemon's CPU in the shop benchmark.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Layer(Box<serde_json::value::RawValue>);

impl Layer {
    pub fn of<T: Serialize>(value: &T) -> Option<Layer> {
        serde_json::value::to_raw_value(value).ok().map(Layer)
    }

    pub fn read<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.0.get()).ok()
    }
}

impl PartialEq for Layer {
    fn eq(&self, other: &Layer) -> bool {
        self.0.get() == other.0.get()
    }
}

impl ConversationState {
    /// True while a free-form message may be sent.
    pub fn window_open(&self, now_ms: i64) -> bool {
        !self.window_closed
            && self
                .last_inbound_at
                .is_some_and(|t| now_ms - t < SERVICE_WINDOW_MS)
    }
}

/// Something that happened to a conversation.
#[derive(Debug, Clone)]
pub enum ConversationEvent {
    /// A customer's message, committed to the inbox at `seq`.
    Inbound {
        seq: i64,
        message: Arc<InboundMessage>,
    },
    /// A durable timer came due.
    TimerFired {
        timer_id: i64,
        name: String,
        payload: serde_json::Value,
    },
    /// The business sends a message (admin API, agent, campaign).
    Outgoing {
        request_id: String,
        message: OutboundMessage,
        reply_to: Option<String>,
        /// Outside the window (None: refuse).
        policy: Option<WindowPolicy>,
    },
    /// Meta refused one of our messages for good.
    SendFailed {
        outbox_id: i64,
        code: Option<i64>,
        detail: String,
        /// The message that failed (a 131047 puts it through the window policy).
        message: Option<OutboundMessage>,
    },
    /// Hand the conversation to a human (admin API).
    Handoff { reason: String },
    /// A human agent answers as the business; the bot stays silent.
    AgentReply {
        request_id: String,
        message: OutboundMessage,
    },
    /// Give the conversation back to the bot.
    Release { reason: String },
    /// The admin API changed the contact: its tags (None: unchanged), profile fields ("":
    /// cleared; already checked) and whether it is blocked (None: unchanged).
    ContactEdit {
        tags: Option<BTreeSet<String>>,
        profile: BTreeMap<String, String>,
        blocked: Option<bool>,
    },
    /// The contact was deleted: forget what the conversation knows of the customer (profile,
    /// tags, flow variables, a chatbot's context, held messages, a handoff) and keep the
    /// counts and the 24 h window (what sending rules need).
    Forget,
    /// The outcome of an HTTP call a flow made.
    HttpResult(crate::outcall::HttpOutcome),
    /// A model answered a chatbot's call (or failed to).
    BotResult(BotAnswer),
    /// An inbound media file was fetched (and a voice note transcribed), or could not be.
    MediaReady(crate::media::MediaResult),
    /// The shop answered a flow's commerce call.
    CommerceResult(crate::commerce::CommerceResult),
    /// A payment of this conversation moved (told until its conversation heard it).
    PaymentUpdate {
        payment_id: i64,
        status: crate::domain::PaymentStatus,
        /// Its order's number and the amount, for the customer's receipt.
        order: String,
        amount: crate::domain::Money,
        /// What the plans it paid for give (`name: link (until …)`), sent with a PAID.
        access: Vec<String>,
    },
}

pub use crate::domain::{BotSummary, FlowRecord, WindowPolicy};

mod calls;
pub mod plan;
pub use calls::{BotAnswer, BotCall, Role, Turn};
pub use plan::{plan, Origin, Outcome, Plan};

/// A free-form message waiting for the user to open the window again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub message: OutboundMessage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub held_at: i64,
    /// The business's request that sent it (`Outgoing`, `AgentReply`): the same request
    /// again is a duplicate, also while it is held (it has no outbox row yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// How many released held requests a conversation remembers (to know them again).
pub const RELEASED_REMEMBERED: usize = 32;

/// What the actor must do after committing the new state.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        message: OutboundMessage,
        reply_to: Option<String>,
        /// Outside the window: this policy, else the account's default.
        policy: Option<WindowPolicy>,
    },
    /// A message was kept until the user writes again (nothing sent now).
    Held,
    MarkRead {
        wamid: crate::domain::Wamid,
    },
    StartTimer {
        name: String,
        due_at: i64,
        payload: serde_json::Value,
    },
    /// The event was refused (e.g. free-form outside the window); nothing is sent.
    Refuse {
        reason: String,
    },
    /// A flow session moved: recorded in flow_executions / flow_execution_steps.
    FlowRecord(FlowRecord),
    /// Call the business's HTTP endpoint after the commit; the outcome comes back as
    /// [`ConversationEvent::HttpResult`].
    Http(crate::outcall::HttpCall),
    /// Ask a model after the commit; the answer comes back as
    /// [`ConversationEvent::BotResult`].
    BotCall(BotCall),
    /// Download an inbound media file after the commit; the result comes back as
    /// [`ConversationEvent::MediaReady`].
    FetchMedia(crate::media::MediaFetch),
    /// Where a chatbot session stands (stored with the step: per-bot counters).
    BotRecord(BotSummary),
    /// Ask the shop after the commit (a catalog page, a cart change, a checkout); the answer
    /// comes back as [`ConversationEvent::CommerceResult`].
    Commerce(crate::commerce::Call),
}

/// What a step knows besides the state and the event: the time and the account's settings.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub now_ms: i64,
    pub mark_read: bool,
    /// A handoff with no activity for this long returns to the bot (0 = never).
    pub handoff_timeout_ms: i64,
    /// The account's bot for messages no flow takes.
    pub default_bot: Option<String>,
    /// Download inbound media (`media.download`).
    pub fetch_media: bool,
    /// Voice notes are transcribed (`media.transcription` is set).
    pub transcribe: bool,
    /// Free-form outside the window, when the sender set no policy.
    pub outside_window: WindowPolicy,
    /// Held messages older than this are dropped.
    pub hold_ms: i64,
}

/// The media of a message, if it has a file: (kind, media, is a voice note).
pub fn media_of(
    content: &MessageContent,
) -> Option<(&'static str, &crate::whatsapp::event::Media, bool)> {
    match content {
        MessageContent::Image { media } => Some(("image", media, false)),
        MessageContent::Video { media } => Some(("video", media, false)),
        MessageContent::Audio { media, voice } => Some(("audio", media, *voice)),
        MessageContent::Document { media, .. } => Some(("document", media, false)),
        MessageContent::Sticker { media, .. } => Some(("sticker", media, false)),
        _ => None,
    }
}

/// The fetch for a media message (a voice note is transcribed when `transcribe`).
pub fn media_fetch(message: &InboundMessage, transcribe: bool) -> Option<crate::media::MediaFetch> {
    let (kind, media, voice) = media_of(&message.content)?;
    Some(crate::media::MediaFetch {
        media_id: media.id.clone(),
        kind: kind.to_string(),
        mime_type: media.mime_type.clone(),
        sha256: media.sha256.clone(),
        transcribe: transcribe && voice,
    })
}

/// The behaviour of conversations. The core records contacts, keeps the service window and
/// sends read receipts; layers (flows, chatbots) wrap it.
pub trait ConversationLogic: Send + Sync + 'static {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>);

    /// Effects to run again when a conversation is loaded after a restart (an HTTP call
    /// whose outcome never came back). Committed state only; nothing is stepped.
    fn resume(&self, _state: &ConversationState) -> Vec<Effect> {
        Vec::new()
    }
}

/// The core behaviour alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct CoreLogic;

impl ConversationLogic for CoreLogic {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        step(state, event, ctx)
    }
}

/// The core step.
pub fn step(
    mut state: ConversationState,
    event: &ConversationEvent,
    ctx: &StepContext,
) -> (ConversationState, Vec<Effect>) {
    let mut effects = Vec::new();
    match event {
        ConversationEvent::Inbound { message, .. } => {
            if let Some(from) = message.from.as_ref().filter(|f| !f.is_empty()) {
                state.contact.wa_id = Some(from.as_str().into());
            }
            if let Some(uid) = &message.user_id {
                state.contact.user_id = Some(uid.clone());
            }
            if let Some(name) = &message.profile_name {
                state.contact.profile_name = Some(name.clone());
            }
            let is_user_message = !matches!(message.content, MessageContent::System { .. });
            if is_user_message {
                // The window runs from the user's message time as Meta stamped it; a
                // timestamp from the future (clock skew) is capped at our now.
                let at = if message.timestamp > 0 {
                    (message.timestamp * 1000).min(ctx.now_ms)
                } else {
                    ctx.now_ms
                };
                state.last_inbound_at = Some(state.last_inbound_at.map_or(at, |t| t.max(at)));
                state.window_closed = false;
                state.inbound_count += 1;
                if let Some(h) = &mut state.handoff {
                    h.last_activity = ctx.now_ms;
                }
                if ctx.mark_read {
                    effects.push(Effect::MarkRead {
                        wamid: message.wamid.clone().into(),
                    });
                }
                if ctx.fetch_media {
                    effects.extend(media_fetch(message, ctx.transcribe).map(Effect::FetchMedia));
                }
            }
        }
        ConversationEvent::Outgoing {
            message,
            reply_to,
            policy,
            ..
        } => send(
            &mut state,
            message,
            reply_to.clone(),
            Some(policy.clone().unwrap_or(WindowPolicy::Fail)),
            &mut effects,
        ),
        ConversationEvent::AgentReply { message, .. } => {
            enter_handoff(&mut state, "agent", HandoffBy::Admin, ctx, &mut effects);
            if let Some(h) = &mut state.handoff {
                h.status = HandoffStatus::WithAgent;
                h.last_activity = ctx.now_ms;
            }
            send(
                &mut state,
                message,
                None,
                Some(WindowPolicy::Fail),
                &mut effects,
            );
        }
        ConversationEvent::SendFailed { code, message, .. } => {
            if *code == Some(WINDOW_CLOSED_CODE) {
                state.window_closed = true;
                // Meta says the window is closed: the message goes through the policy.
                if let Some(m) = message.as_ref().filter(|m| m.is_free_form()) {
                    effects.push(Effect::Send {
                        message: m.clone(),
                        reply_to: None,
                        policy: None,
                    });
                }
            }
        }
        ConversationEvent::Handoff { reason } => {
            enter_handoff(&mut state, reason, HandoffBy::Admin, ctx, &mut effects)
        }
        ConversationEvent::Release { .. } => release(&mut state, ctx),
        ConversationEvent::ContactEdit {
            tags,
            profile,
            blocked,
        } => {
            if let Some(tags) = tags {
                state.contact.tags = tags.clone();
            }
            for (field, value) in profile {
                if value.is_empty() {
                    state.contact.fields.remove(field);
                } else {
                    state.contact.fields.insert(field.clone(), value.clone());
                }
            }
            if let Some(b) = blocked {
                state.contact.blocked = *b;
            }
        }
        ConversationEvent::Forget => {
            // The ids stay: they are the conversation's key and its address.
            let contact = ContactInfo {
                wa_id: state.contact.wa_id.take(),
                user_id: state.contact.user_id.take(),
                ..ContactInfo::default()
            };
            state = ConversationState {
                contact,
                last_inbound_at: state.last_inbound_at,
                window_closed: state.window_closed,
                released_requests: std::mem::take(&mut state.released_requests),
                inbound_count: state.inbound_count,
                outbound_count: state.outbound_count,
                ..ConversationState::default()
            };
        }
        ConversationEvent::TimerFired { name, payload, .. } if name == HANDOFF_TIMER => {
            let episode = payload.get("since").and_then(serde_json::Value::as_i64);
            if let Some(h) = state.handoff.as_ref().filter(|h| Some(h.since) == episode) {
                let due = h.last_activity + ctx.handoff_timeout_ms;
                if ctx.now_ms >= due {
                    release(&mut state, ctx);
                } else {
                    effects.push(handoff_timer(h.since, due));
                }
            }
        }
        ConversationEvent::TimerFired { .. }
        | ConversationEvent::HttpResult(_)
        | ConversationEvent::BotResult(_)
        | ConversationEvent::MediaReady(_)
        | ConversationEvent::CommerceResult(_)
        | ConversationEvent::PaymentUpdate { .. } => {}
    }
    let effects = settle_window(&mut state, effects, ctx, event);
    (state, effects)
}

/// Send `message` as the business (the window policy is applied at the end of the step).
fn send(
    state: &mut ConversationState,
    message: &OutboundMessage,
    reply_to: Option<String>,
    policy: Option<WindowPolicy>,
    effects: &mut Vec<Effect>,
) {
    state.outbound_count += 1;
    effects.push(Effect::Send {
        message: message.clone(),
        reply_to,
        policy,
    });
}

/// The business's request an event carries.
pub fn request_of(event: &ConversationEvent) -> Option<&str> {
    match event {
        ConversationEvent::Outgoing { request_id, .. }
        | ConversationEvent::AgentReply { request_id, .. } => Some(request_id),
        _ => None,
    }
}

impl ConversationState {
    /// Whether the business's request `id` is held here, or was held and went out lately.
    pub fn knows_held_request(&self, id: &str) -> bool {
        self.held
            .iter()
            .any(|h| h.request_id.as_deref() == Some(id))
            || self.released_requests.iter().any(|r| r == id)
    }
}

/// The 24 h window on a step's sends: outside it, a free-form message is replaced by its
/// template, held until the user writes again, or refused — per its policy, else the
/// account's. Held messages go out first once the window is open again; those held longer
/// than `hold_ms` are dropped. Pure; every layer's step ends with it.
pub fn settle_window(
    state: &mut ConversationState,
    effects: Vec<Effect>,
    ctx: &StepContext,
    event: &ConversationEvent,
) -> Vec<Effect> {
    let open = state.window_open(ctx.now_ms);
    if open && state.held.is_empty() {
        return effects; // the common case: nothing to hold, replace or release
    }
    let mut out = Vec::with_capacity(effects.len());
    if !state.held.is_empty() {
        state.held.retain(|h| ctx.now_ms - h.held_at < ctx.hold_ms);
        if open {
            for h in state.held.drain(..) {
                if let Some(r) = h.request_id {
                    state.released_requests.push(r);
                }
                out.push(Effect::Send {
                    message: h.message,
                    reply_to: h.reply_to,
                    policy: None,
                });
            }
            let over = state
                .released_requests
                .len()
                .saturating_sub(RELEASED_REMEMBERED);
            state.released_requests.drain(..over);
        }
    }
    for e in effects {
        match e {
            Effect::Send {
                message,
                reply_to,
                policy,
            } if !open && message.is_free_form() => {
                match policy.unwrap_or_else(|| ctx.outside_window.clone()) {
                    WindowPolicy::Fail => out.push(Effect::Refuse {
                        reason:
                            "outside the 24 h customer-service window: only a template may be sent"
                                .into(),
                    }),
                    WindowPolicy::Hold => {
                        state.held.push(Held {
                            message,
                            reply_to,
                            held_at: ctx.now_ms,
                            request_id: request_of(event).map(str::to_string),
                        });
                        out.push(Effect::Held);
                    }
                    WindowPolicy::Template(t) => out.push(Effect::Send {
                        message: t,
                        reply_to,
                        policy: None,
                    }),
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn handoff_timer(since: i64, due_at: i64) -> Effect {
    Effect::StartTimer {
        name: HANDOFF_TIMER.to_string(),
        due_at,
        payload: serde_json::json!({ "since": since }),
    }
}

/// Hand the conversation to a human (no-op if it already is). Flows, chatbots and the admin
/// API all come through here.
pub fn enter_handoff(
    state: &mut ConversationState,
    reason: &str,
    by: HandoffBy,
    ctx: &StepContext,
    effects: &mut Vec<Effect>,
) {
    if state.handoff.is_some() {
        return;
    }
    state.handoff = Some(Handoff {
        status: HandoffStatus::Waiting,
        reason: reason.to_string(),
        by: Some(by),
        since: ctx.now_ms,
        last_activity: ctx.now_ms,
    });
    if ctx.handoff_timeout_ms > 0 {
        effects.push(handoff_timer(
            ctx.now_ms,
            ctx.now_ms + ctx.handoff_timeout_ms,
        ));
    }
}

/// Back to the bot, noting that a human handled the conversation.
fn release(state: &mut ConversationState, ctx: &StepContext) {
    if state.handoff.take().is_some() {
        state.human_handled_at = Some(ctx.now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::event::MessageContent;

    fn inbound(ts: i64) -> ConversationEvent {
        ConversationEvent::Inbound {
            seq: 1,
            message: Arc::new(InboundMessage {
                phone_number_id: "1".into(),
                display_phone_number: String::new(),
                from: Some("6281234567890".into()),
                user_id: None,
                profile_name: Some("Budi".into()),
                wamid: "wamid.A".into(),
                timestamp: ts,
                context: None,
                referral: None,
                errors: vec![],
                content: MessageContent::Text { body: "hi".into() },
            }),
        }
    }

    fn ctx(now_ms: i64) -> StepContext {
        StepContext {
            now_ms,
            mark_read: true,
            handoff_timeout_ms: 3_600_000,
            default_bot: None,
            fetch_media: false,
            transcribe: false,
            outside_window: WindowPolicy::Fail,
            hold_ms: 7 * 24 * 3_600_000,
        }
    }

    fn text(body: &str) -> ConversationEvent {
        ConversationEvent::Outgoing {
            request_id: "r".into(),
            message: OutboundMessage::Text {
                body: body.into(),
                preview_url: false,
            },
            reply_to: None,
            policy: None,
        }
    }

    #[test]
    fn an_inbound_message_records_the_contact_opens_the_window_and_marks_read() {
        let (s, effects) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(2_000_000),
        );
        assert_eq!(s.contact.profile_name.as_deref(), Some("Budi"));
        assert_eq!(s.contact.wa_id.as_deref(), Some("6281234567890"));
        assert_eq!(s.last_inbound_at, Some(1_000_000));
        assert_eq!(
            effects,
            vec![Effect::MarkRead {
                wamid: "wamid.A".into()
            }]
        );
    }

    #[test]
    fn free_form_is_refused_outside_the_window_and_sent_inside() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let (_, inside) = step(s.clone(), &text("hello"), &ctx(1_000_000 + 3_600_000));
        assert!(matches!(inside[0], Effect::Send { .. }));
        let (_, outside) = step(s, &text("hello"), &ctx(1_000_000 + SERVICE_WINDOW_MS + 1));
        assert!(matches!(outside[0], Effect::Refuse { .. }));
    }

    #[test]
    fn a_131047_failure_closes_the_window_until_the_user_writes() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let failed = ConversationEvent::SendFailed {
            outbox_id: 1,
            code: Some(WINDOW_CLOSED_CODE),
            detail: String::new(),
            message: None,
        };
        let (s, _) = step(s, &failed, &ctx(1_000_001));
        assert!(!s.window_open(1_000_002));
        let (s, _) = step(s, &inbound(1_001), &ctx(1_001_000));
        assert!(s.window_open(1_001_001));
    }

    fn reply(body: &str, policy: Option<WindowPolicy>) -> Effect {
        Effect::Send {
            message: OutboundMessage::Text {
                body: body.into(),
                preview_url: false,
            },
            reply_to: None,
            policy,
        }
    }

    #[test]
    fn outside_the_window_a_message_is_refused_held_or_replaced_by_its_template() {
        let (mut s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let later = ctx(1_000_000 + SERVICE_WINDOW_MS + 1);
        let template = OutboundMessage::Template {
            name: "follow_up".into(),
            language: "id".into(),
            components: vec![],
        };
        let out = settle_window(
            &mut s,
            vec![
                reply("a", None),
                reply("b", Some(WindowPolicy::Hold)),
                reply("c", Some(WindowPolicy::Template(template.clone()))),
            ],
            &later,
            &ConversationEvent::Outgoing {
                request_id: "req-b".into(),
                message: OutboundMessage::Text {
                    body: "b".into(),
                    preview_url: false,
                },
                reply_to: None,
                policy: Some(WindowPolicy::Hold),
            },
        );
        assert!(
            matches!(out[0], Effect::Refuse { .. }),
            "the default refuses"
        );
        assert_eq!(out[1], Effect::Held);
        assert!(matches!(&out[2], Effect::Send { message, .. } if *message == template));
        assert_eq!(s.held.len(), 1);
        // Held, its request is known: the same request again is a duplicate.
        assert!(s.knows_held_request("req-b"));
        assert!(!s.knows_held_request("req-x"));
        // The user writes: the held message goes out first, before the new reply.
        let (mut s, fx) = step(s, &inbound(1_000 + 86_500), &ctx(1_000_000 + 86_500_000));
        assert!(s.held.is_empty());
        assert!(s.knows_held_request("req-b"), "remembered once released");
        let sends: Vec<&Effect> = fx
            .iter()
            .filter(|e| matches!(e, Effect::Send { .. }))
            .collect();
        assert_eq!(sends.len(), 1);
        assert!(
            matches!(sends[0], Effect::Send { message: OutboundMessage::Text { body, .. }, .. } if body == "b")
        );
        // Held too long: dropped.
        let far = ctx(1_000_000 + 86_500_000 + SERVICE_WINDOW_MS + 1);
        settle_window(
            &mut s,
            vec![reply("d", Some(WindowPolicy::Hold))],
            &far,
            &text("d"),
        );
        let expired = StepContext {
            now_ms: far.now_ms + 8 * 24 * 3_600_000,
            ..far
        };
        let (s, fx) = step(s, &inbound(expired.now_ms / 1000), &expired);
        assert!(s.held.is_empty());
        assert!(!fx.iter().any(|e| matches!(e, Effect::Send { .. })));
    }

    #[test]
    fn a_131047_puts_the_failed_message_through_the_policy() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let hold = StepContext {
            outside_window: WindowPolicy::Hold,
            ..ctx(1_000_001)
        };
        let failed = ConversationEvent::SendFailed {
            outbox_id: 1,
            code: Some(WINDOW_CLOSED_CODE),
            detail: String::new(),
            message: Some(OutboundMessage::Text {
                body: "late".into(),
                preview_url: false,
            }),
        };
        let (s, fx) = step(s, &failed, &hold);
        assert_eq!(fx, vec![Effect::Held]);
        assert_eq!(s.held.len(), 1);
    }

    fn timer(name: &str, since: i64) -> ConversationEvent {
        ConversationEvent::TimerFired {
            timer_id: 9,
            name: name.into(),
            payload: serde_json::json!({ "since": since }),
        }
    }

    #[test]
    fn handoff_goes_bot_waiting_agent_bot_and_times_out_only_when_idle() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let (s, fx) = step(
            s,
            &ConversationEvent::Handoff {
                reason: "help".into(),
            },
            &ctx(1_000_000),
        );
        let h = s.handoff.clone().unwrap();
        assert_eq!(h.status, HandoffStatus::Waiting);
        assert_eq!(
            fx,
            vec![Effect::StartTimer {
                name: HANDOFF_TIMER.into(),
                due_at: 1_000_000 + 3_600_000,
                payload: serde_json::json!({ "since": 1_000_000 }),
            }]
        );
        let reply = ConversationEvent::AgentReply {
            request_id: "r".into(),
            message: OutboundMessage::Text {
                body: "hi".into(),
                preview_url: false,
            },
        };
        let (s, fx) = step(s, &reply, &ctx(1_000_000 + 1_800_000));
        assert_eq!(s.handoff.as_ref().unwrap().status, HandoffStatus::WithAgent);
        assert!(matches!(fx[0], Effect::Send { .. }));
        // The first timer finds recent activity and re-arms from it.
        let (s, fx) = step(
            s,
            &timer(HANDOFF_TIMER, 1_000_000),
            &ctx(1_000_000 + 3_600_000),
        );
        assert!(s.handoff.is_some());
        assert!(
            matches!(&fx[0], Effect::StartTimer { due_at, .. } if *due_at == 1_000_000 + 1_800_000 + 3_600_000)
        );
        // A timer of an earlier handoff episode changes nothing.
        let (s, _) = step(s, &timer(HANDOFF_TIMER, 7), &ctx(9_000_000_000));
        assert!(s.handoff.is_some());
        let (s, _) = step(
            s,
            &timer(HANDOFF_TIMER, 1_000_000),
            &ctx(1_000_000 + 5_400_000),
        );
        assert!(s.handoff.is_none());
        assert_eq!(s.human_handled_at, Some(1_000_000 + 5_400_000));
    }

    #[test]
    fn an_agent_reply_takes_over_and_release_returns_to_the_bot() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let reply = ConversationEvent::AgentReply {
            request_id: "r".into(),
            message: OutboundMessage::Text {
                body: "hi".into(),
                preview_url: false,
            },
        };
        let (s, _) = step(s, &reply, &ctx(1_000_001));
        assert_eq!(s.handoff.as_ref().unwrap().status, HandoffStatus::WithAgent);
        let (s, _) = step(
            s,
            &ConversationEvent::Release {
                reason: "done".into(),
            },
            &ctx(1_000_002),
        );
        assert!(s.handoff.is_none());
        assert_eq!(s.human_handled_at, Some(1_000_002));
    }

    /// A layer's state is read and written as its text: a state stored by an earlier build
    /// (its layers' keys sorted) loads, and goes back out unchanged.
    #[test]
    fn a_layer_is_kept_as_its_json_text() {
        let layer = r#"{"flow":"shop","vars":{"b":1,"a":"x"}}"#;
        let json = format!(
            r#"{{"contact":{{}},"inbound_count":1,"outbound_count":0,"ext":{{"flow":{layer}}}}}"#
        );
        let s: ConversationState = serde_json::from_str(&json).unwrap();
        let flow: serde_json::Value = s.ext["flow"].read().unwrap();
        assert_eq!(flow["vars"]["a"], "x");
        assert_eq!(serde_json::to_string(&s).unwrap(), json);
        // The admin API's view of the state.
        assert_eq!(
            serde_json::to_value(&s).unwrap()["ext"]["flow"]["vars"]["b"],
            1
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let (s, _) = step(
            ConversationState::default(),
            &inbound(1_000),
            &ctx(1_000_000),
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ConversationState>(&json).unwrap(), s);
    }
}
