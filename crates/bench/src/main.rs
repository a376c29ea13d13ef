//! Load driver for a running `parleyd` (started here as a subprocess, on a fresh SQLite or
//! PostgreSQL store, against an in-process fake Graph API).
//!
//! `parley-bench ingest`: signed single-message webhooks from N users over C connections;
//! reports acknowledged webhooks/s, ack latency p50/p99, inbound→read-receipt latency, and
//! the daemon's peak RSS and CPU µs per message.
//! `parley-bench memory`: K conversations made active, RSS; then idle past the passivation
//! timeout, RSS again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph};

const PNID: &str = "106540352242922";
const SECRET: &str = "bench-secret";
const ADMIN: &str = "bench-admin-token-0123456789abcdef";

#[derive(Parser, Clone)]
#[command(name = "parley-bench", about = "Load driver for parleyd")]
struct Cli {
    /// The daemon binary to start.
    #[arg(long, global = true, default_value = "target/release/parleyd")]
    daemon: PathBuf,
    /// Store URL; default a fresh SQLite file in a temp dir. A postgres:// URL names a server
    /// database to create a fresh database on (e.g. postgres://postgres@127.0.0.1/test).
    #[arg(long, global = true)]
    store: Option<String>,
    /// Send read receipts for inbound messages (the account's `mark_read`).
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    mark_read: bool,
    /// The account's SendGate rate (`messages_per_second`). The engine figures are taken far
    /// above Meta's limits so that the gate's pacing does not hide the engine's own cost.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    mps: u32,
    /// The account's `pair_rate_interval` ("0s": off, as the shop bench replies ~30 times a
    /// second to each user).
    #[arg(long, global = true, default_value = "0s")]
    pair_rate_interval: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Clone)]
enum Cmd {
    Ingest {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "15")]
        seconds: u64,
    },
    /// The same load from wrk (a lean C driver, as in DESIGN.md §5) with pre-signed bodies.
    Wrk {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "8")]
        seconds: u64,
        /// Distinct pre-signed webhooks to prepare (each is sent once).
        #[arg(long, default_value_t = 250_000)]
        requests: usize,
        /// Post status webhooks (`delivered`, each for a different wamid, as Meta sends two or
        /// three per message sent) instead of messages.
        #[arg(long)]
        statuses: bool,
        /// First run the same requests against this box's ingest ceiling (a bare axum server
        /// that checks the signature, decodes the webhook and answers 200, nothing durable),
        /// then against the daemon, and print the ratio.
        #[arg(long)]
        ceiling: bool,
    },
    /// The ingest ceiling `wrk --ceiling` runs in its own process.
    #[command(hide = true)]
    CeilingServer {
        #[arg(long)]
        port: u16,
    },
    /// The shop conversation end to end: each user plays the whole conversation, waiting for
    /// every reply at the fake Graph API before answering.
    Shop {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value = "10")]
        seconds: u64,
    },
    /// Start-up time with N conversations stored (SQLite): must not grow with N.
    Startup {
        #[arg(long, default_value_t = 1_000_000)]
        conversations: usize,
    },
    /// The shop benchmark at 1, 10 and 100 users on SQLite, and on PostgreSQL with --pg.
    Matrix {
        #[arg(long, default_value = "8")]
        seconds: u64,
        /// A PostgreSQL server URL to create fresh databases on.
        #[arg(long)]
        pg: Option<String>,
    },
    /// Chatbot conversations against a fake model answering after --delay-ms.
    Bots {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value = "15")]
        seconds: u64,
        #[arg(long, default_value_t = 200)]
        delay_ms: u64,
        /// The provider's concurrency setting.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Each user's pause between an answer and the next message (0: none, a closed loop
        /// that keeps the provider's limit saturated).
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
    },
    /// Reload a folder of N flow files (copies of the shop flow) while a thread steps the
    /// shop conversation through the same registry: reload time, and step latency during
    /// reloads against before.
    Reload {
        #[arg(long, default_value_t = 1000)]
        files: usize,
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
    /// The SendGate's pacing: queue business-initiated templates to distinct users through
    /// the admin API and measure the rate they reach the fake Graph API at (use `--mps`).
    Send {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// A campaign through the admin API: `--recipients` distinct users at
    /// `--rate-per-minute`, paced under the account's gate (`--mps`); the achieved rate at the
    /// fake Graph API, RSS while it runs, daemon CPU per message.
    Campaign {
        #[arg(long, default_value_t = 100_000)]
        recipients: usize,
        #[arg(long, default_value_t = 60_000)]
        rate_per_minute: u32,
    },
    /// The SendGate's decision alone, in process (no daemon): ns per admitted message.
    GateCore {
        #[arg(long, default_value_t = 2_000_000)]
        decisions: u64,
        #[arg(long, default_value_t = 100_000)]
        users: u64,
    },
    Memory {
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// Passivation timeout given to the daemon.
        #[arg(long, default_value = "20")]
        idle_seconds: u64,
    },
}

struct Daemon {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    /// (server URL, database) of a PostgreSQL database made for this run, dropped after it.
    pg: Option<(String, String)>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if let Some((server, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime to drop the bench database");
                rt.block_on(async {
                    if let Ok(s) = parley::store::Store::connect(&server, 1).await {
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(&drop).execute(s.pool()).await;
                    }
                });
            })
            .join();
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The store URL for a run, and the PostgreSQL database to drop after it.
async fn fresh_store(
    store: &Option<String>,
    dir: &std::path::Path,
) -> anyhow::Result<(String, Option<(String, String)>)> {
    match store {
        None => Ok((format!("sqlite://{}/parley.db", dir.display()), None)),
        Some(url) if url.starts_with("postgres") => {
            let s = parley::store::Store::connect(url, 1).await?;
            let name = format!("parley_bench_{:08x}", fastrand::u32(..));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(s.pool())
                .await?;
            let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
            Ok((format!("{base}/{name}"), Some((url.clone(), name))))
        }
        Some(url) => Ok((url.clone(), None)),
    }
}

/// `extra` is appended to the config (after the `[[accounts]]` table: its first lines may
/// set more keys of the account).
async fn start_daemon(
    cli: &Cli,
    graph: &FakeGraph,
    idle: &str,
    extra: &str,
) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let (store, pg) = fresh_store(&cli.store, dir.path()).await?;
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[whatsapp]\napp_secret = \"{SECRET}\"\nverify_token = \"v\"\naccess_token = \"t\"\ngraph_base_url = \"{}\"\n\
             [store]\nurl = \"{store}\"\n[admin]\ntoken = \"{ADMIN}\"\n[conversation]\nidle_timeout = \"{idle}\"\n[log]\nlevel = \"warn\"\nformat = \"json\"\n\
             [[accounts]]\nphone_number_id = \"{PNID}\"\nmark_read = {}\n\
             messages_per_second = {}\npair_rate_interval = \"{}\"\nmessaging_tier = \"unlimited\"\n{extra}",
            graph.base_url, cli.mark_read, cli.mps, cli.pair_rate_interval
        ),
    )?;
    let (child, base) = serve_until_ready(cli, &config, port).await?;
    Ok(Daemon {
        child,
        base,
        _dir: dir,
        pg,
    })
}

