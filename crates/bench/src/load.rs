//! The load the benchmarks drive: signed webhooks posted to the daemon, and users that each
//! post their script's next webhook and wait for the reply at the fake Graph API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley_testkit::FakeGraph;

use crate::report::Scrape;
use crate::{ADMIN, PNID, SECRET};

/// One keep-alive HTTP/1 connection to the daemon's webhook, straight on hyper (reconnected
/// after an error): the driver shares the two cores with the daemon, so its own cost per
/// webhook is kept small.
pub(crate) struct Poster {
    host: String,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Poster {
    pub(crate) fn new(base: &str) -> Poster {
        Poster {
            host: base.trim_start_matches("http://").to_string(),
            sender: None,
        }
    }

    pub(crate) async fn post(&mut self, body: String) -> anyhow::Result<u16> {
        use http_body_util::BodyExt;
        let result = self.exchange(body).await;
        if result.is_err() {
            self.sender = None;
        }
        let resp = result?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }

    async fn exchange(
        &mut self,
        body: String,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.host).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await?;
        let request = hyper::Request::post("/webhook")
            .header(hyper::header::HOST, &self.host)
            .header(
                "x-hub-signature-256",
                sign(SECRET.as_bytes(), body.as_bytes()),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        Ok(sender.send_request(request).await?)
    }
}

pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    body: String,
) -> anyhow::Result<u16> {
    let sig = sign(SECRET.as_bytes(), body.as_bytes());
    Ok(client
        .post(format!("{base}/webhook"))
        .header("x-hub-signature-256", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .status()
        .as_u16())
}

/// Wait until read receipts stop arriving (one receipt can cover a user's burst, so they
/// need not number the messages).
pub(crate) async fn settle(reads: &AtomicU64) {
    let start = Instant::now();
    loop {
        let before = reads.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if reads.load(Ordering::Relaxed) == before || start.elapsed() > Duration::from_secs(60) {
            return;
        }
    }
}

/// Each user's channel for the replies the fake Graph API takes: the text, and when it
/// arrived there (the reply's latency ends at the Graph API, not when the user's task wakes).
pub(crate) type Waiters =
    Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<(String, Instant)>>>>;

/// Start a fake service on a thread and runtime of its own (`start` binds and spawns its
/// tasks there), as the real one runs on machines of its own: its clock readings and answers
/// then do not queue behind the load driver's thousand users on the driver's runtime, so a
/// latency read off it is the daemon's and the network's, not the driver's scheduling.
pub(crate) async fn on_own_thread<T, F, Fut>(name: &str, start: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for a fake service");
            rt.block_on(async move {
                let _ = tx.send(start().await);
                std::future::pending::<()>().await
            })
        })
        .expect("a thread for a fake service");
    rx.await.expect("the fake service started")
}

/// A fake Graph API that hands each reply's text to the user waiting for it.
pub(crate) async fn replying_graph() -> (FakeGraph, Waiters, Arc<AtomicU64>) {
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let replies = Arc::new(AtomicU64::new(0));
    let hook = {
        let (waiters, replies) = (waiters.clone(), replies.clone());
        Arc::new(move |body: &serde_json::Value| {
            let Some(to) = body.get("to").and_then(|v| v.as_str()) else {
                return; // a read receipt
            };
            replies.fetch_add(1, Ordering::Relaxed);
            let text = body
                .pointer("/text/body")
                .or_else(|| body.pointer("/interactive/body/text"))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            if let Some(tx) = waiters.lock().unwrap().get(to) {
                let _ = tx.send((text, Instant::now()));
            }
        })
    };
    let graph = on_own_thread("fake-graph", move || FakeGraph::start_for_load(hook)).await;
    (graph, waiters, replies)
}

/// One step of a user's script: the webhook to post and the reply expected (None: any).
pub(crate) type Turn = (String, Option<String>);
/// A user's script: (user, turn number from 1) -> the turn.
pub(crate) type Script = Arc<dyn Fn(&str, u64) -> Turn + Send + Sync>;

/// Every user posts its script's next webhook and waits for the reply at the fake API, for
/// `seconds`. Returns (webhook → reply ms of every answered turn, the same keyed by (user,
/// turn), wrong or missing replies).
pub(crate) async fn closed_loop(
    base: &str,
    waiters: &Waiters,
    users: usize,
    seconds: u64,
    script: Script,
    think: Duration,
) -> (Vec<f64>, Vec<KeyedTurn>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for u in 0..users {
        let user = format!("62700{u:08}");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        waiters.lock().unwrap().insert(user.clone(), tx);
        let (stop, base, script) = (stop.clone(), base.to_string(), script.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut poster = Poster::new(&base);
            let (mut lat, mut keyed, mut wrong, mut n) = (Vec::new(), Vec::new(), 0u64, 0u64);
            // A person reads the answer before typing the next message: 50–150 % of `think`
            // (the first message at a random point of it, so users do not move in step).
            let pause = |scale: f64| think.mul_f64(scale);
            tokio::time::sleep(pause(fastrand::f64())).await;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (body, expected) = script(&user, n);
                let t = Instant::now();
                if poster.post(body).await.ok() != Some(200) {
                    wrong += 1;
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                    Ok(Some((text, at))) => {
                        let ms = at.saturating_duration_since(t).as_secs_f64() * 1000.0;
                        lat.push(ms);
                        keyed.push((user.clone(), n, ms));
                        if expected.as_ref().is_some_and(|e| *e != text) {
                            wrong += 1;
                            explain(&client, &base, &user, n, &expected, Some(&text)).await;
                        }
                    }
                    _ => {
                        wrong += 1;
                        explain(&client, &base, &user, n, &expected, None).await;
                    }
                }
                if !think.is_zero() {
                    tokio::time::sleep(pause(0.5 + fastrand::f64())).await;
                }
            }
            (lat, keyed, wrong)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut keyed, mut wrong) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        if let Ok((l, k, w)) = t.await {
            lat.extend(l);
            keyed.extend(k);
            wrong += w;
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, keyed, wrong)
}

/// (user, turn from 1, webhook → reply ms)
pub(crate) type KeyedTurn = (String, u64, f64);

/// With `PARLEY_BENCH_EXPLAIN` set, a wrong or missing reply prints what the daemon holds
/// for that user (its conversation and last messages through the admin API) and its inbox,
/// outbox and send counters: enough to tell a lost event from a held or unsent reply.
async fn explain(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    turn: u64,
    expected: &Option<String>,
    got: Option<&str>,
) {
    if std::env::var_os("PARLEY_BENCH_EXPLAIN").is_none() {
        return;
    }
    let conversation = match client
        .get(format!("{base}/admin/v1/conversations/{PNID}/{user}"))
        .bearer_auth(ADMIN)
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let counters = match Scrape::read(base).await {
        Some(m) => {
            m.0.lines()
                .filter(|l| {
                    [
                        "parley_inbox",
                        "parley_outbox",
                        "parley_sends",
                        "parley_live",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        None => String::new(),
    };
    eprintln!(
        "user {user}, turn {turn}: expected {expected:?}, got {got:?}\n{conversation}\n{counters}"
    );
}
