//! Stripe: a Checkout Session (`POST /v1/checkout/sessions`, form-encoded) for `link`; its
//! status by `GET /v1/checkout/sessions/{id}`; webhooks signed with `Stripe-Signature`.
//!
//! Refunds: `POST /v1/refunds` (form-encoded) with the session's `payment_intent`, `amount`
//! in minor units, `reason` and `Idempotency-Key` (see [`refund_form`] for what is verified).
//!
//! Amounts are minor units, IDR too (×100: IDR is not zero-decimal at Stripe). A session
//! lives 30 min to 24 h: the payment's expiry is clamped into that range and `Created`
//! says the one Stripe got.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use super::client::{currency_of, items_total, Answer, Body};
use super::{
    Callback, CallbackError, CreatePayment, Created, Gateway, GatewayError, GatewayStatus,
    Instructions, RefundReport, RefundRequest, RefundSettled, RefundState, StatusReport,
};
use crate::domain::{Currency, Money};

/// How old a signature's timestamp may be (Stripe's libraries' default).
pub const TOLERANCE_SECS: i64 = 300;
/// A session's shortest and longest life, with a minute's margin for the clocks.
const MIN_LIFE: i64 = 31 * 60;
const MAX_LIFE: i64 = 24 * 3600 - 60;

/// The form of the session request, or why it cannot be made.
pub(super) fn session_form(req: &CreatePayment) -> Result<(Vec<(String, String)>, i64), String> {
    let minor = |m: &Money| {
        m.minor_units()
            .map_err(|e| format!("Stripe takes {} minor units: {e}", m.currency))
    };
    let total = minor(&req.amount)?;
    let expires = req
        .expires_at_unix
        .clamp(req.now_unix + MIN_LIFE, req.now_unix + MAX_LIFE);
    let currency = req.amount.currency.as_str().to_ascii_lowercase();
    let mut f: Vec<(String, String)> = vec![
        ("mode".into(), "payment".into()),
        ("client_reference_id".into(), req.payment_id.clone()),
        ("metadata[payment_id]".into(), req.payment_id.clone()),
        // On the payment intent too, so its charge's refund event names the payment.
        (
            "payment_intent_data[metadata][payment_id]".into(),
            req.payment_id.clone(),
        ),
        ("expires_at".into(), expires.to_string()),
    ];
    let itemised =
        !req.items.is_empty() && items_total(&req.items, &req.amount) == Some(req.amount);
    let lines: Vec<(String, i64, u32)> = if itemised {
        req.items
            .iter()
            .map(|i| Ok((i.name.clone(), minor(&i.unit_price)?, i.quantity)))
            .collect::<Result<_, String>>()?
    } else {
        vec![(req.description.clone(), total, 1)]
    };
    for (n, (name, unit, qty)) in lines.into_iter().enumerate() {
        let k = |rest: &str| format!("line_items[{n}]{rest}");
        f.push((k("[price_data][currency]"), currency.clone()));
        f.push((k("[price_data][product_data][name]"), name));
        f.push((k("[price_data][unit_amount]"), unit.to_string()));
        f.push((k("[quantity]"), qty.to_string()));
    }
    if let Some(email) = &req.customer.email {
        f.push(("customer_email".into(), email.clone()));
    }
    if let Some(url) = &req.return_url {
        f.push(("success_url".into(), url.clone()));
        f.push(("cancel_url".into(), url.clone()));
    }
    Ok((f, expires))
}

fn check(gw: &Gateway, a: &Answer) -> Result<(), GatewayError> {
    if (200..300).contains(&a.status) {
        return Ok(());
    }
    let e = a.body.get("error").cloned().unwrap_or(Value::Null);
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if text("type") == "idempotency_error" {
        return Err(gw.duplicate(&text("message")));
    }
    let code = match text("code") {
        c if c.is_empty() => text("type"),
        c => c,
    };
    Err(gw.refused(a.status, &code, &text("message")))
}

pub(super) async fn create(gw: &Gateway, req: &CreatePayment) -> Result<Created, GatewayError> {
    let (form, _) = session_form(req).map_err(|r| gw.invalid(r))?;
    let a = gw
        .call(
            reqwest::Method::POST,
            "/v1/checkout/sessions",
            Body::Form(form),
            &[("Idempotency-Key", req.idempotency_key.as_str())],
        )
        .await?;
    check(gw, &a)?;
    let s = |k: &str| a.body.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Created {
        provider_ref: s("id").ok_or_else(|| gw.malformed("a session without id"))?,
        instructions: Instructions::Link {
            url: s("url").ok_or_else(|| gw.malformed("a session without url"))?,
        },
        expires_at_unix: a.body.get("expires_at").and_then(Value::as_i64),
        raw: a.body,
    })
}

