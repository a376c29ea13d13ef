//! Chatbots through the daemon, against local fake model providers: the account's default
//! bot, context across turns, provider failures (fallback, then handoff), the model's
//! handoff tool, and a flow's chatbot node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use parley::config::{ProviderKind, ProviderSettings};
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

/// What the fake provider does with each request, in turn (the last one repeats).
#[derive(Clone)]
pub(crate) enum Reply {
    Text(&'static str),
    /// Answer after this many milliseconds.
    Slow(u64, &'static str),
    Fail,
    Handoff(&'static str),
}

#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

impl Seen {
    fn bodies(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// An OpenAI-compatible `/chat/completions` or an Anthropic `/v1/messages` server.
pub(crate) async fn fake_provider(kind: ProviderKind, replies: Vec<Reply>) -> (String, Seen) {
    let seen = Seen::default();
    let recorded = seen.clone();
    let replies = Arc::new(replies);
    let handler = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
        let recorded = recorded.clone();
        let replies = replies.clone();
        async move {
            let n = {
                let mut seen = recorded.0.lock().unwrap();
                seen.push((headers, body));
                seen.len() - 1
            };
            let mut reply = replies[n.min(replies.len() - 1)].clone();
            if let Reply::Slow(ms, text) = reply {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply = Reply::Text(text);
            }
            match (kind, reply) {
                (_, Reply::Fail) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                (_, Reply::Slow(..)) => unreachable!("answered above"),
                (ProviderKind::Anthropic, Reply::Text(t)) => axum::Json(json!({
                    "content": [{"type": "text", "text": t}],
                    "usage": {"input_tokens": 100, "output_tokens": 20}
                }))
                .into_response(),
                (ProviderKind::Anthropic, Reply::Handoff(t)) => axum::Json(json!({
                    "content": [{"type": "text", "text": t}, {"type": "tool_use", "name": "handoff", "input": {}}],
                    "usage": {"input_tokens": 100, "output_tokens": 20}
                }))
                .into_response(),
                (_, Reply::Text(t)) => axum::Json(json!({
                    "choices": [{"message": {"role": "assistant", "content": t}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20}
                }))
                .into_response(),
                (_, Reply::Handoff(t)) => axum::Json(json!({
                    "choices": [{"message": {"role": "assistant", "content": t,
                        "tool_calls": [{"type": "function", "function": {"name": "handoff", "arguments": "{}"}}]}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20}
                }))
                .into_response(),
            }
        }
    };
    let app = axum::Router::new()
        .route("/chat/completions", axum::routing::post(handler.clone()))
        .route("/v1/messages", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

const BOT: &str = r#"
provider: fake
model: tiny-1
system_prompt: "You are the shop's assistant."
fallback: "Sorry, the assistant is unavailable."
triggers: [assistant]
context_messages: 4
handoff: {keywords: [agent], tool: true, after_failures: 2}
prices: {input: "0.001", output: "0.002"}
"#;

const FLOW: &str = r#"
id: concierge
triggers: [{keyword: concierge}]
start: hello
nodes:
  hello:
    send: {text: "Ask our assistant; send done when finished."}
    next: talk
  talk:
    chatbot: {bot: assistant, until: [done]}
    next: bye
  bye:
    send: {text: "Back in the flow."}
"#;

pub(crate) fn setup(
    db: &TestDb,
    graph: &FakeGraph,
    kind: ProviderKind,
    base: String,
    default_bot: bool,
) -> (parley::config::Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bots")).unwrap();
    std::fs::write(dir.path().join("bots/assistant.yaml"), BOT).unwrap();
    std::fs::write(dir.path().join("concierge.yaml"), FLOW).unwrap();
    let mut settings = test_settings(db, graph);
    settings.flows.dir = dir.path().to_path_buf();
    settings.ai.providers.insert(
        "fake".into(),
        ProviderSettings {
            kind,
            base_url: base,
            api_key: SecretString::from("sk-test"),
            timeout: Duration::from_secs(5),
            max_retries: 0,
            concurrency: 4,
        },
    );
    if default_bot {
        settings.accounts[0].default_bot = Some("assistant".into());
    }
    (settings, dir)
}

/// The `content` of each message of an OpenAI request, the system prompt first.
fn contents(body: &Value) -> Vec<&str> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

/// The conversation as GET /admin/v1/conversations/{phone_number_id}/{user} shows it.
async fn conversation(app: &TestApp, user: &str) -> Value {
    let path = format!("/conversations/{PNID}/{user}");
    app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None)
        .await
        .1
}

async fn until_texts(graph: &FakeGraph, n: usize) -> Vec<String> {
    graph
        .wait_until(Duration::from_secs(10), |a| {
            a.iter()
                .filter(|a| a.accepted() && a.text().is_some())
                .count()
                >= n
        })
        .await;
    graph.delivered_texts()
}

async fn the_default_bot_answers_with_context_and_hands_off_after_failures(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![
            Reply::Text("We open at 8."),
            Reply::Text("Until 21:00."),
            Reply::Fail,
        ],
    )
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000401";
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.B1",
        "when do you open?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 1).await, vec!["We open at 8."]);
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.B2",
        "and close?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 2).await[1], "Until 21:00.");
    let bodies = seen.bodies();
    assert_eq!(bodies[0]["model"], "tiny-1");
    assert_eq!(bodies[0]["messages"][0]["role"], "system");
    assert_eq!(bodies[0]["messages"][1]["content"], "when do you open?");
    let second: Vec<&str> = bodies[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        second[1..],
        ["when do you open?", "We open at 8.", "and close?"],
        "the context goes with the question"
    );
    assert!(bodies[0]["tools"][0]["function"]["name"] == "handoff");
    assert_eq!(
        seen.0.lock().unwrap()[0]
            .0
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer sk-test")
    );

    // The provider fails twice: the fallback each time, then a human.
    app.post_webhook(&text_webhook(PNID, user, "wamid.B3", "prices?", now_secs()))
        .await;
    assert_eq!(
        until_texts(&graph, 3).await[2],
        "Sorry, the assistant is unavailable."
    );
    app.post_webhook(&text_webhook(PNID, user, "wamid.B4", "hello?", now_secs()))
        .await;
    assert_eq!(
        until_texts(&graph, 4).await[3],
        "Sorry, the assistant is unavailable."
    );
    // The window of 4 (context_messages) slid past the first question; the model's first
    // answer went with it, so the window opens with the user.
    let bodies = seen.bodies();
    assert_eq!(
        contents(&bodies[2]),
        [
            "You are the shop's assistant.",
            "and close?",
            "Until 21:00.",
            "prices?"
        ]
    );
    assert_eq!(
        contents(&bodies[3]),
        [
            "You are the shop's assistant.",
            "and close?",
            "Until 21:00.",
            "prices?",
            "hello?"
        ],
        "a failed call leaves its question in the window"
    );
    let path = format!("/conversations/{PNID}/{user}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, conv) = app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None).await;
            conv["handoff"]["status"] == "waiting"
        })
        .await,
        "handed to a human after two failures"
    );
    app.post_webhook(&text_webhook(PNID, user, "wamid.B5", "anyone?", now_secs()))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        seen.bodies().len(),
        4,
        "the bot is silent while a human has it"
    );
    assert_eq!(graph.delivered_texts().len(), 4);
    let (_, metrics) = app.get("/metrics").await;
    // (The registry is per process and other tests run beside this one: at least ours.)
    let sample = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let ok_answers = sample("parley_bot_answers_total{bot=\"assistant\",result=\"ok\"}");
    assert!(ok_answers >= 2, "{metrics}");
    assert!(metrics.contains("status=\"handed_off\""), "{metrics}");
    // Parley's own time in each answered turn (webhook → call, answer → the reply's request
    // to the Graph API), and the store's COMMITs behind it.
    assert!(sample("parley_bot_turn_us_count") >= 2, "{metrics}");
    assert!(sample("parley_commit_us_count") >= 4, "{metrics}");
    // The same counters, kept in the store.
    let (_, bots) = app
        .admin(Method::GET, "/bots", Some(ADMIN_TOKEN), None)
        .await;
    let assistant = &bots["bots"][0];
    assert_eq!(assistant["id"], "assistant");
    assert_eq!(assistant["sessions"]["handed_off"], 1, "{bots}");
    assert_eq!(assistant["answers"], 2, "{bots}");
    // 2 answers × (100 tokens in at 0.001 + 20 out at 0.002 per 1K), exactly.
    assert_eq!(assistant["cost"], "0.00028", "{bots}");
    app.stop().await;
}
on_both_stores!(
    default_bot,
    the_default_bot_answers_with_context_and_hands_off_after_failures
);

async fn a_flow_hands_over_to_a_bot_and_takes_back_on_its_keyword(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Anthropic,
        vec![
            Reply::Text("Kopi is 25000."),
            Reply::Handoff("Let me get a person."),
        ],
    )
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Anthropic, base, false);
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000402";
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.F1",
        "concierge",
        now_secs(),
    ))
    .await;
    assert_eq!(
        until_texts(&graph, 1).await,
        vec!["Ask our assistant; send done when finished."]
    );
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.F2",
        "price of kopi?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 2).await[1], "Kopi is 25000.");
    let body = &seen.bodies()[0];
    assert_eq!(body["system"], "You are the shop's assistant.");
    assert_eq!(body["messages"][0]["content"], "price of kopi?");
    app.post_webhook(&text_webhook(PNID, user, "wamid.F3", "Done", now_secs()))
        .await;
    assert_eq!(until_texts(&graph, 3).await[2], "Back in the flow.");

    // A message no flow takes does not reach a bot (no default bot); its keyword does.
    let other = "6281200000403";
    app.post_webhook(&text_webhook(PNID, other, "wamid.F4", "hmm", now_secs()))
        .await;
    app.post_webhook(&text_webhook(
        PNID,
        other,
        "wamid.F5",
        "assistant",
        now_secs(),
    ))
    .await;
    app.post_webhook(&text_webhook(
        PNID,
        other,
        "wamid.F6",
        "need a refund",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 4).await[3], "Let me get a person.");
    let conv = app.conversation(other).await;
    assert_eq!(
        conv["handoff"]["status"], "waiting",
        "the model's handoff tool"
    );
    assert_eq!(seen.bodies().len(), 2, "one call for each question");
    app.stop().await;
}
on_both_stores!(
    flow_chatbot,
    a_flow_hands_over_to_a_bot_and_takes_back_on_its_keyword
);

