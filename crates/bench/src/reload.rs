//! `parley-bench reload`: reload a folder of N flow files (copies of the shop flow) while a
//! thread steps the shop conversation through the same registry: reload time, and step
//! latency during reloads against before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::PNID;

/// Step the shop conversation over and over through `logic` until `stop`; each step's time.
fn step_shop(logic: &parley::behaviour::FlowLogic, stop: &AtomicBool) -> Vec<Duration> {
    use parley::conversation::{
        ConversationEvent, ConversationLogic, ConversationState, StepContext,
    };
    use parley::whatsapp::event::{InboundMessage, MessageContent};
    let script = ["menu", "Catalog", "2", "3", "yes"];
    let ctx = StepContext {
        now_ms: 1_700_000_000_000,
        mark_read: true,
        handoff_timeout_ms: 0,
        default_bot: None,
        fetch_media: false,
        transcribe: false,
        outside_window: parley::conversation::WindowPolicy::Fail,
        hold_ms: 0,
    };
    let mut times = Vec::new();
    let mut state = ConversationState::default();
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        for text in script {
            n += 1;
            let event = ConversationEvent::Inbound {
                seq: n,
                message: Arc::new(InboundMessage {
                    phone_number_id: PNID.into(),
                    display_phone_number: String::new(),
                    from: Some("6281200000001".into()),
                    user_id: None,
                    profile_name: Some("Bench".into()),
                    wamid: format!("wamid.{n}"),
                    timestamp: 1_700_000_000,
                    context: None,
                    referral: None,
                    errors: vec![],
                    content: MessageContent::Text { body: text.into() },
                }),
            };
            let t = Instant::now();
            let (next, _) = logic.step(state, &event, &ctx);
            times.push(t.elapsed());
            state = next;
        }
    }
    times
}

pub(crate) fn reload(files: usize, rounds: usize) -> anyhow::Result<()> {
    let shop =
        std::fs::read_to_string("flows/shop.yaml").context("run from the repository root")?;
    let dir = tempfile::tempdir()?;
    // The shop flow under its own id, plus N-1 copies with their own ids and keywords.
    std::fs::write(dir.path().join("shop.yaml"), &shop)?;
    for i in 1..files {
        let copy = shop
            .replace("id: shop", &format!("id: shop_{i}"))
            .replace("keyword: menu", &format!("keyword: menu{i}"))
            .replace("button: catalog", &format!("button: catalog{i}"));
        std::fs::write(dir.path().join(format!("shop_{i}.yaml")), copy)?;
    }
    let registry = parley::behaviour::FlowRegistry::new(
        parley::flow::load_dir(dir.path()).map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let logic = Arc::new(parley::behaviour::FlowLogic {
        flows: registry.clone(),
    });
    let pct = |mut v: Vec<Duration>, p: f64| -> Duration {
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    // Step latency without reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let stepper = {
        let (logic, stop) = (logic.clone(), stop.clone());
        std::thread::spawn(move || step_shop(&logic, &stop))
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let quiet = stepper.join().expect("stepper");
    // The same while reloading.
    let stop = Arc::new(AtomicBool::new(false));
    let stepper = {
        let (logic, stop) = (logic.clone(), stop.clone());
        std::thread::spawn(move || step_shop(&logic, &stop))
    };
    let mut took = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        registry
            .reload(dir.path())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        took.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let busy = stepper.join().expect("stepper");
    println!(
        "reload of {files} flow files: median {:.0} ms, max {:.0} ms over {rounds} rounds",
        pct(took.clone(), 0.5).as_secs_f64() * 1e3,
        took.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for (label, v) in [("without reloads", quiet), ("during reloads", busy)] {
        println!(
            "shop step {label}: {} steps, p50 {:.1} µs, p99 {:.1} µs, max {:.2} ms",
            v.len(),
            pct(v.clone(), 0.5).as_secs_f64() * 1e6,
            pct(v.clone(), 0.99).as_secs_f64() * 1e6,
            v.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