/// A session's `status` and `payment_status` as a status.
pub(super) fn session_status(status: &str, payment_status: &str) -> Option<GatewayStatus> {
    Some(match (status, payment_status) {
        ("complete", "paid" | "no_payment_required") => GatewayStatus::Paid,
        // Completed with a delayed method: its payment is still processing.
        ("complete", _) | ("open", _) => GatewayStatus::Pending,
        ("expired", _) => GatewayStatus::Expired,
        _ => return None,
    })
}

fn amount_of(o: &Value, key: &str) -> Option<Money> {
    let currency = currency_of(o.get("currency"), Currency::IDR);
    Money::from_minor_units(o.get(key)?.as_i64()?, currency).ok()
}

pub(super) async fn status(gw: &Gateway, session_id: &str) -> Result<StatusReport, GatewayError> {
    let path = format!("/v1/checkout/sessions/{session_id}");
    let a = gw
        .call(reqwest::Method::GET, &path, Body::None, &[])
        .await?;
    check(gw, &a)?;
    let s = |k: &str| a.body.get(k).and_then(Value::as_str).unwrap_or("");
    let status = session_status(s("status"), s("payment_status"))
        .ok_or_else(|| gw.malformed(format!("session status {:?}", s("status"))))?;
    Ok(StatusReport {
        status,
        amount: amount_of(&a.body, "amount_total"),
        provider_ref: Some(session_id.to_string()),
        raw: a.body,
    })
}

/// The form of a refund of `payment_intent`.
///
/// Verified from Stripe's API reference (the `PostRefunds` operation of its OpenAPI spec, and
/// the `RefundCreateParams` of stripe-node's generated types): `POST /v1/refunds`,
/// form-encoded, `payment_intent`, `amount` (a positive integer in the smallest currency unit;
/// omitted: the whole remaining amount), `reason` one of `duplicate`, `fraudulent`,
/// `requested_by_customer`, `metadata[...]`. The owner's free text cannot be a `reason`, so it
/// goes in `metadata[reason]`. The amount is always sent, so a retry never means "the rest".
pub(super) fn refund_form(
    payment_intent: &str,
    req: &RefundRequest,
) -> Result<Vec<(String, String)>, String> {
    let minor = req
        .amount
        .minor_units()
        .map_err(|e| format!("Stripe takes {} minor units: {e}", req.amount.currency))?;
    let reason: String = req.reason.chars().take(500).collect();
    Ok(vec![
        ("payment_intent".into(), payment_intent.to_string()),
        ("amount".into(), minor.to_string()),
        ("reason".into(), "requested_by_customer".into()),
        ("metadata[payment_id]".into(), req.payment_id.clone()),
        ("metadata[reason]".into(), reason),
    ])
}

/// A refund's `status` (`pending`, `requires_action`, `succeeded`, `failed`, `canceled`) as a
/// state; Err: the refund did not happen.
pub(super) fn refund_state(status: &str) -> Result<RefundState, String> {
    match status {
        "succeeded" => Ok(RefundState::Succeeded),
        // [UNVERIFIED against a sandbox] `requires_action` is for methods without native
        // refunds (instructions emailed to the customer): the money is not back yet.
        "pending" | "requires_action" => Ok(RefundState::Pending),
        other => Err(format!("the refund is {other:?}")),
    }
}

/// Where a refund stands (Stripe's Refund object: `status` pending, requires_action,
/// succeeded, failed or canceled, with `failure_reason` when it failed).
pub(super) fn refund_settled(body: &Value) -> RefundSettled {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    match s("status") {
        "succeeded" => RefundSettled::Succeeded,
        "failed" | "canceled" => RefundSettled::Failed(match s("failure_reason") {
            "" => format!("the refund was {}", s("status")),
            why => format!("the refund was {}: {why}", s("status")),
        }),
        _ => RefundSettled::Pending,
    }
}

/// `GET /v1/refunds/{id}`.
pub(super) async fn refund_status(gw: &Gateway, id: &str) -> Result<RefundSettled, GatewayError> {
    let a = gw
        .call(
            reqwest::Method::GET,
            &format!("/v1/refunds/{id}"),
            Body::None,
            &[],
        )
        .await?;
    check(gw, &a)?;
    Ok(refund_settled(&a.body))
}

