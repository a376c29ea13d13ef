//! The payment gateways against their local stand-ins (`parley_testkit::gateways`): for each
//! kind create → status → callback, the errors' classes, and no secret in any error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley::config::PaymentSettings;
use parley::domain::{Currency, GatewayKind, Money, PaymentMethod};
use parley::payments::{
    qr_png, CallbackError, CreatePayment, Customer, Gateway, GatewayError, GatewayStatus, Gateways,
    Instructions, LineItem, RefundRequest, RefundState,
};
use parley_testkit::gateways::*;
use serde_json::json;

fn idr(s: &str) -> Money {
    Money::parse(s, Currency::IDR).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn req(id: &str, method: PaymentMethod, amount: &str) -> CreatePayment {
    CreatePayment {
        payment_id: id.into(),
        idempotency_key: format!("idem-{id}"),
        amount: idr(amount),
        method,
        bank: Some("bca".into()),
        store: None,
        description: "Order 1".into(),
        items: vec![LineItem {
            name: "Kopi".into(),
            quantity: 2,
            unit_price: idr("25000"),
        }],
        customer: Customer {
            name: "Budi Santoso".into(),
            email: Some("budi@example.com".into()),
            phone: "6281234567890".into(),
        },
        expires_at_unix: now() + 3600,
        now_unix: now(),
        callback_url: None,
        return_url: Some("https://wa.me/15550783881".into()),
    }
}

fn gateways(fake: &FakeGateway, timeout: Option<Duration>) -> Gateways {
    let mut p = fake.provider();
    if let Some(t) = timeout {
        p.timeout = t;
    }
    let settings = PaymentSettings {
        callback_base_url: Some("https://shop.example.com/".into()),
        providers: BTreeMap::from([("gw".to_string(), p)]),
    };
    Gateways::new(&settings, reqwest::Client::new())
}

const SECRETS: [&str; 7] = [
    FINPAY_MERCHANT_ID,
    FINPAY_MERCHANT_KEY,
    XENDIT_SECRET_KEY,
    XENDIT_CALLBACK_TOKEN,
    MIDTRANS_SERVER_KEY,
    STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET,
];

fn no_secret(e: &impl std::fmt::Display) {
    let text = format!("{e}");
    for s in SECRETS {
        assert!(!text.contains(s), "a secret in {text}");
    }
}

/// A verified callback, twice: the same event id.
fn verify_twice(gw: &Gateway, fake: &FakeGateway, id: &str) -> parley::payments::Callback {
    let cb = fake.callback(id);
    let a = gw
        .verify_callback(&cb.header_map(), &cb.body, cb.timestamp)
        .unwrap();
    let again = fake.callback(id);
    let b = gw
        .verify_callback(&again.header_map(), &again.body, again.timestamp)
        .unwrap();
    assert_eq!(a.event_id, b.event_id, "a duplicate is recognisable");
    a
}

#[tokio::test]
async fn xendit_va_invoice_status_and_callback() {
    let fake = FakeGateway::start(GatewayKind::Xendit).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    assert_eq!(
        gw.callback_url(),
        Some("https://shop.example.com/payments/gw/callback")
    );
    let created = gw
        .create(&req("PAY-X1", PaymentMethod::Va, "50000"))
        .await
        .unwrap();
    assert!(
        matches!(&created.instructions, Instructions::VirtualAccount { bank, number } if bank == "BCA" && number.starts_with("8808"))
    );
    assert!(created.expires_at_unix.is_some());
    let sent = &fake.requests()[0];
    assert_eq!(sent.target, "/v2/invoices");
    assert_eq!(sent.header("idempotency-key"), Some("idem-PAY-X1"));
    assert_eq!(sent.json()["amount"], 50000);
    assert_eq!(sent.json()["payment_methods"], json!(["BCA"]));

    let s = gw
        .status("PAY-X1", Some(&created.provider_ref))
        .await
        .unwrap();
    assert_eq!(s.status, GatewayStatus::Pending);
    fake.set_outcome("PAY-X1", FakeOutcome::Paid, None);
    let s = gw
        .status("PAY-X1", Some(&created.provider_ref))
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.amount),
        (GatewayStatus::Paid, Some(idr("50000")))
    );
    // Found by external_id when the reference was lost.
    let s = gw.status("PAY-X1", None).await.unwrap();
    assert_eq!(
        s.provider_ref.as_deref(),
        Some(created.provider_ref.as_str())
    );

    let cb = verify_twice(gw, &fake, "PAY-X1");
    assert_eq!(cb.status, GatewayStatus::Paid);
    assert_eq!(cb.payment_id.as_deref(), Some("PAY-X1"));
    let signed = fake.callback("PAY-X1");
    let mut h = signed.header_map();
    h.insert("x-callback-token", "wrong".parse().unwrap());
    assert_eq!(
        gw.verify_callback(&h, &signed.body, now()),
        Err(CallbackError::BadToken)
    );
    h.remove("x-callback-token");
    assert_eq!(
        gw.verify_callback(&h, &signed.body, now()),
        Err(CallbackError::BadToken)
    );

    // Retail: the pay code of the outlet asked for.
    let mut r = req("PAY-X2", PaymentMethod::Retail, "50000");
    r.store = Some("indomaret".into());
    let c = gw.create(&r).await.unwrap();
    assert!(matches!(&c.instructions, Instructions::PayCode { store, .. } if store == "INDOMARET"));
}

