//! The 24 h customer-service window through the daemon: outside it a free-form message is
//! replaced by the template its sender maps, held until the user writes again, or refused;
//! a 131047 failure status closes the window and puts the message through the same policy.

use std::sync::Arc;
use std::time::Duration;

use parley::conversation::WindowPolicy;
use parley_testkit::{status_webhook, text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

const FLOWS: &[(&str, &str)] = &[
    (
        "later.yaml",
        r#"
id: later
triggers: [{keyword: later}]
start: wait
nodes:
  wait:
    wait: {for: 25h}
    next: follow
  follow:
    send:
      text: "Your follow-up"
      outside_window: {template: {name: follow_up, language: en, body_params: [soon]}}
"#,
    ),
    (
        "holdme.yaml",
        r#"
id: holdme
triggers: [{keyword: holdme}]
start: wait
nodes:
  wait:
    wait: {for: 25h}
    next: say
  say:
    send: {text: "Held hello", outside_window: hold}
"#,
    ),
];

async fn outside_the_window_messages_are_templated_held_or_refused(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let clock = ManualClock::at_now();
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in FLOWS {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_clock(settings, Arc::new(clock.clone())).await;
    let (a, b) = ("6281200000601", "6281200000602");
    let ts = clock.0.load(std::sync::atomic::Ordering::SeqCst) / 1000;
    app.post_webhook(&text_webhook(PNID, a, "wamid.W1", "later", ts))
        .await;
    app.post_webhook(&text_webhook(PNID, b, "wamid.W2", "holdme", ts))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    clock.advance(Duration::from_secs(25 * 3600 + 60));
    // A's follow-up goes out as its template; B's waits.
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |at| at
                .iter()
                .any(|x| x.accepted()
                    && x.body.pointer("/template/name").and_then(|v| v.as_str())
                        == Some("follow_up")))
            .await,
        "the mapped template is sent"
    );
    let template = graph
        .delivered()
        .into_iter()
        .find(|x| x.body.get("template").is_some())
        .unwrap();
    assert_eq!(template.to(), Some(a));
    assert_eq!(
        template.body["template"]["components"][0]["parameters"][0]["text"],
        "soon"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        graph
            .delivered()
            .iter()
            .all(|x| x.text() != Some("Held hello")),
        "held while the window is closed"
    );
    let conv = app.conversation(b).await;
    assert_eq!(conv["state"]["held"].as_array().map(Vec::len), Some(1));
    // B writes again: the held message goes out.
    let ts = clock.0.load(std::sync::atomic::Ordering::SeqCst) / 1000;
    app.post_webhook(&text_webhook(PNID, b, "wamid.W3", "hello?", ts))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |at| at
                .iter()
                .any(|x| x.accepted() && x.text() == Some("Held hello")))
            .await,
        "sent once the user writes"
    );

    // The admin API: the default refuses (409); `hold` holds (202 held).
    let send = |policy: Option<&str>| {
        let mut body = json!({"phone_number_id": PNID, "to": a, "text": "Admin says hi"});
        if let Some(p) = policy {
            body["outside_window"] = json!(p);
        }
        body
    };
    let (status, _) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(send(None)),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(send(Some("hold"))),
        )
        .await;
    assert_eq!((status, body["held"].clone()), (202, json!(true)));
    // The same request (its idempotency key) while held, and again once released: held
    // once, sent once.
    let keyed = {
        let mut b = send(Some("hold"));
        b["text"] = json!("Your order shipped");
        b["idempotency_key"] = json!("ship-1");
        b
    };
    for again in [false, true] {
        let (status, body) = app
            .admin(
                Method::POST,
                "/messages",
                Some(ADMIN_TOKEN),
                Some(keyed.clone()),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["duplicate"], json!(again), "{body}");
    }
    let conv = app.conversation(a).await;
    assert_eq!(conv["state"]["held"].as_array().map(Vec::len), Some(2));
    let ts = clock.0.load(std::sync::atomic::Ordering::SeqCst) / 1000;
    app.post_webhook(&text_webhook(PNID, a, "wamid.W9", "any news?", ts))
        .await;
    let shipped = |at: &[parley_testkit::Attempt]| {
        at.iter()
            .filter(|x| x.accepted() && x.text() == Some("Your order shipped"))
            .count()
    };
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |at| shipped(at) == 1)
            .await,
        "sent once the user writes"
    );
    let (status, body) = app
        .admin(Method::POST, "/messages", Some(ADMIN_TOKEN), Some(keyed))
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    assert_eq!(body["duplicate"], json!(true), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shipped(&graph.attempts()), 1, "sent once");
    let (status, _) = app
        .admin(
            Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(send(Some("later"))),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}
on_both_stores!(
    window_policy,
    outside_the_window_messages_are_templated_held_or_refused
);

async fn a_131047_status_closes_the_window_and_holds_the_message(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hi.yaml"),
        "id: hi\ntriggers: [{keyword: hi}]\nstart: s\nnodes:\n  s:\n    send: {text: \"Hi there\"}\n",
    )
    .unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.conversation.outside_window = WindowPolicy::Hold;
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000603";
    app.post_webhook(&text_webhook(PNID, user, "wamid.X1", "hi", now_secs()))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |at| at
                .iter()
                .any(|x| x.accepted() && x.text() == Some("Hi there")))
            .await
    );
    let sent = graph
        .delivered()
        .into_iter()
        .find(|x| x.text() == Some("Hi there"))
        .unwrap();
    // Meta later reports the message failed: the window was closed after all.
    let callback = sent.callback().unwrap().to_string();
    let wamid = match &sent.outcome {
        parley_testkit::Outcome::Accepted(Some(w)) => w.clone(),
        _ => "wamid.OUT".to_string(),
    };
    assert_eq!(
        app.post_webhook(&status_webhook(
            PNID,
            &wamid,
            "failed",
            user,
            Some(&callback),
            now_secs()
        ))
        .await,
        200
    );
    let path = format!("/conversations/{PNID}/{user}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
            conv["window_open"] == false
                && conv["state"]["held"].as_array().map(Vec::len) == Some(1)
        })
        .await,
        "window closed and the message held: {}",
        app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None)
            .await
            .1
    );
    // The user writes: the held message goes out again, then the new reply.
    app.post_webhook(&text_webhook(PNID, user, "wamid.X2", "hi", now_secs()))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |at| at
                .iter()
                .filter(|x| x.accepted() && x.text() == Some("Hi there"))
                .count()
                == 3)
            .await,
        "{:?}",
        graph
            .delivered()
            .iter()
            .map(|x| x.text().map(str::to_string))
            .collect::<Vec<_>>()
    );
    app.stop().await;
}
on_both_stores!(
    window_131047,
    a_131047_status_closes_the_window_and_holds_the_message
);
