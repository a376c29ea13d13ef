//! A flow's payment through the whole daemon, at each kind of gateway (local fakes speaking
//! Finpay's, Xendit's, Midtrans' and Stripe's real shapes; a manual transfer confirmed by the
//! owner): instructions to the customer, a forged callback refused, the gateway's callback
//! confirmed with its status API, the flow's `paid` branch, a redelivery with no second
//! effect, the stock sold.

use std::sync::Arc;
use std::time::Duration;

use parley::domain::{AccountId, Currency, GatewayKind, Money, PaymentStatus, ProductKind};
use parley::store::Product;
use parley_testkit::gateways::{FakeGateway, FakeOutcome, GatewayFault, SignedCallback};
use parley_testkit::{text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

const FLOW: &str = r#"
id: buy
triggers:
  - keyword: buy
start: add
nodes:
  add:
    cart: {add: {sku: SKU, qty: QTY}}
    next: checkout
  checkout:
    checkout: {}
    next: pay
  pay:
    payment: PAYMENT
    branches: {expired: late, failed: failed}
    next: paid
  paid:
    send: {text: "Paid {{order.number}}: {{order.total | money}}"}
  late:
    send: {text: "Expired {{order.number}}"}
  failed:
    send: {text: "Failed {{order.number}}"}
"#;

fn replies(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        // A text's body, or an image's caption (a QRIS).
        .map(|a| {
            a.text()
                .or_else(|| a.body.pointer("/image/caption").and_then(|v| v.as_str()))
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn wait_replies(graph: &FakeGraph, user: &str, n: usize) -> Vec<String> {
    let got = graph
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    let all = replies(graph, user);
    assert!(got, "{n} replies to {user}; got {all:?}");
    all
}

/// The callback with its proof broken: a wrong token, a signature that does not match.
fn forged(kind: GatewayKind, cb: &SignedCallback) -> SignedCallback {
    let mut cb = cb.clone();
    match kind {
        GatewayKind::Xendit => {
            for (k, v) in cb.headers.iter_mut() {
                if k.eq_ignore_ascii_case("x-callback-token") {
                    *v = "not-the-token".into();
                }
            }
        }
        GatewayKind::Midtrans => {
            let mut body: serde_json::Value = serde_json::from_slice(&cb.body).unwrap();
            body["signature_key"] = serde_json::json!("0".repeat(128));
            cb.body = body.to_string().into_bytes();
        }
        // The signature no longer covers the body.
        _ => cb.body.extend_from_slice(b" "),
    }
    cb
}

async fn post(url: &str, cb: &SignedCallback) -> u16 {
    let mut req = reqwest::Client::new().post(url).body(cb.body.clone());
    for (k, v) in &cb.headers {
        req = req.header(k, v);
    }
    req.send().await.map_or(0, |r| r.status().as_u16())
}

/// A daemon selling KOPI (Rp 25.000, 10 in stock) through the `buy` flow paying with
/// `payment` at a gateway of `kind` (a manual transfer for Manual) named `gw`.
async fn shop_with(
    db: &TestDb,
    kind: GatewayKind,
    payment: &str,
    clock: Option<ManualClock>,
) -> (
    TestApp,
    Arc<FakeGraph>,
    Option<FakeGateway>,
    parley::store::Store,
    tempfile::TempDir,
) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("buy.yaml"),
        FLOW.replace("PAYMENT", payment)
            .replace("SKU", "KOPI")
            .replace("QTY", "2"),
    )
    .unwrap();
    let mut settings = test_settings(db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    let gateway = match kind {
        GatewayKind::Manual => None,
        k => Some(FakeGateway::start(k).await),
    };
    let provider = match &gateway {
        Some(g) => g.provider(),
        None => serde_json::from_value(serde_json::json!({
            "kind": "manual",
            "instructions": "Transfer to BCA 123-456-789 (PT Toko)."
        }))
        .unwrap(),
    };
    settings.payments.providers.insert("gw".into(), provider);
    settings.accounts[0].payments = Some("gw".into());
    // Where Meta reaches Parley (the gateways' callbacks, the QRIS images).
    settings.payments.callback_base_url = Some("https://parley.example".into());
    let app = match clock {
        Some(c) => spawn_app_with_clock(settings, Arc::new(c)).await,
        None => spawn_app_with_flows(settings).await,
    };
    let store = db.store().await;
    store
        .upsert_product(
            &AccountId::from(PNID),
            &Product {
                sku: "KOPI".into(),
                name: "Kopi Arabica".into(),
                description: None,
                price: Money::parse("25000", Currency::IDR).unwrap(),
                stock: Some(10),
                reserved: 0,
                image_url: None,
                category: None,
                active: true,
                kind: ProductKind::Product,
                period_days: None,
                access_link: None,
                position: 0,
                created_at: 0,
                updated_at: 0,
            },
        )
        .await
        .unwrap();
    (app, graph, gateway, store, flows)
}

async fn a_customer_pays_through(db: TestDb, kind: GatewayKind, payment: &str) {
    let (app, graph, gateway, store, _flows) = shop_with(&db, kind, payment, None).await;
    let account = AccountId::from(PNID);
    let u = "6281200000501";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, u, "wamid.B1", "buy", now_secs()))
            .await,
        200
    );
    let told = wait_replies(&graph, u, 1).await;
    assert!(
        told[0].contains("Rp 50.000") && told[0].contains("ORD-000001"),
        "{kind}: {told:?}"
    );
    let payment = store.payment(1).await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Pending);
    match &gateway {
        Some(g) => {
            assert!(
                payment.provider_ref.is_some(),
                "{kind}: the gateway's reference is kept"
            );
            let url = format!("{}/payments/gw/callback", app.base);
            g.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
            let cb = g.callback("PAY-00000001");
            if kind != GatewayKind::Finpay {
                // Finpay's callback is only read: its status API is what confirms it.
                assert_eq!(post(&url, &forged(kind, &cb)).await, 401, "{kind}: forged");
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(
                    store.payment(1).await.unwrap().unwrap().status,
                    PaymentStatus::Pending,
                    "{kind}: a forged callback changes nothing"
                );
            }
            assert_eq!(post(&url, &cb).await, 200, "{kind}: the callback");
            let told = wait_replies(&graph, u, 2).await;
            assert_eq!(told[1], "Paid ORD-000001: Rp 50.000", "{kind}");
            assert_eq!(post(&url, &cb).await, 200, "{kind}: a redelivery");
            // Confirmed with the gateway's status API before it was marked paid.
            assert!(
                g.requests().iter().any(|r| r.method == "GET"),
                "{kind}: the status API was asked"
            );
        }
        None => {
            assert!(told[0].starts_with("Transfer to BCA 123-456-789 (PT Toko)."));
            let (status, body) = app
                .admin(
                    reqwest::Method::POST,
                    "/payments/1/confirm",
                    Some(ADMIN_TOKEN),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let told = wait_replies(&graph, u, 2).await;
            assert_eq!(told[1], "Paid ORD-000001: Rp 50.000");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies(&graph, u).len(), 2, "{kind}: one receipt");
    let paid = store.payment(1).await.unwrap().unwrap();
    assert_eq!(paid.status, PaymentStatus::Paid);
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(8), 0), "{kind}: sold");
    app.stop().await;
}

