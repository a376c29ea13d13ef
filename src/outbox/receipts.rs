//! Read receipts: one lane per conversation, the newest receipt only.

use super::*;

/// The bearer for `account`'s Graph API calls, from the settings in force (a reload may
/// rotate it): the account's own token, else `whatsapp.access_token`.
pub fn token_for<'a>(settings: &'a Settings, account: &str) -> &'a SecretString {
    settings
        .account(account)
        .and_then(|a| a.access_token.as_ref())
        .unwrap_or(&settings.whatsapp.access_token)
}

pub(super) type Lane = mpsc::UnboundedSender<(UserKey, Wamid)>;

/// A lane idle this long closes its connection and ends (as the pool's idle connections
/// did): lanes made for a burst do not hold their connections, and the allocator pages
/// around them, for good.
pub(super) const LANE_IDLE: Duration = Duration::from_secs(60);

pub(super) enum LaneDone {
    /// The lane is done with a user's receipt and free again.
    Sent(UserKey, Lane),
    /// The lane idled past [`LANE_IDLE`] and ended.
    Retired(Lane),
}

/// Read receipts go out over lanes of their own: a lane is a task holding one keep-alive
/// connection to the Graph API ([`ReceiptConn`]) that sends one receipt at a time, so a
/// receipt costs no task, pool checkout or hand-over between tasks. Lanes are added while
/// every lane is busy (up to `outbox.max_in_flight`) and end after [`LANE_IDLE`] without
/// work, or with the sender.
pub(super) struct ReceiptLanes {
    pub(super) idle: Vec<Lane>,
    pub(super) busy: usize,
    pub(super) tasks: JoinSet<()>,
    pub(super) done: mpsc::UnboundedReceiver<LaneDone>,
    pub(super) done_tx: mpsc::UnboundedSender<LaneDone>,
}

impl ReceiptLanes {
    pub(super) fn new() -> ReceiptLanes {
        let (done_tx, done) = mpsc::unbounded_channel();
        ReceiptLanes {
            idle: Vec::new(),
            busy: 0,
            tasks: JoinSet::new(),
            done,
            done_tx,
        }
    }

    pub(super) fn send(
        &mut self,
        engine: &Arc<Engine>,
        account: &Arc<AccountSettings>,
        url: &hyper::Uri,
        user: UserKey,
        wamid: Wamid,
    ) -> Option<UserKey> {
        let lane = self.idle.pop().unwrap_or_else(|| {
            let (lane, mut rx) = mpsc::unbounded_channel::<(UserKey, Wamid)>();
            let (engine, account, done, me) = (
                engine.clone(),
                account.clone(),
                self.done_tx.clone(),
                lane.clone(),
            );
            let mut conn = engine.graph.receipt_conn(url);
            self.tasks.spawn(async move {
                loop {
                    match tokio::time::timeout(LANE_IDLE, rx.recv()).await {
                        Ok(Some((user, wamid))) => {
                            send_receipt(&engine, &account, &mut conn, wamid).await;
                            if done.send(LaneDone::Sent(user, me.clone())).is_err() {
                                return;
                            }
                        }
                        // Idle too long: take no more. What raced in is still received
                        // above; then the closed lane ends. (Its task holds a sender of
                        // its own, so only a close ends it.)
                        Err(_) => rx.close(),
                        Ok(None) => {
                            let _ = done.send(LaneDone::Retired(me));
                            return;
                        }
                    }
                }
            });
            lane
        });
        // A lane that retired before its retirement reached `idle` refuses the receipt: it
        // is dropped (receipts are cosmetic) and the user handed back, so that the user's
        // next receipt can go.
        match lane.send((user, wamid)) {
            Ok(()) => {
                self.busy += 1;
                None
            }
            Err(mpsc::error::SendError((user, _))) => Some(user),
        }
    }

    pub(super) fn finished(&mut self, lane: Lane) {
        self.busy = self.busy.saturating_sub(1);
        self.idle.push(lane);
    }
}

/// A read receipt: a few quick attempts, then given up (it is cosmetic).
pub(super) async fn send_receipt(
    engine: &Engine,
    account: &AccountSettings,
    conn: &mut ReceiptConn,
    wamid: Wamid,
) {
    for attempt in 0..3u32 {
        let settings = engine.settings_arc();
        let token = token_for(&settings, &account.phone_number_id);
        match conn.send(token, &wamid).await {
            SendOutcome::Accepted { .. } => {
                metrics()
                    .sends
                    .inc("kind=\"mark_read\",result=\"accepted\",code=\"\"");
                return;
            }
            SendOutcome::Retry { retry_after, .. } => {
                metrics()
                    .sends
                    .inc("kind=\"mark_read\",result=\"retry\",code=\"\"");
                let base = settings.outbox.backoff_base;
                tokio::time::sleep(backoff(base, base * 8, attempt, retry_after)).await;
            }
            SendOutcome::Permanent { code, .. } => {
                metrics().sends.inc(&format!(
                    "kind=\"mark_read\",result=\"failed\",code=\"{}\"",
                    code.unwrap_or(0)
                ));
                return;
            }
        }
    }
}