#[tokio::test]
async fn xendit_qris_is_a_payment_request_with_a_qr_string() {
    let fake = FakeGateway::start(GatewayKind::Xendit).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let created = gw
        .create(&req("PAY-Q1", PaymentMethod::Qris, "50000"))
        .await
        .unwrap();
    let Instructions::Qris {
        qr_string: Some(qr),
        ..
    } = &created.instructions
    else {
        panic!("{:?}", created.instructions)
    };
    assert!(qr_png(qr).unwrap().starts_with(b"\x89PNG"));
    assert!(created.provider_ref.starts_with("pr-"));
    assert_eq!(fake.requests()[0].target, "/payment_requests");
    // Paid a different amount: reported as paid, with what was paid.
    fake.set_outcome("PAY-Q1", FakeOutcome::Paid, Some("49000"));
    let s = gw
        .status("PAY-Q1", Some(&created.provider_ref))
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.amount),
        (GatewayStatus::Paid, Some(idr("49000")))
    );
    let cb = verify_twice(gw, &fake, "PAY-Q1");
    assert_eq!(
        (cb.status, cb.amount),
        (GatewayStatus::Paid, Some(idr("49000")))
    );
    assert_eq!(
        cb.provider_ref.as_deref(),
        Some(created.provider_ref.as_str())
    );
}

