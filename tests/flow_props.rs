//! Property tests of the flow engine: random valid flows fed random inputs never panic,
//! never run past the step bound, always leave a state that points at a real node of the
//! kind it waits on, and a conversation keeps the flow version it started on across reloads
//! (it answers exactly as the flow it started on, though the reload changed what it says).

use std::sync::Arc;

use parley::behaviour::{FlowLogic, FlowRegistry};
use parley::conversation::{ConversationEvent, ConversationLogic, ConversationState, StepContext};
use parley::flow::exec::FlowState;
use parley::flow::model::NodeKind;
use parley::flow::sandbox::Sandbox;
use parley::flow::{FlowInput, FlowSet, MAX_STEPS};
use parley::whatsapp::event::{InboundMessage, MessageContent};
use proptest::prelude::*;

/// One node: a kind and up to three target indices (taken modulo the node count).
#[derive(Debug, Clone)]
struct NodeGen {
    kind: u8,
    targets: [usize; 3],
    end: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (0u8..12, [0usize..8, 0usize..8, 0usize..8], any::<bool>())
        .prop_map(|(kind, targets, end)| NodeGen { kind, targets, end })
}

/// A flow file from the generated nodes; it may well be invalid (the caller filters).
fn flow_yaml(id: &str, nodes: &[NodeGen]) -> String {
    let n = nodes.len();
    let t = |i: usize| format!("n{}", i % n);
    let mut y = format!(
        "id: {id}\ntriggers:\n  - keyword: go\n  - keyword: menu\n    global: true\n    start: n0\nstart: n0\nsession_timeout: 1h\nnodes:\n"
    );
    for (i, g) in nodes.iter().enumerate() {
        let [a, b, c] = g.targets;
        y.push_str(&format!("  n{i}:\n"));
        let body = match g.kind {
            0 => "    send: {text: \"s{{x | default('-')}}\"}\n".to_string(),
            1 => format!(
                "    ask: {{type: options, options: [a, b], save: x, max_retries: 1, on_fail: {}}}\n    branches: {{a: {}}}\n",
                t(a),
                t(b)
            ),
            2 => "    ask: {type: number, min: 1, max: 9, save: x, retry: \"number\"}\n".to_string(),
            3 => format!(
                "    condition: {{if: \"x == 'a' or x > 3\", then: {}, else: {}}}\n",
                t(a),
                t(b)
            ),
            4 => "    set: {x: \"1 + 2\", contact.seen: \"'yes'\", tag.add: seen}\n".to_string(),
            5 => format!("    jump: {{to: {}}}\n", t(a)),
            6 => format!("    wait: {{for: 30m, on_reply: {}}}\n", t(c)),
            7 => format!(
                "    split:\n      variants: [{{name: a, weight: 1, next: {}}}, {{name: b, weight: 2, next: {}}}]\n",
                t(a),
                t(b)
            ),
            8 => format!(
                "    http: {{url: \"https://api.example/{{{{x}}}}\", save: {{x: data.x}}}}\n    on_error: {}\n",
                t(c)
            ),
            9 => "    handoff: {reason: test}\n".to_string(),
            10 => "    chatbot: {bot: helper, until: [done]}\n".to_string(),
            _ => "    send: {buttons: {body: pick, buttons: [{id: a, title: A}, {id: b, title: B, access: registered}]}}\n".to_string(),
        };
        y.push_str(&body);
        if !matches!(g.kind, 3 | 5) {
            y.push_str(&format!("    next: {}\n", t(a + i + 1)));
        }
        if g.end {
            y.push_str("    end: true\n");
        }
    }
    y
}

fn valid_flow() -> impl Strategy<Value = (String, FlowSet)> {
    prop::collection::vec(node_gen(), 2..8).prop_filter_map("invalid flow", |nodes| {
        let yaml = flow_yaml("p", &nodes);
        FlowSet::load(&[("p.yaml".into(), yaml.clone())])
            .ok()
            .map(|set| (yaml, set))
    })
}

