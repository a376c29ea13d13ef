//! The store flow through the whole daemon: the catalog from the store as a WhatsApp list, a
//! cart, a checkout that reserves the stock, the customer's orders; and 50 customers racing
//! for 10 units.

use std::sync::Arc;
use std::time::Duration;

use parley::domain::{AccountId, Currency, GatewayKind, Money, ProductKind};
use parley::store::{Product, Store};
use parley_testkit::gateways::{FakeGateway, FakeOutcome};
use parley_testkit::{
    button_reply_webhook, list_reply_webhook, order_webhook, text_webhook, Attempt, FakeGraph,
};
use serde_json::Value;

use crate::helpers::*;
use crate::on_both_stores;

fn product(sku: &str, name: &str, price: &str, stock: Option<i64>, position: i64) -> Product {
    Product {
        sku: sku.into(),
        name: name.into(),
        description: None,
        price: Money::parse(price, Currency::IDR).unwrap(),
        stock,
        reserved: 0,
        image_url: None,
        category: None,
        active: true,
        kind: ProductKind::Product,
        period_days: None,
        access_link: None,
        position,
        created_at: 0,
        updated_at: 0,
    }
}

/// What a customer reads of a message: its text, or an interactive message's body.
fn read(a: &Attempt) -> String {
    a.text()
        .map(str::to_string)
        .or_else(|| {
            a.body
                .pointer("/interactive/body/text")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn replies_to(graph: &FakeGraph, user: &str) -> Vec<Attempt> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .collect()
}

/// Wait for the user's `n`-th reply (to something other than a webhook).
async fn say_nothing_then(graph: &FakeGraph, user: &str, n: usize) -> Attempt {
    let got = graph
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    let replies = replies_to(graph, user);
    assert!(
        got,
        "reply {n} to {user}; got {:?}",
        replies.iter().map(read).collect::<Vec<_>>()
    );
    replies[n - 1].clone()
}

/// Post `body` and wait for the user's `n`-th reply; its text.
async fn say(app: &TestApp, graph: &FakeGraph, user: &str, body: String, n: usize) -> Attempt {
    assert_eq!(app.post_webhook(&body).await, 200);
    let got = graph
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    let replies = replies_to(graph, user);
    assert!(
        got,
        "reply {n} to {user}; got {:?}",
        replies.iter().map(read).collect::<Vec<_>>()
    );
    replies[n - 1].clone()
}

/// The settings of a store whose account pays through a fake Xendit.
fn store_settings(
    db: &TestDb,
    graph: &FakeGraph,
    gateway: &FakeGateway,
) -> parley::config::Settings {
    let mut settings = test_settings(db, graph);
    settings.flows.dir = "flows".into();
    settings
        .payments
        .providers
        .insert("xendit".into(), gateway.provider());
    settings.accounts[0].payments = Some("xendit".into());
    settings
}

async fn seed(store: &Store, products: &[Product]) {
    let account = AccountId::from(PNID);
    for p in products {
        store.upsert_product(&account, p).await.unwrap();
    }
}

async fn the_store_sells_from_the_catalog_and_reserves_the_stock(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
    let app = spawn_app_with_flows(store_settings(&db, &graph, &gateway)).await;
    let store = db.store().await;
    seed(
        &store,
        &[
            product("KOPI", "Kopi Arabica", "25000", Some(5), 1),
            product("TEH", "Teh Melati", "15000", None, 2),
            product("ROTI", "Roti Bakar", "10000", Some(0), 3),
        ],
    )
    .await;
    let u = "6281200000101";
    let t = now_secs();
    let list = say(
        &app,
        &graph,
        u,
        text_webhook(PNID, u, "wamid.ST1", "store", t),
        1,
    )
    .await;
    assert_eq!(read(&list), "What would you like? Pick a product.");
    let rows: Vec<(String, String, String)> = list.body["interactive"]["action"]["sections"][0]
        ["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["title"].as_str().unwrap().to_string(),
                r["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("KOPI".into(), "Kopi Arabica".into(), "Rp 25.000".into()),
            ("TEH".into(), "Teh Melati".into(), "Rp 15.000".into()),
            (
                "ROTI".into(),
                "Roti Bakar".into(),
                "Rp 10.000 · sold out".into()
            ),
        ]
    );
    let steps: Vec<(String, &str)> = vec![
        (
            list_reply_webhook(PNID, u, "wamid.ST2", "ROTI", "Roti Bakar", t),
            "Sorry, Roti Bakar is sold out.",
        ),
        (
            list_reply_webhook(PNID, u, "wamid.ST3", "KOPI", "Kopi Arabica", t),
            "Kopi Arabica: Rp 25.000. How many?",
        ),
        (
            text_webhook(PNID, u, "wamid.ST4", "2", t),
            "In your cart:\n2 × Kopi Arabica — Rp 50.000\nTotal: Rp 50.000",
        ),
        (
            button_reply_webhook(PNID, u, "wamid.ST5", "more", "Add more", t),
            "What would you like? Pick a product.",
        ),
        (
            list_reply_webhook(PNID, u, "wamid.ST6", "TEH", "Teh Melati", t),
            "Teh Melati: Rp 15.000. How many?",
        ),
        (
            text_webhook(PNID, u, "wamid.ST7", "1", t),
            "In your cart:\n2 × Kopi Arabica — Rp 50.000\n1 × Teh Melati — Rp 15.000\nTotal: Rp 65.000",
        ),
        (
            button_reply_webhook(PNID, u, "wamid.ST8", "checkout", "Check out", t),
            "Order ORD-000001 is placed:\n2 × Kopi Arabica — Rp 50.000\n1 × Teh Melati — Rp 15.000\nTotal: Rp 65.000",
        ),
        (
            text_webhook(PNID, u, "wamid.ST9", "my orders", t),
            "Your orders:\nORD-000001 — pending, unpaid — Rp 65.000",
        ),
    ];
    // Reply 9 is the payment's instructions (after the order, before "my orders").
    for (i, (body, want)) in steps.into_iter().enumerate() {
        // The order's reply is followed by the payment's: "my orders" is reply 10.
        let n = if i == 7 { 10 } else { i + 2 };
        let reply = say(&app, &graph, u, body, n).await;
        assert_eq!(read(&reply), want, "step {}", i + 2);
    }
    let va = read(&replies_to(&graph, u)[8]);
    assert!(
        va.starts_with("Please transfer Rp 65.000 to BCA virtual account 8808")
            && va.ends_with("within 1 hour (order ORD-000001)."),
        "{va}"
    );
    // The stock of the order is reserved for its payment; the untracked product has none.
    let account = AccountId::from(PNID);
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(3), 2));
    let teh = store.product(&account, "TEH").await.unwrap().unwrap();
    assert_eq!((teh.stock, teh.reserved), (None, 0));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM order_items").await, 2);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM carts WHERE status = 'ordered' AND order_id IS NOT NULL"
        )
        .await,
        1
    );
    // A redelivered checkout changes nothing.
    let again = button_reply_webhook(PNID, u, "wamid.ST8", "checkout", "Check out", t);
    assert_eq!(app.post_webhook(&again).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM orders").await, 1);
    // The customer pays. A callback with a wrong token changes nothing; the right one is
    // confirmed with the gateway, the stock is sold, and the customer (no longer in the
    // payment's flow: "my orders" took it elsewhere) gets a receipt; a duplicate, nothing.
    let url = format!("{}/payments/xendit/callback", app.base);
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    let forged = gateway.callback("PAY-00000001");
    let mut req = reqwest::Client::new().post(&url).body(forged.body.clone());
    for (k, v) in &forged.headers {
        let v = if k.eq_ignore_ascii_case("x-callback-token") {
            "wrong"
        } else {
            v.as_str()
        };
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 401);
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    let receipt = say_nothing_then(&graph, u, 11).await;
    assert_eq!(
        read(&receipt),
        "Payment of Rp 65.000 received for order ORD-000001. Thank you!"
    );
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(3), 0));
    let order = store.order(&account, "ORD-000001").await.unwrap().unwrap();
    assert_eq!(
        (order.status, order.payment_status),
        (
            parley::domain::OrderStatus::Processing,
            parley::domain::OrderPayment::Paid
        )
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies_to(&graph, u).len(), 11, "one receipt");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM payment_events").await,
        1,
        "the redelivery is recorded once"
    );
    // The owner completes the order: the customer hears it, once.
    for _ in 0..2 {
        let (status, _) = app
            .admin(
                reqwest::Method::PATCH,
                "/orders/ORD-000001",
                Some(ADMIN_TOKEN),
                Some(serde_json::json!({"status": "completed"})),
            )
            .await;
        assert!(status == 200 || status == 409, "{status}");
    }
    let news = say_nothing_then(&graph, u, 12).await;
    assert_eq!(read(&news), "Order ORD-000001 is completed. Thank you!");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies_to(&graph, u).len(), 12);
    app.stop().await;
}
on_both_stores!(
    the_store_flow_sells_from_the_catalog,
    the_store_sells_from_the_catalog_and_reserves_the_stock
);

