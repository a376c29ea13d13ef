//! `parley-bench campaign`: a campaign through the admin API to `--recipients` distinct users
//! at `--rate-per-minute`, paced under the account's gate (`--mps`): the achieved rate at the
//! fake Graph API, RSS while it runs, daemon CPU per message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use parley_testkit::FakeGraph;

use crate::daemon::{clk_tck, print_store, proc_stats, start_daemon};
use crate::report::{arrival_span, most_in_one_second};
use crate::{Cli, ADMIN, PNID};

pub(crate) async fn campaign(
    cli: &Cli,
    recipients: usize,
    rate_per_minute: u32,
) -> anyhow::Result<()> {
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
