//! The daemon under load: a fresh store, `parleyd serve` started on it and answered once
//! `/readyz` says 200, and its RSS, CPU and bytes written read from `/proc`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use parley_testkit::FakeGraph;

use crate::{Cli, ADMIN, PNID, SECRET};

pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) _dir: tempfile::TempDir,
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

pub(crate) fn now_secs() -> i64 {
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
pub(crate) async fn start_daemon(
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
pub(crate) async fn serve_until_ready(
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

/// The store line every benchmark prints first.
pub(crate) fn print_store(cli: &Cli) {
    println!(
        "store: {}",
        cli.store
            .as_deref()
            .unwrap_or("sqlite (temp file, synchronous=FULL)")
    );
}

/// (peak RSS KiB, current RSS KiB, CPU ticks user+system)
pub(crate) fn proc_stats(pid: u32) -> (u64, u64, u64) {
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

pub(crate) fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Bytes the process has caused to be written to storage (`/proc/<pid>/io`).
pub(crate) fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
