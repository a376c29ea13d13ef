//! Outbound webhooks through the daemon: every event type delivered to a local receiver and
//! verified with the Standard Webhooks reference library (Python `standardwebhooks`, run as
//! a helper process: the test fails, never skips, when it is missing); retries against 500,
//! 429 with Retry-After, 410 (the endpoint disabled), a redirect (not followed), a timeout
//! and a final 400; replay, recovery, secret rotation (both signatures verify) and the SSRF
//! guard's refusal.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parley::config::Settings;
use parley::domain::{AccountId, Currency, PaymentStatus, UserKey};
use parley::store::{CatalogLine, Checkout, Customer};
use parley_testkit::{status_webhook, text_webhook, FakeGraph, Outcome};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

/// Checks a delivery as a receiver using the Standard Webhooks library does.
const VERIFIER: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook
for line in sys.stdin:
    req = json.loads(line)
    try:
        Webhook(req["secret"]).verify(req["body"], req["headers"])
        print("ok", flush=True)
    except Exception as e:
        print("bad " + repr(e).replace("\n", " "), flush=True)
"#;

pub(crate) struct Verifier {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Verifier {
    pub(crate) fn start() -> Verifier {
        let mut child = Command::new("python3")
            .args(["-c", VERIFIER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed to verify webhooks (with `pip install standardwebhooks`)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut v = Verifier {
            _child: child,
            stdin,
            stdout,
        };
        // Fails loudly when the package is missing: the process has exited.
        let probe = Got {
            path: String::new(),
            id: "msg_x".into(),
            timestamp: "0".into(),
            signature: "v1,AAAA".into(),
            body: "{}".into(),
            at: Instant::now(),
        };
        let answer = v.check("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &probe);
        assert!(
            matches!(&answer, Err(e) if e.starts_with("bad")),
            "the standardwebhooks verifier does not run (pip install standardwebhooks): {answer:?}"
        );
        v
    }

    fn check(&mut self, secret: &str, got: &Got) -> Result<(), String> {
        let req = json!({
            "secret": secret,
            "body": got.body,
            "headers": {
                "webhook-id": got.id,
                "webhook-timestamp": got.timestamp,
                "webhook-signature": got.signature,
            },
        });
        writeln!(self.stdin, "{req}").map_err(|e| format!("verifier gone: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("verifier gone: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("verifier gone: {e}"))?;
        match line.trim() {
            "ok" => Ok(()),
            "" => Err("the verifier exited (is standardwebhooks installed?)".into()),
            other => Err(other.to_string()),
        }
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    RetryAfter(u64),
    Redirect,
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub(crate) struct Got {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: Instant,
}

impl Got {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    base: String,
    got: Arc<Mutex<Vec<Got>>>,
    plans: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
}

async fn receive(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    r.got.lock().unwrap().push(Got {
        path: name.clone(),
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        at: Instant::now(),
    });
    let reply = r
        .plans
        .lock()
        .unwrap()
        .get_mut(&name)
        .and_then(VecDeque::pop_front);
    match reply {
        None => (StatusCode::OK, "thanks").into_response(),
        Some(Reply::Status(s)) => (StatusCode::from_u16(s).unwrap(), "no").into_response(),
        Some(Reply::RetryAfter(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Some(Reply::Redirect) => (
            StatusCode::FOUND,
            [("location", format!("{}/redirected", r.base))],
            "",
        )
            .into_response(),
        Some(Reply::Hang(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut r = Receiver {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        r.base = r.base.clone();
        let app = axum::Router::new()
            .route("/{name}", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn plan(&self, name: &str, replies: Vec<Reply>) {
        self.plans
            .lock()
            .unwrap()
            .insert(name.to_string(), replies.into());
    }

    pub(crate) fn at(&self, name: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == name)
            .cloned()
            .collect()
    }

    pub(crate) async fn wait(&self, name: &str, n: usize) -> Vec<Got> {
        let ok = eventually(Duration::from_secs(15), || async {
            self.at(name).len() >= n
        })
        .await;
        let got = self.at(name);
        assert!(
            ok,
            "waited for {n} deliveries at /{name}, got {}",
            got.len()
        );
        got
    }
}

pub(crate) fn hook_settings(db: &TestDb, graph: &FakeGraph) -> Settings {
    let mut s = test_settings(db, graph);
    s.flows.http_allow = vec!["127.0.0.1/32".into()];
    s.webhooks.schedule = vec![
        Duration::ZERO,
        Duration::from_millis(300),
        Duration::from_millis(300),
        Duration::from_millis(300),
    ];
    s.webhooks.poll = Duration::from_millis(50);
    s.webhooks.timeout = Duration::from_secs(1);
    s
}

pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.admin(method, path, Some(ADMIN_TOKEN), body).await
}

/// A new endpoint: its id and secret.
pub(crate) async fn endpoint(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (status, view) = call(
        app,
        Method::POST,
        "/webhooks",
        Some(json!({"url": url, "events": events, "description": "test"})),
    )
    .await;
    assert_eq!(status, 201, "{view}");
    let secret = view["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (view["id"].as_str().unwrap().to_string(), secret)
}

/// The endpoint's attempts, newest first.
async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, view) = call(
        app,
        Method::GET,
        &format!("/webhooks/{id}/deliveries?limit=200"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    view["items"].as_array().unwrap().clone()
}

pub(crate) fn assert_verified(v: &mut Verifier, secret: &str, got: &[Got]) {
    for g in got {
        v.check(secret, g)
            .unwrap_or_else(|e| panic!("delivery {} to /{} does not verify: {e}", g.id, g.path));
    }
}

async fn every_event_type_is_delivered_signed_and_in_sequence(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(hook_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let (_all, secret) = endpoint(&app, &receiver.url("all"), &[]).await;
    let (_paid, paid_secret) = endpoint(&app, &receiver.url("paid"), &["payment.paid"]).await;
    let user = "6281200007001";
    let now = now_secs();

    // message.received, once however often Meta sends it.
    let inbound = text_webhook(PNID, user, "wamid.HOOK1", "hello hooks", now);
    assert_eq!(app.post_webhook(&inbound).await, 200);
    assert_eq!(app.post_webhook(&inbound).await, 200);
    // message.status: the echo's delivery.
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.is_delivery() && a.to() == Some(user)))
            .await
    );
    let echo = graph
        .delivered()
        .into_iter()
        .find(|a| a.is_delivery() && a.to() == Some(user))
        .unwrap();
    let Outcome::Accepted(Some(wamid)) = echo.outcome.clone() else {
        panic!("accepted with a wamid: {:?}", echo.outcome)
    };
    let status = status_webhook(PNID, &wamid, "delivered", user, echo.callback(), now);
    assert_eq!(app.post_webhook(&status).await, 200);
    receiver.wait("all", 2).await;
    // conversation.handoff and conversation.released.
    let path = format!("/conversations/{PNID}/{user}");
    let (s, v) = call(
        &app,
        Method::POST,
        &format!("{path}/handoff"),
        Some(json!({"reason": "vip"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    receiver.wait("all", 3).await;
    let (s, v) = call(&app, Method::POST, &format!("{path}/release"), None).await;
    assert_eq!(s, 200, "{v}");
    receiver.wait("all", 4).await;
    // order.created, payment.paid, payment.expired, payment.paid_late.
    let (s, v) = call(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "CAKE", "name": "Cake", "price": "20000", "stock": 20})),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    let now_ms = parley::store::now_ms();
    let pay1 = order_with_payment(&store, user, "hook-o1", "CAKE", 1)
        .await
        .1;
    assert!(store
        .settle_payment(
            pay1,
            PaymentStatus::Pending,
            PaymentStatus::Paid,
            None,
            now_ms
        )
        .await
        .unwrap());
    let pay2 = order_with_payment(&store, user, "hook-o2", "CAKE", 1)
        .await
        .1;
    assert!(store
        .settle_payment(
            pay2,
            PaymentStatus::Pending,
            PaymentStatus::Expired,
            None,
            now_ms
        )
        .await
        .unwrap());
    assert!(store
        .settle_payment(
            pay2,
            PaymentStatus::Expired,
            PaymentStatus::PaidLate,
            None,
            now_ms
        )
        .await
        .unwrap());

    let got = receiver.wait("all", 9).await;
    assert_verified(&mut verifier, &secret, &got);
    let types: Vec<String> = got
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap().to_string())
        .collect();
    for t in [
        "message.received",
        "message.status",
        "conversation.handoff",
        "conversation.released",
        "order.created",
        "payment.paid",
        "payment.expired",
        "payment.paid_late",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} delivered: {types:?}");
    }
    assert_eq!(
        types.iter().filter(|t| *t == "message.received").count(),
        1,
        "a redelivered message is one event: {types:?}"
    );
    assert_eq!(types.iter().filter(|t| *t == "order.created").count(), 2);
    let by_type = |t: &str| got.iter().map(Got::json).find(|v| v["type"] == t).unwrap();
    let received = by_type("message.received");
    assert_eq!(received["data"]["content"]["body"], "hello hooks");
    assert_eq!(received["data"]["account"], PNID);
    assert_eq!(received["data"]["conversation"], user);
    let status = by_type("message.status");
    assert_eq!(status["data"]["status"], "delivered");
    assert_eq!(status["data"]["wamid"], wamid.as_str());
    assert_eq!(by_type("conversation.handoff")["data"]["reason"], "vip");
    assert_eq!(by_type("payment.paid")["data"]["payment_id"], pay1);
    // One conversation's events are numbered 1, 2, 3, … in the order they were written.
    let mut seqs: Vec<(i64, String)> = got
        .iter()
        .map(Got::json)
        .map(|v| {
            (
                v["data"]["sequence"].as_i64().unwrap(),
                v["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seqs.sort();
    let numbers: Vec<i64> = seqs.iter().map(|s| s.0).collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>(), "{seqs:?}");
    assert_eq!(seqs[0].1, "message.received");
    // Each event has its own webhook-id.
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
    assert!(ids.iter().all(|i| i.starts_with("msg_")));
    // The filtered endpoint got payment.paid only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paid = receiver.at("paid");
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].json()["type"], "payment.paid");
    assert_verified(&mut verifier, &paid_secret, &paid);
    app.stop().await;
}
on_both_stores!(
    every_event_type,
    every_event_type_is_delivered_signed_and_in_sequence
);

/// Send a test event to endpoint `id`.
async fn test_event(app: &TestApp, id: &str) {
    let (s, v) = call(app, Method::POST, &format!("/webhooks/{id}/test"), None).await;
    assert_eq!(s, 202, "{v}");
}

/// The state of the delivery of the endpoint's newest attempt ("" before any).
async fn delivery_state(app: &TestApp, id: &str) -> String {
    attempts(app, id)
        .await
        .first()
        .and_then(|a| a["delivery_state"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn failures_are_retried_as_the_standard_webhooks_say(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(hook_settings(&db, &graph), Arc::new(Echo)).await;
    receiver.plan("flaky", vec![Reply::Status(500), Reply::RetryAfter(1)]);
    receiver.plan("gone", vec![Reply::Status(410)]);
    receiver.plan("moved", vec![Reply::Redirect; 10]);
    receiver.plan("slow", vec![Reply::Hang(Duration::from_secs(3))]);
    receiver.plan("bad", vec![Reply::Status(400)]);
    let (_watch, watch_secret) =
        endpoint(&app, &receiver.url("watch"), &["endpoint.disabled"]).await;
    let mut secrets = HashMap::new();
    let mut ids = HashMap::new();
    for name in ["flaky", "gone", "moved", "slow", "bad"] {
        let (id, secret) = endpoint(&app, &receiver.url(name), &["payment.paid"]).await;
        test_event(&app, &id).await;
        secrets.insert(name, secret);
        ids.insert(name, id);
    }

    // 500, then 429 with Retry-After: 1 (longer than the schedule's 300 ms), then 200.
    let flaky = receiver.wait("flaky", 3).await;
    let gaps: Vec<Duration> = flaky
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(
        gaps[1] >= Duration::from_millis(950),
        "Retry-After was honoured: {gaps:?}"
    );
    assert!(
        flaky.iter().all(|g| g.id == flaky[0].id),
        "one webhook-id on every attempt"
    );
    assert!(flaky[0].timestamp <= flaky[2].timestamp);
    let done = eventually(Duration::from_secs(5), || async {
        delivery_state(&app, &ids["flaky"]).await == "succeeded"
    })
    .await;
    assert!(done, "the third attempt is recorded");
    let log = attempts(&app, &ids["flaky"]).await;
    let statuses: Vec<i64> = log.iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [200, 429, 500], "newest first");
    assert_eq!(log[0]["body"], "thanks");
    assert_eq!(log[0]["delivery_state"], "succeeded");
    assert!(log[0]["latency_ms"].as_i64().unwrap() >= 0);

    // 410: once, and the endpoint is disabled.
    receiver.wait("gone", 1).await;
    let disabled = eventually(Duration::from_secs(5), || async {
        let (_, v) = call(
            &app,
            Method::GET,
            &format!("/webhooks/{}", ids["gone"]),
            None,
        )
        .await;
        v["active"] == false
    })
    .await;
    assert!(disabled, "410 disables the endpoint");
    let (_, gone) = call(
        &app,
        Method::GET,
        &format!("/webhooks/{}", ids["gone"]),
        None,
    )
    .await;
    assert!(
        gone["disabled_reason"].as_str().unwrap().contains("410"),
        "{gone}"
    );
    assert_eq!(delivery_state(&app, &ids["gone"]).await, "failed");
    // The others that want to know are told.
    let told = receiver.wait("watch", 1).await;
    assert_eq!(told[0].json()["type"], "endpoint.disabled");
    assert_eq!(told[0].json()["data"]["endpoint_id"], ids["gone"].as_str());
    assert_verified(&mut verifier, &watch_secret, &told);

    // A redirect is a failure, never followed: every attempt of the schedule, then exhausted.
    receiver.wait("moved", 4).await;
    let exhausted = eventually(Duration::from_secs(5), || async {
        delivery_state(&app, &ids["moved"]).await == "exhausted"
    })
    .await;
    assert!(exhausted, "4 attempts, then exhausted");
    assert!(
        receiver.at("redirected").is_empty(),
        "the redirect was not followed"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("parley_outbound_webhook_attempts_total{result=\"exhausted\"}"),
        "{metrics}"
    );
    let log = attempts(&app, &ids["moved"]).await;
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|a| a["status"] == 302));

    // A timeout (1 s here) is a failure; the next attempt succeeds.
    let slow = receiver.wait("slow", 2).await;
    assert_eq!(slow[0].id, slow[1].id);
    let ok = eventually(Duration::from_secs(5), || async {
        delivery_state(&app, &ids["slow"]).await == "succeeded"
    })
    .await;
    assert!(ok);
    let log = attempts(&app, &ids["slow"]).await;
    assert_eq!(log[1]["status"], 0);
    assert_eq!(log[1]["error"], "timeout");

    // Another 4xx is final.
    receiver.wait("bad", 1).await;
    let failed = eventually(Duration::from_secs(5), || async {
        delivery_state(&app, &ids["bad"]).await == "failed"
    })
    .await;
    assert!(failed);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.at("bad").len(), 1, "no retry after a 400");
    assert_eq!(receiver.at("gone").len(), 1, "no retry after a 410");

    for (name, secret) in &secrets {
        assert_verified(&mut verifier, secret, &receiver.at(name));
    }
    app.stop().await;
}
on_both_stores!(retries, failures_are_retried_as_the_standard_webhooks_say);

async fn replay_recovery_rotation_and_the_ssrf_guard(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(hook_settings(&db, &graph), Arc::new(Echo)).await;

    // The SSRF guard: private addresses not in flows.http_allow, plain http to the
    // internet, other schemes.
    for url in [
        "http://10.1.2.3/hook",
        "https://192.168.1.5/hook",
        "https://169.254.169.254/latest",
        "http://93.184.216.34/hook",
        "ftp://127.0.0.1/hook",
    ] {
        let (s, v) = call(&app, Method::POST, "/webhooks", Some(json!({"url": url}))).await;
        assert_eq!(s, 422, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("refused"),
            "{url}: {v}"
        );
    }
    let (s, v) = call(
        &app,
        Method::POST,
        "/webhooks",
        Some(json!({"url": receiver.url("x"), "events": ["nope.event"]})),
    )
    .await;
    assert_eq!(s, 422, "{v}");

    // Replay: a delivery that failed (400) is sent again, with its webhook-id.
    receiver.plan("r", vec![Reply::Status(400), Reply::Status(400)]);
    let (id, secret) = endpoint(&app, &receiver.url("r"), &[]).await;
    test_event(&app, &id).await;
    receiver.wait("r", 1).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            delivery_state(&app, &id).await == "failed"
        })
        .await
    );
    let delivery = attempts(&app, &id).await[0]["delivery_id"]
        .as_i64()
        .unwrap();
    let (s, v) = call(
        &app,
        Method::POST,
        &format!("/webhooks/{id}/deliveries/{delivery}/replay"),
        None,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let got = receiver.wait("r", 2).await;
    assert_eq!(got[0].id, got[1].id, "a replay keeps the webhook-id");
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/webhooks/{id}/deliveries/999999/replay"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    // The replay failed (400) too; recover every failure since a time.
    assert!(
        eventually(Duration::from_secs(5), || async {
            delivery_state(&app, &id).await == "failed"
        })
        .await
    );
    let (s, v) = call(
        &app,
        Method::POST,
        &format!("/webhooks/{id}/recover"),
        Some(json!({"since": 0})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["recovered"], 1);
    receiver.wait("r", 3).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            delivery_state(&app, &id).await == "succeeded"
        })
        .await
    );
    // The log pages by cursor, newest first.
    let (_, first) = call(
        &app,
        Method::GET,
        &format!("/webhooks/{id}/deliveries?limit=2"),
        None,
    )
    .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = call(
        &app,
        Method::GET,
        &format!("/webhooks/{id}/deliveries?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    assert!(second["items"][0]["id"].as_i64() < first["items"][1]["id"].as_i64());
    assert_verified(&mut verifier, &secret, &receiver.at("r"));

    // Rotation: while the old secret lasts, a delivery carries both signatures; each verifies.
    let (s, rotated) = call(&app, Method::POST, &format!("/webhooks/{id}/rotate"), None).await;
    assert_eq!(s, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    test_event(&app, &id).await;
    let got = receiver.wait("r", 4).await;
    let last = got.last().unwrap();
    assert_eq!(last.signature.split(' ').count(), 2, "{}", last.signature);
    verifier
        .check(&secret, last)
        .expect("the old secret verifies");
    verifier
        .check(&new_secret, last)
        .expect("the new secret verifies");
    let forged = Got {
        body: last.body.replace("webhook.test", "webhook.tezt"),
        ..last.clone()
    };
    assert!(
        verifier.check(&new_secret, &forged).is_err(),
        "a changed body does not verify"
    );

    // Update, list, delete.
    let (s, v) = call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        Some(json!({"events": ["order.created"], "description": "orders"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"], json!(["order.created"]));
    let (s, v) = call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        Some(json!({"url": "http://10.9.9.9/x"})),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let (_, list) = call(&app, Method::GET, "/webhooks", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        list["items"][0].get("secret").is_none(),
        "a secret is shown once"
    );
    let (s, _) = call(&app, Method::DELETE, &format!("/webhooks/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&app, Method::GET, &format!("/webhooks/{id}"), None).await;
    assert_eq!(s, 404);
    app.stop().await;
}
on_both_stores!(
    replay_and_rotation,
    replay_recovery_rotation_and_the_ssrf_guard
);

const FLOWS: &[(&str, &str)] = &[
    (
        "hello.yaml",
        r#"
id: hello
triggers: [{keyword: hi, global: true}]
start: greet
nodes:
  greet:
    send: {text: "Hello"}
"#,
    ),
    (
        "menu.yaml",
        r#"
id: menu
triggers: [{keyword: menu}]
start: pick
nodes:
  pick:
    ask: {type: text, prompt: "What would you like?", save: choice}
"#,
    ),
];

async fn flow_and_order_status_events(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in FLOWS {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let mut settings = hook_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    // An endpoint that fails for a second is disabled (the schedule outlasts it).
    settings.webhooks.disable_after = Duration::from_secs(1);
    settings.webhooks.schedule = vec![Duration::from_millis(300); 12];
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    let (_id, secret) = endpoint(
        &app,
        &receiver.url("f"),
        &[
            "flow.completed",
            "flow.failed",
            "flow.abandoned",
            "order.status",
            "stock.low",
        ],
    )
    .await;
    let now = now_secs();
    let ann = "6281200007101";
    // The menu asks and waits; "hi" starts another flow: the menu was abandoned, then hello
    // completed, in that order.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, ann, "wamid.HF0", "menu", now))
            .await,
        200
    );
    assert!(
        graph.wait_delivered(1, Duration::from_secs(10)).await,
        "the menu asked"
    );
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, ann, "wamid.HF1", "hi", now))
            .await,
        200
    );
    // Deliveries may arrive in any order; the conversation's sequence gives theirs.
    let mut got: Vec<Value> = receiver
        .wait("f", 2)
        .await
        .iter()
        .map(|d| d.json())
        .collect();
    got.sort_by_key(|e| e["data"]["sequence"].as_i64());
    let (left, done) = (&got[0], &got[1]);
    assert_eq!(left["type"], "flow.abandoned", "{left}");
    assert_eq!(left["data"]["flow_id"], "menu");
    assert_eq!(done["type"], "flow.completed");
    assert_eq!(done["data"]["flow_id"], "hello");
    assert_eq!(done["data"]["conversation"], ann);
    // order.status: the owner moves an order.
    let (s, v) = call(
        &app,
        Method::POST,
        "/products",
        Some(json!({"sku": "CAKE", "name": "Cake", "price": "20000", "stock": 20})),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    let checkout = store
        .catalog_order(
            &AccountId::from(PNID),
            &UserKey::from(ann),
            "hook-status",
            &Customer {
                wa_id: Some(ann.into()),
                ..Customer::default()
            },
            &[CatalogLine {
                sku: "CAKE".into(),
                quantity: 1,
                claimed: None,
            }],
            Currency::IDR,
            parley::store::now_ms(),
        )
        .await
        .unwrap();
    let Checkout::Ordered { order } = checkout else {
        panic!("ordered: {checkout:?}")
    };
    let (s, v) = call(
        &app,
        Method::PATCH,
        &format!("/orders/{}", order.order_number),
        Some(json!({"status": "processing"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = receiver.wait("f", 3).await;
    let moved = got[2].json();
    assert_eq!(moved["type"], "order.status");
    assert_eq!(moved["data"]["status"], "processing");
    assert_eq!(moved["data"]["order_number"], order.order_number.as_str());

    // stock.low: a material falls below its minimum, once per crossing.
    for (path, body) in [
        (
            "/materials",
            json!({"name": "flour", "unit": "kg", "stock": "5", "min_stock": "3"}),
        ),
        (
            "/materials/flour/stock",
            json!({"delta": "-1", "reason": "used"}),
        ),
        (
            "/materials/flour/stock",
            json!({"delta": "-2", "reason": "used"}),
        ),
        (
            "/materials/flour/stock",
            json!({"delta": "-1", "reason": "used"}),
        ),
    ] {
        let (s, v) = call(&app, Method::POST, path, Some(body)).await;
        assert!(s == 200 || s == 201, "{path}: {v}");
    }
    let got = receiver.wait("f", 4).await;
    let low = got[3].json();
    assert_eq!(low["type"], "stock.low");
    assert_eq!(low["data"]["material"], "flour");
    assert_eq!(low["data"]["stock"], "2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.at("f").len(), 4, "one crossing, one event");
    assert_verified(&mut verifier, &secret, &receiver.at("f"));

    // Failing for `webhooks.disable_after`: disabled, and the watcher told.
    receiver.plan("down", vec![Reply::Status(500); 50]);
    let (down, _) = endpoint(&app, &receiver.url("down"), &["payment.paid"]).await;
    let (_w, watch_secret) = endpoint(&app, &receiver.url("w"), &["endpoint.disabled"]).await;
    test_event(&app, &down).await;
    let told = receiver.wait("w", 1).await;
    assert_eq!(told[0].json()["data"]["endpoint_id"], down.as_str());
    assert_verified(&mut verifier, &watch_secret, &told);
    let (_, view) = call(&app, Method::GET, &format!("/webhooks/{down}"), None).await;
    assert_eq!(view["active"], false, "{view}");
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failing"),
        "{view}"
    );
    let tries = receiver.at("down").len();
    assert!(
        (4..=6).contains(&tries),
        "about a second of 300 ms retries: {tries}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.at("down").len(), tries, "no attempt once disabled");
    // Its delivery is failed, not left pending: recoverable once the endpoint is fixed.
    assert_eq!(delivery_state(&app, &down).await, "failed");
    app.stop().await;
}
on_both_stores!(flow_and_order_status, flow_and_order_status_events);

/// `accounts[].webhook_url`: one endpoint of every event, signed with the configured secret,
/// in step with the configuration at each start (gone once the key is removed).
async fn a_configured_webhook_url_is_an_endpoint(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = Arc::new(FakeGraph::start().await);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut settings = hook_settings(&db, &graph);
    settings.accounts[0].webhook_url = Some(receiver.url("cfg"));
    settings.accounts[0].webhook_secret = Some(secrecy::SecretString::from(secret));
    let app = spawn_app(settings.clone(), Arc::new(Echo)).await;
    let user = "6281200007201";
    let inbound = text_webhook(PNID, user, "wamid.HC1", "hello", now_secs());
    assert_eq!(app.post_webhook(&inbound).await, 200);
    let got = receiver.wait("cfg", 1).await;
    assert_eq!(got[0].json()["type"], "message.received");
    assert_verified(&mut verifier, secret, &got);
    let (_, list) = call(&app, Method::GET, "/webhooks", None).await;
    assert_eq!(list["items"][0]["id"], format!("ep_config_{PNID}"));
    assert_eq!(list["items"][0]["account"], PNID);
    app.stop().await;

    // Restarted without the key: the endpoint is gone.
    settings.accounts[0].webhook_url = None;
    settings.accounts[0].webhook_secret = None;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let (_, list) = call(&app, Method::GET, "/webhooks", None).await;
    assert_eq!(list["items"], json!([]));
    app.stop().await;
}
on_both_stores!(
    configured_webhook_url,
    a_configured_webhook_url_is_an_endpoint
);
