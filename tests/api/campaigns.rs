//! Campaigns end to end: broadcast, drip, A/B at the fake Graph API; opt-outs and tags;
//! restarts; 130429; self-pauses (quality, template, failure rate); priority of replies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::config::{MessagingTier, Settings};
use parley::conversation::{
    ConversationEvent, ConversationLogic, ConversationState, Effect, StepContext,
};
use parley_testkit::{text_webhook, FakeGraph, Fault};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

/// Echo, and "tag me" puts the `vip` tag on the contact (as a flow's tag node would).
struct Tagger;

impl ConversationLogic for Tagger {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        let (mut state, effects) = Echo.step(state, event, ctx);
        if let ConversationEvent::Inbound { message, .. } = event {
            if message.content.user_text() == Some("tag me") {
                state.contact.tags.insert("vip".into());
            }
        }
        (state, effects)
    }
}

fn campaign_settings(db: &TestDb, graph: &FakeGraph) -> Settings {
    let mut s = test_settings(db, graph);
    let a = &mut s.accounts[0];
    a.messages_per_second = 1000;
    a.pair_rate_interval = Duration::ZERO;
    a.messaging_tier = MessagingTier::Unlimited;
    a.mark_read = false;
    s
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

fn list(users: &[String]) -> Value {
    Value::Array(
        users
            .iter()
            .map(|u| json!({"wa_id": u, "vars": {"name": format!("N{u}")}}))
            .collect(),
    )
}

async fn create(app: &TestApp, body: Value) -> i64 {
    let (status, resp) = app
        .admin(Method::POST, "/campaigns", Some(ADMIN_TOKEN), Some(body))
        .await;
    assert_eq!(status, 201, "{resp}");
    resp["id"].as_i64().expect("id")
}

async fn show(app: &TestApp, id: i64) -> Value {
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/campaigns/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_status(app: &TestApp, id: i64, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let c = show(app, id).await;
        if c["status"] == status {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "campaign never became {status}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepted campaign sends per recipient.
fn sends_per_user(graph: &FakeGraph) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in graph.delivered() {
        if let Some(to) = a.to() {
            *m.entry(to.to_string()).or_default() += 1;
        }
    }
    m
}

fn wamid_of(a: &parley_testkit::Attempt) -> String {
    match &a.outcome {
        parley_testkit::Outcome::Accepted(Some(w)) => w.clone(),
        other => panic!("not accepted: {other:?}"),
    }
}

fn template(name: &str) -> Value {
    json!({"template": {"name": name, "language": "id", "body_params": ["{{name}}"]}})
}

async fn a_broadcast_reaches_each_recipient_once_skips_opt_outs_and_counts_statuses(db: TestDb) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let to = users("62811", 30);
    // One recipient wrote STOP before the campaign.
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            &to[3],
            "wamid.STOP1",
            "stop",
            now_secs()
        ))
        .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.to() == Some(&to[3])))
            .await
    );
    let id = create(
        &app,
        json!({"name": "promo-nov", "phone_number_id": PNID, "type": "broadcast",
               "message": template("promo_nov"), "recipients": list(&to),
               "rate_limit_per_minute": 6000, "start": true}),
    )
    .await;
    let done = wait_status(&app, id, "completed", Duration::from_secs(30)).await;
    let per_user = sends_per_user(&graph);
    for u in &to {
        // Each got one message: the campaign's, or (the opted-out one) the echo of its STOP.
        assert_eq!(per_user.get(u).copied().unwrap_or(0), 1, "{u}");
    }
    let templates: Vec<_> = graph
        .delivered()
        .into_iter()
        .filter(|a| a.body.get("template").is_some())
        .collect();
    assert_eq!(templates.len(), 29, "the opted-out recipient got nothing");
    assert_eq!(
        templates[0].body["template"]["components"][0]["parameters"][0]["text"]
            .as_str()
            .unwrap()
            .chars()
            .next(),
        Some('N'),
        "per-recipient parameters"
    );
    let c = &done["counters"];
    assert_eq!(c["total"], 30, "{done}");
    assert_eq!(c["sent"], 29, "{done}");
    assert_eq!(c["skipped"], 1, "{done}");
    // Status webhooks move the counters (attributed by the callback data).
    for (i, a) in templates.iter().take(3).enumerate() {
        let wamid = wamid_of(a);
        let status = if i == 0 { "read" } else { "delivered" };
        let body = parley_testkit::status_webhook(
            PNID,
            &wamid,
            status,
            a.to().unwrap(),
            a.callback(),
            now_secs(),
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            let c = show(&app, id).await;
            c["counters"]["delivered"] == 3 && c["counters"]["read"] == 1
        })
        .await,
        "{}",
        show(&app, id).await
    );
    let (_, page) = app
        .admin(
            Method::GET,
            &format!("/campaigns/{id}/recipients?limit=5"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let skipped = &page["recipients"][3];
    assert_eq!(skipped["state"], "skipped", "{page}");
    assert_eq!(skipped["reason"], "opted out", "{page}");
    app.stop().await;
}
on_both_stores!(
    broadcast,
    a_broadcast_reaches_each_recipient_once_skips_opt_outs_and_counts_statuses
);

async fn a_restart_mid_campaign_sends_nobody_twice(db: TestDb) {
    let graph = FakeGraph::start().await;
    let to = users("62812", 200);
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let id = create(
        &app,
        json!({"name": "restart", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&to), "rate_limit_per_minute": 3000, "start": true}),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(30), |a| a.len() >= 60)
            .await
    );
    app.stop().await;
    let store = db.store().await;
    // A crash between handing messages over and recording them: the last 20 recorded
    // recipients look as if they had never been handed over.
    let handed = count(
        &store,
        &format!("SELECT COUNT(*) FROM campaign_messages WHERE campaign_id = {id}"),
    )
    .await;
    assert!((20..200).contains(&handed), "{handed}");
    for sql in [
        format!("DELETE FROM campaign_messages WHERE campaign_id = {id} AND recipient_id > {}", handed - 20),
        format!("UPDATE campaign_recipients SET state = 'pending', step = 0 WHERE campaign_id = {id} AND id > {}", handed - 20),
    ] {
        sqlx::query(&sql).execute(store.pool()).await.expect(&sql);
    }
    store.close().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let done = wait_status(&app, id, "completed", Duration::from_secs(60)).await;
    let per_user = sends_per_user(&graph);
    assert_eq!(per_user.len(), 200, "everyone reached");
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(done["counters"]["queued"], 200, "{done}");
    assert_eq!(done["counters"]["sent"], 200, "{done}");
    app.stop().await;
}
on_both_stores!(restart, a_restart_mid_campaign_sends_nobody_twice);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_130429_slows_the_campaign_which_still_completes() {
    let db = TestDb::sqlite();
    let graph = FakeGraph::start().await;
    let mut settings = campaign_settings(&db, &graph);
    settings.accounts[0].messages_per_second = 10;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    graph.push_fault(Fault::http(400, 130429));
    let to = users("62813", 20);
    let id = create(
        &app,
        json!({"name": "throttled", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&to), "rate_limit_per_minute": 60000, "start": true}),
    )
    .await;
    let done = wait_status(&app, id, "completed", Duration::from_secs(60)).await;
    assert_eq!(done["counters"]["sent"], 20, "{done}");
    let per_user = sends_per_user(&graph);
    assert_eq!(per_user.len(), 20);
    assert!(per_user.values().all(|n| *n == 1), "{per_user:?}");
    let attempts: Vec<_> = graph
        .attempts()
        .into_iter()
        .filter(|a| !a.is_mark_read())
        .collect();
    assert!(!attempts[0].accepted(), "the first try was throttled");
    // After the 130429 the number cools off (≥ 1 s) and sends at half its rate: a lower bound.
    let span = attempts.last().unwrap().at.duration_since(attempts[0].at);
    assert!(
        span >= Duration::from_millis(2_700),
        "20 sends took {span:?}"
    );
    app.stop().await;
}

