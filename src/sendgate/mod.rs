//! SendGate: every outbound message of an account passes its gate before the POST.
//!
//! The decision core ([`Gate`], [`TierLedger`], [`DailyQuota`], [`Gcra`]) is pure: time is an
//! argument and durable effects come out as values. This module holds the glue: one
//! [`AccountGate`] per running account (its gate plus the tier ledger it shares with the
//! other numbers of its business portfolio), loaded from the store when the account's sender
//! starts, and the application of Meta's account webhooks to it.
//!
//! Limits, in the order a message meets them: paused (190) → halted (business-initiated
//! only) → unreachable contact (business-initiated only) → 130429 cool-off → 131056 backoff
//! of that recipient → pair rate → throughput → daily cap → messaging tier.

mod day;
mod gate;
mod gcra;
mod health;
mod holds;
mod news;
mod tier;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub use day::{BlockRequest, DailyCheck, DailyQuota, Zone};
pub use gate::{
    parse_meta_tier, Control, Decision, Gate, GateSettings, GateUsage, Health, Outcome,
    OutcomeEffects, Scope, SendClass, Stop, WaitReason, UNREACHABLE_MS,
};
pub use gcra::Gcra;
pub use health::{apply as apply_signal, event_phone, interpret, AccountSignal};
pub use holds::{CampaignHolds, Hold, Withdrawal};
pub use news::control_events;
pub use tier::{TierDecision, TierLedger, TierWrite, REFRESH_MS, WINDOW_MS};

use crate::config::AccountSettings;
use crate::store::{GateWrite, Store, StoreError, WriterHandle};
use crate::whatsapp::event::AccountEvent;

#[derive(Debug, thiserror::Error)]
pub enum SendGateError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("account settings: {0}")]
    Settings(String),
}

/// One running account's gate. The std mutexes are held only for a decision (never across
/// an await).
pub struct AccountGate {
    pub account: crate::domain::AccountId,
    /// The business portfolio the tier is counted for.
    pub waba: String,
    pub gate: Mutex<Gate>,
    pub tier: Arc<Mutex<TierLedger>>,
    /// Wakes the account's sender (a resume, a health change, new limits).
    pub wake: tokio::sync::Notify,
    /// New limits came with a reload: the sender looks again at the conversations it parked
    /// for a limit (pair rate, tier) instead of waiting out the old limit's time.
    pub retuned: std::sync::atomic::AtomicBool,
    /// Paused campaigns, whose queued messages the sender withholds.
    pub holds: Mutex<CampaignHolds>,
    /// The control as last recorded: what `account.health` and `account.halted` are told
    /// against.
    recorded: Mutex<Control>,
}

pub const ASSUME_LOCK_NOT_POISONED: &str = "the gate lock is never held across a panic";

impl AccountGate {
    /// A gate for `account`, its control as `gate` holds it taken as recorded.
    pub fn new(
        account: crate::domain::AccountId,
        waba: String,
        gate: Gate,
        tier: Arc<Mutex<TierLedger>>,
    ) -> AccountGate {
        let recorded = Mutex::new(gate.control().clone());
        AccountGate {
            account,
            waba,
            gate: Mutex::new(gate),
            tier,
            wake: tokio::sync::Notify::new(),
            retuned: std::sync::atomic::AtomicBool::new(false),
            holds: Mutex::new(CampaignHolds::default()),
            recorded,
        }
    }

    /// Decide for one message (locks the gate, then the tier ledger).
    pub fn decide(&self, now_ms: i64, user: &str, class: SendClass, counted: bool) -> Decision {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let mut tier = self.tier.lock().unwrap_or_else(|e| e.into_inner());
        gate.decide(now_ms, user, class, counted, &mut tier)
    }

