//! The listener against hostile traffic: stalled and trickling connections, unsigned bodies,
//! the unauthenticated-bytes budget, token guessing and the private admin address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::conversation::CoreLogic;
use parley_testkit::{text_webhook, FakeGraph};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::on_both_stores;

/// Short limits, so a test sees them act.
fn tight(db: &TestDb, graph: &FakeGraph) -> parley::config::Settings {
    let mut s = test_settings(db, graph);
    s.http.header_read_timeout = Duration::from_secs(1);
    s.http.keep_alive_timeout = Duration::from_secs(1);
    s.http.body_read_timeout = Duration::from_secs(1);
    s.http.min_body_rate = 1024;
    s
}

/// This test holds two thousand sockets open in one process: lift the soft open-file limit
/// to the hard one.
#[allow(unsafe_code)]
fn raise_open_file_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < needed {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    assert!(
        lim.rlim_cur >= needed,
        "the open-file limit ({}) is below the {needed} this test needs",
        lim.rlim_cur
    );
}

/// The value of one series in a Prometheus text page (0 when absent).
fn counter(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Has the server closed this connection (EOF or reset), reading whatever it answered first?
async fn closed_by_server(mut s: TcpStream, within: Duration) -> (bool, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (false, String::from_utf8_lossy(&seen).into()),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&seen).into()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

const STALLED: usize = 1_000;
const TRICKLING: usize = 50;

async fn stalled_and_trickling_connections_are_closed_while_a_signed_webhook_is_answered(
    db: TestDb,
) {
    raise_open_file_limit(4 * (STALLED + TRICKLING) as u64);
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(tight(&db, &graph), Arc::new(CoreLogic)).await;
    let target = addr(&app);

    // A third send nothing, a third half a request head, a third a head and half a body.
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut s = TcpStream::connect(&target).await.expect("connect");
        match i % 3 {
            0 => {}
            1 => s
                .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
                .await
                .unwrap(),
            _ => s
                .write_all(
                    format!(
                        "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 1000\r\n\r\n{{\"object\"",
                        "0".repeat(64)
                    )
                    .as_bytes(),
                )
                .await
                .unwrap(),
        }
        stalled.push(s);
    }
    // Bodies that keep arriving, a byte every 100 ms: far below the minimum rate.
    let mut tricklers = Vec::with_capacity(TRICKLING);
    for _ in 0..TRICKLING {
        let mut s = TcpStream::connect(&target).await.expect("connect");
        s.write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 100000\r\n\r\n",
                "0".repeat(64)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        tricklers.push(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if s.write_all(b" ").await.is_err() || started.elapsed() > Duration::from_secs(30) {
                    break started.elapsed();
                }
            }
        }));
    }

    // Meta's webhook is still answered, and committed, at once.
    let body = text_webhook(PNID, "6281200000001", "wamid.EDGE1", "hi", now_secs());
    let started = Instant::now();
    assert_eq!(app.post_webhook(&body).await, 200);
    let answered_in = started.elapsed();
    eprintln!("signed webhook answered in {answered_in:?} beside {STALLED} stalled and {TRICKLING} trickling connections");
    assert!(
        answered_in < Duration::from_secs(5),
        "the signed webhook waited {answered_in:?} behind the stalled connections"
    );
    let store = db.store().await;
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbox WHERE wamid = 'wamid.EDGE1'"
        )
        .await,
        1
    );

    // Every stalled connection is closed by the server once its timeout has passed.
    let checks: Vec<_> = stalled
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, Duration::from_secs(5))))
        .collect();
    let mut half_bodies_answered = 0;
    for (i, c) in checks.into_iter().enumerate() {
        let (closed, answer) = c.await.unwrap();
        assert!(closed, "stalled connection {i} is still open");
        if answer.starts_with("HTTP/1.1 408") {
            half_bodies_answered += 1;
        }
    }
    assert_eq!(
        half_bodies_answered,
        STALLED / 3,
        "a half-sent body is answered 408 Request Timeout"
    );
    // The tricklers are cut off after about a second (1 s + 1 s per 1024 bytes), not 30.
    for t in tricklers {
        let lasted = t.await.unwrap();
        assert!(
            lasted < Duration::from_secs(10),
            "a trickling body lasted {lasted:?}"
        );
    }
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains("parley_http_connections_closed_total{reason=\"header_timeout\"}"));
    assert!(metrics.contains("parley_webhooks_total{result=\"timeout\"}"));
    app.stop().await;
}
on_both_stores!(
    stalled_connections,
    stalled_and_trickling_connections_are_closed_while_a_signed_webhook_is_answered
);

async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = tight(&db, &graph);
    settings.http.header_read_timeout = Duration::from_secs(30);
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let (closed, _) = closed_by_server(s, Duration::from_secs(10)).await;
    assert!(closed, "the idle connection was kept open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by the keep-alive timeout (1 s), not the header timeout (30 s)"
    );
    app.stop().await;
}
on_both_stores!(
    keep_alive,
    an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout
);

