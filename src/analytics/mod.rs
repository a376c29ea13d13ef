//! Analytics: per-account snapshots by local day, week and month, kept incrementally. Pure:
//! this module folds rows into counters and rolls days up into periods; the store reads the
//! rows and keeps the snapshots (store/analytics.rs), a task folds every few seconds
//! (ingress/analytics_fold.rs), the admin API answers (ingress/analytics.rs).
//!
//! # How the snapshots are kept
//!
//! Nothing is added to the message path: the conversation writer's group commit writes what it
//! wrote before (plus one row per handoff or release, which are rare). A folder reads, every
//! [`FOLD_EVERY_MS`], only the rows added or changed since its last pass — the inbox
//! (messages in, statuses), the outbox (messages out), the flow steps, the handoff log, the
//! orders (by id); the chatbot sessions and the paid payments (by the time they changed:
//! they are updated in place) — folds them into one [`Snapshot`] per account and local day
//! (the day in the account's `timezone`, as the daily send limit counts it:
//! [`crate::domain::Zone::day`]), and writes the days, what it carries between passes
//! ([`Mark`]s) and its new positions in ONE transaction. A crash between passes folds the
//! same rows again from the old positions; a commit moves them. No counter row is touched by
//! the message path, so several PostgreSQL writers never wait on one another for it.
//!
//! Ids from a sequence can commit out of order on PostgreSQL (several writers; a rolled-back
//! or conflicting insert leaves a hole for good). A source stops at a hole until it has been
//! seen for [`GAP_WAIT_MS`] or the rows after it are older than [`GAP_OLD_MS`]; the sources
//! read by time read only up to [`GRACE_MS`] ago and remember what they counted, so a row
//! read twice counts once. Freshness: a snapshot includes what committed up to about
//! [`GRACE_MS`] plus [`FOLD_EVERY_MS`] ago (10 s), and on PostgreSQL a hole can hold a source
//! back [`GAP_WAIT_MS`] more.
//!
//! Weeks (ISO, from Monday) and months are sums of their days, but for the distinct contacts
//! (not additive): each (period, contact) is kept once per day, week and month and counted
//! as it is first inserted; the median first response is kept as a histogram per day
//! ([`hist`], within 9 %) that weeks and months merge. Rates are computed at query time.
//! Money is exact ([`rust_decimal::Decimal`]) per currency.
//!
//! # What each figure means
//!
//! - `messages_in`: customers' messages received; `messages_out`: messages queued to them.
//! - `unique_contacts`: distinct contacts who wrote in the period; `new_contacts`: those of
//!   them first seen that day (`contacts.first_seen_at`).
//! - `sent`/`delivered`/`read`/`failed`: Meta's statuses, by the day they arrived.
//! - `first_responses` and the median first response: from a customer's message that waits
//!   for an answer to the next reply in the 24 h window (not a campaign message), counted on
//!   the day the customer wrote.
//! - `handoffs`, `releases`, `agent_ms` (time with an agent, counted on the day it ended).
//! - `flows_started`, `flows_completed` (reached its end, or handed on by a jump),
//!   `flows_abandoned` (left before its end: another flow started, or the customer came back
//!   only after its `session_timeout`), `flows_failed` (stopped by an error or the runaway
//!   guard), each on the day the session ended.
//! - `bot_turns`, `bot_tokens_in`, `bot_tokens_out`, `bot_cost_micros` (millionths of the
//!   providers' cost unit), on the day they happened.
//! - The campaign funnel: `campaign_queued` (messages campaigns handed to conversations),
//!   `campaign_sent`/`delivered`/`read`/`failed` (their statuses), `campaign_replied`
//!   (recipients who wrote within 72 h of one).
//! - `orders` (created) and per currency the orders' total, the revenue (payments paid), what
//!   refunds gave back (`refunded`, on the day a refund was accepted; given back again the
//!   day it fails, if it does) and the net (`revenue - refunded`).

mod fold;
pub mod hist;
pub mod period;

use std::collections::BTreeMap;

use rust_decimal::Decimal;

pub use fold::{fold, Event, Folded, Mark, MarkKey, MarkKind, Row, Visit, Zones};
pub use hist::Histogram;
pub use period::{parse_date, roll_up, widen, Period, PeriodRow, MAX_RANGE_DAYS};

/// How often the folder runs.
pub const FOLD_EVERY_MS: i64 = 2_000;
/// The sources read by time read up to this long ago.
pub const GRACE_MS: i64 = 8_000;
/// A hole in a source's ids is passed once seen this long (a transaction that will not commit).
pub const GAP_WAIT_MS: i64 = 5_000;
/// ... or at once when the rows after it are older than this.
pub const GAP_OLD_MS: i64 = 60_000;
/// A campaign message's recipient who writes within this long replied to it.
pub const REPLY_WINDOW_MS: i64 = 72 * 3_600_000;

