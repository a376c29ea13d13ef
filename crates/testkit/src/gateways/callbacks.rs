//! The callbacks each fake sends, signed as its gateway signs them.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

use super::*;

/// Signed at `t` (unix seconds).
pub(super) fn callback_for(kind: &GatewayKind, p: &Payment, t: i64) -> SignedCallback {
    let paid = p.paid.unwrap_or(p.amount);
    match kind {
        GatewayKind::Finpay => {
            let status = match p.outcome {
                Some(FakeOutcome::Paid) => "CAPTURED",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILURE",
                None => "PENDING",
            };
            let mut body = json!({
                "customer": {"id": "CUST-1"},
                "order": {"id": p.payment_id, "reference": p.provider_ref, "amount": paid, "currency": p.currency},
                "meta": {"data": null},
                "result": {"payment": {"amount": paid, "status": status, "statusDesc": null}},
            });
            let mut mac = Hmac::<Sha512>::new_from_slice(FINPAY_MERCHANT_KEY.as_bytes()).unwrap();
            mac.update(body.to_string().as_bytes());
            body["signature"] = json!(hex::encode(mac.finalize().into_bytes()));
            SignedCallback {
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Xendit => {
            let body = if p.qris {
                let (event, status) = match p.outcome {
                    Some(FakeOutcome::Paid) => ("payment.succeeded", "SUCCEEDED"),
                    Some(FakeOutcome::Expired) => ("payment.failed", "EXPIRED"),
                    Some(FakeOutcome::Failed) => ("payment.failed", "FAILED"),
                    None => ("payment.pending", "PENDING"),
                };
                json!({"event": event, "business_id": "biz-1", "created": "2026-12-01T00:00:00Z",
                    "data": {"id": format!("py-{}", p.provider_ref), "payment_request_id": p.provider_ref,
                        "reference_id": p.payment_id, "status": status, "amount": paid, "currency": p.currency,
                        "payment_method": {"type": "QR_CODE"}}})
            } else {
                let status = match p.outcome {
                    Some(FakeOutcome::Paid) => "PAID",
                    Some(FakeOutcome::Expired) | Some(FakeOutcome::Failed) => "EXPIRED",
                    None => "PENDING",
                };
                json!({"id": p.provider_ref, "external_id": p.payment_id, "user_id": "user-1",
                    "status": status, "amount": p.amount, "paid_amount": paid,
                    "paid_at": "2026-12-01T00:00:00.000Z", "payment_method": "BANK_TRANSFER",
                    "payment_channel": p.method.to_ascii_uppercase(), "payment_destination": "8808999912345678",
                    "payment_id": format!("pay-{}", p.provider_ref), "currency": p.currency})
            };
            SignedCallback {
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-callback-token".into(), XENDIT_CALLBACK_TOKEN.into()),
                ],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Midtrans => {
            let (status, code) = match p.outcome {
                Some(FakeOutcome::Paid) => ("settlement", "200"),
                Some(FakeOutcome::Expired) => ("expire", "407"),
                Some(FakeOutcome::Failed) => ("deny", "202"),
                None => ("pending", "201"),
            };
            let gross = format!("{paid}.00");
            let mut h = Sha512::new();
            h.update(format!(
                "{}{code}{gross}{MIDTRANS_SERVER_KEY}",
                p.payment_id
            ));
            let body = json!({
                "transaction_time": "2026-12-01 10:00:00", "transaction_status": status,
                "transaction_id": p.provider_ref, "status_message": "midtrans payment notification",
                "status_code": code, "signature_key": hex::encode(h.finalize()),
                "payment_type": p.method, "order_id": p.payment_id, "merchant_id": "G000000000",
                "gross_amount": gross, "fraud_status": "accept", "currency": p.currency,
            });
            SignedCallback {
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Stripe => {
            let (event, status, payment_status) = match p.outcome {
                Some(FakeOutcome::Paid) => ("checkout.session.completed", "complete", "paid"),
                Some(FakeOutcome::Expired) => ("checkout.session.expired", "expired", "unpaid"),
                Some(FakeOutcome::Failed) => (
                    "checkout.session.async_payment_failed",
                    "complete",
                    "unpaid",
                ),
                None => ("checkout.session.completed", "complete", "unpaid"),
            };
            // The same news is the same event: its id is derived from it.
            let id = hex::encode(&Sha256::digest(format!("{}{event}", p.provider_ref))[..12]);
            let body = json!({
                "id": format!("evt_{id}"), "object": "event", "type": event, "created": t,
                "data": {"object": {
                    "id": p.provider_ref, "object": "checkout.session", "amount_total": paid,
                    "currency": p.currency.to_ascii_lowercase(), "client_reference_id": p.payment_id,
                    "metadata": {"payment_id": p.payment_id}, "payment_status": payment_status,
                    "status": status, "mode": "payment",
                }},
            })
            .to_string();
            let mut mac = Hmac::<Sha256>::new_from_slice(STRIPE_WEBHOOK_SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            SignedCallback {
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("stripe-signature".into(), format!("t={t},v1={sig}")),
                ],
                body: body.into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Manual => unreachable!(),
    }
}
