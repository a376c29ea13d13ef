//! Finpay (Finnet): `POST /pg/payment/card/initiate`, `GET /pg/payment/card/check/{orderId}`.
//!
//! The order id is ours (the payment id): Finpay has no idempotency key, and a repeated id
//! is refused; that refusal is [`GatewayError::Duplicate`] ([UNVERIFIED] its exact code:
//! taken as any `409…` response code or a message saying the order exists). Amounts are
//! strings of whole rupiah. Its answers carry a `responseCode` ("2000000" is success) whose
//! first three digits are an HTTP status.
//!
//! Callbacks are parsed, not verified: the signature is an HMAC-SHA512 of PHP's
//! `json_encode` of the fields, which cannot be reproduced byte-exactly from Rust. The caller
//! confirms each with [`super::Gateway::status`], which Finpay calls the most secure method.
//!
//! Checked against Finpay's own reference (docs.finpay.id, read 2026-12-08): the initiate
//! endpoint and its `sourceOfFunds.type` values (`finpaycode` is its payment code for
//! Indomaret and Alfamart, `qris`, the `va…` banks), the status check's
//! `data.result.payment.{status, amount}`, the callback's fields (`order.id`, `order.amount`,
//! `result.payment.status`, a 128-hex `signature`) and the `responseCode` "2000000" answer.

use serde_json::{json, Value};

use super::client::{
    currency_of, e164, event_id, items_total, money_of, parse_time, split_name, Answer, Body, WIB,
};
use super::{
    Callback, CallbackError, CreatePayment, Created, Gateway, GatewayError, GatewayStatus,
    Instructions, StatusReport,
};
use crate::domain::{Currency, PaymentMethod};

/// `sourceOfFunds.type` for a method (and bank); None: Finpay's page offers every method.
pub(super) fn source_of_funds(req: &CreatePayment) -> Result<Option<String>, String> {
    Ok(match req.method {
        PaymentMethod::Va => {
            let bank = req
                .bank
                .as_deref()
                .ok_or("a VA needs a bank (bca, mandiri, bni, bri, permata, ...)")?;
            let bank: String = bank
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            Some(format!("va{bank}"))
        }
        PaymentMethod::Qris => Some("qris".into()),
        // Indomaret and Alfamart both take a finpaycode.
        PaymentMethod::Retail => Some("finpaycode".into()),
        PaymentMethod::Link => None,
        other => return Err(format!("Finpay does not take {other}")),
    })
}

/// The initiate request, or why it cannot be made.
pub(super) fn initiate_body(req: &CreatePayment, callback: Option<&str>) -> Result<Value, String> {
    let whole = |m: &crate::domain::Money| {
        m.whole_units()
            .map(|n| n.to_string())
            .map_err(|e| format!("Finpay takes whole amounts: {e}"))
    };
    let amount = whole(&req.amount)?;
    // Items only when they add up to the amount; otherwise the description as one line.
    let items: Vec<Value> = if !req.items.is_empty()
        && items_total(&req.items, &req.amount) == Some(req.amount)
    {
        req.items
            .iter()
            .map(|i| {
                Ok(json!({"name": i.name, "quantity": i.quantity.to_string(), "unitPrice": whole(&i.unit_price)?}))
            })
            .collect::<Result<_, String>>()?
    } else {
        vec![json!({"name": req.description, "quantity": "1", "unitPrice": amount})]
    };
    let (first, last) = split_name(&req.customer.name);
    let minutes = ((req.expires_at_unix - req.now_unix).max(60) + 59) / 60;
    let mut body = json!({
        "customer": {
            "email": req.customer.email.clone().unwrap_or_default(),
            "firstName": first, "lastName": last,
            "mobilePhone": e164(&req.customer.phone),
        },
        "order": {
            "id": req.payment_id, "amount": amount, "currency": req.amount.currency.as_str(),
            "description": req.description, "timeout": minutes, "item": items,
        },
        "url": {},
    });
    if let Some(url) = callback {
        body["url"]["callbackUrl"] = json!(url);
    }
    if let Some(url) = &req.return_url {
        body["url"]["successUrl"] = json!(url);
        body["url"]["failUrl"] = json!(url);
    }
    if let Some(t) = source_of_funds(req)? {
        body["sourceOfFunds"] = json!({"type": t});
    }
    Ok(body)
}

