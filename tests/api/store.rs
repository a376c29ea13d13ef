//! The store flow through the whole daemon: the catalog from the store as a WhatsApp list, a
//! cart, a checkout that reserves the stock, the customer's orders; and 50 customers racing
//! for 10 units.

use std::sync::Arc;
use std::time::Duration;

use parley::domain::{AccountId, Currency, Money, ProductKind};
use parley::store::{Product, Store};
use parley_testkit::{button_reply_webhook, list_reply_webhook, text_webhook, Attempt, FakeGraph};
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

async fn seed(store: &Store, products: &[Product]) {
    let account = AccountId::from(PNID);
    for p in products {
        store.upsert_product(&account, p).await.unwrap();
    }
}

async fn the_store_sells_from_the_catalog_and_reserves_the_stock(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_flows(settings).await;
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
    for (i, (body, want)) in steps.into_iter().enumerate() {
        let reply = say(&app, &graph, u, body, i + 2).await;
        assert_eq!(read(&reply), want, "step {}", i + 2);
    }
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
    app.stop().await;
}
on_both_stores!(
    the_store_flow_sells_from_the_catalog,
    the_store_sells_from_the_catalog_and_reserves_the_stock
);

async fn fifty_customers_racing_for_ten_units_get_exactly_ten_orders(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
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
