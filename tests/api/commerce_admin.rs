//! The commerce admin API: the catalog (products, categories, stock, CSV import) and orders.

use std::sync::Arc;

use parley::conversation::CoreLogic;
use parley::domain::{AccountId, Currency, UserKey};
use parley::store::{CartChange, CartChanged, Checkout, Customer, Store};
use parley_testkit::FakeGraph;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

async fn app(db: &TestDb) -> (TestApp, Arc<FakeGraph>) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(db, &graph);
    // An order's new status outside the window.
    settings.commerce.order_status_template = Some(
        serde_json::from_value(json!({"name": "order_update", "language": "id",
            "body_params": ["{{order}}", "{{status}}", "{{total}}"]}))
        .unwrap(),
    );
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    (app, graph)
}

impl TestApp {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// POST a CSV to the import endpoint.
    async fn import(&self, csv: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/admin/v1/products/import", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .expect("import");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

async fn product_count(store: &Store) -> i64 {
    count(store, "SELECT COUNT(*) FROM products").await
}

async fn products_are_created_read_updated_listed_and_deleted(db: TestDb) {
    let (app, _graph) = app(&db).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/products",
            Some(
                json!({"sku": "KOPI-1", "name": "Kopi Susu", "price": "25000", "stock": 10,
                        "image_url": "https://cdn.example/kopi.jpg"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["price"], "25000");
    assert_eq!(body["currency"], "IDR");
    assert_eq!(body["stock"], 10);
    assert_eq!(body["reserved"], 0);
    assert_eq!(body["active"], true);
    assert_eq!(body["kind"], "product");

    let (status, got) = app.call(Method::GET, "/products/KOPI-1", None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "Kopi Susu");
    // The account may be named, and must be one we serve.
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/products/KOPI-1?account={PNID}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(Method::GET, "/products/KOPI-1?account=999", None)
        .await;
    assert_eq!(status, 404, "{body}");

    // POST again by sku updates: what it leaves out (stock, image) stays.
    let (status, body) = app
        .call(
            Method::POST,
            "/products",
            Some(json!({"sku": "KOPI-1", "name": "Kopi Susu Gula Aren", "price": 27500})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Kopi Susu Gula Aren");
    assert_eq!(body["price"], "27500");
    assert_eq!(body["stock"], 10);
    assert_eq!(body["image_url"], "https://cdn.example/kopi.jpg");

    // PATCH changes the fields given; null clears.
    let (status, body) = app
        .call(
            Method::PATCH,
            "/products/KOPI-1",
            Some(json!({"active": false, "image_url": null, "price": "27500.50"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(body["image_url"], Value::Null);
    assert_eq!(body["price"], "27500.5");
    assert_eq!(body["name"], "Kopi Susu Gula Aren");
    let (status, body) = app
        .call(
            Method::PATCH,
            "/products/NOPE",
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Seven more, listed three at a time through the cursor, in (position, sku) order.
    for i in 0..7 {
        let (status, body) = app
            .call(
                Method::POST,
                "/products",
                Some(
                    json!({"sku": format!("TEH-{i}"), "name": format!("Teh {i}"),
                            "price": "10000", "position": 7 - i}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/products?limit=3&cursor={c}"),
            None => "/products?limit=3".to_string(),
        };
        let (status, page) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["sku"].as_str().unwrap().to_string()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["KOPI-1", "TEH-6", "TEH-5", "TEH-4", "TEH-3", "TEH-2", "TEH-1", "TEH-0"],
        "position, then sku"
    );
    let (_, active) = app.call(Method::GET, "/products?active=false", None).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 1, "{active}");
    let (status, body) = app.call(Method::GET, "/products?limit=500", None).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.call(Method::GET, "/products?cursor=zz", None).await;
    assert_eq!(status, 400, "{body}");

    let (status, _) = app.call(Method::DELETE, "/products/KOPI-1", None).await;
    assert_eq!(status, 204);
    let (status, body) = app.call(Method::GET, "/products/KOPI-1", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no such product");
    let (status, _) = app.call(Method::DELETE, "/products/KOPI-1", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_stores!(
    product_lifecycle,
    products_are_created_read_updated_listed_and_deleted
);

async fn bad_products_are_refused_with_a_clear_answer(db: TestDb) {
    let (app, _graph) = app(&db).await;
    let cases = [
        (json!({"sku": "bad sku!", "name": "X", "price": "1"}), "sku"),
        (
            json!({"sku": "P1", "name": "X", "price": "12.345"}),
            "more than 2 decimal places",
        ),
        (
            json!({"sku": "P1", "name": "X", "price": 12.5}),
            "JSON float",
        ),
        (json!({"sku": "P1", "name": "X", "price": "-5"}), "negative"),
        (
            json!({"sku": "P1", "name": "X", "price": "abc"}),
            "not an amount",
        ),
        (
            json!({"sku": "P1", "name": "X", "price": "1", "stock": -1}),
            "stock -1 is negative",
        ),
        (
            json!({"sku": "P1", "name": "X", "price": "1", "colour": "red"}),
            "unknown field `colour`",
        ),
        (
            json!({"sku": "P1", "name": "Gold", "price": "1", "kind": "plan"}),
            "period_days",
        ),
        (
            json!({"sku": "P1", "name": "Gold", "price": "1", "kind": "plan", "period_days": 5000}),
            "period_days 5000",
        ),
        (
            json!({"sku": "P1", "name": "X", "price": "1", "image_url": "http://x.example/a.jpg"}),
            "https",
        ),
        (
            json!({"sku": "P1", "name": "X", "price": "1", "category": "nope"}),
            "category \"nope\" does not exist",
        ),
        (json!({"sku": "P1", "price": "1"}), "name is required"),
        (
            json!({"sku": "P1", "name": "", "price": "1"}),
            "name must be",
        ),
        (json!({"name": "X", "price": "1"}), "sku is required"),
        (
            json!({"sku": "P1", "name": "X", "price": "1", "active": null}),
            "null",
        ),
    ];
    for (body, says) in cases {
        let (status, answer) = app
            .call(Method::POST, "/products", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{body}: {error:?} should say {says:?}"
        );
    }
    // Two problems at once are both named.
    let (status, answer) = app
        .call(
            Method::POST,
            "/products",
            Some(json!({"sku": "P1", "name": "X", "price": "1.001", "stock": -3})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 2, "{answer}");
    // Not JSON at all: 400.
    let resp = app
        .http
        .post(format!("{}/admin/v1/products", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("bad JSON"),
        "{body}"
    );
    // Too large: 413, as JSON (on a connection of its own: the server closes it, unread).
    let huge = format!(
        "{{\"sku\": \"P1\", \"name\": \"X\", \"price\": \"1\", \"description\": \"{}\"}}",
        "a".repeat(3 * 1024 * 1024)
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/v1/products", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // The token is required, here as everywhere under /admin/v1/.
    let (status, _) = app.admin(Method::GET, "/products", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .admin(
            Method::POST,
            "/products",
            Some("wrong"),
            Some(json!({"sku": "P1", "name": "X", "price": "1"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .admin(
            Method::PATCH,
            "/orders/ORD-000001",
            None,
            Some(json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(status, 401);
    let store = db.store().await;
    assert_eq!(product_count(&store).await, 0, "nothing was written");
    // A valid plan goes.
    let (status, body) = app
        .call(
            Method::POST,
            "/products",
            Some(
                json!({"sku": "GOLD-30", "name": "Gold", "price": "99000", "kind": "plan",
                        "period_days": 30, "access_link": "https://members.example/gold"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "plan");
    assert_eq!(body["period_days"], 30);
    app.stop().await;
}
on_both_stores!(
    product_validation,
    bad_products_are_refused_with_a_clear_answer
);

async fn stock_is_adjusted_never_below_zero(db: TestDb) {
    let (app, _graph) = app(&db).await;
    for body in [
        json!({"sku": "S1", "name": "Tracked", "price": "1000", "stock": 10}),
        json!({"sku": "U1", "name": "Untracked", "price": "1000"}),
    ] {
        assert_eq!(app.call(Method::POST, "/products", Some(body)).await.0, 201);
    }
    let (status, body) = app
        .call(
            Method::POST,
            "/products/S1/stock",
            Some(json!({"delta": 5, "reason": "delivery"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"sku": "S1", "stock": 15, "reserved": 0}));
    let (status, body) = app
        .call(
            Method::POST,
            "/products/S1/stock",
            Some(json!({"delta": -16})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("negative"),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::POST,
            "/products/S1/stock",
            Some(json!({"delta": -15})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stock"], 0);
    let (status, body) = app
        .call(
            Method::POST,
            "/products/U1/stock",
            Some(json!({"delta": 1})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not tracked"),
        "{body}"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/products/NOPE/stock",
            Some(json!({"delta": 1})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::POST,
            "/products/S1/stock",
            Some(json!({"delta": 1.5})),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}
on_both_stores!(stock_adjustments, stock_is_adjusted_never_below_zero);

async fn a_csv_catalog_is_imported_whole_or_not_at_all(db: TestDb) {
    let (app, _graph) = app(&db).await;
    let store = db.store().await;
    assert_eq!(
        app.call(
            Method::POST,
            "/categories",
            Some(json!({"slug": "drinks", "name": "Drinks"}))
        )
        .await
        .0,
        201
    );
    // Columns in any order; a quoted field with a comma and a quote; a plan.
    let csv = "name,sku,price,stock,category,description,kind,period_days,access_link\n\
               Kopi,KOPI,25000,10,drinks,\"Strong, sweet \"\"kopi\"\"\",,,\n\
               Teh,TEH,12000.50,,drinks,,product,,\n\
               Gold,GOLD,99000,,,,plan,30,https://members.example/gold\n";
    let (status, body) = app.import(csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"created": 3, "updated": 0}));
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(kopi["description"], "Strong, sweet \"kopi\"");
    assert_eq!(kopi["stock"], 10);
    assert_eq!(kopi["category"], "drinks");
    let (_, teh) = app.call(Method::GET, "/products/TEH", None).await;
    assert_eq!(teh["price"], "12000.5");
    assert_eq!(teh["stock"], Value::Null);
    // Again, without a stock column: stock is left as it is; one new product.
    let (status, body) = app
        .import("sku,price,name\nKOPI,26000,Kopi\nSUSU,8000,Susu\n")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"created": 1, "updated": 1}));
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(kopi["price"], "26000");
    assert_eq!(kopi["stock"], 10);
    assert_eq!(product_count(&store).await, 4);

    // Two bad rows (line 3 and line 5): each reported by its line, nothing imported.
    let csv = "sku,name,price,stock\n\
               NEW1,New one,1000,5\n\
               NEW2,New two,abc,5\n\
               KOPI,Kopi,30000,7\n\
               NEW3,New three,1000,-2\n";
    let (status, body) = app.import(csv).await;
    assert_eq!(status, 422, "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        [
            "line 3: price \"abc\" is not an amount",
            "line 5: stock -2 is negative"
        ],
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("2 bad rows"),
        "{body}"
    );
    assert_eq!(product_count(&store).await, 4, "nothing imported");
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(kopi["price"], "26000", "not even the good rows");

    // The header is checked; a row with too few fields, a repeated sku, an unknown category.
    let (status, body) = app.import("sku,name,price,colour\n").await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
    let (status, body) = app
        .import("sku,name,price,category\nA,A,1,\nB,B\nA,A again,2,\nC,C,1,snacks\n")
        .await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].to_string();
    assert!(errors.contains("line 3: 2 fields"), "{errors}");
    assert!(
        errors.contains("line 4: sku \\\"A\\\" is also on line 2"),
        "{errors}"
    );
    assert!(
        errors.contains("line 5: category \\\"snacks\\\""),
        "{errors}"
    );
    // Not CSV.
    let resp = app
        .http
        .post(format!("{}/admin/v1/products/import", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(product_count(&store).await, 4);
    app.stop().await;
}
on_both_stores!(csv_import, a_csv_catalog_is_imported_whole_or_not_at_all);

async fn categories_are_created_listed_and_deleted_when_unused(db: TestDb) {
    let (app, _graph) = app(&db).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/categories",
            Some(json!({"slug": "food", "name": "Food", "position": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/categories",
            Some(json!({"slug": "food", "name": "Makanan", "position": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/categories",
            Some(json!({"slug": "no spaces", "name": "X"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, list) = app.call(Method::GET, "/categories", None).await;
    assert_eq!(
        list,
        json!({"items": [{"slug": "food", "name": "Makanan", "position": 1}]})
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/products",
            Some(json!({"sku": "NASI", "name": "Nasi", "price": "15000", "category": "food"})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, page) = app.call(Method::GET, "/products?category=food", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, body) = app.call(Method::DELETE, "/categories/food", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = app
        .call(
            Method::PATCH,
            "/products/NASI",
            Some(json!({"category": null})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.call(Method::DELETE, "/categories/food", None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call(Method::DELETE, "/categories/food", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_stores!(
    categories,
    categories_are_created_listed_and_deleted_when_unused
);

/// An order of `quantity` × `sku` by `user`, through the cart and checkout a flow uses.
async fn order(store: &Store, user: &str, sku: &str, quantity: i64) -> String {
    let account = AccountId::from(PNID);
    let user = UserKey::from(user);
    let now = parley::store::now_ms();
    let (changed, _) = store
        .change_cart(
            &account,
            &user,
            &format!("add:{user}:{sku}"),
            CartChange::Add { sku, quantity },
            Currency::IDR,
            now,
        )
        .await
        .expect("change cart");
    assert_eq!(changed, CartChanged::Ok);
    match store
        .checkout(
            &account,
            &user,
            &format!("checkout:{user}"),
            &Customer::default(),
            now,
        )
        .await
        .expect("checkout")
    {
        Checkout::Ordered { order } => order.order_number,
        other => panic!("checkout: {other:?}"),
    }
}

async fn orders_are_listed_shown_and_moved_forward_only(db: TestDb) {
    let (app, graph) = app(&db).await;
    let store = db.store().await;
    let (status, _) = app
        .call(
            Method::POST,
            "/products",
            Some(json!({"sku": "KOPI", "name": "Kopi", "price": "25000", "stock": 10})),
        )
        .await;
    assert_eq!(status, 201);
    let first = order(&store, "6281200000101", "KOPI", 2).await;
    let second = order(&store, "6281200000102", "KOPI", 3).await;
    let third = order(&store, "6281200000103", "KOPI", 1).await;
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(
        (kopi["stock"].as_i64(), kopi["reserved"].as_i64()),
        (Some(4), Some(6))
    );

    // Newest first, a page at a time.
    let (status, page) = app.call(Method::GET, "/orders?limit=2", None).await;
    assert_eq!(status, 200, "{page}");
    let numbers: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, [third.as_str(), second.as_str()]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, page) = app
        .call(
            Method::GET,
            &format!("/orders?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page["items"][0]["number"], first.as_str());
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, mine) = app
        .call(Method::GET, "/orders?user=%2B6281200000102", None)
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["items"][0]["number"], second.as_str());

    let (status, shown) = app
        .call(Method::GET, &format!("/orders/{first}"), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["total"], "50000");
    assert_eq!(shown["currency"], "IDR");
    assert_eq!(
        shown["items"],
        json!([{"sku": "KOPI", "name": "Kopi", "quantity": 2, "unit_price": "25000",
                "subtotal": "50000", "catalog_price": null}])
    );
    assert_eq!(
        app.call(Method::GET, "/orders/ORD-999999", None).await.0,
        404
    );

    // Forward: pending → processing → completed; never back, never from completed.
    let patch = |number: &str, body: Value| {
        let path = format!("/orders/{number}");
        let app = &app;
        async move { app.call(Method::PATCH, &path, Some(body)).await }
    };
    let (status, body) = patch(&first, json!({"status": "processing", "notes": "packed"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["notes"].as_str()),
        (Some("processing"), Some("packed"))
    );
    // The customer never wrote (the window is closed): told with the template.
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            graph.delivered().iter().any(|a| {
                a.to() == Some("6281200000101") && a.body["template"]["name"] == "order_update"
            })
        })
        .await,
        "no template sent"
    );
    let sent = graph
        .delivered()
        .into_iter()
        .find(|a| a.to() == Some("6281200000101"))
        .unwrap();
    let params: Vec<&str> = sent.body["template"]["components"][0]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(params, [first.as_str(), "processing", "Rp 50.000"]);
    let (status, body) = patch(&first, json!({"status": "pending"})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = patch(&second, json!({"status": "completed"})).await;
    assert_eq!(status, 409, "pending cannot skip processing: {body}");
    let (status, body) = patch(&first, json!({"status": "completed"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = patch(&first, json!({"status": "cancelled", "notes": "x"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("completed"),
        "{body}"
    );
    let (_, shown) = app
        .call(Method::GET, &format!("/orders/{first}"), None)
        .await;
    assert_eq!(shown["notes"], "packed", "a refused change changes nothing");
    let (status, _) = patch(&first, json!({"notes": "delivered by Budi"})).await;
    assert_eq!(status, 200, "notes alone may change after completion");
    let (status, _) = patch(&first, json!({"status": "shipped"})).await;
    assert_eq!(status, 422);
    let (status, _) = patch(&first, json!({})).await;
    assert_eq!(status, 422);
    let (status, _) = patch("ORD-999999", json!({"status": "cancelled"})).await;
    assert_eq!(status, 404);

    // Cancelling gives the reserved units back, once.
    let (status, body) = patch(&second, json!({"status": "cancelled"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stock"], "released");
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(
        (kopi["stock"].as_i64(), kopi["reserved"].as_i64()),
        (Some(7), Some(3))
    );
    let (status, _) = patch(&second, json!({"status": "cancelled"})).await;
    assert_eq!(status, 409);
    let (_, kopi) = app.call(Method::GET, "/products/KOPI", None).await;
    assert_eq!(
        (kopi["stock"].as_i64(), kopi["reserved"].as_i64()),
        (Some(7), Some(3))
    );
    // While units are reserved the stock stays tracked.
    let (status, body) = app
        .call(
            Method::PATCH,
            "/products/KOPI",
            Some(json!({"stock": null})),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    let (_, cancelled) = app
        .call(Method::GET, "/orders?status=cancelled", None)
        .await;
    assert_eq!(cancelled["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.call(Method::GET, "/orders?status=lost", None).await;
    assert_eq!(status, 400);
    app.stop().await;
}
on_both_stores!(orders, orders_are_listed_shown_and_moved_forward_only);

async fn with_several_accounts_the_account_is_named(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    let mut second = settings.accounts[0].clone();
    second.phone_number_id = AccountId::from("106540352242999");
    second.currency = "USD".parse().unwrap();
    settings.accounts.push(second);
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let (status, body) = app.call(Method::GET, "/products", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("account"),
        "{body}"
    );
    // Each account's catalog is its own, priced in its currency.
    let (status, body) = app
        .call(
            Method::POST,
            "/products?account=106540352242999",
            Some(json!({"sku": "MUG", "name": "Mug", "price": "12.50"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["price"].as_str(), body["currency"].as_str()),
        (Some("12.5"), Some("USD"))
    );
    let (_, mine) = app
        .call(Method::GET, &format!("/products?account={PNID}"), None)
        .await;
    assert_eq!(mine["items"], json!([]));
    let (status, _) = app.call(Method::GET, "/orders?account=123", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_stores!(several_accounts, with_several_accounts_the_account_is_named);