fn check(gw: &Gateway, a: &Answer) -> Result<(), GatewayError> {
    let code = a
        .body
        .get("responseCode")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = a
        .body
        .get("responseMessage")
        .and_then(Value::as_str)
        .unwrap_or("");
    let class: u16 = code
        .get(..3)
        .and_then(|c| c.parse().ok())
        .unwrap_or(a.status);
    if (200..300).contains(&a.status) && (200..300).contains(&class) {
        return Ok(());
    }
    let lower = message.to_ascii_lowercase();
    if class == 409 || lower.contains("duplicate") || lower.contains("already") {
        return Err(gw.duplicate(message));
    }
    if class >= 500 {
        return Err(GatewayError::Unavailable {
            gateway: gw.name.clone(),
            reason: format!("Finpay {code}: {}", gw.scrub(message)),
        });
    }
    Err(gw.refused(class, code, message))
}

pub(super) async fn create(gw: &Gateway, req: &CreatePayment) -> Result<Created, GatewayError> {
    let body = initiate_body(req, gw.callback_for(req)).map_err(|r| gw.invalid(r))?;
    let a = gw
        .call(
            reqwest::Method::POST,
            "/pg/payment/card/initiate",
            Body::Json(body),
            &[],
        )
        .await?;
    check(gw, &a)?;
    let s = |k: &str| a.body.get(k).and_then(Value::as_str).map(str::to_string);
    let link = s("redirecturl").map(|url| Instructions::Link { url });
    let instructions = match (req.method, s("paymentCode")) {
        (PaymentMethod::Va, Some(number)) => Some(Instructions::VirtualAccount {
            bank: req.bank.clone().unwrap_or_default().to_ascii_lowercase(),
            number,
        }),
        (PaymentMethod::Retail, Some(code)) => Some(Instructions::PayCode {
            store: req
                .store
                .clone()
                .unwrap_or_else(|| "Indomaret/Alfamart".into()),
            code,
        }),
        // [UNVERIFIED] where a QRIS answer puts its string: `stringQr`/`qrString`, else
        // `paymentCode`; its image at `imageurl`.
        (PaymentMethod::Qris, code) => {
            let qr_string = s("stringQr").or(s("qrString")).or(code);
            let image_url = s("imageurl");
            (qr_string.is_some() || image_url.is_some()).then_some(Instructions::Qris {
                qr_string,
                image_url,
            })
        }
        _ => None,
    }
    .or(link)
    .ok_or_else(|| gw.malformed("no paymentCode, QR or redirecturl"))?;
    Ok(Created {
        provider_ref: req.payment_id.clone(),
        instructions,
        expires_at_unix: s("expiryLink").and_then(|t| parse_time(&t, WIB)),
        raw: a.body,
    })
}

/// Finpay's payment status.
pub(super) fn map_status(s: &str) -> Option<GatewayStatus> {
    Some(match s.to_ascii_uppercase().as_str() {
        "PAID" | "CAPTURED" | "SUCCESS" | "SETTLED" | "SETTLEMENT" => GatewayStatus::Paid,
        // A new transaction's status check answers REQUEST_INITIATED (pending, not failed),
        // as an integration verified against Finpay's sandbox reports.
        "PENDING" | "WAITING" | "AUTHORIZED" | "INITIATED" | "REQUEST_INITIATED" | "PROCESSING" => {
            GatewayStatus::Pending
        }
        "CANCELLED" | "CANCELED" | "VOID" => GatewayStatus::Cancelled,
        "FAILURE" | "FAILED" | "DENIED" | "REJECTED" => GatewayStatus::Failed,
        "EXPIRED" | "EXPIRE" => GatewayStatus::Expired,
        "REFUNDED" | "REFUND" => GatewayStatus::Refunded,
        _ => return None,
    })
}

pub(super) async fn status(gw: &Gateway, payment_id: &str) -> Result<StatusReport, GatewayError> {
    let path = format!("/pg/payment/card/check/{payment_id}");
    let a = gw
        .call(reqwest::Method::GET, &path, Body::None, &[])
        .await?;
    check(gw, &a)?;
    let data = a.body.get("data").cloned().unwrap_or(Value::Null);
    let text = data
        .pointer("/result/payment/status")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = map_status(text).ok_or_else(|| gw.malformed(format!("status {text:?}")))?;
    let currency = currency_of(data.pointer("/order/currency"), Currency::IDR);
    let amount = money_of(
        data.pointer("/result/payment/amount")
            .or(data.pointer("/order/amount")),
        currency,
    );
    Ok(StatusReport {
        status,
        amount,
        provider_ref: data
            .pointer("/order/reference")
            .and_then(Value::as_str)
            .map(str::to_string),
        raw: a.body,
    })
}