async fn a_slow_model_delays_nobody_else(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, _seen) = fake_provider(
        ProviderKind::Openai,
        vec![Reply::Slow(1500, "Thought about it.")],
    )
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let app = spawn_app_with_flows(settings).await;
    let (asker, other) = ("6281200000404", "6281200000405");
    app.post_webhook(&text_webhook(
        PNID,
        asker,
        "wamid.S1",
        "a hard question",
        now_secs(),
    ))
    .await;
    app.post_webhook(&text_webhook(
        PNID,
        other,
        "wamid.S2",
        "concierge",
        now_secs(),
    ))
    .await;
    // The other conversation is answered while the model is still thinking.
    assert_eq!(
        until_texts(&graph, 2).await,
        vec![
            "Ask our assistant; send done when finished.",
            "Thought about it."
        ]
    );
    app.stop().await;
}
on_both_stores!(slow_model, a_slow_model_delays_nobody_else);

/// The store refuses to record the model's answer for a while: the call stays pending in the
/// committed state, is made again once the store takes writes, and the customer gets one
/// answer.
/// `user` writes `text` to the default bot; returns once the model has been asked.
async fn ask_the_bot(app: &TestApp, seen: &Seen, user: &str, wamid: &str, text: &str) {
    app.post_webhook(&text_webhook(PNID, user, wamid, text, now_secs()))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !seen.bodies().is_empty()
        })
        .await,
        "the model is asked"
    );
}

