//! How a message counts against the account's limits.

use serde::{Deserialize, Serialize};

/// How a message counts: replies inside the customer-service window are `Service`; anything
/// sent outside it (templates that open a conversation, campaigns) is `Business`-initiated,
/// counts against the messaging tier, and waits behind service traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendClass {
    Service,
    Business,
}

impl SendClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            SendClass::Service => "service",
            SendClass::Business => "business",
        }
    }

    /// Stored text → class (unknown text is treated as service: it was written before classes).
    pub fn parse(s: &str) -> SendClass {
        if s == "business" {
            SendClass::Business
        } else {
            SendClass::Service
        }
    }
}
