//! The business's vocabulary, below every capability: ids that carry meaning, time zones,
//! the messaging window, the records of flow and chatbot sessions, retry delays.
//! (Ids, states and money join it as they become types: see `src/lib.rs`'s floors.)

mod class;
mod ids;
mod records;
mod retry;
mod states;
mod window;
mod zone;

pub use class::SendClass;
pub use ids::{
    campaign_of_idem_key, is_campaign_request, request_id, AccountId, ConversationKey, UserKey,
    WaId, Wamid, CAMPAIGN_REQUEST_PREFIX,
};
pub use records::{BotStatus, BotSummary, FlowRecord};
pub use retry::{backoff, backoff_with};
pub use states::{
    CampaignStatus, FlowRunStatus, InboxKind, InboxState, OutboxKind, OutboxState, RecipientState,
    TimerState, UnknownValue,
};
pub use window::WindowPolicy;
pub use zone::{parse_utc_offset, Zone};