async fn an_answer_the_store_refused_is_asked_for_again(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) =
        fake_provider(ProviderKind::Openai, vec![Reply::Text("Worth retrying.")]).await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.accounts[0].mark_read = false;
    let store = db.store().await;
    store.migrate().await.unwrap();
    install_outbox_trap(&db, &store, "refuse_answer", "Worth retrying").await;
    let app = spawn_app_with_flows(settings).await;
    ask_the_bot(&app, &seen, "6281200000407", "wamid.R1", "are you there?").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        graph.delivered_texts().is_empty(),
        "its answer is not recorded"
    );
    drop_outbox_trap(&db, &store, "refuse_answer").await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Worth retrying."]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        graph.delivered_texts(),
        vec!["Worth retrying."],
        "answered once"
    );
    assert!(seen.bodies().len() >= 2, "asked again after the refusal");
    app.stop().await;
}
on_both_stores!(
    refused_answer,
    an_answer_the_store_refused_is_asked_for_again
);

/// A conversation whose model takes longer than `conversation.idle_timeout` is not
/// passivated meanwhile: the answer goes to its actor alone, and would otherwise wait until
/// the customer writes again.
async fn a_model_slower_than_the_idle_timeout_still_answers(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![Reply::Slow(1500, "Worth the wait.")],
    )
    .await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.conversation.idle_timeout = Duration::from_millis(200);
    let app = spawn_app_with_flows(settings).await;
    app.post_webhook(&text_webhook(
        PNID,
        "6281200000406",
        "wamid.I1",
        "take your time",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Worth the wait."]);
    assert_eq!(seen.bodies().len(), 1, "one call, answered once");
    // With the answer handled, the idle conversation is passivated as usual.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.live_conversations().await == 0
        })
        .await,
        "passivated after its answer"
    );
    app.stop().await;
}
on_both_stores!(
    idle_during_call,
    a_model_slower_than_the_idle_timeout_still_answers
);

