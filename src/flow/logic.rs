//! Flows as conversation behaviour: the core step (contact, window, read receipt), then the
//! flow engine on the user's message or a flow timer. Pure, like the rest of `step`.

use std::sync::{Arc, RwLock};

use serde_json::json;

use super::model::OnUpdate;
use super::{step as flow_step, FlowAction, FlowContext, FlowInput, FlowSet, FlowState};
use crate::conversation::{
    enter_handoff, step as core_step, ConversationEvent, ConversationLogic, ConversationState,
    Effect, FlowRecord, StepContext,
};
use crate::whatsapp::event::{Media, MessageContent};

/// Key of the flow state inside `ConversationState::ext`.
const STATE_KEY: &str = "flow";
/// Prefix of the timers a flow asks for.
const TIMER_PREFIX: &str = "flow:";
/// Nodes one input may run through before the runaway guard stops the flow.
pub const MAX_STEPS: usize = 100;

/// How many earlier flow sets stay loaded for conversations pinned to their versions.
const KEEP_OLDER: usize = 16;

/// The flows in force, swapped whole on reload, plus the earlier sets that conversations
/// started on (a conversation keeps the version of the flow it started with).
#[derive(Clone)]
pub struct FlowRegistry(Arc<RwLock<Registry>>);

struct Registry {
    current: Arc<FlowSet>,
    older: Vec<Arc<FlowSet>>,
    last_error: Option<Vec<String>>,
}

