//! The messaging tier: unique users reached with business-initiated messages in any rolling
//! 24 h, per business portfolio (waba). A slot is reserved (and made durable) before the send,
//! and released only when Meta definitely refused the message.

use std::collections::{HashMap, VecDeque};

use crate::config::MessagingTier;

/// Meta's moving window.
pub const WINDOW_MS: i64 = 24 * 3_600_000;
/// A user's durable record is refreshed at most this often; a slot is held until its record
/// is this much older than the window, so a send after the last refresh is still covered
/// after a restart.
pub const REFRESH_MS: i64 = 3_600_000;

/// A durable write the caller must make before sending (and undo if Meta refuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierWrite {
    pub user_key: crate::domain::UserKey,
    pub at: i64,
    /// The user's record before this write (None: a new user took a slot).
    pub previous: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierDecision {
    /// Within the tier; `write` must be durable before the send.
    Reserved(Option<TierWrite>),
    /// Every slot is taken until `retry_at`.
    Full { retry_at: i64 },
}

/// Users reached per waba; time passed in.
#[derive(Debug, Clone)]
pub struct TierLedger {
    limit: MessagingTier,
    /// user → time of its durable record.
    users: HashMap<String, i64>,
    /// (record time, user) in time order; stale entries are skipped lazily.
    order: VecDeque<(i64, String)>,
}

impl TierLedger {
    pub fn new(limit: MessagingTier) -> TierLedger {
        TierLedger {
            limit,
            users: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn limit(&self) -> MessagingTier {
        self.limit
    }

    pub fn set_limit(&mut self, limit: MessagingTier) {
        self.limit = limit;
    }

    fn expires(at: i64) -> i64 {
        at + WINDOW_MS + REFRESH_MS
    }

    /// Records loaded from the store at start (any order).
    pub fn restore(&mut self, mut records: Vec<(String, i64)>, now_ms: i64) {
        records.sort_by_key(|r| r.1);
        for (user, at) in records {
            self.set(user, at);
        }
        self.prune(now_ms);
    }

    fn set(&mut self, user: String, at: i64) {
        self.users.insert(user.clone(), at);
        self.order.push_back((at, user));
    }

    fn prune(&mut self, now_ms: i64) {
        while let Some((at, user)) = self.order.front() {
            if Self::expires(*at) > now_ms {
                break;
            }
            if self.users.get(user) == Some(at) {
                self.users.remove(user);
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.users.len() + 1024 {
            let users = &self.users;
            self.order.retain(|(at, u)| users.get(u) == Some(at));
        }
    }

    /// Users holding a slot now.
    pub fn used(&mut self, now_ms: i64) -> u64 {
        self.prune(now_ms);
        self.users.len() as u64
    }

    /// Reserve `user`'s slot for a business-initiated send at `now_ms`.
    pub fn reserve(&mut self, user: &str, now_ms: i64) -> TierDecision {
        if self.limit == MessagingTier::Unlimited {
            // Nothing to count against: no bookkeeping, no durable write.
            return TierDecision::Reserved(None);
        }
        self.prune(now_ms);
        if let Some(&at) = self.users.get(user) {
            if now_ms - at < REFRESH_MS {
                return TierDecision::Reserved(None);
            }
            self.set(user.to_string(), now_ms);
            return TierDecision::Reserved(Some(TierWrite {
                user_key: user.to_string().into(),
                at: now_ms,
                previous: Some(at),
            }));
        }
        if let MessagingTier::Limited(limit) = self.limit {
            if self.users.len() as u64 >= limit {
                let retry_at = self
                    .order
                    .iter()
                    .find(|(at, u)| self.users.get(u) == Some(at))
                    .map_or(now_ms + REFRESH_MS, |(at, _)| Self::expires(*at));
                return TierDecision::Full { retry_at };
            }
        }
        self.set(user.to_string(), now_ms);
        TierDecision::Reserved(Some(TierWrite {
            user_key: user.to_string().into(),
            at: now_ms,
            previous: None,
        }))
    }

    /// Undo a reservation Meta definitely refused (or whose durable write failed).
    pub fn release(&mut self, write: &TierWrite) {
        if self.users.get(write.user_key.as_str()) != Some(&write.at) {
            return;
        }
        match write.previous {
            None => {
                self.users.remove(write.user_key.as_str());
            }
            Some(prev) => {
                self.users.insert(write.user_key.clone().into(), prev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_305_600_000;

    #[test]
    fn never_more_users_than_the_tier_in_any_window() {
        let mut t = TierLedger::new(MessagingTier::Limited(3));
        for u in ["a", "b", "c"] {
            assert!(matches!(t.reserve(u, T0), TierDecision::Reserved(Some(_))));
        }
        // A user already reached costs nothing.
        assert_eq!(t.reserve("a", T0 + 1000), TierDecision::Reserved(None));
        let TierDecision::Full { retry_at } = t.reserve("d", T0 + 1000) else {
            panic!()
        };
        assert_eq!(retry_at, T0 + WINDOW_MS + REFRESH_MS);
        assert!(matches!(
            t.reserve("d", retry_at - 1),
            TierDecision::Full { .. }
        ));
        assert!(matches!(
            t.reserve("d", retry_at),
            TierDecision::Reserved(Some(_))
        ));
        assert_eq!(t.used(retry_at), 1);
    }

    #[test]
    fn a_refusal_gives_the_slot_back() {
        let mut t = TierLedger::new(MessagingTier::Limited(1));
        let TierDecision::Reserved(Some(w)) = t.reserve("a", T0) else {
            panic!()
        };
        assert!(matches!(t.reserve("b", T0), TierDecision::Full { .. }));
        t.release(&w);
        assert!(matches!(
            t.reserve("b", T0),
            TierDecision::Reserved(Some(_))
        ));
    }

    #[test]
    fn a_user_reached_again_is_refreshed_at_most_hourly() {
        let mut t = TierLedger::new(MessagingTier::Limited(10));
        t.reserve("a", T0);
        assert_eq!(
            t.reserve("a", T0 + REFRESH_MS - 1),
            TierDecision::Reserved(None)
        );
        let TierDecision::Reserved(Some(w)) = t.reserve("a", T0 + REFRESH_MS) else {
            panic!()
        };
        assert_eq!(w.previous, Some(T0));
        // Still held a full window after the refresh.
        assert_eq!(t.used(T0 + REFRESH_MS + WINDOW_MS), 1);
    }

    #[test]
    fn restored_records_hold_their_slots() {
        let mut t = TierLedger::new(MessagingTier::Limited(2));
        t.restore(vec![("a".into(), T0), ("b".into(), T0 - WINDOW_MS * 2)], T0);
        assert_eq!(t.used(T0), 1, "b's record is too old");
        assert!(matches!(
            t.reserve("c", T0),
            TierDecision::Reserved(Some(_))
        ));
        assert!(matches!(t.reserve("d", T0), TierDecision::Full { .. }));
    }

    #[test]
    fn unlimited_never_fills() {
        let mut t = TierLedger::new(MessagingTier::Unlimited);
        for i in 0..1000 {
            assert!(matches!(
                t.reserve(&i.to_string(), T0),
                TierDecision::Reserved(_)
            ));
        }
    }
}
