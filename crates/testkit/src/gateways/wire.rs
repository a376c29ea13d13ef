//! The fakes' answers: each gateway's create and status bodies, from its recorded payments.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::*;

pub(super) type Made = (StatusCode, Value, Option<Payment>);

/// Western Indonesian Time, where Finpay and Midtrans write their local times.
const WIB_SECS: i64 = 7 * 3600;

/// How a gateway writes a time.
#[derive(Clone, Copy)]
enum Style {
    /// `2026-12-02 10:00:00`, local.
    Plain,
    /// `2026-12-02T10:00:00Z`.
    Iso,
    /// `2026-12-02T10:00:00.000Z`.
    IsoMillis,
}

/// An hour from now, as a gateway writes an expiry (`offset`: seconds east of UTC). A fixed
/// date would pass one day and leave every payment created expired.
fn in_an_hour(offset: i64, style: Style) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // `2026-12-02T10:00:00.000Z`, as the daemon writes its own times.
    let text = parley::hooks::utc_text(now + (3600 + offset) * 1000);
    match style {
        Style::Plain => text[..19].replace('T', " "),
        Style::Iso => format!("{}Z", &text[..19]),
        Style::IsoMillis => text,
    }
}

pub(super) fn exists(st: &St, id: &str) -> bool {
    st.payments
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.payment_id == id)
}

pub(super) fn payment(
    payment_id: &str,
    provider_ref: String,
    method: &str,
    amount: i64,
    currency: &str,
) -> Payment {
    Payment {
        payment_id: payment_id.to_string(),
        provider_ref,
        qris: false,
        method: method.to_string(),
        amount,
        currency: currency.to_string(),
        outcome: None,
        paid: None,
        expires_at: now() + 86400,
        refunded: 0,
    }
}

pub(super) fn finpay_create(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = b
        .pointer("/order/id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if exists(st, &id) {
        return (
            StatusCode::CONFLICT,
            json!({"responseCode": "4090001", "responseMessage": "Duplicate order id"}),
            None,
        );
    }
    let Some(amount) = b
        .pointer("/order/amount")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<i64>().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"responseCode": "4000001", "responseMessage": "Invalid amount"}),
            None,
        );
    };
    let sof = b
        .pointer("/sourceOfFunds/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let base = st.base.lock().unwrap().clone();
    let mut answer = json!({
        "responseCode": "2000000", "responseMessage": "Success",
        "redirecturl": format!("{base}/pay/{id}"), "expiryLink": in_an_hour(WIB_SECS, Style::Plain),
    });
    match sof {
        "qris" => {
            answer["stringQr"] = json!(format!(
                "00020101021226670016ID.CO.FINNET{n:010}5204599953033605802ID6304ABCD"
            ));
            answer["imageurl"] = json!(format!("{base}/qr/{id}.png"));
        }
        "" => {}
        _ => answer["paymentCode"] = json!(format!("88027{n:011}")),
    }
    (
        StatusCode::OK,
        answer,
        Some(payment(&id, format!("FP{n:08}"), sof, amount, "IDR")),
    )
}

pub(super) fn xendit_invoice(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(amount) = b["amount"].as_i64() else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "API_VALIDATION_ERROR", "message": "amount must be an integer"}),
            None,
        );
    };
    let ext = b["external_id"].as_str().unwrap_or("").to_string();
    let id = format!("inv{n:021}");
    let base = st.base.lock().unwrap().clone();
    let methods: Vec<String> = b["payment_methods"].as_array().map_or(vec![], |m| {
        m.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    });
    let banks: Vec<Value> = ["BCA", "BNI", "BRI", "MANDIRI", "PERMATA"]
        .iter()
        .filter(|b| methods.is_empty() || methods.iter().any(|m| m == *b))
        .map(|b| json!({"bank_code": b, "collection_type": "POOL", "bank_account_number": format!("8808{n:012}"), "transfer_amount": amount, "bank_branch": "Virtual Account", "account_holder_name": "TOKO PARLEY"}))
        .collect();
    let outlets: Vec<Value> = ["ALFAMART", "INDOMARET"]
        .iter()
        .filter(|o| methods.is_empty() || methods.iter().any(|m| m == *o))
        .map(|o| json!({"retail_outlet_name": o, "payment_code": format!("TEST{n:08}"), "transfer_amount": amount}))
        .collect();
    let answer = json!({
        "id": id, "external_id": ext, "user_id": "user-1", "status": "PENDING",
        "merchant_name": "Toko Parley", "amount": amount, "currency": b["currency"],
        "description": b["description"], "expiry_date": in_an_hour(0, Style::IsoMillis),
        "invoice_url": format!("{base}/web/invoices/{id}"),
        "available_banks": banks, "available_retail_outlets": outlets,
        "available_ewallets": [], "available_qr_codes": [{"qr_code_type": "QRIS"}],
    });
    let method = methods.first().cloned().unwrap_or_default();
    (
        StatusCode::OK,
        answer,
        Some(payment(&ext, id, &method, amount, "IDR")),
    )
}

