//! The per-account decision: may this queued message go now, and if not, until when or why.
//!
//! Pure: no I/O, no clock. Time comes in as unix milliseconds; durable effects come out as
//! values ([`BlockRequest`], [`TierWrite`], a changed [`Control`]) that the sender writes.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::day::{DailyCheck, DailyQuota, Zone};
use super::gcra::Gcra;
use super::tier::{TierDecision, TierLedger, TierWrite};
use crate::config::{AccountSettings, MessagingTier};
pub use crate::domain::SendClass;

/// Account health, as in the CRM seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    #[default]
    Healthy,
    Warning,
    Critical,
}

/// Why sending stopped, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub code: Option<i64>,
    pub reason: String,
    pub since: i64,
}

/// The part of the gate that survives restarts (health, halts, pauses, Meta's tier).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// From `phone_number_quality_update`.
    #[serde(default)]
    pub quality: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_event: Option<String>,
    /// From `account_update` (violations, restrictions).
    #[serde(default)]
    pub account: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_event: Option<String>,
    /// Meta's current messaging limit (`current_limit`), when it told us one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_tier: Option<String>,
    /// Business-initiated sending halted (131048, 131031, 368, an account restriction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Stop>,
    /// All sending paused until resumed (190 and other credential/permission errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Stop>,
}

impl Control {
    pub fn health(&self) -> Health {
        let stopped = if self.halted.is_some() || self.paused.is_some() {
            Health::Critical
        } else {
            Health::Healthy
        };
        self.quality.max(self.account).max(stopped)
    }
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// The account's messages-per-second limiter.
    Throughput,
    /// Cooling off after a 130429.
    CoolOff,
    /// Pair rate: this user had their burst.
    PairRate,
    /// Meta said 131056 for this user.
    RecipientBackoff,
    /// Today's cap is reached.
    DailyLimit,
    /// Waiting for the next durable block of today's quota.
    DailyReservation,
    /// Every tier slot is taken.
    Tier,
    /// Sending paused (190): re-checked until resumed.
    Paused,
    /// Business-initiated sending halted: re-checked until resumed.
    Halted,
}

/// Who else a wait holds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only this user's queue.
    User,
    /// Every business-initiated message (service replies still go).
    Business,
    /// Everything of the account.
    Account,
}

impl WaitReason {
    pub fn scope(&self) -> Scope {
        match self {
            // A full tier holds only users not yet reached: one already reached in the
            // window costs no slot, so its messages keep going.
            WaitReason::PairRate | WaitReason::RecipientBackoff | WaitReason::Tier => Scope::User,
            WaitReason::Halted => Scope::Business,
            WaitReason::Throughput
            | WaitReason::CoolOff
            | WaitReason::DailyLimit
            | WaitReason::DailyReservation
            | WaitReason::Paused => Scope::Account,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            WaitReason::Throughput => "throughput",
            WaitReason::CoolOff => "cool_off",
            WaitReason::PairRate => "pair_rate",
            WaitReason::RecipientBackoff => "recipient_backoff",
            WaitReason::DailyLimit => "daily_limit",
            WaitReason::DailyReservation => "daily_reservation",
            WaitReason::Tier => "tier",
            WaitReason::Paused => "paused",
            WaitReason::Halted => "halted",
        }
    }
}

/// The verdict on one queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now. A `tier` write must be durable before the POST.
    Admit { tier: Option<TierWrite> },
    /// Not before `at` (unix ms).
    RetryAt { at: i64, reason: WaitReason },
    /// Never, as things stand: fail the message with this reason.
    Refuse { reason: String },
}

/// How one attempt ended, as the gate needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// 130429 or HTTP 429: the number's throughput.
    Throttled {
        retry_after: Option<Duration>,
    },
    /// 131056: this user's pair rate.
    PairLimited,
    /// Any other transient failure.
    Transient,
    /// 131048, 131031, 368.
    Halt {
        code: Option<i64>,
        reason: String,
    },
    /// 190 and other credential/permission errors.
    Pause {
        code: Option<i64>,
        reason: String,
    },
    /// 131026.
    Unreachable,
    /// Any other definite refusal.
    Rejected,
}

