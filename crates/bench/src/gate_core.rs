//! `parley-bench gate-core`: the SendGate's decision alone, in process (no daemon): ns per
//! admitted message; then its pacing limiter alone, the hand-written GCRA against governor
//! (issue 19 item 7).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::PNID;

/// Decide `decisions` messages to `users` users (service and business alternating, pair rate
/// and a tier on, a rate high enough to admit them all) with time advancing 1 ms a step.
pub(crate) fn gate_core(decisions: u64, users: u64) {
    use parley::config::MessagingTier;
    use parley::sendgate::{
        AccountGate, Decision, Gate, GateSettings, SendClass, TierLedger, Zone,
    };
    let settings = GateSettings {
        messages_per_second: 1_000_000,
        throughput_burst: 100_000,
        pair_rate_interval: Duration::from_secs(6),
        pair_rate_burst: 45,
        daily_limit: None,
        daily_block: 1,
        tier: MessagingTier::Limited(100_000),
        zone: Zone::parse("Asia/Jakarta").expect("a zone"),
    };
    let gate = AccountGate::new(
        PNID.into(),
        "bench".into(),
        Gate::new(settings),
        Arc::new(Mutex::new(TierLedger::new(MessagingTier::Limited(100_000)))),
    );
    let names: Vec<String> = (0..users).map(|u| format!("62911{u:08}")).collect();
    let t0 = 1_795_305_600_000i64;
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..decisions {
        let user = &names[(i % users) as usize];
        let class = if i % 2 == 0 {
            SendClass::Service
        } else {
            SendClass::Business
        };
        if let Decision::Admit { .. } = gate.decide(t0 + i as i64, user, class, false) {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{decisions} decisions ({admitted} admitted) for {users} users in {:.2} s: {:.0} ns per decision",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / decisions as f64
    );
    drop(gate);
    limiter(decisions, users, 5);
}

/// The pacing limiter alone, on the hand-written GCRA (`parley::sendgate::Gcra`, the
/// product's) and on governor with a clock the gate sets (issue 19 item 7): per decision the
/// pair-rate and throughput look and take of `Gate::decide`, pruning idle recipients every
/// 4096 decisions as the gate does and changing the throughput rate every 65,536 (as after a
/// 130429 and its recovery). Time advances 1 ms a step, recipients round-robin (a recipient
/// comes back every `users` ms: idle and forgotten by then at 100,000, held at 5,000).
/// `rounds` rounds, the variants interleaved (order rotated); the median of each.
pub(crate) fn limiter(decisions: u64, users: u64, rounds: usize) {
    use limiter::{GovernorFaithful, GovernorPlain, Hand};
    let names: Vec<String> = (0..users).map(|u| format!("62911{u:08}")).collect();
    const N: usize = 4;
    let mut times: [Vec<f64>; N] = Default::default();
    let mut kept = [(0u64, 0usize); N];
    let labels = [
        "hand-written GCRA, the key copied on every admission (gate.rs before)",
        "hand-written GCRA, the key copied for a new recipient only (gate.rs)",
        "governor, its own stores (takes the cell on check: not the gate's semantics)",
        "governor, gate's semantics (look, then take)",
    ];
    for round in 0..rounds {
        for k in 0..N {
            let v = (round + k) % N;
            let (ns, admitted, left) = match v {
                0 => run(Hand::new(true), &names, decisions),
                1 => run(Hand::new(false), &names, decisions),
                2 => run(GovernorPlain::new(), &names, decisions),
                _ => run(GovernorFaithful::new(), &names, decisions),
            };
            times[v].push(ns);
            kept[v] = (admitted, left);
        }
    }
    println!(
        "limiter alone, {decisions} decisions for {users} users, {rounds} rounds interleaved:"
    );
    for v in 0..N {
        let runs: Vec<String> = times[v].iter().map(|t| format!("{t:.1}")).collect();
        let mut sorted = times[v].clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "  {}: {:.1} ns per decision median (runs {}); {} admitted, {} recipients kept after the last pruning",
            labels[v],
            sorted[sorted.len() / 2],
            runs.join(" / "),
            kept[v].0,
            kept[v].1
        );
    }
    println!(
        "  state per recipient kept: {} B hand-written (String, i64), {} B governor (String, InMemoryState), plus the key's heap bytes and the map's control byte",
        std::mem::size_of::<(String, i64)>(),
        std::mem::size_of::<(String, governor::state::InMemoryState)>()
    );
}

