//! Handoff to a human (admin API and flow node), flows' HTTP calls, and flow versions pinned
//! across restarts, through the daemon.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

/// A flows dir holding `files` (name, yaml); keep the TempDir alive.
fn flows_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    dir
}

pub(crate) const GREETER: &str = r#"
id: greeter
triggers: [{keyword: hi}]
start: hello
nodes:
  hello:
    send: {text: "Hello from the bot"}
"#;

pub(crate) const DESK: &str = r#"
id: desk
triggers: [{keyword: human}]
start: tell
nodes:
  tell:
    send: {text: "A person will answer you."}
    next: wait_human
  wait_human:
    handoff: {reason: "customer asked"}
    next: back
  back:
    send: {text: "Back with the bot."}
"#;

async fn wait_for_text(graph: &FakeGraph, text: &str) -> bool {
    graph
        .wait_until(Duration::from_secs(10), |a| {
            a.iter().any(|a| a.accepted() && a.text() == Some(text))
        })
        .await
}

async fn the_bot_stays_silent_while_a_human_has_the_conversation(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = flows_dir(&[("greeter.yaml", GREETER)]);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000301";
    let path = format!("/conversations/{PNID}/{user}");

    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.H1", "hi", now_secs()))
            .await,
        200
    );
    assert!(wait_for_text(&graph, "Hello from the bot").await);

    let (status, body) = app
        .admin(
            Method::POST,
            &format!("{path}/handoff"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "vip customer"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.H2", "hi", now_secs()))
            .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        graph.delivered_texts(),
        vec!["Hello from the bot"],
        "the bot is silent"
    );
    let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(conv["handoff"]["status"], "waiting");
    assert_eq!(conv["handoff"]["reason"], "vip customer");
    let inbound: Vec<&str> = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .filter_map(|m| m["wamid"].as_str())
        .collect();
    assert!(inbound.contains(&"wamid.H2"), "the agent sees it: {conv}");

    let (status, body) = app
        .admin(
            Method::POST,
            &format!("{path}/reply"),
            Some(ADMIN_TOKEN),
            Some(json!({"text": "Hi, Ana from support here", "idempotency_key": "ana-1"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let first = body["outbox_id"].clone();
    assert!(wait_for_text(&graph, "Hi, Ana from support here").await);
    // The agent's tool retries (say after a timeout): nothing is sent twice.
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("{path}/reply"),
            Some(ADMIN_TOKEN),
            Some(json!({"text": "Hi, Ana from support here", "idempotency_key": "ana-1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"duplicate": true, "outbox_id": first}));
    let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(conv["handoff"]["status"], "with_agent");

    let (status, _) = app
        .admin(
            Method::POST,
            &format!("{path}/release"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
    assert!(conv["handoff"].is_null());
    assert!(conv["state"]["human_handled_at"].is_i64(), "{conv}");
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.H3", "hi", now_secs()))
            .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.text() == Some("Hello from the bot"))
                .count()
                == 2)
            .await
    );
    assert_eq!(
        graph.delivered_texts(),
        vec![
            "Hello from the bot",
            "Hi, Ana from support here",
            "Hello from the bot"
        ]
    );
    // A flow that begins and ends within one message is recorded too.
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'greeter' AND status = 'completed' AND ended_at IS NOT NULL",
            )
            .await
                == 2
        })
        .await,
        "two one-shot greeter sessions"
    );
    // Unknown accounts and a missing token are refused.
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/conversations/999/{user}/handoff"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin(Method::POST, &format!("{path}/release"), None, None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}
on_both_stores!(
    admin_handoff,
    the_bot_stays_silent_while_a_human_has_the_conversation
);

async fn a_flow_handoff_resumes_on_release_and_after_the_timeout(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let clock = ManualClock::at_now();
    let dir = flows_dir(&[("desk.yaml", DESK)]);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.handoff.timeout = Duration::from_secs(3600);
    let app = spawn_app_with_clock(settings, Arc::new(clock.clone())).await;
    let user = "6281200000302";
    let path = format!("/conversations/{PNID}/{user}");

    app.post_webhook(&text_webhook(PNID, user, "wamid.D1", "human", now_secs()))
        .await;
    assert!(wait_for_text(&graph, "A person will answer you.").await);
    app.post_webhook(&text_webhook(PNID, user, "wamid.D2", "hello?", now_secs()))
        .await;
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("{path}/release"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        wait_for_text(&graph, "Back with the bot.").await,
        "resumes at next"
    );

    // Again; this time nobody answers and the timeout gives it back.
    app.post_webhook(&text_webhook(PNID, user, "wamid.D3", "human", now_secs()))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.text() == Some("A person will answer you."))
                .count()
                == 2)
            .await
    );
    clock.advance(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        graph
            .delivered_texts()
            .iter()
            .filter(|t| *t == "Back with the bot.")
            .count(),
        1,
        "not before the timeout"
    );
    clock.advance(Duration::from_secs(1900));
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.text() == Some("Back with the bot."))
                .count()
                == 2)
            .await,
        "the timeout releases it"
    );
    let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
    assert!(conv["handoff"].is_null(), "{conv}");
    app.stop().await;
}
on_both_stores!(
    flow_handoff,
    a_flow_handoff_resumes_on_release_and_after_the_timeout
);

