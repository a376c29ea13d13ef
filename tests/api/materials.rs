//! Materials and the owner: a paid order consumes its materials exactly and once; a fall
//! below `min_stock` tells the owner (`owner_wa_id`) once per crossing, after a restock
//! again, even when the process stopped between the commit and the message; payments held
//! for the owner (MISMATCH, PAID_LATE) tell them once; the admin endpoints and their
//! refusals.

use std::sync::Arc;
use std::time::Duration;

use parley::domain::{AccountId, Currency, GatewayKind, Money, PaymentStatus, UserKey};
use parley::store::{CatalogLine, Checkout, Customer};
use parley_testkit::gateways::{FakeGateway, FakeOutcome};
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

const OWNER: &str = "6281299990001";

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin(method, path, Some(ADMIN_TOKEN), body).await
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, view) = call(app, method.clone(), path, body).await;
    assert!(
        status == 200 || status == 201 || status == 204,
        "{method} {path}: {status} {view}"
    );
    view
}

/// The owner writes to the account, so their 24 h window is open, and their conversation
/// has taken it.
async fn owner_says_hello(app: &TestApp) {
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, OWNER, "wamid.OWNER1", "hi", now_secs()))
            .await,
        200
    );
    let seen = eventually(Duration::from_secs(10), || async {
        let (status, view) = call(
            app,
            Method::GET,
            &format!("/conversations/{PNID}/{OWNER}"),
            None,
        )
        .await;
        status == 200 && view["window_open"] == true
    })
    .await;
    assert!(seen, "the owner's conversation took their message");
}

fn owner_texts(graph: &FakeGraph) -> Vec<String> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(OWNER))
        .filter_map(|a| a.text().map(str::to_string))
        .filter(|t| !t.starts_with("echo: "))
        .collect()
}

async fn material(app: &TestApp, name: &str) -> Value {
    ok(app, Method::GET, &format!("/materials/{name}"), None).await
}

