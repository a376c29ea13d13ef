//! The pure step function: (state, input) -> (state, actions).

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

/// The variable holding the id of the user's last message the flow took.
pub const MESSAGE_ID_VAR: &str = "message_id";

/// Messages kept while a flow waits for an HTTP answer (the rest are dropped).
const MAX_DEFERRED: usize = 20;

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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FlowState {
    pub fn is_active(&self) -> bool {
        self.flow.is_some()
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
    /// A timer this engine asked for fired.
    Timer { name: &'a str },
    /// The answer to the HTTP call the flow waits for.
    Http(&'a HttpOutcome),
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

/// Which triggers may fire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Triggers {
    /// Only those marked `global` (a flow waits for an answer).
    Global,
    /// Every trigger but `default` (a flow is paused: on a timer, say).
    Matching,
    /// Every trigger, `default` too (no active flow).
    All,
}

/// The flow and start node the message triggers: the highest priority match across all
/// flows (ties: file order), among the triggers `which` allows. A flow the contact's access
/// level does not reach is skipped. `default` triggers fire only when nothing else matched.
fn trigger_match(
    flows: &FlowSet,
    text: Option<&str>,
    reply_id: Option<&str>,
    referral: Option<&str>,
    which: Triggers,
    contact: &ContactInfo,
) -> Option<(String, String)> {
    let only_global = which == Triggers::Global;
    let norm = text.map(normalize);
    let mut best: Option<(i32, String, String)> = None;
    let mut fallback: Option<(i32, String, String)> = None;
    for f in flows.flows() {
        if f.access > contact.access {
            continue;
        }
        for t in &f.triggers {
            if only_global && !t.global {
                continue;
            }
            let start = || t.start().cloned().unwrap_or_else(|| f.start.clone());
            let hit = match &t.on {
                Trigger::Keyword { word, kind, .. } => match (&norm, kind) {
                    (Some(n), MatchKind::Exact) => n == word,
                    (Some(n), MatchKind::Prefix) => n.starts_with(word.as_str()),
                    (Some(n), MatchKind::Contains) => n.contains(word.as_str()),
                    (None, _) => false,
                },
                Trigger::Button { id, .. } => reply_id.is_some_and(|r| r.eq_ignore_ascii_case(id)),
                Trigger::Regex { re, .. } => text.is_some_and(|t| re.is_match(t.trim())),
                Trigger::Referral { ad, .. } => {
                    referral.is_some_and(|r| ad.as_deref().is_none_or(|a| a == r))
                }
                Trigger::Default { .. } => {
                    if which == Triggers::All
                        && fallback.as_ref().is_none_or(|(p, _, _)| t.priority > *p)
                    {
                        fallback = Some((t.priority, f.id.clone(), start()));
                    }
                    false
                }
            };
            if hit && best.as_ref().is_none_or(|(p, _, _)| t.priority > *p) {
                best = Some((t.priority, f.id.clone(), start()));
            }
        }
    }
    best.or(fallback).map(|(_, id, start)| (id, start))
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

    fn input(&mut self, state: FlowState, input: FlowInput<'_>) -> Result<FlowState, FlowError> {
        let mut st = state;
        let ctx = self.ctx;
        // Drop sessions whose flow/node vanished (e.g. flow file edited).
        let valid = self
            .flow(&st)
            .is_some_and(|f| st.node.as_deref().is_some_and(|n| f.nodes.contains_key(n)));
        if st.is_active() && !valid {
            st = FlowState::default();
        }
        match input {
            FlowInput::Timer { name } => {
                if !st.is_active() || st.waiting_timer.as_deref() != Some(name) {
                    return Ok(st);
                }
                st.waiting_timer = None;
                st.last_activity_ms = ctx.now_ms;
                self.continue_after_node(st)
            }
            FlowInput::BotDone => {
                if !st.is_active() || !st.bot {
                    return Ok(st);
                }
                st.bot = false;
                st.last_activity_ms = ctx.now_ms;
                self.continue_after_node(st)
            }
            FlowInput::Released => {
                // A handoff node, or a chatbot node whose bot handed off.
                if !st.is_active() || !(st.handoff || st.bot) {
                    return Ok(st);
                }
                st.handoff = false;
                st.bot = false;
                st.last_activity_ms = ctx.now_ms;
                self.continue_after_node(st)
            }
            FlowInput::Http(outcome) => {
                if st.http.as_ref().is_none_or(|c| c.id != outcome.id) {
                    return Ok(st); // a stale answer: not the call we wait for
                }
                st.http = None;
                st.last_activity_ms = ctx.now_ms;
                let deferred = std::mem::take(&mut st.deferred);
                let flow = self.flow(&st).expect("valid");
                let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
                let NodeKind::Http(spec) = &node.kind else {
                    return Ok(FlowState::default());
                };
                st.vars.insert(
                    "http_status".into(),
                    Value::Num(Decimal::from(outcome.status)),
                );
                let mut st = if outcome.ok() {
                    let json: Option<serde_json::Value> = serde_json::from_str(&outcome.body).ok();
                    for (var, path) in &spec.save {
                        let v = json.as_ref().and_then(|j| json_path(j, path));
                        st.vars.insert(
                            var.clone(),
                            v.map(from_json).unwrap_or(Value::Str(String::new())),
                        );
                    }
                    self.continue_after_node(st)?
                } else {
                    let on_error = spec.on_error.clone();
                    match on_error {
                        Some(n) => self.run(st, Some(n))?,
                        None => self.end(st)?,
                    }
                };
                // What the user said meanwhile, in order.
                for d in deferred {
                    let input = FlowInput::Message {
                        text: d.text.as_deref(),
                        reply_id: d.reply_id.as_deref(),
                    };
                    let answering = std::mem::replace(&mut self.message_id, d.message_id.clone());
                    st = self.input(st, input)?;
                    self.message_id = answering;
                }
                Ok(st)
            }
            FlowInput::Media { kind, id, caption } => {
                let awaiting_media = st.is_active()
                    && st.awaiting_input
                    && st.http.is_none()
                    && self.flow(&st).is_some_and(|f| {
                        matches!(&f.nodes[st.node.as_deref().unwrap_or_default()].kind,
                            NodeKind::Ask(a) if a.kind == AskType::Media)
                    });
                if awaiting_media {
                    st.last_activity_ms = ctx.now_ms;
                    self.stamp(&mut st);
                    return self.answer(st, Answer::Media { kind, id });
                }
                self.message(st, caption, None)
            }
            FlowInput::Message { text, reply_id } => self.message(st, text, reply_id),
        }
    }

    fn message(
        &mut self,
        mut st: FlowState,
        text: Option<&str>,
        reply_id: Option<&str>,
    ) -> Result<FlowState, FlowError> {
        let ctx = self.ctx;
        if st.is_active() && st.http.is_some() {
            // Busy: keep it for when the answer comes, so nothing is handled out of order.
            if st.deferred.len() < MAX_DEFERRED {
                st.deferred.push(Deferred {
                    text: text.map(str::to_string),
                    reply_id: reply_id.map(str::to_string),
                    message_id: self.message_id.clone(),
                });
            }
            return Ok(st);
        }
        if let Some(flow) = self.flow(&st) {
            if let Some(t) = flow.session_timeout_ms {
                if ctx.now_ms - st.last_activity_ms > t {
                    let on_expire = flow.on_expire.clone();
                    let fresh = FlowState {
                        vars: std::mem::take(&mut st.vars),
                        ..FlowState::default()
                    };
                    st = match on_expire {
                        Some(node) => {
                            let expired = FlowState {
                                flow: st.flow.clone(),
                                version: st.version.clone(),
                                started_at_ms: st.started_at_ms,
                                last_activity_ms: ctx.now_ms,
                                vars: fresh.vars,
                                ..FlowState::default()
                            };
                            self.run(expired, Some(node))?
                        }
                        None => FlowState::default(),
                    };
                    if st.is_active() {
                        return Ok(st); // the expiry branch asks something: this was the answer's turn
                    }
                }
            }
        }
        let referral = ctx.referral;
        if st.is_active() {
            self.stamp(&mut st);
        }
        if st.is_active() && (st.awaiting_input || st.waiting_timer.is_some()) {
            // A global trigger (e.g. `menu`) leaves the flow waiting.
            if let Some((fid, start)) = trigger_match(
                self.flows,
                text,
                reply_id,
                referral,
                Triggers::Global,
                &self.contact,
            ) {
                return self.begin(&fid, start);
            }
            st.last_activity_ms = ctx.now_ms;
            if st.awaiting_input {
                return self.answer(st, Answer::Text { text, reply_id });
            }
            // A wait that a reply interrupts.
            let flow = self.flow(&st).expect("valid");
            if let NodeKind::Wait {
                on_reply: Some(to), ..
            } = &flow.nodes[st.node.as_deref().unwrap_or_default()].kind
            {
                let to = to.clone();
                st.waiting_timer = None;
                if let Some(t) = text {
                    st.vars
                        .insert("reply".into(), Value::Str(t.trim().to_string()));
                }
                return self.run(st, Some(to));
            }
        }
        // No flow, paused on a timer or a handoff: triggers may (re)start a flow; `default`
        // only when no flow is active (it must not drop a session that waits).
        let which = if st.is_active() {
            Triggers::Matching
        } else {
            Triggers::All
        };
        let Some((fid, start)) =
            trigger_match(self.flows, text, reply_id, referral, which, &self.contact)
        else {
            return Ok(st);
        };
        self.begin(&fid, start)
    }

    /// A fresh session of `flow`, run from `start_node` until it waits or ends.
    fn begin(&mut self, flow_id: &str, start_node: String) -> Result<FlowState, FlowError> {
        let flow = self.flows.get(flow_id).expect("flow exists");
        let mut st = FlowState {
            flow: Some(flow.id.clone()),
            version: Some(flow.version.clone()),
            started_at_ms: self.ctx.now_ms,
            last_activity_ms: self.ctx.now_ms,
            ..FlowState::default()
        };
        self.stamp(&mut st);
        self.run(st, Some(start_node))
    }

    /// Go on after the node the flow is paused at (its `next`, or the end).
    fn continue_after_node(&mut self, st: FlowState) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
        if node.end {
            return self.end(st);
        }
        let next = node.next.clone();
        self.run(st, next)
    }

    /// The running flow ended: back to the caller of a subflow, else no flow.
    fn end(&mut self, mut st: FlowState) -> Result<FlowState, FlowError> {
        while let Some(frame) = st.stack.pop() {
            if self.flows.get(&frame.flow).is_none() {
                continue;
            }
            st.flow = Some(frame.flow);
            st.version = Some(frame.version);
            st.node = None;
            return self.run(st, frame.next);
        }
        if let (Some(flow), Some(version)) = (st.flow, st.version) {
            self.actions.push(FlowAction::Ended {
                flow,
                version,
                started_at_ms: st.started_at_ms,
            });
        }
        Ok(FlowState::default())
    }

    fn answer(&mut self, mut st: FlowState, ans: Answer<'_>) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node_id = st.node.clone().unwrap_or_default();
        let node = &flow.nodes[&node_id];
        let NodeKind::Ask(a) = &node.kind else {
            return Ok(FlowState::default());
        };
        // An option shown only from an access level up is not one of the options for a
        // contact below it (typing its id must not reach what the menu hides).
        let access = self.contact.access;
        let reachable = |o: &str| option_level(flow, o) <= access;
        match validate_answer(a, ans, reachable) {
            Some(v) => {
                st.awaiting_input = false;
                st.retries = 0;
                let key = expr::display(&v).to_lowercase();
                if let Some(s) = &a.save {
                    st.vars.insert(s.clone(), v);
                }
                if node.end {
                    return self.end(st);
                }
                let next = a.branches.get(&key).cloned().or_else(|| node.next.clone());
                self.run(st, next)
            }
            None => {
                st.retries += 1;
                if st.retries > a.max_retries {
                    st.awaiting_input = false;
                    st.retries = 0;
                    return match a.on_fail.clone() {
                        Some(f) => self.run(st, Some(f)),
                        None => self.end(st),
                    };
                }
                let env = Env {
                    vars: &st.vars,
                    contact: &self.contact,
                };
                let body = match &a.retry {
                    Some(t) => t.render(&env),
                    None => "Sorry, that is not a valid answer. Please try again.".to_string(),
                };
                self.actions.push(FlowAction::Send(OutboundMessage::Text {
                    body,
                    preview_url: false,
                }));
                Ok(st)
            }
        }
    }

    /// Walk nodes from `next` until the flow waits or ends.
    fn run(&mut self, mut st: FlowState, mut next: Option<String>) -> Result<FlowState, FlowError> {
        let ctx = self.ctx;
        loop {
            let Some(id) = next.take() else {
                return self.end(st);
            };
            self.steps += 1;
            if self.steps > ctx.max_steps {
                return Err(FlowError::Runaway {
                    flow: st.flow.clone().unwrap_or_default(),
                    started_at_ms: st.started_at_ms,
                });
            }
            let flows = self.flows;
            let Some(flow) = st.flow.as_deref().and_then(|f| flows.get(f)) else {
                return Ok(FlowState::default());
            };
            let Some(node) = flow.nodes.get(&id) else {
                return self.end(st);
            };
            st.node = Some(id.clone());
            let err = |msg: String| FlowError::Eval {
                flow: flow.id.clone(),
                node: id.clone(),
                msg,
            };
            next = node.next.clone();
            match &node.kind {
                NodeKind::Noop => {}
                NodeKind::Send(s) => {
                    let env = Env {
                        vars: &st.vars,
                        contact: &self.contact,
                    };
                    let m = render_send(s, &env, self.contact.access);
                    if let Some(p) = &node.outside_window {
                        self.actions.push(FlowAction::OutsideWindow(p.clone()));
                    }
                    self.actions.push(FlowAction::Send(m));
                }
                NodeKind::Ask(a) => {
                    if let Some(p) = &a.prompt {
                        let env = Env {
                            vars: &st.vars,
                            contact: &self.contact,
                        };
                        self.actions.push(FlowAction::Send(OutboundMessage::Text {
                            body: p.render(&env),
                            preview_url: false,
                        }));
                    }
                    st.awaiting_input = true;
                    st.retries = 0;
                    return Ok(st);
                }
                NodeKind::Condition {
                    cond,
                    then,
                    otherwise,
                } => {
                    let env = Env {
                        vars: &st.vars,
                        contact: &self.contact,
                    };
                    let v = expr::eval(cond, &env).map_err(err)?;
                    next = Some(if truthy(&v) { then } else { otherwise }.clone());
                    continue;
                }
                NodeKind::Set(list) => {
                    for op in list {
                        let eval = |e: &expr::Expr, st: &FlowState, c: &ContactInfo| {
                            expr::eval(
                                e,
                                &Env {
                                    vars: &st.vars,
                                    contact: c,
                                },
                            )
                        };
                        match op {
                            SetOp::Var(k, e) => {
                                let v = eval(e, &st, &self.contact).map_err(err)?;
                                st.vars.insert(k.clone(), v);
                            }
                            SetOp::Contact(k, e) => {
                                let v = eval(e, &st, &self.contact).map_err(err)?;
                                self.contact.fields.insert(k.clone(), expr::display(&v));
                            }
                            SetOp::Access(e) => {
                                let v = eval(e, &st, &self.contact).map_err(err)?;
                                let text = expr::display(&v);
                                self.contact.access = AccessLevel::parse(&text).ok_or_else(|| {
                                    err(format!(
                                        "access level `{text}` is not public, registered or activated"
                                    ))
                                })?;
                            }
                            SetOp::TagAdd(tags) => self.contact.tags.extend(tags.iter().cloned()),
                            SetOp::TagRemove(tags) => {
                                for t in tags {
                                    self.contact.tags.remove(t);
                                }
                            }
                        }
                    }
                }
                NodeKind::JumpNode(t) => {
                    next = Some(t.clone());
                    continue;
                }
                NodeKind::JumpFlow { flow: target, ret } => {
                    let Some(sub) = flows.get(target) else {
                        return self.end(st);
                    };
                    if sub.access > self.contact.access {
                        // As its trigger would: a flow above the contact's level does not
                        // start. A subflow call goes on after the call; a jump ends here.
                        if *ret && !node.end {
                            continue;
                        }
                        return self.end(st);
                    }
                    if *ret {
                        st.stack.push(Frame {
                            flow: flow.id.clone(),
                            version: flow.version.clone(),
                            next: next.take(),
                        });
                    } else {
                        st.stack.clear();
                    }
                    st.flow = Some(sub.id.clone());
                    st.version = Some(sub.version.clone());
                    next = Some(sub.start.clone());
                    continue;
                }
                NodeKind::Split { variants, save } => {
                    let (variant, to) =
                        split_variant(variants, ctx.contact_key.unwrap_or(""), &flow.id, &id);
                    st.vars.insert(save.clone(), Value::Str(variant));
                    next = Some(to);
                    continue;
                }
                NodeKind::Wait {
                    ms, until_minute, ..
                } => {
                    let after_ms = match (ms, until_minute) {
                        (Some(ms), _) => *ms,
                        (None, Some(m)) => until_next(ctx.now_ms, *m),
                        (None, None) => 0,
                    };
                    st.waits += 1;
                    let name = format!("{}:{}@{}.{}", flow.id, id, ctx.now_ms, st.waits);
                    self.actions.push(FlowAction::StartTimer {
                        name: name.clone(),
                        after_ms,
                    });
                    st.waiting_timer = Some(name);
                    return Ok(st);
                }
                NodeKind::Http(spec) => {
                    let env = Env {
                        vars: &st.vars,
                        contact: &self.contact,
                    };
                    let call_key = format!(
                        "{}\0{}\0{}\0{}\0{}",
                        ctx.contact_key.unwrap_or(""),
                        flow.id,
                        id,
                        st.started_at_ms,
                        ctx.now_ms
                    );
                    let call = HttpCall {
                        id: format!("flow-{}", content_hash(&call_key)),
                        method: spec.method.clone(),
                        url: spec.url.render(&env),
                        headers: spec
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.render(&env)))
                            .collect(),
                        body: spec.body.as_ref().map(|b| render_json(b, &env).to_string()),
                        timeout_ms: spec.timeout_ms,
                    };
                    self.actions.push(FlowAction::Http(call.clone()));
                    st.http = Some(call);
                    return Ok(st);
                }
                NodeKind::Handoff { reason, message } => {
                    if let Some(m) = message {
                        let env = Env {
                            vars: &st.vars,
                            contact: &self.contact,
                        };
                        self.actions.push(FlowAction::Send(OutboundMessage::Text {
                            body: m.render(&env),
                            preview_url: false,
                        }));
                    }
                    self.actions.push(FlowAction::Handoff {
                        reason: reason.clone(),
                    });
                    st.handoff = true;
                    return Ok(st);
                }
                NodeKind::Chatbot { bot, until } => {
                    self.actions.push(FlowAction::StartBot {
                        bot: bot.clone(),
                        until: until.clone(),
                    });
                    st.bot = true;
                    return Ok(st);
                }
            }
            if node.end {
                return self.end(st);
            }
        }
    }
}