    pub fn with_gate<T>(&self, f: impl FnOnce(&mut Gate) -> T) -> T {
        f(&mut self.gate.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn with_tier<T>(&self, f: impl FnOnce(&mut TierLedger) -> T) -> T {
        f(&mut self.tier.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn with_holds<T>(&self, f: impl FnOnce(&mut CampaignHolds) -> T) -> T {
        f(&mut self.holds.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A campaign paused: the sender withholds its messages not yet handed to the HTTP
    /// client (it is woken to set them aside). Returns what may still reach Meta.
    pub fn withdraw_campaign(&self, campaign: i64) -> Withdrawal {
        let w = self.with_holds(|h| h.withdraw(campaign));
        self.wake.notify_one();
        w
    }

    /// A campaign cancelled: the sender settles its messages not yet handed to the HTTP
    /// client as `cancelled`. Returns what may still reach Meta.
    pub fn cancel_campaign(&self, campaign: i64) -> Withdrawal {
        let w = self.with_holds(|h| h.cancel(campaign));
        self.wake.notify_one();
        w
    }

    /// A campaign resumed: the sender queues its withheld messages again.
    pub fn release_campaign(&self, campaign: i64) {
        if self.with_holds(|h| h.release(campaign)) {
            self.wake.notify_one();
        }
    }

    /// Record the current control, with the webhook events of its move since the last
    /// record (returns once committed; on an error it is as if nothing was recorded).
    pub async fn record_control(
        &self,
        writer: &WriterHandle,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let control = self.with_gate(|g| g.control().clone());
        let before = self
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        writer
            .gate(control_write(&self.account, &before, &control, now_ms))
            .await?;
        *self.recorded.lock().unwrap_or_else(|e| e.into_inner()) = control;
        Ok(())
    }

    /// Usage for the admin API.
    pub fn usage(&self, now_ms: i64) -> serde_json::Value {
        let (usage, tier_limit) = self.with_gate(|g| (g.usage(now_ms), g.tier()));
        let tier_used = self.with_tier(|t| t.used(now_ms));
        serde_json::json!({
            "usage": usage,
            "tier": {
                "waba": self.waba,
                "limit": tier_limit.limit(),
                "label": tier_limit.to_string(),
                "users_reached_24h": tier_used,
            },
        })
    }
}

/// The gates of this process's running accounts, and the tier ledgers of their portfolios.
#[derive(Default)]
pub struct GateRegistry {
    accounts: RwLock<HashMap<String, Arc<AccountGate>>>,
    tiers: tokio::sync::Mutex<HashMap<String, Arc<Mutex<TierLedger>>>>,
}

/// The key the tier is counted under: the waba, or the number alone when none is configured.
pub fn waba_key(account: &AccountSettings) -> String {
    if account.waba_id.is_empty() {
        format!("number:{}", account.phone_number_id)
    } else {
        account.waba_id.clone()
    }
}

impl GateRegistry {
    pub fn get(&self, account: &str) -> Option<Arc<AccountGate>> {
        self.accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned()
    }

    /// A reload changed the account's limits: the running gate takes them (what it learned,
    /// today's count and the control stay). False when the account's gate is not open (its
    /// sender reads the settings in force when it opens it).
    pub fn retune(&self, account: &str, limits: GateSettings) -> bool {
        let Some(ag) = self.get(account) else {
            return false;
        };
        ag.with_gate(|g| g.retune(limits));
        ag.retuned.store(true, std::sync::atomic::Ordering::SeqCst);
        ag.wake.notify_one();
        true
    }

    /// Build an account's gate from the store and register it (replacing an older one).
    pub async fn open(
        &self,
        store: &Store,
        account: &AccountSettings,
        now_ms: i64,
    ) -> Result<Arc<AccountGate>, SendGateError> {
        let settings = GateSettings::from_account(account).map_err(SendGateError::Settings)?;
        let zone = settings.zone;
        let mut gate = Gate::new(settings);
        if let Some(json) = store.account_gate(&account.phone_number_id).await? {
            match serde_json::from_str::<Control>(&json) {
                Ok(c) => gate.set_control(c),
                Err(e) => {
                    tracing::warn!(error = %e, account = %account.phone_number_id, "Stored gate control does not decode; starting from healthy.")
                }
            }
        }
        if account.daily_limit.is_some() {
            let day = zone.day(now_ms);
            if let Some((reserved, _)) = store
                .daily_usage(&account.phone_number_id, &day.to_string())
                .await?
            {
                gate.daily().restore(day, reserved.max(0) as u64);
            }
        }
        gate.restore_unreachable(
            store
                .unreachable_contacts(&account.phone_number_id, now_ms - UNREACHABLE_MS)
                .await?,
        );
        let withheld = store.withheld_campaigns(&account.phone_number_id).await?;
        let waba = waba_key(account);
        let tier = {
            let mut tiers = self.tiers.lock().await;
            match tiers.get(&waba) {
                Some(t) => t.clone(),
                None => {
                    let mut ledger = TierLedger::new(gate.tier());
                    let since = now_ms - WINDOW_MS - REFRESH_MS;
                    ledger.restore(store.tier_reach(&waba, since).await?, now_ms);
                    let t = Arc::new(Mutex::new(ledger));
                    tiers.insert(waba.clone(), t.clone());
                    t
                }
            }
        };
        let ag = Arc::new(AccountGate::new(
            account.phone_number_id.clone(),
            waba,
            gate,
            tier,
        ));
        ag.with_holds(|h| h.restore(withheld.iter().map(hold)));
        self.accounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.phone_number_id.clone().into(), ag.clone());
        // A webhook handled while this was loading wrote to the store (the gate was not
        // registered yet): read those once more now that it is.
        let loaded = ag.with_gate(|g| g.control().clone());
        if let Some(json) = store.account_gate(&account.phone_number_id).await? {
            if let Ok(c) = serde_json::from_str::<Control>(&json) {
                if c != loaded {
                    ag.with_gate(|g| g.set_control(c));
                }
            }
        }
        *ag.recorded.lock().unwrap_or_else(|e| e.into_inner()) =
            ag.with_gate(|g| g.control().clone());
        let late = store
            .unreachable_contacts(&account.phone_number_id, now_ms - UNREACHABLE_MS)
            .await?;
        ag.with_gate(|g| g.restore_unreachable(late));
        // A campaign paused or cancelled while this was loading (it found no gate to withdraw
        // from).
        let withheld = store.withheld_campaigns(&account.phone_number_id).await?;
        ag.with_holds(|h| h.restore(withheld.iter().map(hold)));
        Ok(ag)
    }

    /// Apply one of Meta's account webhooks to the accounts it concerns, durably.
    pub async fn on_account_event(
        &self,
        accounts: &[AccountSettings],
        store: &Store,
        writer: &WriterHandle,
        ev: &AccountEvent,
        now_ms: i64,
    ) {
        let Some(signal) = interpret(ev) else {
            return;
        };
        if let AccountSignal::Template {
            name,
            language,
            status,
            reason,
        } = &signal
        {
            tracing::info!(template = %name, language = %language, status = %status, "Template state changed.");
            let write = GateWrite::Template {
                waba: ev.waba_id.clone(),
                name: name.clone(),
                language: language.clone(),
                status: status.clone(),
                reason: reason.clone(),
                at: now_ms,
            };
            if let Err(e) = writer.gate(write).await {
                tracing::warn!(error = %e, "Recording a template state failed.");
            }
            return;
        }
        let phone = event_phone(ev).map(|p| p.trim_start_matches('+').to_string());
        let targets: Vec<&AccountSettings> = match (&ev.phone_number_id, &phone) {
            (Some(id), _) => accounts
                .iter()
                .filter(|a| &a.phone_number_id == id)
                .collect(),
            (None, Some(p)) if accounts.iter().any(|a| a.display_phone_number == *p) => accounts
                .iter()
                .filter(|a| a.display_phone_number == *p)
                .collect(),
            _ => accounts
                .iter()
                .filter(|a| a.waba_id == ev.waba_id)
                .collect(),
        };
        for a in targets {
            let ag = if let Some(ag) = self.get(&a.phone_number_id) {
                ag
            } else {
                // Not running (yet): change the stored control, which its gate loads.
                update_stored_control(store, writer, &a.phone_number_id, now_ms, |c| {
                    apply_signal(c, &signal, now_ms)
                })
                .await;
                // Opened meanwhile, after its last read of the store: it hears of it here.
                match self.get(&a.phone_number_id) {
                    Some(ag) => ag,
                    None => continue,
                }
            };
            let (changed, halted) = ag.with_gate(|g| {
                let mut c = g.control().clone();
                let was_halted = c.halted.is_some();
                let changed = apply_signal(&mut c, &signal, now_ms);
                let halted = !was_halted && c.halted.is_some();
                g.set_control(c);
                (changed, halted)
            });
            if halted {
                crate::metrics::metrics()
                    .gate_halts
                    .inc(&format!("code=\"{}\"", ev.field));
                tracing::error!(account = %a.phone_number_id, field = %ev.field, "Business-initiated sending halted by an account event.");
            }
            if changed {
                let health = ag.with_gate(|g| g.control().health());
                tracing::warn!(account = %a.phone_number_id, field = %ev.field, health = ?health, "Account health changed.");
                if let Err(e) = ag.record_control(writer, now_ms).await {
                    tracing::warn!(error = %e, "Recording account health failed.");
                }
                ag.wake.notify_one();
            }
        }
    }

    /// An error Meta reported for one of our messages in a status webhook.
    pub async fn on_status_error(
        &self,
        store: &Store,
        writer: &WriterHandle,
        account: &str,
        user_key: Option<&str>,
        code: i64,
        now_ms: i64,
    ) {
        let Some(outcome) = outcome_for_code(code, "reported in a status webhook") else {
            return;
        };
        let user = user_key.unwrap_or("");
        let ag = if let Some(ag) = self.get(account) {
            ag
        } else {
            // Not running (yet): record what its gate loads at start.
            match &outcome {
                Outcome::Unreachable if !user.is_empty() => {
                    let w = GateWrite::Unreachable {
                        account: account.to_string().into(),
                        user_key: user.to_string().into(),
                        code: Some(code),
                        at: now_ms,
                    };
                    if let Err(e) = writer.gate(w).await {
                        tracing::warn!(error = %e, "Recording an unreachable contact failed.");
                    }
                }
                Outcome::Halt { code, reason } | Outcome::Pause { code, reason } => {
                    let halt = matches!(outcome, Outcome::Halt { .. });
                    let stop = Stop {
                        code: *code,
                        reason: reason.clone(),
                        since: now_ms,
                    };
                    update_stored_control(store, writer, account, now_ms, |c| {
                        let slot = if halt { &mut c.halted } else { &mut c.paused };
                        let changed = slot.is_none();
                        slot.get_or_insert(stop);
                        changed
                    })
                    .await;
                }
                _ => {}
            }
            // The gate may have opened while that write was on its way, after it read the
            // store once more: then it hears of this here. (If it opens later, its read
            // comes after this write.)
            match self.get(account) {
                Some(ag) => ag,
                None => return,
            }
        };
        let fx = ag.with_gate(|g| g.on_outcome(now_ms, user, &outcome));
        apply_effects(writer, &ag, &fx, code, user, now_ms).await;
    }
}

/// Change an account's stored control (its gate is not running): `f` says whether it changed.
async fn update_stored_control(
    store: &Store,
    writer: &WriterHandle,
    account: &str,
    now_ms: i64,
    f: impl FnOnce(&mut Control) -> bool,
) {
    let stored = match store.account_gate(account).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, account = %account, "Gate change not recorded: store unavailable.");
            return;
        }
    };
    let before: Control = stored
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let mut c = before.clone();
    if f(&mut c) {
        let write = control_write(&account.to_string().into(), &before, &c, now_ms);
        if let Err(e) = writer.gate(write).await {
            tracing::warn!(error = %e, "Recording the gate control failed.");
        }
    }
}

/// The durable form of a control, with the events of its move from `before`.
fn control_write(
    account: &crate::domain::AccountId,
    before: &Control,
    control: &Control,
    now_ms: i64,
) -> GateWrite {
    GateWrite::Control {
        account: account.clone(),
        state_json: serde_json::to_string(control).unwrap_or_else(|_| "{}".into()),
        at: now_ms,
        events: control_events(account.as_str(), before, control, now_ms),
    }
}

/// The gate's view of an error code Meta reported (None: nothing for the gate to do).
pub fn outcome_for_code(code: i64, context: &str) -> Option<Outcome> {
    Some(match code {
        130429 => Outcome::Throttled { retry_after: None },
        131056 => Outcome::PairLimited,
        131026 => Outcome::Unreachable,
        131048 | 131031 | 368 => Outcome::Halt {
            code: Some(code),
            reason: format!("Graph API error {code} {context}"),
        },
        190 => Outcome::Pause {
            code: Some(code),
            reason: format!("Graph API error {code} {context}"),
        },
        _ => return None,
    })
}

/// Make an outcome's effects durable and visible (metrics, logs, wake-up).
pub async fn apply_effects(
    writer: &WriterHandle,
    ag: &AccountGate,
    fx: &OutcomeEffects,
    code: i64,
    user: &str,
    now_ms: i64,
) {
    let m = crate::metrics::metrics();
    if fx.halted_now {
        m.gate_halts.inc(&format!("code=\"{code}\""));
        tracing::error!(account = %ag.account, code, "Business-initiated sending halted; health critical. Resume with POST /admin/v1/accounts/{{id}}/resume once fixed.");
    }
    if fx.control_changed {
        if !fx.halted_now {
            m.gate_pauses.inc(&format!("code=\"{code}\""));
            tracing::error!(account = %ag.account, code, "All sending paused until resumed (POST /admin/v1/accounts/{{id}}/resume).");
        }
        if let Err(e) = ag.record_control(writer, now_ms).await {
            tracing::warn!(error = %e, "Recording the gate control failed.");
        }
    }
    if fx.unreachable && !user.is_empty() {
        m.gate_unreachable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let w = GateWrite::Unreachable {
            account: ag.account.clone(),
            user_key: user.to_string().into(),
            code: Some(code),
            at: now_ms,
        };
        if let Err(e) = writer.gate(w).await {
            tracing::warn!(error = %e, "Recording an unreachable contact failed.");
        }
    }
}

/// A withheld campaign as the store gives it: (id, cancelled).
fn hold(&(id, cancelled): &(i64, bool)) -> (i64, Hold) {
    (
        id,
        if cancelled {
            Hold::Cancelled
        } else {
            Hold::Paused
        },
    )
}