pub(super) fn xendit_qris(n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(amount) = b["amount"].as_i64() else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "API_VALIDATION_ERROR", "message": "amount must be an integer"}),
            None,
        );
    };
    let reference = b["reference_id"].as_str().unwrap_or("").to_string();
    let id = format!("pr-{n:08x}-0000-4000-8000-000000000000");
    let expires = b
        .pointer("/payment_method/qr_code/channel_properties/expires_at")
        .cloned()
        .unwrap_or(json!(in_an_hour(0, Style::Iso)));
    let answer = json!({
        "id": id, "reference_id": reference, "business_id": "biz-1", "currency": "IDR",
        "amount": amount, "country": "ID", "status": "PENDING", "description": b["description"],
        "payment_method": {"id": format!("pm-{n}"), "type": "QR_CODE", "reusability": "ONE_TIME_USE", "status": "ACTIVE",
            "qr_code": {"channel_code": "QRIS", "amount": amount, "channel_properties": {
                "qr_string": format!("00020101021226660014ID.CO.XENDIT{n:010}5204549953033605406{amount}5802ID6304ABCD"),
                "expires_at": expires}}},
        "actions": [], "created": "2026-12-01T10:00:00Z", "updated": "2026-12-01T10:00:00Z",
    });
    let mut p = payment(&reference, id, "qris", amount, "IDR");
    p.qris = true;
    (StatusCode::OK, answer, Some(p))
}

