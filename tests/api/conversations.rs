//! Conversations: order, exactly-once across restarts, isolation of failures, passivation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parley_testkit::{text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

async fn one_conversations_events_are_applied_in_inbox_order_even_when_sent_concurrently(
    db: TestDb,
) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    // 60 replies to one user are past the pair-rate burst (45); this test is about order.
    settings.accounts[0].pair_rate_interval = Duration::ZERO;
    let app = Arc::new(spawn_app(settings, Arc::new(Echo)).await);
    let store = db.store().await;
    let user = "6281200000010";
    let n = 60;
    let posts = (0..n).map(|i| {
        let app = app.clone();
        async move {
            let body = text_webhook(
                PNID,
                user,
                &format!("wamid.ORDER{i:03}"),
                &format!("m{i:03}"),
                now_secs(),
            );
            app.post_webhook(&body).await
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert!(graph.wait_delivered(n, Duration::from_secs(20)).await);

    // The order the inbox committed them in is the order the replies went out.
    let committed: Vec<String> =
        sqlx::query_scalar("SELECT wamid FROM inbox WHERE kind = 'message' ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let expected: Vec<String> = committed
        .iter()
        .map(|w| format!("echo: m{}", &w["wamid.ORDER".len()..]))
        .collect();
    let replies: Vec<String> = graph.delivered_texts();
    assert_eq!(replies, expected);
    Arc::try_unwrap(app).ok().expect("sole owner").stop().await;
}
on_both_stores!(
    order,
    one_conversations_events_are_applied_in_inbox_order_even_when_sent_concurrently
);

/// A clean stop leaves no send ambiguous: whatever was queued is sent at once by the next
/// process, so a long ambiguity grace period cannot delay it.
fn restart_settings(db: &TestDb, graph: &FakeGraph) -> parley::config::Settings {
    let mut s = test_settings(db, graph);
    // Sends whose outcome the first life never learnt (a timeout under load) wait this long
    // for a status webhook before they are sent again.
    s.outbox.ambiguous_resend_after = Duration::from_secs(3);
    s
}

async fn a_restart_mid_stream_applies_every_message_once_and_sends_every_reply(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    // Replies are slow to be accepted at first, so that sends are pending at the stop.
    let users: Vec<String> = (0..8).map(|u| format!("62812000001{u:02}")).collect();
    let per_user = 12;
    let bodies: Vec<(String, String)> = (0..per_user)
        .flat_map(|i| users.iter().map(move |u| (u.clone(), i)))
        .map(|(u, i)| {
            (
                format!("wamid.R{u}-{i:02}"),
                text_webhook(
                    PNID,
                    &u,
                    &format!("wamid.R{u}-{i:02}"),
                    &format!("{u}-{i:02}"),
                    now_secs(),
                ),
            )
        })
        .collect();
    let half = bodies.len() / 2;

    for _ in 0..12 {
        graph.push_fault(parley_testkit::Fault::Delay(Duration::from_millis(400)));
    }
    let app = spawn_app(restart_settings(&db, &graph), Arc::new(Echo)).await;
    let mut unacked = Vec::new();
    for (i, (_, body)) in bodies.iter().enumerate().take(half) {
        // Fire the second quarter without waiting, then stop while they are in flight.
        if i == half / 2 {
            for (_, b) in &bodies[i..half] {
                let app_base = app.base.clone();
                let b = b.clone();
                unacked.push(tokio::spawn(async move {
                    let sig = parley::ingress::signature::sign(SECRET.as_bytes(), b.as_bytes());
                    reqwest::Client::new()
                        .post(format!("{app_base}/webhook"))
                        .header("x-hub-signature-256", sig)
                        .body(b)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            break;
        }
        assert_eq!(app.post_webhook(body).await, 200);
    }
    app.stop().await;
    let mut results = Vec::new();
    for h in unacked {
        results.push(h.await.unwrap());
    }
    let store = db.store().await;
    assert!(
        count(
            &store,
            "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending') AND kind = 'message'"
        )
        .await
            > 0,
        "replies were still to send at the stop"
    );

    // Second life, same store. Meta redelivers everything (it does for any non-200, and
    // sometimes anyway), then the rest of the stream arrives.
    let app = spawn_app(restart_settings(&db, &graph), Arc::new(Echo)).await;
    // Like Meta, report what was accepted: its status echoes our outbox id, which settles a
    // send whose answer the first life never saw (so it is not sent twice).
    for (n, a) in graph.delivered().iter().enumerate() {
        let (Some(to), Some(cb)) = (a.to(), a.callback()) else {
            continue;
        };
        let wamid = match &a.outcome {
            parley_testkit::Outcome::Accepted(Some(w)) => w.clone(),
            _ => format!("wamid.SETTLE{n}"),
        };
        let status = parley_testkit::status_webhook(PNID, &wamid, "sent", to, Some(cb), now_secs());
        assert_eq!(app.post_webhook(&status).await, 200);
    }
    for (_, body) in &bodies {
        assert_eq!(app.post_webhook(body).await, 200);
    }
    let total = bodies.len();
    assert!(
        graph.wait_delivered(total, Duration::from_secs(30)).await,
        "every reply sent"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = db.store().await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        total as i64
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'").await,
        0
    );
    // Exactly one reply per message, per user in order.
    let delivered = graph.delivered();
    assert_eq!(delivered.len(), total, "no duplicate reply");
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for a in &delivered {
        per.entry(a.to().unwrap().to_string())
            .or_default()
            .push(a.text().unwrap().to_string());
    }
    // Messages posted concurrently may commit in either order; the replies follow the
    // order the inbox committed them in.
    let committed: Vec<(String, String)> =
        sqlx::query_as("SELECT user_key, wamid FROM inbox WHERE kind = 'message' ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    for u in &users {
        let expected: Vec<String> = committed
            .iter()
            .filter(|(user, _)| user == u)
            .map(|(_, wamid)| format!("echo: {}", &wamid["wamid.R".len()..]))
            .collect();
        assert_eq!(expected.len(), per_user as usize);
        assert_eq!(per.get(u), Some(&expected), "user {u}");
    }
    for state in sqlx::query_scalar::<_, String>("SELECT state FROM conversations")
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        assert!(
            state.contains(&format!("\"inbound_count\":{per_user}")),
            "{state}"
        );
    }
    app.stop().await;
}
on_both_stores!(
    restart,
    a_restart_mid_stream_applies_every_message_once_and_sends_every_reply
);

async fn a_poison_message_is_dead_lettered_without_touching_other_conversations(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let victim = "6281200000020";
    let bystander = "6281200000021";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, victim, "wamid.P1", "boom", now_secs()))
            .await,
        200
    );
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            bystander,
            "wamid.P2",
            "fine",
            now_secs()
        ))
        .await,
        200
    );
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, victim, "wamid.P3", "after", now_secs()))
            .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(20), |a| {
                let texts: Vec<_> = a
                    .iter()
                    .filter(|a| a.accepted())
                    .filter_map(|a| a.text())
                    .collect();
                texts.contains(&"echo: fine") && texts.contains(&"echo: after")
            })
            .await,
        "the bystander is answered and the victim's next message too"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM dead_letters WHERE kind = 'inbox_event'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE state = 'dead'").await,
        1
    );
    // The inbox lag (read from the store) does not count the dead one as waiting.
    assert_eq!(store.inbox_backlog().await.unwrap(), (0, None));
    assert!(graph
        .delivered()
        .iter()
        .all(|a| a.text() != Some("echo: boom")));
    // The dead message stays in the conversation's history, before the one after it.
    let inbound = inbound_wamids(&app.conversation(victim).await);
    assert_eq!(inbound, ["wamid.P1", "wamid.P3"]);
    app.stop().await;
}
/// A timer whose step fails every time is dead-lettered after
/// `conversation.max_event_attempts` and stops firing; the conversation goes on.
async fn a_timer_that_fails_every_time_is_dead_lettered(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.conversation.max_event_attempts = 2;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let store = db.store().await;
    let user = "6281200000022";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.T1", "tick", now_secs()))
            .await,
        200
    );
    // Fired, failed; handed over again (30 s later), failed again: dead.
    assert!(
        eventually(Duration::from_secs(90), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM dead_letters WHERE kind = 'timer_event'",
            )
            .await
                == 1
        })
        .await,
        "the failing timer is dead-lettered"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM timers WHERE state = 'dead'").await,
        1
    );
    assert!(echoed(&app, &graph, user, "wamid.T2", "after").await);
    app.stop().await;
}
on_both_stores!(timer_poison, a_timer_that_fails_every_time_is_dead_lettered);

