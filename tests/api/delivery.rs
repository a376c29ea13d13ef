//! The outbox: retries, ordering, permanent failures, statuses.

use std::sync::Arc;
use std::time::Duration;

use parley::conversation::CoreLogic;
use parley_testkit::{status_webhook, text_webhook, FakeGraph, Fault, Outcome};
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

async fn throttling_errors_and_timeouts_still_deliver_each_reply_once_and_in_order(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    graph.push_fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(1),
        body: json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "error_data": {"messaging_product": "whatsapp", "details": "throughput"}}}),
    });
    graph.push_fault(Fault::http(500, 131000));
    graph.push_fault(Fault::Delay(Duration::from_millis(1500))); // past the 800 ms client timeout
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let user = "6281200000040";
    for i in 0..4 {
        let body = text_webhook(
            PNID,
            user,
            &format!("wamid.F{i}"),
            &format!("f{i}"),
            now_secs(),
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(graph.wait_delivered(4, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts: Vec<String> = graph.delivered_texts();
    assert_eq!(
        texts,
        vec!["echo: f0", "echo: f1", "echo: f2", "echo: f3"],
        "once each, in order"
    );

    // Retry-After was honoured: the next attempt came at least a second after the 429.
    let attempts: Vec<_> = graph
        .attempts()
        .into_iter()
        .filter(|a| !a.is_mark_read())
        .collect();
    let first = &attempts[0];
    assert_eq!(first.outcome, Outcome::Refused(429));
    assert!(
        attempts[1].at.duration_since(first.at) >= Duration::from_millis(990),
        "{:?}",
        attempts[1].at.duration_since(first.at)
    );
    assert_eq!(attempts[1].outcome, Outcome::Refused(500));
    assert_eq!(attempts[2].outcome, Outcome::Held);
    // Each send carries our outbox id for status webhooks to echo.
    assert!(graph
        .delivered()
        .iter()
        .all(|a| a.callback().is_some_and(|c| c.starts_with("parley:"))));
    let store = db.store().await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND state = 'sent' AND wamid IS NOT NULL").await, 4);
    app.stop().await;
}
on_both_stores!(
    faults,
    throttling_errors_and_timeouts_still_deliver_each_reply_once_and_in_order
);

async fn a_permanent_error_fails_the_message_with_its_code_and_the_next_one_goes(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    graph.push_fault(Fault::http(400, 131026));
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let user = "6281200000041";
    for i in 0..2 {
        let body = text_webhook(
            PNID,
            user,
            &format!("wamid.PERM{i}"),
            &format!("p{i}"),
            now_secs(),
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.text() == Some("echo: p1") && a.accepted()))
            .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND error_code = 131026",
            )
            .await
                == 1
        })
        .await
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM dead_letters WHERE kind = 'outbox_send'"
        )
        .await,
        1
    );
    assert_eq!(
        graph
            .attempts()
            .iter()
            .filter(|a| a.text() == Some("echo: p0"))
            .count(),
        1,
        "not retried"
    );
    app.stop().await;
}
on_both_stores!(
    permanent,
    a_permanent_error_fails_the_message_with_its_code_and_the_next_one_goes
);

/// `user` writes (the window opens), the business sends "Your order shipped" through the
/// admin API, and the fake Graph API accepts it: (outbox id, wamid).
async fn shipped(app: &TestApp, graph: &FakeGraph, user: &str) -> (i64, String) {
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            user,
            &format!("wamid.in{user}"),
            "hi",
            now_secs()
        ))
        .await,
        200
    );
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "text": "Your order shipped"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let outbox_id = body["outbox_id"].as_i64().unwrap();
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.text() == Some("Your order shipped") && a.accepted()))
            .await
    );
    let wamid = graph
        .delivered()
        .iter()
        .find(|a| a.text() == Some("Your order shipped"))
        .and_then(|a| match &a.outcome {
            Outcome::Accepted(Some(w)) => Some(w.clone()),
            _ => None,
        })
        .expect("the send's wamid");
    (outbox_id, wamid)
}