async fn fifty_customers_racing_for_ten_units_get_exactly_ten_orders(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
    let mut settings = store_settings(&db, &graph, &gateway);
    settings.accounts[0].mark_read = false;
    settings.accounts[0].pair_rate_interval = Duration::ZERO;
    settings.accounts[0].messages_per_second = 1000;
    let app = Arc::new(spawn_app_with_flows(settings).await);
    let store = db.store().await;
    seed(
        &store,
        &[product("LAST", "Last Batch", "99000", Some(10), 1)],
    )
    .await;
    let users: Vec<String> = (0..50).map(|i| format!("62812000{i:05}")).collect();
    let t = now_secs();
    // Every customer puts one in the cart (the cart does not hold stock).
    let filled = futures::future::join_all(users.iter().map(|u| {
        let (app, graph) = (app.clone(), graph.clone());
        async move {
            say(
                &app,
                &graph,
                u,
                text_webhook(PNID, u, &format!("wamid.R1{u}"), "store", t),
                1,
            )
            .await;
            say(
                &app,
                &graph,
                u,
                list_reply_webhook(PNID, u, &format!("wamid.R2{u}"), "LAST", "Last Batch", t),
                2,
            )
            .await;
            read(
                &say(
                    &app,
                    &graph,
                    u,
                    text_webhook(PNID, u, &format!("wamid.R3{u}"), "1", t),
                    3,
                )
                .await,
            )
        }
    }))
    .await;
    assert!(
        filled
            .iter()
            .all(|r| r.starts_with("In your cart:\n1 × Last Batch")),
        "{filled:?}"
    );
    // Then all check out at once.
    let outcomes = futures::future::join_all(users.iter().map(|u| {
        let (app, graph) = (app.clone(), graph.clone());
        async move {
            read(
                &say(
                    &app,
                    &graph,
                    u,
                    button_reply_webhook(
                        PNID,
                        u,
                        &format!("wamid.R4{u}"),
                        "checkout",
                        "Check out",
                        t,
                    ),
                    4,
                )
                .await,
            )
        }
    }))
    .await;
    let ordered = outcomes
        .iter()
        .filter(|r| r.starts_with("Order ORD-"))
        .count();
    let refused = outcomes
        .iter()
        .filter(|r| {
            r.as_str()
                == "Sorry, Last Batch sold out meanwhile. Nothing was ordered; your cart is kept."
        })
        .count();
    assert_eq!((ordered, refused), (10, 40), "{outcomes:?}");
    let last = store
        .product(&AccountId::from(PNID), "LAST")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last.stock, last.reserved), (Some(0), 10));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM orders").await, 10);
    assert_eq!(
        count(
            &store,
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM order_items"
        )
        .await,
        10
    );
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}
on_both_stores!(
    fifty_customers_race_for_ten_units,
    fifty_customers_racing_for_ten_units_get_exactly_ten_orders
);

