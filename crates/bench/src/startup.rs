//! `parley-bench startup`: start-up time with N conversations stored (SQLite): must not grow
//! with N.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parley_testkit::FakeGraph;

use crate::daemon::{serve_until_ready, start_daemon, Daemon};
use crate::{Cli, PNID};

/// Start-up time against the number of stored conversations: an empty SQLite store, then the
/// same store holding `conversations` conversations (written straight into it). Lazy
/// activation means the second start is no slower.
pub(crate) async fn startup(cli: &Cli, conversations: usize) -> anyhow::Result<()> {
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