async fn through_finpay(db: TestDb) {
    a_customer_pays_through(db, GatewayKind::Finpay, "{method: va, bank: bca}").await
}
async fn through_xendit(db: TestDb) {
    a_customer_pays_through(
        db,
        GatewayKind::Xendit,
        "{method: retail, store: indomaret}",
    )
    .await
}
async fn through_midtrans(db: TestDb) {
    a_customer_pays_through(db, GatewayKind::Midtrans, "{method: va, bank: bni}").await
}
async fn through_stripe(db: TestDb) {
    a_customer_pays_through(db, GatewayKind::Stripe, "{method: link}").await
}
async fn by_manual_transfer(db: TestDb) {
    a_customer_pays_through(db, GatewayKind::Manual, "{method: manual}").await
}
on_both_stores!(a_customer_pays_through_finpay, through_finpay);
on_both_stores!(a_customer_pays_through_xendit, through_xendit);
on_both_stores!(a_customer_pays_through_midtrans, through_midtrans);
on_both_stores!(a_customer_pays_through_stripe, through_stripe);
on_both_stores!(a_customer_pays_by_manual_transfer, by_manual_transfer);

/// At each gateway, what goes wrong after the create: one customer pays less than asked
/// (MISMATCH: held for the owner, the flow told nothing, the stock still reserved); one pays
/// but the callback is lost (the reconciliation pass past the expiry asks the gateway: PAID,
/// the receipt); one never pays (EXPIRED, the flow's expired way, the stock back), then pays
/// after all (PAID_LATE: held for the owner, the order stays cancelled).
async fn held_lost_and_late(db: TestDb, kind: GatewayKind, payment: &str) {
    let clock = ManualClock::at_now();
    // The clock moves with real time (the send gate paces by it), and jumps when told.
    let ticking = tokio::spawn({
        let clock = clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                clock.advance(Duration::from_millis(20));
            }
        }
    });
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, kind, payment, Some(clock.clone())).await;
    let gateway = gateway.unwrap();
    let account = AccountId::from(PNID);
    let url = format!("{}/payments/gw/callback", app.base);
    let (short, lost, late) = ("6281200000511", "6281200000512", "6281200000513");
    for (n, u) in [short, lost, late].into_iter().enumerate() {
        let webhook = text_webhook(PNID, u, &format!("wamid.HL{n}"), "buy", now_secs());
        assert_eq!(app.post_webhook(&webhook).await, 200);
        let told = wait_replies(&graph, u, 1).await;
        assert!(told[0].contains("Rp 50.000"), "{kind}: {told:?}");
    }
    let status = |id: i64| {
        let store = &store;
        async move { store.payment(id).await.unwrap().unwrap().status }
    };
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, Some("40000"));
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(1).await == PaymentStatus::Mismatch
        })
        .await,
        "{kind}: a short payment is held"
    );
    gateway.set_outcome("PAY-00000002", FakeOutcome::Paid, None);
    // Two hours on: past every expiry (the gateway signs its callbacks as late).
    clock.advance(Duration::from_secs(2 * 3600));
    gateway.skew_clock(2 * 3600);
    let (code, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        wait_replies(&graph, lost, 2).await[1],
        "Paid ORD-000002: Rp 50.000",
        "{kind}: the lost callback found"
    );
    assert_eq!(
        wait_replies(&graph, late, 2).await[1],
        "Expired ORD-000003",
        "{kind}: expired"
    );
    assert_eq!(status(3).await, PaymentStatus::Expired);
    gateway.set_outcome("PAY-00000003", FakeOutcome::Paid, None);
    assert_eq!(gateway.post_callback(&url, "PAY-00000003").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(3).await == PaymentStatus::PaidLate
        })
        .await,
        "{kind}: money after the expiry is held"
    );
    let cancelled = store.order(&account, "ORD-000003").await.unwrap().unwrap();
    assert_eq!(
        cancelled.status,
        parley::domain::OrderStatus::Cancelled,
        "{kind}: not silently completed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replies(&graph, short).len(),
        1,
        "{kind}: a mismatch tells the customer nothing"
    );
    assert_eq!(
        replies(&graph, late).len(),
        2,
        "{kind}: nor does a late payment"
    );
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    // 10: the lost one's 2 sold, the short one's 2 held (out of stock, reserved), the late
    // one's back.
    assert_eq!((kopi.stock, kopi.reserved), (Some(6), 2), "{kind}");
    ticking.abort();
    app.stop().await;
}

