//! A finished campaign's counters outlive its rows, on both stores, in virtual time: an A/B
//! campaign with an opted-out recipient, deliveries, a read, a failure and a reply is read
//! through the admin API; the daemon's own sweeper then deletes what retention may (its
//! recipients and `campaign_messages` past `retention.campaign_recipients`; or its messages'
//! outbox rows past `retention.messages`), and the campaign reads exactly the same.

use std::sync::Arc;
use std::time::Duration;

use parley::actors::Clock;
use parley::config::{Settings, Window};
use parley::store::Store;
use parley_testkit::{status_webhook, text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

const DAY: u64 = 86_400;

fn settings(db: &TestDb, graph: &FakeGraph) -> Settings {
    let mut s = test_settings(db, graph);
    let a = &mut s.accounts[0];
    a.messages_per_second = 1000;
    a.pair_rate_interval = Duration::ZERO;
    a.messaging_tier = parley::config::MessagingTier::Unlimited;
    a.mark_read = false;
    // The daemon's own sweeper, often (its clock is the test's).
    s.retention.every = Duration::from_millis(50);
    s.retention.pause = Duration::ZERO;
    s.retention.batch = 7;
    s
}

async fn show(app: &TestApp, id: i64) -> Value {
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/campaigns/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn rows(store: &Store, table: &str, id: i64) -> i64 {
    count(
        store,
        &format!("SELECT COUNT(*) FROM {table} WHERE campaign_id = {id}"),
    )
    .await
}

/// Outbox rows of the campaign's messages still there.
async fn outbox_rows(store: &Store, id: i64) -> i64 {
    count(
        store,
        &format!(
            "SELECT COUNT(*) FROM campaign_messages m JOIN outbox o ON o.id = m.outbox_id \
             WHERE m.campaign_id = {id}"
        ),
    )
    .await
}

/// A finished A/B campaign of 21 recipients (one opted out) whose messages were delivered,
/// read, failed and replied to; its admin view once every count has landed.
async fn finished_campaign(app: &TestApp, graph: &FakeGraph, clock: &ManualClock) -> (i64, Value) {
    let now_secs = || clock.now_ms() / 1000;
    let opted_out = "62820000099";
    let stop = text_webhook(PNID, opted_out, "wamid.STOP", "stop", now_secs());
    assert_eq!(app.post_webhook(&stop).await, 200);
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.to() == Some(opted_out)))
            .await,
        "the opt-out is answered"
    );
    let mut to: Vec<Value> = (0..20)
        .map(|i| json!({"wa_id": format!("628200000{i:02}")}))
        .collect();
    to.push(json!({"wa_id": opted_out}));
    let template = |name: &str| json!({"template": {"name": name, "language": "id"}});
    let (status, made) = app
        .admin(
            Method::POST,
            "/campaigns",
            Some(ADMIN_TOKEN),
            Some(
                json!({"name": "ab-kept", "phone_number_id": PNID, "type": "ab",
                "variants": [{"name": "A", "weight": 1, "message": template("va")},
                             {"name": "B", "weight": 1, "message": template("vb")}],
                "recipients": to, "rate_limit_per_minute": 60000, "start": true}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            show(app, id).await["status"] == "completed"
        })
        .await,
        "{}",
        show(app, id).await
    );
    let sent = |name: &str| -> Vec<parley_testkit::Attempt> {
        graph
            .delivered()
            .into_iter()
            .filter(|a| a.body["template"]["name"] == name)
            .collect()
    };
    let (va, vb) = (sent("va"), sent("vb"));
    assert_eq!(va.len() + vb.len(), 20);
    assert!(va.len() >= 2 && !vb.is_empty(), "both variants sent");
    let wamid = |a: &parley_testkit::Attempt| match &a.outcome {
        parley_testkit::Outcome::Accepted(Some(w)) => w.clone(),
        other => panic!("not accepted: {other:?}"),
    };
    // A: one delivered, one failed (131047); B: one read, and its recipient replies.
    for (a, status) in [(&va[0], "delivered"), (&va[1], "failed"), (&vb[0], "read")] {
        let body = status_webhook(
            PNID,
            &wamid(a),
            status,
            a.to().unwrap(),
            a.callback(),
            now_secs(),
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    clock.advance(Duration::from_secs(60));
    let replier = vb[0].to().unwrap().to_string();
    let reply = text_webhook(PNID, &replier, "wamid.THANKS", "thanks", now_secs());
    assert_eq!(app.post_webhook(&reply).await, 200);
    let landed = |c: &Value| {
        let n = &c["counters"];
        let replied: i64 = c["variants"]
            .as_array()
            .map(|v| v.iter().filter_map(|v| v["replied"].as_i64()).sum())
            .unwrap_or(0);
        n["delivered"] == 2 && n["read"] == 1 && n["failed"] == 1 && replied == 1
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            landed(&show(app, id).await)
        })
        .await,
        "{}",
        show(app, id).await
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.iter().any(|a| a.to()
                == Some(replier.as_str())
                && a.body.get("text").is_some()))
            .await,
        "the reply is answered"
    );
    let view = show(app, id).await;
    let c = &view["counters"];
    assert_eq!(
        (
            c["total"].as_i64(),
            c["queued"].as_i64(),
            c["sent"].as_i64(),
            c["skipped"].as_i64()
        ),
        (Some(21), Some(20), Some(20), Some(1)),
        "{view}"
    );
    let variants = view["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{view}");
    assert_eq!(variants[0]["name"], "A");
    assert_eq!(variants[0]["failed"], 1, "{view}");
    assert_eq!(variants[1]["read"], 1, "{view}");
    assert_eq!(variants[1]["replied"], 1, "{view}");
    (id, view)
}

