//! What goes in and out of a gateway: the request, what the customer is shown, statuses,
//! callbacks, and the errors, all gateway-neutral.

use crate::domain::{GatewayKind, Money, PaymentMethod};

/// A payment to open at a gateway.
#[derive(Debug, Clone)]
pub struct CreatePayment {
    /// Our id, at most 30 of `[A-Za-z0-9-]` (Finpay's order id limit): Finpay `order.id`,
    /// Xendit `external_id`/`reference_id`, Midtrans `order_id`, Stripe
    /// `client_reference_id` and `metadata[payment_id]`. Unique: a repeat is refused by the
    /// gateways that have no idempotency key, as [`GatewayError::Duplicate`].
    pub payment_id: String,
    /// Sent where the gateway takes one (Xendit `idempotency-key`, Stripe `Idempotency-Key`).
    pub idempotency_key: String,
    pub amount: Money,
    pub method: PaymentMethod,
    /// For `va`/`bank_transfer`: `bca`, `bni`, `bri`, `mandiri`, `permata`, ...
    pub bank: Option<String>,
    /// For `retail`: `indomaret`, `alfamart`.
    pub store: Option<String>,
    pub description: String,
    pub items: Vec<LineItem>,
    pub customer: Customer,
    pub expires_at_unix: i64,
    pub now_unix: i64,
    /// Overrides the URL built from `payments.callback_base_url`.
    pub callback_url: Option<String>,
    /// Where the gateway's hosted page sends the customer after paying (Stripe
    /// `success_url`/`cancel_url`, Finpay `successUrl`/`failUrl`, Xendit
    /// `success_redirect_url`): e.g. `https://wa.me/{business number}`, back to the chat.
    pub return_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub name: String,
    pub quantity: u32,
    pub unit_price: Money,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Customer {
    pub name: String,
    pub email: Option<String>,
    /// E.164 digits, with or without `+`.
    pub phone: String,
}

impl std::fmt::Debug for Customer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A payment request may be logged: the phone number is masked as everywhere.
        f.debug_struct("Customer")
            .field("name", &self.name)
            .field("email", &self.email.as_ref().map(|_| "…"))
            .field("phone", &crate::telemetry::mask(&self.phone))
            .finish()
    }
}

/// What the gateway answered a create with.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The gateway's id for it (Finpay: our order id; Xendit invoice or payment request id;
    /// Midtrans transaction_id; Stripe session id).
    pub provider_ref: String,
    pub instructions: Instructions,
    pub expires_at_unix: Option<i64>,
    pub raw: serde_json::Value,
}

/// What the customer is shown to pay (kept with the payment as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Instructions {
    VirtualAccount {
        bank: String,
        number: String,
    },
    /// Mandiri bill payment (Midtrans `echannel`): the company code and the bill key.
    BillPayment {
        bank: String,
        biller_code: String,
        bill_key: String,
    },
    /// The QR string (render with [`qr_png`]) or an image the gateway hosts.
    Qris {
        qr_string: Option<String>,
        image_url: Option<String>,
    },
    PayCode {
        store: String,
        code: String,
    },
    Link {
        url: String,
    },
    Manual {
        text: String,
    },
}

/// A payment's state as its gateway says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayStatus {
    Pending,
    Paid,
    Expired,
    Failed,
    Cancelled,
    Refunded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub status: GatewayStatus,
    /// What was paid (or is due), as the gateway says it: compare it with the payment's.
    pub amount: Option<Money>,
    pub provider_ref: Option<String>,
    pub raw: serde_json::Value,
}

/// A callback whose token or signature held (Finpay: parsed only, see [`Gateway::verify_callback`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub payment_id: Option<String>,
    pub provider_ref: Option<String>,
    pub status: GatewayStatus,
    pub amount: Option<Money>,
    /// The same for a redelivery of the same news: the gateway's event id (Stripe), else a
    /// hash of what the callback says (reference, status, amount).
    pub event_id: String,
    pub raw: serde_json::Value,
}

