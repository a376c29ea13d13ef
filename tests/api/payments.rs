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
    shop_with_owner(db, kind, payment, clock, None).await
}

/// [`shop_with`], the account's owner (`owner_wa_id`) being `owner`.
async fn shop_with_owner(
    db: &TestDb,
    kind: GatewayKind,
    payment: &str,
    clock: Option<ManualClock>,
    owner: Option<&str>,
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
    settings.accounts[0].owner_wa_id = owner.map(Into::into);
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
    // The gateway's expiry, read from its answer, lies ahead (a fake answering a fixed date
    // once left every payment created expired as soon as that date had passed).
    assert!(
        payment.expires_at > now_secs() * 1000,
        "{kind}: expires at {} ms",
        payment.expires_at
    );
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
                // Unchanged by the forged callback. The gateway says paid from now on, so the
                // 30 s reconciliation pass may settle it in this window (a slow host took that
                // long to get here): then only through the gateway's status API.
                let now = store.payment(1).await.unwrap().unwrap().status;
                assert!(
                    now == PaymentStatus::Pending
                        || (now == PaymentStatus::Paid
                            && g.requests().iter().any(|r| r.method == "GET")),
                    "{kind}: a forged callback changes nothing: {now:?}"
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

/// A customer buys (2 × KOPI, Rp 50.000) and pays through `kind`; the payment is PAID.
async fn bought_and_paid(app: &TestApp, graph: &FakeGraph, gateway: &Option<FakeGateway>, u: &str) {
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, u, "wamid.R1", "buy", now_secs()))
            .await,
        200
    );
    wait_replies(graph, u, 1).await;
    match gateway {
        Some(g) => {
            g.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
            let url = format!("{}/payments/gw/callback", app.base);
            assert_eq!(g.post_callback(&url, "PAY-00000001").await, 200);
        }
        None => {
            let (status, body) = app
                .admin(
                    reqwest::Method::POST,
                    "/payments/1/confirm",
                    Some(ADMIN_TOKEN),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let told = wait_replies(graph, u, 2).await;
    assert_eq!(told[1], "Paid ORD-000001: Rp 50.000");
}

async fn refund(app: &TestApp, body: serde_json::Value) -> (u16, serde_json::Value) {
    app.admin(
        reqwest::Method::POST,
        "/payments/1/refund",
        Some(ADMIN_TOKEN),
        Some(body),
    )
    .await
}

/// Paid through Stripe, refunded in two parts: the first leaves the payment PAID, a repeat of
/// it refunds nothing more, more than is left is 422, the rest makes it REFUNDED (the order
/// refunded and cancelled, its stock not given back); the customer hears of each refund
/// once, and of nothing more on the next pass.
async fn refunded_in_parts(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Stripe, "{method: link}", None).await;
    let u = "6281200000601";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let g = gateway.as_ref().unwrap();

    let (status, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/1/refund",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"amount": "20000"})),
        )
        .await;
    assert_eq!(status, 422, "a reason is required");
    let first = serde_json::json!({"amount": "20000", "reason": "One cup arrived broken", "idempotency_key": "broken-cup"});
    let (status, body) = refund(&app, first.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["payment_status"], "PAID");
    assert_eq!(body["refunded"], "20000");
    let sent = g.refund_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].form("amount").as_deref(), Some("2000000"));
    assert!(sent[0]
        .form("payment_intent")
        .unwrap()
        .starts_with("pi_test_"));
    assert_eq!(
        sent[0].header("idempotency-key"),
        Some("PAY-00000001-broken-cup")
    );
    assert_eq!(
        sent[0].form("metadata[reason]").as_deref(),
        Some("One cup arrived broken")
    );
    let told = wait_replies(&graph, u, 3).await;
    assert_eq!(
        told[2],
        "Rp 20.000 of your payment for order ORD-000001 was refunded."
    );
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Paid
    );

    // The same request again: the same refund, nothing more at the gateway.
    let (status, again) = refund(&app, first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["id"], body["id"]);
    assert_eq!(g.refunds(), 1);
    assert_eq!(g.refund_requests().len(), 1);

    let (status, body) = refund(
        &app,
        serde_json::json!({"amount": "30001", "reason": "too much"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Rp 30.000"),
        "{body}"
    );
    assert_eq!(g.refund_requests().len(), 1, "nothing sent");

    let (status, body) = refund(&app, serde_json::json!({"reason": "Order cancelled"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["amount"], "30000");
    assert_eq!(body["payment_status"], "REFUNDED");
    assert_eq!(body["refunded"], "50000");
    assert_eq!(g.refunded("PAY-00000001"), 5_000_000);
    let told = wait_replies(&graph, u, 4).await;
    assert_eq!(
        told[3],
        "Rp 30.000 of your payment for order ORD-000001 was refunded."
    );
    let p = store.payment(1).await.unwrap().unwrap();
    assert_eq!(p.status, PaymentStatus::Refunded);
    let (status, order) = app
        .admin(
            reqwest::Method::GET,
            "/orders/ORD-000001",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["payment_status"], "refunded");
    assert_eq!(order["status"], "cancelled");
    let kopi = store
        .product(&AccountId::from(PNID), "KOPI")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kopi.stock, Some(8), "the stock is not given back");

    let (status, body) = refund(
        &app,
        serde_json::json!({"amount": "1000", "reason": "more"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, shown) = app
        .admin(reqwest::Method::GET, "/payments/1", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    let listed: Vec<_> = shown["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["amount"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("20000", "succeeded"), ("30000", "succeeded")]);
    let (status, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies(&graph, u).len(), 4, "told once of each refund");
    app.stop().await;
}
on_both_stores!(a_stripe_payment_is_refunded_in_parts, refunded_in_parts);

/// Refunded whole in one request whose answer is lost (the gateway refunds, the client
/// times out): 502, and the same request again is answered with that refund, not a second.
async fn refunded_whole_after_a_timeout(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Stripe, "{method: link}", None).await;
    let u = "6281200000602";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let g = gateway.as_ref().unwrap();
    // The session read goes through; the refund is made but answered after the client's 2 s.
    g.push_fault(GatewayFault::Delay(Duration::from_millis(1)));
    g.push_fault(GatewayFault::Delay(Duration::from_secs(3)));
    let ask = serde_json::json!({"reason": "Shop closed today"});
    let (status, body) = refund(&app, ask.clone()).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("same request"),
        "{body}"
    );
    assert!(!body
        .to_string()
        .contains(parley_testkit::gateways::STRIPE_SECRET_KEY));
    assert_eq!(g.refunds(), 1);
    let (status, body) = refund(&app, ask).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment_status"], "REFUNDED");
    assert_eq!(g.refunds(), 1, "one refund at the gateway");
    assert_eq!(
        g.refund_requests().len(),
        2,
        "asked again with the same key"
    );
    let keys: Vec<_> = g
        .refund_requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(
        g.requests().last().unwrap().form("amount").as_deref(),
        Some("5000000")
    );
    let told = wait_replies(&graph, u, 3).await;
    assert_eq!(
        told[2],
        "Your payment of Rp 50.000 for order ORD-000001 was refunded."
    );
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Refunded
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies(&graph, u).len(), 3);
    app.stop().await;
}
on_both_stores!(
    a_stripe_refund_retried_after_a_timeout_is_made_once,
    refunded_whole_after_a_timeout
);

/// A payment its gateway cannot refund (a Xendit VA, anything at Finpay): 409 with why, and
/// nothing sent to the gateway; an unpaid payment: 409. A manual payment: the owner records
/// the refund made by hand.
async fn cannot_refund(db: TestDb, kind: GatewayKind, payment: &str) {
    let (app, graph, gateway, store, _flows) = shop_with(&db, kind, payment, None).await;
    let u = "6281200000603";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, u, "wamid.R0", "buy", now_secs()))
            .await,
        200
    );
    wait_replies(&graph, u, 1).await;
    let (status, body) = refund(&app, serde_json::json!({"reason": "early"})).await;
    assert_eq!(status, 409, "{kind}: unpaid: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("PENDING"),
        "{body}"
    );
    // Paid, as the customer would.
    let g = gateway.as_ref().unwrap();
    g.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    let url = format!("{}/payments/gw/callback", app.base);
    assert_eq!(g.post_callback(&url, "PAY-00000001").await, 200);
    wait_replies(&graph, u, 2).await;
    let before = g.requests().len();
    let (status, body) = refund(&app, serde_json::json!({"reason": "Out of stock"})).await;
    assert_eq!(status, 409, "{kind}: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("refund the customer by hand"),
        "{kind}: {body}"
    );
    assert_eq!(g.requests().len(), before, "{kind}: nothing sent");
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Paid
    );
    app.stop().await;
}
async fn cannot_refund_xendit_va(db: TestDb) {
    cannot_refund(db, GatewayKind::Xendit, "{method: va, bank: bca}").await
}
async fn cannot_refund_finpay(db: TestDb) {
    cannot_refund(db, GatewayKind::Finpay, "{method: qris}").await
}
on_both_stores!(a_xendit_va_payment_is_not_refunded, cannot_refund_xendit_va);
on_both_stores!(a_finpay_payment_is_not_refunded, cannot_refund_finpay);