async fn a_catalog_order_message_becomes_an_order_priced_from_our_catalog(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
    let app = spawn_app_with_flows(store_settings(&db, &graph, &gateway)).await;
    let store = db.store().await;
    seed(
        &store,
        &[
            product("KOPI", "Kopi Arabica", "25000", Some(5), 1),
            product("TEH", "Teh Melati", "15000", None, 2),
        ],
    )
    .await;
    let u = "6281200000202";
    let t = now_secs();
    // The message claims 20000 for KOPI: ours (25000) wins, theirs is kept beside it.
    let order = order_webhook(
        PNID,
        u,
        "wamid.CO1",
        &[("KOPI", 2, 20000), ("TEH", 1, 15000)],
        t,
    );
    let reply = say(&app, &graph, u, order.clone(), 1).await;
    assert_eq!(
        read(&reply),
        "Order ORD-000001 is placed:\n2 × Kopi Arabica — Rp 50.000\n1 × Teh Melati — Rp 15.000\nTotal: Rp 65.000"
    );
    let saved = store
        .order(&AccountId::from(PNID), "ORD-000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.source, parley::domain::OrderSource::Catalog);
    assert_eq!(saved.total, Money::parse("65000", Currency::IDR).unwrap());
    assert_eq!(
        saved.items[0].catalog_price,
        Some(Money::parse("20000", Currency::IDR).unwrap())
    );
    assert_eq!(saved.items[1].catalog_price, None);
    // Redelivered: no second order. An order for more than there is: refused, nothing held.
    assert_eq!(app.post_webhook(&order).await, 200);
    // Reply 2 is the order's payment instructions.
    let va = read(&say_nothing_then(&graph, u, 2).await);
    assert!(va.starts_with("Please transfer Rp 65.000"), "{va}");
    let too_many = order_webhook(PNID, u, "wamid.CO2", &[("KOPI", 4, 25000)], t);
    let reply = say(&app, &graph, u, too_many, 3).await;
    assert_eq!(
        read(&reply),
        "Sorry, Kopi Arabica cannot be had in that quantity. Nothing was ordered."
    );
    let unknown = order_webhook(PNID, u, "wamid.CO3", &[("NOPE", 1, 1000)], t);
    let reply = say(&app, &graph, u, unknown, 4).await;
    assert_eq!(
        read(&reply),
        "Sorry, NOPE cannot be had in that quantity. Nothing was ordered."
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM orders").await, 1);
    let kopi = store
        .product(&AccountId::from(PNID), "KOPI")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(3), 2));
    app.stop().await;
}
on_both_stores!(
    a_catalog_order_message_becomes_an_order,
    a_catalog_order_message_becomes_an_order_priced_from_our_catalog
);