/// A refund to ask a gateway for (or, manual, to record).
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// Our id at the gateway (`PAY-…`): Midtrans' `order_id`, Xendit's `reference_id`,
    /// Stripe's `metadata[payment_id]`.
    pub payment_id: String,
    /// What the create answered: Stripe's Checkout Session id (its `payment_intent` is read
    /// from it), Xendit's invoice or payment request id.
    pub provider_ref: Option<String>,
    /// How it was paid: some methods cannot be refunded at the gateway ([`super::refund_support`]).
    pub method: crate::domain::PaymentMethod,
    /// What to give back: the whole payment or a part of it.
    pub amount: Money,
    /// The owner's words, kept with the refund (gateways that take a free text get it; Stripe and
    /// Xendit take a fixed reason code, and the text goes in the metadata).
    pub reason: String,
    /// The same for a retry of the same refund: Stripe `Idempotency-Key`, Xendit
    /// `idempotency-key`, Midtrans `refund_key`. At most 64 of `[A-Za-z0-9_-]` (Midtrans' set).
    pub idempotency_key: String,
}

/// Where a refund stands at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Done (Stripe `succeeded`, Midtrans `200`, Xendit `SUCCEEDED`, a manual refund).
    Succeeded,
    /// Accepted, to be completed by the gateway (Stripe `pending`, Xendit `PENDING`): its
    /// amount is held (no other refund may take it), but the payment moves to REFUNDED, and
    /// the customer is told, only once the reconciliation pass finds it succeeded.
    Pending,
}

/// Where a refund the gateway took as pending stands now (asked by the reconciliation pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundSettled {
    /// The money went back (Stripe `succeeded`, Xendit `SUCCEEDED`).
    Succeeded,
    /// Still under way.
    Pending,
    /// It did not (Stripe `failed` or `canceled` with its `failure_reason`, Xendit `FAILED`
    /// with its `failure_code`): nothing was given back.
    Failed(String),
}

/// What a gateway answered a refund with.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundReport {
    /// The gateway's id of the refund (Stripe `re_…`, Xendit `rfd-…`, Midtrans
    /// `refund_chargeback_id`); None for a manual refund.
    pub provider_ref: Option<String>,
    pub state: RefundState,
    pub raw: serde_json::Value,
}

/// Why a call to a gateway failed. Never carries a secret: gateways' messages are scrubbed of
/// the provider's credentials before they are kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A 4xx (or the gateway's 4xx code in a 200): do not retry the same request.
    #[error("{gateway}: refused ({status} {code}): {message}")]
    Refused {
        gateway: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The gateway already has a payment with this id (a create repeated after a crash or a
    /// timeout): call [`Gateway::status`] for it.
    #[error("{gateway}: a payment with this id already exists: {message}")]
    Duplicate { gateway: String, message: String },
    /// 5xx, 429, timeout, connection: retry later (with the same payment id).
    #[error("{gateway}: unavailable: {reason}")]
    Unavailable { gateway: String, reason: String },
    /// The answer was not understood.
    #[error("{gateway}: answer not understood: {reason}")]
    Malformed { gateway: String, reason: String },
    /// The request cannot be sent as it is (an amount the gateway cannot carry, a payment id
    /// too long, no bank for a VA): fix it, retrying is useless.
    #[error("{gateway}: cannot send: {reason}")]
    Invalid { gateway: String, reason: String },
    #[error("gateway kind {kind} does not support payment method {method}")]
    Unsupported {
        kind: GatewayKind,
        method: PaymentMethod,
    },
    /// This payment cannot be refunded through its gateway (the kind has no refund API, or
    /// the method it was paid by is not refundable there): refund by hand. Known before any
    /// request where the method tells; otherwise from what the gateway says of the payment.
    #[error("{gateway}: cannot be refunded at the gateway: {reason}")]
    NotRefundable { gateway: String, reason: String },
    /// Status asked without what this gateway looks payments up by (Stripe's session id).
    #[error("{gateway}: a status needs the provider_ref create returned")]
    NeedsRef { gateway: String },
}

impl GatewayError {
    /// Worth retrying later with the same payment id.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GatewayError::Unavailable { .. })
    }
}

/// Why a callback was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// A signature that does not match (answer 401).
    #[error("bad signature")]
    BadSignature,
    /// A missing or wrong token (answer 401).
    #[error("bad or missing callback token")]
    BadToken,
    /// A signature timestamp outside the tolerance: a replay, or a clock off (answer 401).
    #[error("signature timestamp outside the {tolerance_secs} s tolerance")]
    Stale { tolerance_secs: i64 },
    /// Not a callback we can read (answer 400).
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// Authentic, but about nothing a payment's status follows (another Stripe event type):
    /// answer 2xx and drop it.
    #[error("ignored: {0}")]
    Ignored(String),
    /// This provider sends no callbacks (manual): answer 404.
    #[error("this provider takes no callbacks")]
    NoCallbacks,
}