const LIMITED: &str = r#"
provider: fake
model: tiny-1
system_prompt: "Answer once."
triggers: [limited]
max_turns: 1
on_max_turns: handoff
max_turns_message: "Let me pass you to a colleague."
"#;

const BRIEF: &str = r#"
provider: fake
model: tiny-1
system_prompt: "Answer once."
fallback: "The assistant is unavailable."
triggers: [brief]
max_turns: 1
on_max_turns: end
max_turns_message: "That is all I can answer here. Goodbye!"
"#;

async fn reaching_max_turns_hands_off_or_closes_never_silently(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![Reply::Text("Here is my answer.")],
    )
    .await;
    let (settings, dir) = setup(&db, &graph, ProviderKind::Openai, base, false);
    std::fs::write(dir.path().join("bots/limited.yaml"), LIMITED).unwrap();
    std::fs::write(dir.path().join("bots/brief.yaml"), BRIEF).unwrap();
    let app = spawn_app_with_flows(settings).await;

    // `on_max_turns: handoff`: the message after the last answer goes to a human.
    let (handed, closed) = ("6281200000406", "6281200000407");
    for (id, text) in [("wamid.M1", "limited"), ("wamid.M2", "q1")] {
        app.post_webhook(&text_webhook(PNID, handed, id, text, now_secs()))
            .await;
    }
    assert_eq!(until_texts(&graph, 1).await, vec!["Here is my answer."]);
    app.post_webhook(&text_webhook(PNID, handed, "wamid.M3", "q2", now_secs()))
        .await;
    assert_eq!(
        until_texts(&graph, 2).await[1],
        "Let me pass you to a colleague."
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            conversation(&app, handed).await["handoff"]["status"] == "waiting"
        })
        .await,
        "handed to a human at max_turns"
    );
    assert_eq!(
        conversation(&app, handed).await["handoff"]["reason"],
        "limited reached its max_turns (1)"
    );
    app.post_webhook(&text_webhook(PNID, handed, "wamid.M4", "q3", now_secs()))
        .await;

    // `on_max_turns: end`: the closing message, and the session is over.
    for (id, text) in [("wamid.M5", "brief"), ("wamid.M6", "q1")] {
        app.post_webhook(&text_webhook(PNID, closed, id, text, now_secs()))
            .await;
    }
    assert_eq!(until_texts(&graph, 3).await[2], "Here is my answer.");
    app.post_webhook(&text_webhook(PNID, closed, "wamid.M7", "q2", now_secs()))
        .await;
    assert_eq!(
        until_texts(&graph, 4).await[3],
        "That is all I can answer here. Goodbye!"
    );
    app.post_webhook(&text_webhook(PNID, closed, "wamid.M8", "q3", now_secs()))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(conversation(&app, closed).await["handoff"].is_null());
    assert_eq!(
        graph.delivered_texts(),
        vec![
            "Here is my answer.",
            "Let me pass you to a colleague.",
            "Here is my answer.",
            "That is all I can answer here. Goodbye!",
        ],
        "nothing more: a human has one, the other's session is over"
    );
    assert_eq!(seen.bodies().len(), 2, "one call per session");

    let (_, bots) = app
        .admin(Method::GET, "/bots", Some(ADMIN_TOKEN), None)
        .await;
    let sessions = |id: &str| {
        bots["bots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .map(|b| b["sessions"].clone())
            .unwrap()
    };
    assert_eq!(sessions("limited"), json!({"handed_off": 1}), "{bots}");
    assert_eq!(sessions("brief"), json!({"completed": 1}), "{bots}");
    app.stop().await;
}
on_both_stores!(
    max_turns,
    reaching_max_turns_hands_off_or_closes_never_silently
);

