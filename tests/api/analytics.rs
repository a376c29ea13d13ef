//! Analytics against a scripted day of traffic through the daemon: messages both ways, Meta's
//! statuses, flows, a handoff and its release, across midnight in the account's time zone
//! (Asia/Jakarta, UTC+7), with exact counts by day, week and month, and as CSV.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use parley_testkit::{status_webhook, text_webhook, FakeGraph, Outcome};
use reqwest::Method;
use serde_json::Value;

use crate::handoff::{DESK, GREETER};
use crate::helpers::*;
use crate::on_both_stores;

/// 2026-12-01T16:00:00Z: 23:00 on Tuesday 1 December in Jakarta.
const T0: i64 = 1_796_140_800_000;
const MIN: i64 = 60_000;

/// The wamid the fake Graph API gave the message with `text`.
async fn wamid_of(graph: &FakeGraph, text: &str) -> String {
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.accepted() && a.text() == Some(text)))
            .await,
        "{text} was sent"
    );
    graph
        .attempts()
        .iter()
        .find_map(|a| match (&a.outcome, a.text()) {
            (Outcome::Accepted(Some(w)), Some(t)) if t == text => Some(w.clone()),
            _ => None,
        })
        .expect("a wamid")
}

async fn analytics(app: &TestApp, query: &str) -> (u16, Value) {
    app.admin(
        Method::GET,
        &format!("/analytics?{query}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
}

/// The figures of each item, once `ready` holds for them (the folder runs every 2 s).
async fn settled(app: &TestApp, query: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = analytics(app, query).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if ready(&items) {
            return items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "analytics never settled: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn n(item: &Value, field: &str) -> i64 {
    item[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {item}"))
}

async fn a_scripted_day_counts_exactly_across_local_midnight(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let clock = ManualClock(Arc::new(AtomicI64::new(T0)));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeter.yaml"), GREETER).unwrap();
    std::fs::write(dir.path().join("desk.yaml"), DESK).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.handoff.timeout = Duration::from_secs(24 * 3600);
    settings.accounts[0].timezone = "Asia/Jakarta".into();
    let app = spawn_app_with_clock(settings, Arc::new(clock.clone())).await;
    let (u1, u2, u3) = ("6281200000401", "6281200000402", "6281200000403");
    let secs = |c: &ManualClock| c.0.load(std::sync::atomic::Ordering::SeqCst) / 1000;
    let to = |at: i64, c: &ManualClock| {
        let now = c.0.load(std::sync::atomic::Ordering::SeqCst);
        c.advance(Duration::from_millis((T0 + at - now) as u64));
    };

    // 23:00 local: u1 says hi (the greeter answers at once, its flow starts and completes).
    app.post_webhook(&text_webhook(PNID, u1, "wamid.A1", "hi", secs(&clock)))
        .await;
    let hello = wamid_of(&graph, "Hello from the bot").await;
    // 23:01: u2 writes what no flow answers: it waits.
    to(MIN, &clock);
    app.post_webhook(&text_webhook(PNID, u2, "wamid.A2", "anyone?", secs(&clock)))
        .await;
    // 23:02: u1 asks for a human (a reply, then the handoff).
    to(2 * MIN, &clock);
    app.post_webhook(&text_webhook(PNID, u1, "wamid.A3", "human", secs(&clock)))
        .await;
    let person = wamid_of(&graph, "A person will answer you.").await;
    // 23:05: Meta's statuses: the first reply sent, delivered, read; the second sent, failed.
    to(5 * MIN, &clock);
    for (w, s) in [
        (&hello, "sent"),
        (&hello, "delivered"),
        (&hello, "read"),
        (&person, "sent"),
        (&person, "failed"),
    ] {
        let to_user = u1;
        assert_eq!(
            app.post_webhook(&status_webhook(PNID, w, s, to_user, None, secs(&clock)))
                .await,
            200
        );
    }
    // 23:30: the agent gives the conversation back (28 minutes with an agent).
    to(30 * MIN, &clock);
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/conversations/{PNID}/{u1}/release"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wamid_of(&graph, "Back with the bot.").await;
    // 00:30 local, the next day (still 1 December in UTC): u2 says hi, then u3, a new contact.
    to(90 * MIN, &clock);
    app.post_webhook(&text_webhook(PNID, u2, "wamid.B1", "hi", secs(&clock)))
        .await;
    to(100 * MIN, &clock);
    app.post_webhook(&text_webhook(PNID, u3, "wamid.B2", "hi", secs(&clock)))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.is_delivery() && a.text() == Some("Hello from the bot"))
                .count()
                == 3)
            .await
    );

    // Everything is committed by now; wait until a pass has folded the last row of each source.
    let days = settled(&app, "period=day&from=2026-11-30&to=2026-12-02", |items| {
        let (d1, d2) = (&items[1], &items[2]);
        items.len() == 3
            && n(d1, "messages_out") == 3
            && n(d1, "failed") == 1
            && n(d1, "releases") == 1
            && n(d1, "first_responses") == 3
            && n(d2, "messages_in") == 2
            && n(d2, "messages_out") == 2
            && n(d2, "flows_completed") == 2
    })
    .await;
    let (before, d1, d2) = (&days[0], &days[1], &days[2]);
    assert_eq!(d1["start"], "2026-12-01");
    assert_eq!(n(before, "messages_in"), 0, "an empty day is all zeros");
    let expect = |item: &Value, pairs: &[(&str, i64)]| {
        for (field, want) in pairs {
            assert_eq!(
                n(item, field),
                *want,
                "{field} of {}: {item:#}",
                item["start"]
            );
        }
    };
    expect(
        d1,
        &[
            ("messages_in", 3),
            ("messages_out", 3),
            ("unique_contacts", 2),
            ("new_contacts", 2),
            ("sent", 2),
            ("delivered", 1),
            ("read", 1),
            ("failed", 1),
            // u1's two (answered at once), u2's (answered the next day, counted when asked).
            ("first_responses", 3),
            ("handoffs", 1),
            ("releases", 1),
            ("agent_ms", 28 * MIN),
            ("flows_started", 2),
            ("flows_completed", 2),
            ("flows_abandoned", 0),
            ("campaign_queued", 0),
            ("orders", 0),
        ],
    );
    assert_eq!(d1["delivered_rate"], 0.5);
    assert_eq!(d1["failed_rate"], 0.5);
    assert_eq!(
        d1["median_first_response_ms"], 50,
        "two of three under 100 ms"
    );
    expect(
        d2,
        &[
            ("messages_in", 2),
            ("messages_out", 2),
            ("unique_contacts", 2),
            ("new_contacts", 1),
            ("first_responses", 1),
            ("flows_started", 2),
            ("flows_completed", 2),
            ("handoffs", 0),
        ],
    );
    assert!(d2["delivered_rate"].is_null(), "nothing sent that day");

    // The week (Monday 30 November) and the month count each contact once.
    let (status, week) = analytics(&app, "period=week&from=2026-12-01&to=2026-12-02").await;
    assert_eq!(status, 200, "{week}");
    let items = week["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["start"], "2026-11-30");
    assert_eq!(items[0]["end"], "2026-12-06");
    expect(
        &items[0],
        &[
            ("messages_in", 5),
            ("unique_contacts", 3),
            ("new_contacts", 3),
            ("first_responses", 4),
        ],
    );
    let (_, month) = analytics(&app, "period=month&from=2026-12-01&to=2026-12-31").await;
    expect(
        &month["items"][0],
        &[
            ("messages_in", 5),
            ("unique_contacts", 3),
            ("agent_ms", 28 * MIN),
        ],
    );

    // CSV: a header, then one line per day.
    let resp = app
        .http
        .get(format!(
            "{}/admin/v1/analytics?period=day&from=2026-12-01&to=2026-12-02&format=csv",
            app.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("start,end,messages_in,messages_out,unique_contacts"));
    assert!(
        lines[1].starts_with("2026-12-01,2026-12-01,3,3,2,2,2,1,1,1,3,"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2026-12-02,2026-12-02,2,2,2,1,"),
        "{text}"
    );

    // What a query may ask.
    for (q, want) in [
        ("period=year", 422),
        ("from=2026-13-01", 422),
        ("from=2026-12-02&to=2026-12-01", 422),
        ("from=2020-01-01&to=2026-01-01", 422),
        ("format=xml", 422),
        ("account=nope", 404),
        ("colour=red", 400),
    ] {
        let (status, body) = analytics(&app, q).await;
        assert_eq!(status, want, "{q}: {body}");
    }
    app.stop().await;
}
on_both_stores!(
    scripted_day,
    a_scripted_day_counts_exactly_across_local_midnight
);

/// Chatbot figures (updated in place: counted by difference), orders and payments (exact
/// decimals, a payment read twice counted once), folded straight from the store's rows.
async fn bots_orders_and_payments_fold_by_difference_and_once(db: TestDb) {
    use parley::analytics::{parse_date, Metric, Zones};
    use parley::domain::{AccountId, Zone};
    use parley::store::FoldMemory;
    use rust_decimal::Decimal;

    let store = db.store().await;
    store.migrate().await.unwrap();
    let zones = Zones(
        [(PNID.to_string(), Zone::parse("Asia/Jakarta").unwrap())]
            .into_iter()
            .collect(),
    );
    let mut memory = FoldMemory::default();
    let run = |sql: String| {
        let store = store.clone();
        async move {
            sqlx::query(&sql).execute(store.pool()).await.expect(&sql);
        }
    };
    let bot = |turns: i64, tin: i64, tout: i64, micros: i64, status: &str, at: i64| {
        format!(
            "INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost, cost_micros, response_ms, updated_at) \
             VALUES ('{PNID}', 'u1', 'helper', {T0}, '{status}', {turns}, {tin}, {tout}, '0', {micros}, 0, {at}) \
             ON CONFLICT (account, user_key, bot, started_at) DO UPDATE SET status = excluded.status, turns = excluded.turns, \
             tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, cost_micros = excluded.cost_micros, updated_at = excluded.updated_at"
        )
    };
    run(bot(2, 100, 40, 1_500, "active", T0)).await;
    run(format!(
        "INSERT INTO orders (account, order_number, user_key, subtotal, total, currency, status, payment_status, source, stock, idem_key, created_at, updated_at) \
         VALUES ('{PNID}', 'ORD-1', 'u1', '45000', '45000', 'IDR', 'pending', 'unpaid', 'whatsapp', 'none', 'o1', {T0}, {T0})"
    ))
    .await;
    let pass = store
        .fold_analytics(&zones, T0 + MIN, &mut memory)
        .await
        .unwrap();
    assert_eq!(pass.rows, 2);
    // Later: the session ends after one more turn (23:30 local); the order is paid at 01:00
    // local the next day, in part by a transfer of a decimal amount.
    run(bot(3, 150, 60, 2_500, "completed", T0 + 30 * MIN)).await;
    run(format!(
        "INSERT INTO payments (account, order_id, user_key, provider, kind, method, amount, paid_amount, currency, status, expires_at, idem_key, created_at, updated_at, paid_at) \
         VALUES ('{PNID}', 1, 'u1', 'manual', 'va', 'bca', '45000', '45000.50', 'IDR', 'PAID', {}, 'p1', {T0}, {}, {})",
        T0 + 600 * MIN,
        T0 + 120 * MIN,
        T0 + 120 * MIN
    ))
    .await;
    // Part of it refunded the same day: accepted by the gateway (pending) at 01:30 local.
    run(format!(
        "INSERT INTO refunds (payment_id, amount, currency, reason, status, idem_key, created_at, updated_at) \
         VALUES (1, '5000.25', 'IDR', 'damaged', 'pending', 'r1', {}, {})",
        T0 + 150 * MIN,
        T0 + 150 * MIN
    ))
    .await;
    for _ in 0..2 {
        store
            .fold_analytics(&zones, T0 + 180 * MIN, &mut memory)
            .await
            .unwrap();
    }
    // Read again from an earlier position: a payment or refund counted once stays counted
    // once.
    run(
        "UPDATE analytics_cursor SET position = 0 WHERE source IN ('payments', 'bots', 'refunds')"
            .into(),
    )
    .await;
    store
        .fold_analytics(&zones, T0 + 180 * MIN, &mut memory)
        .await
        .unwrap();
    let account = AccountId::from(PNID);
    let days = store
        .analytics_days(
            &account,
            parse_date("2026-12-01").unwrap(),
            parse_date("2026-12-02").unwrap(),
        )
        .await
        .unwrap();
    let d1 = &days[&parse_date("2026-12-01").unwrap()];
    let d2 = &days[&parse_date("2026-12-02").unwrap()];
    assert_eq!(d1.counters.get(Metric::BotTurns), 3);
    assert_eq!(d1.counters.get(Metric::BotTokensIn), 150);
    assert_eq!(d1.counters.get(Metric::BotTokensOut), 60);
    assert_eq!(d1.bot_cost().to_string(), "0.0025");
    assert_eq!(d1.counters.get(Metric::Orders), 1);
    assert_eq!(d1.money["IDR"].ordered, Decimal::new(45_000, 0));
    assert_eq!(d1.money["IDR"].revenue, Decimal::ZERO);
    assert_eq!(d2.counters.get(Metric::PaymentsPaid), 1);
    assert_eq!(d2.money["IDR"].revenue, Decimal::new(4_500_050, 2));
    assert_eq!(d2.money["IDR"].refunded, Decimal::new(500_025, 2));
    assert_eq!(d2.counters.get(Metric::BotTurns), 0);

    // A hole in the inbox's ids: passed at once when the rows after it are old (a rolled-back
    // insert), waited on when they are recent (a transaction that may still commit).
    let now = T0 + 180 * MIN;
    for (seq, at) in [(1, T0 + 10 * MIN), (3, T0 + 11 * MIN), (5, now - 1_000)] {
        run(format!(
            "INSERT INTO inbox (seq, account, user_key, kind, dedup_key, payload, received_at, state) \
             VALUES ({seq}, '{PNID}', 'u9', 'message', 'm{seq}', '{{}}', {at}, 'done')"
        ))
        .await;
    }
    store
        .fold_analytics(&zones, now, &mut memory)
        .await
        .unwrap();
    let position = count(
        &store,
        "SELECT position FROM analytics_cursor WHERE source = 'inbox'",
    )
    .await;
    assert_eq!(position, 3, "stopped before the recent hole");
    let days = store
        .analytics_days(
            &account,
            parse_date("2026-12-01").unwrap(),
            parse_date("2026-12-02").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        days[&parse_date("2026-12-01").unwrap()]
            .counters
            .get(Metric::MessagesIn),
        2
    );
    assert_eq!(
        days[&parse_date("2026-12-01").unwrap()]
            .counters
            .get(Metric::UniqueContacts),
        1
    );
    assert_eq!(
        days[&parse_date("2026-12-02").unwrap()]
            .counters
            .get(Metric::MessagesIn),
        0
    );
}
on_both_stores!(
    fold_by_difference,
    bots_orders_and_payments_fold_by_difference_and_once
);
