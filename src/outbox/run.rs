//! The sender's loop: admit queued messages through the gate, start their sends, settle
//! what they report, withdraw what a pause or cancel takes back.

use super::*;

pub(super) async fn run(
    engine: Arc<Engine>,
    account: Arc<AccountSettings>,
    report: FailureReport,
    resume_through: i64,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let max_in_flight = engine.settings().outbox.max_in_flight;
    let url = match engine.graph.messages_url(&account.phone_number_id) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            tracing::error!(error = %e, account = %account.phone_number_id, "No Graph API URL for this account; it cannot send.");
            return;
        }
    };
    let mut q = Queues::default();
    // Tells sends waiting in a backoff to give up at shutdown (the row stays `sending` and is
    // settled or resent by the next process).
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut in_flight: JoinSet<(UserKey, Finished)> = JoinSet::new();
    // Sends in doubt waiting for their status (they hold no send slot).
    let mut doubts: JoinSet<(UserKey, Doubt)> = JoinSet::new();
    let mut receipts = Receipts::default();
    let mut lanes = ReceiptLanes::new();
    let mut stopping: Option<oneshot::Sender<()>> = None;

    // The gate first (its counts and holds are in the store), then the rows left from
    // before the last stop, oldest first.
    let gate = loop {
        // The limits in force now (a reload may have changed them since the account started).
        let limits = engine
            .settings()
            .account(&account.phone_number_id)
            .cloned()
            .unwrap_or_else(|| (*account).clone());
        match engine
            .gates
            .open(&engine.store, &limits, engine.clock.now_ms())
            .await
        {
            Ok(g) => {
                // A reload between reading the limits and registering the gate did not find
                // it: take the limits in force once more now that it is registered.
                if let Some(now) = engine.settings().account(&account.phone_number_id) {
                    if let Ok(limits) = crate::sendgate::GateSettings::from_account(now) {
                        g.with_gate(|g| g.retune(limits));
                    }
                }
                break g;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading the send gate failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match engine
            .store
            .open_outbox(&account.phone_number_id, resume_through)
            .await
        {
            Ok(rows) => {
                let n = rows.len();
                let mut in_doubt = 0;
                for rec in rows {
                    // Marked at its hand-over to the HTTP client: it may have reached Meta.
                    let ambiguous = rec.state == OutboxState::Sending;
                    in_doubt += usize::from(ambiguous);
                    q.push(rec, ambiguous);
                }
                metrics()
                    .outbox_pending
                    .fetch_add(n as i64, Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(account = %account.phone_number_id, pending = n, in_doubt, "Resuming unsent outbox rows.");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading the outbox failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    // Durable blocks of the daily quota, reserved ahead of need.
    let mut blocks: JoinSet<(BlockRequest, bool)> = JoinSet::new();
    let mut block_retry_at = 0i64;
    // The campaign holds last looked at (a pause or resume changes their version).
    let mut holds_seen = u64::MAX;
    // Rows set aside for a paused campaign, never tried: marked unsent in the store.
    let mut set_aside: Vec<(UserKey, i64)> = Vec::new();

    loop {
        let mut wake_at: Option<i64> = None;
        let now = engine.clock.now_ms();
        if gate.retuned.swap(false, Ordering::SeqCst) {
            q.unpark_gate_waits();
        }
        let holds_now = gate.with_holds(|h| h.version());
        if holds_now != holds_seen {
            holds_seen = holds_now;
            let released = q.release_aside(|c| gate.with_holds(|h| h.is_withdrawn(c)));
            if released > 0 {
                tracing::info!(account = %account.phone_number_id, released, "Messages of a resumed campaign queued again.");
            }
        }
        if stopping.is_none() {
            if blocks.is_empty() && now >= block_retry_at {
                if let Some(req) = gate.with_gate(|g| g.daily().want_block(now)) {
                    let (engine, account_id) = (engine.clone(), account.phone_number_id.clone());
                    blocks.spawn(async move {
                        let write = GateWrite::Daily {
                            account: account_id,
                            day: req.day.to_string(),
                            reserved: req.reserved as i64,
                            used: req.used as i64,
                            at: engine.clock.now_ms(),
                        };
                        let ok = engine.writer.gate(write).await.is_ok();
                        (req, ok)
                    });
                }
            }
            q.unpark_due(now);
            let mut business_wait: Option<i64> = None;
            while in_flight.len() < max_in_flight {
                let user = if let Some(u) = q.ready[0].pop_front() {
                    u
                } else if business_wait.is_none() {
                    match q.ready[1].pop_front() {
                        Some(u) => u,
                        None => break,
                    }
                } else {
                    break;
                };
                let Some(head) = q.head_mut(&user) else {
                    q.scheduled.remove(&user);
                    continue;
                };
                if let Some(c) = head.record.campaign {
                    if gate.with_holds(|h| h.is_withdrawn(c)) {
                        set_aside.extend(q.set_aside_head(user, c));
                        continue;
                    }
                }
                let Some(head) = q.head_mut(&user) else {
                    continue;
                };
                if head.ambiguous {
                    // In doubt: wait for its status outside the send slots.
                    let record = head.record.clone();
                    q.sending.insert(user.clone());
                    let (engine, account, cancel) =
                        (engine.clone(), account.clone(), cancel_rx.clone());
                    doubts.spawn(async move {
                        let doubt = await_settlement(&engine, &account, &record, cancel).await;
                        (user, doubt)
                    });
                    continue;
                }
                let (class, counted) = (head.class, head.counted);
                match gate.decide(now, &user, class, counted) {
                    Decision::Admit { tier } => {
                        let m = metrics();
                        match class {
                            SendClass::Service => &m.gate_admitted_service,
                            SendClass::Business => &m.gate_admitted_business,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                        if !head.counted {
                            head.counted = true;
                            head.admitted_at = now;
                            head.tier = tier.clone();
                        }
                        let job = Job {
                            record: head.record.clone(),
                            class,
                            attempts: head.attempts,
                            admitted_at: head.admitted_at,
                            tier_write: tier,
                            tier_held: head.tier.clone(),
                        };
                        q.sending.insert(user.clone());
                        let (engine, account, report, cancel, url, gate) = (
                            engine.clone(),
                            account.clone(),
                            report.clone(),
                            cancel_rx.clone(),
                            url.clone(),
                            gate.clone(),
                        );
                        in_flight.spawn(async move {
                            let finished =
                                deliver(&engine, &account, &gate, &url, &report, job, cancel).await;
                            (user, finished)
                        });
                    }
                    Decision::RetryAt { at, reason } => {
                        metrics()
                            .gate_waits
                            .inc(&format!("reason=\"{}\"", reason.as_str()));
                        match reason.scope() {
                            Scope::User => {
                                q.park(user, at, true);
                            }
                            Scope::Business => {
                                q.ready_front(user);
                                business_wait = Some(at);
                            }
                            Scope::Account => {
                                q.ready_front(user);
                                wake_at = Some(at);
                                break;
                            }
                        }
                    }
                    Decision::Refuse { reason } => {
                        metrics().gate_refusals.inc("reason=\"unreachable\"");
                        let record = head.record.clone();
                        q.sending.insert(user.clone());
                        let (engine, report) = (engine.clone(), report.clone());
                        in_flight.spawn(async move {
                            fail(&engine, &report, &record, 0, Some(131026), reason).await;
                            (user, Finished::Settled)
                        });
                    }
                }
            }
            if !set_aside.is_empty() {
                mark_unsent(
                    &engine,
                    &account.phone_number_id,
                    &mut q,
                    std::mem::take(&mut set_aside),
                )
                .await;
            }
            if !q.aside.is_empty() {
                let dropped = q.take_aside(|c| gate.with_holds(|h| h.is_cancelled(c)));
                if !dropped.is_empty() {
                    settle_cancelled(&engine, &account.phone_number_id, &mut q, dropped).await;
                }
            }
            if !q.ready[1].is_empty() {
                wake_at = min_opt(wake_at, business_wait);
            }
            wake_at = min_opt(wake_at, q.next_park());
            while lanes.busy < max_in_flight {
                let Some((user, wamid)) = receipts.next() else {
                    break;
                };
                if let Some(user) = lanes.send(&engine, &account, &url, user, wamid) {
                    receipts.finished(user);
                }
            }
        } else if in_flight.is_empty() && doubts.is_empty() {
            // A block being reserved lands first; then give back what was reserved of today
            // and not used.
            while let Some(joined) = blocks.join_next().await {
                if let Ok((req, ok)) = joined {
                    gate.with_gate(|g| {
                        if ok {
                            g.daily().block_written(&req)
                        } else {
                            g.daily().block_failed(&req)
                        }
                    });
                }
            }
            if let Some(req) = gate.with_gate(|g| g.daily().release()) {
                let write = GateWrite::Daily {
                    account: account.phone_number_id.clone(),
                    day: req.day.to_string(),
                    reserved: req.reserved as i64,
                    used: req.used as i64,
                    at: engine.clock.now_ms(),
                };
                if let Err(e) = engine.writer.gate(write).await {
                    tracing::warn!(error = %e, "Could not give back the unused daily reservation (it stays counted).");
                }
            }
            if let Some(done) = stopping.take() {
                let _ = done.send(());
            }
            return;
        }
        // Waits are re-checked at least every second: the clock may be moved (tests) and a
        // day or a tier slot may come free.
        let sleep_for = wake_at.map(|at| Duration::from_millis((at - now).clamp(1, 1_000) as u64));
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Enqueue(records)) => {
                    let mut dup = 0;
                    for rec in records {
                        if !q.push(rec, false) {
                            dup += 1;
                        }
                    }
                    if dup > 0 {
                        metrics().outbox_pending.fetch_sub(dup, Ordering::Relaxed);
                    }
                }
                Some(Cmd::MarkRead(user, wamid)) => receipts.push(user, wamid),
                Some(Cmd::Shutdown(done)) => {
                    receipts = Receipts::default();
                    lanes = ReceiptLanes::new();
                    let _ = cancel_tx.send(true);
                    // Rows still queued were never attempted: the next start sends them at
                    // once instead of waiting for a status that cannot come.
                    let unsent = q.unsent();
                    if !unsent.is_empty() {
                        let _ = engine.writer.outbox(OutboxUpdate::Unsent {
                            account: account.phone_number_id.clone(),
                            rows: unsent,
                        }).await;
                    }
                    stopping = Some(done);
                }
                None => return,
            },
            _ = gate.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::ZERO)), if sleep_for.is_some() => {}
            Some(joined) = blocks.join_next() => {
                if let Ok((req, ok)) = joined {
                    gate.with_gate(|g| if ok {
                        g.daily().block_written(&req)
                    } else {
                        g.daily().block_failed(&req)
                    });
                    if !ok {
                        tracing::warn!("Reserving today's send quota failed; retrying in 1 s.");
                        block_retry_at = engine.clock.now_ms() + 1_000;
                    }
                }
            }
            Some(done) = lanes.done.recv() => match done {
                LaneDone::Sent(user, lane) => {
                    lanes.finished(lane);
                    receipts.finished(user);
                }
                LaneDone::Retired(lane) => lanes.idle.retain(|l| !l.same_channel(&lane)),
            },
            Some(joined) = doubts.join_next() => {
                let Ok((user, doubt)) = joined else { continue };
                match doubt {
                    Doubt::Settled => {
                        metrics().outbox_pending.fetch_sub(1, Ordering::Relaxed);
                        q.finished_head(user);
                    }
                    Doubt::Resend => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.ambiguous = false;
                            // Marked `sending` again at its hand-over: a crash after it waits
                            // from that send.
                            head.record.state = OutboxState::Pending;
                        }
                        q.ready_front(user);
                    }
                    Doubt::Cancelled => {
                        q.sending.remove(&user);
                    }
                }
            }
            Some(joined) = in_flight.join_next() => {
                let Ok((user, finished)) = joined else { continue };
                match finished {
                    Finished::Settled => {
                        metrics().outbox_pending.fetch_sub(1, Ordering::Relaxed);
                        q.finished_head(user);
                    }
                    Finished::Retry { attempts, at, maybe_sent, in_doubt_since } => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.attempts = attempts;
                            head.record.state = OutboxState::Sending;
                            head.ambiguous = in_doubt_since.is_some();
                            if let Some(since) = in_doubt_since {
                                head.record.updated_at = since;
                            }
                            if maybe_sent {
                                head.counted = false;
                            }
                        }
                        q.park(user, at, false);
                    }
                    Finished::Held { attempts } => {
                        q.sending.remove(&user);
                        if let Some(head) = q.head_mut(&user) {
                            head.attempts = attempts;
                            head.record.state = OutboxState::Sending;
                            head.ambiguous = false;
                        }
                        q.ready_front(user);
                    }
                    Finished::Withdrawn { campaign } => {
                        set_aside.extend(q.set_aside_head(user, campaign));
                    }
                    Finished::Cancelled => {
                        q.sending.remove(&user);
                    }
                }
            }
        }
    }
}

