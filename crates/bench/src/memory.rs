//! `parley-bench memory`: K conversations made active, RSS; then idle past the passivation
//! timeout, RSS again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_testkit::{text_webhook, FakeGraph};

use crate::daemon::{now_secs, proc_stats, start_daemon};
use crate::load::post;
use crate::{Cli, ADMIN, PNID};

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

pub(crate) async fn memory(
    cli: &Cli,
    conversations: usize,
    idle_seconds: u64,
) -> anyhow::Result<()> {
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