async fn paid_orders_consume_materials_and_each_crossing_tells_the_owner_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.accounts[0].owner_wa_id = Some(OWNER.into());
    settings.payments.providers.insert(
        "bank".into(),
        serde_json::from_value(json!({"kind": "manual", "instructions": "BCA 1"})).unwrap(),
    );
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let store = db.store().await;
    owner_says_hello(&app).await;
    // Arrange: a cake takes 0.25 kg of flour and 0.1 kg of sugar.
    ok(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "flour", "unit": "kg", "stock": "1", "min_stock": "0.5"})),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "sugar", "unit": "kg", "stock": 10})),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "CAKE", "name": "Cake", "price": "20000", "stock": 20})),
    )
    .await;
    let set = ok(
        &app,
        Method::PUT,
        "/products/CAKE/materials",
        Some(json!([{"material": "sugar", "quantity": "0.1"}, {"material": "flour", "quantity": "0.25"}])),
    )
    .await;
    assert_eq!(
        set["materials"],
        json!([{"material": "flour", "quantity": "0.25"}, {"material": "sugar", "quantity": "0.1"}])
    );

    // Act: 3 cakes paid (confirmed by the owner): 0.75 kg of flour, 0.3 kg of sugar.
    let u = "6281200000701";
    let pay1 = order_with_payment(&store, u, "wamid.M1", "CAKE", 3).await.1;
    ok(
        &app,
        Method::POST,
        &format!("/payments/{pay1}/confirm"),
        None,
    )
    .await;

    // Assert: exact decimals, and one message for the crossing.
    let low1 = "Low stock: flour is at 0.25 kg, below its minimum of 0.5 kg.";
    assert_sent_once(
        &graph,
        low1,
        "the first crossing",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(material(&app, "flour").await["stock"], "0.25");
    assert_eq!(material(&app, "sugar").await["stock"], "9.7");
    assert!(
        eventually(Duration::from_secs(5), || async {
            material(&app, "flour").await["low_alert"] == "sent"
        })
        .await
    );
    let cake = ok(&app, Method::GET, "/products/CAKE", None).await;
    assert_eq!(
        (cake["stock"].as_i64(), cake["reserved"].as_i64()),
        (Some(17), Some(0))
    );

    // A second settle of the same payment, a second confirm, a reconciliation pass:
    // nothing more is consumed or sent.
    let now = parley::store::now_ms();
    assert!(!store
        .settle_payment(pay1, PaymentStatus::Pending, PaymentStatus::Paid, None, now)
        .await
        .unwrap());
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/payments/{pay1}/confirm"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a paid payment is not confirmed again");
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    assert_eq!(material(&app, "flour").await["stock"], "0.25");
    assert_eq!(material(&app, "sugar").await["stock"], "9.7");

    // Another 3 cakes: flour below zero, recorded truthfully; still the same crossing.
    let pay2 = order_with_payment(&store, u, "wamid.M2", "CAKE", 3).await.1;
    ok(
        &app,
        Method::POST,
        &format!("/payments/{pay2}/confirm"),
        None,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            material(&app, "flour").await["stock"] == "-0.5"
        })
        .await
    );
    assert_eq!(material(&app, "sugar").await["stock"], "9.4");

    // A restock clears the alert; the next fall is a new crossing. This one is paid with
    // no message sent after the commit (as if the process stopped there): the
    // reconciliation pass tells it, once however often it runs.
    let restocked = ok(
        &app,
        Method::POST,
        "/materials/flour/stock",
        Some(json!({"set": "1.2", "reason": "delivery"})),
    )
    .await;
    assert_eq!(
        (restocked["stock"].as_str(), restocked["low_alert"].as_str()),
        (Some("1.2"), Some("none"))
    );
    // (The owner alerts the restock looked for have run.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pay3 = order_with_payment(&store, u, "wamid.M3", "CAKE", 4).await.1;
    let now = parley::store::now_ms();
    assert!(store
        .settle_payment(pay3, PaymentStatus::Pending, PaymentStatus::Paid, None, now)
        .await
        .unwrap());
    assert_eq!(
        material(&app, "flour").await["low_alert"],
        "pending",
        "owed, in the store"
    );
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    let low2 = "Low stock: flour is at 0.2 kg, below its minimum of 0.5 kg.";
    assert_sent_once(
        &graph,
        low2,
        "the second crossing",
        Duration::from_millis(300),
    )
    .await;
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        owner_texts(&graph),
        vec![low1.to_string(), low2.to_string()],
        "one message per crossing"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            material(&app, "flour").await["low_alert"] == "sent"
        })
        .await
    );
    assert_eq!(material(&app, "sugar").await["stock"], "9");
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM orders WHERE materials_used IS NOT NULL"
        )
        .await,
        3
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "parley_low_stock_alerts_total{{account=\"{PNID}\"}}"
        )),
        "{metrics}"
    );
    app.stop().await;
}
on_both_stores!(
    paid_orders_consume_materials_and_cross_once,
    paid_orders_consume_materials_and_each_crossing_tells_the_owner_once
);

const FLOW: &str = r#"
id: buy
triggers:
  - keyword: buy
start: add
nodes:
  add:
    cart: {add: {sku: KOPI, qty: 2}}
    next: checkout
  checkout:
    checkout: {}
    next: pay
  pay:
    payment: {method: retail, store: indomaret}
    branches: {expired: late, failed: failed}
    next: paid
  paid:
    send: {text: "Paid {{order.number}}"}
  late:
    send: {text: "Expired {{order.number}}"}
  failed:
    send: {text: "Failed {{order.number}}"}
"#;

async fn wait_delivered_to(graph: &FakeGraph, user: &str, n: usize) {
    let got = graph
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    assert!(got, "{n} messages to {user}");
}