/// `parleyd serve --config`, answered once `/readyz` says 200.
async fn serve_until_ready(
    cli: &Cli,
    config: &std::path::Path,
    port: u16,
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(&cli.daemon)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", cli.daemon.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..2000 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok((child, base));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill();
    bail!("daemon did not become ready")
}

/// Start-up time against the number of stored conversations: an empty SQLite store, then the
/// same store holding `conversations` conversations (written straight into it). Lazy
/// activation means the second start is no slower.
async fn startup(cli: &Cli, conversations: usize) -> anyhow::Result<()> {
    let graph = FakeGraph::start_for_load(Arc::new(|_| {})).await;
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let config = daemon._dir.path().join("bench.toml");
    let db = daemon._dir.path().join("parley.db");
    let port: u16 = daemon
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("port")?;
    let stop = |mut child: Child| {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    };
    let time_start = || async {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let (child, _) = serve_until_ready(cli, &config, port).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            stop(child);
        }
        times.sort_by(f64::total_cmp);
        anyhow::Ok(times[2])
    };
    let Daemon { child, .. } = &daemon;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let empty = time_start().await?;
    let filled = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&db)?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO conversations (account, user_key, state, last_inbound_at, last_applied_seq, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 0, ?4, ?4)",
            )?;
            let state = r#"{"contact":{"wa_id":"x","profile_name":"Bench"},"inbound_count":3,"outbound_count":3}"#;
            for n in 0..conversations {
                stmt.execute(rusqlite::params![
                    PNID,
                    format!("62{n:011}"),
                    state,
                    1_700_000_000_000i64
                ])?;
            }
        }
        tx.commit()?;
    }
    let filled = filled.elapsed().as_secs_f64();
    let full = time_start().await?;
    println!(
        "start-up (spawn → /readyz 200, median of 5): empty store {empty:.0} ms; with {conversations} stored conversations {full:.0} ms (stored in {filled:.1} s)"
    );
    Ok(())
}

/// The shop benchmark at 1, 10 and 100 users, on SQLite and (with `--pg URL`) PostgreSQL.
async fn matrix(cli: &Cli, seconds: u64, pg: Option<String>) -> anyhow::Result<()> {
    let stores: Vec<Option<String>> = std::iter::once(None).chain(pg.map(Some)).collect();
    for store in stores {
        for users in [1, 10, 100] {
            println!(
                "--- shop, {users} users, {}",
                store.as_deref().unwrap_or("sqlite")
            );
            let run = Cli {
                store: store.clone(),
                ..cli.clone()
            };
            shop(&run, users, seconds).await?;
        }
    }
    Ok(())
}

/// The store line every benchmark prints first.
fn print_store(cli: &Cli) {
    println!(
        "store: {}",
        cli.store
            .as_deref()
            .unwrap_or("sqlite (temp file, synchronous=FULL)")
    );
}

/// Seconds from the first arrival to the last.
fn arrival_span(times: &[Instant]) -> f64 {
    match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    }
}

