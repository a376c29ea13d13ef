//! Flows as conversation behaviour: the core step (contact, window, read receipt), then the
//! flow engine on the user's message or a flow timer. Pure, like the rest of `step`.

use std::sync::{Arc, RwLock};

use serde_json::json;

use super::{step as flow_step, FlowAction, FlowContext, FlowInput, FlowSet, FlowState};
use crate::conversation::{
    step as core_step, ConversationEvent, ConversationLogic, ConversationState, Effect, StepContext,
};
use crate::whatsapp::event::MessageContent;

/// Key of the flow state inside `ConversationState::ext`.
const STATE_KEY: &str = "flow";
/// Prefix of the timers a flow asks for.
const TIMER_PREFIX: &str = "flow:";
/// Nodes one input may run through before the runaway guard stops the flow.
pub const MAX_STEPS: usize = 100;

/// The flows in force; swapped whole on reload.
#[derive(Clone, Default)]
pub struct FlowRegistry(Arc<RwLock<Arc<FlowSet>>>);

impl FlowRegistry {
    pub fn new(set: FlowSet) -> Self {
        FlowRegistry(Arc::new(RwLock::new(Arc::new(set))))
    }

    pub fn current(&self) -> Arc<FlowSet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, set: FlowSet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }
}

pub struct FlowLogic {
    pub flows: FlowRegistry,
}

impl ConversationLogic for FlowLogic {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        let (mut state, mut effects) = core_step(state, event, ctx);
        let timer_name;
        let input = match event {
            ConversationEvent::Inbound { message, .. } => {
                let (text, reply_id) = match &message.content {
                    MessageContent::Text { body } => (Some(body.as_str()), None),
                    MessageContent::ButtonReply { id, title } => {
                        (Some(title.as_str()), Some(id.as_str()))
                    }
                    MessageContent::ListReply { id, title, .. } => {
                        (Some(title.as_str()), Some(id.as_str()))
                    }
                    MessageContent::TemplateButton { payload, text } => {
                        (Some(text.as_str()), Some(payload.as_str()))
                    }
                    MessageContent::System { .. } => return (state, effects),
                    _ => (None, None),
                };
                FlowInput::Message { text, reply_id }
            }
            ConversationEvent::TimerFired { name, .. } => match name.strip_prefix(TIMER_PREFIX) {
                Some(n) => {
                    timer_name = n.to_string();
                    FlowInput::Timer { name: &timer_name }
                }
                None => return (state, effects),
            },
            _ => return (state, effects),
        };
        let flow_state: FlowState = state
            .ext
            .get(STATE_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let flows = self.flows.current();
        let fctx = FlowContext {
            now_ms: ctx.now_ms,
            contact_name: state.contact.profile_name.as_deref(),
            max_steps: MAX_STEPS,
        };
        let next = match flow_step(&flows, flow_state, input, &fctx) {
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
                        FlowAction::SwitchFlow(_) => {}
                    }
                }
                next
            }
            // A runaway or broken flow ends; the conversation goes on.
            Err(_) => FlowState::default(),
        };
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
}
