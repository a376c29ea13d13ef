//! What the store keeps of a conversation's sessions: a flow execution and a chatbot session,
//! as of one step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotStatus {
    Active,
    Completed,
    Timeout,
    HandedOff,
}

impl BotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BotStatus::Active => "active",
            BotStatus::Completed => "completed",
            BotStatus::Timeout => "timeout",
            BotStatus::HandedOff => "handed_off",
        }
    }
}

/// A chatbot session's figures, as of this step.
#[derive(Debug, Clone, PartialEq)]
pub struct BotSummary {
    pub bot: String,
    pub started_at: i64,
    pub status: BotStatus,
    /// The session began in this step.
    pub started: bool,
    pub turns: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: rust_decimal::Decimal,
    pub response_ms: u64,
}

/// Where a flow session stands after an event.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub flow_id: String,
    pub version: String,
    /// With the conversation, identifies the session.
    pub started_at: i64,
    pub status: super::FlowRunStatus,
    /// The node it stopped at (None once ended).
    pub node: Option<String>,
    /// Why it failed (a runaway loop, an expression error): also kept as a dead letter.
    pub error: Option<String>,
}
