//! The admin API: authentication and what it shows and sends.

use std::sync::Arc;

use parley::conversation::CoreLogic;
use parley_testkit::{text_webhook, FakeGraph};
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
    let first = body["outbox_id"].clone();
    assert!(first.is_i64(), "{body}");
    let counted = app.conversation(user).await["state"]["outbound_count"].clone();
    // The same idempotency key creates nothing new, and the conversation does not count it;
    // the answer names the row the first request queued.
    let (status, body) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(json!({"phone_number_id": PNID, "to": user, "message": ok, "idempotency_key": "k1"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"duplicate": true, "outbox_id": first}));
    assert_eq!(
        app.conversation(user).await["state"]["outbound_count"],
        counted,
        "a duplicate is not a step"
    );
    // A key that another one extends is a request of its own.
    let (status, body) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(json!({"phone_number_id": PNID, "to": user, "text": "one", "idempotency_key": "k2:0"})))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(json!({"phone_number_id": PNID, "to": user, "text": "two", "idempotency_key": "k2"})))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        graph
            .wait_delivered(4, std::time::Duration::from_secs(10))
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
            .wait_delivered(5, std::time::Duration::from_secs(10))
            .await
    );
    let sent: Vec<_> = graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .collect();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0].body["type"], "template");
    assert_eq!(
        sent[0].body["template"]["components"][0]["parameters"][0]["text"],
        "Budi"
    );
    assert_eq!(
        sent[1].body["interactive"]["action"]["buttons"][1]["reply"]["title"],
        "My order"
    );
    let conv = app.conversation(user).await;
    assert_eq!(conv["contact"]["wa_id"], user);
    // The user's message and our four; read receipts are not messages.
    let directions: Vec<&str> = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions.iter().filter(|d| **d == "in").count(), 1);
    assert_eq!(directions.iter().filter(|d| **d == "out").count(), 4);
    app.stop().await;
}
on_both_stores!(sends, admin_sends_respect_the_window_and_whatsapp_limits);

/// The conversation view reads a conversation's inbound history along the chain its applied
/// messages form (no index at each conversation's place in the inbox), and shows the
/// contact's latest details though the contact row is written only when they change.
async fn the_conversation_view_follows_the_applied_messages(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let (user, other) = ("6281200000060", "6281200000061");
    let start = now_secs() - 1000;
    let mut mine = Vec::new();
    for n in 0..56i64 {
        let wamid = format!("wamid.H{n}");
        let mut body = text_webhook(PNID, user, &wamid, &format!("m{n}"), start + n);
        if n == 55 {
            body = body.replace("Test User", "Sari Baru");
        }
        assert_eq!(app.post_webhook(&body).await, 200);
        mine.push(wamid);
        if n % 5 == 0 {
            let body = text_webhook(PNID, other, &format!("wamid.O{n}"), "x", start + n);
            assert_eq!(app.post_webhook(&body).await, 200);
        }
        if n % 10 == 0 {
            // Some of them one at a time (each its own step), the rest as they come.
            assert!(
                eventually(std::time::Duration::from_secs(10), || async {
                    count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'").await == 0
                })
                .await
            );
        }
    }
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'").await == 0
        })
        .await
    );
    let conv = app.conversation(user).await;
    let wamids = inbound_wamids(&conv);
    let expected: Vec<String> = mine[6..].to_vec();
    assert_eq!(
        wamids, expected,
        "the newest 50, oldest first, none of the other user's"
    );
    assert_eq!(conv["contact"]["profile_name"], "Sari Baru");
    assert_eq!(conv["contact"]["last_seen_at"], (start + 55) * 1000);
    // One contact row per user, though each message did not write it.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM contacts").await, 2);
    app.stop().await;
}
on_both_stores!(history, the_conversation_view_follows_the_applied_messages);

