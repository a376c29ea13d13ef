//! Payment gateways: each kind's wire shapes, one client, callback verification.
//!
//! The commerce model calls [`Gateway::create`] after it has written its PENDING row (so a
//! callback that arrives before `create` returns finds the row), shows the customer the
//! [`Instructions`], and marks the payment paid only after a verified [`Callback`] *and* a
//! [`Gateway::status`] that agrees: callbacks come twice, out of order, and (Finpay) unsigned
//! in any way we can check byte-exactly. Every amount goes through [`Money`], converted per
//! gateway, refusing what the gateway cannot carry exactly.
//!
//! # Where its parts are
//! `mod.rs` [`Gateways`], [`Gateway`] and the dispatch to a kind; `types.rs` the request,
//! answers and errors; `client.rs` the HTTP call every kind makes
//! (auth, timeout, error classes) and small shared helpers; `finpay.rs`, `xendit.rs`,
//! `midtrans.rs`, `stripe.rs`, `manual.rs` one kind each; `qr.rs` the QRIS image.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;

use crate::config::{PaymentProviderSettings, PaymentSettings};
use crate::domain::{GatewayKind, PaymentMethod};

mod client;
mod finpay;
mod manual;
mod midtrans;
mod qr;
mod stripe;
mod types;
mod xendit;

pub use qr::{qr_file_payment, qr_link, qr_png, QrError};
pub use types::*;

/// Whether a gateway kind can take a payment by `method`.
///
/// - finpay: `va` (`sourceOfFunds.type` va{bank}), `qris`, `retail` (finpaycode: Indomaret and
///   Alfamart), `link` (its hosted page, `redirecturl`).
/// - xendit: `va`, `retail`, `link` through an Invoice limited to that channel (the invoice
///   answers the VA number / pay code itself), `qris` through a Payment Request (only it
///   answers the QR string, for an image in the chat).
/// - midtrans: `va` and `bank_transfer` (Midtrans' own name for its VA: a flow written in
///   its vocabulary works; both need a `bank`), `qris`, `retail` (cstore). No hosted link:
///   that is Snap, another API.
/// - stripe: `link` (a Checkout Session); Indonesian VAs and QRIS are not Stripe's.
/// - manual: `manual` only: the owner confirms a transfer by hand.
pub fn supports(kind: GatewayKind, method: PaymentMethod) -> bool {
    use PaymentMethod as M;
    match kind {
        GatewayKind::Finpay => matches!(method, M::Va | M::Qris | M::Retail | M::Link),
        GatewayKind::Xendit => matches!(method, M::Va | M::Qris | M::Retail | M::Link),
        GatewayKind::Midtrans => matches!(method, M::Va | M::BankTransfer | M::Qris | M::Retail),
        GatewayKind::Stripe => method == M::Link,
        GatewayKind::Manual => method == M::Manual,
    }
}

/// Whether a payment of `kind` paid by `method` can be refunded through the gateway's API;
/// Err: why not (the admin API answers it as 409, before any request).
///
/// - finpay: refund by hand. Its REST reference (docs.finpay.id, "After Payment") names
///   `POST /pg/payment/card/refund`, `…/void` and `GET …/cancel/{orderId}`, but documents
///   neither their request bodies nor which methods they take (every method is initiated
///   under `/pg/payment/card/`), so Parley does not guess at a request that moves money.
/// - xendit: `qris` (a Payment Request: `POST /refunds` with `payment_request_id`) and `link`
///   (an invoice: `POST /refunds` with `invoice_id`, refundable when it was paid by card or
///   e-wallet; one paid by bank transfer or at a retail outlet is refused before the refund
///   request, from the invoice's `payment_method`). `va` and `retail` are not refundable
///   through the API (bank transfers and over-the-counter payments have no way back).
/// - midtrans: `qris` only (its Refund API takes credit_card, gopay, shopeepay, dana, ovo,
///   QRIS, kredivo, akulaku: not bank_transfer/echannel nor cstore).
/// - stripe: `link` (a Checkout Session's payment intent).
/// - manual: always: nothing is sent, the owner records a refund made by hand.
pub fn refund_support(kind: GatewayKind, method: PaymentMethod) -> Result<(), &'static str> {
    use PaymentMethod as M;
    match (kind, method) {
        (GatewayKind::Finpay, _) => Err("Finpay's refund request is not documented publicly: refund the customer by hand"),
        (GatewayKind::Xendit, M::Qris | M::Link) => Ok(()),
        (GatewayKind::Xendit, _) => Err(
            "a Xendit virtual account or retail outlet payment cannot be refunded through the API: refund the customer by hand",
        ),
        (GatewayKind::Midtrans, M::Qris) => Ok(()),
        (GatewayKind::Midtrans, _) => Err(
            "Midtrans refunds only card, e-wallet and QRIS payments, not a bank transfer (VA) or a retail payment: refund the customer by hand",
        ),
        (GatewayKind::Stripe, _) | (GatewayKind::Manual, _) => Ok(()),
    }
}

