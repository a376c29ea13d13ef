//! The states and kinds the store keeps as text, as types: one `as_str` (what the store and
//! the metrics' labels hold) and one `FromStr` (what a stored row is read back as) each.

/// A stored text that names no variant of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// An enum stored as text: its variants with their texts.
macro_rules! stored_text {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant's text, in order (what an API document lists).
            pub const TEXTS: &'static [&'static str] = &[$($text,)+];

            /// As the store holds it, and as metrics label it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: s.to_string(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

stored_text! {
    /// What an inbox row holds.
    InboxKind {
        /// A customer's message.
        Message = "message",
        /// A status of one of our messages (sent, delivered, read, failed).
        Status = "status",
        /// Errors Meta reported for an account.
        ChangeError = "change_error",
        /// An account-level change (quality, tier, template status, ...).
        AccountEvent = "account_event",
    }
}

stored_text! {
    /// Where an inbox row stands.
    InboxState {
        /// A message its conversation has not applied yet.
        Pending = "pending",
        /// Applied (a message), or recorded and acted on as it was inserted (the rest).
        Done = "done",
        /// For a phone_number_id this daemon does not serve.
        Unrouted = "unrouted",
        /// A message its conversation gave up on (dead-lettered).
        Dead = "dead",
    }
}

stored_text! {
    /// What an outbox row sends.
    OutboxKind {
        /// A message to the customer.
        Message = "message",
        /// A read receipt for the customer's message.
        MarkRead = "mark_read",
    }
}

stored_text! {
    /// Where an outbox row stands.
    OutboxState {
        /// Not yet handed to the HTTP client: after a crash it is sent at once.
        Pending = "pending",
        /// Handed over: its request may have reached Meta.
        Sending = "sending",
        /// Meta took it (its wamid is recorded, or a status said so).
        Sent = "sent",
        /// Refused for good, or given up on.
        Failed = "failed",
        /// Withdrawn before it was sent (a campaign stopped).
        Cancelled = "cancelled",
    }
}

impl OutboxState {
    /// Sent or failed: nothing more will be done with it.
    pub fn is_settled(self) -> bool {
        matches!(self, OutboxState::Sent | OutboxState::Failed)
    }
}

stored_text! {
    /// Where a durable timer stands.
    TimerState {
        Pending = "pending",
        Fired = "fired",
        /// Its step failed every time: dead-lettered.
        Dead = "dead",
    }
}

stored_text! {
    /// Where a campaign stands.
    CampaignStatus {
        /// Created without `start`: nothing is sent until it is resumed.
        Draft = "draft",
        /// Starts at its `scheduled_for`.
        Scheduled = "scheduled",
        Running = "running",
        /// By an operator or by the account's quality dropping; resumed by an operator.
        Paused = "paused",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl CampaignStatus {
    /// Over: its `finished_at` is set.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            CampaignStatus::Completed | CampaignStatus::Failed | CampaignStatus::Cancelled
        )
    }
}

stored_text! {
    /// Where one campaign recipient stands.
    RecipientState {
        /// Its next step is due at `due_at`.
        Pending = "pending",
        /// Every step went out.
        Done = "done",
        /// Left out before its first message (blocked, opted out, unreachable, a template
        /// that does not render).
        Skipped = "skipped",
        /// Left out after some messages (opted out, unreachable, replied to a drip).
        Stopped = "stopped",
    }
}

stored_text! {
    /// Where a flow session stands after a step.
    FlowRunStatus {
        Running = "running",
        /// Waiting for a timer.
        Paused = "paused",
        Completed = "completed",
        /// Stopped by an error or the runaway guard.
        Failed = "failed",
        /// Left before its end: the customer started another flow, or wrote again only
        /// after the flow's `session_timeout` (and it has no `on_expire` branch).
        Abandoned = "abandoned",
    }
}

impl FlowRunStatus {
    pub const ALL: [FlowRunStatus; 5] = [
        FlowRunStatus::Running,
        FlowRunStatus::Paused,
        FlowRunStatus::Completed,
        FlowRunStatus::Failed,
        FlowRunStatus::Abandoned,
    ];