/// Effects of an outcome the sender must carry out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeEffects {
    /// The control changed: write it.
    pub control_changed: bool,
    /// Alert: business-initiated sending was halted now.
    pub halted_now: bool,
    /// Mark this user unreachable (durably).
    pub unreachable: bool,
}

/// After a 130429: the rate is halved (down to 1/s) for a cool-off, then doubles back every
/// `RECOVERY_MS` without another 130429.
const RECOVERY_MS: i64 = 10_000;
const COOL_OFF_BASE_MS: i64 = 1_000;
const COOL_OFF_MAX_MS: i64 = 60_000;
/// 131056: wait at least this, growing ×4 per repeat, up to the cap.
const PAIR_BACKOFF_MIN_MS: i64 = 6_000;
const PAIR_BACKOFF_MAX_MS: i64 = 600_000;
/// How long a paused or halted account waits before it looks again (resume also wakes it).
const STOPPED_RECHECK_MS: i64 = 1_000;
/// Business-initiated messages to a user marked unreachable are refused for this long.
pub const UNREACHABLE_MS: i64 = 7 * 24 * 3_600_000;

/// The static part, from the account's settings.
#[derive(Debug, Clone)]
pub struct GateSettings {
    pub messages_per_second: u32,
    /// Cells the throughput limiter lets through at once.
    pub throughput_burst: u32,
    pub pair_rate_interval: Duration,
    pub pair_rate_burst: u32,
    pub daily_limit: Option<u64>,
    /// Sends reserved per durable write of the daily count.
    pub daily_block: u64,
    pub tier: MessagingTier,
    pub zone: Zone,
}

impl GateSettings {
    pub fn from_account(a: &AccountSettings) -> Result<GateSettings, String> {
        let mps = a.messages_per_second.max(1);
        Ok(GateSettings {
            messages_per_second: mps,
            // 100 ms worth: smooth enough that no second holds much more than the rate.
            throughput_burst: (mps / 10).max(1),
            pair_rate_interval: a.pair_rate_interval,
            pair_rate_burst: a.pair_rate_burst.max(1),
            daily_limit: a.daily_limit,
            // A crash wastes at most ~5 % of the day (and never more than 2 s of sending).
            daily_block: a
                .daily_limit
                .map_or(1, |l| (l / 20).clamp(1, u64::from(mps) * 2)),
            tier: a.messaging_tier,
            zone: Zone::parse(&a.timezone)?,
        })
    }
}

/// One account's gate.
#[derive(Debug, Clone)]
pub struct Gate {
    settings: GateSettings,
    throughput: Gcra,
    throughput_tat: Option<i64>,
    /// Fraction of the configured rate in force (1.0 unless throttled).
    rate_factor: f64,
    cool_off_until: i64,
    recover_at: i64,
    pair: Option<Gcra>,
    pair_tat: HashMap<String, i64>,
    /// user → (not before, how many 131056 in a row)
    recipient_backoff: HashMap<String, (i64, u32)>,
    daily: DailyQuota,
    control: Control,
    /// user → when it was marked unreachable.
    unreachable: HashMap<String, i64>,
    decisions: u64,
    /// Admissions per second over the last seconds: (unix second, count), ring by second.
    admitted: [(i64, u32); RATE_SECONDS],
}

/// Seconds the measured send rate is averaged over.
const RATE_SECONDS: usize = 10;

/// What `GET …/usage` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GateUsage {
    pub day: Option<String>,
    pub sent_today: u64,
    pub daily_limit: Option<u64>,
    pub daily_reserved: u64,
    pub configured_mps: u32,
    /// The rate in force (lower than configured after a 130429).
    pub current_mps: f64,
    /// Messages admitted per second, averaged over the last 10 full seconds.
    pub measured_mps: f64,
    pub cool_off_until: Option<i64>,
    pub recipients_backing_off: usize,
    pub unreachable_contacts: usize,
    pub health: Health,
    pub control: Control,
}

