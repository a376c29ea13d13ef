//! The real binary under `kill -9` with webhook deliveries pending, on SQLite and on
//! PostgreSQL: every event written before the kill is delivered after the restart, at least
//! once, none lost, each with the webhook-id it had before.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph};

mod common;
use common::*;

/// A receiver that answers 503 while `down`, else 200; what it saw: (webhook-id, wamid).
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, String, bool)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let wamid = v["data"]["wamid"].as_str().unwrap_or_default().to_string();
    let down = r.down.load(Ordering::SeqCst);
    r.seen.lock().unwrap().push((id, wamid, !down));
    if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

async fn deliveries_survive_kill_9(store_url: String) {
    let receiver = Receiver::default();
    receiver.down.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let config = write_config(dir.path(), &graph.base_url, free_port());
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Short waits: the test must not take the standard schedule's hours.
    text.push_str(
        "[flows]\nhttp_allow = [\"127.0.0.1/32\"]\n[webhooks]\npoll = \"50ms\"\ntimeout = \"2s\"\n\
         schedule = [\"0s\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
         \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
         \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
         \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
         \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let flows_dir = flows.display().to_string();
    let env = [
        ("PARLEY__STORE__URL", store_url.as_str()),
        ("PARLEY__FLOWS__DIR", flows_dir.as_str()),
        ("PARLEY__FLOWS__WATCH", "false"),
    ];
    let (mut reap, pid, base) = start(&config, &env, Stdio::null()).await;
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{base}/admin/v1/webhooks"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"url": hook_url, "events": ["message.received"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 201, "{:?}", made.text().await);

    // Twenty messages, each an event; the receiver is down, so all stay pending.
    let n = 20;
    let ts = parley::store::now_ms() / 1000;
    let wamids: BTreeSet<String> = (0..n).map(|i| format!("wamid.KH{i:03}")).collect();
    for (i, wamid) in wamids.iter().enumerate() {
        let body = text_webhook(PNID, &format!("62815000{i:05}"), wamid, "hello", ts);
        let sig = sign(SECRET.as_bytes(), body.as_bytes());
        let status = http
            .post(format!("{base}/webhook"))
            .header("x-hub-signature-256", &sig)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    let tried = eventually(Duration::from_secs(10), || {
        let seen = receiver.seen.lock().unwrap();
        seen.iter().map(|s| &s.1).collect::<BTreeSet<_>>().len() == n
    })
    .await;
    assert!(tried, "every event was tried before the kill");
    let ids_before: BTreeMap<String, String> = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(id, wamid, _)| (wamid.clone(), id.clone()))
        .collect();
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    if let Some(mut child) = reap.0.take() {
        let _ = child.wait();
    }

    // Back up, and the receiver too: every event delivered, with its webhook-id.
    receiver.down.store(false, Ordering::SeqCst);
    let (_reap, pid, _base) = start(&config, &env, Stdio::null()).await;
    let delivered = eventually(Duration::from_secs(20), || {
        let seen = receiver.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.2)
            .map(|s| &s.1)
            .collect::<BTreeSet<_>>()
            .len()
            == n
    })
    .await;
    let seen = receiver.seen.lock().unwrap().clone();
    let ok: BTreeSet<String> = seen.iter().filter(|s| s.2).map(|s| s.1.clone()).collect();
    assert!(
        delivered,
        "delivered after the restart: {} of {n}",
        ok.len()
    );
    assert_eq!(ok, wamids);
    for (id, wamid, _) in &seen {
        assert_eq!(
            ids_before.get(wamid),
            Some(id),
            "{wamid}: one webhook-id throughout"
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_webhook_deliveries_survive_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    deliveries_survive_kill_9(format!("sqlite://{}/hooks.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_webhook_deliveries_survive_kill_9_on_postgres() {
    if let Some(url) = fresh_postgres().await {
        deliveries_survive_kill_9(url.clone()).await;
        drop_postgres(&url).await;
    }
}
