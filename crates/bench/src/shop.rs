//! `parley-bench shop`: the shop conversation end to end: each user plays the whole
//! conversation, waiting for every reply at the fake Graph API before answering.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_testkit::text_webhook;

use crate::daemon::{now_secs, proc_stats, start_daemon, written_bytes};
use crate::load::{closed_loop, replying_graph, Turn};
use crate::report::{report, Run, Scrape};
use crate::{Cli, PNID};

pub(crate) async fn shop(cli: &Cli, users: usize, seconds: u64, hooks: bool) -> anyhow::Result<()> {
    let (graph, waiters, replies) = replying_graph().await;
    let extra = if hooks {
        crate::hooks::HOOKS_CONFIG
    } else {
        ""
    };
    let daemon = start_daemon(cli, &graph, "10m", extra).await?;
    let sink = match hooks {
        true => {
            let sink = crate::hooks::sink().await?;
            crate::hooks::subscribe(&daemon.base, &sink.url).await?;
            Some(sink)
        }
        false => None,
    };
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
    if let Some(sink) = &sink {
        crate::hooks::report(sink, elapsed, lat.len() as u64, Duration::from_secs(60)).await;
    }
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