async fn a_provider_slower_than_its_timeout_falls_back_then_hands_off(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) =
        fake_provider(ProviderKind::Openai, vec![Reply::Slow(2000, "Too late.")]).await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let provider = settings.ai.providers.get_mut("fake").unwrap();
    provider.timeout = Duration::from_millis(200);
    // A timeout is retried: once here, so a question costs 2 × 200 ms and a backoff.
    provider.max_retries = 1;
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000408";
    app.post_webhook(&text_webhook(PNID, user, "wamid.T1", "hello?", now_secs()))
        .await;
    assert_eq!(
        until_texts(&graph, 1).await,
        vec!["Sorry, the assistant is unavailable."]
    );
    assert!(
        conversation(&app, user).await["handoff"].is_null(),
        "one timeout is not yet a handoff"
    );
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.T2",
        "still there?",
        now_secs(),
    ))
    .await;
    assert_eq!(
        until_texts(&graph, 2).await,
        vec![
            "Sorry, the assistant is unavailable.",
            "Sorry, the assistant is unavailable."
        ]
    );
    // after_failures: 2 consecutive timeouts hand the conversation to a human.
    assert!(
        eventually(Duration::from_secs(5), || async {
            conversation(&app, user).await["handoff"]["status"] == "waiting"
        })
        .await,
        "handed to a human after two timeouts"
    );
    assert_eq!(
        conversation(&app, user).await["handoff"]["reason"],
        "assistant failed 2 times in a row"
    );
    app.post_webhook(&text_webhook(PNID, user, "wamid.T3", "anyone?", now_secs()))
        .await;
    // Longer than the provider's delay: a late answer would have come by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        graph.delivered_texts().len(),
        2,
        "the bot is silent while a human has it, and no late answer is sent"
    );
    let bodies = seen.bodies();
    assert_eq!(bodies.len(), 4, "two questions, each tried twice");
    assert_eq!(contents(&bodies[0])[1..], ["hello?"]);
    assert_eq!(contents(&bodies[2])[1..], ["hello?", "still there?"]);
    app.stop().await;
}
on_both_stores!(
    provider_timeout,
    a_provider_slower_than_its_timeout_falls_back_then_hands_off
);

/// The commit of a model's answer lands but is reported failed (a PostgreSQL connection cut
/// during COMMIT). The conversation reads its state back: the answer is applied, so its
/// reply is sent, once, and the model is not asked again.
async fn an_answer_whose_commit_landed_unacknowledged_is_sent_once_and_not_asked_again(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![Reply::Slow(400, "Answered once.")],
    )
    .await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.accounts[0].mark_read = false;
    let app = spawn_app_with_flows(settings).await;
    ask_the_bot(&app, &seen, "6281200000408", "wamid.L1", "is it in stock?").await;
    // The message's own step has committed by now; the next step is the answer's.
    tokio::time::sleep(Duration::from_millis(150)).await;
    parley::store::writer::faults::lose_commit_acks(&db.url, 1);
    assert_eq!(until_texts(&graph, 1).await, vec!["Answered once."]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        graph.delivered_texts(),
        vec!["Answered once."],
        "answered once"
    );
    assert_eq!(seen.bodies().len(), 1, "the model was asked once");
    let turns = conversation(&app, "6281200000408").await;
    assert_eq!(
        turns["state"]["ext"]["bot"]["turns"], 1,
        "the answer applied once: {turns}"
    );
    app.stop().await;
}
on_both_stores!(
    landed_answer,
    an_answer_whose_commit_landed_unacknowledged_is_sent_once_and_not_asked_again
);

async fn admin_post(app: &TestApp, user: &str, action: &str) {
    let path = format!("/conversations/{PNID}/{user}/{action}");
    let (status, body) = app
        .admin(Method::POST, &path, Some(ADMIN_TOKEN), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{action}: {body}");
}

/// An admin takes the conversation while the model is answering: its answer arrives with a
/// human in charge and is never sent, the message that waited for it is not put to the
/// model; after the release the bot answers again.
async fn a_handoff_while_the_model_answers_keeps_the_bot_silent(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![
            Reply::Slow(800, "Talking over the agent."),
            Reply::Text("Back to help."),
        ],
    )
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000410";
    ask_the_bot(&app, &seen, user, "wamid.O1", "can I return this?").await;
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.O2",
        "it's broken",
        now_secs(),
    ))
    .await;
    admin_post(&app, user, "handoff").await;
    // Well past the model's 800 ms: its answer has come and gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        graph.delivered_texts().is_empty(),
        "the bot talked over the human: {:?}",
        graph.delivered_texts()
    );
    assert_eq!(seen.bodies().len(), 1, "nothing more is put to the model");
    let (_, bots) = app
        .admin(Method::GET, "/bots", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        bots["bots"][0]["sessions"],
        json!({"handed_off": 1}),
        "{bots}"
    );

    admin_post(&app, user, "release").await;
    app.post_webhook(&text_webhook(PNID, user, "wamid.O3", "hello?", now_secs()))
        .await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Back to help."]);
    assert_eq!(contents(&seen.bodies()[1]).last(), Some(&"hello?"));
    app.stop().await;
}
on_both_stores!(
    handoff_in_flight,
    a_handoff_while_the_model_answers_keeps_the_bot_silent
);

