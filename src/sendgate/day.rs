//! Calendar days in an account's time zone, and the daily quota reserved in durable blocks.

use chrono::NaiveDate;

pub use crate::domain::Zone;

/// What the daily quota says about one more message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyCheck {
    /// A reserved unit is free.
    Free,
    /// The durable block is used up and more is being (or must be) reserved.
    NeedBlock,
    /// The day's limit is reached: wait for the next day.
    Exhausted { next_day_at: i64 },
}

/// A durable reservation to make: the account may send up to `reserved` messages on `day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    pub day: NaiveDate,
    pub reserved: u64,
    pub used: u64,
}

/// The daily cap, counted per calendar day. Sends are admitted only against a reservation
/// already durable in the store, taken in blocks: a crash can waste the unused part of a
/// block, never exceed the cap; a clean stop gives the unused part back.
#[derive(Debug, Clone)]
pub struct DailyQuota {
    limit: Option<u64>,
    block: u64,
    zone: Zone,
    day: Option<NaiveDate>,
    /// Durable reservation for `day`.
    reserved: u64,
    /// Admitted today.
    used: u64,
    /// A reservation being written (its total).
    pending: Option<u64>,
}

impl DailyQuota {
    /// `block`: how many sends one durable write reserves.
    pub fn new(limit: Option<u64>, block: u64, zone: Zone) -> DailyQuota {
        DailyQuota {
            limit,
            block: block.max(1),
            zone,
            day: None,
            reserved: 0,
            used: 0,
            pending: None,
        }
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// A new limit (and block size) for the rest of the day: what was used and reserved
    /// stays; a lower limit than today's use stops sending until tomorrow.
    pub fn retune(&mut self, limit: Option<u64>, block: u64) {
        self.limit = limit;
        self.block = block.max(1);
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// After a restart: what the store says was reserved today counts as used (the process
    /// that reserved it may have sent all of it).
    pub fn restore(&mut self, day: NaiveDate, reserved: u64) {
        self.day = Some(day);
        self.reserved = reserved;
        self.used = reserved;
        self.pending = None;
    }

    fn roll(&mut self, now_ms: i64) {
        let today = self.zone.day(now_ms);
        if self.day != Some(today) {
            self.day = Some(today);
            self.reserved = 0;
            self.used = 0;
            self.pending = None;
        }
    }

    /// Sent (admitted) today.
    pub fn used(&mut self, now_ms: i64) -> u64 {
        self.roll(now_ms);
        self.used
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    pub fn day(&self) -> Option<NaiveDate> {
        self.day
    }

    pub fn check(&mut self, now_ms: i64) -> DailyCheck {
        let Some(limit) = self.limit else {
            return DailyCheck::Free;
        };
        self.roll(now_ms);
        if self.used >= limit {
            DailyCheck::Exhausted {
                next_day_at: self.zone.next_midnight_ms(now_ms),
            }
        } else if self.used < self.reserved {
            DailyCheck::Free
        } else {
            DailyCheck::NeedBlock
        }
    }

    pub fn consume(&mut self, now_ms: i64) {
        self.roll(now_ms);
        self.used += 1;
    }

    /// A definite rejection: the message was never sent, its unit is free again (the
    /// reservation stays as it is).
    pub fn unconsume(&mut self, now_ms: i64) {
        self.roll(now_ms);
        self.used = self.used.saturating_sub(1);
    }

    /// The next block to reserve, when half the current one is used and none is pending.
    pub fn want_block(&mut self, now_ms: i64) -> Option<BlockRequest> {
        let limit = self.limit?;
        self.roll(now_ms);
        if self.pending.is_some() || self.reserved >= limit {
            return None;
        }
        if self.used + self.block / 2 < self.reserved {
            return None;
        }
        let total = (self.reserved + self.block).min(limit);
        self.pending = Some(total);
        Some(BlockRequest {
            day: self.day?,
            reserved: total,
            used: self.used,
        })
    }

    /// The store has the reservation.
    pub fn block_written(&mut self, req: &BlockRequest) {
        if self.day == Some(req.day) && self.pending == Some(req.reserved) {
            self.reserved = self.reserved.max(req.reserved);
            self.pending = None;
        }
    }

    /// Writing it failed: try again later.
    pub fn block_failed(&mut self, req: &BlockRequest) {
        if self.day == Some(req.day) && self.pending == Some(req.reserved) {
            self.pending = None;
        }
    }

    pub fn block_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// At a clean stop: give back what was reserved and not used.
    pub fn release(&self) -> Option<BlockRequest> {
        self.limit?;
        let day = self.day?;
        (self.used < self.reserved && self.pending.is_none()).then_some(BlockRequest {
            day,
            reserved: self.used,
            used: self.used,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    // 2026-11-22T00:00:00Z
    const T0: i64 = 1_795_305_600_000;

    #[test]
    fn sends_need_a_durable_block_and_stop_at_the_limit() {
        let mut q = DailyQuota::new(Some(5), 2, Zone::parse("UTC").unwrap());
        assert_eq!(q.check(T0), DailyCheck::NeedBlock);
        let req = q.want_block(T0).unwrap();
        assert_eq!(req.reserved, 2);
        assert!(q.want_block(T0).is_none(), "one pending at a time");
        assert_eq!(q.check(T0), DailyCheck::NeedBlock);
        q.block_written(&req);
        let mut sent = 0;
        for _ in 0..20 {
            match q.check(T0) {
                DailyCheck::Free => {
                    q.consume(T0);
                    sent += 1;
                }
                DailyCheck::NeedBlock => {
                    let r = q.want_block(T0).unwrap();
                    q.block_written(&r);
                }
                DailyCheck::Exhausted { next_day_at } => {
                    assert_eq!(next_day_at, T0 + DAY);
                    break;
                }
            }
        }
        assert_eq!(sent, 5);
        assert_eq!(q.reserved(), 5);
        // The next day starts afresh.
        assert_eq!(q.check(T0 + DAY), DailyCheck::NeedBlock);
        assert_eq!(q.used(T0 + DAY), 0);
    }

    #[test]
    fn a_restart_counts_the_whole_reservation_and_a_clean_stop_gives_back_the_rest() {
        let zone = Zone::parse("UTC").unwrap();
        let mut q = DailyQuota::new(Some(100), 10, zone);
        let r = q.want_block(T0).unwrap();
        q.block_written(&r);
        for _ in 0..3 {
            assert_eq!(q.check(T0), DailyCheck::Free);
            q.consume(T0);
        }
        let release = q.release().unwrap();
        assert_eq!(release.reserved, 3);
        // A crash instead: the restarted quota counts all 10 as used.
        let mut after_crash = DailyQuota::new(Some(100), 10, zone);
        after_crash.restore(zone.day(T0), r.reserved);
        assert_eq!(after_crash.used(T0), 10);
    }

    #[test]
    fn a_definite_rejection_frees_its_unit() {
        let mut q = DailyQuota::new(Some(1), 1, Zone::parse("UTC").unwrap());
        let r = q.want_block(T0).unwrap();
        q.block_written(&r);
        q.consume(T0);
        assert!(matches!(q.check(T0), DailyCheck::Exhausted { .. }));
        q.unconsume(T0);
        assert_eq!(q.check(T0), DailyCheck::Free);
    }

    #[test]
    fn no_limit_means_free() {
        let mut q = DailyQuota::new(None, 10, Zone::parse("UTC").unwrap());
        assert_eq!(q.check(T0), DailyCheck::Free);
        assert!(q.want_block(T0).is_none());
    }
}
