//! The ingress: signatures, limits, parsing every payload type, dedup, durability answers.

use std::sync::Arc;
use std::time::Duration;

use parley::conversation::CoreLogic;
use parley_testkit::{text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

const FIXTURES: &[(&str, &str)] = &[
    ("text", include_str!("../fixtures/webhooks/text.json")),
    (
        "button_reply",
        include_str!("../fixtures/webhooks/button_reply.json"),
    ),
    (
        "list_reply",
        include_str!("../fixtures/webhooks/list_reply.json"),
    ),
    (
        "nfm_reply",
        include_str!("../fixtures/webhooks/nfm_reply.json"),
    ),
    (
        "template_button",
        include_str!("../fixtures/webhooks/template_button.json"),
    ),
    ("image", include_str!("../fixtures/webhooks/image.json")),
    ("video", include_str!("../fixtures/webhooks/video.json")),
    (
        "audio_voice",
        include_str!("../fixtures/webhooks/audio_voice.json"),
    ),
    (
        "document",
        include_str!("../fixtures/webhooks/document.json"),
    ),
    ("sticker", include_str!("../fixtures/webhooks/sticker.json")),
    (
        "location",
        include_str!("../fixtures/webhooks/location.json"),
    ),
    (
        "contacts",
        include_str!("../fixtures/webhooks/contacts.json"),
    ),
    (
        "reaction",
        include_str!("../fixtures/webhooks/reaction.json"),
    ),
    (
        "reaction_removed",
        include_str!("../fixtures/webhooks/reaction_removed.json"),
    ),
    ("order", include_str!("../fixtures/webhooks/order.json")),
    ("system", include_str!("../fixtures/webhooks/system.json")),
    (
        "unsupported",
        include_str!("../fixtures/webhooks/unsupported.json"),
    ),
    (
        "unknown_type",
        include_str!("../fixtures/webhooks/unknown_type.json"),
    ),
];

const STATUS_FIXTURES: &[&str] = &[
    include_str!("../fixtures/webhooks/status_sent.json"),
    include_str!("../fixtures/webhooks/status_delivered.json"),
    include_str!("../fixtures/webhooks/status_read.json"),
    include_str!("../fixtures/webhooks/status_failed.json"),
];

const OTHER_FIXTURES: &[&str] = &[
    include_str!("../fixtures/webhooks/account_update.json"),
    include_str!("../fixtures/webhooks/quality_update.json"),
    include_str!("../fixtures/webhooks/change_errors.json"),
];

async fn every_message_type_and_status_is_accepted_and_lands_where_it_should(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;

    // The fixtures share one wamid (as Meta's samples do); give each message its own.
    for (name, body) in FIXTURES {
        let body = body.replace(
            "wamid.HBgLMTYzMTU1NTExODEVAgASGBQzQUFFMjM0",
            &format!("wamid.FIXTURE-{name}"),
        );
        assert_eq!(app.post_webhook(&body).await, 200, "fixture {name}");
    }
    for body in STATUS_FIXTURES.iter().chain(OTHER_FIXTURES) {
        assert_eq!(app.post_webhook(body).await, 200);
    }
    let messages = count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await;
    assert_eq!(
        messages,
        FIXTURES.len() as i64,
        "one inbox row per message fixture"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'status'").await,
        4
    );
    assert!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbox WHERE kind IN ('account_event', 'change_error')"
        )
        .await
            >= 3
    );

    // Every message from a user is applied to its conversation; all but `system` are marked read.
    let applied = eventually(Duration::from_secs(10), || async {
        count(
            &store,
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'pending'",
        )
        .await
            == 0
    })
    .await;
    assert!(applied, "all messages applied");
    // The newest message is marked read (which marks the earlier ones too; a burst may be
    // covered by fewer receipts than messages).
    let last = format!("wamid.FIXTURE-{}", FIXTURES.last().unwrap().0);
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.is_mark_read()
                    && a.accepted()
                    && a.body["message_id"] == last.as_str()))
            .await,
        "the newest message is marked read"
    );
    // Read receipts carry the wamid they mark and the account's token.
    let receipts: Vec<_> = graph
        .attempts()
        .into_iter()
        .filter(|a| a.is_mark_read())
        .collect();
    assert!(receipts
        .iter()
        .all(|a| a.body["message_id"].as_str().unwrap().starts_with("wamid.")));
    assert!(receipts
        .iter()
        .all(|a| a.authorization.as_deref() == Some(&format!("Bearer {ACCESS_TOKEN}")[..])));
    assert!(receipts.iter().all(|a| a.phone_number_id == PNID));
    // The contact of the text fixture is recorded with its profile name.
    let named = count(
        &store,
        "SELECT COUNT(*) FROM contacts WHERE profile_name IS NOT NULL",
    )
    .await;
    assert!(named >= 1);
    app.stop().await;
}
on_both_stores!(
    every_type,
    every_message_type_and_status_is_accepted_and_lands_where_it_should
);

