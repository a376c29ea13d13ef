//! Vouchers: the store flow's voucher step and each reason one is refused, the discount on the
//! order, two customers taking the last use at once, many checkouts racing for a few uses,
//! and the admin endpoints.

use std::sync::Arc;
use std::time::Duration;

use parley::conversation::CoreLogic;
use parley::domain::VoucherRefusal;
use parley::domain::{AccountId, Currency, Money, ProductKind, UserKey, Voucher, VoucherKind};
use parley::store::{CartChange, Checkout, Customer, Product, Store};
use parley_testkit::{button_reply_webhook, list_reply_webhook, text_webhook, Attempt, FakeGraph};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

fn product(sku: &str, name: &str, price: &str, stock: Option<i64>) -> Product {
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
        position: 1,
        created_at: 0,
        updated_at: 0,
    }
}

fn voucher(code: &str, kind: VoucherKind, value: i64) -> Voucher {
    Voucher {
        code: code.into(),
        kind,
        value: Decimal::from(value),
        min_total: None,
        valid_from: None,
        valid_to: None,
        usage_limit: None,
        used: 0,
        user_key: None,
        active: true,
        created_at: 0,
        updated_at: 0,
    }
}

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

/// Post `body` and wait for the user's `n`-th reply; what it says.
async fn say(app: &TestApp, graph: &FakeGraph, user: &str, body: String, n: usize) -> String {
    assert_eq!(app.post_webhook(&body).await, 200);
    let got = graph
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    let replies: Vec<Attempt> = graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .collect();
    assert!(
        got,
        "reply {n} to {user}; got {:?}",
        replies.iter().map(read).collect::<Vec<_>>()
    );
    read(&replies[n - 1])
}

/// A customer's conversation with the store flow: each message, its reply.
struct Chat<'a> {
    app: &'a TestApp,
    graph: &'a FakeGraph,
    user: String,
    n: usize,
}

impl Chat<'_> {
    async fn text(&mut self, text: &str) -> String {
        self.n += 1;
        let id = format!("wamid.V{}{}", self.user, self.n);
        let body = text_webhook(PNID, &self.user, &id, text, now_secs());
        say(self.app, self.graph, &self.user, body, self.n).await
    }

    async fn pick(&mut self, sku: &str) -> String {
        self.n += 1;
        let id = format!("wamid.V{}{}", self.user, self.n);
        let body = list_reply_webhook(PNID, &self.user, &id, sku, sku, now_secs());
        say(self.app, self.graph, &self.user, body, self.n).await
    }

    async fn button(&mut self, button: &str) -> String {
        self.n += 1;
        let id = format!("wamid.V{}{}", self.user, self.n);
        let body = button_reply_webhook(PNID, &self.user, &id, button, button, now_secs());
        let reply = say(self.app, self.graph, &self.user, body, self.n).await;
        if reply.starts_with("Order ORD-") {
            // The order placed is followed by its payment's instructions.
            self.n += 1;
            let next = self.n;
            let graph = self.graph;
            let user = self.user.clone();
            assert!(
                graph
                    .wait_until(Duration::from_secs(20), |log| {
                        log.iter()
                            .filter(|a| a.is_delivery() && a.to() == Some(user.as_str()))
                            .count()
                            >= next
                    })
                    .await,
                "the payment's instructions"
            );
        }
        reply
    }

    /// "store", a product, a quantity: the cart's message.
    async fn fill(&mut self, sku: &str, qty: u32) -> String {
        self.text("store").await;
        self.pick(sku).await;
        self.text(&qty.to_string()).await
    }

    /// "voucher", then the code: what the flow answers.
    async fn voucher(&mut self, code: &str) -> String {
        assert_eq!(self.text("voucher").await, "Which voucher code?");
        self.text(code).await
    }
}

async fn store_app(db: &TestDb) -> (TestApp, Arc<FakeGraph>, Store) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(db, &graph);
    settings.flows.dir = "flows".into();
    // The store flow's orders are paid at a (fake) Xendit, kept running as long as the test.
    let gateway = Box::leak(Box::new(
        parley_testkit::gateways::FakeGateway::start(parley::domain::GatewayKind::Xendit).await,
    ));
    settings
        .payments
        .providers
        .insert("xendit".into(), gateway.provider());
    settings.accounts[0].payments = Some("xendit".into());
    settings.accounts[0].mark_read = false;
    settings.accounts[0].pair_rate_interval = Duration::ZERO;
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    store
        .upsert_product(
            &AccountId::from(PNID),
            &product("KOPI", "Kopi Arabica", "25000", Some(5)),
        )
        .await
        .unwrap();
    (app, graph, store)
}