on_both_stores!(
    poison,
    a_poison_message_is_dead_lettered_without_touching_other_conversations
);

async fn idle_conversations_passivate_and_come_back_with_their_state(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.conversation.idle_timeout = Duration::from_millis(300);
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let user = "6281200000030";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.IDLE1", "one", now_secs()))
            .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.text() == Some("echo: one") && a.accepted()))
            .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.live_conversations().await == 0
        })
        .await,
        "passivated"
    );
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.IDLE2", "two", now_secs()))
            .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.text() == Some("echo: two") && a.accepted()))
            .await
    );
    let store = db.store().await;
    let state: String = sqlx::query_scalar("SELECT state FROM conversations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        state.contains("\"inbound_count\":2"),
        "state survived passivation: {state}"
    );
    app.stop().await;
}
on_both_stores!(
    passivation,
    idle_conversations_passivate_and_come_back_with_their_state
);

/// A commit that lands but is reported failed (a PostgreSQL connection cut during COMMIT)
/// leaves the conversation unsure whether its step happened. It reads its state back, finds
/// the message applied, and sends the reply that commit stored: once, and without a restart.
async fn a_commit_reported_failed_that_landed_still_sends_its_reply_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let user = "6281200000040";
    let store = db.store().await;
    // The conversation is up and idle before the fault.
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.LAND1", "one", now_secs()))
            .await,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            graph.delivered_texts() == ["echo: one"]
        })
        .await
    );

    for (round, wamid) in ["wamid.LAND2", "wamid.LAND3"].into_iter().enumerate() {
        parley::store::writer::faults::lose_commit_acks(&db.url, 1);
        let text = ["two", "three"][round];
        // Stored (the commit landed), so Meta gets its 200 either way.
        assert_eq!(
            app.post_webhook(&text_webhook(PNID, user, wamid, text, now_secs()))
                .await,
            200
        );
        // The conversation's replay (after 1 s) and any later scan must not send it again.
        assert_sent_once(
            &graph,
            ["echo: two", "echo: three"][round],
            "the reply stored by the commit reported failed",
            Duration::from_millis(1500),
        )
        .await;
    }
    // An agent's message commits alone: its commit is the one reported failed. The agent
    // hears of a failure, but the message is stored, so it goes out, once.
    parley::store::writer::faults::lose_commit_acks(&db.url, 1);
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(serde_json::json!({"phone_number_id": PNID, "to": user, "text": "from the desk"})),
        )
        .await;
    assert!(
        status >= 500,
        "the agent was told it failed: {status} {body}"
    );
    assert_sent_once(
        &graph,
        "from the desk",
        "the agent's stored message",
        Duration::from_millis(1500),
    )
    .await;

    let applied = count(
        &store,
        "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done'",
    )
    .await;
    assert_eq!(applied, 3, "each message applied once");
    let rows = count(&store, "SELECT COUNT(*) FROM outbox WHERE kind = 'message'").await;
    assert_eq!(rows, 4, "one row per reply and one for the agent's message");
    app.stop().await;
}
on_both_stores!(
    landed,
    a_commit_reported_failed_that_landed_still_sends_its_reply_once
);

/// Text Meta may pass through but PostgreSQL's text type refuses (a NUL character) in a
/// message and a profile name: the conversation still answers, and answers what comes next.
async fn a_nul_character_does_not_stall_a_conversation(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let user = "6281200000023";
    let body = text_webhook(PNID, user, "wamid.N1", "a\u{0}b", now_secs())
        .replace("Test User", "Te\\u0000st");
    assert!(body.contains("\\u0000"), "{body}");
    assert_eq!(app.post_webhook(&body).await, 200);
    assert!(
        echoed(&app, &graph, user, "wamid.N2", "next").await,
        "the conversation goes on: {:?}",
        graph.delivered_texts()
    );
    app.stop().await;
}
on_both_stores!(nul, a_nul_character_does_not_stall_a_conversation);

/// `user` writes `text` (acknowledged) and Echo's answer to it reaches the fake Graph API.
async fn echoed(app: &TestApp, graph: &FakeGraph, user: &str, wamid: &str, text: &str) -> bool {
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, wamid, text, now_secs()))
            .await,
        200
    );
    let answer = format!("echo: {text}");
    graph
        .wait_until(Duration::from_secs(10), |a| {
            a.iter().any(|a| a.text() == Some(answer.as_str()))
        })
        .await
}
