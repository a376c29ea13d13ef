//! The fold: rows read since the last pass, in time order, into per-day figures, the
//! contacts seen, and the marks carried to the next pass.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{Metric, Snapshot, REPLY_WINDOW_MS};
use crate::domain::Zone;

/// Each account's time zone (an account not configured counts in UTC).
#[derive(Debug, Clone, Default)]
pub struct Zones(pub HashMap<String, Zone>);

impl Zones {
    pub fn day(&self, account: &str, at_ms: i64) -> NaiveDate {
        match self.0.get(account) {
            Some(z) => z.day(at_ms),
            None => chrono::DateTime::from_timestamp_millis(at_ms)
                .unwrap_or_default()
                .date_naive(),
        }
    }
}

/// What a row says, as the fold needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A customer's message; when the contact was first seen (None: not recorded yet).
    Inbound {
        user: String,
        first_seen_at: Option<i64>,
    },
    /// A message queued to a customer: a campaign's, or a reply in the window (`service`).
    Outbound {
        user: String,
        campaign: bool,
        service: bool,
    },
    /// Meta's status of one of our messages (`sent`, `delivered`, `read`, `failed`).
    Status {
        status: String,
        campaign: bool,
    },
    Handoff {
        user: String,
    },
    Released {
        user: String,
    },
    /// A flow step: the session's start and its status after the step.
    FlowStep {
        started_at: i64,
        status: String,
    },
    /// A chatbot session's figures so far (they only grow).
    Bot {
        session: String,
        turns: i64,
        tokens_in: i64,
        tokens_out: i64,
        cost_micros: i64,
        open: bool,
    },
    Order {
        currency: String,
        total: Decimal,
    },
    Paid {
        payment: i64,
        currency: String,
        amount: Decimal,
    },
    /// A refund as it stands: its amount counts while the gateway accepted it (pending) or
    /// completed it, and stops counting if it then fails.
    Refund {
        refund: i64,
        currency: String,
        amount: Decimal,
        counts: bool,
        /// Not final yet (requested, pending): it may still change.
        open: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub account: String,
    pub at: i64,
    pub event: Event,
}

/// What is carried from one pass to the next, by account and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkKind {
    /// A customer's message not answered yet (key: the user; since: when they wrote).
    Wait,
    /// A handoff in progress (key: the user; since: when it began).
    Agent,
    /// A campaign message not replied to yet (key: the user; since: when it was queued).
    Campaign,
    /// A chatbot session's figures counted so far (key: the session).
    Bot,
    /// A payment counted (key: its id).
    Paid,
    /// A refund seen (key: its id; `figures[0]`: 1 while its amount is counted).
    Refund,
}