async fn statuses_arriving_out_of_order_never_move_a_message_backward(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let user = "6281200000042";
    let (outbox_id, wamid) = shipped(&app, &graph, user).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM outbox WHERE wamid IS NOT NULL AND kind = 'message'",
            )
            .await
                == 1
        })
        .await
    );
    let ts = now_secs();
    for s in ["read", "delivered", "sent"] {
        assert_eq!(
            app.post_webhook(&status_webhook(PNID, &wamid, s, user, None, ts))
                .await,
            200
        );
    }
    let status: String =
        sqlx::query_scalar(&format!("SELECT status FROM outbox WHERE id = {outbox_id}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(status, "read");
    // Every status is in the timeline, in arrival order.
    let conv = app.conversation(user).await;
    let out = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "out" && m["kind"] == "message")
        .unwrap()
        .clone();
    let timeline: Vec<&str> = out["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, vec!["read", "delivered", "sent"]);
    assert_eq!(out["status"], "read");
    app.stop().await;
}
on_both_stores!(
    statuses,
    statuses_arriving_out_of_order_never_move_a_message_backward
);

/// Meta took a message, then reports it undeliverable in a `failed` status (131026): the
/// message is failed with the code and kept as a dead letter once, however often the status
/// is redelivered; a later `delivered` does not undo it.
async fn a_failed_status_fails_the_message_and_keeps_a_dead_letter(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let user = "6281200000043";
    let (outbox_id, wamid) = shipped(&app, &graph, user).await;
    let callback = format!("{}{outbox_id}", parley::outbox::CALLBACK_PREFIX);
    let failed = status_webhook(PNID, &wamid, "failed", user, Some(&callback), now_secs())
        .replace("131047", "131026");
    for _ in 0..2 {
        assert_eq!(app.post_webhook(&failed).await, 200);
    }
    assert_eq!(
        app.post_webhook(&status_webhook(
            PNID,
            &wamid,
            "delivered",
            user,
            Some(&callback),
            now_secs()
        ))
        .await,
        200
    );
    let (status, code): (String, Option<i64>) = sqlx::query_as(&format!(
        "SELECT status, error_code FROM outbox WHERE id = {outbox_id}"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), code), ("failed", Some(131026)));
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM dead_letters WHERE kind = 'delivery_failed' AND ref_id = {outbox_id} AND user_key = '{user}' AND reason LIKE '%131026%'"),
        )
        .await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    failed_status,
    a_failed_status_fails_the_message_and_keeps_a_dead_letter
);