pub(super) async fn refund(
    gw: &Gateway,
    req: &RefundRequest,
) -> Result<RefundReport, GatewayError> {
    let session = req.provider_ref.as_deref().ok_or(GatewayError::NeedsRef {
        gateway: gw.name.clone(),
    })?;
    // The session's payment intent. Verified from Stripe's Session object (its OpenAPI spec
    // as the generated clients carry it, e.g. async-stripe's `CheckoutSession`):
    // `payment_intent` is "the ID of the PaymentIntent for Checkout Sessions in payment
    // mode", expandable; since API version 2022-08-01 it is created only when the session is
    // confirmed, so an unpaid session has none. The status answer carries it, but only the
    // session id is kept with the payment, so it is read here.
    let path = format!("/v1/checkout/sessions/{session}");
    let a = gw
        .call(reqwest::Method::GET, &path, Body::None, &[])
        .await?;
    check(gw, &a)?;
    let intent = match a.body.get("payment_intent") {
        Some(Value::String(id)) => id.clone(),
        // Expanded into the object.
        Some(Value::Object(o)) => o
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    if intent.is_empty() {
        return Err(GatewayError::NotRefundable {
            gateway: gw.name.clone(),
            reason: "the Checkout Session has no payment intent (it was not paid)".into(),
        });
    }
    let form = refund_form(&intent, req).map_err(|r| gw.invalid(r))?;
    let a = gw
        .call(
            reqwest::Method::POST,
            "/v1/refunds",
            Body::Form(form),
            &[("Idempotency-Key", req.idempotency_key.as_str())],
        )
        .await?;
    check(gw, &a)?;
    let s = |k: &str| a.body.get(k).and_then(Value::as_str).unwrap_or("");
    let state =
        refund_state(s("status")).map_err(|why| gw.refused(a.status, "refund_failed", &why))?;
    Ok(RefundReport {
        provider_ref: Some(s("id").to_string()).filter(|i| !i.is_empty()),
        state,
        raw: a.body,
    })
}

/// The HMAC of `{t}.{body}` under `secret`, ready to finalize or verify.
fn mac(secret: &str, t: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    // An HMAC takes a key of any length: this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// `HMAC-SHA256(secret, "{t}.{body}")`, hex: what `v1=` carries.
#[cfg(test)]
fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    mac(secret, t, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Check `Stripe-Signature` (`t=…,v1=…[,v1=…]`): any v1 may match (secrets rotate), and
/// then `t` must be within [`TOLERANCE_SECS`] of `now` (checked after the signature, so a
/// Stale answer is about an authentic event).
pub(super) fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), CallbackError> {
    let header = header.ok_or(CallbackError::BadSignature)?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(CallbackError::BadSignature)?;
    // verify_slice compares in constant time.
    let matched = v1
        .iter()
        .any(|sig| mac(secret, t, body).is_some_and(|m| m.verify_slice(sig).is_ok()));
    if !matched {
        return Err(CallbackError::BadSignature);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(CallbackError::Stale {
            tolerance_secs: TOLERANCE_SECS,
        });
    }
    Ok(())
}

pub(super) fn callback(
    secret: &SecretString,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Callback, CallbackError> {
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    verify_signature(secret.expose_secret(), header, body, now)?;
    let raw: Value =
        serde_json::from_slice(body).map_err(|_| CallbackError::Malformed("not JSON".into()))?;
    let event_type = raw.get("type").and_then(Value::as_str).unwrap_or("");
    let id = raw
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::Malformed("no event id".into()))?
        .to_string();
    let o = raw
        .pointer("/data/object")
        .cloned()
        .ok_or_else(|| CallbackError::Malformed("no data.object".into()))?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let meta_id = o
        .pointer("/metadata/payment_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let (status, amount, provider_ref) = match event_type {
        "checkout.session.completed" => {
            let paid = matches!(
                s("payment_status").as_deref(),
                Some("paid" | "no_payment_required")
            );
            let status = if paid {
                GatewayStatus::Paid
            } else {
                GatewayStatus::Pending
            };
            (status, amount_of(&o, "amount_total"), s("id"))
        }
        "checkout.session.async_payment_succeeded" => {
            (GatewayStatus::Paid, amount_of(&o, "amount_total"), s("id"))
        }
        "checkout.session.async_payment_failed" => (
            GatewayStatus::Failed,
            amount_of(&o, "amount_total"),
            s("id"),
        ),
        "checkout.session.expired" => (
            GatewayStatus::Expired,
            amount_of(&o, "amount_total"),
            s("id"),
        ),
        "charge.refunded" => (
            GatewayStatus::Refunded,
            amount_of(&o, "amount_refunded"),
            None,
        ),
        other => return Err(CallbackError::Ignored(format!("Stripe event {other}"))),
    };
    Ok(Callback {
        payment_id: s("client_reference_id").or(meta_id),
        provider_ref,
        status,
        amount,
        event_id: format!("stripe:{id}"),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PaymentMethod;
    use crate::payments::{Customer, LineItem};

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    #[test]
    fn the_session_form_is_in_minor_units_and_clamped_in_time() {
        let req = CreatePayment {
            payment_id: "PAY-1".into(),
            idempotency_key: "k".into(),
            amount: idr("50000"),
            method: PaymentMethod::Link,
            bank: None,
            store: None,
            description: "Order 1".into(),
            items: vec![LineItem {
                name: "Kopi".into(),
                quantity: 2,
                unit_price: idr("25000"),
            }],
            customer: Customer {
                name: "B".into(),
                email: None,
                phone: "62".into(),
            },
            expires_at_unix: 1000 + 60,
            now_unix: 1000,
            callback_url: None,
            return_url: None,
        };
        let (form, expires) = session_form(&req).unwrap();
        let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("line_items[0][price_data][unit_amount]"),
            Some("2500000")
        );
        assert_eq!(get("line_items[0][price_data][currency]"), Some("idr"));
        assert_eq!(get("line_items[0][quantity]"), Some("2"));
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(expires, 1000 + MIN_LIFE);
        let usd = CreatePayment {
            amount: Money::parse("12.34", "USD".parse().unwrap()).unwrap(),
            items: vec![],
            ..req
        };
        let (form, _) = session_form(&usd).unwrap();
        assert!(form.contains(&(
            "line_items[0][price_data][unit_amount]".into(),
            "1234".into()
        )));
    }

    #[test]
    fn a_refund_is_the_payment_intent_in_minor_units() {
        let req = RefundRequest {
            payment_id: "PAY-00000001".into(),
            provider_ref: Some("cs_test_1".into()),
            method: PaymentMethod::Link,
            amount: idr("20000"),
            reason: "Out of stock".into(),
            idempotency_key: "PAY-00000001-k1".into(),
        };
        let form = refund_form("pi_123", &req).unwrap();
        let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("payment_intent"), Some("pi_123"));
        assert_eq!(get("amount"), Some("2000000"), "IDR ×100");
        assert_eq!(get("reason"), Some("requested_by_customer"));
        assert_eq!(get("metadata[reason]"), Some("Out of stock"));
        assert_eq!(get("metadata[payment_id]"), Some("PAY-00000001"));
        assert_eq!(refund_state("succeeded"), Ok(RefundState::Succeeded));
        assert_eq!(refund_state("pending"), Ok(RefundState::Pending));
        assert_eq!(
            refund_settled(&serde_json::json!({"status": "succeeded"})),
            RefundSettled::Succeeded
        );
        assert_eq!(
            refund_settled(
                &serde_json::json!({"status": "failed", "failure_reason": "expired_or_canceled_card"})
            ),
            RefundSettled::Failed("the refund was failed: expired_or_canceled_card".into())
        );
        assert_eq!(
            refund_settled(&serde_json::json!({"status": "requires_action"})),
            RefundSettled::Pending
        );
        assert!(refund_state("failed").is_err());
    }

    #[test]
    fn signatures_with_rotation_and_age() {
        let body = br#"{"id":"evt_1"}"#;
        // Computed independently: HMAC-SHA256 with the hmac crate over "t.body".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"id\":\"evt_1\"}");
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sign("whsec_test", 1_700_000_000, body), good);
        let old = sign("whsec_old", 1_700_000_000, body);
        let header = format!("t=1700000000,v1={old},v1={good},v0=abc");
        assert_eq!(
            verify_signature("whsec_test", Some(&header), body, 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            verify_signature("whsec_test", Some(&header), body, 1_700_000_301),
            Err(CallbackError::Stale {
                tolerance_secs: 300
            })
        );
        let only_old = format!("t=1700000000,v1={old}");
        assert_eq!(
            verify_signature("whsec_test", Some(&only_old), body, 1_700_000_000),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            verify_signature("whsec_test", Some(&header), b"{}", 1_700_000_000),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            verify_signature("whsec_test", None, body, 0),
            Err(CallbackError::BadSignature)
        );
    }

    #[test]
    fn statuses_map() {
        assert_eq!(
            session_status("complete", "paid"),
            Some(GatewayStatus::Paid)
        );
        assert_eq!(
            session_status("complete", "unpaid"),
            Some(GatewayStatus::Pending)
        );
        assert_eq!(
            session_status("open", "unpaid"),
            Some(GatewayStatus::Pending)
        );
        assert_eq!(
            session_status("expired", "unpaid"),
            Some(GatewayStatus::Expired)
        );
        assert_eq!(session_status("?", "?"), None);
    }
}
