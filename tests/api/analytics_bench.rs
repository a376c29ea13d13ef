//! The analytics query's latency over a year of daily snapshots (issue 21's benchmark), as
//! ignored tests that print figures:
//! `cargo test --release --test api analytics_bench -- --ignored --nocapture`.
//! A year of days for several accounts is written through the store; then the daemon answers
//! `GET /admin/v1/analytics` over the whole year by day, week and month, many times each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Days;
use parley::analytics::{parse_date, Metric, Money, Period, Snapshot};
use parley::domain::AccountId;
use parley_testkit::FakeGraph;
use reqwest::Method;
use rust_decimal::Decimal;

use crate::helpers::*;

const ACCOUNTS: usize = 4;
const DAYS: u64 = 365;
const QUERIES: usize = 300;

fn day_snapshot(i: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for (k, m) in Metric::ALL.iter().enumerate() {
        s.counters.set(*m, (i as i64 * 7 + k as i64 * 13) % 997);
    }
    for ms in [80, 900, 2_500, 40_000, 3_600_000] {
        for _ in 0..(i % 5 + 1) {
            s.first_response.add(ms);
        }
    }
    s.money.insert(
        "IDR".into(),
        Money {
            ordered: Decimal::new(125_000 + i as i64, 0),
            revenue: Decimal::new(99_500 + i as i64, 0),
            refunded: Decimal::new(i as i64 % 3, 0),
        },
    );
    s
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn a_years_analytics_answer_quickly(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let store = db.store().await;
    store.migrate().await.unwrap();
    let first = parse_date("2025-12-01").unwrap();
    let seeding = Instant::now();
    for a in 0..ACCOUNTS {
        let account = if a == 0 {
            AccountId::from(PNID)
        } else {
            AccountId::from(format!("bench-account-{a}").as_str())
        };
        let days: Vec<_> = (0..DAYS)
            .map(|i| (first + Days::new(i), day_snapshot(i)))
            .collect();
        let mut uniques = Vec::new();
        for period in [Period::Week, Period::Month] {
            let mut start = period.start(first);
            while start <= first + Days::new(DAYS) {
                uniques.push((period, start, 321));
                start = period.next(start);
            }
        }
        store
            .seed_analytics(&account, &days, &uniques, 0)
            .await
            .unwrap();
    }
    let seeded = seeding.elapsed();
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store_name = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "\nanalytics bench ({store_name}): {ACCOUNTS} accounts × {DAYS} days seeded in {seeded:?}"
    );
    for period in ["day", "week", "month"] {
        let query = format!("/analytics?period={period}&from=2025-12-01&to=2026-11-30");
        let (status, body) = app
            .admin(Method::GET, &query, Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().len();
        let mut took = Vec::with_capacity(QUERIES);
        for _ in 0..QUERIES {
            let t = Instant::now();
            let (status, _) = app
                .admin(Method::GET, &query, Some(ADMIN_TOKEN), None)
                .await;
            took.push(t.elapsed());
            assert_eq!(status, 200);
        }
        took.sort();
        println!(
            "analytics bench ({store_name}) period={period}: {items} items, {QUERIES} queries: p50 {:?}, p99 {:?}, max {:?}",
            p(&took, 0.5),
            p(&took, 0.99),
            took[took.len() - 1]
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn sqlite() {
    a_years_analytics_answer_quickly(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn postgres() {
    if let Some(db) = TestDb::postgres().await {
        a_years_analytics_answer_quickly(db).await;
    }
}
