//! The rows and updates callers hand the writer.

use super::*;

/// A row to append to the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxRow {
    pub account: String,
    pub user_key: Option<String>,
    /// message | status | change_error | account_event
    pub kind: &'static str,
    pub dedup_key: String,
    pub wamid: Option<String>,
    pub payload: String,
    pub received_at: i64,
    /// pending | done | unrouted
    pub state: &'static str,
    /// For a status row: how it moves the outbound message it names.
    pub status: Option<StatusApply>,
    /// For a message row: handed to the conversation once committed.
    pub dispatch: Option<Arc<InboundMessage>>,
    /// When its webhook arrived (for the latency metrics; not stored).
    pub arrived: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub struct StatusApply {
    pub status: String,
    pub rank: i64,
    pub at_ms: i64,
    /// Our outbox id, from `biz_opaque_callback_data`.
    pub outbox_id: Option<i64>,
    pub error_code: Option<i64>,
    pub error_detail: Option<String>,
}

impl StatusApply {
    /// What a `failed` status says, for a dead letter or the conversation.
    pub fn failure(&self) -> String {
        match (self.error_code, &self.error_detail) {
            (Some(c), Some(d)) => format!("failed status from Meta, error {c}: {d}"),
            (Some(c), None) => format!("failed status from Meta, error {c}"),
            (None, _) => "failed status from Meta".to_string(),
        }
    }
}

/// An inbound message handed to its conversation.
#[derive(Debug, Clone)]
pub struct InboxDispatch {
    pub seq: i64,
    pub account: String,
    pub user_key: String,
    pub message: Arc<InboundMessage>,
    /// `Some(batch)`: handed over while the transaction that appends it is still open, so that
    /// the conversation's step can join that transaction (one commit instead of two). The
    /// step must name the batch in [`StepCommit::batch`]; if the batch fails, the step is
    /// refused and the conversation replays from the store. `None`: already committed.
    pub batch: Option<u64>,
    /// When its webhook arrived, if this process received it.
    pub arrived: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// webhook_malformed | inbox_event | outbox_send | timer
    pub kind: &'static str,
    pub account: Option<String>,
    pub user_key: Option<String>,
    pub ref_id: Option<i64>,
    pub reason: String,
    pub raw: Option<Vec<u8>>,
}

/// A dead letter of this kind takes its timer (`ref_id`) out of the pending ones.
pub const TIMER_DEAD_LETTER: &str = "timer_event";

/// An inbox message the conversation gives up on, chained into its history like an applied
/// one.
#[derive(Debug, Clone, Copy)]
pub struct DeadInbox {
    pub seq: i64,
    /// The conversation's message applied before it (0: none).
    pub prev_seq: i64,
}

#[derive(Debug, Clone)]
pub struct ContactUpsert {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    /// The contact's tags as a JSON array (None: unchanged), so campaigns can select by tag.
    pub tags: Option<String>,
    /// Some(at): opted out of campaigns at `at`; Some(0): opted back in; None: unchanged.
    pub opted_out_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    pub idem_key: String,
    /// message | mark_read
    pub kind: &'static str,
    /// `OutboundMessage` as JSON.
    pub message_json: String,
    pub reply_to: Option<String>,
    pub source_seq: Option<i64>,
    /// service | business (see `sendgate::SendClass`).
    pub class: crate::domain::SendClass,
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub idem_key: String,
    pub name: String,
    pub payload: String,
    pub due_at: i64,
}

