//! `parley-bench gate-core`: the SendGate's decision alone, in process (no daemon): ns per
//! admitted message.

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
    let gate = AccountGate {
        account: PNID.into(),
        waba: "bench".into(),
        gate: Mutex::new(Gate::new(settings)),
        tier: Arc::new(Mutex::new(TierLedger::new(MessagingTier::Limited(100_000)))),
        wake: tokio::sync::Notify::new(),
        retuned: Default::default(),
        holds: Default::default(),
    };
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
}
