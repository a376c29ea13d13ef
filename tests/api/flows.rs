//! Flows through the whole daemon: the shop conversation, webhook in, replies at the fake
//! Graph API.

use std::sync::Arc;
use std::time::Duration;

use parley::testing::{button_reply_webhook, text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

async fn the_shop_flow_answers_the_reference_conversation_exactly(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000077";
    let steps: Vec<(String, Vec<&str>)> = vec![
        (
            text_webhook(PNID, user, "wamid.S1", "menu", now_secs()),
            vec!["Welcome! What would you like?"],
        ),
        (
            button_reply_webhook(PNID, user, "wamid.S2", "catalog", "Catalog", now_secs()),
            vec!["1. Kopi 25000\n2. Teh 15000\n3. Roti 10000\nWhich product number?"],
        ),
        (
            text_webhook(PNID, user, "wamid.S3", "2", now_secs()),
            vec!["How many?"],
        ),
        (
            text_webhook(PNID, user, "wamid.S4", "abc", now_secs()),
            vec!["Please send a number"],
        ),
        (
            text_webhook(PNID, user, "wamid.S5", "3", now_secs()),
            vec!["Total: 45000. Reply yes to confirm"],
        ),
        (
            text_webhook(PNID, user, "wamid.S6", "yes", now_secs()),
            vec!["Order confirmed"],
        ),
    ];
    let mut expected = 0;
    for (body, replies) in &steps {
        assert_eq!(app.post_webhook(body).await, 200);
        expected += replies.len();
        assert!(
            graph
                .wait_delivered(expected, Duration::from_secs(10))
                .await,
            "reply to step {expected}"
        );
    }
    let sent = graph.delivered();
    let texts: Vec<String> = sent
        .iter()
        .map(|a| {
            a.text()
                .map(str::to_string)
                .or_else(|| {
                    a.body
                        .pointer("/interactive/body/text")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default()
        })
        .collect();
    let want: Vec<String> = steps
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(texts, want);
    let buttons: Vec<&str> = sent[0].body["interactive"]["action"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["reply"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(buttons, vec!["Catalog", "My order", "Help"]);
    // The session is recorded: completed, one step row per event it handled.
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(&store, "SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'shop' AND status = 'completed' AND ended_at IS NOT NULL").await == 1
        })
        .await,
        "one completed shop execution"
    );
    assert_eq!(
        count(
            &store,
            "SELECT steps FROM flow_executions WHERE flow_id = 'shop'"
        )
        .await,
        6
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM flow_execution_steps WHERE flow_id = 'shop'"
        )
        .await,
        6
    );
    let (_, flows) = app
        .admin(reqwest::Method::GET, "/flows", Some(ADMIN_TOKEN), None)
        .await;
    let shop = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(shop["executions"]["completed"], 1, "{flows}");
    app.stop().await;
}
on_both_stores!(
    shop,
    the_shop_flow_answers_the_reference_conversation_exactly
);

/// `user` asks the shipped reminder flow for a reminder, and is told it will come in 2 hours.
async fn ask_for_a_reminder(app: &TestApp, graph: &FakeGraph, user: &str, wamid: &str) {
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            user,
            wamid,
            "please remind me",
            now_secs()
        ))
        .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.iter().any(
                |a| a.accepted() && a.text() == Some("I will remind you in 2 hours")
            ))
            .await
    );
}