impl Gate {
    pub fn new(settings: GateSettings) -> Gate {
        let throughput = Gcra::per_second(
            f64::from(settings.messages_per_second),
            settings.throughput_burst,
        );
        let pair = (!settings.pair_rate_interval.is_zero()).then(|| {
            Gcra::new(
                settings.pair_rate_interval.as_micros() as i64,
                settings.pair_rate_burst,
            )
        });
        let daily = DailyQuota::new(settings.daily_limit, settings.daily_block, settings.zone);
        Gate {
            settings,
            throughput,
            throughput_tat: None,
            rate_factor: 1.0,
            cool_off_until: 0,
            recover_at: 0,
            pair,
            pair_tat: HashMap::new(),
            recipient_backoff: HashMap::new(),
            daily,
            control: Control::default(),
            unreachable: HashMap::new(),
            decisions: 0,
            admitted: [(0, 0); RATE_SECONDS],
        }
    }

    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    /// New limits from a reload: the rate, the pair rate, the daily limit and the configured
    /// tier. What the gate learned (a 130429 slow-down, backoffs, per-user cells, today's
    /// count) stays. The time zone does not change on a running gate.
    pub fn retune(&mut self, new: GateSettings) {
        let zone = self.settings.zone;
        let old = std::mem::replace(&mut self.settings, GateSettings { zone, ..new });
        let s = self.settings.clone();
        if old.messages_per_second != s.messages_per_second
            || old.throughput_burst != s.throughput_burst
        {
            self.set_rate(self.rate_factor);
        }
        if old.pair_rate_interval != s.pair_rate_interval
            || old.pair_rate_burst != s.pair_rate_burst
        {
            self.pair = (!s.pair_rate_interval.is_zero())
                .then(|| Gcra::new(s.pair_rate_interval.as_micros() as i64, s.pair_rate_burst));
            if self.pair.is_none() {
                self.pair_tat.clear();
            }
        }
        self.daily.retune(s.daily_limit, s.daily_block);
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn set_control(&mut self, control: Control) {
        self.control = control;
    }

    pub fn daily(&mut self) -> &mut DailyQuota {
        &mut self.daily
    }

    pub fn restore_unreachable(&mut self, users: Vec<(String, i64)>) {
        self.unreachable.extend(users);
    }

    /// The tier Meta last told us, else the configured one.
    pub fn tier(&self) -> MessagingTier {
        self.control
            .meta_tier
            .as_deref()
            .and_then(parse_meta_tier)
            .unwrap_or(self.settings.tier)
    }

    pub fn current_mps(&self) -> f64 {
        f64::from(self.settings.messages_per_second) * self.rate_factor
    }

    /// Admissions per second over the last `RATE_SECONDS` full seconds.
    pub fn measured_mps(&self, now_ms: i64) -> f64 {
        let sec = now_ms.div_euclid(1000);
        let n: u32 = self
            .admitted
            .iter()
            .filter(|(s, _)| *s < sec && *s >= sec - RATE_SECONDS as i64)
            .map(|(_, c)| c)
            .sum();
        f64::from(n) / RATE_SECONDS as f64
    }

    fn set_rate(&mut self, factor: f64) {
        let floor = 1.0 / f64::from(self.settings.messages_per_second);
        self.rate_factor = factor.clamp(floor, 1.0);
        self.throughput = Gcra::per_second(self.current_mps(), self.settings.throughput_burst);
    }

    fn recover(&mut self, now_ms: i64) {
        while self.rate_factor < 1.0 && now_ms >= self.recover_at {
            self.set_rate(self.rate_factor * 2.0);
            self.recover_at += RECOVERY_MS;
        }
    }

    /// The verdict on sending `user`'s next message of `class` at `now_ms`. `counted`: the
    /// message was admitted before (a retry): it does not count against the day or the tier
    /// again.
    pub fn decide(
        &mut self,
        now_ms: i64,
        user: &str,
        class: SendClass,
        counted: bool,
        tier: &mut TierLedger,
    ) -> Decision {
        self.decisions += 1;
        if self.decisions % 4096 == 0 {
            self.forget_idle(now_ms);
        }
        let retry = |at: i64, reason| Decision::RetryAt { at, reason };
        if self.control.paused.is_some() {
            return retry(now_ms + STOPPED_RECHECK_MS, WaitReason::Paused);
        }
        if class == SendClass::Business {
            if self.control.halted.is_some() {
                return retry(now_ms + STOPPED_RECHECK_MS, WaitReason::Halted);
            }
            if let Some(at) = self.unreachable.get(user) {
                if now_ms - at < UNREACHABLE_MS {
                    return Decision::Refuse {
                        reason: "contact marked unreachable (131026): business-initiated message not sent".into(),
                    };
                }
            }
        }
        if now_ms < self.cool_off_until {
            return retry(self.cool_off_until, WaitReason::CoolOff);
        }
        self.recover(now_ms);
        if let Some((until, _)) = self.recipient_backoff.get(user) {
            if now_ms < *until {
                return retry(*until, WaitReason::RecipientBackoff);
            }
        }
        let now_us = now_ms.saturating_mul(1000);
        let pair_tat = self.pair_tat.get(user).copied();
        if let Some(pair) = &self.pair {
            if let Err(at_us) = pair.check(pair_tat, now_us) {
                return retry(ceil_ms(at_us), WaitReason::PairRate);
            }
        }
        if let Err(at_us) = self.throughput.check(self.throughput_tat, now_us) {
            return retry(ceil_ms(at_us), WaitReason::Throughput);
        }
        if !counted {
            match self.daily.check(now_ms) {
                DailyCheck::Free => {}
                DailyCheck::NeedBlock => {
                    // The sender is writing the next block; it wakes the queue when done.
                    return retry(now_ms + 1_000, WaitReason::DailyReservation);
                }
                DailyCheck::Exhausted { next_day_at } => {
                    return retry(next_day_at, WaitReason::DailyLimit);
                }
            }
        }
        let mut tier_write = None;
        if !counted && class == SendClass::Business {
            tier.set_limit(self.tier());
            match tier.reserve(user, now_ms) {
                TierDecision::Reserved(w) => tier_write = w,
                TierDecision::Full { retry_at } => return retry(retry_at, WaitReason::Tier),
            }
        }
        // Admitted: take the cells.
        if let Some(pair) = &self.pair {
            let tat = pair.consume(pair_tat, now_us);
            // The key is copied for a new recipient only (BENCHMARKS.md, governor vs the
            // hand-written GCRA).
            match pair_tat.and_then(|_| self.pair_tat.get_mut(user)) {
                Some(t) => *t = tat,
                None => {
                    self.pair_tat.insert(user.to_string(), tat);
                }
            }
        }
        self.throughput_tat = Some(self.throughput.consume(self.throughput_tat, now_us));
        if !counted {
            self.daily.consume(now_ms);
        }
        let sec = now_ms.div_euclid(1000);
        let slot = &mut self.admitted[sec.rem_euclid(RATE_SECONDS as i64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += 1;
        Decision::Admit { tier: tier_write }
    }

    /// Learn from how an attempt to `user` ended.
    pub fn on_outcome(&mut self, now_ms: i64, user: &str, outcome: &Outcome) -> OutcomeEffects {
        let mut fx = OutcomeEffects::default();
        match outcome {
            Outcome::Accepted => {
                self.recipient_backoff.remove(user);
            }
            Outcome::Throttled { retry_after } => {
                let throttles = if self.rate_factor < 1.0 {
                    (1.0 / self.rate_factor).log2().round() as u32 + 1
                } else {
                    1
                };
                let base = (COOL_OFF_BASE_MS << (throttles - 1).min(6)).min(COOL_OFF_MAX_MS);
                let wait = retry_after.map_or(0, |d| d.as_millis() as i64).max(base);
                self.cool_off_until = self.cool_off_until.max(now_ms + wait);
                self.recover_at = self.cool_off_until + RECOVERY_MS;
                self.set_rate(self.rate_factor / 2.0);
            }
            Outcome::PairLimited => {
                let floor =
                    (self.settings.pair_rate_interval.as_millis() as i64).max(PAIR_BACKOFF_MIN_MS);
                let entry = self
                    .recipient_backoff
                    .entry(user.to_string())
                    .or_insert((0, 0));
                let wait = floor
                    .saturating_mul(4i64.saturating_pow(entry.1))
                    .min(PAIR_BACKOFF_MAX_MS);
                *entry = (now_ms + wait, entry.1 + 1);
            }
            Outcome::Transient | Outcome::Rejected => {}
            Outcome::Halt { code, reason } => {
                if self.control.halted.is_none() {
                    self.control.halted = Some(Stop {
                        code: *code,
                        reason: reason.clone(),
                        since: now_ms,
                    });
                    fx.control_changed = true;
                    fx.halted_now = true;
                }
            }
            Outcome::Pause { code, reason } => {
                if self.control.paused.is_none() {
                    self.control.paused = Some(Stop {
                        code: *code,
                        reason: reason.clone(),
                        since: now_ms,
                    });
                    fx.control_changed = true;
                }
            }
            Outcome::Unreachable => {
                self.unreachable.insert(user.to_string(), now_ms);
                fx.unreachable = true;
            }
        }
        fx
    }

    /// A message admitted today was definitely refused: its daily unit is free again.
    pub fn refund_daily(&mut self, now_ms: i64) {
        self.daily.unconsume(now_ms);
    }

    /// Lift a pause and a halt (admin resume); account-event health is cleared too.
    pub fn resume(&mut self) -> bool {
        let changed = self.control.paused.is_some()
            || self.control.halted.is_some()
            || self.control.account != Health::Healthy;
        self.control.paused = None;
        self.control.halted = None;
        self.control.account = Health::Healthy;
        self.control.account_event = None;
        changed
    }

    /// Forget per-user state that no longer holds anything back.
    fn forget_idle(&mut self, now_ms: i64) {
        let now_us = now_ms.saturating_mul(1000);
        self.pair_tat.retain(|_, tat| !Gcra::is_idle(*tat, now_us));
        self.recipient_backoff
            .retain(|_, (until, _)| *until + PAIR_BACKOFF_MAX_MS > now_ms);
        self.unreachable
            .retain(|_, at| now_ms - *at < UNREACHABLE_MS);
    }

    pub fn usage(&mut self, now_ms: i64) -> GateUsage {
        self.recover(now_ms.max(self.cool_off_until));
        let sent_today = self.daily.used(now_ms);
        GateUsage {
            day: Some(self.settings.zone.day(now_ms).to_string()),
            sent_today,
            daily_limit: self.daily.limit(),
            daily_reserved: self.daily.reserved(),
            configured_mps: self.settings.messages_per_second,
            current_mps: self.current_mps(),
            measured_mps: self.measured_mps(now_ms),
            cool_off_until: (self.cool_off_until > now_ms).then_some(self.cool_off_until),
            recipients_backing_off: self
                .recipient_backoff
                .values()
                .filter(|(until, _)| *until > now_ms)
                .count(),
            unreachable_contacts: self.unreachable.len(),
            health: self.control.health(),
            control: self.control.clone(),
        }
    }
}

fn ceil_ms(us: i64) -> i64 {
    (us + 999).div_euclid(1000)
}

/// Meta's `current_limit` (`TIER_250`, `TIER_1K`, …, `TIER_UNLIMITED`) as a tier.
pub fn parse_meta_tier(s: &str) -> Option<MessagingTier> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_prefix("TIER_").unwrap_or(&t);
    Some(match t {
        "UNLIMITED" => MessagingTier::Unlimited,
        "50" => MessagingTier::Limited(50),
        "250" => MessagingTier::Limited(250),
        "1K" => MessagingTier::Limited(1_000),
        "2K" => MessagingTier::Limited(2_000),
        "10K" => MessagingTier::Limited(10_000),
        "100K" => MessagingTier::Limited(100_000),
        other => MessagingTier::Limited(other.parse().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_305_600_000;

    fn settings() -> GateSettings {
        GateSettings {
            messages_per_second: 20,
            throughput_burst: 2,
            pair_rate_interval: Duration::from_secs(6),
            pair_rate_burst: 3,
            daily_limit: None,
            daily_block: 10,
            tier: MessagingTier::Limited(250),
            zone: Zone::parse("UTC").unwrap(),
        }
    }

    fn ledger() -> TierLedger {
        TierLedger::new(MessagingTier::Limited(250))
    }

    fn admit(g: &mut Gate, t: &mut TierLedger, now: i64, user: &str, class: SendClass) -> Decision {
        let d = g.decide(now, user, class, false, t);
        if let Decision::RetryAt {
            reason: WaitReason::DailyReservation,
            ..
        } = d
        {
            let req = g.daily().want_block(now).expect("a block to reserve");
            g.daily().block_written(&req);
            return g.decide(now, user, class, false, t);
        }
        d
    }

    #[test]
    fn throughput_paces_every_user() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        let mut sent = Vec::new();
        let mut now = T0;
        let mut user = 0;
        while sent.len() < 100 {
            match admit(&mut g, &mut t, now, &format!("u{user}"), SendClass::Service) {
                Decision::Admit { .. } => {
                    sent.push(now);
                    user += 1;
                }
                Decision::RetryAt { at, reason } => {
                    assert_eq!(reason, WaitReason::Throughput);
                    assert!(at > now);
                    now = at;
                }
                other => panic!("{other:?}"),
            }
        }
        for (i, start) in sent.iter().enumerate() {
            let n = sent[i..].iter().take_while(|t| **t < start + 1000).count();
            assert!(n <= 22, "{n} sends in the second from {start}");
        }
    }

    #[test]
    fn pair_rate_holds_one_user_and_lets_others_flow() {
        let mut s = settings();
        s.messages_per_second = 1000;
        s.throughput_burst = 100;
        let mut g = Gate::new(s);
        let mut t = ledger();
        for _ in 0..3 {
            assert!(matches!(
                admit(&mut g, &mut t, T0, "busy", SendClass::Service),
                Decision::Admit { .. }
            ));
        }
        let d = admit(&mut g, &mut t, T0, "busy", SendClass::Service);
        assert_eq!(
            d,
            Decision::RetryAt {
                at: T0 + 6_000,
                reason: WaitReason::PairRate
            }
        );
        assert_eq!(WaitReason::PairRate.scope(), Scope::User);
        assert!(matches!(
            admit(&mut g, &mut t, T0, "other", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 6_000, "busy", SendClass::Service),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn new_limits_take_effect_and_keep_what_the_gate_counted() {
        let mut s = settings();
        s.messages_per_second = 1000;
        s.throughput_burst = 1000;
        s.daily_limit = Some(3);
        let mut g = Gate::new(s.clone());
        let mut t = ledger();
        for u in ["a", "b", "c"] {
            assert!(matches!(
                admit(&mut g, &mut t, T0, u, SendClass::Service),
                Decision::Admit { .. }
            ));
        }
        assert!(matches!(
            admit(&mut g, &mut t, T0, "d", SendClass::Service),
            Decision::RetryAt {
                reason: WaitReason::DailyLimit,
                ..
            }
        ));
        // A higher limit: the 3 already sent still count.
        let mut raised = s.clone();
        raised.daily_limit = Some(4);
        raised.pair_rate_interval = Duration::ZERO;
        raised.zone = Zone::parse("Asia/Jakarta").unwrap();
        g.retune(raised);
        assert_eq!(g.settings().zone, s.zone, "the zone stays");
        assert!(matches!(
            admit(&mut g, &mut t, T0, "d", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0, "e", SendClass::Service),
            Decision::RetryAt {
                reason: WaitReason::DailyLimit,
                ..
            }
        ));
        assert_eq!(g.usage(T0).sent_today, 4);
        // The pair rate is off now: one user may go again at once.
        let mut more = g.settings().clone();
        more.daily_limit = Some(100);
        g.retune(more);
        for _ in 0..5 {
            assert!(matches!(
                admit(&mut g, &mut t, T0, "a", SendClass::Service),
                Decision::Admit { .. }
            ));
        }
        // A lower rate paces from the next message.
        let mut slow = g.settings().clone();
        slow.messages_per_second = 1;
        slow.throughput_burst = 1;
        g.retune(slow);
        assert_eq!(g.usage(T0).configured_mps, 1);
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 100, "f", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 200, "g", SendClass::Service),
            Decision::RetryAt {
                reason: WaitReason::Throughput,
                ..
            }
        ));
    }

    #[test]
    fn zero_pair_interval_disables_pair_rate() {
        let mut s = settings();
        s.messages_per_second = 1000;
        s.throughput_burst = 100;
        s.pair_rate_interval = Duration::ZERO;
        let mut g = Gate::new(s);
        let mut t = ledger();
        for _ in 0..50 {
            assert!(matches!(
                admit(&mut g, &mut t, T0, "u", SendClass::Service),
                Decision::Admit { .. }
            ));
        }
    }

    #[test]
    fn the_daily_limit_holds_until_the_next_day() {
        let mut s = settings();
        s.messages_per_second = 1000;
        s.throughput_burst = 1000;
        s.pair_rate_interval = Duration::ZERO;
        s.daily_limit = Some(5);
        let mut g = Gate::new(s);
        let mut t = ledger();
        for i in 0..5 {
            assert!(matches!(
                admit(&mut g, &mut t, T0, &i.to_string(), SendClass::Service),
                Decision::Admit { .. }
            ));
        }
        assert_eq!(
            admit(&mut g, &mut t, T0 + 5, "x", SendClass::Service),
            Decision::RetryAt {
                at: T0 + 86_400_000,
                reason: WaitReason::DailyLimit
            }
        );
        // A retry of an admitted message is not counted again.
        assert!(matches!(
            g.decide(T0 + 5, "0", SendClass::Service, true, &mut t),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 86_400_000, "x", SendClass::Service),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn the_tier_counts_business_initiated_users_only() {
        let mut s = settings();
        s.messages_per_second = 1000;
        s.throughput_burst = 1000;
        s.tier = MessagingTier::Limited(250);
        let mut g = Gate::new(s);
        let mut t = ledger();
        let mut admitted = 0;
        for i in 0..1000 {
            match admit(&mut g, &mut t, T0, &format!("b{i}"), SendClass::Business) {
                Decision::Admit { tier } => {
                    assert!(tier.is_some());
                    admitted += 1;
                }
                Decision::RetryAt { reason, .. } => assert_eq!(reason, WaitReason::Tier),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, 250);
        assert!(matches!(
            admit(&mut g, &mut t, T0, "service-user", SendClass::Service),
            Decision::Admit { tier: None }
        ));
        // Meta lowered the tier: the lower one holds.
        g.set_control(Control {
            meta_tier: Some("TIER_50".into()),
            ..Control::default()
        });
        assert_eq!(g.tier(), MessagingTier::Limited(50));
    }

    #[test]
    fn a_130429_cools_off_and_halves_the_rate_which_then_recovers() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        g.on_outcome(
            T0,
            "u",
            &Outcome::Throttled {
                retry_after: Some(Duration::from_secs(3)),
            },
        );
        assert_eq!(g.current_mps(), 10.0);
        assert_eq!(
            admit(&mut g, &mut t, T0 + 10, "v", SendClass::Service),
            Decision::RetryAt {
                at: T0 + 3_000,
                reason: WaitReason::CoolOff
            }
        );
        g.on_outcome(T0 + 10, "u", &Outcome::Throttled { retry_after: None });
        assert_eq!(g.current_mps(), 5.0);
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 3_000, "v", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert_eq!(g.current_mps(), 5.0);
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 60_000, "w", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert_eq!(g.current_mps(), 20.0);
    }

    #[test]
    fn a_131056_delays_that_recipient_only() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        g.on_outcome(T0, "slow", &Outcome::PairLimited);
        assert_eq!(
            admit(&mut g, &mut t, T0, "slow", SendClass::Service),
            Decision::RetryAt {
                at: T0 + 6_000,
                reason: WaitReason::RecipientBackoff
            }
        );
        assert!(matches!(
            admit(&mut g, &mut t, T0, "fast", SendClass::Service),
            Decision::Admit { .. }
        ));
        g.on_outcome(T0 + 6_000, "slow", &Outcome::PairLimited);
        assert_eq!(
            admit(&mut g, &mut t, T0 + 6_000, "slow", SendClass::Service),
            Decision::RetryAt {
                at: T0 + 6_000 + 24_000,
                reason: WaitReason::RecipientBackoff
            }
        );
    }

    #[test]
    fn a_halt_stops_business_initiated_and_marks_health_critical() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        let fx = g.on_outcome(
            T0,
            "u",
            &Outcome::Halt {
                code: Some(131048),
                reason: "spam rate limit".into(),
            },
        );
        assert!(fx.control_changed && fx.halted_now);
        assert_eq!(g.control().health(), Health::Critical);
        assert!(matches!(
            admit(&mut g, &mut t, T0, "b", SendClass::Business),
            Decision::RetryAt {
                reason: WaitReason::Halted,
                ..
            }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0, "s", SendClass::Service),
            Decision::Admit { .. }
        ));
        assert!(g.resume());
        assert_eq!(g.control().health(), Health::Healthy);
        assert!(matches!(
            admit(&mut g, &mut t, T0 + 100, "b", SendClass::Business),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn a_190_pauses_everything_until_resumed() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        g.on_outcome(
            T0,
            "u",
            &Outcome::Pause {
                code: Some(190),
                reason: "token expired".into(),
            },
        );
        assert!(matches!(
            admit(&mut g, &mut t, T0, "s", SendClass::Service),
            Decision::RetryAt {
                reason: WaitReason::Paused,
                ..
            }
        ));
        g.resume();
        assert!(matches!(
            admit(&mut g, &mut t, T0, "s", SendClass::Service),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn an_unreachable_contact_gets_no_business_initiated_message() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        assert!(g.on_outcome(T0, "gone", &Outcome::Unreachable).unreachable);
        assert!(matches!(
            admit(&mut g, &mut t, T0, "gone", SendClass::Business),
            Decision::Refuse { .. }
        ));
        assert!(matches!(
            admit(&mut g, &mut t, T0, "gone", SendClass::Service),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn the_measured_rate_averages_the_last_ten_seconds() {
        let mut g = Gate::new(settings());
        let mut t = ledger();
        let mut now = T0;
        let mut sent = 0;
        while now < T0 + 10_000 {
            match admit(&mut g, &mut t, now, &format!("u{sent}"), SendClass::Service) {
                Decision::Admit { .. } => sent += 1,
                Decision::RetryAt { at, .. } => now = at,
                other => panic!("{other:?}"),
            }
        }
        let measured = g.measured_mps(T0 + 10_000);
        assert!((19.0..=21.0).contains(&measured), "{measured}");
        assert_eq!(g.measured_mps(T0 + 30_000), 0.0);
    }

    #[test]
    fn meta_tiers_parse() {
        assert_eq!(
            parse_meta_tier("TIER_1K"),
            Some(MessagingTier::Limited(1000))
        );
        assert_eq!(
            parse_meta_tier("TIER_UNLIMITED"),
            Some(MessagingTier::Unlimited)
        );
        assert_eq!(
            parse_meta_tier("TIER_250"),
            Some(MessagingTier::Limited(250))
        );
        assert_eq!(parse_meta_tier("nonsense"), None);
    }
}
