//! `parley-bench ingest`: signed single-message webhooks from N users over C connections;
//! reports acknowledged webhooks/s, ack latency p50/p99, inbound→read-receipt latency, and
//! the daemon's peak RSS and CPU µs per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_testkit::{text_webhook, FakeGraph};

use crate::daemon::{clk_tck, now_secs, print_store, proc_stats, start_daemon};
use crate::load::{post, settle};
use crate::report::{pct, Scrape};
use crate::{Cli, PNID};

pub(crate) async fn ingest(
    cli: &Cli,
    users: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<()> {
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