fn quality_webhook(event: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": now_secs(), "changes": [{
            "field": "phone_number_quality_update",
            "value": {"display_phone_number": "15550783881", "event": event, "current_limit": "TIER_1K"}
        }]}]
    })
    .to_string()
}

fn template_webhook(event: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": now_secs(), "changes": [{
            "field": "message_template_status_update",
            "value": {"event": event, "message_template_id": 1, "message_template_name": "promo", "message_template_language": "id", "reason": "NONE"}
        }]}]
    })
    .to_string()
}

/// Nothing more arrives at the fake for a while.
async fn settles(graph: &FakeGraph) -> usize {
    let mut last = graph.delivered().len();
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let now = graph.delivered().len();
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn a_quality_drop_pauses_a_running_campaign_and_resume_continues_it(db: TestDb) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let to = users("62814", 300);
    let id = create(
        &app,
        json!({"name": "quality", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&to), "rate_limit_per_minute": 600, "start": true}),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(20), |a| a.len() >= 5)
            .await
    );
    let posted = Instant::now();
    assert_eq!(app.post_webhook(&quality_webhook("FLAGGED")).await, 200);
    let paused = wait_status(&app, id, "paused", Duration::from_secs(10)).await;
    eprintln!("quality drop → paused in {:?}", posted.elapsed());
    assert!(
        paused["pause_reason"].as_str().unwrap().contains("quality"),
        "{paused}"
    );
    let sent = settles(&graph).await;
    assert!(sent < 300, "it stopped sending ({sent})");
    // An operator resumes it (the number's quality as it is now is the new baseline).
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/campaigns/{id}/resume"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        graph
            .wait_until(Duration::from_secs(20), |a| a.len() >= sent + 5)
            .await
    );
    // A paused template pauses it again.
    assert_eq!(app.post_webhook(&template_webhook("PAUSED")).await, 200);
    let paused = wait_status(&app, id, "paused", Duration::from_secs(10)).await;
    assert!(
        paused["pause_reason"]
            .as_str()
            .unwrap()
            .contains("template"),
        "{paused}"
    );
    // Cancel is final.
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/campaigns/{id}/cancel"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/campaigns/{id}/resume"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 409);
    app.stop().await;
}
on_both_stores!(
    quality,
    a_quality_drop_pauses_a_running_campaign_and_resume_continues_it
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_over_the_threshold_pauses_the_campaign() {
    let db = TestDb::sqlite();
    let graph = FakeGraph::start().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let to = users("62815", 300);
    let id = create(
        &app,
        json!({"name": "failing", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&to), "rate_limit_per_minute": 600, "start": true,
               "failure_window": 50}),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(30), |a| a.len() >= 55)
            .await
    );
    // Meta reports 131049 for 6 of the newest sends (> 5 % of 50).
    let recent: Vec<_> = graph.delivered().into_iter().rev().take(6).collect();
    for a in recent {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
                "statuses": [{"id": wamid_of(&a), "status": "failed", "timestamp": now_secs().to_string(),
                    "recipient_id": a.to().unwrap(), "biz_opaque_callback_data": a.callback().unwrap(),
                    "errors": [{"code": 131049, "title": "not delivered to maintain healthy ecosystem engagement"}]}]
            }}]}]
        });
        assert_eq!(app.post_webhook(&body.to_string()).await, 200);
    }
    let paused = wait_status(&app, id, "paused", Duration::from_secs(10)).await;
    assert!(
        paused["pause_reason"]
            .as_str()
            .unwrap()
            .contains("failure rate"),
        "{paused}"
    );
    assert!(
        paused["counters"]["failed"].as_i64().unwrap() >= 6,
        "{paused}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_customers_overtake_a_running_campaign() {
    let db = TestDb::sqlite();
    let graph = FakeGraph::start().await;
    let mut settings = campaign_settings(&db, &graph);
    settings.accounts[0].messages_per_second = 4;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let id = create(
        &app,
        json!({"name": "busy", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&users("62816", 40)), "rate_limit_per_minute": 60000, "start": true}),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.len() >= 2)
            .await
    );
    let customer = "6281699999999";
    assert_eq!(
        app.post_webhook(&text_webhook(
            PNID,
            customer,
            "wamid.PRIO",
            "hello",
            now_secs()
        ))
        .await,
        200
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(15), |a| a
                .iter()
                .any(|a| a.accepted() && a.to() == Some(customer)))
            .await
    );
    let delivered = graph.delivered();
    let at = delivered
        .iter()
        .position(|a| a.to() == Some(customer))
        .unwrap();
    assert!(at < 12, "the reply went out {at}th, behind the campaign");
    let c = show(&app, id).await;
    assert_eq!(c["status"], "running", "{c}");
    app.stop().await;
}

