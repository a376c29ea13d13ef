//! `parley-bench send`: the SendGate's pacing: business-initiated templates to distinct users
//! queued through the admin API, and the rate they reach the fake Graph API at (use `--mps`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_testkit::FakeGraph;

use crate::daemon::{clk_tck, print_store, proc_stats, start_daemon};
use crate::report::{arrival_span, most_in_one_second};
use crate::{Cli, ADMIN, PNID};

pub(crate) async fn send(cli: &Cli, messages: usize, concurrency: usize) -> anyhow::Result<()> {
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