async fn a_durable_wait_fires_once_after_a_restart_past_its_due_time(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let clock = ManualClock::at_now();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_clock(settings.clone(), Arc::new(clock.clone())).await;
    ask_for_a_reminder(&app, &graph, "6281200000078", "wamid.T1").await;
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(&store, "SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'reminder' AND status = 'paused'").await == 1
        })
        .await,
        "the waiting session is recorded as paused"
    );
    // An hour later nothing has fired.
    clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        graph
            .delivered()
            .iter()
            .all(|a| a.text() != Some("Reminder!")),
        "not before it is due"
    );
    app.stop().await;

    // Down past the due time; the next process fires it, once.
    clock.advance(Duration::from_secs(3700));
    let app = spawn_app_with_clock(settings, Arc::new(clock.clone())).await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.accepted() && a.text() == Some("Reminder!")))
            .await,
        "the reminder is sent after the restart"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reminders = graph
        .delivered()
        .iter()
        .filter(|a| a.text() == Some("Reminder!"))
        .count();
    assert_eq!(reminders, 1, "exactly once");
    let store = db.store().await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM timers WHERE state = 'fired'").await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM timers WHERE state = 'pending'"
        )
        .await,
        0
    );
    app.stop().await;
}
on_both_stores!(
    durable_wait,
    a_durable_wait_fires_once_after_a_restart_past_its_due_time
);

async fn a_reload_swaps_only_valid_flows_and_running_conversations_keep_their_version(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string("flows/shop.yaml").unwrap();
    std::fs::write(dir.path().join("shop.yaml"), &shop).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let replies = |n: usize| {
        let graph = graph.clone();
        async move { graph.wait_delivered(n, Duration::from_secs(10)).await }
    };
    let old_user = "6281200000080";
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            old_user,
            "wamid.V1",
            "menu",
            now_secs()
        ))
        .await,
        200
    );
    assert_eq!(
        app.post_webhook(&button_reply_webhook(
            PNID,
            old_user,
            "wamid.V2",
            "catalog",
            "Catalog",
            now_secs()
        ))
        .await,
        200
    );
    // The old user stops at the product question, mid-conversation.
    assert!(replies(2).await);

    // A broken file: refused, nothing changes, the error is logged, counted and shown.
    let refused = || async {
        let (_, metrics) = app.get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("parley_flow_reloads_total{result=\"refused\"} "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let refused_before = refused().await;
    std::fs::write(
        dir.path().join("broken.yaml"),
        "start: nowhere\nnodes: {}\n",
    )
    .unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("broken.yaml:"),
        "{body}"
    );
    let (_, listed) = app
        .admin(reqwest::Method::GET, "/flows", Some(ADMIN_TOKEN), None)
        .await;
    assert!(listed["last_reload_errors"].is_array(), "{listed}");
    assert!(
        refused().await > refused_before,
        "a refused reload is counted"
    );
    std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();

    // A valid change: swapped in for new conversations only.
    std::fs::write(
        dir.path().join("shop.yaml"),
        shop.replace("How many?", "How many cups?"),
    )
    .unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    // The conversation in flight goes on after the reload: on its pinned version.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, old_user, "wamid.V3", "1", now_secs()))
            .await,
        200
    );
    assert!(replies(3).await);
    let new_user = "6281200000081";
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            new_user,
            "wamid.N1",
            "menu",
            now_secs()
        ))
        .await,
        200
    );
    assert_eq!(
        app.post_webhook(&button_reply_webhook(
            PNID,
            new_user,
            "wamid.N2",
            "catalog",
            "Catalog",
            now_secs()
        ))
        .await,
        200
    );
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, new_user, "wamid.N3", "1", now_secs()))
            .await,
        200
    );
    assert!(replies(6).await);
    let to = |user: &str| -> Vec<String> {
        graph
            .delivered()
            .iter()
            .filter(|a| a.to() == Some(user))
            .filter_map(|a| a.text().map(str::to_string))
            .collect()
    };
    assert_eq!(
        to(old_user).last().map(String::as_str),
        Some("How many?"),
        "an answer after the reload, pinned to the version it started with"
    );
    assert_eq!(
        to(new_user).last().map(String::as_str),
        Some("How many cups?"),
        "new conversations get the new version"
    );
    app.stop().await;
}
on_both_stores!(
    reload,
    a_reload_swaps_only_valid_flows_and_running_conversations_keep_their_version
);