/// The business's system: records what it was sent, answers `answer`.
async fn business_api(answer: serde_json::Value) -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let seen: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let recorded = seen.clone();
    let app = axum::Router::new().route(
        "/orders/{id}",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let recorded = recorded.clone();
            let answer = answer.clone();
            async move {
                recorded.lock().unwrap().push((headers, body));
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn lookup_flow(base: &str) -> String {
    format!(
        r#"
id: lookup
triggers: [{{keyword: order, match: prefix}}]
start: ask
nodes:
  ask:
    ask: {{type: text, prompt: "Order number?", save: order_id}}
    next: fetch
  fetch:
    http:
      method: POST
      url: "{base}/orders/{{{{order_id}}}}"
      body: {{id: "{{{{order_id}}}}"}}
      save: {{status: data.status, total: data.total}}
    next: show
    on_error: sorry
  show:
    send: {{text: "Order {{{{order_id}}}}: {{{{status}}}}, {{{{total | currency('IDR')}}}}"}}
  sorry:
    send: {{text: "Lookup failed ({{{{http_status}}}})"}}
"#
    )
}

async fn a_flow_calls_an_allow_listed_system_and_the_guard_refuses_the_rest(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = business_api(json!({"data": {"status": "shipped", "total": 45000}})).await;
    let dir = flows_dir(&[("lookup.yaml", &lookup_flow(&base))]);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.flows.http_allow = vec!["127.0.0.1/32".into()];
    let app = spawn_app_with_flows(settings.clone()).await;
    let user = "6281200000303";
    app.post_webhook(&text_webhook(PNID, user, "wamid.O1", "order", now_secs()))
        .await;
    assert!(wait_for_text(&graph, "Order number?").await);
    app.post_webhook(&text_webhook(PNID, user, "wamid.O2", "A17", now_secs()))
        .await;
    assert!(
        wait_for_text(&graph, "Order A17: shipped, IDR 45,000").await,
        "{:?}",
        graph.delivered_texts()
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (headers, body) = &seen[0];
        assert!(headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|k| k.starts_with("flow-")));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            json!({"id": "A17"})
        );
    }
    app.stop().await;

    // The same flow without the allow-list: loopback over plain http is refused.
    let mut settings = settings;
    settings.flows.http_allow = vec![];
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000304";
    app.post_webhook(&text_webhook(PNID, user, "wamid.O3", "order", now_secs()))
        .await;
    app.post_webhook(&text_webhook(PNID, user, "wamid.O4", "B2", now_secs()))
        .await;
    assert!(
        wait_for_text(&graph, "Lookup failed (0)").await,
        "{:?}",
        graph.delivered_texts()
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the guard made no request");
    app.stop().await;
}
on_both_stores!(
    flow_http,
    a_flow_calls_an_allow_listed_system_and_the_guard_refuses_the_rest
);

const ASKER_V1: &str = r#"
id: asker
triggers: [{keyword: quiz}]
start: q
nodes:
  q:
    ask: {type: text, prompt: "Question one?", save: a}
    next: done
  done:
    send: {text: "v1 got {{a}}"}
"#;

async fn a_session_finishes_on_its_version_after_a_restart_with_new_files(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = flows_dir(&[("asker.yaml", ASKER_V1)]);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings.clone()).await;
    let (old, new) = ("6281200000305", "6281200000306");
    app.post_webhook(&text_webhook(PNID, old, "wamid.P1", "quiz", now_secs()))
        .await;
    assert!(wait_for_text(&graph, "Question one?").await);
    app.stop().await;

    // A deploy changes the flow while the daemon is down.
    std::fs::write(
        dir.path().join("asker.yaml"),
        ASKER_V1
            .replace("v1 got", "v2 got")
            .replace("Question one?", "Question two?"),
    )
    .unwrap();
    let app = spawn_app_with_flows(settings).await;
    app.post_webhook(&text_webhook(PNID, old, "wamid.P2", "blue", now_secs()))
        .await;
    assert!(
        wait_for_text(&graph, "v1 got blue").await,
        "the old session keeps v1: {:?}",
        graph.delivered_texts()
    );
    app.post_webhook(&text_webhook(PNID, new, "wamid.P3", "quiz", now_secs()))
        .await;
    assert!(
        wait_for_text(&graph, "Question two?").await,
        "new sessions get v2"
    );
    app.post_webhook(&text_webhook(PNID, new, "wamid.P4", "red", now_secs()))
        .await;
    assert!(wait_for_text(&graph, "v2 got red").await);
    app.stop().await;
}
on_both_stores!(
    pinned_across_restart,
    a_session_finishes_on_its_version_after_a_restart_with_new_files
);

