//! Midtrans Core API: `POST /v2/charge`, `GET /v2/{order_id}/status`, notifications signed
//! with `signature_key`.
//!
//! Amounts are whole rupiah and Σ price × quantity of `item_details` must equal
//! `gross_amount`: when the items do not add up (a voucher, shipping), one line carries the
//! difference ("Discount" with a negative price, or "Other charges"). Midtrans answers many
//! errors with HTTP 200 and its code in `status_code`; that code decides. A repeated
//! `order_id` is its `406`: [`GatewayError::Duplicate`].
//!
//! Refunds: `POST /v2/{order_id}/refund` with `refund_key`, `amount`, `reason` (see
//! [`refund_body`]); only QRIS among the methods here (see [`super::refund_support`]).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::client::{currency_of, event_id, money_of, parse_time, split_name, Answer, Body, WIB};
use super::{
    Callback, CallbackError, CreatePayment, Created, Gateway, GatewayError, GatewayStatus,
    Instructions, RefundReport, RefundRequest, RefundState, StatusReport,
};
use crate::domain::{Currency, PaymentMethod};

const NAME_MAX: usize = 50;

/// The charge request, or why it cannot be made.
pub(super) fn charge_body(req: &CreatePayment, callback: Option<&str>) -> Result<Value, String> {
    let _ = callback; // sent as a header, see `create`
    let whole = |m: &crate::domain::Money| {
        m.whole_units()
            .map_err(|e| format!("Midtrans takes whole amounts: {e}"))
    };
    let gross = whole(&req.amount)?;
    let mut items = Vec::new();
    let mut sum: i64 = 0;
    for (i, it) in req.items.iter().enumerate() {
        let price = whole(&it.unit_price)?;
        sum = price
            .checked_mul(i64::from(it.quantity))
            .and_then(|x| x.checked_add(sum))
            .ok_or("the items' total is too large")?;
        items.push(json!({
            "id": format!("item-{}", i + 1),
            "name": it.name.chars().take(NAME_MAX).collect::<String>(),
            "price": price,
            "quantity": it.quantity,
        }));
    }
    if !items.is_empty() && sum != gross {
        let diff = gross - sum;
        items.push(json!({
            "id": "adjustment",
            "name": if diff < 0 { "Discount" } else { "Other charges" },
            "price": diff,
            "quantity": 1,
        }));
    }
    let (first, last) = split_name(&req.customer.name);
    let minutes = ((req.expires_at_unix - req.now_unix).max(60) + 59) / 60;
    let mut body = json!({
        "transaction_details": {"order_id": req.payment_id, "gross_amount": gross},
        "customer_details": {
            "first_name": first, "last_name": last,
            "phone": req.customer.phone,
        },
        "custom_expiry": {"expiry_duration": minutes, "unit": "minute"},
    });
    if let Some(email) = &req.customer.email {
        body["customer_details"]["email"] = json!(email);
    }
    if !items.is_empty() {
        body["item_details"] = json!(items);
    }
    match req.method {
        PaymentMethod::Va | PaymentMethod::BankTransfer => {
            let bank = req
                .bank
                .as_deref()
                .map(str::to_ascii_lowercase)
                .ok_or("a VA needs a bank (bca, bni, bri, mandiri, permata, cimb)")?;
            if bank == "mandiri" {
                body["payment_type"] = json!("echannel");
                body["echannel"] = json!({
                    "bill_info1": "Payment:",
                    "bill_info2": req.description.chars().take(NAME_MAX).collect::<String>(),
                });
            } else {
                body["payment_type"] = json!("bank_transfer");
                body["bank_transfer"] = json!({"bank": bank});
            }
        }
        PaymentMethod::Qris => body["payment_type"] = json!("qris"),
        PaymentMethod::Retail => {
            let store = req
                .store
                .as_deref()
                .unwrap_or("indomaret")
                .to_ascii_lowercase();
            body["payment_type"] = json!("cstore");
            body["cstore"] = json!({
                "store": store,
                "message": req.description.chars().take(NAME_MAX).collect::<String>(),
            });
        }
        other => return Err(format!("Midtrans does not take {other}")),
    }
    Ok(body)
}

/// Midtrans' code: `status_code` in the body when there is one, else the HTTP status.
fn code_of(a: &Answer) -> u16 {
    a.body
        .get("status_code")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(a.status)
}