/// Milliseconds from `now_ms` to the next `minute` of the day (UTC); a full day if now.
fn until_next(now_ms: i64, minute: u32) -> i64 {
    let day = 86_400_000;
    let target = i64::from(minute) * 60_000;
    let into_day = now_ms.rem_euclid(day);
    let d = (target - into_day).rem_euclid(day);
    if d == 0 {
        day
    } else {
        d
    }
}

/// `a.b.0.c` into a JSON value.
fn json_path<'j>(v: &'j serde_json::Value, path: &str) -> Option<&'j serde_json::Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |v, key| match v {
            serde_json::Value::Object(m) => m.get(key),
            serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .map(Value::Num)
            .unwrap_or_else(|_| Value::Str(n.to_string())),
        serde_json::Value::Null => Value::Str(String::new()),
        other => Value::Str(other.to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer<'a> {
    Text {
        text: Option<&'a str>,
        reply_id: Option<&'a str>,
    },
    Media {
        kind: &'a str,
        id: &'a str,
    },
}

/// `2026-11-22`, `22/11/2026` or `22-11-2026` as `YYYY-MM-DD`, if it is a real date.
fn parse_date(t: &str) -> Option<String> {
    let parts: Vec<&str> = t.split(['-', '/', '.']).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let (y, m, d) = if a.len() == 4 { (a, b, c) } else { (c, b, a) };
    let (y, m, d): (i32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if y.to_string().len() != 4 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    (d <= days[(m - 1) as usize]).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// The lowest access level that is shown option `id` in `flow`: the lowest level of any
/// button or list row of the flow with that id (public when one shows it to everyone, or
/// when no button or row has it).
fn option_level(flow: &Flow, id: &str) -> AccessLevel {
    let mut level: Option<AccessLevel> = None;
    let mut consider = |shown: &str, restricted: &[(String, AccessLevel)]| {
        if shown.eq_ignore_ascii_case(id) {
            let l = restricted
                .iter()
                .find(|(r, _)| r.eq_ignore_ascii_case(shown))
                .map_or(AccessLevel::Public, |(_, l)| *l);
            level = Some(level.map_or(l, |m| m.min(l)));
        }
    };
    for node in flow.nodes.values() {
        match &node.kind {
            NodeKind::Send(SendSpec::Buttons {
                buttons,
                restricted,
                ..
            }) => buttons.iter().for_each(|b| consider(&b.id, restricted)),
            NodeKind::Send(SendSpec::List {
                sections,
                restricted,
                ..
            }) => sections
                .iter()
                .flat_map(|s| &s.rows)
                .for_each(|r| consider(&r.id, restricted)),
            _ => {}
        }
    }
    level.unwrap_or(AccessLevel::Public)
}

fn validate_answer(
    a: &AskSpec,
    ans: Answer<'_>,
    reachable: impl Fn(&str) -> bool,
) -> Option<Value> {
    let (text, reply_id) = match ans {
        Answer::Media { kind, id } => {
            let ok = a.kind == AskType::Media
                && (a.media_types.is_empty() || a.media_types.iter().any(|t| t == kind));
            return ok.then(|| Value::Str(id.to_string()));
        }
        Answer::Text { text, reply_id } => (text, reply_id),
    };
    let t = text.map(str::trim).unwrap_or("");
    match a.kind {
        AskType::Options => {
            for o in a.options.iter().filter(|o| reachable(o)) {
                if reply_id.is_some_and(|r| r.eq_ignore_ascii_case(o))
                    || normalize(t) == normalize(o)
                {
                    return Some(Value::Str(o.clone()));
                }
            }
            None
        }
        AskType::Media => None,
        _ if t.is_empty() => None,
        AskType::Text => Some(Value::Str(t.to_string())),
        AskType::Number | AskType::Decimal => {
            let d = if a.kind == AskType::Number {
                t.parse::<i64>().ok().map(Decimal::from)
            } else {
                Decimal::from_str(&t.replace(',', ".")).ok()
            }?;
            if a.min.is_some_and(|m| d < m) || a.max.is_some_and(|m| d > m) {
                return None;
            }
            Some(Value::Num(d.normalize()))
        }
        AskType::Email => {
            let (user, domain) = t.split_once('@')?;
            let ok = !user.is_empty()
                && !t.contains(char::is_whitespace)
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.');
            ok.then(|| Value::Str(t.to_string()))
        }
        AskType::Phone => {
            let digits = t.strip_prefix('+').unwrap_or(t);
            let ok = digits.chars().all(|c| c.is_ascii_digit()) && (7..=15).contains(&digits.len());
            ok.then(|| Value::Str(t.to_string()))
        }
        AskType::Date => parse_date(t).map(Value::Str),
        AskType::Regex => a
            .pattern
            .as_ref()
            .is_some_and(|p| p.is_match(t))
            .then(|| Value::Str(t.to_string())),
    }
}

fn render_send(s: &SendSpec, env: &Env<'_>, access: AccessLevel) -> OutboundMessage {
    let shown = |restricted: &[(String, AccessLevel)], id: &str| {
        restricted
            .iter()
            .all(|(r, level)| r != id || *level <= access)
    };
    let opt = |t: &Option<super::template::Template>| t.as_ref().map(|t| t.render(env));
    match s {
        SendSpec::Message(t, as_written) => {
            // Only string leaves are templated, so a message that decoded at load decodes now;
            // should it not, the message as written goes out.
            serde_json::from_value(render_json(t, env)).unwrap_or_else(|_| (**as_written).clone())
        }
        SendSpec::Text(t) => OutboundMessage::Text {
            body: t.render(env),
            preview_url: false,
        },
        SendSpec::Buttons {
            header,
            body,
            footer,
            buttons,
            restricted,
        } => OutboundMessage::Buttons {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            buttons: buttons
                .iter()
                .filter(|b| shown(restricted, &b.id))
                .cloned()
                .collect(),
        },
        SendSpec::List {
            header,
            body,
            footer,
            button,
            sections,
            restricted,
        } => OutboundMessage::List {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            button: button.clone(),
            sections: sections
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.rows.retain(|r| shown(restricted, &r.id));
                    s
                })
                .filter(|s| !s.rows.is_empty())
                .collect(),
        },
    }
}