async fn a_voucher_takes_its_discount_off_the_order_and_each_refusal_says_why(db: TestDb) {
    let (app, graph, store) = store_app(&db).await;
    let account = AccountId::from(PNID);
    let far = 4_102_444_800_000; // 2100
    for v in [
        voucher("HEMAT10", VoucherKind::Percent, 10),
        Voucher {
            valid_to: Some(1_000),
            ..voucher("OLD", VoucherKind::Fixed, 1_000)
        },
        Voucher {
            valid_from: Some(far),
            ..voucher("SOON", VoucherKind::Fixed, 1_000)
        },
        Voucher {
            active: false,
            ..voucher("OFF", VoucherKind::Fixed, 1_000)
        },
        Voucher {
            min_total: Some(Decimal::from(1_000_000)),
            ..voucher("BIG", VoucherKind::Fixed, 100_000)
        },
        Voucher {
            usage_limit: Some(1),
            ..voucher("FULL", VoucherKind::Fixed, 1_000)
        },
        Voucher {
            user_key: Some("6281999999999".into()),
            ..voucher("THEIRS", VoucherKind::Fixed, 1_000)
        },
    ] {
        store.upsert_voucher(&account, &v, 1).await.unwrap();
    }
    let sql = "UPDATE vouchers SET used = 1 WHERE code = 'FULL'";
    sqlx::query(sql).execute(store.pool()).await.unwrap();

    let mut chat = Chat {
        app: &app,
        graph: &graph,
        user: "6281200000501".into(),
        n: 0,
    };
    assert_eq!(
        chat.fill("KOPI", 2).await,
        "In your cart:\n2 × Kopi Arabica — Rp 50.000\nTotal: Rp 50.000"
    );
    for (code, reason) in [
        ("nope", "unknown"),
        ("THEIRS", "unknown"),
        ("old", "expired"),
        ("soon", "not yet valid"),
        ("off", "inactive"),
        ("full", "used up"),
        ("big", "only for orders of at least Rp 1.000.000"),
    ] {
        assert_eq!(
            chat.voucher(code).await,
            format!("That voucher is {reason}."),
            "{code}"
        );
    }
    // Typed in any case.
    assert_eq!(
        chat.voucher("hemat10").await,
        "Voucher HEMAT10: -Rp 5.000. Total: Rp 45.000"
    );
    assert_eq!(
        chat.button("checkout").await,
        "Order ORD-000001 is placed:\n2 × Kopi Arabica — Rp 50.000\nTotal: Rp 45.000"
    );
    let order = store.order(&account, "ORD-000001").await.unwrap().unwrap();
    let idr = |n: i64| Money::new(Decimal::from(n), Currency::IDR).unwrap();
    assert_eq!(
        (
            order.subtotal,
            order.discount,
            order.total,
            order.voucher.as_deref()
        ),
        (idr(50_000), idr(5_000), idr(45_000), Some("HEMAT10"))
    );
    assert_eq!(
        store
            .voucher(&account, "HEMAT10")
            .await
            .unwrap()
            .unwrap()
            .used,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT order_id FROM voucher_claims WHERE code = 'HEMAT10'"
        )
        .await,
        order.id
    );
    // The same customer again: already used; the cart shows the full price.
    assert_eq!(
        chat.fill("KOPI", 1).await,
        "In your cart:\n1 × Kopi Arabica — Rp 25.000\nTotal: Rp 25.000"
    );
    assert_eq!(
        chat.voucher("HEMAT10").await,
        "That voucher is already used by you."
    );
    app.stop().await;
}
on_both_stores!(
    discount_and_refusals,
    a_voucher_takes_its_discount_off_the_order_and_each_refusal_says_why
);

