//! GCRA (generic cell rate algorithm) with governor's semantics, on time passed in.
//!
//! governor's `Quota::with_period(t).allow_burst(b)` keeps a theoretical arrival time (TAT):
//! a cell at `now` conforms when `now >= tat - tau` with `tau = t·(b−1)`, and then moves the
//! TAT to `max(tat, now) + t`. So `b` cells may go at once, then one per `t`; a refused cell's
//! time is `tat - tau`, governor's `NotUntil::earliest_possible()`.
//!
//! Hand-written, not the `governor` crate (issue 19 item 7 asked for governor with a clock the
//! gate controls unless a benchmark showed it slower), for two reasons:
//!
//! - governor cannot look without taking. Its `check`/`check_key` takes a conforming cell at
//!   once, and [`Gate::decide`](super::Gate::decide) looks at the pair rate and the throughput,
//!   then the daily cap and the tier, and takes the two cells only when all of them admit:
//!   otherwise a message the throughput or the tier holds back would spend its recipient's pair
//!   cell. With governor that needs a `StateStore` of our own that drops the new TAT on a look
//!   (the state is then ours and governor only does the arithmetic above), and two more calls.
//!   A new rate (130429 cool-off) is a new `RateLimiter`, the TAT carried over by
//!   `into_state_store()` into a limiter built while its clock reads the same origin;
//!   `check_key` wants a `&String` where the gate has a `&str`; `retain_recent` keeps an idle
//!   recipient one period longer (`tat > now − t`) than [`Gcra::is_idle`].
//! - With the gate's semantics it is slower. `parley-bench gate-core` times the limiter alone
//!   too (crates/bench/src/gate_core.rs, 5 interleaved rounds a run; governor 0.10 with
//!   `default-features = false, features = ["no_std"]`, its clock set by the gate). Medians of
//!   3 runs, ns per decision, hand-written / governor with the gate's semantics / governor's
//!   own stores (taking on check, so not the gate's semantics):
//!   `--decisions 2000000 --users 100000` (each recipient forgotten before it comes back)
//!   103 / 172 / 151; `--decisions 1000000 --users 5000` (each recipient held) 38 / 67 / 34.
//!   At `--users 10000` governor was faster (90 / 72 / 38) only because it kept the idle
//!   recipients (10,000 against 5,999); the hand-written one pruned as late gave 42 / 77 / 39.
//!   A recipient held costs the same in both: a 32 B `(String, i64)` against a
//!   32 B `(String, InMemoryState)`, plus the key's bytes.
//!
//! So the gate's time stays an argument, its rate a new [`Gcra`] over the same TAT, and a
//! recipient's state one `i64` in the gate's map, dropped once idle.

/// One GCRA: emission interval `t_us` and tolerance `tau_us`, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    t_us: i64,
    tau_us: i64,
}

impl Gcra {
    /// `burst` cells at once, then one every `period_us` (both at least 1).
    pub fn new(period_us: i64, burst: u32) -> Gcra {
        let t_us = period_us.max(1);
        Gcra {
            t_us,
            tau_us: t_us.saturating_mul(i64::from(burst.max(1)) - 1),
        }
    }

    /// `rate` cells per second with a burst of `burst`.
    pub fn per_second(rate: f64, burst: u32) -> Gcra {
        let period = if rate > 0.0 {
            (1_000_000.0 / rate).round() as i64
        } else {
            i64::MAX / 4
        };
        Gcra::new(period, burst)
    }

    pub fn period_us(&self) -> i64 {
        self.t_us
    }

    pub fn burst(&self) -> u32 {
        (self.tau_us / self.t_us + 1) as u32
    }

    /// `Ok` when a cell conforms at `now_us`, else the earliest time it will.
    pub fn check(&self, tat: Option<i64>, now_us: i64) -> Result<(), i64> {
        match tat {
            Some(tat) if now_us < tat - self.tau_us => Err(tat - self.tau_us),
            _ => Ok(()),
        }
    }

    /// The TAT after a conforming cell at `now_us`.
    pub fn consume(&self, tat: Option<i64>, now_us: i64) -> i64 {
        tat.unwrap_or(now_us).max(now_us) + self.t_us
    }

    /// A TAT at or before `now_us` is the same as no state at all.
    pub fn is_idle(tat: i64, now_us: i64) -> bool {
        tat <= now_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit_all(g: &Gcra, tat: &mut Option<i64>, now: i64) -> u32 {
        let mut n = 0;
        while g.check(*tat, now).is_ok() {
            *tat = Some(g.consume(*tat, now));
            n += 1;
        }
        n
    }

    #[test]
    fn a_burst_goes_at_once_then_one_per_period() {
        let g = Gcra::new(1_000_000, 3);
        let mut tat = None;
        assert_eq!(admit_all(&g, &mut tat, 0), 3);
        assert_eq!(g.check(tat, 0), Err(1_000_000));
        assert_eq!(admit_all(&g, &mut tat, 999_999), 0);
        assert_eq!(admit_all(&g, &mut tat, 1_000_000), 1);
        assert_eq!(admit_all(&g, &mut tat, 2_000_000), 1);
        // Idle long enough and the whole burst is back.
        assert_eq!(admit_all(&g, &mut tat, 10_000_000), 3);
    }

    #[test]
    fn no_one_second_window_holds_more_than_rate_plus_burst() {
        let g = Gcra::per_second(20.0, 2);
        let mut tat = None;
        let mut sent = Vec::new();
        let mut now = 0;
        while sent.len() < 200 {
            if g.check(tat, now).is_ok() {
                tat = Some(g.consume(tat, now));
                sent.push(now);
            } else {
                now += 1_000; // 1 ms steps
            }
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| **t < start + 1_000_000)
                .count();
            assert!(in_window <= 22, "{in_window} at {start}");
        }
    }

    #[test]
    fn burst_round_trips() {
        assert_eq!(Gcra::per_second(80.0, 8).burst(), 8);
        assert_eq!(Gcra::new(6_000_000, 45).burst(), 45);
        assert_eq!(Gcra::new(5, 0).burst(), 1);
    }
}