fn render_json(t: &super::model::TemplatedJson, env: &Env<'_>) -> serde_json::Value {
    use super::model::TemplatedJson as T;
    match t {
        T::Str(tpl) => serde_json::Value::String(tpl.render(env)),
        T::Other(v) => v.clone(),
        T::Arr(a) => serde_json::Value::Array(a.iter().map(|x| render_json(x, env)).collect()),
        T::Obj(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render_json(x, env)))
                .collect(),
        ),
    }
}

/// The variant a contact lands in: by weight, from a hash of (contact, flow, node), so the
/// same contact always gets the same one, in every process, with no randomness in `step`.
pub fn split_variant(
    variants: &[(String, u32, String)],
    contact: &str,
    flow: &str,
    node: &str,
) -> (String, String) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in contact
        .bytes()
        .chain([0])
        .chain(flow.bytes())
        .chain([0])
        .chain(node.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let total: u64 = variants
        .iter()
        .map(|(_, w, _)| u64::from(*w))
        .sum::<u64>()
        .max(1);
    let mut pick = h % total;
    for (name, weight, to) in variants {
        if pick < u64::from(*weight) {
            return (name.clone(), to.clone());
        }
        pick -= u64::from(*weight);
    }
    let (name, _, to) = &variants[variants.len() - 1];
    (name.clone(), to.clone())
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