impl FlowRegistry {
    pub fn new(set: FlowSet) -> Self {
        FlowRegistry(Arc::new(RwLock::new(Registry {
            current: Arc::new(set),
            older: Vec::new(),
            last_error: None,
        })))
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
    /// node is gone).
    pub fn resolve(&self, state: &FlowState) -> (Arc<FlowSet>, Option<String>) {
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
                (current, restart)
            }
            OnUpdate::Restart => (current.clone(), Some(id.clone())),
        }
    }

    /// Validate every file of `dir`; swap them in only if all are valid. On error the running
    /// flows stay and the errors are kept for `last_error`.
    pub fn reload(&self, dir: &std::path::Path) -> Result<Vec<(String, String)>, Vec<String>> {
        match super::load_dir(dir) {
            Ok(set) => {
                let versions = set
                    .flows()
                    .iter()
                    .map(|f| (f.id.clone(), f.version.clone()))
                    .collect();
                let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
                let previous = std::mem::replace(&mut reg.current, Arc::new(set));
                reg.older.insert(0, previous);
                reg.older.truncate(KEEP_OLDER);
                reg.last_error = None;
                Ok(versions)
            }
            Err(errors) => {
                self.0.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(errors.clone());
                Err(errors)
            }
        }
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

fn record(st: &FlowState, status: &'static str, node: Option<String>) -> Option<Effect> {
    Some(Effect::FlowRecord(FlowRecord {
        flow_id: st.flow.clone()?,
        version: st.version.clone().unwrap_or_default(),
        started_at: st.started_at_ms,
        status,
        node,
    }))
}

/// What changed between two flow states, as session records: the one before ended
/// (completed) if it is not the one after; the one after is running or paused.
fn records(before: &FlowState, after: &FlowState) -> Vec<Effect> {
    let same = |a: &FlowState, b: &FlowState| {
        a.flow.is_some() && a.flow == b.flow && a.started_at_ms == b.started_at_ms
    };
    let mut out = Vec::new();
    if before.is_active() && !same(before, after) {
        out.extend(record(before, "completed", None));
    }
    if after.is_active() {
        let status = if after.waiting_timer.is_some() {
            "paused"
        } else {
            "running"
        };
        out.extend(record(after, status, after.node.clone()));
    } else if !before.is_active() && after == &FlowState::default() {
        // Nothing ran, or a one-shot flow ran and ended within this event: not visible
        // from the states alone, so it is not recorded.
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
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

impl ConversationLogic for FlowLogic {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        let was_handed_off = state.handoff.is_some();
        let (mut state, mut effects) = core_step(state, event, ctx);
        let released = was_handed_off && state.handoff.is_none();
        let timer_name;
        let mut referral = None;
        let input = match event {
            // While a human has the conversation the bot is silent.
            ConversationEvent::Inbound { .. } if state.handoff.is_some() => {
                return (state, effects)
            }
            ConversationEvent::Inbound { message, .. } => {
                referral = message
                    .referral
                    .as_ref()
                    .and_then(|r| r.get("source_id"))
                    .and_then(|v| v.as_str());
                match &message.content {
                    MessageContent::Text { body } => FlowInput::Message {
                        text: Some(body.as_str()),
                        reply_id: None,
                    },
                    MessageContent::ButtonReply { id, title }
                    | MessageContent::ListReply { id, title, .. } => FlowInput::Message {
                        text: Some(title.as_str()),
                        reply_id: Some(id.as_str()),
                    },
                    MessageContent::TemplateButton { payload, text } => FlowInput::Message {
                        text: Some(text.as_str()),
                        reply_id: Some(payload.as_str()),
                    },
                    MessageContent::Image { media: m } => media_input("image", m),
                    MessageContent::Video { media: m } => media_input("video", m),
                    MessageContent::Audio { media: m, .. } => media_input("audio", m),
                    MessageContent::Document { media: m, .. } => media_input("document", m),
                    MessageContent::Sticker { media: m, .. } => media_input("sticker", m),
                    MessageContent::System { .. } => return (state, effects),
                    _ => FlowInput::Message {
                        text: None,
                        reply_id: None,
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
            _ => return (state, effects),
        };
        let flow_state = flow_state(&state);
        let before = flow_state.clone();
        let (flows, restart) = self.flows.resolve(&flow_state);
        let contact = state.contact.clone();
        let fctx = FlowContext {
            now_ms: ctx.now_ms,
            contact: Some(&contact),
            contact_key: contact.wa_id.as_deref().or(contact.user_id.as_deref()),
            referral,
            max_steps: MAX_STEPS,
        };
        let outcome = match restart {
            // The flow changed under this conversation and says to start over.
            Some(id) => super::exec::start(&flows, &id, &fctx),
            None => flow_step(&flows, flow_state, input, &fctx),
        };
        let next = match outcome {
            Ok((next, actions)) => {
                for action in actions {
                    match action {
                        FlowAction::Send(message) => effects.push(Effect::Send {
                            message,
                            reply_to: None,
                        }),
                        FlowAction::StartTimer { name, after_ms } => {
                            effects.push(Effect::StartTimer {
                                name: format!("{TIMER_PREFIX}{name}"),
                                due_at: ctx.now_ms + after_ms,
                                payload: json!({}),
                            })
                        }
                        FlowAction::Http(call) => effects.push(Effect::Http(call)),
                        FlowAction::Handoff { reason } => {
                            enter_handoff(&mut state, &reason, ctx, &mut effects)
                        }
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
            Err(_) => {
                effects.extend(record(&before, "failed", None));
                FlowState::default()
            }
        };
        if !effects
            .iter()
            .any(|e| matches!(e, Effect::FlowRecord(r) if r.status == "failed"))
        {
            effects.extend(records(&before, &next));
        }
        match serde_json::to_value(&next) {
            Ok(v) if next != FlowState::default() => {
                state.ext.insert(STATE_KEY.to_string(), v);
            }
            _ => {
                state.ext.remove(STATE_KEY);
            }
        }
        (state, effects)
    }

    /// After a restart: the HTTP call a flow was waiting on is made again (same id, so the
    /// business's system can tell it is a repeat).
    fn resume(&self, state: &ConversationState) -> Vec<Effect> {
        flow_state(state)
            .http
            .map(Effect::Http)
            .into_iter()
            .collect()
    }
}
