//! The pure step function: (state, input) -> (state, actions).
//!
//! `mod.rs` the state, inputs, actions and context, and the step's entry points;
//! `input.rs` what each input does (triggers, timers, HTTP answers, messages, a flow's
//! begin and end); `answer.rs` an answer to an `ask` node checked; `nodes.rs` the node
//! runner (each node kind, waits and their timers, A/B splits); `send.rs` a send node's
//! message rendered for the contact; `shop.rs` the shop nodes (catalog, cart, checkout,
//! order status): their calls, and what their answers do.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::expr::{self, truthy, Env};
use super::model::*;
use super::validate::{content_hash, normalize, FlowSet};
use crate::conversation::ContactInfo;
use crate::outcall::{HttpCall, HttpOutcome};
use crate::whatsapp::send::OutboundMessage;

mod answer;
mod input;
mod nodes;
mod send;
mod shop;

pub use nodes::split_variant;

/// The variable holding the id of the user's last message the flow took.
pub const MESSAGE_ID_VAR: &str = "message_id";

/// Where a subflow returns to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub flow: String,
    pub version: String,
    /// Node to continue at; None ends the caller too.
    pub next: Option<String>,
}

/// A message that arrived while the flow was busy (an HTTP call in flight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    pub text: Option<String>,
    pub reply_id: Option<String>,
    /// Its id, for `message_id` when it is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// A conversation's flow state (stored as JSON). Default = no active flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    pub flow: Option<String>,
    /// Content hash of the flow file when the session started.
    pub version: Option<String>,
    pub node: Option<String>,
    pub awaiting_input: bool,
    pub retries: u32,
    pub vars: BTreeMap<String, Value>,
    /// Name of the timer the current wait entry asked for; only that one ends the wait.
    pub waiting_timer: Option<String>,
    /// Wait entries so far in this session: with the time, makes each entry's timer name
    /// unique, so a timer left pending by an earlier entry of the same wait node (timers
    /// are never cancelled) cannot end a later one early.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waits: u64,
    pub started_at_ms: i64,
    pub last_activity_ms: i64,
    /// Callers of the running subflow, innermost last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Frame>,
    /// The HTTP call whose answer the flow waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCall>,
    /// Messages that came while waiting for `http`, handled when it answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Deferred>,
    /// Paused on a handoff node until a human releases the conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
    /// Paused on a chatbot node until the bot session ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
    /// The shop call whose answer the flow waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commerce: Option<crate::commerce::Call>,
    /// The payment (its id) a payment node waits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<i64>,
    /// Shop calls so far in this session (each call's id is unique with it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls: u64,
    /// A payment's news that came while the payment node still waited for the shop to open
    /// it (a gateway's callback can beat its create call's answer): applied when the
    /// answer names that payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_payment: Option<EarlyPayment>,
}