/// A flow's chatbot node when an admin takes the conversation: the node's bot session ends
/// (as its own handoff would), the model's late answer is not sent, and the release moves
/// the flow on exactly once.
async fn a_handoff_in_a_flows_chatbot_node_continues_the_flow_once(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(
        ProviderKind::Openai,
        vec![Reply::Slow(800, "Talking over the agent.")],
    )
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, false);
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000411";
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.C1",
        "concierge",
        now_secs(),
    ))
    .await;
    until_texts(&graph, 1).await;
    ask_the_bot(&app, &seen, user, "wamid.C2", "price of kopi?").await;
    admin_post(&app, user, "handoff").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    admin_post(&app, user, "release").await;
    assert_eq!(
        until_texts(&graph, 2).await,
        vec![
            "Ask our assistant; send done when finished.",
            "Back in the flow."
        ]
    );
    // The flow is over and the bot's session with it: a later message reaches neither.
    app.post_webhook(&text_webhook(PNID, user, "wamid.C3", "done", now_secs()))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        graph.delivered_texts().len(),
        2,
        "{:?}",
        graph.delivered_texts()
    );
    assert_eq!(seen.bodies().len(), 1);
    let conv = conversation(&app, user).await;
    assert!(conv["state"]["ext"]["bot"].is_null(), "{conv}");
    assert!(conv["state"]["ext"]["flow"].is_null(), "{conv}");
    app.stop().await;
}
on_both_stores!(
    flow_chatbot_handoff,
    a_handoff_in_a_flows_chatbot_node_continues_the_flow_once
);

const ONCE: &str = r#"
provider: fake
model: tiny-1
system_prompt: "Answer once."
max_turns: 1
on_max_turns: end
max_turns_message: "That is all for now."
"#;

/// Back to the bot after a human: the first session after the release tells the model a
/// human handled the conversation (a note opening the context, the system prompt as the
/// bot's file says); the session after it does not.
async fn the_first_session_after_a_human_is_told_and_only_it(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(ProviderKind::Openai, vec![Reply::Text("Answer.")]).await;
    let (mut settings, dir) = setup(&db, &graph, ProviderKind::Openai, base, false);
    std::fs::write(dir.path().join("bots/once.yaml"), ONCE).unwrap();
    settings.accounts[0].default_bot = Some("once".into());
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000412";
    let say = |wamid: &'static str, text: &'static str| {
        let app = &app;
        async move {
            app.post_webhook(&text_webhook(PNID, user, wamid, text, now_secs()))
                .await;
        }
    };
    say("wamid.N1", "q1").await;
    until_texts(&graph, 1).await;
    admin_post(&app, user, "handoff").await;
    admin_post(&app, user, "release").await;
    say("wamid.N2", "q2").await;
    until_texts(&graph, 2).await;
    // max_turns 1: this ends the session after the release ...
    say("wamid.N3", "q3").await;
    assert_eq!(until_texts(&graph, 3).await[2], "That is all for now.");
    // ... and this starts the next.
    say("wamid.N4", "q4").await;
    until_texts(&graph, 4).await;
    let bodies = seen.bodies();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let note = parley::chatbot::session::HUMAN_NOTE;
    assert_eq!(contents(&bodies[0]), ["Answer once.", "q1"]);
    assert_eq!(contents(&bodies[1]), ["Answer once.", note, "q2"]);
    assert_eq!(
        contents(&bodies[2]),
        ["Answer once.", "q4"],
        "the note was for the first session after the human only"
    );
    let conv = conversation(&app, user).await;
    assert!(conv["state"]["human_handled_at"].is_null(), "{conv}");
    app.stop().await;
}
on_both_stores!(
    back_from_a_human,
    the_first_session_after_a_human_is_told_and_only_it
);