/// Rows set aside for a paused campaign were never tried: in the store they are `pending`
/// again, so a restart sends them at once (once resumed) instead of waiting for a status that
/// cannot come; in memory too, so that their send marks them `sending` first.
pub(super) async fn mark_unsent(
    engine: &Engine,
    account: &str,
    q: &mut Queues,
    rows: Vec<(UserKey, i64)>,
) {
    let n = rows.len();
    let ids: HashSet<i64> = rows.iter().map(|(_, id)| *id).collect();
    match engine
        .writer
        .outbox(OutboxUpdate::Unsent {
            account: account.to_string().into(),
            rows,
        })
        .await
    {
        Ok(()) => {
            for queued in q.aside.values_mut().flatten() {
                if ids.contains(&queued.record.id) {
                    queued.record.state = OutboxState::Pending;
                }
            }
            tracing::info!(withheld = n, "Messages of a paused campaign withheld.");
        }
        // They stay `sending`: a restart treats them as in doubt (as any queued row).
        Err(e) => tracing::warn!(error = %e, "Marking withheld campaign messages unsent failed."),
    }
}

/// Messages withheld for a cancelled campaign are settled `cancelled` (never sent, no dead
/// letter). If that cannot be written they stay aside and are tried again at the next turn.
pub(super) async fn settle_cancelled(
    engine: &Engine,
    account: &str,
    q: &mut Queues,
    dropped: Vec<Queued>,
) {
    let rows: Vec<(UserKey, i64)> = dropped
        .iter()
        .map(|queued| (queued.record.user_key.clone(), queued.record.id))
        .collect();
    let update = OutboxUpdate::Cancelled {
        account: account.to_string().into(),
        rows,
        at: engine.clock.now_ms(),
    };
    match engine.writer.outbox(update).await {
        Ok(()) => {
            for queued in &dropped {
                q.known.remove(&queued.record.id);
            }
            metrics()
                .outbox_pending
                .fetch_sub(dropped.len() as i64, Ordering::Relaxed);
            tracing::info!(
                dropped = dropped.len(),
                "Messages of a cancelled campaign dropped unsent."
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "Settling a cancelled campaign's messages failed; trying again.");
            for queued in dropped {
                let campaign = queued.record.campaign.unwrap_or_default();
                q.aside.entry(campaign).or_default().push(queued);
            }
        }
    }
}

/// A campaign send handed to the HTTP client, until its request ends (or is dropped).
pub(super) struct CampaignSend<'a> {
    pub(super) gate: &'a AccountGate,
    pub(super) campaign: i64,
}

impl Drop for CampaignSend<'_> {
    fn drop(&mut self) {
        self.gate.with_holds(|h| h.end_send(self.campaign));
    }
}

pub(super) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