#[tokio::test]
async fn midtrans_each_method_status_callback_and_duplicates() {
    let fake = FakeGateway::start(GatewayKind::Midtrans).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    // Items 2 × 25,000 for 45,000 (a voucher): the charge still adds up.
    let created = gw
        .create(&req("PAY-M1", PaymentMethod::Va, "45000"))
        .await
        .unwrap();
    assert!(
        matches!(&created.instructions, Instructions::VirtualAccount { bank, .. } if bank == "bca")
    );
    let sent = &fake.requests()[0];
    assert_eq!(
        sent.header("x-override-notification"),
        Some("https://shop.example.com/payments/gw/callback")
    );
    let mut r = req("PAY-M2", PaymentMethod::Va, "50000");
    r.bank = Some("mandiri".into());
    let c = gw.create(&r).await.unwrap();
    assert!(
        matches!(&c.instructions, Instructions::BillPayment { biller_code, .. } if biller_code == "70012")
    );
    let c = gw
        .create(&req("PAY-M3", PaymentMethod::Qris, "50000"))
        .await
        .unwrap();
    assert!(matches!(
        &c.instructions,
        Instructions::Qris {
            qr_string: Some(_),
            image_url: Some(_)
        }
    ));
    let c = gw
        .create(&req("PAY-M4", PaymentMethod::Retail, "50000"))
        .await
        .unwrap();
    assert!(matches!(&c.instructions, Instructions::PayCode { .. }));

    // The same order id again: "already created", then status.
    let dup = gw.create(&req("PAY-M1", PaymentMethod::Va, "45000")).await;
    assert!(
        matches!(dup, Err(GatewayError::Duplicate { .. })),
        "{dup:?}"
    );
    assert_eq!(
        gw.status("PAY-M1", None).await.unwrap().status,
        GatewayStatus::Pending
    );

    fake.set_outcome("PAY-M1", FakeOutcome::Paid, None);
    let s = gw.status("PAY-M1", None).await.unwrap();
    assert_eq!(
        (s.status, s.amount),
        (GatewayStatus::Paid, Some(idr("45000")))
    );
    let cb = verify_twice(gw, &fake, "PAY-M1");
    assert_eq!(cb.status, GatewayStatus::Paid);
    // A tampered amount breaks the signature.
    let signed = fake.callback("PAY-M1");
    let tampered = String::from_utf8(signed.body.clone())
        .unwrap()
        .replace("45000.00", "4500.00");
    assert_eq!(
        gw.verify_callback(&signed.header_map(), tampered.as_bytes(), now()),
        Err(CallbackError::BadSignature)
    );
    fake.set_outcome("PAY-M4", FakeOutcome::Expired, None);
    assert_eq!(
        verify_twice(gw, &fake, "PAY-M4").status,
        GatewayStatus::Expired
    );
    let missing = gw.status("PAY-NONE", None).await;
    assert!(
        matches!(missing, Err(GatewayError::Refused { status: 404, .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn stripe_checkout_session_status_and_signed_events() {
    let fake = FakeGateway::start(GatewayKind::Stripe).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let r = req("PAY-S1", PaymentMethod::Link, "50000");
    let created = gw.create(&r).await.unwrap();
    assert!(
        matches!(&created.instructions, Instructions::Link { url } if url.contains(&created.provider_ref))
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.header("idempotency-key"), Some("idem-PAY-S1"));
    assert!(sent
        .header("content-type")
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    assert_eq!(
        sent.form("line_items[0][price_data][unit_amount]")
            .as_deref(),
        Some("2500000")
    );
    assert_eq!(sent.form("metadata[payment_id]").as_deref(), Some("PAY-S1"));
    // The same idempotency key: the same session.
    assert_eq!(
        gw.create(&r).await.unwrap().provider_ref,
        created.provider_ref
    );

    assert!(matches!(
        gw.status("PAY-S1", None).await,
        Err(GatewayError::NeedsRef { .. })
    ));
    fake.set_outcome("PAY-S1", FakeOutcome::Paid, None);
    let s = gw
        .status("PAY-S1", Some(&created.provider_ref))
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.amount),
        (GatewayStatus::Paid, Some(idr("50000")))
    );
    let cb = verify_twice(gw, &fake, "PAY-S1");
    assert_eq!(cb.status, GatewayStatus::Paid);
    assert!(cb.event_id.starts_with("stripe:evt_"));
    let signed = fake.callback("PAY-S1");
    assert_eq!(
        gw.verify_callback(&signed.header_map(), &signed.body, signed.timestamp + 301),
        Err(CallbackError::Stale {
            tolerance_secs: 300
        })
    );
    let mut body = signed.body.clone();
    body.push(b' ');
    assert_eq!(
        gw.verify_callback(&signed.header_map(), &body, signed.timestamp),
        Err(CallbackError::BadSignature)
    );
    let unsupported = gw.create(&req("PAY-S2", PaymentMethod::Va, "50000")).await;
    assert!(matches!(unsupported, Err(GatewayError::Unsupported { .. })));
}

#[tokio::test]
async fn finpay_methods_status_and_parsed_callbacks() {
    let fake = FakeGateway::start(GatewayKind::Finpay).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let c = gw
        .create(&req("PAY-F1", PaymentMethod::Va, "50000"))
        .await
        .unwrap();
    assert!(matches!(&c.instructions, Instructions::VirtualAccount { bank, .. } if bank == "bca"));
    let sent = fake.requests()[0].json();
    assert_eq!(sent["order"]["amount"], "50000");
    assert_eq!(sent["sourceOfFunds"]["type"], "vabca");
    assert_eq!(
        sent["url"]["callbackUrl"],
        "https://shop.example.com/payments/gw/callback"
    );
    let c = gw
        .create(&req("PAY-F2", PaymentMethod::Retail, "50000"))
        .await
        .unwrap();
    assert!(matches!(&c.instructions, Instructions::PayCode { .. }));
    let c = gw
        .create(&req("PAY-F3", PaymentMethod::Qris, "50000"))
        .await
        .unwrap();
    assert!(matches!(
        &c.instructions,
        Instructions::Qris {
            qr_string: Some(_),
            ..
        }
    ));
    let c = gw
        .create(&req("PAY-F4", PaymentMethod::Link, "50000"))
        .await
        .unwrap();
    assert!(matches!(&c.instructions, Instructions::Link { .. }));
    let dup = gw.create(&req("PAY-F1", PaymentMethod::Va, "50000")).await;
    assert!(
        matches!(dup, Err(GatewayError::Duplicate { .. })),
        "{dup:?}"
    );

    assert_eq!(
        gw.status("PAY-F1", None).await.unwrap().status,
        GatewayStatus::Pending
    );
    fake.set_outcome("PAY-F1", FakeOutcome::Paid, None);
    let s = gw.status("PAY-F1", None).await.unwrap();
    assert_eq!(
        (s.status, s.amount),
        (GatewayStatus::Paid, Some(idr("50000")))
    );
    let cb = verify_twice(gw, &fake, "PAY-F1");
    assert_eq!(
        (cb.status, cb.payment_id.as_deref()),
        (GatewayStatus::Paid, Some("PAY-F1"))
    );
    fake.set_outcome("PAY-F2", FakeOutcome::Failed, None);
    assert_eq!(
        verify_twice(gw, &fake, "PAY-F2").status,
        GatewayStatus::Failed
    );
    assert!(matches!(
        gw.verify_callback(&Default::default(), b"not json", now()),
        Err(CallbackError::Malformed(_))
    ));
}

#[tokio::test]
async fn amounts_a_gateway_cannot_carry_are_refused_before_any_request() {
    for kind in [
        GatewayKind::Finpay,
        GatewayKind::Xendit,
        GatewayKind::Midtrans,
    ] {
        let fake = FakeGateway::start(kind).await;
        let gws = gateways(&fake, None);
        let gw = gws.get("gw").unwrap();
        let mut r = req("PAY-A1", PaymentMethod::Va, "50000.50");
        r.items.clear();
        let e = gw.create(&r).await.unwrap_err();
        assert!(matches!(e, GatewayError::Invalid { .. }), "{kind}: {e:?}");
        assert!(fake.requests().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn error_classes_and_no_secret_in_any() {
    for kind in [
        GatewayKind::Finpay,
        GatewayKind::Xendit,
        GatewayKind::Midtrans,
        GatewayKind::Stripe,
    ] {
        let fake = FakeGateway::start(kind).await;
        let gws = gateways(&fake, Some(Duration::from_millis(300)));
        let gw = gws.get("gw").unwrap();
        let method = if kind == GatewayKind::Stripe {
            PaymentMethod::Link
        } else {
            PaymentMethod::Va
        };
        let r = req("PAY-E1", method, "50000");
        let mut errors = Vec::new();

        fake.push_fault(GatewayFault::Status(500, json!({"message": "boom"})));
        let e = gw.create(&r).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::Unavailable { .. }) && e.is_retryable(),
            "{kind}: {e:?}"
        );
        errors.push(e);

        // A 4xx whose message echoes a credential: refused, the credential scrubbed.
        let echo = match kind {
            GatewayKind::Finpay => {
                format!("bad merchant {FINPAY_MERCHANT_ID}:{FINPAY_MERCHANT_KEY}")
            }
            GatewayKind::Xendit => format!("bad key {XENDIT_SECRET_KEY} {XENDIT_CALLBACK_TOKEN}"),
            GatewayKind::Midtrans => format!("bad key {MIDTRANS_SERVER_KEY}"),
            _ => format!("bad key {STRIPE_SECRET_KEY} {STRIPE_WEBHOOK_SECRET}"),
        };
        fake.push_fault(GatewayFault::Status(
            400,
            json!({"error": {"type": "invalid_request_error", "code": "x", "message": echo},
                   "error_code": "API_VALIDATION_ERROR", "message": echo,
                   "responseCode": "4000001", "responseMessage": echo,
                   "status_code": "400", "status_message": echo}),
        ));
        let e = gw.create(&r).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::Refused { status: 400, .. }),
            "{kind}: {e:?}"
        );
        assert!(!e.is_retryable());
        errors.push(e);

        fake.push_fault(GatewayFault::Hang(Duration::from_secs(2)));
        let e = gw.create(&r).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::Unavailable { .. }),
            "{kind}: {e:?}"
        );
        errors.push(e);

        for e in &errors {
            no_secret(e);
            no_secret(&format!("{e:?}"));
        }
        no_secret(&format!("{gws:?}"));
    }
    // Wrong credentials: the fake refuses with 401.
    let fake = FakeGateway::start(GatewayKind::Xendit).await;
    let mut p = fake.provider();
    p.secret_key = Some("xnd_wrong".to_string().into());
    let settings = PaymentSettings {
        callback_base_url: None,
        providers: BTreeMap::from([("x".to_string(), p)]),
    };
    let gws = Gateways::new(&settings, reqwest::Client::new());
    let e = gws
        .get("x")
        .unwrap()
        .create(&req("PAY-E2", PaymentMethod::Link, "50000"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, GatewayError::Refused { status: 401, .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains("xnd_wrong"));
}

#[tokio::test]
async fn a_callback_can_arrive_before_create_returns() {
    let fake = Arc::new(FakeGateway::start(GatewayKind::Midtrans).await);
    let gws = Arc::new(gateways(&fake, Some(Duration::from_secs(5))));
    fake.push_fault(GatewayFault::Delay(Duration::from_millis(800)));
    let creating = {
        let gws = gws.clone();
        tokio::spawn(async move {
            gws.get("gw")
                .unwrap()
                .create(&req("PAY-D1", PaymentMethod::Qris, "50000"))
                .await
        })
    };
    let mut waited = 0;
    while fake.provider_ref("PAY-D1").is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 100, "the fake never took the create");
    }
    fake.set_outcome("PAY-D1", FakeOutcome::Paid, None);
    let cb = fake.callback("PAY-D1");
    let got = gws
        .get("gw")
        .unwrap()
        .verify_callback(&cb.header_map(), &cb.body, now())
        .unwrap();
    assert_eq!(got.status, GatewayStatus::Paid);
    assert!(!creating.is_finished(), "the callback came first");
    assert!(creating.await.unwrap().is_ok());
}

#[tokio::test]
async fn callbacks_are_posted_as_the_gateway_posts_them() {
    let fake = FakeGateway::start(GatewayKind::Stripe).await;
    let gws = Arc::new(gateways(&fake, None));
    let created = gws
        .get("gw")
        .unwrap()
        .create(&req("PAY-P1", PaymentMethod::Link, "50000"))
        .await
        .unwrap();
    fake.set_outcome("PAY-P1", FakeOutcome::Paid, None);
    // A receiver that answers as the ingress will: 200 when verified, 401 otherwise.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let (gws, seen) = (gws.clone(), seen.clone());
        axum::Router::new().route(
            "/payments/{name}/callback",
            axum::routing::post(
                move |axum::extract::Path(name): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let (gws, seen) = (gws.clone(), seen.clone());
                    async move {
                        match gws
                            .get(&name)
                            .map(|g| g.verify_callback(&headers, &body, now()))
                        {
                            Some(Ok(cb)) => {
                                seen.lock().unwrap().push(cb);
                                axum::http::StatusCode::OK
                            }
                            _ => axum::http::StatusCode::UNAUTHORIZED,
                        }
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/payments/gw/callback");
    assert_eq!(fake.post_callback(&url, "PAY-P1").await, 200);
    assert_eq!(fake.post_callback(&url, "PAY-P1").await, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].event_id, seen[1].event_id);
    assert_eq!(
        seen[0].provider_ref.as_deref(),
        Some(created.provider_ref.as_str())
    );
}

#[tokio::test]
async fn manual_shows_its_instructions_and_takes_no_callbacks() {
    let mut providers = BTreeMap::new();
    let fake = FakeGateway::start(GatewayKind::Finpay).await;
    let mut p = fake.provider();
    p.kind = GatewayKind::Manual;
    p.base_url = None;
    p.instructions = Some("BCA 1234567890 a.n. Toko Parley".into());
    providers.insert("bank".to_string(), p);
    let gws = Gateways::new(
        &PaymentSettings {
            callback_base_url: None,
            providers,
        },
        reqwest::Client::new(),
    );
    let gw = gws.get("bank").unwrap();
    let c = gw
        .create(&req("PAY-MAN1", PaymentMethod::Manual, "50000"))
        .await
        .unwrap();
    assert_eq!(
        c.instructions,
        Instructions::Manual {
            text: "BCA 1234567890 a.n. Toko Parley".into()
        }
    );
    assert_eq!(
        gw.status("PAY-MAN1", None).await.unwrap().status,
        GatewayStatus::Pending
    );
    assert_eq!(
        gw.verify_callback(&Default::default(), b"{}", now()),
        Err(CallbackError::NoCallbacks)
    );
    assert!(matches!(
        gw.create(&req("PAY-MAN2", PaymentMethod::Va, "1")).await,
        Err(GatewayError::Unsupported { .. })
    ));
}

fn refund_req(
    id: &str,
    reference: Option<String>,
    method: PaymentMethod,
    amount: &str,
) -> RefundRequest {
    RefundRequest {
        payment_id: id.into(),
        provider_ref: reference,
        method,
        amount: idr(amount),
        reason: "Out of stock".into(),
        idempotency_key: format!("{id}-r1"),
    }
}

/// Stripe: the session's payment intent, then `POST /v1/refunds` in minor units with its
/// Idempotency-Key; the same key again makes no second refund; more than is left is refused.
#[tokio::test]
async fn stripe_refunds_the_sessions_payment_intent() {
    let fake = FakeGateway::start(GatewayKind::Stripe).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let created = gw
        .create(&req("PAY-S9", PaymentMethod::Link, "50000"))
        .await
        .unwrap();
    fake.set_outcome("PAY-S9", FakeOutcome::Paid, None);
    let r = refund_req(
        "PAY-S9",
        Some(created.provider_ref.clone()),
        PaymentMethod::Link,
        "20000",
    );
    let done = gw.refund(&r).await.unwrap();
    assert_eq!(done.state, RefundState::Succeeded);
    assert!(done.provider_ref.unwrap().starts_with("re_"));
    let sent = fake.refund_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, "/v1/refunds");
    assert_eq!(sent[0].form("amount").as_deref(), Some("2000000"));
    assert!(sent[0]
        .form("payment_intent")
        .unwrap()
        .starts_with("pi_test_"));
    assert_eq!(
        sent[0].form("reason").as_deref(),
        Some("requested_by_customer")
    );
    assert_eq!(sent[0].header("idempotency-key"), Some("PAY-S9-r1"));
    // A retry with the same key: answered again, refunded once.
    gw.refund(&r).await.unwrap();
    assert_eq!(fake.refunds(), 1);
    assert_eq!(fake.refunded("PAY-S9"), 2_000_000);
    let over = RefundRequest {
        idempotency_key: "PAY-S9-r2".into(),
        ..refund_req(
            "PAY-S9",
            Some(created.provider_ref),
            PaymentMethod::Link,
            "40000",
        )
    };
    let e = gw.refund(&over).await.unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { status: 400, .. }),
        "{e}"
    );
    no_secret(&e);
}

