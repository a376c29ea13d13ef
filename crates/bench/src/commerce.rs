//! `parley-bench commerce`: each user buys over and over: "buy" → the catalog as a list → a
//! product picked (into the cart) → "Check out" → an order and a BCA VA at a fake Xendit that
//! answers the create after --gateway-ms and posts the PAID callback --callback-ms after that
//! (the daemon asks its status API before PAID) → the receipt. Orders/s, webhook → reply
//! latency of every step, callbacks/s accepted, daemon CPU per order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use parley::domain::GatewayKind;
use parley_testkit::gateways::{AutoPay, FakeGateway, XENDIT_CALLBACK_TOKEN, XENDIT_SECRET_KEY};
use parley_testkit::{button_reply_webhook, list_reply_webhook, text_webhook};

use crate::daemon::{clk_tck, now_secs, print_store, proc_stats, start_daemon, written_bytes};
use crate::load::{on_own_thread, replying_graph, Poster, Waiters};
use crate::report::{pct, Scrape};
use crate::{Cli, ADMIN, PNID};

/// The bench's flow (the texts below are its).
const FLOW: &str = include_str!("../flows/commerce/buy.yaml");
/// Stock of each product: never runs out.
const STOCK: i64 = 1_000_000_000;

/// What one user measured: webhook → reply ms of each step (buy → list, pick → cart, check out
/// → VA), its orders paid, wrong or missing replies.
#[derive(Default)]
struct Played {
    steps: [Vec<f64>; 3],
    orders: Vec<Paid>,
    wrong: u64,
    /// Of `wrong`: the payment's news came instead of its instructions.
    news_first: u64,
}

/// How `order` names a check-out answered by the payment's news instead of its instructions.
const NEWS_FIRST: &str = "check out → news first: ";

/// An order paid: its number, and when it began (the "buy" posted), its VA reached the Graph
/// API, and its receipt did.
struct Paid {
    order: String,
    started: Instant,
    va: Instant,
    receipt: Instant,
}

/// A reply awaited for at most 30 s: its text and when it reached the Graph API.
async fn next_reply(rx: &mut Replies) -> Option<(String, Instant)> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
}

/// Post `body`; the reply and its webhook → reply ms.
async fn turn(
    poster: &mut Poster,
    rx: &mut Replies,
    body: String,
) -> Option<(String, Instant, f64)> {
    let t = Instant::now();
    if poster.post(body).await.ok() != Some(200) {
        return None;
    }
    let (text, at) = next_reply(rx).await?;
    Some((
        text,
        at,
        at.saturating_duration_since(t).as_secs_f64() * 1000.0,
    ))
}

/// User `u`'s number after it started over `g` times.
fn number(u: usize, g: u32) -> String {
    format!("628{:02}{u:08}", 10 + g)
}

/// User `u` buys until `stop` (an order under way is finished). After a wrong or missing
/// reply its conversation is in no known state: it goes on as a new customer (a new number).
async fn shopper(
    base: String,
    u: usize,
    products: usize,
    waiters: Waiters,
    stop: Arc<AtomicBool>,
) -> Played {
    let mut poster = Poster::new(&base);
    let mut played = Played::default();
    let mut g = 0;
    let register = |user: &str| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        waiters.lock().unwrap().insert(user.to_string(), tx);
        rx
    };
    let mut user = number(u, g);
    let mut rx = register(&user);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match order(
            &mut poster,
            &mut rx,
            &user,
            &mut n,
            products,
            &mut played.steps,
        )
        .await
        {
            Ok(o) => played.orders.push(o),
            Err(why) => {
                eprintln!("user {user}: {why}");
                played.wrong += 1;
                // The payment's news reached the conversation before the answer of the
                // create call it waits on (see BENCHMARKS.md).
                played.news_first += u64::from(why.starts_with(NEWS_FIRST));
                waiters.lock().unwrap().remove(&user);
                g += 1;
                user = number(u, g);
                rx = register(&user);
            }
        }
    }
    played
}

/// Each user's replies as the fake Graph API takes them.
type Replies = tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>;

