//! The admin API's conventions. `Idempotency-Key` on admin POSTs: the same key and request
//! get the first answer again (nothing done twice), the same key on another request is
//! refused, keys are per caller, a bad key is refused before anything runs. Errors are
//! RFC 9457 problem details.

use std::sync::Arc;

use parley_testkit::FakeGraph;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

async fn post(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
    path: &str,
    body: &Value,
) -> (u16, Value, bool) {
    let mut req = app
        .http
        .post(format!("{}/admin/v1{path}", app.base))
        .bearer_auth(token)
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (status, resp.json().await.unwrap_or(Value::Null), replayed)
}

async fn the_same_request_is_answered_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(
        test_settings(&db, &graph),
        Arc::new(parley::conversation::CoreLogic),
    )
    .await;
    let store = db.store().await;
    let kopi = json!({"sku": "KOPI-1", "name": "Kopi", "price": "25000", "stock": 10});
    let (s1, b1, r1) = post(&app, ADMIN_TOKEN, Some("create-kopi-1"), "/products", &kopi).await;
    assert!(s1 == 200 || s1 == 201, "{b1}");
    assert!(!r1);

    // A key made twice would be two keys: a retry after a timeout gets the first answer (the
    // same key, shown again), and no second key is made.
    let desk = json!({"name": "desk", "role": "agent"});
    let keys_before = count(&store, "SELECT COUNT(*) FROM api_keys").await;
    let (s2, b2, r2) = post(&app, ADMIN_TOKEN, Some("make-desk-key"), "/keys", &desk).await;
    assert_eq!((s2, r2), (201, false), "{b2}");
    let (s3, b3, r3) = post(&app, ADMIN_TOKEN, Some("make-desk-key"), "/keys", &desk).await;
    assert_eq!((s3, r3), (201, true));
    assert_eq!(b3["id"], b2["id"]);
    // The key's text was shown once: the replay, read from the store, shows it was not kept.
    assert_eq!(b3["key"], "[shown once: not kept]", "{b3}");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM api_keys").await,
        keys_before + 1,
        "one key made"
    );
    // Without the key, the same request makes another.
    let (s4, b4, _) = post(&app, ADMIN_TOKEN, None, "/keys", &desk).await;
    assert_eq!(s4, 201, "{b4}");
    assert_ne!(b4["id"], b2["id"]);

    // The same key on another request.
    let teh = json!({"sku": "TEH-1", "name": "Teh", "price": "15000"});
    let (s5, b5, _) = post(&app, ADMIN_TOKEN, Some("create-kopi-1"), "/products", &teh).await;
    assert_eq!(s5, 422, "{b5}");
    assert!(b5["error"].as_str().unwrap().contains("another request"));

    // Keys are per caller: a key of its own may use the same text.
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "shop", "role": "manager"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let manager = made["key"].as_str().unwrap().to_string();
    let (s6, b6, r6) = post(&app, &manager, Some("create-kopi-1"), "/products", &teh).await;
    assert!((s6 == 200 || s6 == 201) && !r6, "{s6} {b6}");

    // A key that is not one: refused before anything runs.
    let chai = json!({"sku": "CHAI-1", "name": "Chai", "price": "20000"});
    let (s7, _, _) = post(&app, ADMIN_TOKEN, Some("has space"), "/products", &chai).await;
    assert_eq!(s7, 400);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM products").await, 2);

    // A refused answer (4xx) is kept too: the same bad request gets the same answer.
    let bad = json!({"sku": "", "name": "x", "price": "1"});
    let (s8, b8, _) = post(&app, ADMIN_TOKEN, Some("bad-1"), "/products", &bad).await;
    assert_eq!(s8, 422, "{b8}");
    let (s9, b9, r9) = post(&app, ADMIN_TOKEN, Some("bad-1"), "/products", &bad).await;
    assert_eq!((s9, &b9, r9), (422, &b8, true));
    app.stop().await;
}
on_both_stores!(
    an_idempotency_key_answers_a_retry_with_the_first_answer,
    the_same_request_is_answered_once
);

/// Every admin error is an RFC 9457 problem (`application/problem+json`): `type`, `title`,
/// `status`, `detail`, its own members kept (`error` too).
async fn errors_are_problems(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(
        test_settings(&db, &graph),
        Arc::new(parley::conversation::CoreLogic),
    )
    .await;
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "desk", "role": "agent"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let agent = made["key"].as_str().unwrap().to_string();
    for (token, method, path, want) in [
        ("wrong", Method::GET, "/accounts", 401),
        (agent.as_str(), Method::GET, "/audit", 403),
        (ADMIN_TOKEN, Method::GET, "/dead-letters/424242", 404),
        (ADMIN_TOKEN, Method::GET, "/products?limit=0", 422),
    ] {
        let resp = app
            .http
            .request(method, format!("{}/admin/v1{path}", app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["type"], "about:blank", "{p}");
        assert_eq!(p["status"], want, "{p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
        assert_eq!(p["detail"], p["error"], "{p}");
    }
    app.stop().await;
}
on_both_stores!(admin_errors_are_rfc_9457_problems, errors_are_problems);

/// Bodies are JSON objects: an array (which serde would read as a struct's fields in order)
/// is refused 422, text that is not JSON 400, also where the body is optional (block,
/// opt-out); an empty body there is fine. An empty `cursor` is the first page.
async fn bodies_are_objects_and_an_empty_cursor_is_the_first_page(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(
        test_settings(&db, &graph),
        Arc::new(parley::conversation::CoreLogic),
    )
    .await;
    let user = "6281200008801";
    let (status, made) = app
        .admin(
            Method::POST,
            "/contacts",
            Some(ADMIN_TOKEN),
            Some(json!({"wa_id": user, "name": "Sari"})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {made}");
    let send = |method: Method, path: String, body: &'static str| {
        let req = app
            .http
            .request(method, format!("{}/admin/v1{path}", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    for (method, path, body, want) in [
        (
            Method::PATCH,
            format!("/contacts/{user}"),
            r#"["Sari"]"#,
            422,
        ),
        (Method::PATCH, format!("/contacts/{user}"), "not json", 400),
        (
            Method::POST,
            format!("/contacts/{user}/block"),
            "not json",
            400,
        ),
        (Method::POST, format!("/contacts/{user}/block"), "[1]", 422),
        (
            Method::POST,
            format!("/contacts/{user}/opt-out"),
            "not json",
            400,
        ),
        (Method::POST, format!("/contacts/{user}/block"), "", 200),
        (Method::POST, format!("/contacts/{user}/unblock"), "{}", 200),
        (Method::POST, format!("/contacts/{user}/opt-out"), "", 200),
    ] {
        let (status, text) = send(method, path.clone(), body).await;
        assert_eq!(status, want, "{path} {body:?}: {text}");
    }
    for path in [
        "/contacts?cursor=",
        "/orders?cursor=",
        "/dead-letters?cursor=",
        "/audit?cursor=",
    ] {
        let (status, page) = app.admin(Method::GET, path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page["items"].is_array(), "{path}: {page}");
    }
    app.stop().await;
}
on_both_stores!(
    bodies_and_cursors,
    bodies_are_objects_and_an_empty_cursor_is_the_first_page
);
