//! A custom order from chat through the whole daemon: described in words, a reference
//! picture sent, recorded once (a redelivered webhook makes no second one), listed and moved
//! on by the owner through the admin API, the customer told of each move; a move backwards
//! refused.

use std::sync::Arc;
use std::time::Duration;

use parley::domain::{AccountId, CustomOrderStatus};
use parley_testkit::{media_webhook, text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

const FLOW: &str = r#"
id: custom
triggers:
  - keyword: custom
start: ask_wish
nodes:
  ask_wish:
    ask: {type: text, prompt: "What would you like made?", save: wish}
    next: ask_photo
  ask_photo:
    ask: {type: media, prompt: "Send a picture for reference.", save: photo}
    next: record
  record:
    custom_order: {description: "{{wish}}", image: "{{photo}}"}
    branches: {empty: nothing}
    next: thanks
  thanks:
    send: {text: "Custom order #{{custom_order.id}} received; we will send you a quote."}
  nothing:
    send: {text: "Nothing to make."}
"#;

fn replies(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .map(|a| a.text().unwrap_or_default().to_string())
        .collect()
}

async fn wait_replies(graph: &FakeGraph, user: &str, n: usize) -> Vec<String> {
    let ok = eventually(Duration::from_secs(10), || async {
        replies(graph, user).len() >= n
    })
    .await;
    let got = replies(graph, user);
    assert!(ok, "waited for {n} replies to {user}, got {got:?}");
    got
}

async fn a_custom_order_from_chat(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("custom.yaml"), FLOW).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    let owner = "6281299990000";
    settings.accounts[0].owner_wa_id = Some(owner.into());
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    let account = AccountId::from(PNID);
    let u = "6281200000601";
    let t = now_secs();
    app.post_webhook(&text_webhook(PNID, u, "wamid.C1", "custom", t))
        .await;
    wait_replies(&graph, u, 1).await;
    app.post_webhook(&text_webhook(
        PNID,
        u,
        "wamid.C2",
        "A blue birthday cake for 20 <people> & a card",
        t,
    ))
    .await;
    wait_replies(&graph, u, 2).await;
    graph.add_media("2001", b"JPEGDATA", "image/jpeg");
    let picture = media_webhook(
        PNID,
        u,
        "wamid.C3",
        "image",
        "2001",
        "image/jpeg",
        "00",
        false,
    );
    app.post_webhook(&picture).await;
    let told = wait_replies(&graph, u, 3).await;
    assert_eq!(
        told[2],
        "Custom order #1 received; we will send you a quote."
    );
    // Meta delivers the picture again: nothing more.
    app.post_webhook(&picture).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replies(&graph, u).len(), 3);
    let made = store.custom_orders(&account, None, None, 10).await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(
        made[0].description,
        "A blue birthday cake for 20 <people> & a card"
    );
    assert_eq!(made[0].media_id.as_deref(), Some("2001"));
    assert_eq!(made[0].status, CustomOrderStatus::New);
    // The owner hears of it from the reconciliation pass, once.
    for _ in 0..2 {
        let (status, _) = app
            .admin(
                reqwest::Method::POST,
                "/payments/reconcile",
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    // The owner's window is closed: held until they write.
    app.post_webhook(&text_webhook(PNID, owner, "wamid.O1", "hi", t))
        .await;
    let to_owner = wait_replies(&graph, owner, 1).await;
    assert_eq!(
        to_owner,
        vec![format!(
            "New custom order #1 from +{u} (with a picture):\nA blue birthday cake for 20 <people> & a card"
        )]
    );

    // The owner lists, quotes, the customer hears the quote.
    let (status, body) = app
        .admin(
            reqwest::Method::GET,
            "/custom-orders?status=new",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["id"], 1, "{body}");
    assert_eq!(body["items"][0]["media_id"], "2001", "{body}");
    let (status, body) = app
        .admin(
            reqwest::Method::PATCH,
            "/custom-orders/1",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"status": "quoted", "notes": "Rp 350.000, ready in 3 days"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "quoted");
    let told = wait_replies(&graph, u, 4).await;
    assert_eq!(
        told[3],
        "Your custom order #1 has a quote:\nRp 350.000, ready in 3 days"
    );
    // Backwards, unknown, malformed: refused with a clear answer.
    let (status, body) = app
        .admin(
            reqwest::Method::PATCH,
            "/custom-orders/1",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"status": "new"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("quoted"), "{body}");
    let (status, _) = app
        .admin(
            reqwest::Method::PATCH,
            "/custom-orders/99",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"status": "done"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .admin(
            reqwest::Method::PATCH,
            "/custom-orders/1",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"status": "baked"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("baked"), "{body}");
    let (status, _) = app
        .admin(reqwest::Method::GET, "/custom-orders/1", None, None)
        .await;
    assert_eq!(status, 401, "the admin token is asked");
    app.stop().await;
}
on_both_stores!(a_custom_order_is_made_from_chat, a_custom_order_from_chat);

/// With `commerce.owner_template`, an owner whose window is closed is not kept waiting: the
/// news goes as that template, its text flattened to one line as Meta takes a parameter.
async fn the_owner_hears_by_template(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("custom.yaml"), FLOW).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    let owner = "6281299990002";
    settings.accounts[0].owner_wa_id = Some(owner.into());
    settings.commerce.owner_template = Some(
        serde_json::from_value(serde_json::json!({"name": "owner_news", "language": "id",
            "body_params": ["{{text}}"]}))
        .unwrap(),
    );
    let app = spawn_app_with_flows(settings).await;
    let u = "6281200000602";
    let t = now_secs();
    for (i, text) in ["custom", "Two mugs\nwith    our logo"].iter().enumerate() {
        app.post_webhook(&text_webhook(PNID, u, &format!("wamid.T{i}"), text, t))
            .await;
        wait_replies(&graph, u, i + 1).await;
    }
    graph.add_media("2002", b"JPEGDATA", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        u,
        "wamid.T9",
        "image",
        "2002",
        "image/jpeg",
        "00",
        false,
    ))
    .await;
    wait_replies(&graph, u, 3).await;
    let (status, _) = app
        .admin(
            reqwest::Method::POST,
            "/payments/reconcile",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let ok = graph
        .wait_until(Duration::from_secs(10), |log| {
            log.iter().any(|a| a.is_delivery() && a.to() == Some(owner))
        })
        .await;
    assert!(ok, "the owner was sent nothing");
    let sent: Vec<_> = graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(owner))
        .collect();
    assert_eq!(sent.len(), 1);
    let b = &sent[0].body;
    assert_eq!(b["type"], "template", "{b}");
    assert_eq!(b["template"]["name"], "owner_news");
    assert_eq!(
        b["template"]["components"][0]["parameters"][0]["text"],
        format!("New custom order #1 from +{u} (with a picture): Two mugs with our logo")
    );
    app.stop().await;
}
on_both_stores!(
    an_owner_outside_the_window_hears_by_template,
    the_owner_hears_by_template
);