/// Everything one conversation step changes, committed atomically.
#[derive(Debug, Clone)]
pub struct StepCommit {
    pub account: String,
    pub user_key: String,
    pub state_json: String,
    pub last_inbound_at: Option<i64>,
    pub last_applied_seq: i64,
    /// The inbox row this step applied.
    pub inbox_done: Option<i64>,
    /// The conversation's message applied before it (0: none): the applied messages of a
    /// conversation form a chain from `conversations.last_applied_seq` back through
    /// `inbox.prev_seq`, its history, so the inbox needs no index at each conversation's
    /// place (a page written per message).
    pub prev_seq: i64,
    /// The timer this step consumed.
    pub timer_fired: Option<i64>,
    pub contact: Option<ContactUpsert>,
    pub outbox: Vec<NewOutboxRow>,
    pub timers: Vec<NewTimer>,
    /// Flow sessions this step moved.
    pub flow_records: Vec<crate::domain::FlowRecord>,
    pub bot_records: Vec<crate::domain::BotSummary>,
    pub now: i64,
    /// The still-open batch whose inbox row this step applies (see [`InboxDispatch::batch`]).
    pub batch: Option<u64>,
}

/// An outbox row as the sender needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub id: i64,
    pub account: String,
    pub user_key: String,
    pub kind: String,
    pub message_json: String,
    pub reply_to: Option<String>,
    pub state: String,
    pub updated_at: i64,
    /// service | business (see `sendgate::SendClass`).
    pub class: crate::domain::SendClass,
    /// For a chatbot's reply: when its turn's answer came (not stored; only for the metrics).
    pub turn: Option<TurnClock>,
    /// The campaign that sent it (read from its idem key), so a pause can withhold it.
    pub campaign: Option<i64>,
}

/// A chatbot turn's clock, carried by its reply to the send so that Parley's time in the turn
/// is measured to the request to the Graph API, not only to the hand-over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnClock {
    /// The model's answer was received.
    pub answered_at: std::time::Instant,
    /// The turn's time from the webhook's arrival to the model call's start, if this process
    /// received the webhook.
    pub before_call: Option<std::time::Duration>,
}

/// A change to outbox rows. Each names the conversation of its row (`account`, `user_key`):
/// it is written by that conversation's writer, the only one that writes the row (see the
/// module doc).
#[derive(Debug, Clone)]
pub enum OutboxUpdate {
    /// About to POST: a crash from here on leaves the outcome ambiguous.
    Sending {
        id: i64,
        account: String,
        user_key: String,
        at: i64,
    },
    /// Never attempted (still queued at a clean stop): send at once on the next start.
    /// `rows`: (user_key, id); split among their writers.
    Unsent {
        account: String,
        rows: Vec<(String, i64)>,
    },
    /// Withheld for a cancelled campaign: settled unsent, for good. `rows` as for `Unsent`.
    Cancelled {
        account: String,
        rows: Vec<(String, i64)>,
        at: i64,
    },
    Sent {
        id: i64,
        account: String,
        user_key: String,
        wamid: Option<String>,
        at: i64,
    },
    Retrying {
        id: i64,
        account: String,
        user_key: String,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
    /// Permanent failure: the row is failed and a dead letter is written.
    Failed {
        id: i64,
        account: String,
        user_key: String,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
}

/// SendGate state that must survive a restart.
#[derive(Debug, Clone)]
pub enum GateWrite {
    /// The account may send up to `reserved` messages on `day` (set exactly).
    Daily {
        account: String,
        day: String,
        reserved: i64,
        used: i64,
        at: i64,
    },
    /// `user_key` was reached with a business-initiated message (before the send).
    TierReach {
        waba: String,
        user_key: String,
        account: String,
        at: i64,
    },
    /// Undo a reach Meta refused: back to `previous`, or gone.
    TierRelease {
        waba: String,
        user_key: String,
        at: i64,
        previous: Option<i64>,
    },
    /// The account's health, halt and pause (JSON of `sendgate::Control`).
    Control {
        account: String,
        state_json: String,
        at: i64,
    },
    Unreachable {
        account: String,
        user_key: String,
        code: Option<i64>,
        at: i64,
    },
    Template {
        waba: String,
        name: String,
        language: String,
        status: String,
        reason: Option<String>,
        at: i64,
    },
}
