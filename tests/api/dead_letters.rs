//! `/admin/v1/dead-letters`: listed, shown with their bytes, replayed once (a webhook body read
//! again, a poisoned message handled again, a failed send sent again) or discarded; a closed
//! letter is neither replayed nor discarded again.

use std::sync::Arc;
use std::time::Duration;

use parley_testkit::{text_webhook, FakeGraph, Fault};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin(method, path, Some(ADMIN_TOKEN), body).await
}

async fn listed_shown_and_discarded(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    for body in ["[1,2,3]", "{\"entry\": [", "not json"] {
        assert_eq!(app.post_webhook(body).await, 200);
    }
    // Newest first, two a page.
    let (status, first) = call(&app, Method::GET, "/dead-letters?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{first}");
    assert_eq!(items[0]["kind"], "webhook_malformed");
    assert_eq!(items[0]["status"], "open");
    assert_eq!(items[0]["raw_bytes"], 8);
    assert!(
        items[0].get("raw_text").is_none(),
        "lists leave the bytes out"
    );
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (_, second) = call(
        &app,
        Method::GET,
        &format!("/dead-letters?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    let rest = second["items"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{second}");
    assert!(second["next_cursor"].is_null());
    let oldest = rest[0]["id"].as_i64().unwrap();

    let (status, shown) = call(&app, Method::GET, &format!("/dead-letters/{oldest}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["raw_text"], "[1,2,3]");
    assert_eq!(shown["replayable"], true);

    // Read again: still not a webhook; the letter stays open.
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/dead-letters/{oldest}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("still does not parse"));
    let (_, shown) = call(&app, Method::GET, &format!("/dead-letters/{oldest}"), None).await;
    assert_eq!(shown["status"], "open");

    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/dead-letters/{oldest}/discard"),
        Some(json!({"note": "a probe, not Meta"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "discarded");
    assert_eq!(body["resolution_note"], "a probe, not Meta");
    for action in ["discard", "replay"] {
        let (status, body) = call(
            &app,
            Method::POST,
            &format!("/dead-letters/{oldest}/{action}"),
            None,
        )
        .await;
        assert_eq!(status, 409, "{action}: {body}");
    }
    let (_, open) = call(&app, Method::GET, "/dead-letters?open=true", None).await;
    assert_eq!(open["items"].as_array().unwrap().len(), 2);
    let (status, _) = call(&app, Method::GET, "/dead-letters/99999", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, Method::GET, "/dead-letters?limit=0", None).await;
    assert_eq!(status, 422);
    app.stop().await;
}
on_both_stores!(
    dead_letters_are_listed_shown_and_discarded,
    listed_shown_and_discarded
);

async fn count_letters(app: &TestApp, kind: &str) -> usize {
    let (_, body) = call(
        app,
        Method::GET,
        &format!("/dead-letters?kind={kind}"),
        None,
    )
    .await;
    body["items"].as_array().map_or(0, Vec::len)
}

/// A failed send (Meta refused it for good) is sent again, once, as a new message.
async fn a_failed_send_is_sent_again(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    graph.push_fault(Fault::http(400, 131026));
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let user = "6281200000071";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.DL1", "hello", now_secs()))
            .await,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            count_letters(&app, "outbox_send").await == 1
        })
        .await
    );
    let (_, listed) = call(&app, Method::GET, "/dead-letters?kind=outbox_send", None).await;
    let id = listed["items"][0]["id"].as_i64().unwrap();
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/dead-letters/{id}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "replayed");
    assert!(body["replay"]["outbox_id"].as_i64().is_some(), "{body}");
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.accepted() && a.text() == Some("echo: hello")))
            .await,
        "sent again"
    );
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/dead-letters/{id}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 409, "once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = graph
        .attempts()
        .iter()
        .filter(|a| a.accepted() && a.text() == Some("echo: hello"))
        .count();
    assert_eq!(sent, 1);
    app.stop().await;
}
on_both_stores!(a_failed_send_is_replayed_once, a_failed_send_is_sent_again);

/// A message that poisoned its conversation is handled again when replayed (here it poisons
/// it again: a second letter, for the new inbox row), and the conversation goes on.
async fn a_poisoned_message_is_handled_again(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let user = "6281200000072";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.DL2", "boom", now_secs()))
            .await,
        200
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            count_letters(&app, "inbox_event").await == 1
        })
        .await
    );
    let (_, listed) = call(&app, Method::GET, "/dead-letters?kind=inbox_event", None).await;
    let id = listed["items"][0]["id"].as_i64().unwrap();
    let first_seq = listed["items"][0]["ref_id"].as_i64().unwrap();
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/dead-letters/{id}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seq = body["replay"]["inbox_seq"].as_i64().unwrap();
    assert!(seq > first_seq);
    assert!(
        eventually(Duration::from_secs(20), || async {
            count_letters(&app, "inbox_event").await == 2
        })
        .await,
        "handled again (and poisoned again)"
    );
    let (_, listed) = call(&app, Method::GET, "/dead-letters?kind=inbox_event", None).await;
    assert_eq!(listed["items"][0]["ref_id"], seq);
    // The conversation goes on.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.DL3", "after", now_secs()))
            .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.accepted() && a.text() == Some("echo: after")))
            .await
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'dead'").await,
        2
    );
    app.stop().await;
}
on_both_stores!(
    a_poisoned_message_is_replayed,
    a_poisoned_message_is_handled_again
);
