//! The webhook events of chatbots, campaigns and accounts, delivered to a local receiver and
//! verified with the Standard Webhooks library: `bot.handoff` (with `conversation.handoff`),
//! `campaign.progress`, `campaign.paused`, `campaign.finished`, `account.health` and
//! `account.halted`.

use std::sync::Arc;
use std::time::Duration;

use parley::config::{MessagingTier, ProviderKind};
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};

use crate::chatbot::{fake_provider, setup, Reply};
use crate::helpers::*;
use crate::hooks::{assert_verified, call, endpoint, hook_settings, Receiver, Verifier};
use crate::on_both_stores;

fn types(got: &[crate::hooks::Got]) -> Vec<String> {
    got.iter()
        .map(|g| g.json()["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn of_type(got: &[crate::hooks::Got], t: &str) -> Vec<Value> {
    got.iter()
        .map(|g| g.json())
        .filter(|v| v["type"] == t)
        .collect()
}

async fn a_bot_handoff_is_told_as_bot_handoff_too(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = FakeGraph::start().await;
    let (base, _seen) = fake_provider(ProviderKind::Openai, vec![Reply::Text("Hello!")]).await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let hooks = hook_settings(&db, &graph);
    settings.webhooks = hooks.webhooks;
    settings.flows.http_allow = hooks.flows.http_allow;
    let app = spawn_app_with_flows(settings).await;
    let (_, secret) = endpoint(
        &app,
        &receiver.url("bots"),
        &["bot.handoff", "conversation.handoff"],
    )
    .await;
    let user = "6281200007101";
    app.post_webhook(&text_webhook(PNID, user, "wamid.BH1", "hi", now_secs()))
        .await;
    // The bot's handoff keyword.
    app.post_webhook(&text_webhook(PNID, user, "wamid.BH2", "agent", now_secs()))
        .await;
    let got = receiver.wait("bots", 2).await;
    assert_verified(&mut verifier, &secret, &got);
    let mut t = types(&got);
    t.sort();
    assert_eq!(t, ["bot.handoff", "conversation.handoff"]);
    let bot = &of_type(&got, "bot.handoff")[0]["data"];
    assert_eq!(bot["bot"], "assistant", "{bot}");
    assert_eq!(bot["conversation"], user, "{bot}");
    let handoff = &of_type(&got, "conversation.handoff")[0]["data"];
    assert_eq!(handoff["by"]["kind"], "bot", "{handoff}");

    // An admin's handoff is no bot's.
    let other = "6281200007102";
    let (s, v) = call(
        &app,
        Method::POST,
        &format!("/conversations/{PNID}/{other}/handoff"),
        Some(json!({"reason": "vip"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = receiver.wait("bots", 3).await;
    assert_eq!(types(&got[2..]), ["conversation.handoff"]);
    assert_eq!(got[2].json()["data"]["by"]["kind"], "admin");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.at("bots").len(),
        3,
        "no bot.handoff for an admin's"
    );
    app.stop().await;
}
on_both_stores!(bot_handoff, a_bot_handoff_is_told_as_bot_handoff_too);

async fn a_campaign_reports_progress_its_pause_and_its_end(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = FakeGraph::start().await;
    let mut settings = hook_settings(&db, &graph);
    let a = &mut settings.accounts[0];
    a.messages_per_second = 1000;
    a.pair_rate_interval = Duration::ZERO;
    a.messaging_tier = MessagingTier::Unlimited;
    a.mark_read = false;
    settings.webhooks.campaign_progress_every = Duration::from_millis(200);
    let app = spawn_app(settings, Arc::new(Echo)).await;
    let (_, secret) = endpoint(
        &app,
        &receiver.url("campaigns"),
        &["campaign.progress", "campaign.paused", "campaign.finished"],
    )
    .await;
    let to: Vec<Value> = (0..12)
        .map(|i| json!({"wa_id": format!("6281300{i:05}"), "vars": {"name": "N"}}))
        .collect();
    // 120 a minute: 12 recipients take about six seconds, several progress reports.
    let (s, v) = call(
        &app,
        Method::POST,
        "/campaigns",
        Some(json!({"name": "promo-dec", "phone_number_id": PNID, "type": "broadcast",
               "message": {"template": {"name": "promo_dec", "language": "id", "body_params": ["{{name}}"]}},
               "recipients": to, "rate_limit_per_minute": 120, "start": true})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            !of_type(&receiver.at("campaigns"), "campaign.progress").is_empty()
        })
        .await,
        "a running campaign reports its progress"
    );
    let (s, v) = call(&app, Method::POST, &format!("/campaigns/{id}/pause"), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            !of_type(&receiver.at("campaigns"), "campaign.paused").is_empty()
        })
        .await
    );
    let (s, v) = call(&app, Method::POST, &format!("/campaigns/{id}/resume"), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            !of_type(&receiver.at("campaigns"), "campaign.finished").is_empty()
        })
        .await,
        "the campaign's end is told"
    );
    let got = receiver.at("campaigns");
    assert_verified(&mut verifier, &secret, &got);
    let paused = &of_type(&got, "campaign.paused")[0]["data"];
    assert_eq!(paused["campaign_id"], id, "{paused}");
    assert_eq!(paused["status"], "paused", "{paused}");
    let progress = &of_type(&got, "campaign.progress")[0]["data"];
    assert_eq!(progress["name"], "promo-dec", "{progress}");
    assert_eq!(progress["counters"]["total"], 12, "{progress}");
    let finished = &of_type(&got, "campaign.finished")[0]["data"];
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["counters"]["total"], 12, "{finished}");
    assert_eq!(finished["counters"]["queued"], 12, "{finished}");
    assert_eq!(of_type(&got, "campaign.finished").len(), 1, "told once");
    app.stop().await;
}
on_both_stores!(
    campaign_events,
    a_campaign_reports_progress_its_pause_and_its_end
);

