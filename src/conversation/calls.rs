//! The calls the core asks for and the answers it gets back, as plain data: a behaviour
//! (a chatbot) fills them, the actor makes the call.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// A request to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotCall {
    pub id: String,
    pub bot: String,
    pub provider: String,
    pub model: String,
    pub system: String,
    pub messages: Vec<Turn>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Offer the model a `handoff` tool.
    pub handoff_tool: bool,
}

/// What came back from a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotAnswer {
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    /// The model called the `handoff` tool.
    #[serde(default)]
    pub handoff: bool,
    #[serde(default)]
    pub tokens_in: u64,
    #[serde(default)]
    pub tokens_out: u64,
    #[serde(default)]
    pub latency_ms: u64,
    /// The call failed (after its retries).
    #[serde(default)]
    pub error: Option<String>,
}