/// Replies to inbound messages are keyed by the message's seq, not by conversation: the
/// conversation view finds them along the inbound chain, interleaved with the messages they
/// answer and with the conversation's other sends, and none of another user's.
async fn the_conversation_view_shows_the_replies_along_the_chain(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let (user, other) = ("6281200000070", "6281200000071");
    let start = now_secs() - 1000;
    let mut mine = Vec::new();
    for n in 0..30usize {
        let wamid = format!("wamid.R{n}");
        let body = text_webhook(PNID, user, &wamid, &format!("m{n}"), start + n as i64);
        assert_eq!(app.post_webhook(&body).await, 200);
        mine.push(wamid);
        // One reply each, in turn, so that the view's order is the conversation's.
        assert!(
            graph
                .wait_delivered(n + 1, std::time::Duration::from_secs(10))
                .await
        );
        if n % 10 == 0 {
            let body = text_webhook(PNID, other, &format!("wamid.RO{n}"), "x", start);
            assert_eq!(app.post_webhook(&body).await, 200);
            assert!(
                eventually(std::time::Duration::from_secs(10), || async {
                    graph
                        .delivered()
                        .iter()
                        .filter(|a| a.to() == Some(other))
                        .count()
                        == n / 10 + 1
                })
                .await
            );
        }
    }
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "text": "agent note"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            graph.delivered_texts().iter().any(|t| t == "agent note")
        })
        .await
    );
    // 30 in, 30 replies and the agent's note: the newest 50 start at the reply to m5.
    let conv = app.conversation(user).await;
    let messages = conv["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 50, "{conv}");
    assert_eq!(inbound_wamids(&conv), mine[6..].to_vec());
    let outs: Vec<String> = messages
        .iter()
        .filter(|m| m["direction"] == "out")
        .map(|m| m["content"].to_string())
        .collect();
    assert_eq!(outs.len(), 26, "{conv}");
    for (k, content) in (5..30).zip(&outs) {
        assert!(content.contains(&format!("echo: m{k}")), "{k}: {content}");
    }
    assert!(outs[25].contains("agent note"), "{}", outs[25]);
    for (i, m) in messages.iter().enumerate().skip(1).take(48) {
        let expected = if i % 2 == 1 { "in" } else { "out" };
        assert_eq!(m["direction"], expected, "message {i}: {conv}");
    }
    app.stop().await;
}
on_both_stores!(
    replies,
    the_conversation_view_shows_the_replies_along_the_chain
);

/// A store from before the history chain: the migration links each conversation's applied
/// messages, so the conversation view shows the history received before the upgrade.
async fn the_history_chain_migration_links_earlier_messages(db: TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        });
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "20261122000060" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(store.pool())
        .await
        .unwrap();
    let (user, other) = ("6281200000070", "6281200000071");
    let rows = [
        (1, user, "message", "done"),
        (2, other, "message", "done"),
        (3, user, "status", "done"),
        (4, user, "message", "done"),
        (5, user, "message", "pending"),
    ];
    for (seq, who, kind, state) in rows {
        sqlx::query(
            "INSERT INTO inbox (seq, account, user_key, kind, dedup_key, wamid, payload, received_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $8)",
        )
        .bind(seq as i64)
        .bind(PNID)
        .bind(who)
        .bind(kind)
        .bind(format!("wamid.M{seq}"))
        .bind(format!("wamid.M{seq}"))
        .bind(1_000 + seq as i64)
        .bind(state)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO conversations (account, user_key, state, last_applied_seq, created_at, updated_at) \
         VALUES ($1, $2, '{}', 4, 0, 0)",
    )
    .bind(PNID)
    .bind(user)
    .execute(store.pool())
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let messages = store
        .conversation_messages(&parley::domain::ConversationKey::new(PNID, user), 50)
        .await
        .unwrap();
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        [1, 4, 5],
        "both applied messages, then the pending one"
    );
    let limited = store
        .conversation_messages(&parley::domain::ConversationKey::new(PNID, user), 2)
        .await
        .unwrap();
    assert_eq!(limited.iter().map(|m| m.id).collect::<Vec<_>>(), [4, 5]);
}
on_both_stores!(
    history_migration,
    the_history_chain_migration_links_earlier_messages
);