/// A payment's news kept until the shop's answer names its payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyPayment {
    pub id: i64,
    pub status: crate::domain::PaymentStatus,
    /// What the customer is told if it turns out to be another payment's news.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub news: Option<String>,
    /// What a paid plan gives, sent before the flow goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FlowState {
    pub fn is_active(&self) -> bool {
        self.flow.is_some()
    }

    /// Waiting for a call's answer (HTTP or the shop): a message now is kept for after it.
    pub fn is_busy(&self) -> bool {
        self.http.is_some() || self.commerce.is_some()
    }

    /// Waiting for the shop to open a payment: its news may come before the answer.
    pub fn opening_payment(&self) -> bool {
        self.commerce
            .as_ref()
            .is_some_and(|c| matches!(c.op, crate::commerce::Op::Payment { .. }))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum FlowInput<'a> {
    /// A user message: `text` is the text body or None; `reply_id` is a button/list reply id.
    Message {
        text: Option<&'a str>,
        reply_id: Option<&'a str>,
    },
    /// A media message (image, document, audio, video, sticker) with its media id.
    Media {
        kind: &'a str,
        id: &'a str,
        caption: Option<&'a str>,
    },
    /// WhatsApp's catalog `order` message (its products, and the text sent with it).
    Order {
        items: &'a [crate::whatsapp::event::OrderItem],
        text: Option<&'a str>,
    },
    /// A timer this engine asked for fired.
    Timer { name: &'a str },
    /// The answer to the HTTP call the flow waits for.
    Http(&'a HttpOutcome),
    /// The shop's answer to the call the flow waits for.
    Commerce(&'a crate::commerce::CommerceResult),
    /// A payment moved (a gateway's callback, the reconciliation, the owner's confirmation).
    Payment {
        id: i64,
        status: crate::domain::PaymentStatus,
        /// The news as a customer with no flow waiting on it hears it.
        news: Option<&'a str>,
        /// What a paid plan gives.
        access: Option<&'a str>,
    },
    /// A human handed the conversation back.
    Released,
    /// The chatbot session a chatbot node started has ended.
    BotDone,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FlowAction {
    Send(OutboundMessage),
    StartTimer {
        name: String,
        after_ms: i64,
    },
    /// Make this call; its outcome comes back as [`FlowInput::Http`].
    Http(HttpCall),
    /// Ask the shop; the answer comes back as [`FlowInput::Commerce`].
    Commerce(crate::commerce::Call),
    /// The next `Send` follows this policy outside the 24 h window.
    OutsideWindow(crate::conversation::WindowPolicy),
    /// Hand the conversation to a human; the flow continues on [`FlowInput::Released`].
    Handoff {
        reason: String,
    },
    /// Let `bot` talk with the user; the flow continues on [`FlowInput::BotDone`].
    StartBot {
        bot: String,
        until: Vec<String>,
    },
    /// The contact's fields, tags or access level changed: the whole new contact.
    Contact(ContactInfo),
    /// A flow session reached its end (also one that began and ended within this input).
    Ended {
        flow: String,
        version: String,
        started_at_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct FlowContext<'a> {
    pub now_ms: i64,
    /// The contact as it was before this event (name, access level, fields, tags).
    pub contact: Option<&'a ContactInfo>,
    /// Stable key of the contact (wa_id): picks, and keeps, its A/B split variant.
    pub contact_key: Option<&'a str>,
    /// The Click-to-WhatsApp ad id the message came from, if any.
    pub referral: Option<&'a str>,
    /// The id (wamid) of the user's message this input is, if it is one: a flow that takes
    /// the message has it as the variable `message_id` (e.g. to send a `reaction` to it).
    pub message_id: Option<&'a str>,
    /// Runaway guard: max nodes executed for one input.
    pub max_steps: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    #[error("more than max_steps nodes ran for one input (runaway loop)")]
    Runaway {
        /// The flow running when the guard stopped it.
        flow: String,
        started_at_ms: i64,
    },
    #[error("flow `{flow}` node `{node}`: {msg}")]
    Eval {
        flow: String,
        node: String,
        msg: String,
    },
}

/// What one step is working with besides the flow state.
struct Run<'c, 'a> {
    flows: &'c FlowSet,
    ctx: &'c FlowContext<'a>,
    /// The contact as the flow changes it; emitted once if it changed.
    contact: ContactInfo,
    actions: Vec<FlowAction>,
    steps: usize,
    /// The id of the user's message being handled (the context's, or a deferred one's).
    message_id: Option<String>,
}

/// Pure step. See the module docs / brief for semantics.
pub fn step(
    flows: &FlowSet,
    state: FlowState,
    input: FlowInput<'_>,
    ctx: &FlowContext<'_>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    run_with(flows, ctx, |r| r.input(state, input))
}

/// Run `f` on a fresh [`Run`]; the contact is reported once if the flow changed it.
fn run_with(
    flows: &FlowSet,
    ctx: &FlowContext<'_>,
    f: impl FnOnce(&mut Run<'_, '_>) -> Result<FlowState, FlowError>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    let mut r = Run {
        flows,
        ctx,
        contact: ctx.contact.cloned().unwrap_or_default(),
        actions: Vec::new(),
        steps: 0,
        message_id: ctx.message_id.map(str::to_string),
    };
    let st = f(&mut r)?;
    let mut actions = r.actions;
    let changed = match ctx.contact {
        Some(before) => r.contact != *before,
        None => r.contact != ContactInfo::default(),
    };
    if changed {
        actions.push(FlowAction::Contact(r.contact));
    }
    Ok((st, actions))
}

impl<'c, 'a> Run<'c, 'a> {
    fn flow(&self, st: &FlowState) -> Option<&'c Flow> {
        st.flow.as_deref().and_then(|id| self.flows.get(id))
    }

    /// The user's message this input is: its id into `message_id`.
    fn stamp(&self, st: &mut FlowState) {
        if let Some(id) = &self.message_id {
            st.vars
                .insert(MESSAGE_ID_VAR.into(), Value::Str(id.clone()));
        }
    }
}

/// Start `flow_id` at its start node, whatever the triggers say (the simulator, and a
/// conversation sent into a flow by the business).
pub fn start(
    flows: &FlowSet,
    flow_id: &str,
    ctx: &FlowContext<'_>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    let Some(flow) = flows.get(flow_id) else {
        return Ok((FlowState::default(), Vec::new()));
    };
    run_with(flows, ctx, |r| r.begin(&flow.id, flow.start.clone()))
}
