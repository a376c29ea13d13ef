//! The business's vocabulary, below every capability: ids that carry meaning, time zones,
//! the messaging window, the records of flow and chatbot sessions, retry delays.
//! Ids, stored states and money are types here.

mod class;
pub mod contact;
mod ids;
pub mod material;
mod money;
pub mod profile;
mod records;
mod retry;
mod states;
pub mod voucher;
mod window;
mod zone;

pub use class::SendClass;
pub use ids::{
    campaign_of_idem_key, is_campaign_request, request_id, AccountId, ConversationKey, KeyRef,
    UserKey, WaId, Wamid, CAMPAIGN_REQUEST_PREFIX,
};
pub use money::{group_thousands, Currency, Money, MoneyError};
pub use records::{BotStatus, BotSummary, FlowRecord};
pub use retry::{backoff, backoff_with};
pub use states::{
    CampaignStatus, CartRecovery, CartStatus, ConsentAction, ContactSource, ConversationStatus,
    CustomFieldKind, CustomOrderStatus, FlowRunStatus, GatewayKind, ImportState, InboxKind,
    InboxState, LowAlert, OrderPayment, OrderSource, OrderStatus, OutboxKind, OutboxState,
    PaymentMethod, PaymentStatus, ProductKind, RecipientState, RefundStatus, Role,
    SubscriptionStatus, TimerState, UnknownValue, VoucherKind,
};
pub use voucher::{voucher_code, Voucher, VoucherRefusal};
pub use window::WindowPolicy;
pub use zone::{parse_utc_offset, Zone};