/// The most arrivals in any one second (times in order).
fn most_in_one_second(times: &[Instant]) -> usize {
    let (mut most, mut j) = (0, 0);
    for i in 0..times.len() {
        while times[j] + Duration::from_secs(1) <= times[i] {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

/// (peak RSS KiB, current RSS KiB, CPU ticks user+system)
fn proc_stats(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (field("VmHWM:"), field("VmRSS:"), ticks)
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One keep-alive HTTP/1 connection to the daemon's webhook, straight on hyper (reconnected
/// after an error): the driver shares the two cores with the daemon, so its own cost per
/// webhook is kept small.
struct Poster {
    host: String,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Poster {
    fn new(base: &str) -> Poster {
        Poster {
            host: base.trim_start_matches("http://").to_string(),
            sender: None,
        }
    }

    async fn post(&mut self, body: String) -> anyhow::Result<u16> {
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

async fn post(client: &reqwest::Client, base: &str, body: String) -> anyhow::Result<u16> {
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

async fn ingest(cli: &Cli, users: usize, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let read_latency: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let hook = {
        let (sent_at, read_latency, reads) = (sent_at.clone(), read_latency.clone(), reads.clone());
        Arc::new(move |body: &serde_json::Value| {
            if let Some(id) = body.get("message_id").and_then(|v| v.as_str()) {
                if let Some(t) = sent_at.lock().unwrap().remove(id) {
                    read_latency
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let graph = FakeGraph::start_for_load(hook).await;
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (stop, counter, sent_at, base) = (
            stop.clone(),
            counter.clone(),
            sent_at.clone(),
            daemon.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let user = format!("62800{:08}", n as usize % users);
                let wamid = format!("wamid.B{c}x{i}");
                i += 1;
                let body = text_webhook(PNID, &user, &wamid, "hello there", now_secs());
                let t = Instant::now();
                sent_at.lock().unwrap().insert(wamid, t);
                match post(&client, &base, body).await {
                    Ok(200) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked = lat.len() as u64;
    let drain_start = Instant::now();
    if cli.mark_read {
        settle(&reads).await;
    }
    let (peak_kib, rss_kib, ticks1) = proc_stats(pid);
    if let Some(m) = Scrape::read(&daemon.base).await {
        m.print_writer(elapsed);
    }
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    lat.sort_by(f64::total_cmp);
    let mut rl = read_latency.lock().unwrap().clone();
    rl.sort_by(f64::total_cmp);
    print_store(cli);
    println!("users: {users}, connections: {connections}, duration: {elapsed:.1} s");
    println!(
        "acknowledged webhooks: {acked} ({:.0}/s), errors: {errors}",
        acked as f64 / elapsed
    );
    println!(
        "ack latency ms: p50 {:.2}, p99 {:.2}, max {:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!(
        "inbound → read receipt ms: p50 {:.2}, p99 {:.2} ({} receipts for {} messages, quiet {:.1} s after the load)",
        pct(&rl, 0.5),
        pct(&rl, 0.99),
        reads.load(Ordering::Relaxed),
        acked,
        drain_start.elapsed().as_secs_f64()
    );
    println!(
        "daemon: peak RSS {:.1} MiB, RSS now {:.1} MiB, CPU {:.0} µs per message",
        peak_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        cpu_us / acked.max(1) as f64
    );
    Ok(())
}

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

/// Bytes the process has caused to be written to storage (`/proc/<pid>/io`).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

struct WrkLoad {
    users: usize,
    connections: usize,
    seconds: u64,
    requests: usize,
    statuses: bool,
}

/// The ingest ceiling of this box: what `parleyd` does before its durable work (HTTP, the
/// signature check, the webhook decoder) and nothing after it.
async fn ceiling_server(port: u16) -> anyhow::Result<()> {
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

async fn with_wrk(cli: &Cli, load: &WrkLoad, ceiling: bool) -> anyhow::Result<()> {
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

/// Wait until read receipts stop arriving (one receipt can cover a user's burst, so they
/// need not number the messages).
async fn settle(reads: &AtomicU64) {
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
type Waiters = Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<(String, Instant)>>>>;

/// Start a fake service on a thread and runtime of its own (`start` binds and spawns its
/// tasks there), as the real one runs on machines of its own: its clock readings and answers
/// then do not queue behind the load driver's thousand users on the driver's runtime, so a
/// latency read off it is the daemon's and the network's, not the driver's scheduling.
async fn on_own_thread<T, F, Fut>(name: &str, start: F) -> T
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
async fn replying_graph() -> (FakeGraph, Waiters, Arc<AtomicU64>) {
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
type Turn = (String, Option<String>);
/// A user's script: (user, turn number from 1) -> the turn.
type Script = Arc<dyn Fn(&str, u64) -> Turn + Send + Sync>;

/// Every user posts its script's next webhook and waits for the reply at the fake API, for
/// `seconds`. Returns (webhook → reply ms of every answered turn, the same keyed by (user,
/// turn), wrong or missing replies).
async fn closed_loop(
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
type KeyedTurn = (String, u64, f64);

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

/// The daemon's `/metrics` page, read once.
struct Scrape(String);

impl Scrape {
    async fn read(base: &str) -> Option<Scrape> {
        let r = reqwest::get(format!("{base}/metrics")).await.ok()?;
        Some(Scrape(r.text().await.ok()?))
    }

    /// The value of the sample line that starts with `name` (0 if absent).
    fn get(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// The upper bound of the bucket holding quantile `q` of histogram `name` (None: empty,
    /// or past the last bound).
    fn quantile_bound(&self, name: &str, q: f64) -> Option<u64> {
        let total = self.get(&format!("{name}_count "));
        if total == 0.0 {
            return None;
        }
        let prefix = format!("{name}_bucket{{le=\"");
        self.0.lines().find_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let count: f64 = count.trim().parse().ok()?;
            (count >= q * total).then(|| le.parse().ok())?
        })
    }

    /// Group commits over `elapsed` seconds, and how full they were.
    fn print_writer(&self, elapsed: f64) {
        let batches = self.get("parley_commit_batches_total ");
        println!(
            "writer: {batches:.0} group commits ({:.0}/s), {:.1} operations per commit, {:.0} steps committed with their inbox row",
            batches / elapsed,
            self.get("parley_commit_batch_ops_sum ") / batches.max(1.0),
            self.get("parley_steps_joined_total "),
        );
        println!(
            "writer: {:.0} deadlocks, {:.0} batches retried op by op",
            self.get("parley_store_deadlocks_total "),
            self.get("parley_store_batch_fallbacks_total "),
        );
    }
}

/// What a closed-loop run measured (the lines shared by the closed-loop benchmarks).
struct Run<'a> {
    users: usize,
    elapsed: f64,
    lat: &'a [f64],
    replies: u64,
    wrong: u64,
    pid: u32,
    ticks0: u64,
    /// The daemon's bytes written to storage when the run began.
    written0: u64,
    metrics: Option<Scrape>,
}

fn report(cli: &Cli, r: Run<'_>) {
    let Run {
        users,
        elapsed,
        lat,
        replies,
        wrong,
        pid,
        ticks0,
        written0,
        metrics,
    } = r;
    let (peak_kib, rss_kib, ticks1) = proc_stats(pid);
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    print_store(cli);
    if let Some(m) = metrics {
        m.print_writer(elapsed);
    }
    println!("users: {users}, duration: {elapsed:.1} s");
    println!(
        "replies: {replies} ({:.0}/s); wrong or missing replies: {wrong}",
        replies as f64 / elapsed
    );
    println!(
        "webhook → reply ms: p50 {:.2}, p99 {:.2}, max {:.2}",
        pct(lat, 0.5),
        pct(lat, 0.99),
        pct(lat, 1.0)
    );
    println!(
        "daemon: peak RSS {:.1} MiB, RSS now {:.1} MiB, CPU {:.0} µs per message",
        peak_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        cpu_us / (lat.len() as f64).max(1.0)
    );
    println!(
        "store: {:.1} KB written per message",
        written_bytes(pid).saturating_sub(written0) as f64 / 1000.0 / (lat.len() as f64).max(1.0)
    );
}

async fn shop(cli: &Cli, users: usize, seconds: u64) -> anyhow::Result<()> {
    let (graph, waiters, replies) = replying_graph().await;
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);
    let written0 = written_bytes(pid);
    let script = Arc::new(|user: &str, n: u64| -> Turn {
        let (input, button, expected) = parley_testkit::SHOP_SCRIPT[((n - 1) % 6) as usize];
        let wamid = format!("wamid.S{user}-{n}");
        let body = if button {
            parley_testkit::button_reply_webhook(PNID, user, &wamid, input, "Catalog", now_secs())
        } else {
            text_webhook(PNID, user, &wamid, input, now_secs())
        };
        (body, Some(expected.to_string()))
    });
    let started = Instant::now();
    let (lat, _, wrong) = closed_loop(
        &daemon.base,
        &waiters,
        users,
        seconds,
        script,
        Duration::ZERO,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let replies = replies.load(Ordering::Relaxed);
    println!(
        "conversations: {} ({:.0}/s)",
        lat.len() / 6,
        (lat.len() / 6) as f64 / elapsed
    );
    report(
        cli,
        Run {
            users,
            elapsed,
            lat: &lat,
            replies,
            wrong,
            pid,
            ticks0,
            written0,
            metrics: Scrape::read(&daemon.base).await,
        },
    );
    Ok(())
}

/// How long the fake model actually held each call, by (user, turn) (read from the question
/// `question number {turn} from {user}`): a timer asked for 200 ms fires late on a loaded
/// machine, and that lateness is the provider's, not Parley's.
type Holds = Arc<std::sync::Mutex<HashMap<(String, u64), f64>>>;

/// A model provider (OpenAI-compatible) that answers every call after `delay`.
async fn slow_model(delay: Duration) -> anyhow::Result<(String, Holds)> {
    let holds: Holds = Arc::default();
    let record = holds.clone();
    let app = axum::Router::new().route(
        "/chat/completions",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let record = record.clone();
            async move {
                let t = Instant::now();
                tokio::time::sleep(delay).await;
                let question = body["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default();
                if let Some((n, user)) = question
                    .strip_prefix("question number ")
                    .and_then(|q| q.split_once(" from "))
                {
                    if let Ok(n) = n.parse::<u64>() {
                        let held = t.elapsed().as_secs_f64() * 1000.0;
                        record.lock().unwrap().insert((user.to_string(), n), held);
                    }
                }
                axum::Json(serde_json::json!({
                    "choices": [{"message": {"role": "assistant", "content": "Noted."}}],
                    "usage": {"prompt_tokens": 200, "completion_tokens": 10}
                }))
            }
        }),
    );
    let addr = on_own_thread("fake-model", move || async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok::<_, std::io::Error>(addr)
    })
    .await?;
    Ok((format!("http://{addr}"), holds))
}

/// Chatbot conversations against a provider answering after `delay_ms`, `concurrency`
/// calls at a time: throughput (bounded by concurrency / delay), the latency Parley adds
/// over the provider's, and memory per conversation with a full 20-message context.
async fn bots(
    cli: &Cli,
    users: usize,
    seconds: u64,
    delay_ms: u64,
    concurrency: usize,
    think_ms: u64,
) -> anyhow::Result<()> {
    let (graph, waiters, replies) = replying_graph().await;
    let (model, holds) = slow_model(Duration::from_millis(delay_ms)).await?;
    let flows = tempfile::tempdir()?;
    std::fs::create_dir(flows.path().join("bots"))?;
    std::fs::write(
        flows.path().join("bots/assistant.yaml"),
        "provider: fake\nmodel: m\nsystem_prompt: Answer briefly.\ncontext_messages: 20\nmax_turns: 100000\ntimeout: 1h\n",
    )?;
    let extra = format!(
        "default_bot = \"assistant\"\n[flows]\ndir = \"{}\"\nwatch = false\n[ai.providers.fake]\nkind = \"openai\"\nbase_url = \"{model}\"\ntimeout = \"30s\"\nconcurrency = {concurrency}\n",
        flows.path().display()
    );
    let daemon = start_daemon(cli, &graph, "10m", &extra).await?;
    let pid = daemon.child.id();
    let (_, rss0, ticks0) = proc_stats(pid);
    let written0 = written_bytes(pid);
    let script = Arc::new(|user: &str, n: u64| -> Turn {
        let wamid = format!("wamid.B{user}-{n}");
        (
            text_webhook(
                PNID,
                user,
                &wamid,
                &format!("question number {n} from {user}"),
                now_secs(),
            ),
            Some("Noted.".to_string()),
        )
    });
    let started = Instant::now();
    let (lat, keyed, wrong) = closed_loop(
        &daemon.base,
        &waiters,
        users,
        seconds,
        script,
        Duration::from_millis(think_ms),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let replies = replies.load(Ordering::Relaxed);
    println!(
        "provider: {delay_ms} ms per answer, {concurrency} at a time (bound {:.0} answers/s)",
        concurrency as f64 * 1000.0 / delay_ms as f64
    );
    report(
        cli,
        Run {
            users,
            elapsed,
            lat: &lat,
            replies,
            wrong,
            pid,
            ticks0,
            written0,
            metrics: Scrape::read(&daemon.base).await,
        },
    );
    let added: Vec<f64> = lat.iter().map(|l| l - delay_ms as f64).collect();
    println!(
        "added over the provider's {delay_ms} ms: p50 {:.2} ms, p99 {:.2} ms",
        pct(&added, 0.5),
        pct(&added, 0.99)
    );
    // The same over what the provider actually held each call (its timer fires late under
    // load), turn by turn.
    let holds = std::mem::take(&mut *holds.lock().unwrap());
    let mut over_held: Vec<f64> = keyed
        .iter()
        .filter_map(|(user, n, ms)| holds.get(&(user.clone(), *n)).map(|h| ms - h))
        .collect();
    over_held.sort_by(f64::total_cmp);
    let mut late: Vec<f64> = holds.values().map(|h| h - delay_ms as f64).collect();
    late.sort_by(f64::total_cmp);
    println!(
        "added over the provider's actual hold ({} turns matched): p50 {:.2} ms, p90 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms (the provider's own timer was late by p50 {:.2} ms, p99 {:.2} ms)",
        over_held.len(),
        pct(&over_held, 0.5),
        pct(&over_held, 0.9),
        pct(&over_held, 0.95),
        pct(&over_held, 0.99),
        pct(&over_held, 0.999),
        pct(&late, 0.5),
        pct(&late, 0.99)
    );
    if let Some(m) = Scrape::read(&daemon.base).await {
        let ms = |name: &str, q: f64| {
            m.quantile_bound(name, q).map_or_else(
                || "over the last bucket".to_string(),
                |us| format!("≤ {:.2} ms", us as f64 / 1000.0),
            )
        };
        println!(
            "Parley's own time per turn (daemon's histograms): p50 {}, p99 {} (webhook → model call p50 {}, p99 {}; answer → reply's request to the Graph API p50 {}, p99 {})",
            ms("parley_bot_turn_us", 0.5),
            ms("parley_bot_turn_us", 0.99),
            ms("parley_bot_before_call_us", 0.5),
            ms("parley_bot_before_call_us", 0.99),
            ms("parley_bot_after_answer_us", 0.5),
            ms("parley_bot_after_answer_us", 0.99),
        );
        println!(
            "the store's COMMITs (WAL write and fsync): p50 {}, p99 {}",
            ms("parley_commit_us", 0.5),
            ms("parley_commit_us", 0.99),
        );
    }
    let (_, rss1, _) = proc_stats(pid);
    println!(
        "memory: {:.1} KiB per conversation ({} turns each on average; contexts hold up to 20 messages)",
        (rss1.saturating_sub(rss0)) as f64 / users as f64,
        lat.len() / users.max(1)
    );
    Ok(())
}

/// Decide `decisions` messages to `users` users (service and business alternating, pair rate
/// and a tier on, a rate high enough to admit them all) with time advancing 1 ms a step.
fn gate_core(decisions: u64, users: u64) {
    use parley::config::MessagingTier;
    use parley::sendgate::{
        AccountGate, Decision, Gate, GateSettings, SendClass, TierLedger, Zone,
    };
    let settings = GateSettings {
        messages_per_second: 1_000_000,
        throughput_burst: 100_000,
        pair_rate_interval: Duration::from_secs(6),
        pair_rate_burst: 45,
        daily_limit: None,
        daily_block: 1,
        tier: MessagingTier::Limited(100_000),
        zone: Zone::parse("Asia/Jakarta").expect("a zone"),
    };
    let gate = AccountGate {
        account: PNID.into(),
        waba: "bench".into(),
        gate: Mutex::new(Gate::new(settings)),
        tier: Arc::new(Mutex::new(TierLedger::new(MessagingTier::Limited(100_000)))),
        wake: tokio::sync::Notify::new(),
        retuned: Default::default(),
        holds: Default::default(),
    };
    let names: Vec<String> = (0..users).map(|u| format!("62911{u:08}")).collect();
    let t0 = 1_795_305_600_000i64;
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..decisions {
        let user = &names[(i % users) as usize];
        let class = if i % 2 == 0 {
            SendClass::Service
        } else {
            SendClass::Business
        };
        if let Decision::Admit { .. } = gate.decide(t0 + i as i64, user, class, false) {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{decisions} decisions ({admitted} admitted) for {users} users in {:.2} s: {:.0} ns per decision",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / decisions as f64
    );
}

async fn send(cli: &Cli, messages: usize, concurrency: usize) -> anyhow::Result<()> {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let graph = {
        let arrivals = arrivals.clone();
        FakeGraph::start_for_load(Arc::new(move |body| {
            if body.get("template").is_some() {
                arrivals.lock().unwrap().push(Instant::now());
            }
        }))
        .await
    };
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, next) = (client.clone(), daemon.base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= messages {
                    break;
                }
                let r = client
                    .post(format!("{base}/admin/v1/messages"))
                    .bearer_auth(ADMIN)
                    .json(&serde_json::json!({
                        "phone_number_id": PNID,
                        "to": format!("62910{n:08}"),
                        "template": {"name": "promo", "language": "id", "body_params": ["Budi"]},
                    }))
                    .send()
                    .await;
                if !matches!(r, Ok(ref r) if r.status().as_u16() == 202) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    let queued_in = started.elapsed().as_secs_f64();
    let deadline = Instant::now()
        + Duration::from_secs_f64(messages as f64 / f64::from(cli.mps.max(1)) * 2.0 + 30.0);
    while arrivals.lock().unwrap().len() < messages - failed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (peak_kib, _, ticks1) = proc_stats(pid);
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    let times = arrivals.lock().unwrap().clone();
    let sent = times.len();
    let span = arrival_span(&times);
    // The most sends in any one second, and the rate over the whole run.
    let max_second = most_in_one_second(&times);
    print_store(cli);
    println!(
        "queued {messages} business-initiated templates ({failed} refused) through the admin API in {queued_in:.1} s ({:.0}/s)",
        messages as f64 / queued_in
    );
    println!(
        "sent {sent} in {span:.2} s: {:.1}/s against messages_per_second = {} ({:+.2} %); most in one second: {max_second}",
        (sent.saturating_sub(1)) as f64 / span.max(1e-9),
        cli.mps,
        ((sent.saturating_sub(1)) as f64 / span.max(1e-9) / f64::from(cli.mps) - 1.0) * 100.0
    );
    println!(
        "daemon: peak RSS {:.1} MiB, CPU {:.0} µs per message (admin request, step, commit, gate, send, record)",
        peak_kib as f64 / 1024.0,
        cpu_us / sent.max(1) as f64
    );
    Ok(())
}

async fn campaign(cli: &Cli, recipients: usize, rate_per_minute: u32) -> anyhow::Result<()> {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(recipients)));
    let graph = {
        let arrivals = arrivals.clone();
        FakeGraph::start_for_load(Arc::new(move |body| {
            if body.get("template").is_some() {
                arrivals.lock().unwrap().push(Instant::now());
            }
        }))
        .await
    };
    let daemon = start_daemon(cli, &graph, "10m", "").await?;
    let pid = daemon.child.id();
    let client = reqwest::Client::new();
    let list: Vec<serde_json::Value> = (0..recipients)
        .map(|n| serde_json::json!({"wa_id": format!("62920{n:08}"), "vars": {"name": format!("Budi{n}")}}))
        .collect();
    let body = serde_json::json!({
        "name": "bench", "phone_number_id": PNID, "type": "broadcast",
        "message": {"template": {"name": "promo_nov", "language": "id", "body_params": ["{{name}}"]}},
        "recipients": list, "rate_limit_per_minute": rate_per_minute, "start": false,
    });
    let created_at = Instant::now();
    let r = client
        .post(format!("{}/admin/v1/campaigns", daemon.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let created: serde_json::Value = r.json().await?;
    if status.as_u16() != 201 {
        bail!("create: {status} {created}");
    }
    drop(body);
    let id = created["id"].as_i64().unwrap_or(0);
    let create_s = created_at.elapsed().as_secs_f64();
    let (_, rss_before, ticks0) = proc_stats(pid);
    let started = Instant::now();
    let r = client
        .post(format!("{}/admin/v1/campaigns/{id}/resume", daemon.base))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("start: {}", r.status());
    }
    let target = f64::from(rate_per_minute) / 60.0;
    let deadline =
        Instant::now() + Duration::from_secs_f64(recipients as f64 / target * 2.0 + 60.0);
    // RSS each second while it runs: (messages sent so far, RSS KiB).
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let mut final_status = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = arrivals.lock().unwrap().len();
        samples.push((sent, proc_stats(pid).1));
        let c: serde_json::Value = client
            .get(format!("{}/admin/v1/campaigns/{id}", daemon.base))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        final_status = c["status"].as_str().unwrap_or("").to_string();
        if final_status != "running" {
            println!("campaign {final_status}: counters {}", c["counters"]);
            break;
        }
    }
    let (peak_kib, _, ticks1) = proc_stats(pid);
    let times = arrivals.lock().unwrap().clone();
    let sent = times.len();
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    let span = arrival_span(&times);
    let rate = sent.saturating_sub(1) as f64 / span.max(1e-9);
    // The steady part: from the 5th to the 95th percentile of arrivals.
    let (lo, hi) = (sent / 20, sent * 19 / 20);
    let steady = if hi > lo + 1 {
        (hi - lo) as f64 / times[hi].duration_since(times[lo]).as_secs_f64()
    } else {
        0.0
    };
    let max_second = most_in_one_second(&times);
    print_store(cli);
    println!(
        "created a {recipients}-recipient campaign through the admin API in {create_s:.1} s; status {final_status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "sent {sent} in {span:.2} s: {rate:.1}/s against {target:.1}/s ({:+.2} %); steady 5–95 %: {steady:.1}/s ({:+.2} %); most in one second: {max_second}; gate messages_per_second = {}",
        (rate / target - 1.0) * 100.0,
        (steady / target - 1.0) * 100.0,
        cli.mps
    );
    let at = |frac: f64| {
        samples
            .iter()
            .find(|(n, _)| *n as f64 >= frac * recipients as f64)
            .map_or(0.0, |(_, kib)| *kib as f64 / 1024.0)
    };
    println!(
        "daemon RSS: {:.1} MiB before sending; at 10 % {:.1}, 25 % {:.1}, 50 % {:.1}, 75 % {:.1}, 90 % {:.1} MiB; peak {:.1} MiB (includes creating the campaign)",
        rss_before as f64 / 1024.0,
        at(0.10),
        at(0.25),
        at(0.50),
        at(0.75),
        at(0.90),
        peak_kib as f64 / 1024.0
    );
    println!(
        "daemon CPU: {:.0} µs per message (campaign page, conversation step + commit, gate, send, record)",
        cpu_us / sent.max(1) as f64
    );
    Ok(())
}

async fn live_conversations(client: &reqwest::Client, base: &str) -> i64 {
    let r = client
        .get(format!("{base}/admin/v1/accounts"))
        .bearer_auth(ADMIN)
        .send()
        .await;
    match r {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["accounts"][0]["live_conversations"].as_i64())
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

async fn memory(cli: &Cli, conversations: usize, idle_seconds: u64) -> anyhow::Result<()> {
    let graph = FakeGraph::start_for_load(Arc::new(|_| {})).await;
    let daemon = start_daemon(cli, &graph, &format!("{idle_seconds}s"), "").await?;
    let pid = daemon.child.id();
    let (_, base_rss, _) = proc_stats(pid);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, base, next) = (client.clone(), daemon.base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= conversations {
                    break;
                }
                let body = text_webhook(
                    PNID,
                    &format!("62900{n:08}"),
                    &format!("wamid.M{n}"),
                    "hi",
                    now_secs(),
                );
                let _ = post(&client, &base, body).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut live = 0;
    for _ in 0..600 {
        live = live_conversations(&client, &daemon.base).await;
        if live >= conversations as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, active_rss, _) = proc_stats(pid);
    println!(
        "conversations made active: {conversations} in {:.1} s; live actors: {live}",
        started.elapsed().as_secs_f64()
    );
    println!("RSS idle daemon: {:.1} MiB; with {conversations} active: {:.1} MiB ({:.2} KiB per active conversation)", base_rss as f64 / 1024.0, active_rss as f64 / 1024.0, (active_rss.saturating_sub(base_rss)) as f64 / conversations as f64);
    let wait = Instant::now();
    while live_conversations(&client, &daemon.base).await > 0
        && wait.elapsed() < Duration::from_secs(idle_seconds * 3 + 30)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, at_once, _) = proc_stats(pid);
    // The account gives the wave's memory back on its next tick (at most 5 s later), or,
    // when it gave some back less than 15 s before, on its first tick after that.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_, after_rss, _) = proc_stats(pid);
    tokio::time::sleep(Duration::from_secs(14)).await;
    let (peak, later_rss, _) = proc_stats(pid);
    println!(
        "after passivation: live actors {}, RSS {:.1} MiB 1 s after the last one stopped, {:.1} MiB 8 s after, {:.1} MiB 22 s after (peak {:.1} MiB)",
        live_conversations(&client, &daemon.base).await,
        at_once as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        later_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ingest {
            users,
            connections,
            seconds,
        } => ingest(&cli, users, connections, seconds).await,
        Cmd::Memory {
            conversations,
            idle_seconds,
        } => memory(&cli, conversations, idle_seconds).await,
        Cmd::Wrk {
            users,
            connections,
            seconds,
            requests,
            statuses,
            ceiling,
        } => {
            let load = WrkLoad {
                users,
                connections,
                seconds,
                requests,
                statuses,
            };
            with_wrk(&cli, &load, ceiling).await
        }
        Cmd::CeilingServer { port } => ceiling_server(port).await,
        Cmd::Shop { users, seconds } => shop(&cli, users, seconds).await,
        Cmd::Reload { files, rounds } => reload(files, rounds),
        Cmd::Startup { conversations } => startup(&cli, conversations).await,
        Cmd::Matrix { seconds, ref pg } => matrix(&cli, seconds, pg.clone()).await,
        Cmd::Bots {
            users,
            seconds,
            delay_ms,
            concurrency,
            think_ms,
        } => bots(&cli, users, seconds, delay_ms, concurrency, think_ms).await,
        Cmd::Send {
            messages,
            concurrency,
        } => send(&cli, messages, concurrency).await,
        Cmd::Campaign {
            recipients,
            rate_per_minute,
        } => campaign(&cli, recipients, rate_per_minute).await,
        Cmd::GateCore { decisions, users } => {
            gate_core(decisions, users);
            Ok(())
        }
    }
}

/// Step the shop conversation over and over through `logic` until `stop`; each step's time.
fn step_shop(logic: &parley::behaviour::FlowLogic, stop: &AtomicBool) -> Vec<Duration> {
    use parley::conversation::{
        ConversationEvent, ConversationLogic, ConversationState, StepContext,
    };
    use parley::whatsapp::event::{InboundMessage, MessageContent};
    let script = ["menu", "Catalog", "2", "3", "yes"];
    let ctx = StepContext {
        now_ms: 1_700_000_000_000,
        mark_read: true,
        handoff_timeout_ms: 0,
        default_bot: None,
        fetch_media: false,
        transcribe: false,
        outside_window: parley::conversation::WindowPolicy::Fail,
        hold_ms: 0,
    };
    let mut times = Vec::new();
    let mut state = ConversationState::default();
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        for text in script {
            n += 1;
            let event = ConversationEvent::Inbound {
                seq: n,
                message: Arc::new(InboundMessage {
                    phone_number_id: PNID.into(),
                    display_phone_number: String::new(),
                    from: Some("6281200000001".into()),
                    user_id: None,
                    profile_name: Some("Bench".into()),
                    wamid: format!("wamid.{n}"),
                    timestamp: 1_700_000_000,
                    context: None,
                    referral: None,
                    errors: vec![],
                    content: MessageContent::Text { body: text.into() },
                }),
            };
            let t = Instant::now();
            let (next, _) = logic.step(state, &event, &ctx);
            times.push(t.elapsed());
            state = next;
        }
    }
    times
}

fn reload(files: usize, rounds: usize) -> anyhow::Result<()> {
    let shop =
        std::fs::read_to_string("flows/shop.yaml").context("run from the repository root")?;
    let dir = tempfile::tempdir()?;
    // The shop flow under its own id, plus N-1 copies with their own ids and keywords.
    std::fs::write(dir.path().join("shop.yaml"), &shop)?;
    for i in 1..files {
        let copy = shop
            .replace("id: shop", &format!("id: shop_{i}"))
            .replace("keyword: menu", &format!("keyword: menu{i}"))
            .replace("button: catalog", &format!("button: catalog{i}"));
        std::fs::write(dir.path().join(format!("shop_{i}.yaml")), copy)?;
    }
    let registry = parley::behaviour::FlowRegistry::new(
        parley::flow::load_dir(dir.path()).map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let logic = Arc::new(parley::behaviour::FlowLogic {
        flows: registry.clone(),
    });
    let pct = |mut v: Vec<Duration>, p: f64| -> Duration {
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    // Step latency without reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let stepper = {
        let (logic, stop) = (logic.clone(), stop.clone());
        std::thread::spawn(move || step_shop(&logic, &stop))
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let quiet = stepper.join().expect("stepper");
    // The same while reloading.
    let stop = Arc::new(AtomicBool::new(false));
    let stepper = {
        let (logic, stop) = (logic.clone(), stop.clone());
        std::thread::spawn(move || step_shop(&logic, &stop))
    };
    let mut took = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        registry
            .reload(dir.path())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        took.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let busy = stepper.join().expect("stepper");
    println!(
        "reload of {files} flow files: median {:.0} ms, max {:.0} ms over {rounds} rounds",
        pct(took.clone(), 0.5).as_secs_f64() * 1e3,
        took.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for (label, v) in [("without reloads", quiet), ("during reloads", busy)] {
        println!(
            "shop step {label}: {} steps, p50 {:.1} µs, p99 {:.1} µs, max {:.2} ms",
            v.len(),
            pct(v.clone(), 0.5).as_secs_f64() * 1e6,
            pct(v.clone(), 0.99).as_secs_f64() * 1e6,
            v.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