fn check(gw: &Gateway, a: &Answer) -> Result<(), GatewayError> {
    let code = code_of(a);
    let message = a
        .body
        .get("status_message")
        .and_then(Value::as_str)
        .unwrap_or("");
    match code {
        200..=299 => Ok(()),
        406 => Err(gw.duplicate(message)),
        500..=599 => Err(GatewayError::Unavailable {
            gateway: gw.name.clone(),
            reason: format!("Midtrans {code}: {}", gw.scrub(message)),
        }),
        _ => Err(gw.refused(code, &code.to_string(), message)),
    }
}

pub(super) async fn create(gw: &Gateway, req: &CreatePayment) -> Result<Created, GatewayError> {
    let body = charge_body(req, None).map_err(|r| gw.invalid(r))?;
    let mut headers = Vec::new();
    if let Some(url) = gw.callback_for(req) {
        // Per-transaction notification URL, instead of the dashboard's.
        headers.push(("X-Override-Notification", url));
    }
    let a = gw
        .call(
            reqwest::Method::POST,
            "/v2/charge",
            Body::Json(body),
            &headers,
        )
        .await?;
    check(gw, &a)?;
    let b = &a.body;
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let instructions = if let Some(va) = b.pointer("/va_numbers/0") {
        Instructions::VirtualAccount {
            bank: va["bank"].as_str().unwrap_or_default().to_string(),
            number: va["va_number"].as_str().unwrap_or_default().to_string(),
        }
    } else if let Some(number) = s("permata_va_number") {
        Instructions::VirtualAccount {
            bank: "permata".into(),
            number,
        }
    } else if let (Some(biller_code), Some(bill_key)) = (s("biller_code"), s("bill_key")) {
        Instructions::BillPayment {
            bank: "mandiri".into(),
            biller_code,
            bill_key,
        }
    } else if let Some(code) = s("payment_code") {
        Instructions::PayCode {
            store: s("store").unwrap_or_else(|| req.store.clone().unwrap_or_default()),
            code,
        }
    } else if req.method == PaymentMethod::Qris {
        let image_url = b
            .get("actions")
            .and_then(Value::as_array)
            .and_then(|acts| {
                acts.iter()
                    .find(|a| a["name"] == "generate-qr-code")
                    .or(acts.first())
            })
            .and_then(|a| a["url"].as_str())
            .map(str::to_string);
        Instructions::Qris {
            qr_string: s("qr_string"),
            image_url,
        }
    } else {
        return Err(gw.malformed("a charge without a VA number, bill key, pay code or QR"));
    };
    if matches!(
        &instructions,
        Instructions::Qris {
            qr_string: None,
            image_url: None
        }
    ) || matches!(&instructions, Instructions::VirtualAccount { number, .. } if number.is_empty())
    {
        return Err(gw.malformed("a charge without its VA number or QR"));
    }
    Ok(Created {
        provider_ref: s("transaction_id").unwrap_or_else(|| req.payment_id.clone()),
        instructions,
        expires_at_unix: s("expiry_time").and_then(|t| parse_time(&t, WIB)),
        raw: a.body,
    })
}

/// `transaction_status` (and `fraud_status` for a card capture) as a status.
pub(super) fn map_status(transaction: &str, fraud: Option<&str>) -> Option<GatewayStatus> {
    Some(match transaction {
        "settlement" => GatewayStatus::Paid,
        "capture" => match fraud {
            Some("challenge") => GatewayStatus::Pending,
            Some("deny") => GatewayStatus::Failed,
            _ => GatewayStatus::Paid,
        },
        "pending" | "authorize" => GatewayStatus::Pending,
        "deny" | "failure" => GatewayStatus::Failed,
        "cancel" => GatewayStatus::Cancelled,
        "expire" => GatewayStatus::Expired,
        // A partial refund leaves the payment paid (the rest was kept); only the whole
        // amount back is a refunded payment.
        "partial_refund" => GatewayStatus::Paid,
        "refund" | "chargeback" | "partial_chargeback" => GatewayStatus::Refunded,
        _ => return None,
    })
}

fn status_of(b: &Value) -> Option<GatewayStatus> {
    map_status(
        b.get("transaction_status")?.as_str()?,
        b.get("fraud_status").and_then(Value::as_str),
    )
}

