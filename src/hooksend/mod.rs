//! The webhook sender: a task that takes due deliveries from the store, signs each as
//! Standard Webhooks says, posts it to its endpoint and records the attempt.
//!
//! It works from the tables only, so a delivery pending when the process died is sent after
//! the restart: a delivery taken is leased (its `next_at` moved past the timeout) and, if the
//! process dies before the attempt is recorded, comes due again when the lease ends. So a
//! delivery is sent at least once, and the receiver tells repeats by `webhook-id`. It runs
//! off the conversations' path: at most `webhooks.concurrency` deliveries in flight, each
//! bounded by `webhooks.timeout`; a slow endpoint slows only its own deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::Engine;
use crate::hooks::{
    decide, disable_now, event_body, signature_header, Answer, DeliveryState, EventParts, Verdict,
};
use crate::outcall::Refusal;
use crate::store::{AttemptRecord, DueDelivery, HookEndpoint};

/// The first bytes of an answer's body kept in the delivery log.
pub const LOGGED_BODY: usize = 4096;

/// Start the sender (it runs until the process ends).
pub fn spawn(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(engine))
}

async fn run(engine: Arc<Engine>) {
    if let Err(e) = engine.store.reload_hook_subs().await {
        tracing::error!(error = %e, "Cannot read the webhook endpoints; events are not written until they are.");
    }
    // Deliveries in flight; `webhooks.concurrency` is read on each pass (a reload applies).
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Told when a delivery ends: after a full take (more may be due), or with every slot
    // busy, the next take waits for a free slot, not for the next poll. (A wake-up can be
    // left over from a delivery that ended while the sender was taking, its slot already
    // counted: it finds every slot busy and waits again for the next to end. Sleeping a poll
    // there drained a backlog at `concurrency` deliveries per poll.)
    let ended = Arc::new(tokio::sync::Notify::new());
    loop {
        let mut full = false;
        let s = engine.settings().webhooks.clone();
        let free = s
            .concurrency
            .max(1)
            .saturating_sub(in_flight.load(Ordering::Acquire));
        if free == 0 {
            full = true;
        }
        // No active endpoint: nothing can be due (the store is not asked).
        if free > 0 && engine.store.hook_subs().any_active() {
            let now = engine.clock.now_ms();
            // An attempt takes at most the timeout to answer and the timeout again to read
            // the first 4 KB of the answer; its record follows.
            let lease = now + (s.timeout * 2 + Duration::from_secs(5)).as_millis() as i64;
            match engine
                .store
                .take_due_hook_deliveries(now, lease, free as i64, &engine.writer)
                .await
            {
                Ok(due) => {
                    full = due.len() == free;
                    for d in due {
                        in_flight.fetch_add(1, Ordering::AcqRel);
                        let (engine, in_flight, ended) =
                            (engine.clone(), in_flight.clone(), ended.clone());
                        tokio::spawn(async move {
                            deliver(&engine, d).await;
                            in_flight.fetch_sub(1, Ordering::AcqRel);
                            ended.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cannot read the due webhook deliveries."),
            }
        }
        if full {
            tokio::select! {
                _ = ended.notified() => {}
                _ = tokio::time::sleep(s.poll) => {}
            }
        } else {
            tokio::time::sleep(s.poll).await;
        }
    }
}

/// What an attempt brought back, for the log and the schedule.
struct Outcome {
    answer: Answer,
    body: String,
    error: Option<String>,
}

/// One attempt of one delivery, recorded.
async fn deliver(engine: &Engine, d: DueDelivery) {
    let ep = match engine.store.hook_endpoint(&d.endpoint_id).await {
        Ok(Some(ep)) if ep.active => ep,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read a webhook endpoint.");
            return;
        }
    };
    let s = engine.settings().webhooks.clone();
    let started = Instant::now();
    let at = engine.clock.now_ms();
    let out = attempt(engine, &ep, &d, at, s.timeout).await;
    let latency_ms = started.elapsed().as_millis() as i64;
    let now = engine.clock.now_ms();
    let verdict = decide(
        &s.schedule,
        d.attempts as u32 + 1,
        out.answer,
        now,
        fastrand::f64(),
    );
    let (state, next_at) = match verdict {
        Verdict::Succeeded => (DeliveryState::Succeeded, now),
        Verdict::RetryAt(t) => (DeliveryState::Pending, t),
        Verdict::Exhausted => (DeliveryState::Exhausted, now),
        Verdict::Failed { .. } => (DeliveryState::Failed, now),
    };
    crate::metrics::metrics().hook_attempts.inc(match state {
        DeliveryState::Pending => "result=\"retry\"",
        DeliveryState::Succeeded => "result=\"succeeded\"",
        DeliveryState::Failed => "result=\"failed\"",
        DeliveryState::Exhausted => "result=\"exhausted\"",
    });
    let record = AttemptRecord {
        delivery_id: d.id,
        endpoint_id: ep.id.clone(),
        event_id: d.event_id.clone(),
        at,
        latency_ms,
        status: out.answer.status,
        body: out.body,
        error: out.error,
        state,
        next_at,
        endpoint_failing_since: ep.failing_since,
    };
    // The attempt, its delivery's move and the endpoint's failure record (only when this
    // attempt changes it) in one transaction.
    if let Err(e) = engine
        .store
        .record_hook_attempts(&[record], &engine.writer)
        .await
    {
        tracing::warn!(error = %e, delivery = d.id, "Cannot record a webhook attempt; it is made again.");
        return;
    }
    let ok = verdict == Verdict::Succeeded;
    let reason = match verdict {
        Verdict::Failed { disable: true } => Some("the endpoint answered 410 Gone".to_string()),
        _ if !ok && disable_now(ep.failing_since, now, s.disable_after) => Some(format!(
            "failing for {} s or more",
            s.disable_after.as_secs()
        )),
        _ => None,
    };
    if let Some(reason) = reason {
        match engine.store.disable_hook_endpoint(&ep, &reason, now).await {
            Ok(true) => {
                tracing::warn!(endpoint = %ep.id, reason = %reason, "A webhook endpoint was disabled.")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "Cannot disable a webhook endpoint."),
        }
    }
}

/// Sign and post the event; never fails (a refusal or an error is an outcome with status 0).
async fn attempt(
    engine: &Engine,
    ep: &HookEndpoint,
    d: &DueDelivery,
    now: i64,
    timeout: Duration,
) -> Outcome {
    let failed = |error: String, refused: bool| Outcome {
        answer: Answer {
            status: 0,
            retry_after: None,
            refused,
        },
        body: String::new(),
        error: Some(error),
    };
    let body = event_body(&EventParts {
        event_type: &d.event_type,
        account: &d.account,
        user_key: d.user_key.as_deref(),
        sequence: d.sequence,
        payload: &d.payload,
        at_ms: d.event_at,
    });
    let ts = now.div_euclid(1000);
    let signature =
        match signature_header(&ep.signing_secrets(now), &d.event_id, ts, body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return failed(e.to_string(), true),
        };
    let caller = engine.outcall.load_full();
    let url = match caller.check_url(&ep.url).await {
        Ok(u) => u,
        Err(Refusal::Guard(why)) => return failed(why, true),
        Err(Refusal::Invalid(why)) => return failed(why, false),
    };
    let req = caller
        .request(reqwest::Method::POST, url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body);
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return failed("timeout".into(), false),
        Err(e) => return failed(format!("request failed: {e}"), false),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::whatsapp::graph_error::parse_retry_after);
    // The first 4 KB of the answer, within what is left of the timeout.
    let mut kept = Vec::new();
    let read = async {
        while kept.len() < LOGGED_BODY {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = LOGGED_BODY - kept.len();
                    kept.extend_from_slice(&c[..c.len().min(room)]);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    Outcome {
        answer: Answer {
            status,
            retry_after,
            refused: false,
        },
        body: String::from_utf8_lossy(&kept).into_owned(),
        error: None,
    }
}