async fn held_payments_tell_the_owner_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("buy.yaml"), FLOW).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    settings
        .payments
        .providers
        .insert("gw".into(), gateway.provider());
    settings.accounts[0].payments = Some("gw".into());
    settings.accounts[0].owner_wa_id = Some(OWNER.into());
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    owner_says_hello(&app).await;
    ok(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "KOPI", "name": "Kopi", "price": "25000", "stock": 10})),
    )
    .await;
    let url = format!("{}/payments/gw/callback", app.base);
    let due = Money::parse("50000", Currency::IDR).unwrap();

    // MISMATCH: 40,000 paid of 50,000.
    let u1 = "6281200000801";
    app.post_webhook(&text_webhook(PNID, u1, "wamid.H1", "buy", now_secs()))
        .await;
    wait_delivered_to(&graph, u1, 1).await;
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, Some("40000"));
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    let off = parley::commerce::payment::owner_news(
        PaymentStatus::Mismatch,
        1,
        "ORD-000001",
        &due,
        Some(&Money::parse("40000", Currency::IDR).unwrap()),
    )
    .unwrap();
    assert_sent_once(&graph, &off, "the mismatch", Duration::from_millis(200)).await;

    // PAID_LATE: money after the payment expired.
    let u2 = "6281200000802";
    app.post_webhook(&text_webhook(PNID, u2, "wamid.H2", "buy", now_secs()))
        .await;
    wait_delivered_to(&graph, u2, 1).await;
    assert!(store
        .settle_payment(
            2,
            PaymentStatus::Pending,
            PaymentStatus::Expired,
            None,
            parley::store::now_ms()
        )
        .await
        .unwrap());
    gateway.set_outcome("PAY-00000002", FakeOutcome::Paid, None);
    assert_eq!(gateway.post_callback(&url, "PAY-00000002").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.payment(2).await.unwrap().unwrap().status == PaymentStatus::PaidLate
        })
        .await
    );
    let paid2 = store.payment(2).await.unwrap().unwrap();
    let late = parley::commerce::payment::owner_news(
        PaymentStatus::PaidLate,
        2,
        "ORD-000002",
        &due,
        paid2.paid_amount.as_ref(),
    )
    .unwrap();
    assert_sent_once(
        &graph,
        &late,
        "the late payment",
        Duration::from_millis(200),
    )
    .await;

    // Redeliveries and reconciliation passes tell nothing more.
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert_eq!(gateway.post_callback(&url, "PAY-00000002").await, 200);
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    ok(&app, Method::POST, "/payments/reconcile", None).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(owner_texts(&graph), vec![off, late], "each once");
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM payments WHERE owner_told = status"
        )
        .await,
        2
    );
    app.stop().await;
}
on_both_stores!(
    held_payments_tell_the_owner_once_each,
    held_payments_tell_the_owner_once
);

/// Without `owner_wa_id`, a crossing is still logged, counted and marked given, and no
/// message goes anywhere.
async fn without_an_owner_nothing_is_sent(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    ok(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "box", "unit": "pcs", "stock": 5, "min_stock": 2})),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "/materials/box/stock",
        Some(json!({"delta": -4})),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            material(&app, "box").await["low_alert"] == "sent"
        })
        .await
    );
    assert!(
        graph.delivered().is_empty(),
        "{:?}",
        graph.delivered_texts()
    );
    app.stop().await;
}
on_both_stores!(
    without_an_owner_nothing_is_sent_anywhere,
    without_an_owner_nothing_is_sent
);