/// Midtrans: `POST /v2/{order_id}/refund` with refund_key, amount, reason, for QRIS; a VA is
/// refused before any request.
#[tokio::test]
async fn midtrans_refunds_qris_and_refuses_a_va_in_advance() {
    let fake = FakeGateway::start(GatewayKind::Midtrans).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    gw.create(&req("PAY-M9", PaymentMethod::Qris, "50000"))
        .await
        .unwrap();
    fake.set_outcome("PAY-M9", FakeOutcome::Paid, None);
    let r = refund_req("PAY-M9", None, PaymentMethod::Qris, "50000");
    let done = gw.refund(&r).await.unwrap();
    assert_eq!(done.state, RefundState::Succeeded);
    let sent = fake.refund_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, "/v2/PAY-M9/refund");
    assert_eq!(
        sent[0].json(),
        json!({"refund_key": "PAY-M9-r1", "amount": 50000, "reason": "Out of stock"})
    );
    gw.refund(&r).await.unwrap();
    assert_eq!(fake.refunds(), 1, "the same refund_key refunds once");

    let before = fake.requests().len();
    let va = refund_req("PAY-M9", None, PaymentMethod::Va, "50000");
    let e = gw.refund(&va).await.unwrap_err();
    assert!(matches!(e, GatewayError::NotRefundable { .. }), "{e}");
    assert_eq!(fake.requests().len(), before, "nothing sent");
}

