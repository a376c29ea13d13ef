//! Which campaigns' messages are withdrawn from sending, and the boundary a withdrawal draws.
//!
//! Pure: no I/O, no clock. A paused campaign's messages already handed to the account's
//! sender wait there (in its per-conversation queues, or admitted by the gate and on their
//! way to the POST). Pausing withdraws the campaign here; the sender sets its messages aside
//! instead of sending them, and puts them back when the campaign is released (resumed).
//!
//! Cancelling withdraws the campaign for good: the sender settles its withheld messages as
//! `cancelled` instead of keeping them for a resume that cannot come.
//!
//! The boundary is one point, taken under the same lock as the withdrawal: a send of a
//! campaign *starts* when [`CampaignHolds::begin_send`] says yes, immediately before the
//! request is handed to the HTTP client. A withdrawal counts the sends of its campaign that
//! have started and not yet ended: those (and only those) may still reach Meta after it.

use std::collections::{HashMap, HashSet};

/// One withdrawal, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawal {
    /// Sends of the campaign already handed to the HTTP client at the moment of the
    /// withdrawal: the most that can still reach Meta after it.
    pub in_flight_at_pause: u32,
}

/// Why a campaign's messages are withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until it is resumed.
    Paused,
    /// For good.
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct CampaignHolds {
    withdrawn: HashMap<i64, Withdrawal>,
    /// Withdrawn for good: never released.
    cancelled: HashSet<i64>,
    /// campaign → sends started and not yet ended.
    in_flight: HashMap<i64, u32>,
    /// Changes whenever a campaign is withdrawn or released (the sender looks again).
    version: u64,
}

impl CampaignHolds {
    /// Withdraw `campaign`'s unsent messages. Returns the withdrawal (the first one's count if
    /// it was withdrawn already).
    pub fn withdraw(&mut self, campaign: i64) -> Withdrawal {
        let in_flight = self.in_flight.get(&campaign).copied().unwrap_or(0);
        let w = *self.withdrawn.entry(campaign).or_insert(Withdrawal {
            in_flight_at_pause: in_flight,
        });
        self.version += 1;
        w
    }

    /// Withdraw `campaign` for good (cancelled): its unsent messages are never sent.
    pub fn cancel(&mut self, campaign: i64) -> Withdrawal {
        self.cancelled.insert(campaign);
        self.withdraw(campaign)
    }

    /// Release `campaign` (resumed): its messages may go again. False if it was not withdrawn
    /// (or was cancelled).
    pub fn release(&mut self, campaign: i64) -> bool {
        if self.cancelled.contains(&campaign) {
            return false;
        }
        let was = self.withdrawn.remove(&campaign).is_some();
        if was {
            self.version += 1;
        }
        was
    }

    /// Withdraw these campaigns (those paused or cancelled in the store when the gate opens);
    /// a campaign already withdrawn keeps its withdrawal.
    pub fn restore(&mut self, withheld: impl IntoIterator<Item = (i64, Hold)>) {
        for (c, hold) in withheld {
            match hold {
                Hold::Paused => {
                    if !self.is_withdrawn(c) {
                        self.withdraw(c);
                    }
                }
                Hold::Cancelled => {
                    if !self.is_cancelled(c) {
                        self.cancel(c);
                    }
                }
            }
        }
    }

    pub fn is_cancelled(&self, campaign: i64) -> bool {
        self.cancelled.contains(&campaign)
    }

    pub fn is_withdrawn(&self, campaign: i64) -> bool {
        self.withdrawn.contains_key(&campaign)
    }

    pub fn withdrawal(&self, campaign: i64) -> Option<Withdrawal> {
        self.withdrawn.get(&campaign).copied()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// About to hand one of `campaign`'s messages to the HTTP client: true if it may go (then
    /// [`CampaignHolds::end_send`] must follow), false if the campaign is withdrawn.
    pub fn begin_send(&mut self, campaign: i64) -> bool {
        if self.is_withdrawn(campaign) {
            return false;
        }
        *self.in_flight.entry(campaign).or_default() += 1;
        true
    }

    /// The request of a send [`CampaignHolds::begin_send`] let go has ended.
    pub fn end_send(&mut self, campaign: i64) {
        if let Some(n) = self.in_flight.get_mut(&campaign) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&campaign);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withdrawn_campaign_starts_no_send_until_released() {
        let mut h = CampaignHolds::default();
        assert!(h.begin_send(7));
        h.end_send(7);
        h.withdraw(7);
        assert!(!h.begin_send(7));
        assert!(h.begin_send(8), "other campaigns are not held");
        assert!(h.release(7));
        assert!(h.begin_send(7));
        assert!(!h.release(7), "released once");
    }

    #[test]
    fn a_withdrawal_counts_the_sends_already_handed_to_the_http_client() {
        let mut h = CampaignHolds::default();
        assert!(h.begin_send(1));
        assert!(h.begin_send(1));
        assert!(h.begin_send(2));
        h.end_send(1);
        let w = h.withdraw(1);
        assert_eq!(w.in_flight_at_pause, 1);
        // Ending the one in flight does not change what the withdrawal saw.
        h.end_send(1);
        assert_eq!(h.withdraw(1).in_flight_at_pause, 1);
        assert_eq!(h.withdrawal(1), Some(w));
    }

    #[test]
    fn every_withdrawal_and_release_is_a_new_version() {
        let mut h = CampaignHolds::default();
        let v0 = h.version();
        h.restore([(3, Hold::Paused), (4, Hold::Cancelled)]);
        assert!(h.version() > v0 && h.is_withdrawn(3) && h.is_withdrawn(4));
        let v1 = h.version();
        assert!(!h.release(5));
        assert_eq!(
            h.version(),
            v1,
            "releasing what is not held changes nothing"
        );
        h.release(3);
        assert!(h.version() > v1);
    }

    #[test]
    fn a_cancelled_campaign_is_never_released() {
        let mut h = CampaignHolds::default();
        h.withdraw(9);
        h.cancel(9);
        assert!(h.is_cancelled(9) && h.is_withdrawn(9));
        assert!(!h.release(9), "a cancelled campaign cannot be resumed");
        assert!(!h.begin_send(9));
        h.restore([(9, Hold::Paused)]);
        assert!(h.is_cancelled(9), "a restore does not undo a cancel");
    }
}
