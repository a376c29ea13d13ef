//! Xendit: Invoices (`POST /v2/invoices`) for `va`, `retail` and `link`, a Payment Request
//! (`POST /payment_requests`, QR_CODE/QRIS) for `qris`.
//!
//! Why two APIs: an invoice limited to one channel (`payment_methods: ["BCA"]`) answers the
//! VA number (`available_banks[].bank_account_number`) and the pay code
//! (`available_retail_outlets[].payment_code`) itself, and has one status (`GET
//! /v2/invoices/{id}`) and one callback shape, both in commerce.md; but it only lists
//! `available_qr_codes` without the QR string, which only a Payment Request answers
//! (`payment_method.qr_code.channel_properties.qr_string`) for an image in the chat. A
//! Payment Request's id starts `pr-`: that is how `status` tells them apart.
//!
//! Refunds: the Refunds API, `POST /refunds` with `invoice_id` (an invoice) or
//! `payment_request_id` (QRIS); see [`refund_body`] for what is verified.
//!
//! IDR amounts are whole (Xendit truncates or refuses decimals): a fraction is refused here.
//! Callbacks carry a static `x-callback-token` (not an HMAC), compared in constant time; the
//! callback URL is the dashboard's (invoices take none per request).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::client::{currency_of, e164, event_id, money_of, parse_time, split_name, Answer, Body};
use super::{
    Callback, CallbackError, CreatePayment, Created, Gateway, GatewayError, GatewayStatus,
    Instructions, RefundReport, RefundRequest, RefundSettled, RefundState, StatusReport,
};
use crate::domain::{Currency, PaymentMethod};

/// The invoice request, or why it cannot be made.
pub(super) fn invoice_body(req: &CreatePayment) -> Result<Value, String> {
    let whole = |m: &crate::domain::Money| {
        m.whole_units()
            .map_err(|e| format!("Xendit takes whole amounts: {e}"))
    };
    let amount = whole(&req.amount)?;
    let mut items = Vec::new();
    for it in &req.items {
        items.push(
            json!({"name": it.name, "quantity": it.quantity, "price": whole(&it.unit_price)?}),
        );
    }
    let (given, surname) = split_name(&req.customer.name);
    let mut customer = json!({
        "given_names": given, "surname": surname, "mobile_number": e164(&req.customer.phone),
    });
    if let Some(e) = &req.customer.email {
        customer["email"] = json!(e);
    }
    let mut body = json!({
        "external_id": req.payment_id,
        "amount": amount,
        "currency": req.amount.currency.as_str(),
        "description": req.description,
        "invoice_duration": (req.expires_at_unix - req.now_unix).max(60),
        "customer": customer,
        "metadata": {"payment_id": req.payment_id},
    });
    if !items.is_empty() {
        body["items"] = json!(items);
    }
    if let Some(url) = &req.return_url {
        body["success_redirect_url"] = json!(url);
        body["failure_redirect_url"] = json!(url);
    }
    match req.method {
        PaymentMethod::Va => {
            let bank = req
                .bank
                .as_deref()
                .ok_or("a VA needs a bank (BCA, BNI, BRI, MANDIRI, PERMATA, ...)")?;
            body["payment_methods"] = json!([bank.to_ascii_uppercase()]);
        }
        PaymentMethod::Retail => {
            let store = req.store.as_deref().unwrap_or("ALFAMART");
            body["payment_methods"] = json!([store.to_ascii_uppercase()]);
        }
        PaymentMethod::Link => {}
        other => return Err(format!("an invoice does not take {other}")),
    }
    Ok(body)
}

/// The QRIS payment request, or why it cannot be made.
pub(super) fn qris_body(req: &CreatePayment) -> Result<Value, String> {
    let amount = req
        .amount
        .whole_units()
        .map_err(|e| format!("Xendit takes whole amounts: {e}"))?;
    Ok(json!({
        "reference_id": req.payment_id,
        "amount": amount,
        "currency": req.amount.currency.as_str(),
        "country": "ID",
        "description": req.description,
        "payment_method": {
            "type": "QR_CODE",
            "reusability": "ONE_TIME_USE",
            "qr_code": {
                "channel_code": "QRIS",
                "channel_properties": {"expires_at": rfc3339(req.expires_at_unix)},
            },
        },
        "metadata": {"payment_id": req.payment_id},
    }))
}