async fn the_admin_api_keeps_materials_exact_and_refuses_bad_input(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let (status, _) = app.admin(Method::GET, "/materials", None, None).await;
    assert_eq!(status, 401, "no token");

    // Materials: create, update, read.
    let (status, flour) = call(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "flour", "unit": "kg", "stock": "2.50", "min_stock": "1"})),
    )
    .await;
    assert_eq!(status, 201, "{flour}");
    assert_eq!(
        (flour["stock"].as_str(), flour["min_stock"].as_str()),
        (Some("2.5"), Some("1"))
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "flour", "unit": "kg", "stock": "3"})),
    )
    .await;
    assert_eq!(status, 200, "an update");
    for (body, what) in [
        (
            json!({"name": "bad name", "unit": "kg"}),
            "a name with a space",
        ),
        (json!({"name": "salt"}), "no unit"),
        (
            json!({"name": "salt", "unit": "kg", "stock": 1.5}),
            "a float",
        ),
        (
            json!({"name": "salt", "unit": "kg", "stock": "-1"}),
            "negative",
        ),
        (
            json!({"name": "salt", "unit": "kg", "stock": "0.0000001"}),
            "too precise",
        ),
        (
            json!({"name": "salt", "unit": "kg", "min_stock": "lots"}),
            "not a number",
        ),
        (
            json!({"name": "salt", "unit": "kg", "colour": "white"}),
            "an unknown field",
        ),
        (json!({"unit": "kg"}), "no name"),
    ] {
        let (status, err) = call(&app, Method::POST, "/materials", Some(body)).await;
        assert_eq!(status, 422, "{what}: {err}");
        assert!(err["error"].is_string(), "{what}: {err}");
    }
    let resp = app
        .http
        .post(format!("{}/admin/v1/materials", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "not JSON");
    let (status, _) = call(&app, Method::GET, "/materials/salt", None).await;
    assert_eq!(status, 404, "nothing was made of the refusals");
    let patched = ok(
        &app,
        Method::PATCH,
        "/materials/flour",
        Some(json!({"min_stock": "0.5", "unit": "kilo"})),
    )
    .await;
    assert_eq!(
        (patched["unit"].as_str(), patched["stock"].as_str()),
        (Some("kilo"), Some("3"))
    );
    let (status, _) = call(
        &app,
        Method::PATCH,
        "/materials/nope",
        Some(json!({"unit": "g"})),
    )
    .await;
    assert_eq!(status, 404);

    // Stock: delta or set, decimal, never lowered below zero.
    let adjusted = ok(
        &app,
        Method::POST,
        "/materials/flour/stock",
        Some(json!({"delta": "-0.75", "reason": "spilt"})),
    )
    .await;
    assert_eq!(adjusted["stock"], "2.25");
    for (body, want, what) in [
        (json!({"delta": -0.5}), 422, "a float"),
        (json!({}), 422, "neither"),
        (json!({"delta": "1", "set": "2"}), 422, "both"),
        (json!({"set": "-1"}), 422, "a negative count"),
        (json!({"delta": "-3"}), 409, "below zero"),
        (
            json!({"delta": "1", "reason": "x".repeat(201)}),
            422,
            "a long reason",
        ),
    ] {
        let (status, err) = call(&app, Method::POST, "/materials/flour/stock", Some(body)).await;
        assert_eq!(status, want, "{what}: {err}");
    }
    let (status, _) = call(
        &app,
        Method::POST,
        "/materials/nope/stock",
        Some(json!({"delta": 1})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        ok(
            &app,
            Method::POST,
            "/materials/flour/stock",
            Some(json!({"set": "7.125"}))
        )
        .await["stock"],
        "7.125"
    );

    // A product's materials, shown with the product.
    ok(
        &app,
        Method::POST,
        "/materials",
        Some(json!({"name": "egg", "unit": "pcs", "stock": 12})),
    )
    .await;
    let cake = ok(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "CAKE", "name": "Cake", "price": "20000", "stock": 5})),
    )
    .await;
    assert_eq!(cake["materials"], json!([]));
    ok(
        &app,
        Method::PUT,
        "/products/CAKE/materials",
        Some(json!({"materials": [{"material": "flour", "quantity": "0.250"}, {"material": "egg", "quantity": 2}]})),
    )
    .await;
    let cake = ok(&app, Method::GET, "/products/CAKE", None).await;
    assert_eq!(
        cake["materials"],
        json!([{"material": "egg", "quantity": "2"}, {"material": "flour", "quantity": "0.25"}])
    );
    for (body, want, what) in [
        (
            json!([{"material": "butter", "quantity": "1"}]),
            422,
            "an unknown material",
        ),
        (
            json!([{"material": "egg", "quantity": 0.5}]),
            422,
            "a float",
        ),
        (json!([{"material": "egg", "quantity": "0"}]), 422, "zero"),
        (
            json!([{"material": "egg", "quantity": "1"}, {"material": "egg", "quantity": "2"}]),
            422,
            "twice",
        ),
        (json!({"nope": []}), 422, "not a list"),
    ] {
        let (status, err) = call(&app, Method::PUT, "/products/CAKE/materials", Some(body)).await;
        assert_eq!(status, want, "{what}: {err}");
    }
    let (status, _) = call(
        &app,
        Method::PUT,
        "/products/NOPE/materials",
        Some(json!([])),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        ok(&app, Method::GET, "/products/CAKE", None).await["materials"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "a refused list changed nothing"
    );
    let (status, err) = call(&app, Method::DELETE, "/materials/egg", None).await;
    assert_eq!(status, 409, "in use: {err}");
    assert!(err["error"].as_str().unwrap().contains("CAKE"), "{err}");
    ok(
        &app,
        Method::PUT,
        "/products/CAKE/materials",
        Some(json!([])),
    )
    .await;
    let (status, _) = call(&app, Method::DELETE, "/materials/egg", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, Method::DELETE, "/materials/egg", None).await;
    assert_eq!(status, 404);

    // Listing by name, with a cursor.
    for n in ["a1", "b2", "c3"] {
        ok(
            &app,
            Method::POST,
            "/materials",
            Some(json!({"name": n, "unit": "g"})),
        )
        .await;
    }
    let page = ok(&app, Method::GET, "/materials?limit=2", None).await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1", "b2"]);
    let next = page["next_cursor"].as_str().unwrap();
    let page = ok(
        &app,
        Method::GET,
        &format!("/materials?limit=2&cursor={next}"),
        None,
    )
    .await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c3", "flour"]);
    let (status, _) = call(&app, Method::GET, "/materials?cursor=zz", None).await;
    assert_eq!(status, 400);

    // A product's stock: whole units, never taking what unpaid orders hold.
    assert_eq!(
        ok(
            &app,
            Method::POST,
            "/products/CAKE/stock",
            Some(json!({"delta": 3}))
        )
        .await["stock"],
        8
    );
    assert_eq!(
        ok(
            &app,
            Method::POST,
            "/products/CAKE/stock",
            Some(json!({"set": 4, "reason": "count"}))
        )
        .await["stock"],
        4
    );
    let u = "6281200000901";
    let checkout = store
        .catalog_order(
            &AccountId::from(PNID),
            &UserKey::from(u),
            "wamid.R1",
            &Customer::default(),
            &[CatalogLine {
                sku: "CAKE".into(),
                quantity: 3,
                claimed: None,
            }],
            Currency::IDR,
            parley::store::now_ms(),
        )
        .await
        .unwrap();
    assert!(matches!(checkout, Checkout::Ordered { .. }), "{checkout:?}");
    for (body, want, what) in [
        (json!({"delta": -2}), 409, "units an unpaid order holds"),
        (json!({"set": -1}), 409, "a negative count"),
        (json!({"delta": 1.5}), 422, "a float"),
        (json!({"delta": "1"}), 422, "a string"),
        (json!({"delta": 1, "set": 1}), 422, "both"),
    ] {
        let (status, err) = call(&app, Method::POST, "/products/CAKE/stock", Some(body)).await;
        assert_eq!(status, want, "{what}: {err}");
    }
    let cake = ok(
        &app,
        Method::POST,
        "/products/CAKE/stock",
        Some(json!({"delta": -1})),
    )
    .await;
    assert_eq!(
        (cake["stock"].as_i64(), cake["reserved"].as_i64()),
        (Some(0), Some(3))
    );
    ok(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "FREE", "name": "Free", "price": "1"})),
    )
    .await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/products/FREE/stock",
        Some(json!({"set": 1})),
    )
    .await;
    assert_eq!(status, 409, "untracked");
    let (status, _) = call(
        &app,
        Method::POST,
        "/products/NOPE/stock",
        Some(json!({"set": 1})),
    )
    .await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_stores!(
    the_admin_api_keeps_materials_exact,
    the_admin_api_keeps_materials_exact_and_refuses_bad_input
);