pub(super) async fn status(gw: &Gateway, payment_id: &str) -> Result<StatusReport, GatewayError> {
    let path = format!("/v2/{payment_id}/status");
    let a = gw
        .call(reqwest::Method::GET, &path, Body::None, &[])
        .await?;
    check(gw, &a)?;
    let status = status_of(&a.body).ok_or_else(|| gw.malformed("no known transaction_status"))?;
    let currency = currency_of(a.body.get("currency"), Currency::IDR);
    Ok(StatusReport {
        status,
        amount: money_of(a.body.get("gross_amount"), currency),
        provider_ref: a
            .body
            .get("transaction_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        raw: a.body,
    })
}

/// The refund request's body.
///
/// Verified from Midtrans' API reference ("Refund Transaction", docs.midtrans.com/reference/
/// refund-transaction and refund-transactions-card): `POST BASE_URL/v2/{order_id OR
/// transaction_id}/refund`, JSON `refund_key` (merchant refund id of alphabets, numbers, `-`
/// and `_`: the same key retries the same refund, a new one makes a new refund), `amount`
/// (Long; omitted: the whole transaction), `reason` (String(255)); the answer has
/// `status_code` "200", `refund_chargeback_id`, `refund_amount`, `transaction_status`
/// (`refund` or `partial_refund`). Refundable: settled transactions paid by credit_card,
/// gopay, shopeepay, dana, ovo, QRIS, kredivo, akulaku (not bank_transfer, echannel, cstore).
pub(super) fn refund_body(req: &RefundRequest) -> Result<Value, String> {
    let amount = req
        .amount
        .whole_units()
        .map_err(|e| format!("Midtrans takes whole amounts: {e}"))?;
    Ok(json!({
        "refund_key": req.idempotency_key,
        "amount": amount,
        "reason": req.reason.chars().take(255).collect::<String>(),
    }))
}

pub(super) async fn refund(
    gw: &Gateway,
    req: &RefundRequest,
) -> Result<RefundReport, GatewayError> {
    let body = refund_body(req).map_err(|r| gw.invalid(r))?;
    let path = format!("/v2/{}/refund", req.payment_id);
    let a = gw
        .call(reqwest::Method::POST, &path, Body::Json(body), &[])
        .await?;
    check(gw, &a)?;
    let id = match a.body.get("refund_chargeback_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(RefundReport {
        provider_ref: id,
        state: RefundState::Succeeded,
        raw: a.body,
    })
}

