//! Campaigns: CampaignSupervisor → one CampaignActor per running campaign.
//!
//! A campaign's progress lives in the store (`campaign_recipients`, `campaign_messages`); its
//! actor is a thin pacer: it streams a page of due recipients, decides each one with the pure
//! [`model::plan`], hands the message to the recipient's conversation (so the 24 h window,
//! the outbox and the account's SendGate apply as to any other send) under an idempotency key
//! per campaign + recipient + step, and records the page. A restart resumes from the store;
//! a recipient handed over but not recorded is handed over again and the outbox refuses the
//! duplicate. The actor pauses its campaign on a quality drop, a halted account, a paused or
//! disabled template, or a failure rate over the campaign's threshold, and records why.

mod actor;
mod model;
mod supervisor;

pub use actor::{CampaignActor, CampaignArgs, CampaignMsg};
pub use model::parse_when;
pub use model::{
    after_send, campaign_of_idem_key, is_campaign_request, plan, render, request_id, CampaignKind,
    CampaignRequest, CampaignSpec, MessageSpec, Plan, RecipientsRequest, TemplateSpec,
    CAMPAIGN_REQUEST_PREFIX, DEFAULT_RATE_PER_MINUTE,
};
pub use supervisor::{CampaignSupervisor, SupervisorMsg};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("stored campaign spec does not decode: {0}")]
    Spec(#[from] serde_json::Error),
}
