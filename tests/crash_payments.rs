//! The real binary under `kill -9` while it takes a payment, on SQLite and on PostgreSQL:
//! killed while the gateway's create call is unanswered (the PENDING row committed, the
//! request sent), the next process makes the call again with the same idempotency key: one
//! payment at the gateway, the customer told once; killed between the callback's commit and
//! the receipt (the gateway's status API still unanswered), the next process's start-up
//! reconciliation settles it: one receipt.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parley::domain::GatewayKind;
use parley::ingress::signature::sign;
use parley_testkit::gateways::{
    FakeGateway, FakeOutcome, GatewayFault, XENDIT_CALLBACK_TOKEN, XENDIT_SECRET_KEY,
};
use parley_testkit::{text_webhook, FakeGraph};

mod common;
use common::*;

const FLOW: &str = r#"
id: buy
triggers:
  - keyword: buy
start: add
nodes:
  add:
    cart: {add: {sku: KOPI, qty: 1}}
    next: checkout
  checkout:
    checkout: {}
    next: pay
  pay:
    payment: {method: va, bank: bca, expires: 1h}
    next: paid
  paid:
    send: {text: "Paid {{order.number}}: {{order.total | money}}"}
"#;

async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn replies(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .attempts()
        .into_iter()
        .filter(|x| x.is_delivery() && x.to() == Some(user))
        .map(|x| reply_text(&x.body))
        .collect()
}

fn kill_9(pid: u32, reap: &mut Reap) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    if let Some(mut child) = reap.0.take() {
        let _ = child.wait();
    }
}

async fn payments_survive_kill_9(store_url: String) {
    let graph = FakeGraph::start().await;
    let gateway = FakeGateway::start(GatewayKind::Xendit).await;
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(flows.join("buy.yaml"), FLOW).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "payments = \"gw\"\n[payments.providers.gw]\nkind = \"xendit\"\nbase_url = \"{}\"\n\
         secret_key = \"{XENDIT_SECRET_KEY}\"\ncallback_token = \"{XENDIT_CALLBACK_TOKEN}\"\n",
        gateway.base_url
    ));
    std::fs::write(&config, text).unwrap();
    let flows_dir = flows.display().to_string();
    let env = [
        ("PARLEY__STORE__URL", store_url.as_str()),
        ("PARLEY__FLOWS__DIR", flows_dir.as_str()),
        ("PARLEY__FLOWS__WATCH", "false"),
    ];
    let (mut reap, pid, base) = start(&config, &env, Stdio::null()).await;
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{base}/admin/v1/products"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"sku": "KOPI", "name": "Kopi Arabica", "price": "25000", "stock": 10}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{:?}", made.text().await);
    let deliver = |base: String, body: String| {
        let http = http.clone();
        async move {
            let sig = sign(SECRET.as_bytes(), body.as_bytes());
            // As Meta does: again until answered 200.
            for _ in 0..100 {
                let ok = http
                    .post(format!("{base}/webhook"))
                    .header("x-hub-signature-256", &sig)
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200);
                if ok {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the webhook was never taken");
        }
    };
    let ts = || parley::store::now_ms() / 1000;

    // 1. Killed while the gateway holds the create call unanswered.
    let a = "6281500000001";
    gateway.push_fault(GatewayFault::Delay(Duration::from_secs(30)));
    deliver(base.clone(), text_webhook(PNID, a, "wamid.K1", "buy", ts())).await;
    assert!(
        eventually(Duration::from_secs(10), || gateway
            .provider_ref("PAY-00000001")
            .is_some())
        .await,
        "the create never reached the gateway"
    );
    kill_9(pid, &mut reap);
    let (mut reap, pid, base) = start(&config, &env, Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || !replies(&graph, a).is_empty()).await,
        "the payment was not opened again after the restart"
    );
    assert_eq!(
        gateway.created("PAY-00000001"),
        1,
        "one payment at the gateway"
    );
    let creates: Vec<_> = gateway
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(creates.len(), 2, "the create made again after the crash");
    assert_eq!(
        creates[0].header("idempotency-key"),
        creates[1].header("idempotency-key"),
        "with the same idempotency key"
    );
    let told = replies(&graph, a);
    assert_eq!(told.len(), 1, "instructions once: {told:?}");
    assert!(told[0].contains("Rp 25.000"), "{told:?}");

    // 2. The callback committed (answered 200); killed while the gateway's status API, asked
    // before anything is marked paid, has not answered.
    gateway.set_outcome("PAY-00000001", FakeOutcome::Paid, None);
    let gets = || {
        gateway
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    };
    let asked = gets();
    gateway.push_fault(GatewayFault::Delay(Duration::from_secs(30)));
    let url = format!("{base}/payments/gw/callback");
    assert_eq!(gateway.post_callback(&url, "PAY-00000001").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || gets() > asked).await,
        "the status API was never asked"
    );
    kill_9(pid, &mut reap);
    assert_eq!(replies(&graph, a).len(), 1, "no receipt before the status");
    let (_reap, pid, _) = start(&config, &env, Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(15), || replies(&graph, a).len() >= 2).await,
        "the start-up reconciliation did not settle the payment"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        replies(&graph, a),
        vec![
            replies(&graph, a)[0].clone(),
            "Paid ORD-000001: Rp 25.000".to_string()
        ],
        "one receipt"
    );
    assert_eq!(gateway.created("PAY-00000001"), 1);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_survives_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    payments_survive_kill_9(format!("sqlite://{}/pay.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_survives_kill_9_on_postgres() {
    if let Some(url) = fresh_postgres().await {
        payments_survive_kill_9(url.clone()).await;
        drop_postgres(&url).await;
    }
}