async fn held_lost_and_late_finpay(db: TestDb) {
    held_lost_and_late(db, GatewayKind::Finpay, "{method: va, bank: bca}").await
}
async fn held_lost_and_late_xendit(db: TestDb) {
    held_lost_and_late(db, GatewayKind::Xendit, "{method: va, bank: bni}").await
}
async fn held_lost_and_late_midtrans(db: TestDb) {
    held_lost_and_late(db, GatewayKind::Midtrans, "{method: qris}").await
}
async fn held_lost_and_late_stripe(db: TestDb) {
    held_lost_and_late(db, GatewayKind::Stripe, "{method: link}").await
}
on_both_stores!(
    finpay_holds_a_mismatch_finds_a_lost_callback_and_a_late_payment,
    held_lost_and_late_finpay
);
on_both_stores!(
    xendit_holds_a_mismatch_finds_a_lost_callback_and_a_late_payment,
    held_lost_and_late_xendit
);
on_both_stores!(
    midtrans_holds_a_mismatch_finds_a_lost_callback_and_a_late_payment,
    held_lost_and_late_midtrans
);
on_both_stores!(
    stripe_holds_a_mismatch_finds_a_lost_callback_and_a_late_payment,
    held_lost_and_late_stripe
);

/// A QRIS the gateway gives as a string is sent as an image Meta fetches from Parley: the
/// link names the payment with a token; the PNG is drawn from the stored string while the
/// payment is pending; a guessed link, or the same once paid, is 404.
async fn qris_as_an_image(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Xendit, "{method: qris}", None).await;
    let gateway = gateway.unwrap();
    let u = "6281200000521";
    let webhook = text_webhook(PNID, u, "wamid.Q1", "buy", now_secs());
    assert_eq!(app.post_webhook(&webhook).await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            graph
                .delivered()
                .iter()
                .any(|a| a.to() == Some(u) && a.body.get("image").is_some())
        })
        .await,
        "no image sent: {:?}",
        graph
            .delivered()
            .iter()
            .map(|a| a.body.clone())
            .collect::<Vec<_>>()
    );
    let sent = graph
        .delivered()
        .into_iter()
        .find(|a| a.to() == Some(u))
        .unwrap();
    assert_eq!(sent.body["type"], "image", "{}", sent.body);
    assert!(
        sent.body["image"]["caption"]
            .as_str()
            .unwrap()
            .starts_with("Please scan this QRIS to pay Rp 50.000"),
        "{}",
        sent.body
    );
    let link = sent.body["image"]["link"].as_str().unwrap();
    let path = link.strip_prefix("https://parley.example").unwrap();
    assert!(path.starts_with("/payments/qr/1-"), "{link}");
    let get = |path: String| {
        let url = format!("{}{path}", app.base);
        async move { reqwest::get(url).await.unwrap() }
    };
    let png = get(path.to_string()).await;
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let guessed = path.replacen("/1-", "/2-", 1);
    assert_eq!(get(guessed).await.status(), 404);
    assert_eq!(
        get("/payments/qr/1-00000000000000000000000000000000.png".into())
            .await
            .status(),
        404
    );
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    let url = format!("{}/payments/gw/callback", app.base);
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.payment(1).await.unwrap().unwrap().status == PaymentStatus::Paid
        })
        .await
    );
    assert_eq!(get(path.to_string()).await.status(), 404, "paid: gone");
    app.stop().await;
}
on_both_stores!(a_qris_is_sent_as_an_image, qris_as_an_image);