    /// Completed, failed or abandoned: the session is over.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            FlowRunStatus::Completed | FlowRunStatus::Failed | FlowRunStatus::Abandoned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_itself_and_an_unknown_text_is_an_error() {
        for s in [
            OutboxState::Pending,
            OutboxState::Sending,
            OutboxState::Sent,
            OutboxState::Failed,
            OutboxState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<OutboxState>(), Ok(s));
        }
        for k in [
            InboxKind::Message,
            InboxKind::Status,
            InboxKind::ChangeError,
            InboxKind::AccountEvent,
        ] {
            assert_eq!(k.to_string().parse::<InboxKind>(), Ok(k));
        }
        assert_eq!(
            "queued".parse::<OutboxState>(),
            Err(UnknownValue {
                kind: "OutboxState",
                value: "queued".into()
            })
        );
        assert_eq!("mark_read".parse(), Ok(OutboxKind::MarkRead));
        assert_eq!(TimerState::Fired.as_str(), "fired");
        assert_eq!(InboxState::Unrouted.as_str(), "unrouted");
    }
}

stored_text! {
    /// What a catalog entry sells.
    ProductKind {
        /// Goods, with stock if tracked.
        Product = "product",
        /// A subscription plan: `period_days` of access.
        Plan = "plan",
    }
}

stored_text! {
    /// Where an order stands (its payment apart).
    OrderStatus {
        Pending = "pending",
        Processing = "processing",
        Completed = "completed",
        Cancelled = "cancelled",
    }
}

stored_text! {
    /// Whether an order is paid.
    OrderPayment {
        Unpaid = "unpaid",
        Paid = "paid",
        /// Its payment was refunded in full (the order is cancelled with it).
        Refunded = "refunded",
    }
}

stored_text! {
    /// Where a refund of a payment stands.
    RefundStatus {
        /// Written, its gateway asked (or about to be), no answer recorded yet.
        Requested = "requested",
        /// Accepted by the gateway, completing there: counted as refunded.
        Pending = "pending",
        Succeeded = "succeeded",
        /// Refused, or not refundable there: it holds no amount.
        Failed = "failed",
    }
}

impl RefundStatus {
    /// The money is on its way back (or back).
    pub fn counts(self) -> bool {
        matches!(self, RefundStatus::Pending | RefundStatus::Succeeded)
    }
}

stored_text! {
    /// Where an order came from.
    OrderSource {
        /// A flow's `checkout` in a conversation.
        Whatsapp = "whatsapp",
        /// WhatsApp's catalog `order` message.
        Catalog = "catalog",
        /// Entered by the business.
        Manual = "manual",
        /// Created through the admin API.
        Api = "api",
    }
}

stored_text! {
    /// Where a conversation's cart stands.
    CartStatus {
        /// The conversation's one open cart.
        Open = "open",
        /// Turned into an order.
        Ordered = "ordered",
        /// Emptied by the customer.
        Cleared = "cleared",
    }
}

stored_text! {
    /// An abandoned cart's recovery.
    CartRecovery {
        /// Not abandoned (yet).
        None = "none",
        Pending = "pending",
        Sent = "sent",
        Recovered = "recovered",
        Expired = "expired",
    }
}

stored_text! {
    /// The gateway a payment provider speaks.
    GatewayKind {
        Finpay = "finpay",
        Xendit = "xendit",
        Midtrans = "midtrans",
        Stripe = "stripe",
        /// A bank transfer the owner confirms by hand.
        Manual = "manual",
    }
}

stored_text! {
    /// How the customer pays.
    PaymentMethod {
        /// A virtual account number at a bank.
        Va = "va",
        BankTransfer = "bank_transfer",
        Qris = "qris",
        /// A pay code at a store (Indomaret, Alfamart).
        Retail = "retail",
        /// A hosted payment page.
        Link = "link",
        Manual = "manual",
    }
}

