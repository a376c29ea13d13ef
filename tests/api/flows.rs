//! Flows through the whole daemon: the shop conversation, webhook in, replies at the fake
//! Graph API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_testkit::{button_reply_webhook, text_webhook, FakeGraph};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A business backend that records each request target exactly as it came on the wire (no
/// router, no URL parsing in between) and answers `{"status": "found"}`.
async fn raw_backend() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                record.lock().unwrap().push(target);
                let body = r#"{"status": "found"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (base, seen)
}

/// Looks the customer's reply up at `{base}/orders/{{reply}}?ref={{reply}}&src=wa`.
fn order_lookup_flow(base: &str) -> String {
    format!(
        r#"
id: orders
triggers: [{{keyword: order, match: prefix}}]
start: ask
nodes:
  ask:
    ask: {{type: text, prompt: "Order number?", save: reply}}
    next: fetch
  fetch:
    http:
      url: "{base}/orders/{{{{reply}}}}?ref={{{{reply}}}}&src=wa"
      headers: {{Authorization: "Bearer backend-key"}}
      save: {{status: status}}
    next: show
    on_error: sorry
  show:
    send: {{text: "Order {{{{status}}}}"}}
  sorry:
    send: {{text: "Lookup failed ({{{{http_status}}}})"}}
"#
    )
}

async fn customer_text_in_an_http_url_stays_one_encoded_segment_or_value(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = raw_backend().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), order_lookup_flow(&base)).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.flows.http_allow = vec!["127.0.0.1/32".into()];
    let app = spawn_app_with_flows(settings).await;
    let texts_to = |user: &'static str| {
        let graph = graph.clone();
        move || -> Vec<String> {
            graph
                .delivered()
                .iter()
                .filter(|a| a.accepted() && a.to() == Some(user))
                .filter_map(|a| a.text().map(str::to_string))
                .collect()
        }
    };
    let ask = |user: &'static str, n: u32, reply: &'static str| {
        let (app, texts) = (&app, texts_to(user));
        async move {
            let start = text_webhook(PNID, user, &format!("wamid.U{n}a"), "order", now_secs());
            assert_eq!(app.post_webhook(&start).await, 200);
            assert!(
                eventually(Duration::from_secs(10), || async {
                    texts().iter().any(|t| t == "Order number?")
                })
                .await
            );
            let answer = text_webhook(PNID, user, &format!("wamid.U{n}b"), reply, now_secs());
            assert_eq!(app.post_webhook(&answer).await, 200);
            assert!(
                eventually(Duration::from_secs(10), || async { texts().len() == 2 }).await,
                "{:?}",
                texts()
            );
            texts()[1].clone()
        }
    };

    // A traversal in a path segment: one segment under /orders/, the query untouched.
    let traversal = "../../admin/delete-all?confirm=yes&x=";
    assert_eq!(ask("6281200000401", 1, traversal).await, "Order found");
    let enc = "..%2F..%2Fadmin%2Fdelete-all%3Fconfirm%3Dyes%26x%3D";
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![format!("/orders/{enc}?ref={enc}&src=wa")]
    );

    // Query delimiters in a value: `ref` stays one value, `src` stays `wa`.
    assert_eq!(ask("6281200000402", 2, "&x=1#").await, "Order found");
    let target = seen.lock().unwrap()[1].clone();
    assert_eq!(target, "/orders/%26x%3D1%23?ref=%26x%3D1%23&src=wa");
    let query = target.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        pairs,
        vec![("ref".into(), "&x=1#".into()), ("src".into(), "wa".into())]
    );

    // A whole segment of `..`: never sent (a URL parser would resolve it to `/`); the flow
    // takes its error path.
    assert_eq!(ask("6281200000403", 3, "..").await, "Lookup failed (0)");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the backend got no third request"
    );
    app.stop().await;
}
on_both_stores!(
    http_url_values,
    customer_text_in_an_http_url_stays_one_encoded_segment_or_value
);
