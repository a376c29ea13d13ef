//! The node runner: from a node on until the flow waits (an ask, a wait and its timer, an
//! HTTP call, a handoff, a chatbot) or ends; A/B splits.

use super::send::{render_json, render_send};
use super::*;

impl Run<'_, '_> {
    /// Walk nodes from `next` until the flow waits or ends.
    pub(super) fn run(
        &mut self,
        mut st: FlowState,
        mut next: Option<String>,
    ) -> Result<FlowState, FlowError> {
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
            if node.kind.is_shop() {
                return Ok(self.shop_node(st, &node.kind));
            }
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
                                let mut text = expr::display(&v);
                                if let Some(field) = crate::domain::profile::ProfileField::of(k) {
                                    // A profile field: checked and written one way.
                                    let today =
                                        chrono::DateTime::from_timestamp_millis(self.ctx.now_ms)
                                            .unwrap_or_default()
                                            .date_naive();
                                    let id_type = self.contact.fields.get("identity_type");
                                    text = crate::domain::profile::normalize(
                                        field,
                                        &text,
                                        id_type.map(String::as_str),
                                        today,
                                    )
                                    .map_err(|e| err(e.to_string()))?;
                                }
                                self.contact.fields.insert(k.clone(), text);
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
                NodeKind::Catalog(_)
                | NodeKind::Cart(_)
                | NodeKind::Checkout { .. }
                | NodeKind::OrderStatus { .. }
                | NodeKind::Payment(_)
                | NodeKind::Voucher { .. }
                | NodeKind::CustomOrder { .. } => unreachable!("shop nodes are run above"),
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