stored_text! {
    /// Where a payment stands. Transitions only move forward (`commerce` decides them).
    PaymentStatus {
        Pending = "PENDING",
        Paid = "PAID",
        Expired = "EXPIRED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
        Refunded = "REFUNDED",
        /// Paid after it had expired: held for the owner, the order not completed silently.
        PaidLate = "PAID_LATE",
        /// The paid amount differs from the payment's: held for the owner, never PAID.
        Mismatch = "MISMATCH",
    }
}

stored_text! {
    /// A subscription to a plan.
    SubscriptionStatus {
        Active = "active",
        Expired = "expired",
        Cancelled = "cancelled",
    }
}

stored_text! {
    /// A custom order from chat.
    CustomOrderStatus {
        New = "new",
        Quoted = "quoted",
        Accepted = "accepted",
        Rejected = "rejected",
        Done = "done",
    }
}

impl CustomOrderStatus {
    /// Where a custom order may go from here: quoted, then accepted or rejected, then done;
    /// rejected and done are final.
    pub fn may_become(self, to: CustomOrderStatus) -> bool {
        use CustomOrderStatus as S;
        matches!(
            (self, to),
            (S::New, S::Quoted | S::Accepted | S::Rejected)
                | (S::Quoted, S::Accepted | S::Rejected)
                | (S::Accepted, S::Done | S::Rejected)
        )
    }
}

stored_text! {
    /// What a voucher takes off.
    VoucherKind {
        /// `value` % of the subtotal, rounded as [`crate::domain::Money::percent`] does.
        Percent = "percent",
        /// `value` in the account's currency, never more than the subtotal.
        Fixed = "fixed",
    }
}

stored_text! {
    /// A material's low-stock alert, once per crossing below its `min_stock`.
    LowAlert {
        /// At or above `min_stock`: nothing owed.
        None = "none",
        /// Below it, the alert owed: set in the transaction that crossed, so a crash before
        /// the message is sent leaves it for the reconciliation pass.
        Pending = "pending",
        /// Below it, the owner told; back to `none` when a restock reaches `min_stock`.
        Sent = "sent",
    }
}

stored_text! {
    /// What an admin API key may do, weakest first (the order is the power: a role may do
    /// everything a lower one may). `admin.token` is an owner's.
    Role {
        /// Reads the conversations and contacts of its accounts; replies, hands off, releases.
        Agent = "agent",
        /// An agent's rights, and campaigns, commerce, flows reloads, sends.
        Manager = "manager",
        /// A manager's, and API keys, webhooks, payments (confirm, refund, reconcile).
        Admin = "admin",
        /// Everything (reloading the configuration too).
        Owner = "owner",
    }
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Agent, Role::Manager, Role::Admin, Role::Owner];
}

#[cfg(test)]
mod role_tests {
    use super::Role;

    #[test]
    fn roles_are_ordered_by_power_and_read_back_from_their_text() {
        assert!(Role::Agent < Role::Manager && Role::Manager < Role::Admin);
        assert!(Role::Admin < Role::Owner);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}

stored_text! {
    /// Where a contact came from.
    ContactSource {
        /// Made by hand in the admin API.
        Manual = "manual",
        /// A line of a CSV import.
        Import = "import",
        /// Made by another system through the API.
        Api = "api",
        /// The customer wrote to the business first.
        Whatsapp = "whatsapp",
    }
}

stored_text! {
    /// The type of a contact's custom field.
    CustomFieldKind {
        Text = "text",
        Number = "number",
        /// YYYY-MM-DD.
        Date = "date",
        /// One of the definition's options.
        List = "list",
        Boolean = "boolean",
    }
}

stored_text! {
    /// A consent ledger entry's change.
    ConsentAction {
        OptOut = "opt_out",
        OptIn = "opt_in",
    }
}

stored_text! {
    /// Who has a conversation, from its handoff state.
    ConversationStatus {
        /// The bot (or nobody) answers.
        Bot = "bot",
        /// Handed to a human; no agent has answered yet.
        WaitingForAgent = "waiting_for_agent",
        /// An agent has answered.
        WithAgent = "with_agent",
    }
}

stored_text! {
    /// Where a contact import job stands.
    ImportState {
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
}