async fn drip_steps_fire_at_their_offsets_and_stop_on_a_reply(db: TestDb) {
    let graph = FakeGraph::start().await;
    let clock = ManualClock::at_now();
    let app = spawn_app_with_logic_and_clock(
        campaign_settings(&db, &graph),
        Arc::new(Tagger),
        Arc::new(clock.clone()),
    )
    .await;
    // Two contacts tag themselves (a flow would); one stays untagged.
    for (i, u) in ["62817000001", "62817000002", "62817000003"]
        .iter()
        .enumerate()
    {
        let text = if i < 2 { "tag me" } else { "hi" };
        let body = text_webhook(
            PNID,
            u,
            &format!("wamid.T{i}"),
            text,
            parley::actors::Clock::now_ms(&clock) / 1000,
        );
        assert_eq!(app.post_webhook(&body).await, 200);
    }
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.len() >= 3)
            .await
    );
    // The windows of the echo replies must not matter: templates only.
    clock.advance(Duration::from_secs(25 * 3600));
    let id = create(
        &app,
        json!({"name": "drip", "phone_number_id": PNID, "type": "drip",
               "steps": [{"offset": "0s", "message": template("d0")},
                         {"offset": "2d", "message": template("d2")},
                         {"offset": "7d", "message": template("d7")}],
               "recipients": {"tag": "vip"}, "rate_limit_per_minute": 6000, "start": true}),
    )
    .await;
    let names = |graph: &FakeGraph| -> Vec<(String, String)> {
        graph
            .delivered()
            .into_iter()
            .filter_map(|a| {
                let name = a.body["template"]["name"].as_str()?.to_string();
                Some((a.to()?.to_string(), name))
            })
            .collect()
    };
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.len() >= 5)
            .await
    );
    assert_eq!(settles(&graph).await, 5);
    let got: HashSet<_> = names(&graph).into_iter().collect();
    assert!(got.contains(&("62817000001".into(), "d0".into())));
    assert!(got.contains(&("62817000002".into(), "d0".into())));
    assert_eq!(got.len(), 2, "only the tagged contacts: {got:?}");
    // A day later: nothing due. The second contact replies.
    clock.advance(Duration::from_secs(24 * 3600));
    let reply = text_webhook(
        PNID,
        "62817000002",
        "wamid.R1",
        "thanks",
        parley::actors::Clock::now_ms(&clock) / 1000,
    );
    assert_eq!(app.post_webhook(&reply).await, 200);
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a.len() >= 6)
            .await
    ); // its echo
       // Day 2: the step fires for the first contact only.
    clock.advance(Duration::from_secs(24 * 3600 + 60));
    assert!(
        graph
            .wait_until(Duration::from_secs(15), |a| a.len() >= 7)
            .await
    );
    settles(&graph).await;
    let d2: Vec<_> = names(&graph)
        .into_iter()
        .filter(|(_, n)| n == "d2")
        .collect();
    assert_eq!(d2, vec![("62817000001".to_string(), "d2".to_string())]);
    // Day 7: the last step, then the campaign is complete.
    clock.advance(Duration::from_secs(5 * 24 * 3600));
    let done = wait_status(&app, id, "completed", Duration::from_secs(20)).await;
    let d7: Vec<_> = names(&graph)
        .into_iter()
        .filter(|(_, n)| n == "d7")
        .collect();
    assert_eq!(d7, vec![("62817000001".to_string(), "d7".to_string())]);
    assert_eq!(done["counters"]["stopped"], 1, "{done}");
    assert_eq!(done["counters"]["queued"], 4, "{done}");
    let (_, page) = app
        .admin(
            Method::GET,
            &format!("/campaigns/{id}/recipients"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let stopped = page["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_key"] == "62817000002")
        .cloned()
        .unwrap();
    assert_eq!(stopped["state"], "stopped", "{page}");
    assert_eq!(stopped["reason"], "replied", "{page}");
    app.stop().await;
}
on_both_stores!(drip, drip_steps_fire_at_their_offsets_and_stop_on_a_reply);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_splits_recipients_by_weight_and_counts_per_variant() {
    let db = TestDb::sqlite();
    let graph = FakeGraph::start().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let id = create(
        &app,
        json!({"name": "ab", "phone_number_id": PNID, "type": "ab",
               "variants": [{"name": "A", "weight": 1, "message": template("va")},
                            {"name": "B", "weight": 1, "message": template("vb")}],
               "recipients": list(&users("62818", 100)), "rate_limit_per_minute": 60000, "start": true}),
    )
    .await;
    let done = wait_status(&app, id, "completed", Duration::from_secs(30)).await;
    let v = done["variants"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{done}");
    let (a, b) = (
        v[0]["sent"].as_i64().unwrap(),
        v[1]["sent"].as_i64().unwrap(),
    );
    assert_eq!(a + b, 100, "{done}");
    assert!(a >= 30 && b >= 30, "{done}");
    assert_eq!(v[0]["name"], "A");
    let va = graph
        .delivered()
        .iter()
        .filter(|x| x.body["template"]["name"] == "va")
        .count() as i64;
    assert_eq!(va, a);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_campaigns_are_refused_and_unknown_ones_are_404() {
    let db = TestDb::sqlite();
    let graph = FakeGraph::start().await;
    let app = spawn_app(campaign_settings(&db, &graph), Arc::new(Echo)).await;
    let (status, _) = app
        .admin(
            Method::POST,
            "/campaigns",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x", "phone_number_id": PNID, "recipients": []})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .admin(
            Method::POST,
            "/campaigns",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x", "phone_number_id": "999", "message": {"text": "hi"}, "recipients": []})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin(Method::GET, "/campaigns/12345", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.admin(Method::GET, "/campaigns/1", None, None).await;
    assert_eq!(status, 401);
    // A draft waits for resume.
    let id = create(
        &app,
        json!({"name": "draft", "phone_number_id": PNID, "message": {"text": "hi {{name}}"},
               "recipients": list(&users("62819", 2))}),
    )
    .await;
    assert_eq!(show(&app, id).await["status"], "draft");
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/campaigns/{id}/resume"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // Free-form text to recipients whose window is closed: skipped with the reason.
    let done = wait_status(&app, id, "completed", Duration::from_secs(10)).await;
    assert_eq!(done["counters"]["skipped"], 2, "{done}");
    assert!(graph.delivered().is_empty());
    app.stop().await;
}

/// How a pause reaches the campaign.
enum PauseBy {
    Operator,
    QualityDrop,
}

/// Attempts of the campaign's messages (to `prefix…`) that reached the fake Graph API.
fn campaign_attempts(graph: &FakeGraph, prefix: &str) -> usize {
    graph
        .attempts()
        .iter()
        .filter(|a| a.to().is_some_and(|to| to.starts_with(prefix)))
        .count()
}

/// The account sends 10 messages a second (the campaign's pacer hands over far more).
fn slow_settings(db: &TestDb, graph: &FakeGraph) -> Settings {
    let mut s = campaign_settings(db, graph);
    s.accounts[0].messages_per_second = 10;
    s
}

/// Start a campaign of 60 recipients `prefix…` and wait until 5 sends reached the Graph API.
async fn start_and_wait_for_sends(
    app: &TestApp,
    graph: &FakeGraph,
    name: &str,
    prefix: &str,
) -> (i64, Vec<String>) {
    let to = users(prefix, 60);
    let id = create(
        app,
        json!({"name": name, "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&to), "rate_limit_per_minute": 3000, "start": true}),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(20), |a| a.len() >= 5)
            .await
    );
    (id, to)
}

/// `POST /campaigns/{id}/{action}`, answered 200; returns the body.
async fn act(app: &TestApp, id: i64, action: &str) -> Value {
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/campaigns/{id}/{action}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The account sends 10 messages a second while the campaign's pacer hands over 50: most of
/// the campaign waits in the account's sender when it is paused. After the pause returns (the
/// operator's POST answered, or the campaign reads `paused` after the quality webhook), only
/// the sends already handed to the HTTP client at that moment (`in_flight_at_pause`) may still
/// reach the Graph API; after resume every recipient gets exactly one message.
async fn paused_campaign_sends_nothing_more(db: TestDb, by: PauseBy) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(slow_settings(&db, &graph), Arc::new(Echo)).await;
    let prefix = "62817";
    let (id, to) = start_and_wait_for_sends(&app, &graph, "withhold", prefix).await;
    let in_flight = match by {
        PauseBy::Operator => act(&app, id, "pause").await["in_flight_at_pause"]
            .as_u64()
            .expect("in_flight_at_pause"),
        PauseBy::QualityDrop => {
            assert_eq!(app.post_webhook(&quality_webhook("FLAGGED")).await, 200);
            let paused = wait_status(&app, id, "paused", Duration::from_secs(10)).await;
            assert!(
                paused["pause_reason"].as_str().unwrap().contains("quality"),
                "{paused}"
            );
            paused["in_flight_at_pause"]
                .as_u64()
                .expect("in_flight_at_pause")
        }
    } as usize;
    let at_pause = campaign_attempts(&graph, prefix);
    // At 10 a second, 2 s would have sent 20 more of what was queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = campaign_attempts(&graph, prefix);
    eprintln!("sends at pause {at_pause}, in flight then {in_flight}, 2 s later {after}");
    assert!(
        after <= at_pause + in_flight,
        "{} sends reached the Graph API after the pause (only {in_flight} had been handed to the HTTP client)",
        after - at_pause
    );
    assert!(after < to.len(), "the pause came before the end");
    // The store tells the truth: what was withheld is not counted sent.
    let paused = show(&app, id).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        paused["counters"]["sent"].as_u64().unwrap() as usize,
        graph.delivered().len(),
        "{paused}"
    );
    act(&app, id, "resume").await;
    let done = wait_status(&app, id, "completed", Duration::from_secs(30)).await;
    let per_user = sends_per_user(&graph);
    assert_eq!(per_user.len(), to.len(), "every recipient got a message");
    assert!(
        per_user.values().all(|n| *n == 1),
        "nobody got two: {per_user:?}"
    );
    assert_eq!(
        done["counters"]["sent"].as_u64(),
        Some(to.len() as u64),
        "{done}"
    );
    app.stop().await;
}

async fn an_operator_pause_withholds_what_the_campaign_queued_and_resume_sends_it_once(db: TestDb) {
    paused_campaign_sends_nothing_more(db, PauseBy::Operator).await;
}
on_both_stores!(
    operator_pause_withholds,
    an_operator_pause_withholds_what_the_campaign_queued_and_resume_sends_it_once
);

async fn a_quality_pause_withholds_what_the_campaign_queued_and_resume_sends_it_once(db: TestDb) {
    paused_campaign_sends_nothing_more(db, PauseBy::QualityDrop).await;
}
on_both_stores!(
    quality_pause_withholds,
    a_quality_pause_withholds_what_the_campaign_queued_and_resume_sends_it_once
);

/// A paused campaign's withheld messages are the business's to release, not a backlog the
/// account's sender works through: another campaign on the same number goes on meanwhile.
/// (Its pacer holds back while the number's unsettled business-initiated messages reach its
/// backlog bound, 50 at 1 message a second: the paused one withholds about 55.)
async fn a_paused_campaigns_withheld_messages_do_not_hold_back_another_campaign(db: TestDb) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(slow_settings(&db, &graph), Arc::new(Echo)).await;
    let store = db.store().await;
    let paused = create(
        &app,
        json!({"name": "withheld", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&users("62817", 150)), "rate_limit_per_minute": 3000,
               "start": true}),
    )
    .await;
    // Paused once its pacer has handed the sender well over the other's backlog bound.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_rows(&store, paused).await < 60 {
        assert!(Instant::now() < deadline, "the campaign never queued 60");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    act(&app, paused, "pause").await;
    let open = open_rows(&store, paused).await;
    assert!(open >= 50, "the paused campaign withholds {open} messages");
    let others = users("62819", 3);
    let other = create(
        &app,
        json!({"name": "other", "phone_number_id": PNID, "message": template("promo"),
               "recipients": list(&others), "rate_limit_per_minute": 60, "start": true}),
    )
    .await;
    let done = wait_status(&app, other, "completed", Duration::from_secs(20)).await;
    assert_eq!(done["counters"]["sent"].as_u64(), Some(3), "{done}");
    assert_eq!(show(&app, paused).await["status"], "paused");
    app.stop().await;
}
on_both_stores!(
    withheld_not_a_backlog,
    a_paused_campaigns_withheld_messages_do_not_hold_back_another_campaign
);

/// Open (pending or sending) outbox rows of campaign `id`.
async fn open_rows(store: &parley::store::Store, id: i64) -> i64 {
    count(
        store,
        &format!(
            "SELECT COUNT(*) FROM outbox o JOIN campaign_messages m ON m.outbox_id = o.id \
             WHERE m.campaign_id = {id} AND o.state IN ('pending', 'sending')"
        ),
    )
    .await
}

async fn wait_settled(store: &parley::store::Store, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = open_rows(store, id).await;
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} rows of the cancelled campaign are still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cancelling withdraws for good: what the campaign had queued in the account's sender is
/// never sent — not in this life and not after a restart, even one that finds its rows still
/// open (a crash between the cancel and settling them) — and its rows are settled `cancelled`.
async fn a_cancelled_campaign_sends_nothing_more_even_after_a_restart(db: TestDb) {
    let graph = FakeGraph::start().await;
    let app = spawn_app(slow_settings(&db, &graph), Arc::new(Echo)).await;
    let prefix = "62818";
    let (id, to) = start_and_wait_for_sends(&app, &graph, "cancel", prefix).await;
    let body = act(&app, id, "cancel").await;
    assert_eq!(body["status"], "cancelled");
    let in_flight = body["in_flight_at_pause"].as_u64().expect("in flight") as usize;
    let at_cancel = campaign_attempts(&graph, prefix);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = campaign_attempts(&graph, prefix);
    eprintln!("sends at cancel {at_cancel}, in flight then {in_flight}, 2 s later {after}");
    assert!(
        after <= at_cancel + in_flight,
        "{} sends reached the Graph API after the cancel",
        after - at_cancel
    );
    assert!(after < to.len(), "the cancel came before the end");
    let store = db.store().await;
    wait_settled(&store, id).await;
    let cancelled_rows = format!(
        "SELECT COUNT(*) FROM outbox WHERE state = 'cancelled' \
         AND id IN (SELECT outbox_id FROM campaign_messages WHERE campaign_id = {id})"
    );
    let dropped = count(&store, &cancelled_rows).await;
    assert!(dropped > 0, "what was queued is settled `cancelled`");
    assert_eq!(show(&app, id).await["status"], "cancelled");
    app.stop().await;

    // A crash between the cancel and settling its rows: open at the next start.
    sqlx::query(&format!(
        "UPDATE outbox SET state = 'pending' WHERE state = 'cancelled' \
         AND id IN (SELECT outbox_id FROM campaign_messages WHERE campaign_id = {id})"
    ))
    .execute(store.pool())
    .await
    .expect("reopen");
    let app = spawn_app(slow_settings(&db, &graph), Arc::new(Echo)).await;
    wait_settled(&store, id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        campaign_attempts(&graph, prefix),
        after,
        "nothing of a cancelled campaign is sent after a restart"
    );
    assert_eq!(count(&store, &cancelled_rows).await, dropped);
    app.stop().await;
    store.close().await;
}
on_both_stores!(
    cancel_drops_queued,
    a_cancelled_campaign_sends_nothing_more_even_after_a_restart
);
