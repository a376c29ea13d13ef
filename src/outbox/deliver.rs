//! One send: the hand-over mark, the POST, and what its outcome means for the row.

use super::*;

/// Write an outbox update, retrying while the store is down: a send's outcome is never dropped.
pub(super) async fn record(engine: &Engine, update: OutboxUpdate) {
    let mut delay = Duration::from_millis(100);
    loop {
        match engine.writer.outbox(update.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "Recording a send outcome failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sleep for `d`; true if shutdown came first.
pub(super) async fn cancelled(cancel: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *cancel.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.wait_for(|stop| *stop) => true,
    }
}

/// Make a tier reservation durable before the send; false if shutdown came first.
pub(super) async fn write_tier(
    engine: &Engine,
    gate: &AccountGate,
    w: &TierWrite,
    cancel: &mut watch::Receiver<bool>,
) -> bool {
    let write = GateWrite::TierReach {
        waba: gate.waba.clone(),
        user_key: w.user_key.clone(),
        account: gate.account.clone(),
        at: w.at,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match engine.writer.gate(write.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "Recording a tier reservation failed; retrying before sending.");
                if cancelled(cancel, delay).await {
                    return false;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Meta definitely refused a message: its tier slot and daily unit are free again.
pub(super) async fn refund(engine: &Engine, gate: &AccountGate, job: &Job) {
    let now = engine.clock.now_ms();
    gate.with_gate(|g| {
        let zone = g.settings().zone;
        if zone.day(job.admitted_at) == zone.day(now) {
            g.refund_daily(now);
        }
    });
    if let Some(w) = &job.tier_held {
        gate.with_tier(|t| t.release(w));
        let write = GateWrite::TierRelease {
            waba: gate.waba.clone(),
            user_key: w.user_key.clone(),
            at: w.at,
            previous: w.previous,
        };
        if let Err(e) = engine.writer.gate(write).await {
            // The slot stays taken in the store: conservative.
            tracing::warn!(error = %e, "Releasing a tier reservation failed.");
        }
    }
}

/// How the wait for a send in doubt ended.
pub(super) enum Doubt {
    /// A status webhook settled it (`sent` or `failed`): it is not sent again.
    Settled,
    /// No status came in time: it is sent again.
    Resend,
    /// Shutdown came first.
    Cancelled,
}

/// Wait for a status webhook to settle a send whose request may have reached Meta (the
/// previous process, or this one's attempt that got no answer, made it). Not in a send slot:
/// other conversations go on meanwhile; this one's later messages wait behind it.
pub(super) async fn await_settlement(
    engine: &Engine,
    account: &AccountSettings,
    rec: &OutboxRecord,
    mut cancel: watch::Receiver<bool>,
) -> Doubt {
    // Give the status webhook (which echoes our id) time to settle it before sending again,
    // counted from the send (`updated_at` is the moment it was marked `sending`): Meta's
    // `sent` status comes about a second after it. Time no process answered webhooks does
    // not count (Meta holds its webhooks meanwhile and redelivers them late), and neither
    // does the time the row waited in the queue before it was sent.
    let opened = tokio::select! {
        at = engine.webhooks.since() => at,
        _ = cancel.wait_for(|stop| *stop) => return Doubt::Cancelled,
    };
    let resend_after = engine.settings().outbox.ambiguous_resend_after;
    let wait_until = rec.updated_at.max(opened) + resend_after.as_millis() as i64;
    // Checked now and then while waiting: a status usually comes within seconds.
    let wait = Duration::from_millis((wait_until - engine.clock.now_ms()).max(0) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match engine.store.outbox_state(rec.id).await {
            Ok(Some(state)) if state.is_settled() => {
                metrics().outbox_in_doubt.inc("result=\"settled\"");
                return Doubt::Settled;
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            metrics().outbox_in_doubt.inc("result=\"resent\"");
            tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, "No status came for a send in doubt; sending it again.");
            return Doubt::Resend;
        }
        if cancelled(&mut cancel, left.min(Duration::from_millis(500))).await {
            return Doubt::Cancelled;
        }
    }
}

/// One attempt at one admitted message.
pub(super) async fn deliver(
    engine: &Engine,
    account: &AccountSettings,
    gate: &AccountGate,
    url: &hyper::Uri,
    report: &FailureReport,
    job: Job,
    mut cancel: watch::Receiver<bool>,
) -> Finished {
    let rec = &job.record;
    if let Some(w) = &job.tier_write {
        if !write_tier(engine, gate, w, &mut cancel).await {
            return Finished::Cancelled;
        }
    }
    let message: OutboundMessage = match serde_json::from_str(&rec.message_json) {
        Ok(m) => m,
        Err(e) => {
            fail(
                engine,
                report,
                rec,
                0,
                None,
                format!("stored message does not decode: {e}"),
            )
            .await;
            refund(engine, gate, &job).await;
            return Finished::Settled;
        }
    };
    let body = if rec.kind == OutboxKind::MarkRead {
        message.to_request_body(&rec.user_key, None, None)
    } else {
        let callback = callback_data(rec.id, &rec.user_key);
        message.to_request_body(&rec.user_key, rec.reply_to.as_deref(), Some(&callback))
    };
    if rec.state == OutboxState::Pending {
        // The hand-over: from here a crash leaves the outcome unknown. Awaited, so the mark is
        // durable before the request can leave; the writer batches it with the other sends'
        // marks and the steps it is committing anyway.
        record(
            engine,
            OutboxUpdate::Sending {
                id: rec.id,
                account: rec.account.clone(),
                user_key: rec.user_key.clone(),
                at: engine.clock.now_ms(),
            },
        )
        .await;
    }
    // Taken now, so a send after a reload goes with the rotated token and the new limits.
    let live = engine.settings_arc();
    let settings = &live.outbox;
    let token = token_for(&live, &account.phone_number_id);
    let attempt = job.attempts + 1;
    if let (Some(turn), 0) = (rec.turn, job.attempts) {
        let after = turn.answered_at.elapsed();
        let m = metrics();
        m.bot_after_answer_us.observe(after.as_micros() as u64);
        if let Some(before) = turn.before_call {
            m.bot_turn_us.observe((before + after).as_micros() as u64);
        }
    }
    // The boundary of a campaign's pause: from here the request is the HTTP client's. A pause
    // taken before this point withholds the message; one taken after counts it in flight.
    let started = match rec.campaign {
        Some(campaign) if !gate.with_holds(|h| h.begin_send(campaign)) => {
            return Finished::Withdrawn { campaign };
        }
        Some(campaign) => Some(CampaignSend { gate, campaign }),
        None => None,
    };
    let outcome = engine.graph.send_message(url, token, &body).await;
    drop(started);
    let now = engine.clock.now_ms();
    let judged = verdict(
        outcome,
        Attempt {
            number: attempt,
            kind: rec.kind,
            class: job.class,
        },
        settings,
        fastrand::f64(),
    );
    let code = judged.code.map_or_else(String::new, |c| c.to_string());
    metrics().sends.inc(&format!(
        "kind=\"{}\",result=\"{}\",code=\"{code}\"",
        rec.kind, judged.result
    ));
    if let Some(outcome) = &judged.gate {
        if matches!(outcome, GateOutcome::Throttled { .. }) {
            metrics().gate_throttles.fetch_add(1, Ordering::Relaxed);
        }
        let fx = gate.with_gate(|g| g.on_outcome(now, &rec.user_key, outcome));
        if fx != OutcomeEffects::default() {
            apply_effects(
                &engine.writer,
                gate,
                &fx,
                judged.code.unwrap_or_default(),
                &rec.user_key,
                now,
            )
            .await;
        }
    }
    if let Some(action) = judged.refusal {
        tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, code = %code, action = ?action, "Send refused by the Graph API.");
    }
    match judged.next {
        Next::Sent { wamid } => {
            record(
                engine,
                OutboxUpdate::Sent {
                    id: rec.id,
                    account: rec.account.clone(),
                    user_key: rec.user_key.clone(),
                    wamid,
                    at: now,
                },
            )
            .await;
            Finished::Settled
        }
        Next::Retry {
            code,
            reason,
            delay,
            maybe_sent,
            in_doubt,
        } => {
            tracing::warn!(account = %account.phone_number_id, user = %mask(&rec.user_key), outbox_id = rec.id, attempt, code = ?code, reason = %reason, delay_ms = delay.as_millis() as u64, "Send failed; retrying.");
            let _ = engine
                .writer
                .outbox(OutboxUpdate::Retrying {
                    id: rec.id,
                    account: rec.account.clone(),
                    user_key: rec.user_key.clone(),
                    attempts: attempt as i64,
                    code,
                    detail: reason,
                    at: now,
                })
                .await;
            Finished::Retry {
                attempts: attempt,
                at: now + delay.as_millis() as i64,
                maybe_sent,
                in_doubt_since: in_doubt.then_some(now),
            }
        }
        // Kept: sent once the account is resumed.
        Next::Held => Finished::Held { attempts: attempt },
        Next::Failed {
            code,
            detail,
            refund: refunded,
        } => {
            fail(engine, report, rec, attempt, code, detail).await;
            if refunded {
                refund(engine, gate, &job).await;
            }
            Finished::Settled
        }
    }
}

pub(super) async fn fail(
    engine: &Engine,
    report: &FailureReport,
    rec: &OutboxRecord,
    attempts: u32,
    code: Option<i64>,
    detail: String,
) {
    record(
        engine,
        OutboxUpdate::Failed {
            id: rec.id,
            account: rec.account.clone(),
            user_key: rec.user_key.clone(),
            attempts: attempts as i64,
            code,
            detail: detail.clone(),
            at: engine.clock.now_ms(),
        },
    )
    .await;
    if rec.kind == OutboxKind::Message {
        report(SendFailure {
            user_key: rec.user_key.clone(),
            outbox_id: rec.id,
            code,
            detail,
            message: serde_json::from_str(&rec.message_json).ok(),
        });
    }
}
