//! The admin API: authentication and what it shows and sends.

use std::sync::Arc;

use parley::conversation::CoreLogic;
use parley::testing::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

async fn the_admin_api_refuses_a_missing_or_wrong_token(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    assert_eq!(app.admin(Method::GET, "/accounts", None, None).await.0, 401);
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some("wrong"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        app.admin(Method::POST, "/messages", Some("wrong"), Some(json!({})))
            .await
            .0,
        401
    );
    let (status, body) = app
        .admin(Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accounts"][0]["phone_number_id"], PNID);
    assert!(
        !body.to_string().contains(ACCESS_TOKEN),
        "no secrets in the admin API"
    );
    app.stop().await;
}
on_both_stores!(auth, the_admin_api_refuses_a_missing_or_wrong_token);

async fn the_admin_api_is_disabled_without_a_token(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.admin.token = None;
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(""), None).await.0,
        404
    );
    app.stop().await;
}
on_both_stores!(disabled, the_admin_api_is_disabled_without_a_token);

async fn admin_sends_respect_the_window_and_whatsapp_limits(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let user = "6281200000050";
    // No message from this user yet: free-form is refused, a template goes.
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "text": "hello"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "template": {"name": "order_update", "language": "id", "body_params": ["Budi"]}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // After the user writes, interactive messages go; limits are checked first.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.ADM1", "hi", now_secs()))
            .await,
        200
    );
    let too_many = json!({"kind": "buttons", "body": "Pick", "buttons": [
        {"id": "a", "title": "A"}, {"id": "b", "title": "B"}, {"id": "c", "title": "C"}, {"id": "d", "title": "D"}]});
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "message": too_many})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let ok = json!({"kind": "buttons", "body": "Welcome! What would you like?", "buttons": [
        {"id": "catalog", "title": "Catalog"}, {"id": "order", "title": "My order"}, {"id": "help", "title": "Help"}]});
    // Wait for the inbound to be applied (it opens the window).
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            app.admin(
                Method::GET,
                &format!("/conversations/{PNID}/{user}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await
            .1["window_open"]
                == true
        })
        .await
    );
    let (status, body) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(json!({"phone_number_id": PNID, "to": user, "message": ok, "idempotency_key": "k1"})))
        .await;
    assert_eq!(status, 202, "{body}");
    // The same idempotency key creates nothing new.
    let (status, _) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(json!({"phone_number_id": PNID, "to": user, "message": ok, "idempotency_key": "k1"})))
        .await;
    assert_eq!(status, 200);
    assert!(
        graph
            .wait_delivered(2, std::time::Duration::from_secs(10))
            .await
    );
    // A user whose id extends this one's is another conversation (outbound history is read
    // by idem-key prefix).
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": format!("{user}1"), "template": {"name": "order_update", "language": "id", "body_params": ["Sari"]}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        graph
            .wait_delivered(3, std::time::Duration::from_secs(10))
            .await
    );
    let sent: Vec<_> = graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body["type"], "template");
    assert_eq!(
        sent[0].body["template"]["components"][0]["parameters"][0]["text"],
        "Budi"
    );
    assert_eq!(
        sent[1].body["interactive"]["action"]["buttons"][1]["reply"]["title"],
        "My order"
    );
    let (status, conv) = app
        .admin(
            Method::GET,
            &format!("/conversations/{PNID}/{user}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(conv["contact"]["wa_id"], user);
    // The user's message and our two; read receipts are not messages.
    let directions: Vec<&str> = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions.iter().filter(|d| **d == "in").count(), 1);
    assert_eq!(directions.iter().filter(|d| **d == "out").count(), 2);
    app.stop().await;
}
on_both_stores!(sends, admin_sends_respect_the_window_and_whatsapp_limits);