/// One configured provider.
pub struct Gateway {
    name: String,
    kind: GatewayKind,
    base_url: String,
    sandbox: bool,
    timeout: Duration,
    callback_url: Option<String>,
    http: reqwest::Client,
    creds: Credentials,
}

/// The kind's credentials; which exist is checked at start (`parleyd check`).
enum Credentials {
    Finpay {
        merchant_id: SecretString,
        merchant_key: SecretString,
    },
    Xendit {
        secret_key: SecretString,
        callback_token: SecretString,
    },
    Midtrans {
        server_key: SecretString,
    },
    Stripe {
        secret_key: SecretString,
        webhook_secret: SecretString,
    },
    Manual {
        instructions: String,
    },
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// One provider; None when a credential its kind needs is missing (validation refuses
    /// such settings, so this is only a guard).
    pub fn from_settings(
        name: &str,
        p: &PaymentProviderSettings,
        callback_base_url: Option<&str>,
        http: reqwest::Client,
    ) -> Option<Gateway> {
        let s = |v: &Option<SecretString>| v.clone();
        let creds = match p.kind {
            GatewayKind::Finpay => Credentials::Finpay {
                merchant_id: s(&p.merchant_id)?,
                merchant_key: s(&p.merchant_key)?,
            },
            GatewayKind::Xendit => Credentials::Xendit {
                secret_key: s(&p.secret_key)?,
                callback_token: s(&p.callback_token)?,
            },
            GatewayKind::Midtrans => Credentials::Midtrans {
                server_key: s(&p.server_key)?,
            },
            GatewayKind::Stripe => Credentials::Stripe {
                secret_key: s(&p.secret_key)?,
                webhook_secret: s(&p.webhook_secret)?,
            },
            GatewayKind::Manual => Credentials::Manual {
                instructions: p.instructions.clone()?,
            },
        };
        let base_url = match (&p.base_url, p.kind) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, GatewayKind::Manual) => String::new(),
            (None, _) => return None,
        };
        Some(Gateway {
            name: name.to_string(),
            kind: p.kind,
            base_url,
            sandbox: p.sandbox,
            timeout: p.timeout,
            callback_url: callback_base_url
                .map(|b| format!("{}/payments/{name}/callback", b.trim_end_matches('/'))),
            http,
            creds,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> GatewayKind {
        self.kind
    }

    pub fn is_sandbox(&self) -> bool {
        self.sandbox
    }

    /// Where this provider's callbacks are received (`{callback_base_url}/payments/{NAME}/callback`).
    pub fn callback_url(&self) -> Option<&str> {
        self.callback_url.as_deref()
    }

    /// Open the payment at the gateway. Refused before any request when the method is not
    /// the kind's ([`supports`]), the payment id is not `[A-Za-z0-9-]{1,30}`, or an amount
    /// cannot be carried exactly.
    pub async fn create(&self, req: &CreatePayment) -> Result<Created, GatewayError> {
        if !supports(self.kind, req.method) {
            return Err(GatewayError::Unsupported {
                kind: self.kind,
                method: req.method,
            });
        }
        if !is_payment_id(&req.payment_id) {
            return Err(self.invalid("payment_id must be 1 to 30 of A-Z, a-z, 0-9 and `-`"));
        }
        tracing::info!(
            gateway = %self.name, kind = %self.kind, sandbox = self.sandbox,
            payment = %req.payment_id, method = %req.method, amount = %req.amount,
            "Creating a payment."
        );
        match &self.creds {
            Credentials::Finpay { .. } => finpay::create(self, req).await,
            Credentials::Xendit { .. } => xendit::create(self, req).await,
            Credentials::Midtrans { .. } => midtrans::create(self, req).await,
            Credentials::Stripe { .. } => stripe::create(self, req).await,
            Credentials::Manual { instructions } => Ok(manual::create(instructions, req)),
        }
    }

    /// The payment's state by the gateway's status API: Finpay `check/{orderId}`, Xendit the
    /// invoice or payment request (`provider_ref`; an invoice is also found by
    /// `external_id`), Midtrans `/v2/{order_id}/status`, Stripe the Checkout Session
    /// (`provider_ref` needed). Manual: always Pending (the owner confirms).
    pub async fn status(
        &self,
        payment_id: &str,
        provider_ref: Option<&str>,
    ) -> Result<StatusReport, GatewayError> {
        match &self.creds {
            Credentials::Finpay { .. } => finpay::status(self, payment_id).await,
            Credentials::Xendit { .. } => xendit::status(self, payment_id, provider_ref).await,
            Credentials::Midtrans { .. } => midtrans::status(self, payment_id).await,
            Credentials::Stripe { .. } => match provider_ref {
                Some(r) => stripe::status(self, r).await,
                None => Err(GatewayError::NeedsRef {
                    gateway: self.name.clone(),
                }),
            },
            Credentials::Manual { .. } => Ok(manual::status()),
        }
    }

    /// Give `req.amount` of a paid payment back. Refused before any request when the kind or
    /// the method cannot refund ([`refund_support`]: [`GatewayError::NotRefundable`]) or the
    /// key is not `[A-Za-z0-9_-]{1,64}`. Stripe: the session's `payment_intent` is read first
    /// (`GET /v1/checkout/sessions/{id}`), then `POST /v1/refunds`. Xendit: `POST /refunds`
    /// (an invoice is read first: one paid by bank transfer or at a retail outlet is
    /// refused). Midtrans: `POST /v2/{order_id}/refund`. Manual: nothing is sent; the refund
    /// the owner made by hand is reported done.
    pub async fn refund(&self, req: &RefundRequest) -> Result<RefundReport, GatewayError> {
        if let Err(reason) = refund_support(self.kind, req.method) {
            return Err(GatewayError::NotRefundable {
                gateway: self.name.clone(),
                reason: reason.to_string(),
            });
        }
        let key_ok = (1..=64).contains(&req.idempotency_key.len())
            && req
                .idempotency_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !key_ok {
            return Err(self.invalid("a refund key must be 1 to 64 of A-Z, a-z, 0-9, `-` and `_`"));
        }
        if req.amount.is_zero() {
            return Err(self.invalid("a refund of nothing"));
        }
        tracing::info!(
            gateway = %self.name, kind = %self.kind, sandbox = self.sandbox,
            payment = %req.payment_id, amount = %req.amount, "Refunding a payment."
        );
        match &self.creds {
            Credentials::Finpay { .. } => Err(GatewayError::NotRefundable {
                gateway: self.name.clone(),
                reason: "Finpay's refund request is not documented publicly".into(),
            }),
            Credentials::Xendit { .. } => xendit::refund(self, req).await,
            Credentials::Midtrans { .. } => midtrans::refund(self, req).await,
            Credentials::Stripe { .. } => stripe::refund(self, req).await,
            Credentials::Manual { .. } => Ok(manual::refund()),
        }
    }

    /// Where a refund the gateway answered as pending stands now (`provider_ref`: the
    /// gateway's refund id). Stripe: `GET /v1/refunds/{id}`; Xendit: `GET /refunds/{id}`.
    /// Midtrans answers a refund done or refused, and a manual one is done, so theirs are
    /// never pending; asked anyway, they answer succeeded.
    pub async fn refund_status(&self, provider_ref: &str) -> Result<RefundSettled, GatewayError> {
        let safe = !provider_ref.is_empty()
            && provider_ref.len() <= 100
            && provider_ref
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !safe {
            return Err(self.invalid("a refund id must be 1 to 100 of A-Z, a-z, 0-9, `-` and `_`"));
        }
        match &self.creds {
            Credentials::Xendit { .. } => xendit::refund_status(self, provider_ref).await,
            Credentials::Stripe { .. } => stripe::refund_status(self, provider_ref).await,
            Credentials::Finpay { .. }
            | Credentials::Midtrans { .. }
            | Credentials::Manual { .. } => Ok(RefundSettled::Succeeded),
        }
    }

    /// Check a callback's authenticity and read it. Xendit: the `x-callback-token` header
    /// (compared in constant time). Midtrans: `signature_key`, SHA-512 of
    /// order_id + status_code + gross_amount (as received) + server key. Stripe:
    /// `Stripe-Signature` (`t=`, one or more `v1=`), HMAC-SHA256 of `{t}.{body}`, `t` within
    /// 300 s of `now_unix`. Finpay: parsed only: its signature is an HMAC over PHP's
    /// `json_encode` of the fields, which Rust cannot reproduce byte-exactly, so the caller
    /// must confirm a Finpay callback with [`Gateway::status`] (Finpay's own "most secure
    /// method") before acting on it, as it should for every gateway anyway.
    pub fn verify_callback(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Callback, CallbackError> {
        match &self.creds {
            Credentials::Finpay { .. } => finpay::callback(body),
            Credentials::Xendit { callback_token, .. } => {
                xendit::callback(callback_token, headers, body)
            }
            Credentials::Midtrans { server_key } => midtrans::callback(server_key, body),
            Credentials::Stripe { webhook_secret, .. } => {
                stripe::callback(webhook_secret, headers, body, now_unix)
            }
            Credentials::Manual { .. } => Err(CallbackError::NoCallbacks),
        }
    }

    /// The callback URL a create sends: the request's own, else the configured one.
    fn callback_for<'a>(&'a self, req: &'a CreatePayment) -> Option<&'a str> {
        req.callback_url.as_deref().or(self.callback_url.as_deref())
    }

    fn invalid(&self, reason: impl Into<String>) -> GatewayError {
        GatewayError::Invalid {
            gateway: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> GatewayError {
        GatewayError::Malformed {
            gateway: self.name.clone(),
            reason: reason.into(),
        }
    }
}

/// `[A-Za-z0-9-]{1,30}`: what every gateway takes as an order id.
pub fn is_payment_id(id: &str) -> bool {
    (1..=30).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Every configured provider.
#[derive(Debug, Default)]
pub struct Gateways {
    by_name: BTreeMap<String, Gateway>,
}

impl Gateways {
    /// The providers of `[payments.providers]`, sharing `http` (its connection pool); each
    /// request sets its provider's timeout. A provider missing a credential (which
    /// `parleyd check` refuses) is left out and logged.
    pub fn new(settings: &PaymentSettings, http: reqwest::Client) -> Gateways {
        let mut by_name = BTreeMap::new();
        for (name, p) in &settings.providers {
            match Gateway::from_settings(
                name,
                p,
                settings.callback_base_url.as_deref(),
                http.clone(),
            ) {
                Some(g) => {
                    by_name.insert(name.clone(), g);
                }
                None => tracing::warn!(
                    gateway = %name, kind = %p.kind,
                    "A payment provider lacks a credential or base_url its kind needs; left out."
                ),
            }
        }
        Gateways { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Gateway> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_supports_its_methods_only() {
        use PaymentMethod as M;
        assert!(supports(GatewayKind::Manual, M::Manual));
        assert!(!supports(GatewayKind::Manual, M::Va));
        assert!(supports(GatewayKind::Stripe, M::Link));
        assert!(!supports(GatewayKind::Stripe, M::Qris));
        assert!(supports(GatewayKind::Midtrans, M::BankTransfer));
        assert!(!supports(GatewayKind::Midtrans, M::Link));
        for k in [GatewayKind::Finpay, GatewayKind::Xendit] {
            for m in [M::Va, M::Qris, M::Retail, M::Link] {
                assert!(supports(k, m), "{k} {m}");
            }
            assert!(!supports(k, M::Manual));
        }
    }

    #[test]
    fn refunds_are_refused_in_advance_where_the_method_cannot_refund() {
        use PaymentMethod as M;
        assert!(refund_support(GatewayKind::Stripe, M::Link).is_ok());
        assert!(refund_support(GatewayKind::Manual, M::Manual).is_ok());
        assert!(refund_support(GatewayKind::Midtrans, M::Qris).is_ok());
        assert!(refund_support(GatewayKind::Xendit, M::Qris).is_ok());
        assert!(refund_support(GatewayKind::Xendit, M::Link).is_ok());
        for m in [M::Va, M::BankTransfer, M::Retail] {
            assert!(refund_support(GatewayKind::Midtrans, m).is_err(), "{m}");
        }
        for m in [M::Va, M::Retail] {
            assert!(refund_support(GatewayKind::Xendit, m).is_err(), "{m}");
        }
        for m in [M::Va, M::Qris, M::Retail, M::Link] {
            assert!(refund_support(GatewayKind::Finpay, m).is_err(), "{m}");
        }
    }

    #[test]
    fn payment_ids_fit_every_gateway() {
        assert!(is_payment_id("PAY-20261201-0001"));
        assert!(!is_payment_id(""));
        assert!(!is_payment_id("a_b"));
        assert!(!is_payment_id(&"x".repeat(31)));
    }

    #[test]
    fn a_customer_debug_masks_the_phone() {
        let c = Customer {
            name: "Budi".into(),
            email: Some("budi@example.com".into()),
            phone: "6281234567890".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("6281234567890") && !shown.contains("budi@"),
            "{shown}"
        );
    }
}