pub(super) fn midtrans_charge(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let order = b
        .pointer("/transaction_details/order_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // Midtrans answers its errors in a 200 body.
    if exists(st, &order) {
        return (
            StatusCode::OK,
            json!({"status_code": "406", "status_message": "The request could not be completed due to a conflict with the current state of the target resource, please try again", "id": "x"}),
            None,
        );
    }
    let Some(gross) = b
        .pointer("/transaction_details/gross_amount")
        .and_then(Value::as_i64)
    else {
        return (
            StatusCode::OK,
            json!({"status_code": "400", "status_message": "One or more parameters in the payload is invalid.", "validation_messages": ["transaction_details.gross_amount is not an integer"]}),
            None,
        );
    };
    if let Some(items) = b["item_details"].as_array() {
        let sum: i64 = items
            .iter()
            .map(|i| i["price"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(0))
            .sum();
        if sum != gross {
            return (
                StatusCode::OK,
                json!({"status_code": "400", "status_message": "One or more parameters in the payload is invalid.", "validation_messages": ["transaction_details.gross_amount is not equal to the sum of item_details"]}),
                None,
            );
        }
    }
    let pt = b["payment_type"].as_str().unwrap_or("").to_string();
    let tid = format!("{n:08x}-8aa4-4fd8-b5ae-000000000000");
    let mut answer = json!({
        "status_code": "201", "status_message": "Success, transaction is found",
        "transaction_id": tid, "order_id": order, "merchant_id": "G000000000",
        "gross_amount": format!("{gross}.00"), "currency": "IDR", "payment_type": pt,
        "transaction_time": "2026-12-01 10:00:00", "transaction_status": "pending",
        "fraud_status": "accept", "expiry_time": in_an_hour(WIB_SECS, Style::Plain),
    });
    let base = st.base.lock().unwrap().clone();
    match pt.as_str() {
        "bank_transfer" => {
            let bank = b
                .pointer("/bank_transfer/bank")
                .and_then(Value::as_str)
                .unwrap_or("bca");
            if bank == "permata" {
                answer["permata_va_number"] = json!(format!("8562{n:012}"));
            } else {
                answer["va_numbers"] = json!([{"bank": bank, "va_number": format!("1234{n:012}")}]);
            }
        }
        "echannel" => {
            answer["biller_code"] = json!("70012");
            answer["bill_key"] = json!(format!("99{n:010}"));
        }
        "cstore" => {
            answer["payment_code"] = json!(format!("2509{n:012}"));
            answer["store"] = b
                .pointer("/cstore/store")
                .cloned()
                .unwrap_or(json!("indomaret"));
        }
        "qris" => {
            answer["qr_string"] = json!(format!(
                "00020101021226620014COM.GO-JEK.WWW{n:010}5204599953033605802ID6304ABCD"
            ));
            answer["acquirer"] = json!("gopay");
            answer["actions"] = json!([{"name": "generate-qr-code", "method": "GET", "url": format!("{base}/v2/qris/{tid}/qr-code")}]);
        }
        _ => {}
    }
    (
        StatusCode::OK,
        answer,
        Some(payment(&order, tid, &pt, gross, "IDR")),
    )
}

pub(super) fn stripe_session(n: u64, body: &[u8]) -> Made {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let mut total = 0i64;
    let mut i = 0;
    while let Some(unit) = form.get(&format!("line_items[{i}][price_data][unit_amount]")) {
        let qty: i64 = form
            .get(&format!("line_items[{i}][quantity]"))
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        match unit.parse::<i64>() {
            Ok(u) => total += u * qty,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "message": "Invalid integer"}}),
                    None,
                )
            }
        }
        i += 1;
    }
    if form.get("mode").map(String::as_str) != Some("payment") || i == 0 {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "message": "Missing required param: line_items."}}),
            None,
        );
    }
    let id = format!("cs_test_{n:024}");
    let reference = form.get("client_reference_id").cloned().unwrap_or_default();
    let currency = form
        .get("line_items[0][price_data][currency]")
        .cloned()
        .unwrap_or_default();
    let expires: i64 = form
        .get("expires_at")
        .and_then(|e| e.parse().ok())
        .unwrap_or(now() + 86400);
    let answer = json!({
        "id": id, "object": "checkout.session", "amount_total": total, "currency": currency,
        "client_reference_id": reference, "expires_at": expires, "mode": "payment",
        "payment_status": "unpaid", "status": "open",
        "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "metadata": {"payment_id": form.get("metadata[payment_id]")},
    });
    let mut p = payment(
        &reference,
        id,
        "link",
        total,
        &currency.to_ascii_uppercase(),
    );
    p.expires_at = expires;
    (StatusCode::OK, answer, Some(p))
}