async fn two_customers_taking_the_last_use_at_once_get_one_discount(db: TestDb) {
    let (app, graph, store) = store_app(&db).await;
    let account = AccountId::from(PNID);
    let last = Voucher {
        usage_limit: Some(1),
        ..voucher("LAST", VoucherKind::Fixed, 5_000)
    };
    store.upsert_voucher(&account, &last, 1).await.unwrap();
    let users = ["6281200000601", "6281200000602"];
    // Both put one in the cart and the voucher on it (nothing is claimed before checkout).
    for u in users {
        let mut chat = Chat {
            app: &app,
            graph: &graph,
            user: u.into(),
            n: 0,
        };
        chat.fill("KOPI", 1).await;
        assert_eq!(
            chat.voucher("last").await,
            "Voucher LAST: -Rp 5.000. Total: Rp 20.000"
        );
    }
    // Then both check out at once.
    let outcomes = futures::future::join_all(users.iter().map(|u| {
        let (app, graph) = (&app, &graph);
        async move {
            let body = button_reply_webhook(
                PNID,
                u,
                &format!("wamid.VC{u}"),
                "checkout",
                "Check out",
                now_secs(),
            );
            say(app, graph, u, body, 6).await
        }
    }))
    .await;
    let ordered: Vec<&String> = outcomes
        .iter()
        .filter(|r| {
            r.as_str()
                == "Order ORD-000001 is placed:\n1 × Kopi Arabica — Rp 25.000\nTotal: Rp 20.000"
        })
        .collect();
    let refused: Vec<&String> = outcomes
        .iter()
        .filter(|r| {
            r.as_str()
                == "Sorry, the voucher LAST is used up. Nothing was ordered; your cart is kept without it."
        })
        .collect();
    assert_eq!((ordered.len(), refused.len()), (1, 1), "{outcomes:?}");
    // Nothing of the refused customer's is reserved; the voucher is off their cart.
    let kopi = store.product(&account, "KOPI").await.unwrap().unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(4), 1));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM voucher_claims").await,
        1
    );
    assert_eq!(
        store.voucher(&account, "LAST").await.unwrap().unwrap().used,
        1
    );
    let loser = outcomes.iter().position(|r| r == refused[0]).unwrap();
    let cart = store
        .open_cart(&account, &UserKey::from(users[loser]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cart.voucher, cart.lines.len()), (None, 1));
    app.stop().await;
}
on_both_stores!(
    the_last_use_taken_at_once,
    two_customers_taking_the_last_use_at_once_get_one_discount
);

/// Straight at the store: ten checkouts race for three uses; a checkout made again answers
/// as it did.
async fn ten_checkouts_racing_for_three_uses_get_three_discounts(db: TestDb) {
    let store = Arc::new(db.store().await);
    store.migrate().await.unwrap();
    let account = AccountId::from(PNID);
    store
        .upsert_product(&account, &product("TEH", "Teh", "10000", Some(100)))
        .await
        .unwrap();
    let three = Voucher {
        usage_limit: Some(3),
        ..voucher("TIGA", VoucherKind::Percent, 50)
    };
    store.upsert_voucher(&account, &three, 1).await.unwrap();
    let users: Vec<UserKey> = (0..10)
        .map(|i| UserKey::from(format!("62812000007{i:02}")))
        .collect();
    for u in &users {
        store
            .change_cart(
                &account,
                u,
                &format!("add-{u}"),
                CartChange::Add {
                    sku: "TEH",
                    quantity: 2,
                },
                Currency::IDR,
                2,
            )
            .await
            .unwrap();
        let applied = store
            .apply_voucher(&account, u, &format!("v-{u}"), "tiga", Currency::IDR, 3)
            .await
            .unwrap();
        assert!(
            matches!(applied, parley::store::VoucherApplied::Applied { .. }),
            "{applied:?}"
        );
    }
    let outcomes = futures::future::join_all(users.iter().map(|u| {
        let store = store.clone();
        let account = account.clone();
        async move {
            store
                .checkout(&account, u, &format!("co-{u}"), &Customer::default(), 4)
                .await
                .unwrap()
        }
    }))
    .await;
    let discounted = outcomes
        .iter()
        .filter(|o| matches!(o, Checkout::Ordered { order } if order.total.plain() == "10000"))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| {
            matches!(o, Checkout::VoucherRefused { code, reason: VoucherRefusal::UsedUp } if code == "TIGA")
        })
        .count();
    assert_eq!((discounted, refused), (3, 7), "{outcomes:?}");
    let teh = store.product(&account, "TEH").await.unwrap().unwrap();
    assert_eq!((teh.stock, teh.reserved), (Some(94), 6));
    assert_eq!(
        store.voucher(&account, "TIGA").await.unwrap().unwrap().used,
        3
    );
    // Made again (after a crash): the same answers, no second effect.
    for (u, first) in users.iter().zip(&outcomes) {
        let again = store
            .checkout(&account, u, &format!("co-{u}"), &Customer::default(), 5)
            .await
            .unwrap();
        assert_eq!(&again, first);
    }
    // A refused customer's next checkout goes without the voucher.
    let (u, _) = users
        .iter()
        .zip(&outcomes)
        .find(|(_, o)| matches!(o, Checkout::VoucherRefused { .. }))
        .unwrap();
    match store
        .checkout(&account, u, "co-next", &Customer::default(), 6)
        .await
        .unwrap()
    {
        Checkout::Ordered { order } => {
            assert_eq!((order.total.plain(), order.voucher), ("20000".into(), None))
        }
        other => panic!("{other:?}"),
    }
}
on_both_stores!(
    checkouts_race_for_a_few_uses,
    ten_checkouts_racing_for_three_uses_get_three_discounts
);