async fn a_status_that_arrives_before_the_send_is_recorded_settles_it_by_outbox_id(db: TestDb) {
    // The fake holds the send past our timeout; meanwhile Meta's status (echoing our id)
    // arrives: the row is settled as sent and not sent again.
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.outbox.backoff_base = Duration::from_millis(1500);
    settings.outbox.backoff_max = Duration::from_millis(1500);
    graph.push_fault(Fault::Delay(Duration::from_millis(1000)));
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let store = db.store().await;
    let user = "6281200000043";
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, "wamid.A0", "hi", now_secs()))
            .await,
        200
    );
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/messages",
            Some(ADMIN_TOKEN),
            Some(json!({"phone_number_id": PNID, "to": user, "text": "held"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["outbox_id"].as_i64().unwrap();
    assert!(
        graph
            .wait_until(Duration::from_secs(5), |a| a
                .iter()
                .any(|a| a.outcome == Outcome::Held))
            .await
    );
    let callback = format!("parley:{id}");
    assert_eq!(
        app.post_webhook(&status_webhook(
            PNID,
            "wamid.SETTLED",
            "sent",
            user,
            Some(&callback),
            now_secs()
        ))
        .await,
        200
    );
    let row: (String, Option<String>) = {
        let r: Vec<(String, Option<String>)> =
            sqlx::query_as(&format!("SELECT state, wamid FROM outbox WHERE id = {id}"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        r[0].clone()
    };
    assert_eq!(row, ("sent".to_string(), Some("wamid.SETTLED".to_string())));
    app.stop().await;
}
on_both_stores!(
    settled_by_status,
    a_status_that_arrives_before_the_send_is_recorded_settles_it_by_outbox_id
);

/// Meta's `delivered` for a reply, naming only its wamid, comes while our POST is still
/// waiting for Meta's answer: nothing in the outbox has that wamid yet, so the status is kept
/// in the inbox, and recording the send's wamid applies it.
async fn a_status_that_names_only_a_wamid_not_yet_recorded_is_applied_when_it_is(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    graph.push_fault(Fault::SlowAccept(Duration::from_millis(500))); // within the 800 ms timeout
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let user = "6281200000049";
    let body = text_webhook(PNID, user, "wamid.EA0", "early", now_secs());
    assert_eq!(app.post_webhook(&body).await, 200);
    assert!(
        graph
            .wait_until(Duration::from_secs(5), |a| a
                .iter()
                .any(|a| a.is_delivery()))
            .await
    );
    let wamid = match graph.delivered().remove(0).outcome {
        Outcome::Accepted(Some(w)) => w,
        other => panic!("the reply was taken with a wamid: {other:?}"),
    };
    let early = status_webhook(PNID, &wamid, "delivered", user, None, now_secs());
    assert_eq!(app.post_webhook(&early).await, 200);
    let row = || async {
        let r: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT state, wamid, status FROM outbox WHERE user_key LIKE '6281200000049%'",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        r
    };
    let expected = vec![(
        "sent".to_string(),
        Some(wamid.clone()),
        Some("delivered".to_string()),
    )];
    let mut seen = row().await;
    for _ in 0..100 {
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = row().await;
    }
    assert_eq!(
        seen, expected,
        "the early status is applied once the wamid is known"
    );
    app.stop().await;
}
on_both_stores!(
    early_status_by_wamid,
    a_status_that_names_only_a_wamid_not_yet_recorded_is_applied_when_it_is
);

/// Meta takes a reply but answers after our timeout: the sender cannot know it went, so it is
/// not sent again until Meta's status (echoing our id) had time to come. The status settles
/// it, and the conversation's next reply follows it, once each, in order.
async fn a_send_that_timed_out_waits_for_its_status_instead_of_going_twice(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.outbox.ambiguous_resend_after = Duration::from_secs(3);
    graph.push_fault(Fault::SlowAccept(Duration::from_millis(1500))); // past the 800 ms timeout
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let user = "6281200000047";
    for (i, text) in ["t0", "t1"].iter().enumerate() {
        let body = text_webhook(PNID, user, &format!("wamid.SA{i}"), text, now_secs());
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(graph.wait_delivered(1, Duration::from_secs(5)).await);
    let first = graph.delivered().remove(0);
    assert_eq!(first.text(), Some("echo: t0"));
    // Meta's status for it comes a moment after our timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = status_webhook(
        PNID,
        "wamid.SA-OUT",
        "sent",
        user,
        Some(first.callback().unwrap()),
        now_secs(),
    );
    assert_eq!(app.post_webhook(&status).await, 200);
    assert!(graph.wait_delivered(2, Duration::from_secs(10)).await);
    // Past the whole wait: nothing goes twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let texts: Vec<String> = graph.delivered_texts();
    assert_eq!(texts, vec!["echo: t0", "echo: t1"], "once each, in order");
    app.stop().await;
}
on_both_stores!(
    timed_out_send,
    a_send_that_timed_out_waits_for_its_status_instead_of_going_twice
);

/// A send in flight when the process died waits for the status webhook that settles it, and
/// the wait counts from when the next process answers webhooks: while we are down Meta holds
/// its webhooks and redelivers them once we are back, so a crash that outlasts the wait must
/// not make an accepted reply go out twice. With no status at all, the reply is sent again,
/// once, after the wait.
async fn a_send_left_ambiguous_by_a_crash_waits_for_its_status_after_the_restart(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let settings = |graph: &FakeGraph| {
        let mut s = test_settings(&db, graph);
        s.outbox.ambiguous_resend_after = Duration::from_secs(2);
        s
    };
    let (settled, unsettled) = ("6281200000046", "6281200000047");

    // First life: each user gets a reply, and Meta accepts both.
    let app = spawn_app(settings(&graph), Arc::new(Echo)).await;
    for user in [settled, unsettled] {
        let body = text_webhook(PNID, user, &format!("wamid.Z{user}"), "hi", now_secs());
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(graph.wait_delivered(2, Duration::from_secs(10)).await);
    app.stop().await;
    let first = graph.delivered();
    assert_eq!(first.len(), 2);

    // The crash: the process died after Meta accepted both replies but before it recorded
    // them, and stayed down far longer than the wait.
    let store = db.store().await;
    let long_ago = parley::store::now_ms() - 600_000;
    sqlx::query(&format!(
        "UPDATE outbox SET state = 'sending', wamid = NULL, status = NULL, status_rank = 0, \
         status_at = NULL, updated_at = {long_ago} WHERE kind = 'message'"
    ))
    .execute(store.pool())
    .await
    .unwrap();

    // Second life. Meta redelivers the status of the first user's reply (echoing its outbox
    // id) a moment after we are back; the second user's status never comes.
    let started = std::time::Instant::now();
    let app = spawn_app(settings(&graph), Arc::new(Echo)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = first.iter().find(|a| a.to() == Some(settled)).unwrap();
    let wamid = match &held.outcome {
        Outcome::Accepted(Some(w)) => w.clone(),
        other => panic!("accepted with a wamid: {other:?}"),
    };
    assert_eq!(
        app.post_webhook(&status_webhook(
            PNID,
            &wamid,
            "sent",
            settled,
            held.callback(),
            now_secs()
        ))
        .await,
        200
    );
    assert!(
        graph.wait_delivered(3, Duration::from_secs(10)).await,
        "the unsettled reply is sent again"
    );
    // Anything else would go out at the same moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = graph.delivered();
    let to = |user: &str| delivered.iter().filter(|a| a.to() == Some(user)).count();
    assert_eq!(to(settled), 1, "the status settled it: not sent twice");
    assert_eq!(to(unsettled), 2, "no status: sent again, once");
    let again = delivered.last().unwrap();
    assert_eq!(again.to(), Some(unsettled));
    assert!(
        again.at.duration_since(started) >= Duration::from_millis(1950),
        "resent only after the wait, counted from the restart: {:?}",
        again.at.duration_since(started)
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND state = 'sent'"
        )
        .await,
        2
    );
    app.stop().await;
}
on_both_stores!(
    ambiguous_after_crash,
    a_send_left_ambiguous_by_a_crash_waits_for_its_status_after_the_restart
);

/// Replies committed while the account's sender is still starting go out at once. The
/// sender's first scan of the outbox resumes what an earlier process left unsent (a row left
/// `sending` may have reached Meta and waits for its status); a reply this process committed
/// meanwhile is handed over by its conversation and must not pass for such a leftover, or it
/// would wait `ambiguous_resend_after` for a status that never comes.
async fn replies_committed_while_the_sender_starts_are_not_taken_for_sends_in_doubt(db: TestDb) {
    let graph = FakeGraph::start().await;
    let mut settings = test_settings(&db, &graph);
    settings.outbox.ambiguous_resend_after = Duration::from_secs(60);
    settings.accounts[0].mark_read = false;
    // Hold the sender before its scan: its gate cannot load yet (PostgreSQL: a lock on the
    // table it reads first; SQLite: a row it cannot decode, so it retries every second).
    let store = db.store().await;
    store.migrate().await.unwrap();
    let mut lock = None;
    if db.is_postgres() {
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("LOCK TABLE account_gate IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        lock = Some(tx);
    } else {
        sqlx::query("INSERT INTO unreachable_contacts (account, user_key, code, at) VALUES ($1, 'x', NULL, 'not a time')")
            .bind(PNID)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let users = 5;
    for u in 0..users {
        let body = text_webhook(
            PNID,
            &format!("62812000009{u:02}"),
            &format!("wamid.START{u}"),
            "hi",
            now_secs(),
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    let committed = eventually(Duration::from_secs(10), || async {
        count(&store, "SELECT COUNT(*) FROM outbox WHERE kind = 'message'").await == users
    })
    .await;
    assert!(committed, "the replies were not committed");
    // Let the sender start.
    match lock {
        Some(tx) => tx.rollback().await.unwrap(),
        None => {
            sqlx::query("DELETE FROM unreachable_contacts")
                .execute(store.pool())
                .await
                .unwrap();
        }
    }
    assert!(
        graph
            .wait_delivered(users as usize, Duration::from_secs(10))
            .await,
        "replies committed while the sender started were held as sends in doubt"
    );
    app.stop().await;
}
on_both_stores!(
    sender_start,
    replies_committed_while_the_sender_starts_are_not_taken_for_sends_in_doubt
);

/// A step commits in the transaction that appends the inbox row it applies, when it comes in
/// time. If that transaction fails because of the step, the row is still kept (written again
/// alone), the step is refused, and the conversation applies the row from the store once the
/// store takes the step: one reply, in order, and other conversations go on meanwhile.
async fn a_step_that_fails_its_inbox_rows_transaction_loses_nothing_and_repeats_nothing(
    db: TestDb,
) {
    let graph = FakeGraph::start().await;
    let mut settings = test_settings(&db, &graph);
    settings.accounts[0].mark_read = false;
    let store = db.store().await;
    store.migrate().await.unwrap();
    // The store refuses the reply to "trap" until the trigger is dropped.
    install_outbox_trap(&db, &store, "refuse_trap", "echo: trap").await;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let (a, b) = ("6281200000801", "6281200000802");
    let post = |user: &'static str, wamid: &'static str, text: &'static str| {
        let body = text_webhook(PNID, user, wamid, text, now_secs());
        let app = &app;
        async move { app.post_webhook(&body).await }
    };
    assert_eq!(post(a, "wamid.J1", "first").await, 200);
    assert!(graph.wait_delivered(1, Duration::from_secs(10)).await);
    // The webhook is still acknowledged: its row is committed even though the step is not.
    assert_eq!(post(a, "wamid.J2", "trap").await, 200);
    assert_eq!(post(b, "wamid.J3", "other").await, 200);
    assert!(graph.wait_delivered(2, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(graph.delivered_texts(), vec!["echo: first", "echo: other"]);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message'").await,
        3
    );
    drop_outbox_trap(&db, &store, "refuse_trap").await;
    assert!(graph.wait_delivered(3, Duration::from_secs(10)).await);
    assert_eq!(post(a, "wamid.J4", "after").await, 200);
    assert!(graph.wait_delivered(4, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        graph.delivered_texts(),
        vec!["echo: first", "echo: other", "echo: trap", "echo: after"]
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done'"
        )
        .await,
        4
    );
    app.stop().await;
}
on_both_stores!(
    step_fails_its_batch,
    a_step_that_fails_its_inbox_rows_transaction_loses_nothing_and_repeats_nothing
);