/// Unix seconds as `2026-12-01T10:00:00Z`.
fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86400), unix.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn check(gw: &Gateway, a: &Answer) -> Result<(), GatewayError> {
    if (200..300).contains(&a.status) {
        return Ok(());
    }
    let code = a
        .body
        .get("error_code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = a.body.get("message").and_then(Value::as_str).unwrap_or("");
    if a.status == 409 || code == "DUPLICATE_ERROR" || code == "IDEMPOTENCY_ERROR" {
        return Err(gw.duplicate(message));
    }
    Err(gw.refused(a.status, code, message))
}

pub(super) async fn create(gw: &Gateway, req: &CreatePayment) -> Result<Created, GatewayError> {
    let idem = [("idempotency-key", req.idempotency_key.as_str())];
    if req.method == PaymentMethod::Qris {
        let body = qris_body(req).map_err(|r| gw.invalid(r))?;
        let a = gw
            .call(
                reqwest::Method::POST,
                "/payment_requests",
                Body::Json(body),
                &idem,
            )
            .await?;
        check(gw, &a)?;
        let props = a.body.pointer("/payment_method/qr_code/channel_properties");
        let qr_string = props
            .and_then(|p| p.get("qr_string"))
            .and_then(Value::as_str)
            .ok_or_else(|| gw.malformed("a payment request without its qr_string"))?;
        return Ok(Created {
            provider_ref: str_of(&a.body, "id").ok_or_else(|| gw.malformed("no id"))?,
            instructions: Instructions::Qris {
                qr_string: Some(qr_string.to_string()),
                image_url: None,
            },
            expires_at_unix: props
                .and_then(|p| p.get("expires_at"))
                .and_then(Value::as_str)
                .and_then(|t| parse_time(t, 0)),
            raw: a.body,
        });
    }
    let body = invoice_body(req).map_err(|r| gw.invalid(r))?;
    let a = gw
        .call(
            reqwest::Method::POST,
            "/v2/invoices",
            Body::Json(body),
            &idem,
        )
        .await?;
    check(gw, &a)?;
    let b = &a.body;
    let url =
        str_of(b, "invoice_url").ok_or_else(|| gw.malformed("an invoice without invoice_url"))?;
    let link = Instructions::Link { url };
    let instructions = match req.method {
        PaymentMethod::Va => {
            let bank = req.bank.as_deref().unwrap_or_default().to_ascii_uppercase();
            b.get("available_banks")
                .and_then(Value::as_array)
                .and_then(|banks| banks.iter().find(|x| x["bank_code"] == bank.as_str()))
                .and_then(|x| x["bank_account_number"].as_str())
                .map_or(link, |n| Instructions::VirtualAccount {
                    bank: bank.clone(),
                    number: n.to_string(),
                })
        }
        PaymentMethod::Retail => b
            .get("available_retail_outlets")
            .and_then(Value::as_array)
            .and_then(|o| o.first())
            .and_then(|o| {
                Some((
                    o["retail_outlet_name"].as_str()?,
                    o["payment_code"].as_str()?,
                ))
            })
            .map_or(link, |(store, code)| Instructions::PayCode {
                store: store.to_string(),
                code: code.to_string(),
            }),
        _ => link,
    };
    Ok(Created {
        provider_ref: str_of(b, "id").ok_or_else(|| gw.malformed("an invoice without id"))?,
        instructions,
        expires_at_unix: str_of(b, "expiry_date").and_then(|t| parse_time(&t, 0)),
        raw: a.body,
    })
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// An invoice's status (PENDING | PAID | SETTLED | EXPIRED).
pub(super) fn invoice_status(s: &str) -> Option<GatewayStatus> {
    Some(match s {
        "PENDING" => GatewayStatus::Pending,
        "PAID" | "SETTLED" => GatewayStatus::Paid,
        "EXPIRED" => GatewayStatus::Expired,
        _ => return None,
    })
}

/// A payment request's (or its payment's) status.
pub(super) fn request_status(s: &str) -> Option<GatewayStatus> {
    Some(match s {
        "PENDING" | "REQUIRES_ACTION" | "AWAITING_CAPTURE" | "ACTIVE" => GatewayStatus::Pending,
        "SUCCEEDED" | "COMPLETED" | "PAID" => GatewayStatus::Paid,
        "FAILED" => GatewayStatus::Failed,
        "EXPIRED" => GatewayStatus::Expired,
        "VOIDED" | "CANCELED" | "CANCELLED" => GatewayStatus::Cancelled,
        _ => return None,
    })
}

pub(super) async fn status(
    gw: &Gateway,
    payment_id: &str,
    provider_ref: Option<&str>,
) -> Result<StatusReport, GatewayError> {
    let get = |path: String| async move {
        let a = gw
            .call(reqwest::Method::GET, &path, Body::None, &[])
            .await?;
        check(gw, &a)?;
        Ok::<Value, GatewayError>(a.body)
    };
    let (body, map): (Value, fn(&str) -> Option<GatewayStatus>) = match provider_ref {
        Some(r) if r.starts_with("pr-") => {
            (get(format!("/payment_requests/{r}")).await?, request_status)
        }
        Some(r) => (get(format!("/v2/invoices/{r}")).await?, invoice_status),
        None => {
            // The invoices with this external_id, newest last.
            let list = get(format!("/v2/invoices?external_id={payment_id}")).await?;
            let last = list
                .as_array()
                .and_then(|l| l.last())
                .cloned()
                .ok_or_else(|| {
                    gw.refused(
                        404,
                        "INVOICE_NOT_FOUND_ERROR",
                        "no invoice with this external_id",
                    )
                })?;
            (last, invoice_status)
        }
    };
    let text = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = map(text).ok_or_else(|| gw.malformed(format!("status {text:?}")))?;
    let currency = currency_of(body.get("currency"), Currency::IDR);
    let amount = money_of(body.get("paid_amount").or(body.get("amount")), currency);
    Ok(StatusReport {
        status,
        amount,
        provider_ref: str_of(&body, "id"),
        raw: body,
    })
}

/// The refund request's body for the invoice or payment request `reference`.
///
/// Verified from Xendit's API reference ("Refund a payment request", docs.xendit.co
/// `POST /refunds`) and xendit-php's `CreateRefund` model: `payment_request_id` or
/// `invoice_id`, `reference_id`, `amount` (number; omitted: the whole payment), `currency`,
/// `reason` one of FRAUDULENT, DUPLICATE, REQUESTED_BY_CUSTOMER, CANCELLATION, OTHERS,
/// `metadata`; the `idempotency-key` header (xendit-php's `createRefund($idempotency_key, …)`).
/// [UNVERIFIED against a sandbox] the answer's `status` values PENDING | SUCCEEDED | FAILED
/// (Xendit's QR refund guide says a refund answers PENDING, then a callback follows).
pub(super) fn refund_body(req: &RefundRequest, reference: &str) -> Result<Value, String> {
    let amount = req
        .amount
        .whole_units()
        .map_err(|e| format!("Xendit takes whole amounts: {e}"))?;
    let mut body = json!({
        "reference_id": req.idempotency_key,
        "amount": amount,
        "currency": req.amount.currency.as_str(),
        "reason": "REQUESTED_BY_CUSTOMER",
        "metadata": {
            "payment_id": req.payment_id,
            "reason": req.reason.chars().take(255).collect::<String>(),
        },
    });
    let key = if reference.starts_with("pr-") {
        "payment_request_id"
    } else {
        "invoice_id"
    };
    body[key] = json!(reference);
    Ok(body)
}

/// Whether an invoice paid by `payment_method` can be refunded through the API: not a bank
/// transfer (VA) nor a retail outlet payment (Xendit: "not all payment channels support
/// refunds"; VA and over-the-counter payments have no way back to the payer).
/// [UNVERIFIED] the exact list: cards, e-wallets, QR codes and pay-later are taken as
/// refundable, anything else is left to the gateway to refuse.
pub(super) fn invoice_refundable(payment_method: &str) -> bool {
    !matches!(
        payment_method,
        "BANK_TRANSFER" | "RETAIL_OUTLET" | "DIRECT_DEBIT"
    )
}

pub(super) async fn refund(
    gw: &Gateway,
    req: &RefundRequest,
) -> Result<RefundReport, GatewayError> {
    let reference = req.provider_ref.as_deref().ok_or(GatewayError::NeedsRef {
        gateway: gw.name.clone(),
    })?;
    if !reference.starts_with("pr-") {
        // An invoice: how it was paid decides, and only the invoice says it.
        let path = format!("/v2/invoices/{reference}");
        let a = gw
            .call(reqwest::Method::GET, &path, Body::None, &[])
            .await?;
        check(gw, &a)?;
        let paid_by = a
            .body
            .get("payment_method")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !invoice_refundable(paid_by) {
            return Err(GatewayError::NotRefundable {
                gateway: gw.name.clone(),
                reason: format!(
                    "this invoice was paid by {paid_by}, which Xendit cannot refund through the API: refund the customer by hand"
                ),
            });
        }
    }
    let body = refund_body(req, reference).map_err(|r| gw.invalid(r))?;
    let a = gw
        .call(
            reqwest::Method::POST,
            "/refunds",
            Body::Json(body),
            &[("idempotency-key", req.idempotency_key.as_str())],
        )
        .await?;
    check(gw, &a)?;
    let status = a.body.get("status").and_then(Value::as_str).unwrap_or("");
    let state = match status {
        "SUCCEEDED" => RefundState::Succeeded,
        "PENDING" | "" => RefundState::Pending,
        other => {
            return Err(gw.refused(a.status, "REFUND_FAILED", &format!("the refund is {other}")))
        }
    };
    Ok(RefundReport {
        provider_ref: str_of(&a.body, "id"),
        state,
        raw: a.body,
    })
}

/// Where a refund stands (Xendit's Refund object: `status` PENDING, SUCCEEDED or FAILED,
/// with `failure_code` when it failed).
pub(super) fn refund_settled(body: &Value) -> RefundSettled {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    match s("status") {
        "SUCCEEDED" => RefundSettled::Succeeded,
        "FAILED" => RefundSettled::Failed(match s("failure_code") {
            "" => "the refund failed".to_string(),
            code => format!("the refund failed: {code}"),
        }),
        _ => RefundSettled::Pending,
    }
}

/// `GET /refunds/{id}`.
pub(super) async fn refund_status(gw: &Gateway, id: &str) -> Result<RefundSettled, GatewayError> {
    let a = gw
        .call(
            reqwest::Method::GET,
            &format!("/refunds/{id}"),
            Body::None,
            &[],
        )
        .await?;
    check(gw, &a)?;
    Ok(refund_settled(&a.body))
}

pub(super) fn callback(
    token: &SecretString,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<Callback, CallbackError> {
    let given = headers
        .get("x-callback-token")
        .ok_or(CallbackError::BadToken)?
        .as_bytes();
    if !bool::from(given.ct_eq(token.expose_secret().as_bytes())) {
        return Err(CallbackError::BadToken);
    }
    let raw: Value =
        serde_json::from_slice(body).map_err(|_| CallbackError::Malformed("not JSON".into()))?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let (Some(event), Some(data)) = (s(&raw, "event"), raw.get("data")) {
        // A Payment Request's (QRIS) payment event.
        let text = s(data, "status").unwrap_or_default();
        let status = request_status(&text)
            .ok_or_else(|| CallbackError::Malformed(format!("status {text:?}")))?;
        let currency = currency_of(data.get("currency"), Currency::IDR);
        let amount = money_of(data.get("amount"), currency);
        let id = s(data, "id").unwrap_or_default();
        let event_id = match headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
            Some(w) => format!("xendit:{w}"),
            None => event_id("xendit", &[&event, &id, &text]),
        };
        return Ok(Callback {
            payment_id: s(data, "reference_id"),
            provider_ref: s(data, "payment_request_id").or(Some(id)),
            status,
            amount,
            event_id,
            raw,
        });
    }
    // An invoice callback.
    let text = s(&raw, "status").ok_or_else(|| CallbackError::Malformed("no status".into()))?;
    let status = invoice_status(&text)
        .ok_or_else(|| CallbackError::Malformed(format!("status {text:?}")))?;
    let currency = currency_of(raw.get("currency"), Currency::IDR);
    let amount_v = raw.get("paid_amount").or(raw.get("amount"));
    let amount = money_of(amount_v, currency);
    let id = s(&raw, "id").ok_or_else(|| CallbackError::Malformed("no id".into()))?;
    let amount_text = amount.map(|m| m.plain()).unwrap_or_default();
    Ok(Callback {
        payment_id: s(&raw, "external_id"),
        event_id: event_id("xendit", &[&id, &text, &amount_text]),
        provider_ref: Some(id),
        status,
        amount,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_object_says_where_it_stands() {
        assert_eq!(
            refund_settled(&json!({"status": "SUCCEEDED"})),
            RefundSettled::Succeeded
        );
        assert_eq!(
            refund_settled(&json!({"status": "FAILED", "failure_code": "INSUFFICIENT_BALANCE"})),
            RefundSettled::Failed("the refund failed: INSUFFICIENT_BALANCE".into())
        );
        assert_eq!(
            refund_settled(&json!({"status": "PENDING"})),
            RefundSettled::Pending
        );
    }
    use crate::domain::Money;
    use crate::payments::Customer;

    fn req(method: PaymentMethod, amount: &str) -> CreatePayment {
        CreatePayment {
            payment_id: "PAY-1".into(),
            idempotency_key: "k".into(),
            amount: Money::parse(amount, Currency::IDR).unwrap(),
            method,
            bank: Some("bca".into()),
            store: None,
            description: "Order 1".into(),
            items: vec![],
            customer: Customer {
                name: "Budi".into(),
                email: None,
                phone: "6281234567890".into(),
            },
            expires_at_unix: 1_800_000_000,
            now_unix: 1_799_996_400,
            callback_url: None,
            return_url: None,
        }
    }

    #[test]
    fn amounts_are_whole_rupiah_and_channels_are_limited() {
        let b = invoice_body(&req(PaymentMethod::Va, "150000")).unwrap();
        assert_eq!(b["amount"], 150000);
        assert_eq!(b["payment_methods"], json!(["BCA"]));
        assert_eq!(b["invoice_duration"], 3600);
        assert_eq!(b["customer"]["mobile_number"], "+6281234567890");
        assert!(invoice_body(&req(PaymentMethod::Va, "150000.5")).is_err());
        assert!(qris_body(&req(PaymentMethod::Qris, "0.5")).is_err());
        let q = qris_body(&req(PaymentMethod::Qris, "1000")).unwrap();
        assert_eq!(
            q["payment_method"]["qr_code"]["channel_properties"]["expires_at"],
            "2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn a_refund_names_its_invoice_or_payment_request() {
        let r = RefundRequest {
            payment_id: "PAY-1".into(),
            provider_ref: Some("inv-1".into()),
            method: PaymentMethod::Link,
            amount: Money::parse("20000", Currency::IDR).unwrap(),
            reason: "Out of stock".into(),
            idempotency_key: "PAY-1-k1".into(),
        };
        let b = refund_body(&r, "inv-1").unwrap();
        assert_eq!(b["invoice_id"], "inv-1");
        assert_eq!(b["amount"], 20000);
        assert_eq!(b["currency"], "IDR");
        assert_eq!(b["reason"], "REQUESTED_BY_CUSTOMER");
        assert_eq!(b["metadata"]["reason"], "Out of stock");
        assert!(b.get("payment_request_id").is_none());
        let q = refund_body(&r, "pr-9").unwrap();
        assert_eq!(q["payment_request_id"], "pr-9");
        assert!(q.get("invoice_id").is_none());
        assert!(!invoice_refundable("BANK_TRANSFER"));
        assert!(!invoice_refundable("RETAIL_OUTLET"));
        assert!(invoice_refundable("EWALLET"));
        assert!(invoice_refundable("CREDIT_CARD"));
    }

    #[test]
    fn statuses_map() {
        assert_eq!(invoice_status("SETTLED"), Some(GatewayStatus::Paid));
        assert_eq!(invoice_status("PAID"), Some(GatewayStatus::Paid));
        assert_eq!(invoice_status("EXPIRED"), Some(GatewayStatus::Expired));
        assert_eq!(request_status("SUCCEEDED"), Some(GatewayStatus::Paid));
        assert_eq!(request_status("FAILED"), Some(GatewayStatus::Failed));
        assert_eq!(request_status("?"), None);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_token_is_checked() {
        let token = SecretString::from("tok-123");
        let body = json!({"id": "inv-1", "external_id": "PAY-1", "status": "PAID", "paid_amount": 1000, "currency": "IDR"}).to_string();
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(
            callback(&token, &h, body.as_bytes()),
            Err(CallbackError::BadToken)
        );
        h.insert("x-callback-token", "tok-12".parse().unwrap());
        assert_eq!(
            callback(&token, &h, body.as_bytes()),
            Err(CallbackError::BadToken)
        );
        h.insert("x-callback-token", "tok-123".parse().unwrap());
        let cb = callback(&token, &h, body.as_bytes()).unwrap();
        assert_eq!(cb.status, GatewayStatus::Paid);
        assert_eq!(cb.payment_id.as_deref(), Some("PAY-1"));
        assert_eq!(cb.amount, Money::parse("1000", Currency::IDR).ok());
    }
}
