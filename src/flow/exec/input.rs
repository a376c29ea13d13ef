//! What an input does: timers, HTTP answers, releases, messages and the triggers they may
//! fire; a flow's begin, its going on after a paused node, and its end.

use super::answer::Answer;
use super::*;

/// Messages kept while a flow waits for an HTTP answer (the rest are dropped).
const MAX_DEFERRED: usize = 20;

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
                Trigger::Order { .. } => false,
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

impl Run<'_, '_> {
    pub(super) fn input(
        &mut self,
        state: FlowState,
        input: FlowInput<'_>,
    ) -> Result<FlowState, FlowError> {
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
                let st = if outcome.ok() {
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
                self.replay_deferred(st, deferred)
            }
            FlowInput::Commerce(result) => {
                if st.commerce.as_ref().is_none_or(|c| c.id != result.id) {
                    return Ok(st); // a stale answer: not the call we wait for
                }
                let Some(call) = st.commerce.take() else {
                    return Ok(st);
                };
                st.last_activity_ms = ctx.now_ms;
                let deferred = std::mem::take(&mut st.deferred);
                let st = self.shop_answer(st, &call.op, &result.answer)?;
                self.replay_deferred(st, deferred)
            }
            FlowInput::Media { kind, id, caption } => {
                let awaiting_media = st.is_active()
                    && st.awaiting_input
                    && !st.is_busy()
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
            FlowInput::Payment {
                id,
                status,
                news,
                access,
            } => {
                if st.is_active() && st.opening_payment() {
                    st.early_payment = Some(super::EarlyPayment {
                        id,
                        status,
                        news: news.map(str::to_string),
                        access: access.map(str::to_string),
                    });
                    return Ok(st);
                }
                if !st.is_active() || st.payment != Some(id) {
                    return Ok(st); // not the payment this flow waits on (or none)
                }
                st.last_activity_ms = ctx.now_ms;
                self.payment_settled(st, status)
            }
            FlowInput::Order { items, text } => match self.catalog_order(items) {
                Some(started) => Ok(started),
                None => self.message(st, text, None),
            },
        }
    }

    fn message(
        &mut self,
        mut st: FlowState,
        text: Option<&str>,
        reply_id: Option<&str>,
    ) -> Result<FlowState, FlowError> {
        let ctx = self.ctx;
        if st.is_active() && st.is_busy() {
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

    /// What the user said while a call was in flight, in order.
    fn replay_deferred(
        &mut self,
        mut st: FlowState,
        deferred: Vec<Deferred>,
    ) -> Result<FlowState, FlowError> {
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

    /// A fresh session of `flow`, run from `start_node` until it waits or ends.
    pub(super) fn begin(
        &mut self,
        flow_id: &str,
        start_node: String,
    ) -> Result<FlowState, FlowError> {
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
    pub(super) fn continue_after_node(&mut self, st: FlowState) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
        if node.end {
            return self.end(st);
        }
        let next = node.next.clone();
        self.run(st, next)
    }

    /// The running flow ended: back to the caller of a subflow, else no flow.
    pub(super) fn end(&mut self, mut st: FlowState) -> Result<FlowState, FlowError> {
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
