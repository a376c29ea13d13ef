//! Retention on both stores, in virtual time: thirty scripted days of traffic with the
//! sweeper's pass run at the end of each day → every table bounded by its window and every
//! row still needed present; a webhook redelivered after its payload was erased is still
//! recognised; `log_messages = false` keeps no body; `GET /admin/v1/storage`.

use std::time::Duration;

use parley::config::{Settings, Window};
use parley::store::Store;
use parley_testkit::{text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000;
const ERASED: &str = r#"{"erased":true}"#;

fn days(n: u64) -> Window {
    Window::For(Duration::from_secs(n * 86_400))
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One day of traffic, dated `at` (and a few minutes after).
async fn traffic(store: &Store, media_dir: &std::path::Path, d: i64, at: i64) {
    let a = PNID;
    for i in 0..5 {
        let t = at + i;
        exec(store, &format!(
            "INSERT INTO inbox (account, user_key, kind, dedup_key, wamid, payload, received_at, state) VALUES \
             ('{a}', 'u{i}', 'message', 'm-{d}-{i}', 'wamid.m{d}{i}', '{{\"content\":{{\"type\":\"text\",\"body\":\"hello {d} {i}\"}}}}', {t}, 'done')")).await;
        for s in ["sent", "delivered"] {
            exec(store, &format!(
                "INSERT INTO inbox (account, user_key, kind, dedup_key, wamid, status, payload, received_at, state) VALUES \
                 ('{a}', 'u{i}', 'status', 's-{d}-{i}-{s}', 'wamid.o{d}{i}', '{s}', '{{\"status\":\"{s}\"}}', {t}, 'done')")).await;
        }
        for kind in ["message", "mark_read"] {
            exec(store, &format!(
                "INSERT INTO outbox (account, user_key, idem_key, kind, message, state, created_at, updated_at) VALUES \
                 ('{a}', 'u{i}', '{a}:u{i}:{d}:{kind}', '{kind}', '{{\"text\":{{\"body\":\"echo {d}\"}}}}', 'sent', {t}, {t})")).await;
        }
    }
    exec(store, &format!(
        "INSERT INTO flow_executions (account, user_key, flow_id, started_at, version, status, updated_at, ended_at) \
         VALUES ('{a}', 'u1', 'shop', {at}, 'v1', 'completed', {at}, {})", at + 2)).await;
    for n in 0..3 {
        exec(store, &format!(
            "INSERT INTO flow_execution_steps (account, user_key, flow_id, started_at, node, status, at) \
             VALUES ('{a}', 'u1', 'shop', {at}, 'n{n}', 'completed', {})", at + n)).await;
    }
    exec(store, &format!(
        "INSERT INTO dead_letters (kind, account, reason, created_at) VALUES ('outbox_send', '{a}', 'day {d}', {at})")).await;
    let file = media_dir.join(format!("m{d}.jpg"));
    std::fs::write(&file, b"jpeg").unwrap();
    exec(
        store,
        &format!(
            "INSERT INTO media_files (account, media_id, user_key, path, bytes, created_at) \
         VALUES ('{a}', 'media{d}', 'u1', '{}', 4, {at})",
            file.display()
        ),
    )
    .await;
    exec(
        store,
        &format!(
            "INSERT INTO hook_events (id, account, event_type, payload, dedup_key, created_at) \
         VALUES ('evt{d}', '{a}', 'message.received', '{{}}', 'dk{d}', {at})"
        ),
    )
    .await;
    exec(store, &format!(
        "INSERT INTO hook_deliveries (event_id, endpoint_id, state, attempts, next_at, created_at, updated_at) \
         VALUES ('evt{d}', 'ep1', 'succeeded', 1, {at}, {at}, {at})")).await;
    exec(store, &format!(
        "INSERT INTO hook_attempts (delivery_id, endpoint_id, event_id, at, latency_ms, status, body) \
         VALUES (0, 'ep1', 'evt{d}', {at}, 5, 200, 'ok')")).await;
    // A chatbot session that ended, a handoff and its release, a timer that fired.
    for sql in [
        format!("INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, updated_at) VALUES ('{a}', 'u2', 'helper', {at}, 'completed', {})", at + 60_000),
        format!("INSERT INTO conversation_handoffs (account, user_key, kind, dedup_key, at) VALUES ('{a}', 'u3', 'handoff', 'h{d}', {at})"),
        format!("INSERT INTO conversation_handoffs (account, user_key, kind, dedup_key, at) VALUES ('{a}', 'u3', 'release', 'r{d}', {})", at + 600_000),
        format!("INSERT INTO timers (account, user_key, idem_key, name, payload, due_at, state, created_at) VALUES ('{a}', 'u4', 'fired{d}', 'reminder', 'null', {}, 'fired', {at})", at + 1_000),
    ] {
        exec(store, &sql).await;
    }
}

/// Rows still needed, written on the first day.
async fn still_needed(store: &Store, media_dir: &std::path::Path) {
    let (a, at) = (PNID, T0 + 3_600_000);
    for sql in [
        // An inbox message not applied yet, outbox rows not confirmed.
        format!("INSERT INTO inbox (account, user_key, kind, dedup_key, payload, received_at, state) VALUES ('{a}', 'late', 'message', 'pending-1', '{{\"content\":{{\"body\":\"wait\"}}}}', {at}, 'pending')"),
        format!("INSERT INTO outbox (account, user_key, idem_key, kind, message, state, created_at, updated_at) VALUES ('{a}', 'late', 'q1', 'mark_read', '{{}}', 'pending', {at}, {at})"),
        format!("INSERT INTO outbox (account, user_key, idem_key, kind, message, state, created_at, updated_at) VALUES ('{a}', 'late', 'q2', 'mark_read', '{{}}', 'sending', {at}, {at})"),
        // Conversations in a wait and in a handoff, a timer 10 days past the last day.
        format!("INSERT INTO conversations (account, user_key, state, created_at, updated_at) VALUES ('{a}', 'waiting', '{{\"wait\":\"reminder\"}}', {at}, {at})"),
        format!("INSERT INTO conversations (account, user_key, state, created_at, updated_at) VALUES ('{a}', 'handed', '{{\"handoff\":true}}', {at}, {at})"),
        format!("INSERT INTO timers (account, user_key, idem_key, name, payload, due_at, state, created_at) VALUES ('{a}', 'waiting', 't1', 'reminder', 'null', {}, 'pending', {at})", T0 + 40 * DAY),
        // A chatbot session still active since the first day.
        format!("INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, updated_at) VALUES ('{a}', 'chatty', 'helper', {at}, 'active', {at})"),
        // A pending payment (commerce's: never retention's).
        format!("INSERT INTO payments (account, order_id, user_key, provider, kind, method, amount, currency, status, expires_at, idem_key, created_at, updated_at) VALUES ('{a}', 1, 'buyer', 'manual', 'transfer', 'bank', '10', 'IDR', 'pending', {}, 'p1', {at}, {at})", T0 + 60 * DAY),
        // A flow session paused on a timer since the first day: its state stays (its trace
        // goes with the window like any other).
        format!("INSERT INTO flow_executions (account, user_key, flow_id, started_at, version, status, updated_at) VALUES ('{a}', 'waiting', 'drip', {at}, 'v1', 'paused', {at})"),
        format!("INSERT INTO flow_execution_steps (account, user_key, flow_id, started_at, node, status, at) VALUES ('{a}', 'waiting', 'drip', {at}, 'wait', 'paused', {at})"),
        // A webhook delivery still to be attempted, and its event.
        format!("INSERT INTO hook_events (id, account, event_type, payload, dedup_key, created_at) VALUES ('evt-open', '{a}', 'order.created', '{{}}', 'dk-open', {at})"),
        format!("INSERT INTO hook_deliveries (event_id, endpoint_id, state, attempts, next_at, created_at, updated_at) VALUES ('evt-open', 'ep1', 'pending', 3, {}, {at}, {at})", T0 + 31 * DAY),
        // A photo a custom order names, and campaigns: one finished on day 2, one running.
        format!("INSERT INTO media_files (account, media_id, user_key, path, bytes, created_at) VALUES ('{a}', 'photo', 'buyer', '{}', 4, {at})", media_dir.join("photo.jpg").display()),
        format!("INSERT INTO custom_orders (account, user_key, description, media_id, status, idem_key, created_at, updated_at) VALUES ('{a}', 'buyer', 'a cake', 'photo', 'new', 'co1', {at}, {at})"),
        format!("INSERT INTO campaigns (account, name, kind, spec, status, rate_per_minute, created_at, updated_at, finished_at) VALUES ('{a}', 'done', 'broadcast', '{{}}', 'completed', 60, {at}, {at}, {})", T0 + 2 * DAY),
        format!("INSERT INTO campaigns (account, name, kind, spec, status, rate_per_minute, created_at, updated_at) VALUES ('{a}', 'drip', 'drip', '{{}}', 'running', 60, {at}, {at})"),
        // One paused, and one cancelled on day 2 whose withheld message (q1) is not settled.
        format!("INSERT INTO campaigns (account, name, kind, spec, status, rate_per_minute, created_at, updated_at) VALUES ('{a}', 'held', 'broadcast', '{{}}', 'paused', 60, {at}, {at})"),
        format!("INSERT INTO campaigns (account, name, kind, spec, status, rate_per_minute, created_at, updated_at, finished_at) VALUES ('{a}', 'halted', 'broadcast', '{{}}', 'cancelled', 60, {at}, {at}, {})", T0 + 2 * DAY),
    ] {
        exec(store, &sql).await;
    }
    std::fs::write(media_dir.join("photo.jpg"), b"jpeg").unwrap();
    let campaigns: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM campaigns ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    for (c, name) in campaigns {
        for r in 0..3 {
            exec(store, &format!(
                "INSERT INTO campaign_recipients (campaign_id, id, user_key, state, enrolled_at, updated_at) \
                 VALUES ({c}, {r}, 'r{r}', 'done', {at}, {at})")).await;
            // Its messages (the halted one's first is the unsettled q1).
            let outbox = if name == "halted" && r == 0 {
                "(SELECT id FROM outbox WHERE idem_key = 'q1')".to_string()
            } else {
                format!("{}", -1 - r)
            };
            exec(store, &format!(
                "INSERT INTO campaign_messages (campaign_id, recipient_id, step, variant, outbox_id, created_at) \
                 VALUES ({c}, {r}, 0, 0, {outbox}, {at})")).await;
        }
    }
}

/// A campaign's rows: (recipients, messages, frozen counters).
async fn campaign_rows(store: &Store, name: &str) -> (i64, i64, i64) {
    let n = |table: &str| {
        format!(
            "SELECT COUNT(*) FROM {table} x JOIN campaigns c ON c.id = x.campaign_id WHERE c.name = '{name}'"
        )
    };
    (
        count(store, &n("campaign_recipients")).await,
        count(store, &n("campaign_messages")).await,
        count(store, &n("campaign_totals")).await,
    )
}

fn retention_settings(db: &TestDb, media_dir: &std::path::Path) -> Settings {
    let mut s = Settings::load(None).expect("default settings");
    s.store.url = db.url.clone();
    s.media.dir = media_dir.to_path_buf();
    s.accounts = vec![
        serde_json::from_value(serde_json::json!({ "phone_number_id": PNID })).expect("account"),
    ];
    let r = &mut s.retention;
    r.flow_steps = days(10);
    r.dead_letters = days(10);
    r.media = days(10);
    r.campaign_recipients = days(5);
    r.webhook_log = days(10);
    r.sessions = days(10);
    // Small statements, so that a day's rows take several.
    r.batch = 7;
    r.batches_per_pass = 1_000;
    r.pause = Duration::ZERO;
    s
}

async fn thirty_days_stay_bounded(db: TestDb) {
    let store = db.store().await;
    store.migrate().await.unwrap();
    let media = tempfile::tempdir().unwrap();
    let media_dir = media.path().join(PNID);
    std::fs::create_dir_all(&media_dir).unwrap();
    let settings = retention_settings(&db, media.path());
    still_needed(&store, &media_dir).await;
    let mut now = T0;
    for d in 0..30 {
        let at = T0 + d * DAY + 3_600_000;
        traffic(&store, &media_dir, d, at).await;
        store.catch_up_search().await.unwrap();
        now = T0 + (d + 1) * DAY;
        parley::ingress::retention::pass(&store, &settings, now)
            .await
            .unwrap();
    }
    let n = |sql: String| {
        let store = store.clone();
        async move { count(&store, &sql).await }
    };
    let before = |days: i64| now - days * DAY;
    // Statuses: none older than dedup (8 d); payloads erased past inbox (3 d), kept after.
    assert_eq!(
        n(format!(
            "SELECT COUNT(*) FROM inbox WHERE kind = 'status' AND received_at < {}",
            before(8)
        ))
        .await,
        0
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM inbox WHERE kind = 'status'".into()).await,
        8 * 10
    );
    assert_eq!(n(format!("SELECT COUNT(*) FROM inbox WHERE kind = 'status' AND received_at < {} AND payload <> '{ERASED}'", before(3))).await, 0);
    assert_eq!(n(format!("SELECT COUNT(*) FROM inbox WHERE kind = 'status' AND received_at >= {} AND payload = '{ERASED}'", before(3))).await, 0);
    // Messages are kept for ever by default, bodies and search documents included.
    assert_eq!(n("SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done' AND payload <> '{\"erased\":true}'".into()).await, 150);
    assert_eq!(
        n("SELECT COUNT(*) FROM outbox WHERE kind = 'message'".into()).await,
        150
    );
    // Both directions, and the message not applied yet.
    assert_eq!(n("SELECT COUNT(*) FROM search_docs".into()).await, 301);
    // Settled read receipts: 7 days; those not confirmed stay.
    assert_eq!(n(format!("SELECT COUNT(*) FROM outbox WHERE kind = 'mark_read' AND state = 'sent' AND created_at < {}", before(7))).await, 0);
    assert_eq!(
        n("SELECT COUNT(*) FROM outbox WHERE kind = 'mark_read' AND state = 'sent'".into()).await,
        7 * 5
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')".into()).await,
        2
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM inbox WHERE state = 'pending'".into()).await,
        1
    );
    // Flow steps, dead letters, media, the webhook log: 10 days.
    assert_eq!(
        n("SELECT COUNT(*) FROM flow_execution_steps WHERE flow_id = 'shop'".into()).await,
        10 * 3
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'shop'".into()).await,
        10,
        "an ended session goes with its trace"
    );
    assert_eq!(
        n(
            "SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'drip' AND status = 'paused'"
                .into()
        )
        .await,
        1,
        "a paused session stays (its trace is bounded like any other)"
    );
    assert_eq!(n("SELECT COUNT(*) FROM dead_letters".into()).await, 10);
    // Ended chatbot sessions, the handoff log, fired timers: 10 days; what is live stays.
    assert_eq!(
        n("SELECT COUNT(*) FROM chatbot_sessions WHERE status = 'completed'".into()).await,
        10
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM chatbot_sessions WHERE status = 'active'".into()).await,
        1,
        "an active chatbot session stays"
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM conversation_handoffs".into()).await,
        2 * 10
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM timers WHERE state = 'fired'".into()).await,
        10
    );
    assert_eq!(n("SELECT COUNT(*) FROM media_files".into()).await, 10 + 1);
    let files = std::fs::read_dir(&media_dir).unwrap().count();
    assert_eq!(
        files,
        10 + 1,
        "the files went with their rows; the custom order's photo stays"
    );
    assert!(media_dir.join("photo.jpg").exists());
    assert_eq!(n("SELECT COUNT(*) FROM hook_attempts".into()).await, 10);
    assert_eq!(
        n("SELECT COUNT(*) FROM hook_deliveries".into()).await,
        10 + 1
    );
    assert_eq!(n("SELECT COUNT(*) FROM hook_events".into()).await, 10 + 1);
    assert_eq!(
        n("SELECT COUNT(*) FROM hook_deliveries WHERE state = 'pending'".into()).await,
        1
    );
    // A finished campaign's recipients and messages go, its counters frozen first; a running
    // or paused one's stay, and so do a cancelled one's while a message of it is unsettled.
    assert_eq!(campaign_rows(&store, "done").await, (0, 0, 1));
    assert_eq!(campaign_rows(&store, "drip").await, (3, 3, 0));
    assert_eq!(campaign_rows(&store, "held").await, (3, 3, 0));
    assert_eq!(campaign_rows(&store, "halted").await, (3, 3, 0));
    // Never retention's: conversations, timers, payments.
    assert_eq!(
        n("SELECT COUNT(*) FROM conversations WHERE user_key IN ('waiting', 'handed')".into())
            .await,
        2
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM timers WHERE state = 'pending'".into()).await,
        1
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM payments WHERE status = 'pending'".into()).await,
        1
    );

    // A second pass finds nothing more to do, and its walks start where the last stopped.
    let again = parley::ingress::retention::pass(&store, &settings, now)
        .await
        .unwrap();
    assert_eq!(again, Default::default());

    // Shorter message windows later (a reload): bodies past them go, the dedup rows stay.
    let mut short = settings.clone();
    short.retention.messages = days(2);
    parley::ingress::retention::pass(&store, &short, now)
        .await
        .unwrap();
    assert_eq!(
        n(format!(
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done' AND received_at < {}",
            before(8)
        ))
        .await,
        0
    );
    assert_eq!(n(format!("SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done' AND received_at < {} AND payload <> '{ERASED}'", before(2))).await, 0);
    assert_eq!(
        n(format!(
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done' AND received_at < {}",
            before(2)
        ))
        .await,
        6 * 5
    );
    assert_eq!(
        n(format!(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND created_at < {}",
            before(2)
        ))
        .await,
        0
    );
    assert_eq!(
        n(format!(
            "SELECT COUNT(*) FROM search_docs WHERE at < {}",
            before(2)
        ))
        .await,
        0
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM inbox WHERE state = 'pending'".into()).await,
        1
    );
    store.close().await;
}
on_both_stores!(
    thirty_days_of_traffic_stay_bounded,
    thirty_days_stay_bounded
);

/// The daemon's own sweeper, in virtual time: an account that keeps no message bodies, and a
/// webhook Meta redelivers after its payload was erased.
async fn redelivered_after_erasure(db: TestDb) {
    let graph = FakeGraph::start().await;
    let mut settings = test_settings(&db, &graph);
    settings.retention.every = Duration::from_millis(50);
    settings.retention.log_messages = false;
    let clock = ManualClock::at_now();
    let app = spawn_app_with_logic_and_clock(
        settings,
        std::sync::Arc::new(Echo),
        std::sync::Arc::new(clock.clone()),
    )
    .await;
    let store = db.store().await;
    let body = text_webhook(
        PNID,
        "6281234567890",
        "wamid.REDELIVERED",
        "secret words",
        now_secs(),
    );
    assert_eq!(app.post_webhook(&body).await, 200);
    assert_sent_once(
        &graph,
        "echo: secret words",
        "the reply",
        Duration::from_millis(200),
    )
    .await;
    // Once applied and sent, neither body is kept; ids and statuses are.
    let erased = |sql: &'static str| {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { count(&store, sql).await == 1 }
        }
    };
    assert!(eventually(Duration::from_secs(10), erased("SELECT COUNT(*) FROM inbox WHERE dedup_key LIKE '%wamid.REDELIVERED%' AND payload = '{\"erased\":true}'")).await, "the inbound body is erased");
    assert!(eventually(Duration::from_secs(10), erased("SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND state = 'sent' AND message = '{\"erased\":true}' AND wamid IS NOT NULL")).await, "the reply's body is erased");
    // Four days on (statuses' payloads erased too), Meta redelivers the webhook.
    clock.advance(Duration::from_secs(4 * 86_400));
    assert_eq!(app.post_webhook(&body).await, 200);
    assert_sent_once(
        &graph,
        "echo: secret words",
        "the reply to a redelivery",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'").await,
        0
    );
    let (status, view) = app
        .admin(reqwest::Method::GET, "/storage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["log_messages"], false);
    app.stop().await;
    store.close().await;
}
on_both_stores!(
    a_redelivered_webhook_is_known_after_its_body_was_erased,
    redelivered_after_erasure
);

async fn storage_endpoint(db: TestDb) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(test_settings(&db, &graph), std::sync::Arc::new(Echo)).await;
    let body = text_webhook(PNID, "6281234567890", "wamid.STORAGE", "hello", now_secs());
    assert_eq!(app.post_webhook(&body).await, 200);
    assert_sent_once(
        &graph,
        "echo: hello",
        "the reply",
        Duration::from_millis(100),
    )
    .await;
    let (status, view) = app
        .admin(reqwest::Method::GET, "/storage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{view}");
    let tables = view["tables"].as_array().unwrap();
    let inbox = tables
        .iter()
        .find(|t| t["table"] == "inbox")
        .expect("inbox");
    assert!(inbox["rows"].as_i64().unwrap() >= 1, "{view}");
    assert!(inbox["bytes"].as_i64().unwrap() > 0, "{view}");
    assert!(inbox["oldest_age_seconds"].as_i64().is_some(), "{view}");
    assert!(view["database_bytes"].as_i64().unwrap() > 0, "{view}");
    if db.is_postgres() {
        assert_eq!(view["bytes_method"], "pg_total_relation_size");
    } else {
        assert_eq!(view["bytes_method"], "dbstat");
        assert_eq!(
            view["auto_vacuum"], "incremental",
            "a new database is INCREMENTAL"
        );
    }
    let (status, _) = app
        .admin(reqwest::Method::GET, "/storage", None, None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}
on_both_stores!(storage_is_reported_per_table, storage_endpoint);