async fn a_batched_post_with_two_entries_and_two_users_lands_as_three_messages(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    assert_eq!(
        app.post_webhook(include_str!("../fixtures/webhooks/batch.json"))
            .await,
        200
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        3
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(DISTINCT user_key) FROM inbox WHERE kind = 'message'"
        )
        .await,
        2
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&store, "SELECT COUNT(*) FROM conversations").await == 2
        })
        .await,
        "two conversations"
    );
    app.stop().await;
}
on_both_stores!(
    batched,
    a_batched_post_with_two_entries_and_two_users_lands_as_three_messages
);

async fn a_redelivered_webhook_changes_nothing(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let body = text_webhook(
        PNID,
        "6281200000001",
        "wamid.REDELIVER1",
        "hello",
        now_secs(),
    );
    for _ in 0..3 {
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    // Concurrent redeliveries too.
    let posts = (0..5).map(|_| app.post_webhook(&body));
    assert!(futures::future::join_all(posts)
        .await
        .iter()
        .all(|s| *s == 200));
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.accepted())
                .count()
                >= 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(graph.delivered().len(), 1, "one echo");
    assert_eq!(
        graph.attempts().iter().filter(|a| a.is_mark_read()).count(),
        1,
        "one read receipt"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM conversations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(state.contains("\"inbound_count\":1"), "{state}");
    app.stop().await;
}
on_both_stores!(redelivery, a_redelivered_webhook_changes_nothing);

async fn bad_signatures_get_401_and_store_nothing(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let body = text_webhook(PNID, "6281200000002", "wamid.BADSIG", "hello", now_secs());
    assert_eq!(app.post_raw(body.clone().into_bytes(), None).await, 401);
    let wrong = parley::ingress::signature::sign(b"not-the-secret", body.as_bytes());
    assert_eq!(
        app.post_raw(body.clone().into_bytes(), Some(&wrong)).await,
        401
    );
    assert_eq!(
        app.post_raw(body.clone().into_bytes(), Some("sha256=nothex"))
            .await,
        401
    );
    // Signed over different bytes (a re-serialised body would look like this).
    let right = parley::ingress::signature::sign(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        app.post_raw(body.replace("hello", "hellO").into_bytes(), Some(&right))
            .await,
        401
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM dead_letters").await, 0);
    app.stop().await;
}
on_both_stores!(bad_signature, bad_signatures_get_401_and_store_nothing);

async fn an_oversize_body_gets_413(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let sig = parley::ingress::signature::sign(SECRET.as_bytes(), &big);
    assert_eq!(app.post_raw(big, Some(&sig)).await, 413);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("parley_webhooks_total{result=\"too_large\"}"),
        "refusals are counted"
    );
    // Just under the limit is read (and, not being JSON, recorded as malformed).
    let ok = vec![b' '; 3 * 1024 * 1024];
    let sig = parley::ingress::signature::sign(SECRET.as_bytes(), &ok);
    assert_eq!(app.post_raw(ok, Some(&sig)).await, 200);
    app.stop().await;
}
on_both_stores!(oversize, an_oversize_body_gets_413);

async fn signed_but_malformed_json_is_dead_lettered_and_answered_200(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    assert_eq!(
        app.post_webhook("{\"object\": \"whatsapp_business_account\", \"entry\": [")
            .await,
        200
    );
    assert_eq!(app.post_webhook("[1,2,3]").await, 200);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM dead_letters WHERE kind = 'webhook_malformed' AND raw IS NOT NULL").await, 2);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox").await, 0);
    app.stop().await;
}
on_both_stores!(
    malformed,
    signed_but_malformed_json_is_dead_lettered_and_answered_200
);

