//! `parley-bench bots`: chatbot conversations against a fake model answering after
//! --delay-ms: throughput, the latency Parley adds over the provider's, and memory per
//! conversation.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_testkit::text_webhook;

use crate::daemon::{now_secs, proc_stats, start_daemon, written_bytes};
use crate::load::{closed_loop, on_own_thread, replying_graph, Turn};
use crate::report::{pct, report, Run, Scrape};
use crate::{Cli, PNID};

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
pub(crate) async fn bots(
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