async fn subscriptions_are_listed_filtered_and_shown(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    for (user, sku, status) in [
        ("6281200000001", "GOLD", "active"),
        ("6281200000002", "GOLD", "expired"),
        ("6281200000001", "SILVER", "active"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO subscriptions (account, user_key, sku, period_start, period_end, status, created_at, updated_at) \
             VALUES ('{PNID}', '{user}', '{sku}', 1000, 4102444800000, '{status}', 1000, 1000)"
        ))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let page = ok(&app, Method::GET, "/subscriptions?limit=2", None).await;
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2], "newest first");
    let next = page["next_cursor"].as_str().unwrap();
    let page = ok(
        &app,
        Method::GET,
        &format!("/subscriptions?limit=2&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["id"], 1);
    assert!(page["next_cursor"].is_null());
    let mine = ok(
        &app,
        Method::GET,
        "/subscriptions?wa_id=%2B6281200000001&status=active",
        None,
    )
    .await;
    let skus: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["SILVER", "GOLD"]);
    let ended = ok(&app, Method::GET, "/subscriptions?status=expired", None).await;
    assert_eq!(ended["items"].as_array().unwrap().len(), 1);
    assert_eq!(ended["items"][0]["wa_id"], "6281200000002");
    let one = ok(&app, Method::GET, "/subscriptions/2", None).await;
    assert_eq!(
        (one["sku"].as_str(), one["status"].as_str()),
        (Some("GOLD"), Some("expired"))
    );
    for (path, want) in [
        ("/subscriptions/99", 404),
        ("/subscriptions/x", 404),
        ("/subscriptions?status=paused", 400),
        ("/subscriptions?cursor=zz", 400),
        ("/subscriptions?limit=0", 422),
        ("/subscriptions?account=123", 404),
    ] {
        let (status, body) = call(&app, Method::GET, path, None).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    app.stop().await;
}
on_both_stores!(
    subscriptions_are_listed,
    subscriptions_are_listed_filtered_and_shown
);