/// A bot file in `flows/bots/` edited in place (the folder's listing unchanged) is reloaded
/// by the watcher, without SIGHUP: new sessions get the new welcome and system prompt.
async fn an_edited_bot_file_is_picked_up_by_the_watcher(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(ProviderKind::Openai, vec![Reply::Text("Answer.")]).await;
    let (mut settings, dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.flows.watch = true;
    let app = spawn_app_with_flows(settings).await;
    ask_the_bot(&app, &seen, "6281200000420", "wamid.W0", "hello").await;
    assert_eq!(
        seen.bodies()[0]["messages"][0]["content"],
        "You are the shop's assistant."
    );
    let edited = BOT.replace(
        "system_prompt: \"You are the shop's assistant.\"",
        "system_prompt: \"You are the shop's new assistant.\"\nwelcome: \"Welcome to v2.\"",
    );
    std::fs::write(dir.path().join("bots/assistant.yaml"), edited).unwrap();
    let new_prompt = |seen: &Seen| {
        seen.bodies()
            .iter()
            .any(|b| b["messages"][0]["content"] == "You are the shop's new assistant.")
    };
    // Each try is a new customer, so a new session with the bot as loaded then.
    let mut tries = 0;
    while !new_prompt(&seen) && tries < 20 {
        tries += 1;
        let user = format!("62812000005{tries:02}");
        app.post_webhook(&text_webhook(
            PNID,
            &user,
            &format!("wamid.W{tries}"),
            "hello",
            now_secs(),
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        new_prompt(&seen),
        "the watcher reloaded the edited bot file"
    );
    assert!(
        graph
            .wait_until(Duration::from_secs(5), |a| a
                .iter()
                .any(|a| a.text() == Some("Welcome to v2.")))
            .await,
        "the new welcome: {:?}",
        graph.delivered_texts()
    );
    app.stop().await;
}
on_both_stores!(bot_watcher, an_edited_bot_file_is_picked_up_by_the_watcher);

/// One request a fake provider received: when, its path, headers and body.
#[derive(Clone)]
struct Request {
    at: std::time::Instant,
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A fake provider speaking whatever `answer` says for the n-th request (status, extra
/// header, JSON body, delay), at any path; it records every request and the most requests
/// it ever had in flight at once.
#[derive(Clone, Default)]
struct Scripted {
    requests: Arc<Mutex<Vec<Request>>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

type Script =
    Arc<dyn Fn(usize) -> (u16, Option<(&'static str, &'static str)>, Value, u64) + Send + Sync>;

async fn scripted_provider(script: Script) -> (String, Scripted) {
    use std::sync::atomic::Ordering::SeqCst;
    let fake = Scripted::default();
    let state = fake.clone();
    let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
        let state = state.clone();
        let script = script.clone();
        async move {
            let now = state.in_flight.fetch_add(1, SeqCst) + 1;
            state.max_in_flight.fetch_max(now, SeqCst);
            let n = {
                let mut r = state.requests.lock().unwrap();
                r.push(Request {
                    at: std::time::Instant::now(),
                    path: uri.path().to_string(),
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                r.len() - 1
            };
            let (status, header, json, delay) = script(n);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            state.in_flight.fetch_sub(1, SeqCst);
            let mut resp =
                (StatusCode::from_u16(status).unwrap(), axum::Json(json)).into_response();
            if let Some((k, v)) = header {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn openai_text(text: &str) -> Value {
    json!({
        "choices": [{"message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20}
    })
}

/// A bot on Google Gemini's generateContent, end to end against a fake speaking its shape:
/// the model in the URL, the key in `x-goog-api-key`, the system prompt as
/// `systemInstruction`, the context as `contents` with roles `user` / `model`, the handoff
/// tool as a function declaration; its answer and token counts (`usageMetadata`) read back.
async fn a_bot_talks_to_gemini_in_its_own_shape(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, fake) = scripted_provider(Arc::new(|n| {
        let text = ["Gemini: we open at 8.", "Gemini: until 21:00."][n.min(1)];
        let answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}
        });
        (200, None, answer, 0)
    }))
    .await;
    let (settings, _dir) = setup(&db, &graph, ProviderKind::Gemini, base, true);
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000430";
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.G1",
        "when do you open?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Gemini: we open at 8."]);
    app.post_webhook(&text_webhook(
        PNID,
        user,
        "wamid.G2",
        "and close?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 2).await[1], "Gemini: until 21:00.");

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.path, "/v1beta/models/tiny-1:generateContent");
        assert_eq!(
            r.headers
                .get("x-goog-api-key")
                .and_then(|v| v.to_str().ok()),
            Some("sk-test")
        );
        assert!(
            r.headers.get("authorization").is_none(),
            "the key goes in x-goog-api-key only"
        );
        assert_eq!(
            r.body["systemInstruction"],
            json!({"parts": [{"text": "You are the shop's assistant."}]})
        );
        assert_eq!(
            r.body["tools"][0]["functionDeclarations"][0]["name"],
            "handoff"
        );
        assert!(
            r.body["generationConfig"]["maxOutputTokens"].is_u64(),
            "{}",
            r.body
        );
        assert!(r.body.get("messages").is_none() && r.body.get("model").is_none());
    }
    assert_eq!(
        requests[0].body["contents"],
        json!([{"role": "user", "parts": [{"text": "when do you open?"}]}])
    );
    assert_eq!(
        requests[1].body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "when do you open?"}]},
            {"role": "model", "parts": [{"text": "Gemini: we open at 8."}]},
            {"role": "user", "parts": [{"text": "and close?"}]}
        ])
    );
    // 2 answers × (100 tokens in at 0.001 + 20 out at 0.002 per 1K), from usageMetadata.
    let (_, bots) = app
        .admin(Method::GET, "/bots", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(bots["bots"][0]["answers"], 2, "{bots}");
    assert_eq!(bots["bots"][0]["cost"], "0.00028", "{bots}");
    app.stop().await;
}
on_both_stores!(gemini, a_bot_talks_to_gemini_in_its_own_shape);

/// `max_retries`: a 429 is retried no sooner than its Retry-After, a 503 after a backoff;
/// the customer gets the answer of the third attempt and never the fallback.
async fn a_provider_is_retried_on_429_and_5xx(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, fake) = scripted_provider(Arc::new(|n| match n {
        0 => (
            429,
            Some(("retry-after", "1")),
            json!({"error": "slow down"}),
            0,
        ),
        1 => (503, None, json!({"error": "busy"}), 0),
        _ => (200, None, openai_text("Third time lucky."), 0),
    }))
    .await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.ai.providers.get_mut("fake").unwrap().max_retries = 2;
    let app = spawn_app_with_flows(settings).await;
    app.post_webhook(&text_webhook(
        PNID,
        "6281200000431",
        "wamid.Y1",
        "hello?",
        now_secs(),
    ))
    .await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Third time lucky."]);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "one call, three attempts");
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(990),
        "a 429 waits for its Retry-After: {:?}",
        requests[1].at - requests[0].at
    );
    assert!(
        requests[2].at - requests[1].at >= Duration::from_millis(100),
        "a 5xx waits for a backoff: {:?}",
        requests[2].at - requests[1].at
    );
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same request each time"
    );
    app.stop().await;
}
on_both_stores!(provider_retries, a_provider_is_retried_on_429_and_5xx);