async fn refunded_by_hand(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Manual, "{method: manual}", None).await;
    let u = "6281200000604";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let (status, body) = refund(
        &app,
        serde_json::json!({"amount": 50000, "reason": "Transferred back to BCA 987"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment_status"], "REFUNDED");
    assert_eq!(body["provider_ref"], serde_json::Value::Null);
    let told = wait_replies(&graph, u, 3).await;
    assert_eq!(
        told[2],
        "Your payment of Rp 50.000 for order ORD-000001 was refunded."
    );
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Refunded
    );
    app.stop().await;
}
on_both_stores!(a_manual_payment_refund_is_recorded, refunded_by_hand);

/// How many messages reached `user`.
fn deliveries_to(graph: &FakeGraph, user: &str) -> usize {
    graph
        .delivered()
        .iter()
        .filter(|a| a.to() == Some(user))
        .count()
}

async fn reconcile_now(app: &TestApp) {
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Stripe takes a refund as pending: its amount is held (no second refund may take it), the
/// payment stays PAID and the customer hears nothing yet; a pass while it is still pending
/// changes nothing; once Stripe says it succeeded, the next pass records it, the payment
/// moves to REFUNDED and the customer is told, once.
async fn pending_refund_succeeds(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Stripe, "{method: link}", None).await;
    let u = "6281200000605";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let g = gateway.as_ref().unwrap();
    g.answer_refunds_pending();
    let (status, body) = refund(&app, serde_json::json!({"reason": "Order cancelled"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["payment_status"], "PAID");
    let (status, more) = refund(
        &app,
        serde_json::json!({"amount": "1000", "reason": "again", "idempotency_key": "k2"}),
    )
    .await;
    assert_eq!(status, 409, "the pending refund holds it all: {more}");
    reconcile_now(&app).await;
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Paid
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(deliveries_to(&graph, u), 2, "nothing told while pending");

    let ids = g.refund_ids();
    assert_eq!(ids.len(), 1);
    g.settle_refund(&ids[0], true);
    reconcile_now(&app).await;
    let p = store.payment(1).await.unwrap().unwrap();
    assert_eq!(p.status, PaymentStatus::Refunded);
    let told = wait_replies(&graph, u, 3).await;
    assert_eq!(
        told[2],
        "Your payment of Rp 50.000 for order ORD-000001 was refunded."
    );
    let asked = g
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.target == format!("/v1/refunds/{}", ids[0]))
        .count();
    assert!(asked >= 2, "asked on each pass while pending: {asked}");
    reconcile_now(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(deliveries_to(&graph, u), 3, "told once");
    app.stop().await;
}
on_both_stores!(
    a_pending_refund_is_settled_by_the_next_pass,
    pending_refund_succeeds
);

/// Xendit takes a refund as pending, then says it failed: the refund is recorded failed with
/// Xendit's code, its amount is free again (a new refund may take it), the customer is not
/// told, and the owner is, once.
async fn pending_refund_fails(db: TestDb) {
    let owner = "6281299990001";
    let (app, graph, gateway, store, _flows) = shop_with_owner(
        &db,
        GatewayKind::Xendit,
        "{method: qris}",
        None,
        Some(owner),
    )
    .await;
    let u = "6281200000606";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let g = gateway.as_ref().unwrap();
    g.answer_refunds_pending();
    let (status, body) = refund(&app, serde_json::json!({"reason": "Order cancelled"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending");
    let ids = g.refund_ids();
    g.settle_refund(&ids[0], false);
    reconcile_now(&app).await;
    let refunds = store.refunds_of(1).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0].status,
        parley::domain::RefundStatus::Failed,
        "{refunds:?} {:?}",
        g.requests().iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(
        refunds[0].error.as_deref(),
        Some("the refund failed: INSUFFICIENT_BALANCE")
    );
    assert_eq!(
        store.payment(1).await.unwrap().unwrap().status,
        PaymentStatus::Paid
    );
    // The owner's window is closed: held until they write.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, owner, "wamid.O1", "hi", now_secs()))
            .await,
        200
    );
    let told = wait_replies(&graph, owner, 1).await;
    assert_eq!(
        told[0],
        "The refund of Rp 50.000 for order ORD-000001 failed at gw (the refund failed: INSUFFICIENT_BALANCE): nothing was given back. Refund it again, or by hand."
    );
    reconcile_now(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(deliveries_to(&graph, owner), 1, "the owner is told once");
    assert_eq!(deliveries_to(&graph, u), 2, "the customer hears nothing");

    // The amount is free: a new refund takes it, and this one succeeds.
    g.answer_refunds_done();
    let (status, body) = refund(
        &app,
        serde_json::json!({"reason": "Order cancelled", "idempotency_key": "second-try"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["amount"], "50000");
    assert_eq!(body["payment_status"], "REFUNDED");
    app.stop().await;
}
on_both_stores!(
    a_pending_refund_that_fails_frees_its_amount,
    pending_refund_fails
);

/// Two partial refunds asked at the same moment, each within what is left but not both:
/// exactly one is made, the other is refused, and the gateway is asked once.
async fn concurrent_refunds(db: TestDb) {
    let (app, graph, gateway, store, _flows) =
        shop_with(&db, GatewayKind::Stripe, "{method: link}", None).await;
    let u = "6281200000607";
    bought_and_paid(&app, &graph, &gateway, u).await;
    let g = gateway.as_ref().unwrap();
    for round in 0..5 {
        let a = refund(
            &app,
            serde_json::json!({"amount": "30000", "reason": "a", "idempotency_key": format!("a{round}")}),
        );
        let b = refund(
            &app,
            serde_json::json!({"amount": "30000", "reason": "b", "idempotency_key": format!("b{round}")}),
        );
        let ((sa, ba), (sb, bb)) = tokio::join!(a, b);
        if round == 0 {
            let mut got = [sa, sb];
            got.sort();
            assert_eq!(got, [200, 422], "{ba} {bb}");
        } else {
            // 20.000 is left: neither 30.000 fits.
            assert_eq!((sa, sb), (422, 422), "{ba} {bb}");
        }
    }
    assert_eq!(g.refunds(), 1);
    assert_eq!(g.refunded("PAY-00000001"), 3_000_000);
    let held: Vec<_> = store
        .refunds_of(1)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status.counts())
        .collect();
    assert_eq!(held.len(), 1);
    app.stop().await;
}
on_both_stores!(
    two_refunds_at_once_never_take_more_than_was_paid,
    concurrent_refunds
);