async fn vouchers_are_created_listed_changed_and_deleted_by_the_admin_api(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        let path = format!("/vouchers{path}");
        let app = &app;
        async move { app.admin(method, &path, Some(ADMIN_TOKEN), body).await }
    };
    let (status, body) = call(
        Method::POST,
        "",
        Some(json!({"code": "hemat10", "kind": "percent", "value": "10",
                    "valid_from": "2026-01-01T00:00:00+07:00", "valid_to": "2099-12-31T23:59:59Z",
                    "usage_limit": 100, "min_total": "50000"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["code"], "HEMAT10");
    assert_eq!(body["value"], "10");
    assert_eq!(body["valid_from"], "2025-12-31T17:00:00Z");
    assert_eq!(body["valid_to"], "2099-12-31T23:59:59Z");
    assert_eq!(
        (body["used"].clone(), body["active"].clone()),
        (json!(0), json!(true))
    );
    // Found in any case; POST again by code updates what it gives.
    let (status, got) = call(Method::GET, "/Hemat10", None).await;
    assert_eq!(
        (status, got["min_total"].clone()),
        (200, json!("50000")),
        "{got}"
    );
    let (status, body) = call(
        Method::POST,
        "",
        Some(json!({"code": "HEMAT10", "value": 15, "min_total": null})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["value"].clone(), body["min_total"].clone()),
        (json!("15"), Value::Null)
    );
    assert_eq!(body["usage_limit"], 100);
    let (status, body) = call(
        Method::PATCH,
        "/hemat10",
        Some(json!({"active": false, "user": "+6281200000901"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["active"].clone(), body["user"].clone()),
        (json!(false), json!("6281200000901"))
    );
    let (status, _) = call(Method::PATCH, "/NOPE", Some(json!({"active": true}))).await;
    assert_eq!(status, 404);

    // Bad vouchers: every problem named, nothing saved.
    for (bad, says) in [
        (
            json!({"code": "A", "kind": "percent", "value": 0}),
            "0 < value ≤ 100",
        ),
        (
            json!({"code": "A", "kind": "percent", "value": "150"}),
            "0 < value ≤ 100",
        ),
        (
            json!({"code": "A", "kind": "fixed", "value": 10.5}),
            "never a JSON float",
        ),
        (
            json!({"code": "A", "kind": "fixed", "value": "-5"}),
            "negative",
        ),
        (
            json!({"code": "A", "kind": "fixed", "value": "5000",
                "valid_from": "2027-01-01T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"}),
            "valid_from must be before valid_to",
        ),
        (
            json!({"code": "A", "kind": "fixed", "value": "5000", "valid_to": "tomorrow"}),
            "RFC 3339",
        ),
        (
            json!({"code": "A", "kind": "fixed", "value": "5000", "usage_limit": 0}),
            "usage_limit",
        ),
        (
            json!({"code": "no spaces", "kind": "fixed", "value": "5000"}),
            "must be 1..=32",
        ),
        (json!({"code": "A", "value": "5000"}), "kind is required"),
    ] {
        let (status, body) = call(Method::POST, "", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{bad} → {body}"
        );
    }
    let (status, body) = call(
        Method::POST,
        "",
        Some(json!({"code": "A", "kind": "fixed", "value": "1", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // A page by code, with a cursor.
    for code in ["B2", "C3"] {
        let (status, _) = call(
            Method::POST,
            "",
            Some(json!({"code": code, "kind": "fixed", "value": "5000"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, page) = call(Method::GET, "?limit=2", None).await;
    assert_eq!(status, 200, "{page}");
    let codes: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["B2", "C3"]);
    let next = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = call(Method::GET, &format!("?limit=2&cursor={next}"), None).await;
    assert_eq!(page["items"][0]["code"], "HEMAT10");
    assert_eq!(page["next_cursor"], Value::Null);

    let (status, _) = call(Method::DELETE, "/b2", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(Method::GET, "/B2", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(Method::DELETE, "/B2", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_stores!(
    admin_endpoints,
    vouchers_are_created_listed_changed_and_deleted_by_the_admin_api
);