/// One whole purchase, or what went wrong. Each step's webhook → reply ms goes into `steps`.
async fn order(
    poster: &mut Poster,
    rx: &mut Replies,
    user: &str,
    n: &mut u64,
    products: usize,
    steps: &mut [Vec<f64>; 3],
) -> Result<Paid, String> {
    let mut wamid = || {
        *n += 1;
        format!("wamid.C{user}-{n}")
    };
    let started = Instant::now();
    let i = fastrand::usize(..products);
    let (sku, name) = (format!("P{i}"), format!("Product {i}"));
    let buy = text_webhook(PNID, user, &wamid(), "buy", now_secs());
    let (text, _, ms) = turn(poster, rx, buy).await.ok_or("buy: no reply")?;
    if text != "Pick a product." {
        return Err(format!("buy → {text:?}"));
    }
    steps[0].push(ms);
    let pick = list_reply_webhook(PNID, user, &wamid(), &sku, &name, now_secs());
    let (text, _, ms) = turn(poster, rx, pick)
        .await
        .ok_or_else(|| format!("{sku}: no reply"))?;
    if !text.starts_with(&format!("In your cart:\n1 × {name} — ")) {
        return Err(format!("{sku} → {text:?}"));
    }
    steps[1].push(ms);
    let checkout = button_reply_webhook(PNID, user, &wamid(), "checkout", "Check out", now_secs());
    let (text, va_at, ms) = turn(poster, rx, checkout)
        .await
        .ok_or("check out: no reply")?;
    if text.starts_with("Payment of ") {
        return Err(format!("{NEWS_FIRST}{text:?}"));
    }
    if let Some(rest) = text.strip_prefix("Paid: order ") {
        // The callback beat the create call's answer: the flow went its paid way with no
        // instructions to pay what is paid.
        let order = rest.split_once(',').map_or(rest, |(o, _)| o).to_string();
        steps[2].push(ms);
        return Ok(Paid {
            order,
            started,
            va: va_at,
            receipt: va_at,
        });
    }
    let order = text
        .strip_prefix("Please transfer ")
        .and_then(|t| t.rsplit_once("(order "))
        .and_then(|(_, o)| o.strip_suffix(")."))
        .map(str::to_string)
        .ok_or_else(|| format!("check out → {text:?}"))?;
    steps[2].push(ms);
    let (text, at) = next_reply(rx)
        .await
        .ok_or_else(|| format!("no receipt for {order}"))?;
    if !text.starts_with(&format!("Paid: order {order}, ")) {
        return Err(format!("the receipt for {order} → {text:?}"));
    }
    Ok(Paid {
        order,
        started,
        va: va_at,
        receipt: at,
    })
}

/// Products P0…P{n-1} through the admin API, with stock that never runs out.
async fn seed(client: &reqwest::Client, base: &str, products: usize) -> anyhow::Result<()> {
    for i in 0..products {
        let r = client
            .post(format!("{base}/admin/v1/products"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "sku": format!("P{i}"), "name": format!("Product {i}"),
                "price": format!("{}", 10_000 * (i + 1)), "stock": STOCK,
            }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("seeding P{i}: {} {}", r.status(), r.text().await?);
        }
    }
    Ok(())
}

/// (units sold, units still reserved) over the products, from the admin API.
async fn stock(client: &reqwest::Client, base: &str, products: usize) -> (i64, i64) {
    let (mut sold, mut reserved) = (0, 0);
    for i in 0..products {
        let p: serde_json::Value = match client
            .get(format!("{base}/admin/v1/products/P{i}"))
            .bearer_auth(ADMIN)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        sold += STOCK - p["stock"].as_i64().unwrap_or(STOCK);
        reserved += p["reserved"].as_i64().unwrap_or(0);
    }
    (sold, reserved)
}