macro_rules! metrics {
    ($($variant:ident = $column:literal,)*) => {
        /// Every counter of a snapshot; `column` is its name in the store and the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Metric { $($variant,)* }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            pub fn column(self) -> &'static str {
                match self { $(Metric::$variant => $column,)* }
            }
        }
    };
}

metrics! {
    MessagesIn = "messages_in",
    MessagesOut = "messages_out",
    UniqueContacts = "unique_contacts",
    NewContacts = "new_contacts",
    Sent = "sent",
    Delivered = "delivered",
    Read = "read",
    Failed = "failed",
    FirstResponses = "first_responses",
    Handoffs = "handoffs",
    Releases = "releases",
    AgentMs = "agent_ms",
    FlowsStarted = "flows_started",
    FlowsCompleted = "flows_completed",
    FlowsAbandoned = "flows_abandoned",
    FlowsFailed = "flows_failed",
    BotTurns = "bot_turns",
    BotTokensIn = "bot_tokens_in",
    BotTokensOut = "bot_tokens_out",
    BotCostMicros = "bot_cost_micros",
    CampaignQueued = "campaign_queued",
    CampaignSent = "campaign_sent",
    CampaignDelivered = "campaign_delivered",
    CampaignRead = "campaign_read",
    CampaignFailed = "campaign_failed",
    CampaignReplied = "campaign_replied",
    Orders = "orders",
    PaymentsPaid = "payments_paid",
}

/// One value per [`Metric`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters([i64; Metric::ALL.len()]);

impl Default for Counters {
    fn default() -> Self {
        Counters([0; Metric::ALL.len()])
    }
}

impl Counters {
    pub fn get(&self, m: Metric) -> i64 {
        self.0[m as usize]
    }

    pub fn set(&mut self, m: Metric, v: i64) {
        self.0[m as usize] = v;
    }

    pub fn bump(&mut self, m: Metric, by: i64) {
        self.0[m as usize] = self.0[m as usize].saturating_add(by);
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }
}

/// Money of one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Money {
    /// The totals of the orders created.
    pub ordered: Decimal,
    /// What the payments paid brought in.
    pub revenue: Decimal,
    /// What refunds gave back (accepted by the gateway or completed), counted on the day
    /// the refund changed; `revenue - refunded` is the net.
    pub refunded: Decimal,
}

/// The figures of one day, or of a period as the sum of its days.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub counters: Counters,
    pub first_response: Histogram,
    /// By currency.
    pub money: BTreeMap<String, Money>,
}

impl Snapshot {
    /// Add `other`'s figures to these.
    pub fn add(&mut self, other: &Snapshot) {
        for m in Metric::ALL {
            self.counters.bump(*m, other.counters.get(*m));
        }
        self.first_response.merge(&other.first_response);
        for (currency, money) in &other.money {
            let mine = self.money.entry(currency.clone()).or_default();
            mine.ordered += money.ordered;
            mine.revenue += money.revenue;
            mine.refunded += money.refunded;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_zero() && self.first_response.is_empty() && self.money.is_empty()
    }

    /// `of` / `sent`, rounded to 4 places; None when nothing was sent.
    pub fn rate(&self, of: Metric, sent: Metric) -> Option<f64> {
        let base = self.counters.get(sent);
        (base > 0)
            .then(|| (self.counters.get(of) as f64 / base as f64 * 10_000.0).round() / 10_000.0)
    }

    /// The chatbots' cost in the providers' unit.
    pub fn bot_cost(&self) -> Decimal {
        Decimal::new(self.counters.get(Metric::BotCostMicros), 6).normalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up_and_rates_divide() {
        let mut a = Snapshot::default();
        a.counters.set(Metric::Sent, 3);
        a.counters.set(Metric::Delivered, 2);
        a.counters.set(Metric::BotCostMicros, 1_250_000);
        a.money.insert(
            "IDR".into(),
            Money {
                ordered: Decimal::new(50_000, 0),
                revenue: Decimal::ZERO,
                refunded: Decimal::ZERO,
            },
        );
        let mut b = a.clone();
        b.add(&a);
        assert_eq!(b.counters.get(Metric::Sent), 6);
        assert_eq!(b.money["IDR"].ordered, Decimal::new(100_000, 0));
        assert_eq!(b.rate(Metric::Delivered, Metric::Sent), Some(0.6667));
        assert_eq!(b.rate(Metric::Read, Metric::Orders), None);
        assert_eq!(b.bot_cost().to_string(), "2.5");
        assert!(Snapshot::default().is_empty());
        assert_eq!(
            Metric::ALL[Metric::PaymentsPaid as usize],
            Metric::PaymentsPaid
        );
    }
}