async fn a_webhook_without_a_signature_is_refused_before_its_body_is_read(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(tight(&db, &graph), Arc::new(CoreLogic)).await;
    for signature in ["", "X-Hub-Signature-256: sha1=abc\r\n"] {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        // Headers announcing 4 MB, and not one byte of it.
        s.write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: x\r\n{signature}Content-Length: 4000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (closed, answer) = closed_by_server(s, Duration::from_millis(800)).await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "answered without waiting for the body: {answer:?}"
        );
        assert!(closed, "and the connection is closed");
    }
    app.stop().await;
}
on_both_stores!(
    unsigned,
    a_webhook_without_a_signature_is_refused_before_its_body_is_read
);

async fn unauthenticated_bytes_past_the_budget_get_503_and_signed_webhooks_go_on(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = tight(&db, &graph);
    settings.http.max_body_bytes = 64 * 1024;
    settings.http.max_unauthenticated_body_bytes = 64 * 1024;
    settings.http.body_read_timeout = Duration::from_secs(3);
    settings.http.min_body_rate = 1024 * 1024;
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    // A claimed signature and 60 KiB of a 64 KiB body, held.
    let mut holder = TcpStream::connect(addr(&app)).await.unwrap();
    holder
        .write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 65536\r\n\r\n",
                "0".repeat(64)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    holder.write_all(&vec![b' '; 60 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another body that does not fit in what is left: 503, Meta would redeliver.
    let body = text_webhook(PNID, "6281200000002", "wamid.EDGE2", "hi", now_secs());
    let padded = format!("{body}{}", " ".repeat(8 * 1024));
    assert_eq!(app.post_webhook(&padded).await, 503);
    // Once the held body is cut off, the budget is back.
    let (closed, answer) = closed_by_server(holder, Duration::from_secs(10)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(app.post_webhook(&padded).await, 200);
    let (_, metrics) = app.get("/metrics").await;
    assert!(counter(&metrics, "parley_webhooks_total{result=\"busy\"}") >= 1);
    app.stop().await;
}
on_both_stores!(
    unauthenticated_budget,
    unauthenticated_bytes_past_the_budget_get_503_and_signed_webhooks_go_on
);

async fn repeated_wrong_tokens_are_answered_429_until_the_allowance_returns(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.http.auth_failures_burst = 5;
    settings.http.auth_failures_interval = Duration::from_millis(700);
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let path = "/conversations/106540352242922/6281234567890";
    let mut statuses = Vec::new();
    for i in 0..200 {
        let (status, _) = app
            .admin(
                reqwest::Method::GET,
                path,
                Some(&format!("wrong-token-{i}")),
                None,
            )
            .await;
        statuses.push(status);
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 401),
        "{:?}",
        &statuses[..6]
    );
    assert!(
        statuses[5..].iter().all(|s| *s == 429),
        "{:?}",
        &statuses[..8]
    );
    // While refused, even the right token is not looked at: guessing learns nothing.
    let response = app
        .http
        .get(format!("{}/admin/v1/accounts", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // The verify-token handshake is throttled the same way, separately from nothing: the same
    // client is already refused.
    let verify = format!(
        "{}/webhook?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=42",
        app.base
    );
    assert_eq!(app.http.get(&verify).send().await.unwrap().status(), 429);
    // A failure is forgiven every 700 ms.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, _) = app
        .admin(reqwest::Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let (_, metrics) = app.get("/metrics").await;
    // (The registry is the process's: other tests running beside this one add to it.)
    assert!(
        counter(
            &metrics,
            "parley_auth_failures_total{endpoint=\"admin\",result=\"refused\"}"
        ) >= 5
    );
    assert!(
        counter(
            &metrics,
            "parley_auth_failures_total{endpoint=\"admin\",result=\"throttled\"}"
        ) >= 196
    );
    app.stop().await;
}
on_both_stores!(
    token_guessing,
    repeated_wrong_tokens_are_answered_429_until_the_allowance_returns
);

async fn wrong_verify_tokens_are_throttled(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.http.auth_failures_burst = 3;
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let mut statuses = Vec::new();
    for i in 0..50 {
        let url = format!(
            "{}/webhook?hub.mode=subscribe&hub.verify_token=guess{i}&hub.challenge=42",
            app.base
        );
        statuses.push(app.http.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[..3], &[403, 403, 403]);
    assert!(statuses[3..].iter().all(|s| *s == 429));
    app.stop().await;
}
on_both_stores!(verify_guessing, wrong_verify_tokens_are_throttled);

async fn the_admin_api_and_metrics_can_live_on_a_private_address_only(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.http.admin_listen = Some("127.0.0.1:0".into());
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let private = app.admin_base.clone().expect("an admin address");
    let get = |url: String| {
        let http = app.http.clone();
        async move {
            http.get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(format!("{}/admin/v1/accounts", app.base)).await, 404);
    assert_eq!(get(format!("{}/metrics", app.base)).await, 404);
    assert_eq!(get(format!("{}/admin/v1/accounts", private)).await, 200);
    assert_eq!(get(format!("{}/metrics", private)).await, 200);
    assert_eq!(get(format!("{}/healthz", app.base)).await, 200);
    assert_eq!(get(format!("{}/webhook", private)).await, 404);
    let body = text_webhook(PNID, "6281200000003", "wamid.EDGE3", "hi", now_secs());
    assert_eq!(app.post_webhook(&body).await, 200);
    app.stop().await;
}
on_both_stores!(
    admin_listen,
    the_admin_api_and_metrics_can_live_on_a_private_address_only
);