impl MarkKind {
    pub const ALL: [MarkKind; 6] = [
        MarkKind::Wait,
        MarkKind::Agent,
        MarkKind::Campaign,
        MarkKind::Bot,
        MarkKind::Paid,
        MarkKind::Refund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Wait => "wait",
            MarkKind::Agent => "agent",
            MarkKind::Campaign => "campaign",
            MarkKind::Bot => "bot",
            MarkKind::Paid => "paid",
            MarkKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<MarkKind> {
        MarkKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarkKey {
    pub account: String,
    pub kind: MarkKind,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub since: i64,
    /// A chatbot session's turns, tokens in, tokens out, cost (micros) counted so far.
    pub figures: [i64; 4],
    pub open: bool,
}

/// A contact who wrote on `day` (local); `new`: first seen that day or later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Visit {
    pub account: String,
    pub user: String,
    pub day: NaiveDate,
    pub new: bool,
}

/// What a pass changes.
#[derive(Debug, Default)]
pub struct Folded {
    /// The figures to add, by account and local day.
    pub days: BTreeMap<(String, NaiveDate), Snapshot>,
    /// Contacts who wrote (one per account, user and day).
    pub visits: Vec<Visit>,
    /// Marks to write (Some) or remove (None).
    pub marks: BTreeMap<MarkKey, Option<Mark>>,
}

/// Fold `rows` (in time order) given the marks known for their keys (`marks`: those that
/// exist; a key absent has none).
pub fn fold(rows: &[Row], zones: &Zones, marks: &HashMap<MarkKey, Mark>) -> Folded {
    let mut f = Folded::default();
    let mut seen = std::collections::HashSet::new();
    // The marks as this pass changes them.
    let mut current: HashMap<MarkKey, Option<Mark>> =
        marks.iter().map(|(k, m)| (k.clone(), Some(*m))).collect();
    let key = |account: &str, kind, key: &str| MarkKey {
        account: account.to_string(),
        kind,
        key: key.to_string(),
    };
    for r in rows {
        let day = zones.day(&r.account, r.at);
        let bump = |f: &mut Folded, d: NaiveDate, m: Metric, by: i64| {
            f.days
                .entry((r.account.clone(), d))
                .or_default()
                .counters
                .bump(m, by)
        };
        let get = |current: &HashMap<MarkKey, Option<Mark>>, k: &MarkKey| {
            current.get(k).copied().flatten()
        };
        match &r.event {
            Event::Inbound {
                user,
                first_seen_at,
            } => {
                bump(&mut f, day, Metric::MessagesIn, 1);
                let new = first_seen_at.is_none_or(|at| zones.day(&r.account, at) >= day);
                if seen.insert((user.clone(), day)) {
                    f.visits.push(Visit {
                        account: r.account.clone(),
                        user: user.clone(),
                        day,
                        new,
                    });
                }
                let wait = key(&r.account, MarkKind::Wait, user);
                if get(&current, &wait).is_none() {
                    let m = Mark {
                        since: r.at,
                        ..Mark::default()
                    };
                    current.insert(wait, Some(m));
                }
                let camp = key(&r.account, MarkKind::Campaign, user);
                if let Some(m) = get(&current, &camp) {
                    if r.at - m.since <= REPLY_WINDOW_MS {
                        bump(&mut f, day, Metric::CampaignReplied, 1);
                    }
                    current.insert(camp, None);
                }
            }
            Event::Outbound {
                user,
                campaign,
                service,
            } => {
                bump(&mut f, day, Metric::MessagesOut, 1);
                if *campaign {
                    bump(&mut f, day, Metric::CampaignQueued, 1);
                    let m = Mark {
                        since: r.at,
                        ..Mark::default()
                    };
                    current.insert(key(&r.account, MarkKind::Campaign, user), Some(m));
                } else if *service {
                    let wait = key(&r.account, MarkKind::Wait, user);
                    if let Some(m) = get(&current, &wait) {
                        let asked = zones.day(&r.account, m.since);
                        bump(&mut f, asked, Metric::FirstResponses, 1);
                        f.days
                            .entry((r.account.clone(), asked))
                            .or_default()
                            .first_response
                            .add(r.at - m.since);
                        current.insert(wait, None);
                    }
                }
            }
            Event::Status { status, campaign } => {
                let (all, camp) = match status.as_str() {
                    "sent" => (Metric::Sent, Metric::CampaignSent),
                    "delivered" => (Metric::Delivered, Metric::CampaignDelivered),
                    "read" => (Metric::Read, Metric::CampaignRead),
                    "failed" => (Metric::Failed, Metric::CampaignFailed),
                    _ => continue,
                };
                bump(&mut f, day, all, 1);
                if *campaign {
                    bump(&mut f, day, camp, 1);
                }
            }
            Event::Handoff { user } => {
                bump(&mut f, day, Metric::Handoffs, 1);
                let agent = key(&r.account, MarkKind::Agent, user);
                if get(&current, &agent).is_none() {
                    let m = Mark {
                        since: r.at,
                        ..Mark::default()
                    };
                    current.insert(agent, Some(m));
                }
            }
            Event::Released { user } => {
                bump(&mut f, day, Metric::Releases, 1);
                let agent = key(&r.account, MarkKind::Agent, user);
                if let Some(m) = get(&current, &agent) {
                    bump(&mut f, day, Metric::AgentMs, (r.at - m.since).max(0));
                    current.insert(agent, None);
                }
            }
            Event::FlowStep { started_at, status } => {
                if *started_at == r.at {
                    bump(&mut f, day, Metric::FlowsStarted, 1);
                }
                match status.as_str() {
                    "completed" => bump(&mut f, day, Metric::FlowsCompleted, 1),
                    "abandoned" => bump(&mut f, day, Metric::FlowsAbandoned, 1),
                    "failed" => bump(&mut f, day, Metric::FlowsFailed, 1),
                    _ => {}
                }
            }
            Event::Bot {
                session,
                turns,
                tokens_in,
                tokens_out,
                cost_micros,
                open,
            } => {
                let k = key(&r.account, MarkKind::Bot, session);
                let before = get(&current, &k).map(|m| m.figures).unwrap_or_default();
                let now = [*turns, *tokens_in, *tokens_out, *cost_micros];
                let metrics = [
                    Metric::BotTurns,
                    Metric::BotTokensIn,
                    Metric::BotTokensOut,
                    Metric::BotCostMicros,
                ];
                for i in 0..4 {
                    let delta = now[i] - before[i];
                    if delta > 0 {
                        bump(&mut f, day, metrics[i], delta);
                    }
                }
                let figures = std::array::from_fn(|i| now[i].max(before[i]));
                let m = Mark {
                    since: r.at,
                    figures,
                    open: *open,
                };
                current.insert(k, Some(m));
            }
            Event::Order { currency, total } => {
                bump(&mut f, day, Metric::Orders, 1);
                let money = f.days.entry((r.account.clone(), day)).or_default();
                money.money.entry(currency.clone()).or_default().ordered += *total;
            }
            Event::Paid {
                payment,
                currency,
                amount,
            } => {
                let k = key(&r.account, MarkKind::Paid, &payment.to_string());
                if get(&current, &k).is_some() {
                    continue;
                }
                bump(&mut f, day, Metric::PaymentsPaid, 1);
                let money = f.days.entry((r.account.clone(), day)).or_default();
                money.money.entry(currency.clone()).or_default().revenue += *amount;
                let m = Mark {
                    since: r.at,
                    ..Mark::default()
                };
                current.insert(k, Some(m));
            }
            Event::Refund {
                refund,
                currency,
                amount,
                counts,
                open,
            } => {
                let k = key(&r.account, MarkKind::Refund, &refund.to_string());
                let counted = get(&current, &k).is_some_and(|m| m.figures[0] == 1);
                // Counted on the day it changed: a refund accepted today lowers today's
                // net revenue, one that fails later gives it back that later day.
                let change = match (counted, *counts) {
                    (false, true) => *amount,
                    (true, false) => -*amount,
                    _ => Decimal::ZERO,
                };
                if !change.is_zero() {
                    let money = f.days.entry((r.account.clone(), day)).or_default();
                    money.money.entry(currency.clone()).or_default().refunded += change;
                }
                let m = Mark {
                    since: r.at,
                    figures: [i64::from(*counts), 0, 0, 0],
                    open: *open,
                };
                current.insert(k, Some(m));
            }
        }
    }
    for (k, m) in current {
        if marks.get(&k) != m.as_ref() {
            f.marks.insert(k, m);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    // 2026-12-01T16:30:00Z = 23:30 in Jakarta.
    const T: i64 = 1_796_142_600_000;

    fn zones() -> Zones {
        Zones(HashMap::from([(
            "a".to_string(),
            Zone::parse("Asia/Jakarta").unwrap(),
        )]))
    }

    fn row(at: i64, event: Event) -> Row {
        Row {
            account: "a".into(),
            at,
            event,
        }
    }

    fn inbound(user: &str) -> Event {
        Event::Inbound {
            user: user.into(),
            first_seen_at: None,
        }
    }

    fn reply(user: &str) -> Event {
        Event::Outbound {
            user: user.into(),
            campaign: false,
            service: true,
        }
    }

    fn d(s: &str) -> NaiveDate {
        super::super::parse_date(s).unwrap()
    }

    fn day<'a>(f: &'a Folded, s: &str) -> &'a Snapshot {
        &f.days[&("a".to_string(), d(s))]
    }

    #[test]
    fn days_follow_the_account_zone_and_replies_close_waits() {
        let rows = vec![
            row(T, inbound("u1")),
            row(T + 1, inbound("u1")),
            row(T + 2_000, reply("u1")),
            row(T + H, inbound("u1")),
            row(T + H + 500, reply("u1")),
            row(T + H + 600, reply("u1")),
        ];
        let f = fold(&rows, &zones(), &HashMap::new());
        let (d1, d2) = (day(&f, "2026-12-01"), day(&f, "2026-12-02"));
        assert_eq!(d1.counters.get(Metric::MessagesIn), 2);
        assert_eq!(d1.counters.get(Metric::MessagesOut), 1);
        assert_eq!(d1.counters.get(Metric::FirstResponses), 1);
        assert_eq!(d1.first_response.count(), 1);
        assert_eq!(d2.counters.get(Metric::MessagesIn), 1);
        assert_eq!(d2.counters.get(Metric::FirstResponses), 1);
        assert_eq!(d2.first_response.median_ms(), Some(hist_mid(500)));
        assert_eq!(f.visits.len(), 2, "one visit per user and day");
        assert!(f.visits.iter().all(|v| v.new));
        assert!(f.marks.is_empty(), "every wait was answered: {:?}", f.marks);
    }

    fn hist_mid(ms: i64) -> i64 {
        let mut h = super::super::Histogram::default();
        h.add(ms);
        h.median_ms().unwrap()
    }

    #[test]
    fn marks_carry_waits_handoffs_bots_and_payments_across_passes() {
        let first = fold(
            &[
                row(T, inbound("u1")),
                row(T + 10, Event::Handoff { user: "u1".into() }),
                row(
                    T + 20,
                    Event::Bot {
                        session: "s".into(),
                        turns: 2,
                        tokens_in: 100,
                        tokens_out: 50,
                        cost_micros: 30,
                        open: true,
                    },
                ),
            ],
            &zones(),
            &HashMap::new(),
        );
        assert_eq!(first.marks.len(), 3);
        let marks: HashMap<MarkKey, Mark> = first
            .marks
            .iter()
            .map(|(k, m)| (k.clone(), m.unwrap()))
            .collect();
        let paid = || Event::Paid {
            payment: 7,
            currency: "IDR".into(),
            amount: Decimal::new(15_000, 0),
        };
        let second = fold(
            &[
                row(T + 60_000, reply("u1")),
                row(T + 120_000, Event::Released { user: "u1".into() }),
                row(
                    T + 130_000,
                    Event::Bot {
                        session: "s".into(),
                        turns: 3,
                        tokens_in: 160,
                        tokens_out: 70,
                        cost_micros: 45,
                        open: false,
                    },
                ),
                row(T + 140_000, paid()),
                row(T + 140_000, paid()),
            ],
            &zones(),
            &marks,
        );
        let d1 = day(&second, "2026-12-01");
        assert_eq!(d1.counters.get(Metric::FirstResponses), 1);
        assert_eq!(d1.counters.get(Metric::AgentMs), 120_000 - 10);
        assert_eq!(d1.counters.get(Metric::BotTurns), 1);
        assert_eq!(d1.counters.get(Metric::BotTokensIn), 60);
        assert_eq!(d1.counters.get(Metric::BotCostMicros), 15);
        assert_eq!(d1.counters.get(Metric::PaymentsPaid), 1);
        assert_eq!(d1.money["IDR"].revenue, Decimal::new(15_000, 0));
        let removed: Vec<MarkKind> = second
            .marks
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(k, _)| k.kind)
            .collect();
        assert_eq!(removed, vec![MarkKind::Wait, MarkKind::Agent]);
    }

    #[test]
    fn a_refund_counts_once_while_accepted_and_is_given_back_if_it_fails() {
        let refund = |status_counts: bool, open: bool| Event::Refund {
            refund: 9,
            currency: "IDR".into(),
            amount: Decimal::new(4_000, 0),
            counts: status_counts,
            open,
        };
        // Requested (not counted), then accepted (pending) and read twice: counted once.
        let first = fold(
            &[
                row(T, refund(false, true)),
                row(T + 1_000, refund(true, true)),
                row(T + 1_000, refund(true, true)),
            ],
            &zones(),
            &HashMap::new(),
        );
        assert_eq!(
            day(&first, "2026-12-01").money["IDR"].refunded,
            Decimal::new(4_000, 0)
        );
        let marks: HashMap<MarkKey, Mark> = first
            .marks
            .iter()
            .map(|(k, m)| (k.clone(), m.unwrap()))
            .collect();
        // Completed the next pass: nothing more; failed later: given back that day.
        let second = fold(&[row(T + 2_000, refund(true, false))], &zones(), &marks);
        assert!(second.days.values().all(|s| s.money.is_empty()));
        let third = fold(&[row(T + 3_000, refund(false, false))], &zones(), &marks);
        assert_eq!(
            day(&third, "2026-12-01").money["IDR"].refunded,
            Decimal::new(-4_000, 0)
        );
    }

    #[test]
    fn campaigns_funnel_and_flows_count() {
        let camp = |status: &str| Event::Status {
            status: status.into(),
            campaign: true,
        };
        let rows = vec![
            row(
                T - 5 * H,
                Event::Outbound {
                    user: "u2".into(),
                    campaign: true,
                    service: false,
                },
            ),
            row(T - 5 * H + 1, camp("sent")),
            row(T - 5 * H + 2, camp("delivered")),
            row(T - 5 * H + 3, camp("read")),
            row(T - 5 * H + 4, camp("deleted")),
            row(T - 4 * H, inbound("u2")),
            row(
                T - 3 * H,
                Event::FlowStep {
                    started_at: T - 3 * H,
                    status: "running".into(),
                },
            ),
            row(
                T - 2 * H,
                Event::FlowStep {
                    started_at: T - 3 * H,
                    status: "completed".into(),
                },
            ),
            row(
                T - H,
                Event::FlowStep {
                    started_at: T - H,
                    status: "failed".into(),
                },
            ),
            row(
                T - H / 2,
                Event::FlowStep {
                    started_at: T - 4 * H,
                    status: "abandoned".into(),
                },
            ),
        ];
        let f = fold(&rows, &zones(), &HashMap::new());
        let c = &day(&f, "2026-12-01").counters;
        assert_eq!(c.get(Metric::CampaignQueued), 1);
        assert_eq!(c.get(Metric::CampaignSent), 1);
        assert_eq!(c.get(Metric::Delivered), 1);
        assert_eq!(c.get(Metric::CampaignRead), 1);
        assert_eq!(c.get(Metric::CampaignReplied), 1);
        assert_eq!(c.get(Metric::FirstResponses), 0, "a campaign is no answer");
        assert_eq!(c.get(Metric::FlowsStarted), 2);
        assert_eq!(c.get(Metric::FlowsCompleted), 1);
        assert_eq!(c.get(Metric::FlowsAbandoned), 1, "left for another flow");
        assert_eq!(c.get(Metric::FlowsFailed), 1, "an error is no abandonment");
    }

    #[test]
    fn a_contact_seen_before_is_not_new() {
        let rows = vec![row(
            T,
            Event::Inbound {
                user: "old".into(),
                first_seen_at: Some(T - 24 * H),
            },
        )];
        let f = fold(&rows, &zones(), &HashMap::new());
        assert!(!f.visits[0].new);
    }
}