async fn events_for_an_unknown_number_are_kept_counted_and_answered_200(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let body = text_webhook(
        "999999999",
        "6281200000003",
        "wamid.UNKNOWN",
        "hi",
        now_secs(),
    );
    assert_eq!(app.post_webhook(&body).await, 200);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbox WHERE state = 'unrouted'"
        )
        .await,
        1
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("parley_unknown_account_events_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        graph.attempts().is_empty(),
        "nothing is sent for an unknown number"
    );
    app.stop().await;
}
on_both_stores!(
    unknown_number,
    events_for_an_unknown_number_are_kept_counted_and_answered_200
);

async fn a_failing_store_gets_503_and_a_healthy_one_200_again(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    // Make every inbox write fail, as a full disk or a broken database would.
    if db.is_postgres() {
        sqlx::query("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'store down'; END $$ LANGUAGE plpgsql")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        .execute(store.pool())
        .await
        .unwrap();
    } else {
        sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON inbox BEGIN SELECT RAISE(ABORT, 'store down'); END")
            .execute(store.pool())
            .await
            .unwrap();
    }
    let body = text_webhook(PNID, "6281200000004", "wamid.STOREDOWN", "hi", now_secs());
    assert_eq!(app.post_webhook(&body).await, 503);
    sqlx::query("DROP TRIGGER refuse ON inbox")
        .execute(store.pool())
        .await
        .ok();
    sqlx::query("DROP TRIGGER IF EXISTS refuse")
        .execute(store.pool())
        .await
        .ok();
    // Meta redelivers: now it is taken.
    assert_eq!(app.post_webhook(&body).await, 200);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox").await, 1);
    app.stop().await;
}
on_both_stores!(
    store_down,
    a_failing_store_gets_503_and_a_healthy_one_200_again
);

async fn the_subscription_handshake_answers_the_challenge_only_to_the_right_token(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let (status, body) = app
        .get("/webhook?hub.mode=subscribe&hub.verify_token=test-verify-token&hub.challenge=1158201444")
        .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    let (status, _) = app
        .get("/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1")
        .await;
    assert_eq!(status, 403);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
    app.stop().await;
}
on_both_stores!(
    handshake,
    the_subscription_handshake_answers_the_challenge_only_to_the_right_token
);