/// A shop call made again (after a crash, the actor makes the committed call once more) has
/// no second effect: the cart holds what one call added, the checkout finds its order.
async fn a_shop_call_made_again_takes_effect_once(db: TestDb) {
    use parley::store::{CartChange, CartChanged, Checkout, Customer};
    let store = db.store().await;
    store.migrate().await.unwrap();
    seed(
        &store,
        &[product("KOPI", "Kopi Arabica", "25000", Some(5), 1)],
    )
    .await;
    let account = AccountId::from(PNID);
    let user = parley::domain::UserKey::from("6281200000303");
    for _ in 0..2 {
        let (changed, cart) = store
            .change_cart(
                &account,
                &user,
                "shop-add-1",
                CartChange::Add {
                    sku: "KOPI",
                    quantity: 2,
                },
                Currency::IDR,
                1,
            )
            .await
            .unwrap();
        assert_eq!(changed, CartChanged::Ok);
        assert_eq!(cart.unwrap().lines[0].quantity, 2);
    }
    let mut numbers = Vec::new();
    for _ in 0..2 {
        match store
            .checkout(&account, &user, "shop-checkout-1", &Customer::default(), 2)
            .await
            .unwrap()
        {
            Checkout::Ordered { order } => numbers.push(order.order_number),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(numbers[0], numbers[1]);
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(3), 2));
    // Adding more than the stock leaves the cart as it was.
    let (changed, _) = store
        .change_cart(
            &account,
            &user,
            "shop-add-2",
            CartChange::Add {
                sku: "KOPI",
                quantity: 4,
            },
            Currency::IDR,
            3,
        )
        .await
        .unwrap();
    assert_eq!(changed, CartChanged::OutOfStock);
    assert!(store.open_cart(&account, &user).await.unwrap().is_none());
}
on_both_stores!(
    a_shop_call_made_again,
    a_shop_call_made_again_takes_effect_once
);