/// `concurrency: 2`: many conversations ask a slow model at once; the provider never has more
/// than two requests in flight, and everyone is answered.
async fn a_provider_never_has_more_calls_in_flight_than_its_concurrency(db: TestDb) {
    use std::sync::atomic::Ordering::SeqCst;
    let graph = Arc::new(FakeGraph::start().await);
    let (base, fake) =
        scripted_provider(Arc::new(|_| (200, None, openai_text("Slowly."), 300))).await;
    let (mut settings, _dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    settings.ai.providers.get_mut("fake").unwrap().concurrency = 2;
    let app = spawn_app_with_flows(settings).await;
    for i in 0..6 {
        let user = format!("62812000006{i:02}");
        app.post_webhook(&text_webhook(
            PNID,
            &user,
            &format!("wamid.K{i}"),
            "hi",
            now_secs(),
        ))
        .await;
    }
    assert_eq!(until_texts(&graph, 6).await.len(), 6);
    assert_eq!(fake.requests.lock().unwrap().len(), 6);
    assert_eq!(
        fake.max_in_flight.load(SeqCst),
        2,
        "at most (and, with six waiting, exactly) two requests in flight"
    );
    app.stop().await;
}
on_both_stores!(
    provider_concurrency,
    a_provider_never_has_more_calls_in_flight_than_its_concurrency
);

/// A reload that removes an account's `default_bot` is refused, as the start is, naming the
/// account and the bot; the running bots stay and the default bot goes on answering.
async fn a_reload_that_removes_the_default_bot_is_refused(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (base, seen) = fake_provider(ProviderKind::Openai, vec![Reply::Text("Still here.")]).await;
    let (settings, dir) = setup(&db, &graph, ProviderKind::Openai, base, true);
    let app = spawn_app_with_flows(settings).await;
    // Valid files, but the account's default bot is gone (renamed).
    std::fs::remove_file(dir.path().join("concierge.yaml")).unwrap();
    std::fs::rename(
        dir.path().join("bots/assistant.yaml"),
        dir.path().join("bots/helper.yaml"),
    )
    .unwrap();
    let (status, body) = app
        .admin(Method::POST, "/flows/reload", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].to_string();
    assert!(
        errors.contains("`assistant`") && errors.contains(&format!("account {PNID}")),
        "{body}"
    );
    ask_the_bot(&app, &seen, "6281200000440", "wamid.D1", "hello?").await;
    assert_eq!(until_texts(&graph, 1).await, vec!["Still here."]);
    app.stop().await;
}
on_both_stores!(
    reload_keeps_default_bot,
    a_reload_that_removes_the_default_bot_is_refused
);