async fn hostile_bodies_get_their_documented_answer_and_leave_the_daemon_healthy(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let signed = |body: Vec<u8>| {
        let sig = parley::ingress::signature::sign(SECRET.as_bytes(), &body);
        (body, sig)
    };
    // 10,000 levels of nesting, signed: kept as a dead letter, 200, no stack overflow.
    let deep = format!(
        "{{\"object\":\"whatsapp_business_account\",\"entry\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (body, sig) = signed(deep.into_bytes());
    assert_eq!(app.post_raw(body, Some(&sig)).await, 200);
    // Invalid UTF-8, signed.
    let (body, sig) = signed(vec![b'{', 0xff, 0xfe, b'}']);
    assert_eq!(app.post_raw(body, Some(&sig)).await, 200);
    // Wrongly typed fields, signed: a number where Meta sends a list, a list for an object.
    let (body, sig) = signed(br#"{"object":"whatsapp_business_account","entry":7}"#.to_vec());
    assert_eq!(app.post_raw(body, Some(&sig)).await, 200);
    let (body, sig) = signed(
        br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":[]}]}]}"#.to_vec(),
    );
    assert_eq!(app.post_raw(body, Some(&sig)).await, 200);
    // Empty and unsigned bodies.
    assert_eq!(app.post_raw(Vec::new(), None).await, 401);
    let (body, sig) = signed(Vec::new());
    assert_eq!(app.post_raw(body, Some(&sig)).await, 200);
    // Nothing reached the inbox; the hostile ones are kept for a human to look at.
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        0
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM dead_letters WHERE kind = 'webhook_malformed'"
        )
        .await,
        4
    );

    // And the daemon still works.
    assert_eq!(app.get("/readyz").await.0, 200);
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            "6281200000999",
            "wamid.OK1",
            "hi",
            now_secs()
        ))
        .await,
        200
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        1
    );
    // One good message beside one without its id: the good one is taken, the body kept.
    let both = text_webhook(PNID, "6281200000998", "wamid.OK2", "hi", now_secs()).replacen(
        "\"messages\":[",
        "\"messages\":[{\"from\":\"6281200000998\",\"timestamp\":\"1\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},",
        1,
    );
    assert!(
        both.contains("wamid.OK2") && both.matches("\"from\"").count() >= 2,
        "{both}"
    );
    assert_eq!(app.post_webhook(&both).await, 200);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        2
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM dead_letters WHERE kind = 'webhook_partial' AND raw IS NOT NULL"
        )
        .await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    hostile_bodies,
    hostile_bodies_get_their_documented_answer_and_leave_the_daemon_healthy
);

/// PostgreSQL goes away under load (connections refused and cut for this database), then
/// comes back: webhooks get 503 meanwhile, nothing acknowledged is lost, and service resumes
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_under_load_loses_nothing_acknowledged_and_service_resumes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (admin, name) = db.pg_database().unwrap();
    let (admin, name) = (admin.to_string(), name.to_string());
    let graph = Arc::new(FakeGraph::start().await);
    let app = Arc::new(spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for u in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let user = format!("62815000000{u:02}");
            let (mut acked, mut refused, mut n) = (Vec::new(), 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let wamid = format!("wamid.O{user}-{n:04}");
                let body = text_webhook(PNID, &user, &wamid, "hi", now_secs());
                // Like Meta: a webhook not answered 200 is delivered again.
                loop {
                    match app.post_webhook(&body).await {
                        200 => break,
                        503 => refused += 1,
                        other => panic!("unexpected {other}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                acked.push(wamid);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The outage: no new connections to this database, and the open ones cut.
    let ctl = parley::store::Store::connect(&admin, 1).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(ctl.pool())
        .await
        .unwrap();
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(ctl.pool())
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(ctl.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for s in senders {
        let (a, r) = s.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    assert!(refused > 0, "the outage was seen (503s)");
    let store = db.store().await;
    for wamid in &acked {
        assert_eq!(
            count(
                &store,
                &format!("SELECT COUNT(*) FROM inbox WHERE wamid = '{wamid}'")
            )
            .await,
            1,
            "{wamid} was acknowledged, so it is stored"
        );
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'").await == 0
        })
        .await,
        "every stored message is applied once the store is back: {}",
        {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, user_key FROM inbox WHERE state = 'pending' ORDER BY seq",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let convs: Vec<(String, i64)> =
                sqlx::query_as("SELECT user_key, last_applied_seq FROM conversations")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            format!("pending {rows:?}; conversations {convs:?}")
        }
    );
    assert_eq!(app.get("/readyz").await.0, 200);
    eprintln!(
        "outage: {} acknowledged, {refused} refused with 503 meanwhile",
        acked.len()
    );
}
