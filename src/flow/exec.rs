//! The pure step function: (state, input) -> (state, actions).

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::expr::{self, truthy, Env};
use super::model::*;
use super::validate::{normalize, FlowSet};
use crate::whatsapp::send::OutboundMessage;

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
    pub waiting_timer: Option<String>,
    pub started_at_ms: i64,
    pub last_activity_ms: i64,
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
    /// A timer this engine asked for fired.
    Timer { name: &'a str },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FlowAction {
    Send(OutboundMessage),
    StartTimer {
        name: String,
        after_ms: i64,
    },
    /// The flow wants another flow started (jump with `flow:`); the caller may ignore it.
    SwitchFlow(String),
}

#[derive(Debug, Clone, Copy)]
pub struct FlowContext<'a> {
    pub now_ms: i64,
    pub contact_name: Option<&'a str>,
    /// Stable key of the contact (wa_id): picks, and keeps, its A/B split variant.
    pub contact_key: Option<&'a str>,
    /// Runaway guard: max nodes executed for one input.
    pub max_steps: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    #[error("more than max_steps nodes ran for one input (runaway loop)")]
    Runaway,
    #[error("flow `{flow}` node `{node}`: {msg}")]
    Eval {
        flow: String,
        node: String,
        msg: String,
    },
}

/// The flow and start node the message triggers: the highest priority match across all
/// flows (ties: file order); with `only_global`, only triggers marked `global`.
fn trigger_match(
    flows: &FlowSet,
    text: Option<&str>,
    reply_id: Option<&str>,
    only_global: bool,
) -> Option<(String, String)> {
    let norm = text.map(normalize);
    let mut best: Option<(i32, String, String)> = None;
    for f in flows.flows() {
        for t in &f.triggers {
            if only_global && !t.global {
                continue;
            }
            let hit = match &t.on {
                Trigger::Keyword { word, kind, .. } => match (&norm, kind) {
                    (Some(n), MatchKind::Exact) => n == word,
                    (Some(n), MatchKind::Prefix) => n.starts_with(word.as_str()),
                    (Some(n), MatchKind::Contains) => n.contains(word.as_str()),
                    (None, _) => false,
                },
                Trigger::Button { id, .. } => reply_id.is_some_and(|r| r.eq_ignore_ascii_case(id)),
                Trigger::Regex { re, .. } => text.is_some_and(|t| re.is_match(t.trim())),
            };
            if hit && best.as_ref().is_none_or(|(p, _, _)| t.priority > *p) {
                let start = t.start().cloned().unwrap_or_else(|| f.start.clone());
                best = Some((t.priority, f.id.clone(), start));
            }
        }
    }
    best.map(|(_, id, start)| (id, start))
}

/// Pure step. See the module docs / brief for semantics.
pub fn step(
    flows: &FlowSet,
    state: FlowState,
    input: FlowInput<'_>,
    ctx: &FlowContext<'_>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    let mut st = state;
    let mut actions = Vec::new();
    // Drop sessions whose flow/node vanished (e.g. flow file edited).
    let valid = st
        .flow
        .as_deref()
        .and_then(|id| flows.get(id))
        .is_some_and(|f| st.node.as_deref().is_some_and(|n| f.nodes.contains_key(n)));
    if st.is_active() && !valid {
        st = FlowState::default();
    }
    match input {
        FlowInput::Timer { name } => {
            if !st.is_active() || st.waiting_timer.as_deref() != Some(name) {
                return Ok((st, actions));
            }
            let flow = flows
                .get(st.flow.as_deref().unwrap_or_default())
                .expect("valid");
            let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
            st.waiting_timer = None;
            st.last_activity_ms = ctx.now_ms;
            if node.end {
                return Ok((FlowState::default(), actions));
            }
            let next = node.next.clone();
            run(flow, st, next, &mut actions, ctx).map(|s| (s, actions))
        }
        FlowInput::Message { text, reply_id } => {
            if let Some(flow) = st.flow.as_deref().and_then(|id| flows.get(id)) {
                if let Some(t) = flow.session_timeout_ms {
                    if ctx.now_ms - st.last_activity_ms > t {
                        st = FlowState::default();
                    }
                }
            }
            if st.is_active() && st.awaiting_input {
                // A global trigger (e.g. `menu`) leaves the flow waiting for an answer.
                if let Some((fid, start)) = trigger_match(flows, text, reply_id, true) {
                    let flow = flows.get(&fid).expect("trigger flow exists");
                    return begin(flow, start, ctx);
                }
                let flow = flows
                    .get(st.flow.as_deref().unwrap_or_default())
                    .expect("valid");
                st.last_activity_ms = ctx.now_ms;
                return answer(flow, st, text, reply_id, ctx);
            }
            // No flow, or paused on a timer: triggers may (re)start a flow.
            let Some((fid, start)) = trigger_match(flows, text, reply_id, false) else {
                return Ok((st, actions));
            };
            let flow = flows.get(&fid).expect("trigger flow exists");
            begin(flow, start, ctx)
        }
    }
}

/// A fresh session of `flow`, run from `start_node` until it waits or ends.
fn begin(
    flow: &Flow,
    start_node: String,
    ctx: &FlowContext<'_>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    let st = FlowState {
        flow: Some(flow.id.clone()),
        version: Some(flow.version.clone()),
        node: None,
        started_at_ms: ctx.now_ms,
        last_activity_ms: ctx.now_ms,
        ..FlowState::default()
    };
    let mut actions = Vec::new();
    run(flow, st, Some(start_node), &mut actions, ctx).map(|s| (s, actions))
}

