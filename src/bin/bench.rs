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
use parley::testing::{text_webhook, FakeGraph};

const PNID: &str = "106540352242922";
const SECRET: &str = "bench-secret";
const ADMIN: &str = "bench-admin";

#[derive(Parser)]
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

#[derive(Subcommand)]
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
    },
    /// The shop conversation end to end: each user plays the whole conversation, waiting for
    /// every reply at the fake Graph API before answering.
    Shop {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value = "10")]
        seconds: u64,
    },
    /// The SendGate's pacing: queue business-initiated templates to distinct users through
    /// the admin API and measure the rate they reach the fake Graph API at (use `--mps`).
    Send {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
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

async fn start_daemon(cli: &Cli, graph: &FakeGraph, idle: &str) -> anyhow::Result<Daemon> {
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
             messages_per_second = {}\npair_rate_interval = \"{}\"\nmessaging_tier = \"unlimited\"\n",
            graph.base_url, cli.mark_read, cli.mps, cli.pair_rate_interval
        ),
    )?;
    let child = Command::new(&cli.daemon)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", cli.daemon.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(Daemon {
                    child,
                    base,
                    _dir: dir,
                    pg,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("daemon did not become ready")
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
    let daemon = start_daemon(cli, &graph, "10m").await?;
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
    if let Ok(r) = reqwest::get(format!("{}/metrics", daemon.base)).await {
        let text = r.text().await.unwrap_or_default();
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let batches = get("parley_commit_batches_total ");
        println!(
            "writer: {batches:.0} group commits ({:.0}/s), {:.1} operations per commit",
            batches / elapsed,
            get("parley_commit_batch_ops_sum ") / batches.max(1.0)
        );
    }
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    lat.sort_by(f64::total_cmp);
    let mut rl = read_latency.lock().unwrap().clone();
    rl.sort_by(f64::total_cmp);
    println!(
        "store: {}",
        cli.store
            .as_deref()
            .unwrap_or("sqlite (temp file, synchronous=FULL)")
    );
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

async fn with_wrk(
    cli: &Cli,
    users: usize,
    connections: usize,
    seconds: u64,
    requests: usize,
) -> anyhow::Result<()> {
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
        for n in 0..requests {
            let body = text_webhook(
                PNID,
                &format!("62800{:08}", n % users),
                &format!("wamid.W{n}"),
                "hello there",
                ts,
            );
            writeln!(f, "{}\t{}", sign(SECRET.as_bytes(), body.as_bytes()), body)?;
        }
    }
    let script = work.path().join("post.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let daemon = start_daemon(cli, &graph, "10m").await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);
    let threads = 2;
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("{}/webhook", daemon.base))
        .arg("--")
        .arg(&data)
        .arg(threads.to_string())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let report = String::from_utf8_lossy(&out.stdout);
    let requests_done: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if requests_done as usize > requests {
        println!("warning: wrk sent {requests_done} requests but only {requests} are distinct; raise --requests");
    }
    let drain = Instant::now();
    if cli.mark_read {
        settle(&reads).await;
    }
    let (peak_kib, _, ticks1) = proc_stats(pid);
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    println!("{report}");
    println!(
        "read receipts: {} of {requests_done} ({:.1} s to drain)",
        reads.load(Ordering::Relaxed),
        drain.elapsed().as_secs_f64()
    );
    println!(
        "daemon: peak RSS {:.1} MiB, CPU {:.0} µs per message",
        peak_kib as f64 / 1024.0,
        cpu_us / requests_done.max(1) as f64
    );
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

