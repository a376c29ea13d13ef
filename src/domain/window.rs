//! The 24-hour customer service window: what happens to a free-form message outside it.

use serde::{Deserialize, Serialize};

use crate::whatsapp::send::OutboundMessage;

/// What to do with a free-form message when the 24 h window is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowPolicy {
    /// Refuse it with a clear reason.
    Fail,
    /// Keep it until the user writes again (within `conversation.hold_for`), then send it.
    Hold,
    /// Send this template instead.
    Template(OutboundMessage),
}