async fn a_pinned_version_stays_loaded_through_any_number_of_reloads(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string("flows/shop.yaml").unwrap();
    std::fs::write(dir.path().join("shop.yaml"), &shop).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000082";
    for (wamid, webhook) in [
        (
            "wamid.P1",
            text_webhook(PNID, user, "wamid.P1", "menu", now_secs()),
        ),
        (
            "wamid.P2",
            button_reply_webhook(PNID, user, "wamid.P2", "catalog", "Catalog", now_secs()),
        ),
    ] {
        assert_eq!(app.post_webhook(&webhook).await, 200, "{wamid}");
    }
    assert!(graph.wait_delivered(2, Duration::from_secs(10)).await);
    // More reloads, each a new version, than any fixed number of kept sets.
    for n in 0..20 {
        std::fs::write(
            dir.path().join("shop.yaml"),
            shop.replace("How many?", &format!("How many ({n})?")),
        )
        .unwrap();
        let (status, body) = reload(&app).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.P3", "1", now_secs()))
            .await,
        200
    );
    assert!(graph.wait_delivered(3, Duration::from_secs(10)).await);
    let texts: Vec<String> = graph
        .delivered()
        .iter()
        .filter(|a| a.to() == Some(user))
        .filter_map(|a| a.text().map(str::to_string))
        .collect();
    assert_eq!(
        texts.last().map(String::as_str),
        Some("How many?"),
        "the session finishes on the version it started on"
    );
    app.stop().await;
}
on_both_stores!(
    pinned_through_reloads,
    a_pinned_version_stays_loaded_through_any_number_of_reloads
);

async fn edited_flow_files_are_picked_up_by_the_watcher(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string("flows/shop.yaml").unwrap();
    std::fs::write(dir.path().join("shop.yaml"), &shop).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.flows.watch = true;
    let app = spawn_app_with_flows(settings).await;
    let version = || async {
        let (_, body) = app
            .admin(reqwest::Method::GET, "/flows", Some(ADMIN_TOKEN), None)
            .await;
        body["flows"][0]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = version().await;
    std::fs::write(
        dir.path().join("shop.yaml"),
        shop.replace("Order confirmed", "Order confirmed!"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(8), || async {
            version().await != before
        })
        .await,
        "the watcher reloaded the edited file"
    );
    // A broken edit is not taken.
    let good = version().await;
    std::fs::write(dir.path().join("shop.yaml"), "start: nowhere\nnodes: {}\n").unwrap();
    assert!(
        eventually(Duration::from_secs(8), || async {
            let (_, body) = app
                .admin(reqwest::Method::GET, "/flows", Some(ADMIN_TOKEN), None)
                .await;
            body["last_reload_errors"].is_array()
        })
        .await
    );
    assert_eq!(version().await, good, "the running flows stay");
    app.stop().await;
}
on_both_stores!(watcher, edited_flow_files_are_picked_up_by_the_watcher);

/// A durable wait's step commits, but the commit is reported failed (a connection cut during
/// COMMIT). The timer is spent and the reminder stored: the conversation reads its state back
/// and sends the reminder, once; the timer does not fire again.
async fn a_wait_whose_firing_commit_landed_unacknowledged_sends_its_message_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let clock = ManualClock::at_now();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_clock(settings, Arc::new(clock.clone())).await;
    ask_for_a_reminder(&app, &graph, "6281200000079", "wamid.TL1").await;
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM timers WHERE state = 'pending'",
            )
            .await
                == 1
        })
        .await,
        "the wait is stored"
    );
    // The next step to commit is the timer's.
    parley::store::writer::faults::lose_commit_acks(&db.url, 1);
    clock.advance(Duration::from_secs(2 * 3600 + 60));
    assert_sent_once(
        &graph,
        "Reminder!",
        "the reminder the timer's commit stored",
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM timers WHERE state = 'fired'").await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    landed_timer,
    a_wait_whose_firing_commit_landed_unacknowledged_sends_its_message_once
);

/// `POST /admin/v1/flows/reload`: its status and body.
async fn reload(app: &TestApp) -> (u16, serde_json::Value) {
    app.admin(
        reqwest::Method::POST,
        "/flows/reload",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
}