async fn shop(cli: &Cli, users: usize, seconds: u64) -> anyhow::Result<()> {
    use tokio::sync::mpsc;
    type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;
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
                let _ = tx.send(text);
            }
        })
    };
    let graph = FakeGraph::start_for_load(hook).await;
    let daemon = start_daemon(cli, &graph, "10m").await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);
    let script: [(&str, bool, &str); 6] = [
        ("menu", false, "Welcome! What would you like?"),
        (
            "catalog",
            true,
            "1. Kopi 25000\n2. Teh 15000\n3. Roti 10000\nWhich product number?",
        ),
        ("2", false, "How many?"),
        ("abc", false, "Please send a number"),
        ("3", false, "Total: 45000. Reply yes to confirm"),
        ("yes", false, "Order confirmed"),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for u in 0..users {
        let user = format!("62700{u:08}");
        let (tx, mut rx) = mpsc::unbounded_channel();
        waiters.lock().unwrap().insert(user.clone(), tx);
        let (stop, base) = (stop.clone(), daemon.base.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut lat, mut wrong, mut conversations, mut n) = (Vec::new(), 0u64, 0u64, 0u64);
            'outer: while !stop.load(Ordering::Relaxed) {
                for (input, button, expected) in script {
                    n += 1;
                    let wamid = format!("wamid.S{user}-{n}");
                    let body = if button {
                        parley::testing::button_reply_webhook(
                            PNID,
                            &user,
                            &wamid,
                            input,
                            "Catalog",
                            now_secs(),
                        )
                    } else {
                        text_webhook(PNID, &user, &wamid, input, now_secs())
                    };
                    let t = Instant::now();
                    if post(&client, &base, body).await.ok() != Some(200) {
                        wrong += 1;
                        continue 'outer;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                        Ok(Some(text)) => {
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            if text != expected {
                                wrong += 1;
                            }
                        }
                        _ => {
                            wrong += 1;
                            continue 'outer;
                        }
                    }
                }
                conversations += 1;
            }
            (lat, wrong, conversations)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut wrong, mut conversations) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, w, c) = t.await?;
        lat.extend(l);
        wrong += w;
        conversations += c;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (peak_kib, _, ticks1) = proc_stats(pid);
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    lat.sort_by(f64::total_cmp);
    let messages = lat.len() as u64;
    println!(
        "store: {}",
        cli.store
            .as_deref()
            .unwrap_or("sqlite (temp file, synchronous=FULL)")
    );
    println!("users: {users}, duration: {elapsed:.1} s");
    println!(
        "conversations: {conversations} ({:.0}/s); replies: {} ({:.0}/s); wrong or missing replies: {wrong}",
        conversations as f64 / elapsed,
        replies.load(Ordering::Relaxed),
        replies.load(Ordering::Relaxed) as f64 / elapsed
    );
    println!(
        "webhook → reply ms: p50 {:.2}, p99 {:.2}, max {:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!(
        "daemon: peak RSS {:.1} MiB, CPU {:.0} µs per message",
        peak_kib as f64 / 1024.0,
        cpu_us / messages.max(1) as f64
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
    let daemon = start_daemon(cli, &graph, "10m").await?;
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
    let span = match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    // The most sends in any one second, and the rate over the whole run.
    let mut max_second = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[j] + Duration::from_secs(1) <= times[i] {
            j += 1;
        }
        max_second = max_second.max(i - j + 1);
    }
    println!(
        "store: {}",
        cli.store
            .as_deref()
            .unwrap_or("sqlite (temp file, synchronous=FULL)")
    );
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
    let daemon = start_daemon(cli, &graph, &format!("{idle_seconds}s")).await?;
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
    let (peak, after_rss, _) = proc_stats(pid);
    println!(
        "after passivation: live actors {}, RSS {:.1} MiB (peak {:.1} MiB)",
        live_conversations(&client, &daemon.base).await,
        after_rss as f64 / 1024.0,
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
        } => with_wrk(&cli, users, connections, seconds, requests).await,
        Cmd::Shop { users, seconds } => shop(&cli, users, seconds).await,
        Cmd::Send {
            messages,
            concurrency,
        } => send(&cli, messages, concurrency).await,
        Cmd::GateCore { decisions, users } => {
            gate_core(decisions, users);
            Ok(())
        }
    }
}