/// SHA-512 hex of order_id + status_code + gross_amount + server key, as Midtrans signs.
pub(super) fn signature(
    order_id: &str,
    status_code: &str,
    gross_amount: &str,
    key: &str,
) -> String {
    let mut h = Sha512::new();
    for part in [order_id, status_code, gross_amount, key] {
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(super) fn callback(server_key: &SecretString, body: &[u8]) -> Result<Callback, CallbackError> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|_| CallbackError::Malformed("not JSON".into()))?;
    let field = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::Malformed(format!("no {k}")))
    };
    let (order_id, code, gross) = (
        field("order_id")?,
        field("status_code")?,
        field("gross_amount")?,
    );
    let given = field("signature_key").map_err(|_| CallbackError::BadSignature)?;
    let want = signature(order_id, code, gross, server_key.expose_secret());
    if !bool::from(want.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes())) {
        return Err(CallbackError::BadSignature);
    }
    let transaction = field("transaction_status")?;
    let status = status_of(&raw)
        .ok_or_else(|| CallbackError::Malformed(format!("transaction_status {transaction}")))?;
    let fraud = raw
        .get("fraud_status")
        .and_then(Value::as_str)
        .unwrap_or("");
    let transaction_id = raw.get("transaction_id").and_then(Value::as_str);
    Ok(Callback {
        payment_id: Some(order_id.to_string()),
        provider_ref: transaction_id.map(str::to_string),
        status,
        amount: money_of(
            raw.get("gross_amount"),
            currency_of(raw.get("currency"), Currency::IDR),
        ),
        event_id: event_id(
            "midtrans",
            &[
                order_id,
                transaction,
                fraud,
                code,
                gross,
                transaction_id.unwrap_or(""),
            ],
        ),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;
    use crate::payments::{Customer, LineItem};

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    #[test]
    fn a_refund_is_whole_rupiah_with_its_key() {
        let req = RefundRequest {
            payment_id: "PAY-00000001".into(),
            provider_ref: None,
            method: PaymentMethod::Qris,
            amount: idr("20000"),
            reason: "Out of stock".into(),
            idempotency_key: "PAY-00000001-k1".into(),
        };
        let b = refund_body(&req).unwrap();
        assert_eq!(
            b,
            json!({"refund_key": "PAY-00000001-k1", "amount": 20000, "reason": "Out of stock"})
        );
        let half = RefundRequest {
            amount: idr("0.5"),
            ..req
        };
        assert!(refund_body(&half).is_err());
    }

    fn req(method: PaymentMethod, amount: &str, items: Vec<LineItem>) -> CreatePayment {
        CreatePayment {
            payment_id: "PAY-1".into(),
            idempotency_key: "k".into(),
            amount: idr(amount),
            method,
            bank: Some("BRI".into()),
            store: None,
            description: "Order 1".into(),
            items,
            customer: Customer {
                name: "Budi Santoso".into(),
                email: None,
                phone: "6281234567890".into(),
            },
            expires_at_unix: 3600,
            now_unix: 0,
            callback_url: None,
            return_url: None,
        }
    }

    #[test]
    fn items_sum_to_the_gross_amount_with_an_adjustment_line() {
        let items = vec![LineItem {
            name: "Kopi".into(),
            quantity: 2,
            unit_price: idr("25000"),
        }];
        let b = charge_body(&req(PaymentMethod::Va, "45000", items), None).unwrap();
        assert_eq!(b["transaction_details"]["gross_amount"], 45000);
        assert_eq!(b["bank_transfer"]["bank"], "bri");
        let lines = b["item_details"].as_array().unwrap();
        let sum: i64 = lines
            .iter()
            .map(|l| l["price"].as_i64().unwrap() * l["quantity"].as_i64().unwrap())
            .sum();
        assert_eq!(sum, 45000);
        assert_eq!(lines[1]["name"], "Discount");
        assert_eq!(b["custom_expiry"]["expiry_duration"], 60);
    }

    #[test]
    fn fractions_are_refused_and_mandiri_is_a_bill_payment() {
        assert!(charge_body(&req(PaymentMethod::Va, "100.50", vec![]), None).is_err());
        let mut r = req(PaymentMethod::Va, "10000", vec![]);
        r.bank = Some("mandiri".into());
        assert_eq!(charge_body(&r, None).unwrap()["payment_type"], "echannel");
        r.bank = None;
        assert!(charge_body(&r, None).is_err());
        let r = req(PaymentMethod::Retail, "10000", vec![]);
        assert_eq!(
            charge_body(&r, None).unwrap()["cstore"]["store"],
            "indomaret"
        );
    }

    #[test]
    fn statuses_map() {
        use GatewayStatus as S;
        assert_eq!(map_status("settlement", None), Some(S::Paid));
        assert_eq!(map_status("capture", Some("accept")), Some(S::Paid));
        assert_eq!(map_status("capture", Some("challenge")), Some(S::Pending));
        assert_eq!(map_status("deny", None), Some(S::Failed));
        assert_eq!(map_status("expire", None), Some(S::Expired));
        assert_eq!(map_status("cancel", None), Some(S::Cancelled));
        assert_eq!(map_status("partial_refund", None), Some(S::Paid));
        assert_eq!(map_status("chargeback", None), Some(S::Refunded));
        assert_eq!(map_status("weird", None), None);
    }

    #[test]
    fn a_notification_is_checked_by_its_documented_signature() {
        let key = "SB-Mid-server-TEST";
        // The documented formula, computed here with sha2 directly.
        let mut h = Sha512::new();
        h.update(b"PAY-1200100000.00SB-Mid-server-TEST");
        let sig = hex::encode(h.finalize());
        let body = json!({
            "order_id": "PAY-1", "status_code": "200", "gross_amount": "100000.00",
            "signature_key": sig, "transaction_status": "settlement",
            "transaction_id": "t-1", "currency": "IDR",
        });
        let secret = SecretString::from(key);
        let cb = callback(&secret, body.to_string().as_bytes()).unwrap();
        assert_eq!(cb.status, GatewayStatus::Paid);
        assert_eq!(cb.amount, Some(idr("100000")));
        assert_eq!(cb.payment_id.as_deref(), Some("PAY-1"));
        let again = callback(&secret, body.to_string().as_bytes()).unwrap();
        assert_eq!(cb.event_id, again.event_id);
        // The amount as received matters: "100000" is another text, another signature.
        let mut changed = body.clone();
        changed["gross_amount"] = json!("100000");
        assert_eq!(
            callback(&secret, changed.to_string().as_bytes()),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            callback(&SecretString::from("other"), body.to_string().as_bytes()),
            Err(CallbackError::BadSignature)
        );
        assert!(matches!(
            callback(&secret, b"{"),
            Err(CallbackError::Malformed(_))
        ));
    }
}
