//! The shop's sweeps through the whole daemon, in virtual time: an abandoned cart's one
//! reminder (free-form in the window, its template or held outside it), recovered by an order
//! or expired after a week; a subscription's renewal notice once per period and its end
//! once. Each pass is the reconciliation pass, run through the admin API.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::conversation::CoreLogic;
use parley::domain::{AccountId, Currency, Money, ProductKind, UserKey};
use parley::store::{CartChange, Checkout, Customer, Product, Store};
use parley_testkit::{text_webhook, Attempt, FakeGraph};
use serde_json::Value;

use crate::helpers::*;
use crate::on_both_stores;

const H: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Real time moving on (the send gate's pacing needs it), plus what the test skips ahead.
#[derive(Clone)]
struct Skipping {
    start: i64,
    began: Instant,
    skipped: Arc<AtomicI64>,
}

impl Skipping {
    fn new() -> Skipping {
        Skipping {
            start: parley::store::now_ms(),
            began: Instant::now(),
            skipped: Arc::new(AtomicI64::new(0)),
        }
    }
    fn skip(&self, by: Duration) {
        self.skipped
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl parley::actors::Clock for Skipping {
    fn now_ms(&self) -> i64 {
        self.start + self.began.elapsed().as_millis() as i64 + self.skipped.load(Ordering::SeqCst)
    }
}

fn now(clock: &Skipping) -> i64 {
    parley::actors::Clock::now_ms(clock)
}

fn product(sku: &str, name: &str, price: &str, kind: ProductKind) -> Product {
    Product {
        sku: sku.into(),
        name: name.into(),
        description: None,
        price: Money::parse(price, Currency::IDR).unwrap(),
        stock: None,
        reserved: 0,
        image_url: None,
        category: None,
        active: true,
        kind,
        period_days: (kind == ProductKind::Plan).then_some(30),
        access_link: None,
        position: 0,
        created_at: 0,
        updated_at: 0,
    }
}

fn to(graph: &FakeGraph, user: &str) -> Vec<Attempt> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .collect()
}

/// Run a reconciliation pass (and its sweeps) now.
async fn pass(app: &TestApp) {
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Wait until `user` has been sent `n` messages; then a moment more to see no other comes.
async fn sent_to(graph: &FakeGraph, user: &str, n: usize) -> Vec<Attempt> {
    let got = graph
        .wait_until(Duration::from_secs(10), |log| {
            log.iter()
                .filter(|a| a.is_delivery() && a.to() == Some(user))
                .count()
                >= n
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = to(graph, user);
    assert!(got, "{n} message(s) to {user}: {sent:?}");
    assert_eq!(sent.len(), n, "exactly {n} to {user}: {sent:?}");
    sent
}

async fn writes(app: &TestApp, clock: &Skipping, user: &str, wamid: &str) {
    let body = text_webhook(PNID, user, wamid, "hello", now(clock) / 1000);
    assert_eq!(app.post_webhook(&body).await, 200);
}

async fn recovery(store: &Store, user: &str) -> String {
    sqlx::query_scalar::<_, String>(&format!(
        "SELECT recovery FROM carts WHERE user_key = '{user}'"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap()
}

async fn add(store: &Store, clock: &Skipping, user: &str, sku: &str, qty: i64) {
    store
        .change_cart(
            &AccountId::from(PNID),
            &UserKey::new(user),
            &format!("test:{user}:{sku}"),
            CartChange::Add { sku, quantity: qty },
            Currency::IDR,
            now(clock),
        )
        .await
        .unwrap();
}

async fn abandoned_carts_get_one_reminder(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = Skipping::new();
    let mut settings = test_settings(&db, &graph);
    settings.commerce.abandoned_template = Some(
        serde_json::from_value(serde_json::json!({
            "name": "cart_reminder",
            "language": "id",
            "body_params": ["{{items}}", "{{total}}"],
        }))
        .unwrap(),
    );
    let app =
        spawn_app_with_logic_and_clock(settings, Arc::new(CoreLogic), Arc::new(clock.clone()))
            .await;
    let store = db.store().await;
    let account = AccountId::from(PNID);
    store
        .upsert_product(
            &account,
            &product("KOPI", "Kopi Arabica", "25000", ProductKind::Product),
        )
        .await
        .unwrap();
    let (inside, outside, ordered) = ("6281200000601", "6281200000602", "6281200000603");
    writes(&app, &clock, inside, "wamid.S1").await;
    for u in [inside, outside, ordered] {
        add(&store, &clock, u, "KOPI", 2).await;
    }
    // One orders within the hour: no reminder for that cart.
    clock.skip(H);
    let made = store
        .checkout(
            &account,
            &UserKey::new(ordered),
            "test:checkout:603",
            &Customer::default(),
            now(&clock),
        )
        .await
        .unwrap();
    assert!(matches!(made, Checkout::Ordered { .. }), "{made:?}");
    // Not yet two hours.
    pass(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(to(&graph, inside).is_empty() && to(&graph, outside).is_empty());
    assert_eq!(recovery(&store, inside).await, "none");

    clock.skip(H + Duration::from_secs(60));
    writes(&app, &clock, inside, "wamid.S2").await;
    pass(&app).await;
    // In the window: the reminder itself, with its items and total.
    let sent = sent_to(&graph, inside, 1).await;
    let text = sent[0].text().unwrap_or_default();
    assert!(
        text.contains("2 × Kopi Arabica — Rp 50.000")
            && text.contains("Total: Rp 50.000")
            && text.contains("kept"),
        "{text}"
    );
    // Outside it: the template, its parameters filled.
    let sent = sent_to(&graph, outside, 1).await;
    assert_eq!(sent[0].body["type"], "template", "{:?}", sent[0].body);
    assert_eq!(sent[0].body["template"]["name"], "cart_reminder");
    let params = &sent[0].body["template"]["components"][0]["parameters"];
    assert_eq!(params[0]["text"], "2 × Kopi Arabica");
    assert_eq!(params[1]["text"], "Rp 50.000");
    assert!(
        to(&graph, ordered).is_empty(),
        "an ordered cart is not reminded"
    );
    assert_eq!(recovery(&store, inside).await, "sent");
    assert_eq!(recovery(&store, outside).await, "sent");
    assert_eq!(recovery(&store, ordered).await, "none");

    // Another pass, and one after more time: nothing more.
    pass(&app).await;
    clock.skip(H);
    pass(&app).await;
    sent_to(&graph, inside, 1).await;
    sent_to(&graph, outside, 1).await;
    // A crash after the send and before it was recorded leaves the claim: the next pass
    // hands it over again under the same request id, and the conversation drops it.
    sqlx::query("UPDATE carts SET recovery = 'pending' WHERE recovery = 'sent'")
        .execute(store.pool())
        .await
        .unwrap();
    pass(&app).await;
    assert_eq!(recovery(&store, inside).await, "sent");
    assert_eq!(recovery(&store, outside).await, "sent");
    sent_to(&graph, inside, 1).await;
    sent_to(&graph, outside, 1).await;

    // The reminded customer orders: recovered, the cart's status kept as ordered.
    let made = store
        .checkout(
            &account,
            &UserKey::new(inside),
            "test:checkout:601",
            &Customer::default(),
            now(&clock),
        )
        .await
        .unwrap();
    assert!(matches!(made, Checkout::Ordered { .. }), "{made:?}");
    assert_eq!(recovery(&store, inside).await, "recovered");
    // The other does not within a week: expired, the cart still open.
    clock.skip(7 * DAY);
    pass(&app).await;
    assert_eq!(recovery(&store, outside).await, "expired");
    assert_eq!(recovery(&store, inside).await, "recovered");
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM carts WHERE user_key = '{outside}' AND status = 'open'")
        )
        .await,
        1
    );
    sent_to(&graph, outside, 1).await;
    app.stop().await;
}

on_both_stores!(abandoned_carts, abandoned_carts_get_one_reminder);

/// Without a template, a reminder outside the window waits for the customer's next message.
async fn a_reminder_outside_the_window_is_held(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = Skipping::new();
    let settings = test_settings(&db, &graph);
    let app =
        spawn_app_with_logic_and_clock(settings, Arc::new(CoreLogic), Arc::new(clock.clone()))
            .await;
    let store = db.store().await;
    store
        .upsert_product(
            &AccountId::from(PNID),
            &product("TEH", "Teh", "12500", ProductKind::Product),
        )
        .await
        .unwrap();
    let u = "6281200000611";
    add(&store, &clock, u, "TEH", 3).await;
    clock.skip(2 * H + Duration::from_secs(60));
    pass(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(to(&graph, u).is_empty(), "held: {:?}", to(&graph, u));
    assert_eq!(recovery(&store, u).await, "sent");
    pass(&app).await;
    writes(&app, &clock, u, "wamid.H1").await;
    let sent = sent_to(&graph, u, 1).await;
    let text = sent[0].text().unwrap_or_default();
    assert!(
        text.contains("3 × Teh — Rp 37.500") && text.contains("Total: Rp 37.500"),
        "{text}"
    );
    app.stop().await;
}

on_both_stores!(held_reminder, a_reminder_outside_the_window_is_held);

fn template_param(a: &Attempt, i: usize) -> Value {
    a.body["template"]["components"][0]["parameters"][i]["text"].clone()
}

async fn subscriptions_are_told_once_per_period(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = Skipping::new();
    let mut settings = test_settings(&db, &graph);
    settings.accounts[0].timezone = "Asia/Jakarta".into();
    settings.commerce.renewal_template = Some(
        serde_json::from_value(serde_json::json!({
            "name": "plan_renewal",
            "language": "id",
            "body_params": ["{{plan}}", "{{end_date}}"],
        }))
        .unwrap(),
    );
    let app =
        spawn_app_with_logic_and_clock(settings, Arc::new(CoreLogic), Arc::new(clock.clone()))
            .await;
    let store = db.store().await;
    store
        .upsert_product(
            &AccountId::from(PNID),
            &product("PREMIUM", "Premium", "99000", ProductKind::Plan),
        )
        .await
        .unwrap();
    // One customer writes before each pass (free-form); the other never does (the template).
    let (chatty, silent) = ("6281200000621", "6281200000622");
    let start = now(&clock);
    let end = start + 5 * 86_400_000;
    for u in [chatty, silent] {
        sqlx::query(&format!(
            "INSERT INTO subscriptions (account, user_key, sku, period_start, period_end, status, created_at, updated_at) \
             VALUES ('{PNID}', '{u}', 'PREMIUM', {start}, {end}, 'active', {start}, {start})"
        ))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let day = |at: i64| {
        parley::domain::Zone::parse("Asia/Jakarta")
            .unwrap()
            .day(at)
            .to_string()
    };
    // Five days before the end: nothing yet.
    writes(&app, &clock, chatty, "wamid.P1").await;
    pass(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(to(&graph, chatty).is_empty() && to(&graph, silent).is_empty());

    // Three days before it: told once.
    clock.skip(2 * DAY + H);
    writes(&app, &clock, chatty, "wamid.P2").await;
    pass(&app).await;
    pass(&app).await;
    let sent = sent_to(&graph, chatty, 1).await;
    assert_eq!(
        sent[0].text().unwrap_or_default(),
        format!(
            "Your Premium plan ends on {}. To keep it, renew before then: order Premium again here.",
            day(end)
        )
    );
    let sent = sent_to(&graph, silent, 1).await;
    assert_eq!(sent[0].body["template"]["name"], "plan_renewal");
    assert_eq!(template_param(&sent[0], 0), "Premium");
    assert_eq!(template_param(&sent[0], 1), day(end).as_str());

    // Past the end: expired, and told so once.
    clock.skip(3 * DAY);
    writes(&app, &clock, chatty, "wamid.P3").await;
    pass(&app).await;
    pass(&app).await;
    let sent = sent_to(&graph, chatty, 2).await;
    assert_eq!(
        sent[1].text().unwrap_or_default(),
        format!(
            "Your Premium plan ended on {}. To renew it, order Premium again here.",
            day(end)
        )
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM subscriptions WHERE status = 'expired' AND end_notified_until = period_end"
        )
        .await,
        2,
        "both were told (the silent one's notice is held)"
    );
    sent_to(&graph, silent, 1).await;

    // Renewed for a new period (as a paid order does): its own notice in time, once.
    let renewed = now(&clock);
    let new_end = renewed + 30 * 86_400_000;
    sqlx::query(&format!(
        "UPDATE subscriptions SET status = 'active', period_start = {renewed}, period_end = {new_end} \
         WHERE user_key = '{chatty}'"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    pass(&app).await;
    clock.skip(27 * DAY + H);
    writes(&app, &clock, chatty, "wamid.P4").await;
    pass(&app).await;
    pass(&app).await;
    let sent = sent_to(&graph, chatty, 3).await;
    assert!(
        sent[2]
            .text()
            .unwrap_or_default()
            .starts_with(&format!("Your Premium plan ends on {}.", day(new_end))),
        "{:?}",
        sent[2].text()
    );
    app.stop().await;
}

on_both_stores!(subscription_notices, subscriptions_are_told_once_per_period);