pub(crate) async fn commerce(
    cli: &Cli,
    users: usize,
    seconds: u64,
    gateway_ms: u64,
    callback_ms: u64,
    products: usize,
) -> anyhow::Result<()> {
    if !(1..=9).contains(&products) {
        bail!("--products: 1 to 9 (the driver picks from the list's first page)");
    }
    let (graph, waiters, replies): (_, Waiters, _) = replying_graph().await;
    // On a thread of its own, as the real one runs elsewhere: its answer and its callbacks
    // are not made late by the driver's users.
    let gateway = on_own_thread("fake-gateway", || FakeGateway::start(GatewayKind::Xendit)).await;
    let flows = tempfile::tempdir()?;
    std::fs::write(flows.path().join("buy.yaml"), FLOW)?;
    // The callback URL is the gateway's dashboard setting (Xendit invoices take none).
    let extra = format!(
        "payments = \"xendit\"\n[flows]\ndir = \"{}\"\nwatch = false\n\
         [payments.providers.xendit]\nkind = \"xendit\"\nbase_url = \"{}\"\nsecret_key = \"{XENDIT_SECRET_KEY}\"\ncallback_token = \"{XENDIT_CALLBACK_TOKEN}\"\n",
        flows.path().display(),
        gateway.base_url
    );
    let daemon = start_daemon(cli, &graph, "10m", &extra).await?;
    gateway.auto_pay(AutoPay {
        answer_after: Duration::from_millis(gateway_ms),
        callback_after: Duration::from_millis(callback_ms),
        callback_url: format!("{}/payments/xendit/callback", daemon.base),
        attempts: 5,
    });
    let client = reqwest::Client::new();
    seed(&client, &daemon.base, products).await?;
    let pid = daemon.child.id();
    let (_, _, ticks0) = proc_stats(pid);
    let written0 = written_bytes(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for u in 0..users {
        tasks.push(tokio::spawn(shopper(
            daemon.base.clone(),
            u,
            products,
            waiters.clone(),
            stop.clone(),
        )));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now();
    let mut played = Played::default();
    for t in tasks {
        if let Ok(p) = t.await {
            for (all, mine) in played.steps.iter_mut().zip(p.steps) {
                all.extend(mine);
            }
            played.orders.extend(p.orders);
            played.wrong += p.wrong;
            played.news_first += p.news_first;
        }
    }
    let drained = started.elapsed().as_secs_f64();
    let (peak_kib, rss_kib, ticks1) = proc_stats(pid);
    let cpu_us = (ticks1 - ticks0) as f64 * 1e6 / clk_tck() as f64;
    let written = written_bytes(pid).saturating_sub(written0);
    let metrics = Scrape::read(&daemon.base).await;
    let (sold, reserved) = stock(&client, &daemon.base, products).await;
    let window = deadline.duration_since(started).as_secs_f64();

    // Each callback to its order (the create's description is "Order ORD-…").
    let order_of: HashMap<String, String> = gateway
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.target == "/v2/invoices")
        .filter_map(|r| {
            let b = r.json();
            let order = b["description"]
                .as_str()?
                .strip_prefix("Order ")?
                .to_string();
            Some((b["external_id"].as_str()?.to_string(), order))
        })
        .collect();
    let posted = gateway.posted();
    let accepted: Vec<_> = posted
        .iter()
        .filter(|p| (200..300).contains(&p.status))
        .collect();
    let sent_at: HashMap<&str, Instant> = accepted
        .iter()
        .filter_map(|p| Some((order_of.get(&p.payment_id)?.as_str(), p.sent)))
        .collect();
    let mut to_receipt: Vec<f64> = Vec::new();
    let mut va_to_receipt: Vec<f64> = Vec::new();
    let mut whole: Vec<f64> = Vec::new();
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
    for p in &played.orders {
        if let Some(sent) = sent_at.get(p.order.as_str()) {
            to_receipt.push(ms(*sent, p.receipt));
        }
        va_to_receipt.push(ms(p.va, p.receipt));
        whole.push(ms(p.started, p.receipt));
    }
    for v in [&mut to_receipt, &mut va_to_receipt, &mut whole] {
        v.sort_by(f64::total_cmp);
    }
    for s in played.steps.iter_mut() {
        s.sort_by(f64::total_cmp);
    }
    let mut lat: Vec<f64> = played.steps.concat();
    lat.sort_by(f64::total_cmp);
    let orders = played.orders.len();
    let in_window = played
        .orders
        .iter()
        .filter(|p| p.receipt <= deadline)
        .count();
    let accepted_in_window = accepted.iter().filter(|p| p.answered <= deadline).count();

    print_store(cli);
    if let Some(m) = &metrics {
        m.print_writer(drained);
    }
    println!(
        "users: {users}, duration: {window:.1} s (then {:.1} s to finish the orders under way); {products} products",
        drained - window
    );
    println!(
        "gateway: fake Xendit, create answered after {gateway_ms} ms, the PAID callback {callback_ms} ms after that"
    );
    println!(
        "orders: {in_window} paid in {window:.1} s ({:.1}/s), {orders} in all; wrong or missing replies: {} (the payment's news before its instructions: {}; each such user went on as a new customer)",
        in_window as f64 / window,
        played.wrong,
        played.news_first
    );
    println!(
        "stock: {sold} units sold, {reserved} still reserved (orders paid: {orders}); replies: {}",
        replies.load(Ordering::Relaxed)
    );
    println!(
        "webhook → reply ms (all steps): p50 {:.2}, p99 {:.2}, max {:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    let names = [
        "buy → list",
        "pick → cart",
        "check out → VA (gateway included)",
    ];
    println!(
        "  {}",
        names
            .iter()
            .zip(&played.steps)
            .map(|(n, s)| format!("{n}: p50 {:.2}, p99 {:.2}", pct(s, 0.5), pct(s, 0.99)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "callback → receipt ms: p50 {:.2}, p99 {:.2}, max {:.2} ({} matched); VA → receipt p50 {:.2}, p99 {:.2}; a whole order (buy → receipt) p50 {:.0}, p99 {:.0}",
        pct(&to_receipt, 0.5),
        pct(&to_receipt, 0.99),
        pct(&to_receipt, 1.0),
        to_receipt.len(),
        pct(&va_to_receipt, 0.5),
        pct(&va_to_receipt, 0.99),
        pct(&whole, 0.5),
        pct(&whole, 0.99)
    );
    println!(
        "callbacks: {} accepted (2xx) in {window:.1} s ({:.1}/s), {} in all; {} not (status or retry: {:?})",
        accepted_in_window,
        accepted_in_window as f64 / window,
        accepted.len(),
        posted.len() - accepted.len(),
        posted
            .iter()
            .filter(|p| !(200..300).contains(&p.status))
            .map(|p| (p.status, p.attempt))
            .take(5)
            .collect::<Vec<_>>()
    );
    println!(
        "daemon: peak RSS {:.1} MiB, RSS now {:.1} MiB, CPU {:.0} µs per order ({:.0} µs per webhook or callback)",
        peak_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        cpu_us / (orders as f64).max(1.0),
        cpu_us / ((lat.len() + accepted.len()) as f64).max(1.0)
    );
    println!(
        "store: {:.1} KB written per order",
        written as f64 / 1000.0 / (orders as f64).max(1.0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's gateway: a create answered after `answer_after`; PENDING until the
    /// callback, which comes `callback_after` later with Xendit's token, then PAID; a
    /// callback the receiver refuses is posted again.
    #[tokio::test]
    async fn a_payment_pays_itself_after_its_answer() {
        let gateway = FakeGateway::start(GatewayKind::Xendit).await;
        // A receiver that refuses the first callback, as a daemon answering 404 would.
        let got: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
        let app = {
            let got = got.clone();
            axum::Router::new().route(
                "/payments/xendit/callback",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let got = got.clone();
                    async move {
                        let token = headers
                            .get("x-callback-token")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let mut got = got.lock().unwrap();
                        got.push((Instant::now(), format!("{token} {body}")));
                        if got.len() == 1 {
                            axum::http::StatusCode::NOT_FOUND
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        gateway.auto_pay(AutoPay {
            answer_after: Duration::from_millis(50),
            callback_after: Duration::from_millis(200),
            callback_url: format!("http://{addr}/payments/xendit/callback"),
            attempts: 3,
        });
        let client = reqwest::Client::new();
        let t = Instant::now();
        let created: serde_json::Value = client
            .post(format!("{}/v2/invoices", gateway.base_url))
            .basic_auth(XENDIT_SECRET_KEY, Some(""))
            .json(
                &serde_json::json!({"external_id": "PAY-00000001", "amount": 10000,
                "currency": "IDR", "description": "Order ORD-000001", "payment_methods": ["BCA"]}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let answered = t.elapsed();
        assert!(answered >= Duration::from_millis(50), "{answered:?}");
        let status = |id: String| {
            let (client, base) = (client.clone(), gateway.base_url.clone());
            async move {
                let v: serde_json::Value = client
                    .get(format!("{base}/v2/invoices/{id}"))
                    .basic_auth(XENDIT_SECRET_KEY, Some(""))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["status"].as_str().unwrap_or_default().to_string()
            }
        };
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(status(id.clone()).await, "PENDING");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(status(id).await, "PAID");
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "refused once, then taken");
        assert!(got[0].0.duration_since(t) >= answered + Duration::from_millis(200));
        assert!(got[1].0.duration_since(got[0].0) >= Duration::from_millis(200));
        assert!(
            got[1].1.starts_with(&format!("{XENDIT_CALLBACK_TOKEN} {{")),
            "{}",
            got[1].1
        );
        assert!(got[1].1.contains("\"status\":\"PAID\""), "{}", got[1].1);
        let posted = gateway.posted();
        assert_eq!(
            posted
                .iter()
                .map(|p| (p.payment_id.as_str(), p.status, p.attempt))
                .collect::<Vec<_>>(),
            vec![("PAY-00000001", 404, 1), ("PAY-00000001", 200, 2)]
        );
    }
}