pub(super) fn status_body(kind: GatewayKind, p: &Payment) -> Value {
    let paid = p.paid.unwrap_or(p.amount);
    match kind {
        GatewayKind::Finpay => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "PAID",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILURE",
                None => "PENDING",
            };
            json!({"responseCode": "2000000", "responseMessage": "Success", "data": {
                "order": {"id": p.payment_id, "reference": p.provider_ref, "amount": p.amount.to_string(), "currency": p.currency},
                "result": {"payment": {"status": s, "amount": paid, "datetime": "2026-12-01 10:00:00"}}}})
        }
        GatewayKind::Xendit if p.qris => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "SUCCEEDED",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILED",
                None => "PENDING",
            };
            json!({"id": p.provider_ref, "reference_id": p.payment_id, "status": s, "amount": paid, "currency": p.currency})
        }
        GatewayKind::Xendit => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "PAID",
                Some(_) => "EXPIRED",
                None => "PENDING",
            };
            let mut v = json!({"id": p.provider_ref, "external_id": p.payment_id, "status": s, "amount": p.amount, "currency": p.currency});
            if p.outcome == Some(FakeOutcome::Paid) {
                v["paid_amount"] = json!(paid);
                v["payment_method"] = json!(xendit_paid_by(&p.method));
            }
            v
        }
        GatewayKind::Midtrans => {
            let (s, code) = match p.outcome {
                Some(FakeOutcome::Paid) => ("settlement", "200"),
                Some(FakeOutcome::Expired) => ("expire", "407"),
                Some(FakeOutcome::Failed) => ("deny", "202"),
                None => ("pending", "201"),
            };
            json!({"status_code": code, "status_message": "Success, transaction is found", "transaction_id": p.provider_ref,
                "order_id": p.payment_id, "gross_amount": format!("{paid}.00"), "currency": p.currency,
                "payment_type": p.method, "transaction_status": s, "fraud_status": "accept"})
        }
        _ => {
            let (s, ps) = match p.outcome {
                Some(FakeOutcome::Paid) => ("complete", "paid"),
                Some(FakeOutcome::Expired) => ("expired", "unpaid"),
                Some(FakeOutcome::Failed) => ("complete", "unpaid"),
                None => ("open", "unpaid"),
            };
            let intent = (p.outcome == Some(FakeOutcome::Paid)).then(|| stripe_intent(p));
            json!({"id": p.provider_ref, "object": "checkout.session", "status": s, "payment_status": ps,
                "amount_total": paid, "currency": p.currency.to_ascii_lowercase(), "client_reference_id": p.payment_id,
                "expires_at": p.expires_at, "payment_intent": intent})
        }
    }
}

/// How a paid Xendit invoice limited to `channel` was paid (its `payment_method`): a bank's VA
/// is BANK_TRANSFER, a store's pay code RETAIL_OUTLET; an open invoice (`link`) is taken as
/// paid by e-wallet.
pub(super) fn xendit_paid_by(channel: &str) -> &'static str {
    match channel {
        "" => "EWALLET",
        "INDOMARET" | "ALFAMART" => "RETAIL_OUTLET",
        "QRIS" => "QR_CODE",
        _ => "BANK_TRANSFER",
    }
}

/// A paid Checkout Session's payment intent.
pub(super) fn stripe_intent(p: &Payment) -> String {
    format!("pi_test_{}", p.provider_ref.trim_start_matches("cs_test_"))
}

/// A refund the fake was asked for: (HTTP status, answer, the payment's index and the amount
/// taken when it was made).
pub(super) type RefundMade = (StatusCode, Value, Option<(usize, i64)>);

/// Whether `amount` may be refunded of payment `p` (paid, no more than is left): Err the
/// gateway's refusal as (status, body).
fn refund_room(kind: GatewayKind, p: &Payment, amount: i64) -> Result<(), (StatusCode, Value)> {
    let paid = p.paid.unwrap_or(p.amount);
    let refusal = |code: &str, message: &str| match kind {
        GatewayKind::Stripe => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": code, "message": message}}),
        ),
        GatewayKind::Midtrans => (
            StatusCode::OK,
            json!({"status_code": "412", "status_message": message}),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            json!({"error_code": code, "message": message}),
        ),
    };
    if p.outcome != Some(FakeOutcome::Paid) {
        return Err(refusal("payment_not_paid", "The payment has not succeeded"));
    }
    if amount <= 0 || p.refunded + amount > paid {
        return Err(refusal(
            "amount_too_large",
            "Refund amount is greater than the unrefunded amount",
        ));
    }
    Ok(())
}

