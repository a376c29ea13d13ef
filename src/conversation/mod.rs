//! The pure core of a conversation: `step(state, event, ctx) -> (state, effects)`.
//!
//! No I/O and no clock: the actor loads the state, passes the time in [`StepContext`], commits
//! the new state and the effects in one transaction, then runs the effects. That is what makes
//! exactly-once application, replay and simulation possible.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::whatsapp::event::{InboundMessage, MessageContent};
use crate::whatsapp::send::OutboundMessage;

/// WhatsApp's customer-service window: free-form messages only within 24 h of the user's
/// last message.
pub const SERVICE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Meta error code for a free-form message outside the window.
pub const WINDOW_CLOSED_CODE: i64 = 131047;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
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
    #[serde(default)]
    pub inbound_count: u64,
    #[serde(default)]
    pub outbound_count: u64,
    /// Room for the layers built on this core (flow execution, chatbot), kept as JSON.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub ext: serde_json::Map<String, serde_json::Value>,
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
    },
    /// Meta refused one of our messages for good.
    SendFailed {
        outbox_id: i64,
        code: Option<i64>,
        detail: String,
    },
}

/// What the actor must do after committing the new state.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        message: OutboundMessage,
        reply_to: Option<String>,
    },
    MarkRead {
        wamid: String,
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
}

/// Where a flow session stands after an event.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub flow_id: String,
    pub version: String,
    /// With the conversation, identifies the session.
    pub started_at: i64,
    /// running | paused | completed | failed
    pub status: &'static str,
    /// The node it stopped at (None once ended).
    pub node: Option<String>,
}

/// What a step knows besides the state and the event: the time and the account's settings.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub now_ms: i64,
    pub mark_read: bool,
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
                state.contact.wa_id = Some(from.clone());
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
                if ctx.mark_read {
                    effects.push(Effect::MarkRead {
                        wamid: message.wamid.clone(),
                    });
                }
            }
        }
        ConversationEvent::Outgoing {
            message, reply_to, ..
        } => {
            if message.is_free_form() && !state.window_open(ctx.now_ms) {
                effects.push(Effect::Refuse {
                    reason: "outside the 24 h customer-service window: only a template may be sent"
                        .into(),
                });
            } else {
                state.outbound_count += 1;
                effects.push(Effect::Send {
                    message: message.clone(),
                    reply_to: reply_to.clone(),
                });
            }
        }
        ConversationEvent::SendFailed { code, .. } => {
            if *code == Some(WINDOW_CLOSED_CODE) {
                state.window_closed = true;
            }
        }
        ConversationEvent::TimerFired { .. } => {}
    }
    (state, effects)
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
        };
        let (s, _) = step(s, &failed, &ctx(1_000_001));
        assert!(!s.window_open(1_000_002));
        let (s, _) = step(s, &inbound(1_001), &ctx(1_001_000));
        assert!(s.window_open(1_001_001));
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