fn account_webhook(field: &str, value: Value) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": now_secs(), "changes": [{
            "field": field,
            "value": value,
        }]}]
    })
    .to_string()
}

async fn account_health_and_halts_are_told_and_so_is_the_resume(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = FakeGraph::start().await;
    let app = spawn_app(hook_settings(&db, &graph), Arc::new(Echo)).await;
    let (_, secret) = endpoint(
        &app,
        &receiver.url("health"),
        &["account.health", "account.halted"],
    )
    .await;
    let quality = account_webhook(
        "phone_number_quality_update",
        json!({"display_phone_number": "15550783881", "event": "FLAGGED", "current_limit": "TIER_1K"}),
    );
    assert_eq!(app.post_webhook(&quality).await, 200);
    let got = receiver.wait("health", 1).await;
    assert_eq!(types(&got), ["account.health"]);
    let health = &got[0].json()["data"];
    assert_eq!(health["health"], "warning", "{health}");
    assert_eq!(health["previous"], "healthy", "{health}");
    assert_eq!(health["quality_event"], "FLAGGED", "{health}");
    assert_eq!(health["account"], PNID, "{health}");
    // The same webhook again (Meta redelivers): nothing moved, nothing told.
    assert_eq!(app.post_webhook(&quality).await, 200);

    let restriction = account_webhook(
        "account_update",
        json!({"phone_number": "15550783881", "event": "ACCOUNT_RESTRICTION"}),
    );
    assert_eq!(app.post_webhook(&restriction).await, 200);
    let got = receiver.wait("health", 3).await;
    let mut t = types(&got[1..]);
    t.sort();
    assert_eq!(t, ["account.halted", "account.health"]);
    let halted = &of_type(&got, "account.halted")[0]["data"];
    assert_eq!(halted["scope"], "business_initiated", "{halted}");
    assert!(halted["reason"].as_str().is_some(), "{halted}");
    assert_eq!(
        of_type(&got, "account.health")[1]["data"]["health"],
        "critical"
    );

    let (s, v) = call(
        &app,
        Method::POST,
        &format!("/accounts/{PNID}/resume"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = receiver.wait("health", 4).await;
    let back = &got[3].json();
    assert_eq!(back["type"], "account.health");
    // The halt is lifted; the number's quality is still flagged.
    assert_eq!(back["data"]["health"], "warning", "{back}");
    assert_eq!(back["data"]["halted"], false, "{back}");
    assert_eq!(back["data"]["previous"], "critical", "{back}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.at("health");
    assert_eq!(got.len(), 4, "one event per move: {:?}", types(&got));
    assert_verified(&mut verifier, &secret, &got);
    app.stop().await;
}
on_both_stores!(
    account_events,
    account_health_and_halts_are_told_and_so_is_the_resume
);

async fn a_flow_that_fails_is_told_as_flow_failed(db: TestDb) {
    let mut verifier = Verifier::start();
    let receiver = Receiver::start().await;
    let graph = FakeGraph::start().await;
    // 120 nodes in a row run past the guard of 100 nodes for one input: the session fails.
    let mut long = String::from("id: long\ntriggers: [{keyword: long}]\nstart: n0\nnodes:\n");
    for i in 0..120 {
        long.push_str(&format!(
            "  n{i}:\n    set: {{x: \"{i}\"}}\n    next: n{}\n",
            i + 1
        ));
    }
    long.push_str("  n120:\n    send: {text: \"never\"}\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("long.yaml"), long).unwrap();
    let mut settings = hook_settings(&db, &graph);
    settings.flows.dir = dir.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let (_, secret) = endpoint(&app, &receiver.url("flows"), &["flow.failed"]).await;
    let user = "6281200007301";
    app.post_webhook(&text_webhook(PNID, user, "wamid.FF1", "long", now_secs()))
        .await;
    let got = receiver.wait("flows", 1).await;
    assert_verified(&mut verifier, &secret, &got);
    let failed = got[0].json();
    assert_eq!(failed["type"], "flow.failed", "{failed}");
    assert_eq!(failed["data"]["flow_id"], "long", "{failed}");
    assert_eq!(failed["data"]["conversation"], user, "{failed}");
    assert!(
        failed["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("runaway")),
        "{failed}"
    );
    app.stop().await;
}
on_both_stores!(flow_failed, a_flow_that_fails_is_told_as_flow_failed);

/// One conversation's events written by many transactions at once (PostgreSQL runs them
/// concurrently) are numbered 1…N without a repeat; the same change written again takes no
/// number; and once retention has deleted them the next event goes on from N + 1.
async fn concurrent_events_of_one_conversation_take_distinct_sequences(db: TestDb) {
    use parley::hooks::{EventFilter, EventType};
    use parley::store::{NewEndpoint, NewHookEvent};

    let store = parley::store::Store::connect(&db.url, 8).await.unwrap();
    store.migrate().await.unwrap();
    let secret = secrecy::SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    store
        .create_hook_endpoint(&NewEndpoint {
            id: "ep_seq",
            account: None,
            url: "https://hooks.example/seq",
            events: &EventFilter::default(),
            secret: &secret,
            description: "",
            now: 1,
        })
        .await
        .unwrap();
    store.reload_hook_subs().await.unwrap();
    let event = |n: usize| NewHookEvent {
        account: PNID.to_string(),
        user_key: Some("6281200009001".to_string()),
        event_type: EventType::OrderStatus,
        data: json!({ "n": n }),
        dedup_key: format!("seq-test:{n}"),
        at: 1_000,
    };
    let n = 24;
    let writes: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let e = event(i);
            tokio::spawn(async move { store.hook_event(&e).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    // Written again: no new event, no number taken.
    store.hook_event(&event(0)).await.unwrap();
    let seqs = |store: parley::store::Store| async move {
        let mut s: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM hook_events WHERE user_key = '6281200009001' ORDER BY sequence",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        s.sort();
        s
    };
    assert_eq!(
        seqs(store.clone()).await,
        (1..=n as i64).collect::<Vec<_>>()
    );

    // Retention deletes them all (their deliveries first); the numbering goes on.
    sqlx::query("DELETE FROM hook_deliveries")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.delete_old_hook_events(2_000, 1_000).await.unwrap(),
        n as u64
    );
    store.hook_event(&event(100)).await.unwrap();
    assert_eq!(seqs(store.clone()).await, vec![n as i64 + 1]);
}
on_both_stores!(
    concurrent_sequences,
    concurrent_events_of_one_conversation_take_distinct_sequences
);

/// A backlog drains at the pace its deliveries end. With every slot busy the sender waits for
/// one to free, not for its next poll: a wake-up left over from a delivery that ended while
/// the sender was taking (its slot already counted) once sent it to sleep a whole poll, and a
/// backlog then drained at `concurrency` deliveries per poll.
async fn a_backlog_drains_at_the_pace_deliveries_end(db: TestDb) {
    let receiver = Receiver::start().await;
    let graph = FakeGraph::start().await;
    let mut settings = hook_settings(&db, &graph);
    settings.webhooks.poll = Duration::from_secs(3);
    settings.webhooks.concurrency = 2;
    settings.accounts[0].mark_read = false;
    let app = spawn_app(settings, Arc::new(Echo)).await;
    endpoint(&app, &receiver.url("drain"), &["message.received"]).await;
    const N: usize = 80;
    for i in 0..N {
        let user = format!("628120009{i:04}");
        app.post_webhook(&text_webhook(
            PNID,
            &user,
            &format!("wamid.DR{i}"),
            "hi",
            now_secs(),
        ))
        .await;
    }
    // The first delivery comes within a poll; the other 79 then follow at once (a local
    // receiver answers in a millisecond): well within two polls, where 40 polls was the bug.
    receiver.wait("drain", 1).await;
    let first = std::time::Instant::now();
    let drained = eventually(Duration::from_secs(6), || async {
        receiver.at("drain").len() >= N
    })
    .await;
    assert!(
        drained,
        "{} of {N} delivered {:?} after the first",
        receiver.at("drain").len(),
        first.elapsed()
    );
    app.stop().await;
}
on_both_stores!(backlog_drain, a_backlog_drains_at_the_pace_deliveries_end);