/// Xendit: `POST /refunds` naming the payment request (QRIS) or the invoice; an invoice paid
/// by bank transfer is refused after reading it, before any refund request; a VA payment is
/// refused before any request at all.
#[tokio::test]
async fn xendit_refunds_by_invoice_or_payment_request() {
    let fake = FakeGateway::start(GatewayKind::Xendit).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let qris = gw
        .create(&req("PAY-XQ", PaymentMethod::Qris, "50000"))
        .await
        .unwrap();
    fake.set_outcome("PAY-XQ", FakeOutcome::Paid, None);
    let done = gw
        .refund(&refund_req(
            "PAY-XQ",
            Some(qris.provider_ref.clone()),
            PaymentMethod::Qris,
            "10000",
        ))
        .await
        .unwrap();
    assert_eq!(done.state, RefundState::Succeeded);
    let sent = fake.refund_requests();
    assert_eq!(sent[0].target, "/refunds");
    assert_eq!(sent[0].header("idempotency-key"), Some("PAY-XQ-r1"));
    assert_eq!(
        sent[0].json()["payment_request_id"],
        json!(qris.provider_ref)
    );
    assert_eq!(sent[0].json()["amount"], 10000);
    assert_eq!(sent[0].json()["reason"], "REQUESTED_BY_CUSTOMER");

    let mut link = req("PAY-XL", PaymentMethod::Link, "50000");
    link.bank = None;
    let inv = gw.create(&link).await.unwrap();
    fake.set_outcome("PAY-XL", FakeOutcome::Paid, None);
    gw.refund(&refund_req(
        "PAY-XL",
        Some(inv.provider_ref.clone()),
        PaymentMethod::Link,
        "50000",
    ))
    .await
    .unwrap();
    assert_eq!(
        fake.refund_requests()[1].json()["invoice_id"],
        json!(inv.provider_ref)
    );
    assert_eq!(fake.refunds(), 2);

    let va = gw
        .create(&req("PAY-XV", PaymentMethod::Va, "50000"))
        .await
        .unwrap();
    fake.set_outcome("PAY-XV", FakeOutcome::Paid, None);
    let before = fake.requests().len();
    let e = gw
        .refund(&refund_req(
            "PAY-XV",
            Some(va.provider_ref.clone()),
            PaymentMethod::Va,
            "50000",
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, GatewayError::NotRefundable { .. }), "{e}");
    assert_eq!(fake.requests().len(), before, "a VA: nothing sent");
    // The same invoice taken for a link: read, and its `payment_method` (BANK_TRANSFER)
    // refuses it without a refund request.
    let e = gw
        .refund(&refund_req(
            "PAY-XV",
            Some(va.provider_ref),
            PaymentMethod::Link,
            "50000",
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, GatewayError::NotRefundable { .. }), "{e}");
    assert_eq!(fake.refund_requests().len(), 2, "no refund request for it");
}

/// Finpay (its refund request is not documented publicly): refused before any request.
#[tokio::test]
async fn finpay_cannot_refund() {
    let fake = FakeGateway::start(GatewayKind::Finpay).await;
    let gws = gateways(&fake, None);
    let gw = gws.get("gw").unwrap();
    let e = gw
        .refund(&refund_req("PAY-F9", None, PaymentMethod::Va, "50000"))
        .await
        .unwrap_err();
    assert!(matches!(e, GatewayError::NotRefundable { .. }), "{e}");
    assert!(fake.requests().is_empty());
}