/// The gateway's callback comes while its create call is still unanswered (the customer paid
/// within the second the gateway took to answer): the payment row, committed before the call,
/// takes it; the flow keeps the news until the create's answer names the payment, then goes
/// its `paid` way: one receipt, no instructions to pay what is paid, nothing created twice.
async fn callback_before_create(db: TestDb, kind: GatewayKind, payment: &str) {
    let (app, graph, gateway, store, _flows) = shop_with(&db, kind, payment, None).await;
    let gateway = gateway.unwrap();
    gateway.push_fault(GatewayFault::Delay(Duration::from_millis(1500)));
    let u = "6281200000502";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, u, "wamid.E1", "buy", now_secs()))
            .await,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            gateway.provider_ref("PAY-00000001").is_some()
        })
        .await,
        "the create reached the gateway"
    );
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    let url = format!("{}/payments/gw/callback", app.base);
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.payment(1).await.unwrap().unwrap().status == PaymentStatus::Paid
        })
        .await,
        "settled while the create call still waits"
    );
    assert!(
        replies(&graph, u).is_empty(),
        "nothing said before the shop answered"
    );
    let told = wait_replies(&graph, u, 1).await;
    assert_eq!(told, vec!["Paid ORD-000001: Rp 50.000".to_string()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replies(&graph, u).len(), 1, "one receipt");
    let creates = gateway
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1, "one payment at the gateway");
    let paid = store.payment(1).await.unwrap().unwrap();
    assert_eq!(paid.status, PaymentStatus::Paid);
    assert!(paid.provider_ref.is_some(), "the create's answer is kept");
    app.stop().await;
}
async fn callback_before_create_finpay(db: TestDb) {
    callback_before_create(db, GatewayKind::Finpay, "{method: qris}").await
}
async fn callback_before_create_xendit(db: TestDb) {
    callback_before_create(db, GatewayKind::Xendit, "{method: va, bank: bca}").await
}
async fn callback_before_create_midtrans(db: TestDb) {
    callback_before_create(db, GatewayKind::Midtrans, "{method: va, bank: bni}").await
}
async fn callback_before_create_stripe(db: TestDb) {
    callback_before_create(db, GatewayKind::Stripe, "{method: link}").await
}
on_both_stores!(
    a_finpay_callback_before_the_create_call_returned_settles_once,
    callback_before_create_finpay
);
on_both_stores!(
    a_xendit_callback_before_the_create_call_returned_settles_once,
    callback_before_create_xendit
);
on_both_stores!(
    a_midtrans_callback_before_the_create_call_returned_settles_once,
    callback_before_create_midtrans
);
on_both_stores!(
    a_stripe_callback_before_the_create_call_returned_settles_once,
    callback_before_create_stripe
);