async fn counters_outlive_the_campaigns_rows(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = ManualClock::at_now();
    let app = spawn_app_with_logic_and_clock(
        settings(&db, &graph),
        Arc::new(Echo),
        Arc::new(clock.clone()),
    )
    .await;
    let store = db.store().await;
    let (id, before) = finished_campaign(&app, &graph, &clock).await;
    assert_eq!(rows(&store, "campaign_messages", id).await, 20);
    // Inside the window (90 days from its end) nothing of it goes, and nothing is frozen.
    clock.advance(Duration::from_secs(89 * DAY));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rows(&store, "campaign_recipients", id).await, 21);
    assert_eq!(rows(&store, "campaign_messages", id).await, 20);
    assert_eq!(rows(&store, "campaign_totals", id).await, 0);
    // Past it: frozen, then its recipients and messages go, in batches of 7.
    clock.advance(Duration::from_secs(2 * DAY));
    let gone = || async {
        rows(&store, "campaign_recipients", id).await == 0
            && rows(&store, "campaign_messages", id).await == 0
    };
    assert!(
        eventually(Duration::from_secs(20), gone).await,
        "the campaign's rows are deleted"
    );
    assert_eq!(rows(&store, "campaign_totals", id).await, 1);
    assert_eq!(rows(&store, "campaign_variant_totals", id).await, 2);
    let after = show(&app, id).await;
    assert_eq!(after, before, "the same campaign, before and after");
    // The storage report counts campaign_messages, bounded by the recipients' window.
    let (status, storage) = app
        .admin(Method::GET, "/storage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{storage}");
    let table = |name: &str| {
        storage["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in the storage report: {storage}"))
    };
    let (messages, recipients) = (table("campaign_messages"), table("campaign_recipients"));
    assert_eq!(messages["rows"], 0, "{storage}");
    assert_eq!(messages["retention"], recipients["retention"], "{storage}");
    app.stop().await;
    store.close().await;
}
on_both_stores!(
    a_finished_campaign_reads_the_same_after_its_rows_are_deleted,
    counters_outlive_the_campaigns_rows
);

/// Message rows kept for a day, recipients for ever: the outbox rows the counters are
/// counted from go first, and the counters were frozen before they did.
async fn counters_outlive_the_messages_outbox_rows(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = ManualClock::at_now();
    let mut s = settings(&db, &graph);
    s.retention.messages = Window::For(Duration::from_secs(DAY));
    s.retention.campaign_recipients = Window::Forever;
    let app = spawn_app_with_logic_and_clock(s, Arc::new(Echo), Arc::new(clock.clone())).await;
    let store = db.store().await;
    let (id, before) = finished_campaign(&app, &graph, &clock).await;
    assert_eq!(outbox_rows(&store, id).await, 20);
    clock.advance(Duration::from_secs(2 * DAY));
    assert!(
        eventually(Duration::from_secs(20), || async {
            outbox_rows(&store, id).await == 0
        })
        .await,
        "the messages' outbox rows are deleted"
    );
    assert_eq!(rows(&store, "campaign_totals", id).await, 1);
    assert_eq!(show(&app, id).await, before, "the same campaign");
    // Its own rows stay under a window of for ever.
    assert_eq!(rows(&store, "campaign_recipients", id).await, 21);
    assert_eq!(rows(&store, "campaign_messages", id).await, 20);
    app.stop().await;
    store.close().await;
}
on_both_stores!(
    a_finished_campaign_reads_the_same_after_its_outbox_rows_are_deleted,
    counters_outlive_the_messages_outbox_rows
);