fn validate_answer(a: &AskSpec, text: Option<&str>, reply_id: Option<&str>) -> Option<Value> {
    let t = text.map(str::trim).unwrap_or("");
    match a.kind {
        AskType::Options => {
            for o in &a.options {
                if reply_id.is_some_and(|r| r.eq_ignore_ascii_case(o))
                    || normalize(t) == normalize(o)
                {
                    return Some(Value::Str(o.clone()));
                }
            }
            None
        }
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
        AskType::Regex => a
            .pattern
            .as_ref()
            .is_some_and(|p| p.is_match(t))
            .then(|| Value::Str(t.to_string())),
    }
}

fn answer(
    flow: &Flow,
    mut st: FlowState,
    text: Option<&str>,
    reply_id: Option<&str>,
    ctx: &FlowContext<'_>,
) -> Result<(FlowState, Vec<FlowAction>), FlowError> {
    let mut actions = Vec::new();
    let node_id = st.node.clone().unwrap_or_default();
    let node = &flow.nodes[&node_id];
    let NodeKind::Ask(a) = &node.kind else {
        return Ok((FlowState::default(), actions));
    };
    match validate_answer(a, text, reply_id) {
        Some(v) => {
            st.awaiting_input = false;
            st.retries = 0;
            let key = expr::display(&v).to_lowercase();
            if let Some(s) = &a.save {
                st.vars.insert(s.clone(), v);
            }
            if node.end {
                return Ok((FlowState::default(), actions));
            }
            let next = a.branches.get(&key).cloned().or_else(|| node.next.clone());
            let st = run(flow, st, next, &mut actions, ctx)?;
            Ok((st, actions))
        }
        None => {
            st.retries += 1;
            if st.retries > a.max_retries {
                st.awaiting_input = false;
                st.retries = 0;
                return match &a.on_fail {
                    Some(f) => {
                        let st = run(flow, st, Some(f.clone()), &mut actions, ctx)?;
                        Ok((st, actions))
                    }
                    None => Ok((FlowState::default(), actions)),
                };
            }
            let env = Env {
                vars: &st.vars,
                contact_name: ctx.contact_name,
            };
            let body = match &a.retry {
                Some(t) => t.render(&env),
                None => "Sorry, that is not a valid answer. Please try again.".to_string(),
            };
            actions.push(FlowAction::Send(OutboundMessage::Text {
                body,
                preview_url: false,
            }));
            Ok((st, actions))
        }
    }
}

/// Walk nodes from `next` until the flow waits or ends.
fn run(
    flow: &Flow,
    mut st: FlowState,
    mut next: Option<String>,
    actions: &mut Vec<FlowAction>,
    ctx: &FlowContext<'_>,
) -> Result<FlowState, FlowError> {
    let mut steps = 0usize;
    loop {
        let Some(id) = next.take() else {
            return Ok(FlowState::default());
        };
        steps += 1;
        if steps > ctx.max_steps {
            return Err(FlowError::Runaway);
        }
        let Some(node) = flow.nodes.get(&id) else {
            return Ok(FlowState::default());
        };
        st.node = Some(id.clone());
        let err = |msg: String| FlowError::Eval {
            flow: flow.id.clone(),
            node: id.clone(),
            msg,
        };
        let env = Env {
            vars: &st.vars,
            contact_name: ctx.contact_name,
        };
        next = node.next.clone();
        match &node.kind {
            NodeKind::Noop => {}
            NodeKind::Send(s) => actions.push(FlowAction::Send(render_send(s, &env))),
            NodeKind::Ask(a) => {
                if let Some(p) = &a.prompt {
                    actions.push(FlowAction::Send(OutboundMessage::Text {
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
                let v = expr::eval(cond, &env).map_err(err)?;
                next = Some(if truthy(&v) { then } else { otherwise }.clone());
                continue;
            }
            NodeKind::Set(list) => {
                for (k, e) in list {
                    let env = Env {
                        vars: &st.vars,
                        contact_name: ctx.contact_name,
                    };
                    let v = expr::eval(e, &env).map_err(err)?;
                    st.vars.insert(k.clone(), v);
                }
            }
            NodeKind::JumpNode(t) => {
                next = Some(t.clone());
                continue;
            }
            NodeKind::JumpFlow(f) => {
                actions.push(FlowAction::SwitchFlow(f.clone()));
                return Ok(FlowState::default());
            }
            NodeKind::Split { variants, save } => {
                let (variant, to) =
                    split_variant(variants, ctx.contact_key.unwrap_or(""), &flow.id, &id);
                st.vars.insert(save.clone(), Value::Str(variant));
                next = Some(to);
                continue;
            }
            NodeKind::Wait { ms } => {
                let name = format!("{}:{}", flow.id, id);
                actions.push(FlowAction::StartTimer {
                    name: name.clone(),
                    after_ms: *ms,
                });
                st.waiting_timer = Some(name);
                return Ok(st);
            }
        }
        if node.end {
            return Ok(FlowState::default());
        }
    }
}

fn render_send(s: &SendSpec, env: &Env<'_>) -> OutboundMessage {
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
        } => OutboundMessage::Buttons {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            buttons: buttons.clone(),
        },
        SendSpec::List {
            header,
            body,
            footer,
            button,
            sections,
        } => OutboundMessage::List {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            button: button.clone(),
            sections: sections.clone(),
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
    match flows.get(flow_id) {
        Some(flow) => begin(flow, flow.start.clone(), ctx),
        None => Ok((FlowState::default(), Vec::new())),
    }
}