/// A customer who waits in the flow: paid, its `paid` branch; another who never pays: the
/// reconciliation pass finds the payment past its expiry, the flow's `expired` branch, the
/// stock back; a third pays less than asked: MISMATCH, held for the owner, nothing told.
async fn payments_settle_the_flow_that_waits_on_them(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
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
    let app = spawn_app_with_clock(
        store_settings(&db, &graph, &gateway),
        Arc::new(clock.clone()),
    )
    .await;
    let store = db.store().await;
    seed(
        &store,
        &[product("KOPI", "Kopi Arabica", "25000", Some(10), 1)],
    )
    .await;
    let t = now_secs();
    let buy = |u: &'static str| {
        let (app, graph) = (&app, &graph);
        async move {
            say(
                app,
                graph,
                u,
                text_webhook(PNID, u, &format!("wamid.P1{u}"), "store", t),
                1,
            )
            .await;
            say(
                app,
                graph,
                u,
                list_reply_webhook(PNID, u, &format!("wamid.P2{u}"), "KOPI", "Kopi Arabica", t),
                2,
            )
            .await;
            say(
                app,
                graph,
                u,
                text_webhook(PNID, u, &format!("wamid.P3{u}"), "1", t),
                3,
            )
            .await;
            say(
                app,
                graph,
                u,
                button_reply_webhook(PNID, u, &format!("wamid.P4{u}"), "checkout", "Check out", t),
                4,
            )
            .await;
            say_nothing_then(graph, u, 5).await
        }
    };
    let (payer, sleeper, short) = ("6281200000401", "6281200000402", "6281200000403");
    assert!(read(&buy(payer).await).starts_with("Please transfer Rp 25.000"));
    assert!(read(&buy(sleeper).await).starts_with("Please transfer Rp 25.000"));
    assert!(read(&buy(short).await).starts_with("Please transfer Rp 25.000"));
    let url = format!("{}/payments/xendit/callback", app.base);
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert_eq!(
        read(&say_nothing_then(&graph, payer, 6).await),
        "Payment of Rp 25.000 received for order ORD-000001. Thank you!"
    );
    gateway.set_outcome("PAY-00000003", FakeOutcome::Paid, Some("20000"));
    assert_eq!(gateway.post_callback(&url, "PAY-00000003").await, 200);
    let account = AccountId::from(PNID);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.payment(3).await.unwrap().unwrap().status
                == parley::domain::PaymentStatus::Mismatch
        })
        .await,
        "a short payment is held as MISMATCH"
    );
    // Two hours on, the reconciliation pass: the sleeper's payment has expired.
    clock.advance(Duration::from_secs(2 * 3600));
    let (status, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        read(&say_nothing_then(&graph, sleeper, 6).await),
        "The time to pay for order ORD-000002 has passed; the order is cancelled."
    );
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    // 10 - 3 ordered; the payer's sold, the sleeper's back, the short one's still held.
    assert_eq!((kopi.stock, kopi.reserved), (Some(8), 1));
    let cancelled = store.order(&account, "ORD-000002").await.unwrap().unwrap();
    assert_eq!(cancelled.status, parley::domain::OrderStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replies_to(&graph, short).len(),
        5,
        "nothing told of a mismatch"
    );
    // The owner accepts the short payment by hand.
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/payments/3/confirm",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        read(&say_nothing_then(&graph, short, 6).await),
        "Payment of Rp 25.000 received for order ORD-000003. Thank you!"
    );
    let (status, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/3/confirm",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 409, "a paid payment is not confirmed twice");
    ticking.abort();
    app.stop().await;
}
on_both_stores!(
    payments_settle_the_flow,
    payments_settle_the_flow_that_waits_on_them
);
