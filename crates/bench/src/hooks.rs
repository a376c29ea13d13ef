//! `parley-bench shop --hooks`: a local receiver subscribed to `message.received` while the shop
//! load runs, counting the signed deliveries it is posted (answering 200 at once), so the
//! webhook sender's deliveries/s and its lag behind the conversations are measured beside the
//! replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ADMIN;

/// The config lines a daemon needs to deliver to a receiver on this box.
pub(crate) const HOOKS_CONFIG: &str = "[flows]\nhttp_allow = [\"127.0.0.1/32\"]\n";

pub(crate) struct Sink {
    pub url: String,
    pub got: Arc<AtomicU64>,
}

/// Start the receiver.
pub(crate) async fn sink() -> anyhow::Result<Sink> {
    let got = Arc::new(AtomicU64::new(0));
    let counted = got.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: String| {
            let counted = counted.clone();
            async move {
                if headers.contains_key("webhook-signature") {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Sink { url, got })
}

/// Subscribe the receiver to `message.received` (one per inbound message: the count to
/// expect is known).
pub(crate) async fn subscribe(base: &str, url: &str) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/v1/webhooks"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "url": url, "events": ["message.received"], "description": "bench" }))
        .send()
        .await
        .context("creating the webhook endpoint")?;
    if !r.status().is_success() {
        bail!(
            "creating the webhook endpoint: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Print what the receiver got during the load (`elapsed` seconds) and how long it took to
/// get the `expected` events of the load after it ended (at most `drain`).
pub(crate) async fn report(sink: &Sink, elapsed: f64, expected: u64, drain: Duration) {
    let during = sink.got.load(Ordering::Relaxed);
    let ended = Instant::now();
    while sink.got.load(Ordering::Relaxed) < expected && ended.elapsed() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = sink.got.load(Ordering::Relaxed);
    println!(
        "webhook deliveries: {during} during the load ({:.0}/s); {total} of {expected} message.received after {:.2} s more",
        during as f64 / elapsed,
        ended.elapsed().as_secs_f64()
    );
}