pub(super) fn callback(body: &[u8]) -> Result<Callback, CallbackError> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|_| CallbackError::Malformed("not JSON".into()))?;
    let order_id = raw
        .pointer("/order/id")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::Malformed("no order.id".into()))?
        .to_string();
    let text = raw
        .pointer("/result/payment/status")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status =
        map_status(text).ok_or_else(|| CallbackError::Malformed(format!("status {text:?}")))?;
    let currency = currency_of(raw.pointer("/order/currency"), Currency::IDR);
    let amount = money_of(
        raw.pointer("/result/payment/amount")
            .or(raw.pointer("/order/amount")),
        currency,
    );
    let reference = raw
        .pointer("/order/reference")
        .and_then(Value::as_str)
        .map(str::to_string);
    let amount_text = amount.map(|m| m.plain()).unwrap_or_default();
    Ok(Callback {
        event_id: event_id(
            "finpay",
            &[&order_id, &text.to_ascii_uppercase(), &amount_text],
        ),
        payment_id: Some(order_id),
        provider_ref: reference,
        status,
        amount,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;
    use crate::payments::{Customer, LineItem};

    fn req(method: PaymentMethod, amount: &str) -> CreatePayment {
        CreatePayment {
            payment_id: "PAY-1".into(),
            idempotency_key: "k".into(),
            amount: Money::parse(amount, Currency::IDR).unwrap(),
            method,
            bank: Some("BCA".into()),
            store: None,
            description: "Order 1".into(),
            items: vec![LineItem {
                name: "Kopi".into(),
                quantity: 2,
                unit_price: Money::parse("500", Currency::IDR).unwrap(),
            }],
            customer: Customer {
                name: "Budi".into(),
                email: None,
                phone: "6281234567890".into(),
            },
            expires_at_unix: 1440 * 60,
            now_unix: 0,
            callback_url: None,
            return_url: None,
        }
    }

    #[test]
    fn the_body_has_string_amounts_and_the_source_of_funds() {
        let b = initiate_body(&req(PaymentMethod::Va, "1000"), Some("https://x/cb")).unwrap();
        assert_eq!(b["order"]["amount"], "1000");
        assert_eq!(b["order"]["timeout"], 1440);
        assert_eq!(b["order"]["item"][0]["unitPrice"], "500");
        assert_eq!(b["order"]["item"][0]["quantity"], "2");
        assert_eq!(b["sourceOfFunds"]["type"], "vabca");
        assert_eq!(b["url"]["callbackUrl"], "https://x/cb");
        assert_eq!(b["customer"]["mobilePhone"], "+6281234567890");
        // Items that do not add up: one line of the whole amount.
        let b = initiate_body(&req(PaymentMethod::Retail, "900"), None).unwrap();
        assert_eq!(b["order"]["item"][0]["unitPrice"], "900");
        assert_eq!(b["sourceOfFunds"]["type"], "finpaycode");
        assert!(
            initiate_body(&req(PaymentMethod::Link, "1000"), None).unwrap()["sourceOfFunds"]
                .is_null()
        );
        assert!(initiate_body(&req(PaymentMethod::Qris, "999.5"), None).is_err());
    }

    #[test]
    fn statuses_map_and_callbacks_parse() {
        assert_eq!(map_status("CAPTURED"), Some(GatewayStatus::Paid));
        assert_eq!(map_status("PAID"), Some(GatewayStatus::Paid));
        assert_eq!(map_status("SETTLEMENT"), Some(GatewayStatus::Paid));
        assert_eq!(
            map_status("REQUEST_INITIATED"),
            Some(GatewayStatus::Pending)
        );
        assert_eq!(map_status("FAILURE"), Some(GatewayStatus::Failed));
        assert_eq!(map_status("REFUNDED"), Some(GatewayStatus::Refunded));
        assert_eq!(map_status("??"), None);
        let body = br#"{"customer":{"id":"c"},"order":{"id":"PAY-1","reference":"R1","amount":1000,"currency":"IDR"},"meta":{"data":null},"result":{"payment":{"amount":1000,"status":"CAPTURED","statusDesc":null}},"signature":"00"}"#;
        let cb = callback(body).unwrap();
        assert_eq!(cb.status, GatewayStatus::Paid);
        assert_eq!(cb.payment_id.as_deref(), Some("PAY-1"));
        assert_eq!(cb.amount, Money::parse("1000", Currency::IDR).ok());
        assert_eq!(callback(body).unwrap().event_id, cb.event_id);
        assert!(callback(b"[]").is_err());
    }
}
