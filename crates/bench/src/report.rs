//! What the benchmarks print: percentiles, arrival rates, the daemon's `/metrics` page, and
//! the lines shared by the closed-loop benchmarks.

use std::time::{Duration, Instant};

use crate::daemon::{clk_tck, print_store, proc_stats, written_bytes};
use crate::Cli;

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Seconds from the first arrival to the last.
pub(crate) fn arrival_span(times: &[Instant]) -> f64 {
    match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    }
}

/// The most arrivals in any one second (times in order).
pub(crate) fn most_in_one_second(times: &[Instant]) -> usize {
    let (mut most, mut j) = (0, 0);
    for i in 0..times.len() {
        while times[j] + Duration::from_secs(1) <= times[i] {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

/// The daemon's `/metrics` page, read once.
pub(crate) struct Scrape(pub(crate) String);

impl Scrape {
    pub(crate) async fn read(base: &str) -> Option<Scrape> {
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
    pub(crate) fn quantile_bound(&self, name: &str, q: f64) -> Option<u64> {
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
    pub(crate) fn print_writer(&self, elapsed: f64) {
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
pub(crate) struct Run<'a> {
    pub(crate) users: usize,
    pub(crate) elapsed: f64,
    pub(crate) lat: &'a [f64],
    pub(crate) replies: u64,
    pub(crate) wrong: u64,
    pub(crate) pid: u32,
    pub(crate) ticks0: u64,
    /// The daemon's bytes written to storage when the run began.
    pub(crate) written0: u64,
    pub(crate) metrics: Option<Scrape>,
}

pub(crate) fn report(cli: &Cli, r: Run<'_>) {
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
