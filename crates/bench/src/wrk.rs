//! `parley-bench wrk`: the ingest load from wrk (a lean C driver, as in DESIGN.md §5) with
//! pre-signed bodies; with `--ceiling`, first against this box's ingest ceiling (a bare axum
//! server that checks the signature, decodes the webhook and answers 200), then the ratio.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph};

use crate::daemon::{clk_tck, now_secs, proc_stats, start_daemon, written_bytes};
use crate::load::settle;
use crate::{Cli, PNID, SECRET};

const WRK_SCRIPT: &str = r#"
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local threads = tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % threads == id then
      local sig, body = line:match("([^	]*)	(.*)")
      reqs[#reqs + 1] = wrk.format("POST", "/webhook", {["X-Hub-Signature-256"] = sig, ["Content-Type"] = "application/json"}, body)
    end
    i = i + 1
  end
  n = 0
end
function request()
  n = n + 1
  if n > #reqs then n = 1 end
  return reqs[n]
end
"#;

pub(crate) struct WrkLoad {
    pub(crate) users: usize,
    pub(crate) connections: usize,
    pub(crate) seconds: u64,
    pub(crate) requests: usize,
    pub(crate) statuses: bool,
}

/// The ingest ceiling of this box: what `parleyd` does before its durable work (HTTP, the
/// signature check, the webhook decoder) and nothing after it.
pub(crate) async fn ceiling_server(port: u16) -> anyhow::Result<()> {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
            let claimed = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
            if parley::ingress::signature::verify(SECRET.as_bytes(), claimed, &body).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            match parley::whatsapp::webhook::parse_webhook(&body) {
                Ok(_) => StatusCode::OK,
                Err(_) => StatusCode::BAD_REQUEST,
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// What one wrk run gave: its report, requests done, and the server's CPU µs per request.
struct WrkRun {
    report: String,
    requests: u64,
    cpu_us_per_request: f64,
    /// The server's CPU ticks when the run began.
    ticks0: u64,
}

/// Run wrk against `base` for the load's seconds; `pid` is the server whose CPU is counted.
fn run_wrk(
    load: &WrkLoad,
    script: &std::path::Path,
    data: &std::path::Path,
    base: &str,
    pid: u32,
    repeats_matter: bool,
) -> anyhow::Result<WrkRun> {
    let threads = 2;
    let (_, _, ticks0) = proc_stats(pid);
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &load.connections.to_string(),
            "-d",
            &format!("{}s", load.seconds),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("{base}/webhook"))
        .arg("--")
        .arg(data)
        .arg(threads.to_string())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let (_, _, ticks1) = proc_stats(pid);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The ceiling stores nothing, so a repeated request costs it the same; the daemon
    // answers a redelivery from its dedup instead.
    if repeats_matter && requests as usize > load.requests {
        println!(
            "warning: wrk sent {requests} requests but only {} are distinct; raise --requests",
            load.requests
        );
    }
    if report.contains("Non-2xx") {
        println!("warning: some answers were not 2xx (see wrk's report below)");
    }
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    Ok(WrkRun {
        report,
        requests,
        cpu_us_per_request: cpu_us / requests.max(1) as f64,
        ticks0,
    })
}

/// The ceiling's run: a child process of this binary (`ceiling-server`), so that its CPU is
/// counted apart from the driver's.
async fn wrk_ceiling(
    load: &WrkLoad,
    script: &std::path::Path,
    data: &std::path::Path,
) -> anyhow::Result<WrkRun> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["ceiling-server", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the ceiling server")?;
    let up = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if up.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            bail!("the ceiling server did not start listening within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = format!("http://127.0.0.1:{port}");
    let run = run_wrk(load, script, data, &base, child.id(), false);
    let _ = child.kill();
    let _ = child.wait();
    run
}

pub(crate) async fn with_wrk(cli: &Cli, load: &WrkLoad, ceiling: bool) -> anyhow::Result<()> {
    let reads = Arc::new(AtomicU64::new(0));
    let hook = {
        let reads = reads.clone();
        Arc::new(move |body: &serde_json::Value| {
            if body.get("message_id").is_some() {
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let graph = FakeGraph::start_for_load(hook).await;
    let work = tempfile::tempdir()?;
    let data = work.path().join("requests.tsv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&data)?);
        let ts = now_secs();
        for n in 0..load.requests {
            let user = format!("62800{:08}", n % load.users);
            let body = if load.statuses {
                parley_testkit::status_webhook(
                    PNID,
                    &format!("wamid.OUT{n}"),
                    "delivered",
                    &user,
                    None,
                    ts,
                )
            } else {
                text_webhook(PNID, &user, &format!("wamid.W{n}"), "hello there", ts)
            };
            writeln!(f, "{}\t{}", sign(SECRET.as_bytes(), body.as_bytes()), body)?;
        }
    }
    let script = work.path().join("post.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let bare = if ceiling {
        let run = wrk_ceiling(load, &script, &data).await?;
        println!(
            "ceiling (axum + signature + decode, nothing stored):\n{}",
            run.report
        );
        Some(run)
    } else {
        None
    };
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let pid = daemon.child.id();
    let written0 = written_bytes(pid);
    let mut run = run_wrk(load, &script, &data, &daemon.base, pid, true)?;
    let drain = Instant::now();
    if cli.mark_read && !load.statuses {
        settle(&reads).await;
    }
    // The daemon's CPU includes sending the read receipts it still owed when wrk stopped.
    let (peak_kib, _, ticks1) = proc_stats(pid);
    run.cpu_us_per_request =
        (ticks1 - run.ticks0) as f64 * 1e6 / clk_tck() as f64 / run.requests.max(1) as f64;
    let written = written_bytes(pid).saturating_sub(written0);
    println!("{}", run.report);
    println!(
        "store: {:.1} KB written per webhook",
        written as f64 / 1000.0 / run.requests.max(1) as f64
    );
    println!(
        "read receipts: {} of {} ({:.1} s to drain)",
        reads.load(Ordering::Relaxed),
        run.requests,
        drain.elapsed().as_secs_f64()
    );
    println!(
        "daemon: peak RSS {:.1} MiB, CPU {:.0} µs per message",
        peak_kib as f64 / 1024.0,
        run.cpu_us_per_request
    );
    if let Some(bare) = bare {
        let per_s = |r: &WrkRun| r.requests as f64 / load.seconds as f64;
        println!(
            "ratio: daemon {:.0} acked/s, ceiling {:.0} acked/s = {:.2}; CPU per message {:.0} µs against {:.0} µs = {:.1}x",
            per_s(&run),
            per_s(&bare),
            per_s(&run) / per_s(&bare).max(1.0),
            run.cpu_us_per_request,
            bare.cpu_us_per_request,
            run.cpu_us_per_request / bare.cpu_us_per_request.max(1e-9)
        );
    }
    Ok(())
}