/// ns per decision, admitted, recipients kept after a last pruning.
fn run<P: limiter::Pacer>(mut pacer: P, names: &[String], decisions: u64) -> (f64, u64, usize) {
    let users = names.len() as u64;
    let t0_us = 1_795_305_600_000_000i64;
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..decisions {
        let now_us = t0_us + i as i64 * 1000;
        if i % 4096 == 0 {
            pacer.forget_idle(now_us);
        }
        if i % 65_536 == 0 {
            // 1,000,000/s, then half after a "130429", and back.
            pacer.set_rate(if (i / 65_536) % 2 == 0 {
                1_000_000.0
            } else {
                500_000.0
            });
        }
        let user = &names[(i % users) as usize];
        if std::hint::black_box(pacer.decide(user, now_us)).is_ok() {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed();
    let now_us = t0_us + decisions as i64 * 1000;
    pacer.forget_idle(now_us);
    (
        elapsed.as_nanos() as f64 / decisions as f64,
        admitted,
        pacer.kept(),
    )
}

mod limiter {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::hash::RandomState;
    use std::num::{NonZeroU32, NonZeroU64};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use governor::clock::Clock;
    use governor::middleware::NoOpMiddleware;
    use governor::nanos::Nanos;
    use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
    use governor::state::{InMemoryState, NotKeyed, StateStore};
    use governor::{NotUntil, Quota, RateLimiter};
    use parley::sendgate::Gcra;

    /// The gate's settings in the gate-core benchmark: pair rate 45 at once, then 1 per 6 s.
    const PAIR_PERIOD_US: i64 = 6_000_000;
    const PAIR_BURST: u32 = 45;
    const THROUGHPUT_BURST: u32 = 100_000;

    /// What `Gate::decide` asks of its limiters: admit `user` at `now_us` (both cells taken)
    /// or the earliest time it would conform.
    #[allow(clippy::ptr_arg)] // governor's `check_key` wants the `&String`
    pub(crate) trait Pacer {
        fn decide(&mut self, user: &String, now_us: i64) -> Result<(), i64>;
        fn set_rate(&mut self, per_second: f64);
        fn forget_idle(&mut self, now_us: i64);
        fn kept(&self) -> usize;
    }

    /// `gate.rs`'s use of the hand-written GCRA. `alloc_every_admit`: the key copied on every
    /// admission (`insert(user.to_string(), …)`), as `gate.rs` did before; else only for a
    /// new recipient, as it does now.
    pub(crate) struct Hand {
        throughput: Gcra,
        throughput_tat: Option<i64>,
        pair: Gcra,
        pair_tat: HashMap<String, i64>,
        alloc_every_admit: bool,
    }

    impl Hand {
        pub(crate) fn new(alloc_every_admit: bool) -> Hand {
            Hand {
                throughput: Gcra::per_second(1_000_000.0, THROUGHPUT_BURST),
                throughput_tat: None,
                pair: Gcra::new(PAIR_PERIOD_US, PAIR_BURST),
                pair_tat: HashMap::new(),
                alloc_every_admit,
            }
        }
    }

    impl Pacer for Hand {
        fn decide(&mut self, user: &String, now_us: i64) -> Result<(), i64> {
            let user: &str = user;
            let pair_tat = self.pair_tat.get(user).copied();
            self.pair.check(pair_tat, now_us)?;
            self.throughput.check(self.throughput_tat, now_us)?;
            let tat = self.pair.consume(pair_tat, now_us);
            if self.alloc_every_admit {
                self.pair_tat.insert(user.to_string(), tat);
            } else {
                match pair_tat.and_then(|_| self.pair_tat.get_mut(user)) {
                    Some(t) => *t = tat,
                    None => {
                        self.pair_tat.insert(user.to_string(), tat);
                    }
                }
            }
            self.throughput_tat = Some(self.throughput.consume(self.throughput_tat, now_us));
            Ok(())
        }
        fn set_rate(&mut self, per_second: f64) {
            self.throughput = Gcra::per_second(per_second, THROUGHPUT_BURST);
        }
        fn forget_idle(&mut self, now_us: i64) {
            self.pair_tat.retain(|_, tat| !Gcra::is_idle(*tat, now_us));
        }
        fn kept(&self) -> usize {
            self.pair_tat.len()
        }
    }

    /// governor's clock, set by the gate to its `now` before each call: nanoseconds since the
    /// Unix epoch. A limiter is built while it reads 0, so governor's `start` is the epoch
    /// and a state store keeps its meaning across limiters (a new quota).
    #[derive(Debug, Default)]
    pub(crate) struct GateClock(Cell<u64>);

    impl GateClock {
        fn set(&self, now_us: i64) {
            self.0.set(now_us.max(0) as u64 * 1000);
        }
    }

    impl Clock for GateClock {
        type Instant = Nanos;
        fn now(&self) -> Nanos {
            Nanos::from(self.0.get())
        }
    }

    fn quota(period_us: i64, burst: u32) -> Quota {
        Quota::with_period(Duration::from_micros(period_us.max(1) as u64))
            .expect("a period of at least 1 µs")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"))
    }

    fn per_second(rate: f64, burst: u32) -> Quota {
        let g = Gcra::per_second(rate, burst);
        quota(g.period_us(), g.burst())
    }

    fn earliest_us(n: NotUntil<Nanos>) -> i64 {
        (n.earliest_possible().as_u64() / 1000) as i64
    }

    type Mw = NoOpMiddleware<Nanos>;

    /// governor with its own state stores (`InMemoryState`, `HashMapStateStore`), SipHash as
    /// the hand-written map. Its `check` takes a conforming cell at once, so a message the
    /// throughput (or the daily cap, or the tier) then holds back has spent its pair cell:
    /// not the gate's semantics. The key is the benchmark's own `String` (the gate has a
    /// `&str`, and `check_key` wants a `&String`: one more allocation there), so this is
    /// governor's best case.
    pub(crate) struct GovernorPlain {
        throughput: RateLimiter<NotKeyed, InMemoryState, GateClock, Mw>,
        pair: RateLimiter<String, HashMapStateStore<String, RandomState>, GateClock, Mw>,
    }

    impl GovernorPlain {
        pub(crate) fn new() -> GovernorPlain {
            GovernorPlain {
                throughput: RateLimiter::direct_with_clock(
                    per_second(1_000_000.0, THROUGHPUT_BURST),
                    GateClock::default(),
                ),
                pair: RateLimiter::hashmap_with_clock_and_hasher(
                    quota(PAIR_PERIOD_US, PAIR_BURST),
                    GateClock::default(),
                    RandomState::new(),
                ),
            }
        }
    }

    impl Pacer for GovernorPlain {
        fn decide(&mut self, user: &String, now_us: i64) -> Result<(), i64> {
            self.pair.clock().set(now_us);
            self.pair.check_key(user).map_err(earliest_us)?;
            self.throughput.clock().set(now_us);
            self.throughput.check().map_err(earliest_us)
        }
        fn set_rate(&mut self, rate: f64) {
            // A new quota is a new limiter; the state store (the TAT) carries over.
            let old = std::mem::replace(
                &mut self.throughput,
                RateLimiter::direct_with_clock(per_second(1.0, 1), GateClock::default()),
            );
            self.throughput = RateLimiter::new(
                per_second(rate, THROUGHPUT_BURST),
                old.into_state_store(),
                GateClock::default(),
            );
        }
        fn forget_idle(&mut self, now_us: i64) {
            // governor forgets a key once its TAT is a period in the past (`tat <= now - t`).
            self.pair.clock().set(now_us);
            self.pair.retain_recent();
        }
        fn kept(&self) -> usize {
            self.pair.len()
        }
    }

    /// A TAT governor computes on, stored only when the gate takes the cell: the gate looks
    /// at every limit (pair, throughput, daily, tier) before it takes any cell.
    #[derive(Debug, Default)]
    pub(crate) struct LookThenTake {
        tat: Cell<u64>,
        take: Arc<AtomicBool>,
    }

    impl StateStore for LookThenTake {
        type Key = NotKeyed;
        fn measure_and_replace<T, F, E>(&self, _: &NotKeyed, f: F) -> Result<T, E>
        where
            F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
        {
            let (out, next) = f(NonZeroU64::new(self.tat.get()).map(|n| Nanos::from(n.get())))?;
            if self.take.load(Ordering::Relaxed) {
                self.tat.set(next.as_u64());
            }
            Ok(out)
        }
    }

    /// The same per recipient.
    #[derive(Debug, Default)]
    pub(crate) struct LookThenTakeKeyed {
        tats: RefCell<HashMap<String, u64>>,
        take: Arc<AtomicBool>,
    }

    impl StateStore for LookThenTakeKeyed {
        type Key = String;
        fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
        where
            F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
        {
            let mut tats = self.tats.borrow_mut();
            let (out, next) = f(tats.get(key).map(|t| Nanos::from(*t)))?;
            if self.take.load(Ordering::Relaxed) {
                match tats.get_mut(key) {
                    Some(t) => *t = next.as_u64(),
                    None => {
                        tats.insert(key.clone(), next.as_u64());
                    }
                }
            }
            Ok(out)
        }
    }

    impl ShrinkableKeyedStateStore<String> for LookThenTakeKeyed {
        fn retain_recent(&self, drop_below: Nanos) {
            self.tats
                .borrow_mut()
                .retain(|_, tat| *tat > drop_below.as_u64());
        }
        fn len(&self) -> usize {
            self.tats.borrow().len()
        }
        fn is_empty(&self) -> bool {
            self.tats.borrow().is_empty()
        }
    }

    /// governor with the gate's semantics: look at the pair rate and the throughput, then take
    /// both cells (two more calls). The key is made from the gate's `&str`.
    pub(crate) struct GovernorFaithful {
        /// The `String` `check_key` wants, filled from the gate's `&str` (no allocation).
        key: String,
        take: Arc<AtomicBool>,
        throughput: RateLimiter<NotKeyed, LookThenTake, GateClock, Mw>,
        pair: RateLimiter<String, LookThenTakeKeyed, GateClock, Mw>,
    }

    impl GovernorFaithful {
        pub(crate) fn new() -> GovernorFaithful {
            let take = Arc::new(AtomicBool::new(false));
            GovernorFaithful {
                throughput: RateLimiter::new(
                    per_second(1_000_000.0, THROUGHPUT_BURST),
                    LookThenTake {
                        tat: Cell::new(0),
                        take: take.clone(),
                    },
                    GateClock::default(),
                ),
                pair: RateLimiter::new(
                    quota(PAIR_PERIOD_US, PAIR_BURST),
                    LookThenTakeKeyed {
                        tats: RefCell::new(HashMap::new()),
                        take: take.clone(),
                    },
                    GateClock::default(),
                ),
                take,
                key: String::new(),
            }
        }
    }

    impl Pacer for GovernorFaithful {
        fn decide(&mut self, user: &String, now_us: i64) -> Result<(), i64> {
            let user: &str = user; // what the gate has
            self.key.clear();
            self.key.push_str(user);
            let key = &self.key;
            self.pair.clock().set(now_us);
            self.throughput.clock().set(now_us);
            self.take.store(false, Ordering::Relaxed);
            self.pair.check_key(key).map_err(earliest_us)?;
            self.throughput.check().map_err(earliest_us)?;
            // (the daily cap and the tier come here)
            self.take.store(true, Ordering::Relaxed);
            let taken = self.pair.check_key(key).and(self.throughput.check());
            debug_assert!(taken.is_ok());
            Ok(())
        }
        fn set_rate(&mut self, rate: f64) {
            let placeholder = RateLimiter::new(
                per_second(1.0, 1),
                LookThenTake::default(),
                GateClock::default(),
            );
            let old = std::mem::replace(&mut self.throughput, placeholder);
            self.throughput = RateLimiter::new(
                per_second(rate, THROUGHPUT_BURST),
                old.into_state_store(),
                GateClock::default(),
            );
        }
        fn forget_idle(&mut self, now_us: i64) {
            self.pair.clock().set(now_us);
            self.pair.retain_recent();
        }
        fn kept(&self) -> usize {
            self.pair.len()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The three pacers agree on admissions and NotUntil times where the semantics
        /// match (no refusal after a look).
        #[test]
        fn the_pacers_agree() {
            let mut hand = Hand::new(false);
            let mut plain = GovernorPlain::new();
            let mut faithful = GovernorFaithful::new();
            let users: Vec<String> = (0..3).map(|u| format!("u{u}")).collect();
            let mut now = 1_795_305_600_000_000i64;
            let mut refused = 0;
            for i in 0..400u64 {
                let user = &users[(i % 3) as usize];
                let h = hand.decide(user, now);
                refused += usize::from(h.is_err());
                assert_eq!(h, plain.decide(user, now), "step {i}");
                assert_eq!(h, faithful.decide(user, now), "step {i}");
                now += 500_000;
                if i % 50 == 0 {
                    let rate = if i % 100 == 0 { 2.0 } else { 1.0 };
                    hand.set_rate(rate);
                    plain.set_rate(rate);
                    faithful.set_rate(rate);
                }
            }
            assert!(refused > 100, "{refused}: the pair rate holds some back");
            // Idle recipients (every TAT at most `now + tau + t`): the hand-written pruning
            // forgets them once their TAT has passed, governor's a period later.
            let idle = now + i64::from(PAIR_BURST) * PAIR_PERIOD_US;
            hand.forget_idle(idle);
            plain.forget_idle(idle);
            faithful.forget_idle(idle);
            assert_eq!((hand.kept(), plain.kept(), faithful.kept()), (0, 3, 3));
            plain.forget_idle(idle + PAIR_PERIOD_US);
            faithful.forget_idle(idle + PAIR_PERIOD_US);
            assert_eq!((plain.kept(), faithful.kept()), (0, 0));
        }

        /// What governor's own `check` cannot do: a message the throughput holds back must
        /// not spend its recipient's pair cells.
        #[test]
        fn a_look_takes_nothing() {
            let mut hand = Hand::new(false);
            let mut plain = GovernorPlain::new();
            let mut faithful = GovernorFaithful::new();
            let now = 1_795_305_600_000_000i64;
            let x = "x".to_string();
            let mut pacers: [&mut dyn Pacer; 3] = [&mut hand, &mut plain, &mut faithful];
            for p in pacers.iter_mut() {
                // 1/s with a burst of 100,000: spent at once over 2,223 recipients.
                p.set_rate(1.0);
                for u in 0..2_223 {
                    let user = format!("u{u}");
                    for _ in 0..PAIR_BURST {
                        let _ = p.decide(&user, now);
                    }
                }
                for _ in 0..PAIR_BURST {
                    assert_eq!(p.decide(&x, now), Err(now + 1_000_000));
                }
            }
            let later = now + 1_000_000;
            assert_eq!(hand.decide(&x, later), Ok(()));
            assert_eq!(faithful.decide(&x, later), Ok(()));
            // governor's own stores took x's 45 pair cells on the looks.
            assert_eq!(plain.decide(&x, later), Err(now + PAIR_PERIOD_US));
        }
    }
}