/// The metrics are the process's: the two stores' runs of the runaway scenario, the only
/// one making `flow_failed` dead letters, take turns so each sees its own count.
static FLOW_FAILED_METRIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn a_runaway_flow_is_stopped_dead_lettered_and_the_conversation_goes_on(db: TestDb) {
    let _alone = FLOW_FAILED_METRIC.lock().await;
    let graph = Arc::new(FakeGraph::start().await);
    // 120 nodes in a row (no loop, so valid) run past the guard of 100 nodes per event.
    let mut long = String::from("id: long\ntriggers: [{keyword: long}]\nstart: n0\nnodes:\n");
    for i in 0..120 {
        long.push_str(&format!(
            "  n{i}:\n    set: {{x: \"{i}\"}}\n    next: n{}\n",
            i + 1
        ));
    }
    long.push_str("  n120:\n    send: {text: \"never\"}\n");
    let dir = flows_dir(&[("long.yaml", &long), ("greeter.yaml", GREETER)]);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let flow_failed = || async {
        let (_, metrics) = app.get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("parley_dead_letters_total{kind=\"flow_failed\"} "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let counted_before = flow_failed().await;
    let user = "6281200000310";
    app.post_webhook(&text_webhook(PNID, user, "wamid.L1", "long", now_secs()))
        .await;
    app.post_webhook(&text_webhook(PNID, user, "wamid.L2", "hi", now_secs()))
        .await;
    assert!(
        wait_for_text(&graph, "Hello from the bot").await,
        "the conversation goes on"
    );
    assert!(graph.delivered_texts().iter().all(|t| t != "never"));
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(&store, "SELECT COUNT(*) FROM dead_letters WHERE kind = 'flow_failed' AND reason LIKE '%runaway%'").await == 1
        })
        .await
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM flow_executions WHERE flow_id = 'long' AND status = 'failed'"
        )
        .await,
        1
    );
    // One dead letter, counted once (the store's writer counts what it records).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(flow_failed().await - counted_before, 1);
    app.stop().await;
}
on_both_stores!(
    runaway,
    a_runaway_flow_is_stopped_dead_lettered_and_the_conversation_goes_on
);