#[derive(Debug, Clone)]
enum Input {
    Text(&'static str),
    Button(&'static str),
    Media,
    Advance(i64),
    Http(u16),
    Release,
    BotDone,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop::sample::select(vec!["go", "menu", "a", "b", "5", "0", "hello", ""])
            .prop_map(Input::Text),
        prop::sample::select(vec!["a", "b", "zzz"]).prop_map(Input::Button),
        Just(Input::Media),
        prop::sample::select(vec![60_000i64, 1_800_000, 7_200_000]).prop_map(Input::Advance),
        prop::sample::select(vec![200u16, 404, 0]).prop_map(Input::Http),
        Just(Input::Release),
        Just(Input::BotDone),
    ]
}

/// The state points at a real node of the kind it waits on.
fn check_state(set: &FlowSet, st: &FlowState) -> Result<(), TestCaseError> {
    if !st.is_active() {
        prop_assert_eq!(st, &FlowState::default());
        return Ok(());
    }
    let flow = set.get(st.flow.as_deref().unwrap());
    prop_assert!(flow.is_some(), "unknown flow in {:?}", st);
    let node = flow.unwrap().nodes.get(st.node.as_deref().unwrap_or(""));
    prop_assert!(node.is_some(), "unknown node in {:?}", st);
    let kind = &node.unwrap().kind;
    if st.awaiting_input {
        prop_assert!(matches!(kind, NodeKind::Ask(_)), "{:?}", st);
    }
    if st.waiting_timer.is_some() {
        prop_assert!(matches!(kind, NodeKind::Wait { .. }), "{:?}", st);
    }
    if st.http.is_some() {
        prop_assert!(matches!(kind, NodeKind::Http(_)), "{:?}", st);
    }
    if st.handoff {
        prop_assert!(matches!(kind, NodeKind::Handoff { .. }), "{:?}", st);
    }
    if st.bot {
        prop_assert!(matches!(kind, NodeKind::Chatbot { .. }), "{:?}", st);
    }
    let waits = [
        st.awaiting_input,
        st.waiting_timer.is_some(),
        st.http.is_some(),
        st.handoff,
        st.bot,
    ];
    prop_assert_eq!(waits.iter().filter(|w| **w).count(), 1, "{:?}", st);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_flows_and_inputs_keep_the_engine_sound(
        (_yaml, set) in valid_flow(),
        inputs in prop::collection::vec(input(), 1..25),
    ) {
        let mut sb = Sandbox::new(&set, "6281", 1_700_000_000_000);
        for inp in inputs {
            let results = match inp {
                Input::Text(t) => vec![sb.input(FlowInput::Message { text: Some(t), reply_id: None })],
                Input::Button(b) => vec![sb.input(FlowInput::Message { text: Some(b), reply_id: Some(b) })],
                Input::Media => vec![sb.input(FlowInput::Media { kind: "image", id: "m1", caption: None })],
                Input::Advance(ms) => sb.advance(ms),
                Input::Http(status) => sb
                    .answer_http(status, r#"{"data": {"x": 4}}"#)
                    .into_iter()
                    .collect(),
                Input::Release => vec![sb.release()],
                Input::BotDone => vec![sb.bot_done()],
            };
            for r in results {
                match r {
                    // One input runs at most MAX_STEPS nodes, each producing a bounded
                    // number of actions.
                    Ok(actions) => prop_assert!(actions.len() <= 3 * MAX_STEPS + 1),
                    Err(parley::flow::FlowError::Runaway { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
                check_state(&set, &sb.state)?;
            }
            let sends = sb.timers.len();
            prop_assert!(sends <= 64, "timers pile up");
        }
    }

    #[test]
    fn a_conversation_keeps_its_pinned_version_across_reloads(
        (yaml, _set) in valid_flow(),
        answers in prop::collection::vec(prop::sample::select(vec!["a", "b", "5", "x"]), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), &yaml).unwrap();
        std::fs::create_dir(dir.path().join("bots")).unwrap();
        std::fs::write(
            dir.path().join("bots/helper.yaml"),
            "provider: p\nmodel: m\nsystem_prompt: s\n",
        )
        .unwrap();
        let load = || {
            let (set, bots) = parley::behaviour::load_all(dir.path(), None).unwrap();
            FlowRegistry::with_bots(set, bots, None)
        };
        let registry = load();
        let logic = FlowLogic { flows: registry.clone() };
        // The same conversation on the flow as it was, never reloaded: what pinning must give.
        let reference = FlowLogic { flows: load() };
        let ctx = StepContext { now_ms: 1_700_000_000_000, mark_read: false, handoff_timeout_ms: 0, default_bot: None, fetch_media: false, transcribe: false, outside_window: parley::conversation::WindowPolicy::Fail, hold_ms: 0 };
        let msg = |text: &str, n: usize| ConversationEvent::Inbound {
            seq: n as i64,
            message: Arc::new(InboundMessage {
                phone_number_id: "1".into(),
                display_phone_number: String::new(),
                from: Some("6281".into()),
                user_id: None,
                profile_name: None,
                wamid: format!("w{n}"),
                timestamp: 1_700_000_000,
                context: None,
                referral: None,
                errors: vec![],
                content: MessageContent::Text { body: text.into() },
            }),
        };
        let (mut state, _) = logic.step(ConversationState::default(), &msg("go", 0), &ctx);
        let (mut ref_state, _) =
            reference.step(ConversationState::default(), &msg("go", 0), &ctx);
        let version = |s: &ConversationState| -> Option<(String, i64)> {
            let st: FlowState = s.ext.get("flow")?.read()?;
            Some((st.version?, st.started_at_ms))
        };
        let Some(first) = version(&state) else { return Ok(()) };
        // The flow changes what it says (pin is the default): the running session stays on
        // its version, and answers as the old flow does, step for step.
        let edited = yaml
            .replace("\"s{{x", "\"t{{x")
            .replace("body: pick", "body: picked")
            .replace("retry: \"number\"", "retry: \"a number\"");
        std::fs::write(dir.path().join("p.yaml"), edited).unwrap();
        registry.reload(dir.path()).unwrap();
        for (n, a) in answers.iter().enumerate() {
            let (next, effects) = logic.step(state, &msg(a, n + 1), &ctx);
            let (ref_next, ref_effects) = reference.step(ref_state, &msg(a, n + 1), &ctx);
            prop_assert_eq!(
                format!("{effects:?}"),
                format!("{ref_effects:?}"),
                "answer {} after the reload is not the pinned version's",
                n
            );
            state = next;
            ref_state = ref_next;
            match version(&state) {
                Some(v) if v.1 == first.1 => prop_assert_eq!(&v.0, &first.0),
                _ => break, // ended (or a new session began): nothing pinned any more
            }
        }
    }
}