/// A plan paid starts its subscription and sends its access link; bought again while it
/// runs, it is extended from its current end.
async fn a_plan_starts_then_extends_its_subscription(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("buy.yaml"),
        FLOW.replace("PAYMENT", "{method: manual}")
            .replace("SKU", "PREMIUM")
            .replace("QTY", "1"),
    )
    .unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    settings.payments.providers.insert(
        "bank".into(),
        serde_json::from_value(serde_json::json!({"kind": "manual", "instructions": "BCA 1"}))
            .unwrap(),
    );
    settings.accounts[0].payments = Some("bank".into());
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    let account = AccountId::from(PNID);
    store
        .upsert_product(
            &account,
            &Product {
                sku: "PREMIUM".into(),
                name: "Premium".into(),
                description: None,
                price: Money::parse("99000", Currency::IDR).unwrap(),
                stock: None,
                reserved: 0,
                image_url: None,
                category: None,
                active: true,
                kind: ProductKind::Plan,
                period_days: Some(30),
                access_link: Some("https://example.com/premium".into()),
                position: 0,
                created_at: 0,
                updated_at: 0,
            },
        )
        .await
        .unwrap();
    let u = "6281200000601";
    let day = 86_400_000i64;
    let mut ends = Vec::new();
    for round in 1..=2i64 {
        let wamid = format!("wamid.PL{round}");
        assert_eq!(
            app.post_webhook(&text_webhook(PNID, u, &wamid, "buy", now_secs()))
                .await,
            200
        );
        wait_replies(&graph, u, (3 * round - 2) as usize).await;
        let (status, body) = app
            .admin(
                reqwest::Method::POST,
                &format!("/payments/{round}/confirm"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let told = wait_replies(&graph, u, (3 * round) as usize).await;
        let access = &told[(3 * round - 2) as usize];
        assert!(
            access.starts_with("Your access:\nPremium: https://example.com/premium (until "),
            "{told:?}"
        );
        assert_eq!(
            told[(3 * round - 1) as usize],
            format!("Paid ORD-00000{round}: Rp 99.000")
        );
        let end = count(
            &store,
            "SELECT period_end FROM subscriptions WHERE sku = 'PREMIUM' AND status = 'active'",
        )
        .await;
        ends.push(end);
    }
    let now = parley::store::now_ms();
    assert!(
        (ends[0] - now - 30 * day).abs() < 60_000,
        "30 days: {ends:?}"
    );
    assert_eq!(
        ends[1] - ends[0],
        30 * day,
        "extended from its end: {ends:?}"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM subscriptions").await, 1);
    app.stop().await;
}
on_both_stores!(
    a_plan_starts_then_extends,
    a_plan_starts_then_extends_its_subscription
);