pub(super) fn stripe_refund(ps: &[Payment], body: &[u8]) -> RefundMade {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let intent = form.get("payment_intent").cloned().unwrap_or_default();
    let Some(i) = ps.iter().position(|p| stripe_intent(p) == intent) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such payment_intent"}}),
            None,
        );
    };
    let p = &ps[i];
    let amount = match form.get("amount") {
        Some(a) => match a.parse::<i64>() {
            Ok(a) => a,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "message": "Invalid integer"}}),
                    None,
                )
            }
        },
        None => p.paid.unwrap_or(p.amount) - p.refunded,
    };
    if !matches!(
        form.get("reason").map(String::as_str),
        None | Some("duplicate" | "fraudulent" | "requested_by_customer")
    ) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_string", "message": "Invalid reason"}}),
            None,
        );
    }
    if let Err((s, b)) = refund_room(GatewayKind::Stripe, p, amount) {
        return (s, b, None);
    }
    let answer = json!({"id": format!("re_test_{:06}", i * 1000 + p.refunded as usize % 1000 + 1), "object": "refund",
        "amount": amount, "currency": p.currency.to_ascii_lowercase(), "payment_intent": intent,
        "reason": form.get("reason"), "status": "succeeded",
        "metadata": {"payment_id": form.get("metadata[payment_id]"), "reason": form.get("metadata[reason]")}});
    (StatusCode::OK, answer, Some((i, amount)))
}

pub(super) fn midtrans_refund(ps: &[Payment], id: &str, body: &[u8]) -> RefundMade {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(i) = ps
        .iter()
        .rposition(|p| p.payment_id == id || p.provider_ref == id)
    else {
        return (
            StatusCode::OK,
            json!({"status_code": "404", "status_message": "Transaction doesn't exist."}),
            None,
        );
    };
    let p = &ps[i];
    if p.method != "qris" {
        return (
            StatusCode::OK,
            json!({"status_code": "412", "status_message": "Merchant cannot modify the status of the transaction"}),
            None,
        );
    }
    let amount = b["amount"]
        .as_i64()
        .unwrap_or(p.paid.unwrap_or(p.amount) - p.refunded);
    if let Err((s, body)) = refund_room(GatewayKind::Midtrans, p, amount) {
        return (s, body, None);
    }
    let paid = p.paid.unwrap_or(p.amount);
    let status = if p.refunded + amount == paid {
        "refund"
    } else {
        "partial_refund"
    };
    let answer = json!({"status_code": "200", "status_message": "Success, refund request is approved",
        "transaction_id": p.provider_ref, "order_id": p.payment_id, "payment_type": p.method,
        "transaction_status": status, "gross_amount": format!("{paid}.00"),
        "refund_chargeback_id": i * 100 + 1, "refund_amount": format!("{amount}.00"),
        "refund_key": b["refund_key"]});
    (StatusCode::OK, answer, Some((i, amount)))
}

pub(super) fn xendit_refund(ps: &[Payment], body: &[u8]) -> RefundMade {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let target = b["invoice_id"]
        .as_str()
        .or(b["payment_request_id"].as_str())
        .unwrap_or("");
    let Some(i) = ps.iter().position(|p| p.provider_ref == target) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error_code": "DATA_NOT_FOUND", "message": "Payment not found"}),
            None,
        );
    };
    let p = &ps[i];
    let reasons = [
        "FRAUDULENT",
        "DUPLICATE",
        "REQUESTED_BY_CUSTOMER",
        "CANCELLATION",
        "OTHERS",
    ];
    if !b["reason"].as_str().is_some_and(|r| reasons.contains(&r)) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "API_VALIDATION_ERROR", "message": "reason is invalid"}),
            None,
        );
    }
    if !p.qris && matches!(xendit_paid_by(&p.method), "BANK_TRANSFER" | "RETAIL_OUTLET") {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "REFUND_NOT_SUPPORTED_ERROR", "message": "The payment channel does not support refunds"}),
            None,
        );
    }
    let amount = b["amount"]
        .as_i64()
        .unwrap_or(p.paid.unwrap_or(p.amount) - p.refunded);
    if let Err((s, body)) = refund_room(GatewayKind::Xendit, p, amount) {
        return (s, body, None);
    }
    let mut answer = json!({"id": format!("rfd-{:08}", i * 100 + 1), "reference_id": b["reference_id"],
        "amount": amount, "currency": p.currency, "reason": b["reason"], "status": "SUCCEEDED",
        "metadata": b["metadata"]});
    if p.qris {
        answer["payment_request_id"] = json!(p.provider_ref);
    } else {
        answer["invoice_id"] = json!(p.provider_ref);
    }
    (StatusCode::OK, answer, Some((i, amount)))
}
