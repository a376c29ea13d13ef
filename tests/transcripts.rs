use std::fs;
use std::path::Path;

use parley::flow::{
    run_transcript, run_transcript_with_shop, step, FlowContext, FlowError, FlowInput, FlowSet,
    FlowState, TranscriptShop,
};

fn read_dir(dir: &str, ext: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<(String, String)> = fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            let name = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// The shipped flows plus the test-only ones.
fn load_flows() -> FlowSet {
    let mut files = read_dir("flows", "yaml");
    files.extend(read_dir("tests/flows", "yaml"));
    FlowSet::load(&files).unwrap_or_else(|e| panic!("{}", e.join("\n")))
}

#[test]
fn all_transcripts_pass() {
    let flows = load_flows();
    let scripts = read_dir("tests/transcripts", "txt");
    assert!(scripts.len() >= 5);
    let mut failures = Vec::new();
    for (name, script) in &scripts {
        // Each script sells from a fresh scratch shop (the real commerce logic).
        let mut shop = TranscriptShop::open().unwrap();
        if let Err(e) = run_transcript_with_shop(&flows, script, Some(&mut shop)) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn transcript_mismatch_is_reported() {
    let flows = load_flows();
    let err = run_transcript(&flows, "> menu\n< wrong\n").unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    let err = run_transcript(&flows, "> menu\n").unwrap_err();
    assert!(err.contains("unexpected output"), "{err}");
}

#[test]
fn shop_directives_need_a_shop_and_a_shop_mismatch_names_its_line() {
    let flows = load_flows();
    let err = run_transcript(&flows, "+ product KOPI \"Kopi\" 25000\n").unwrap_err();
    assert!(
        err.contains("line 1") && err.contains("needs a shop"),
        "{err}"
    );
    let err = run_transcript(&flows, "> store\n< [shop] catalog page 0\n$ paid\n").unwrap_err();
    assert!(
        err.contains("line 3") && err.contains("needs a shop"),
        "{err}"
    );
    // Without a shop the call is shown and stays unanswered.
    run_transcript(&flows, "> store\n< [shop] catalog page 0\n").unwrap();

    let mut shop = TranscriptShop::open().unwrap();
    let script =
        "+ product KOPI \"Kopi\" 25000 stock 2\n> store\n< [shop] catalog page 0\n< [list] wrong\n";
    let err = run_transcript_with_shop(&flows, script, Some(&mut shop)).unwrap_err();
    assert!(err.contains("line 4") && err.contains("| Kopi"), "{err}");
    for (bad, needle) in [
        ("+ product KOPI \"Kopi 25000\n", "unclosed quote"),
        ("+ product KOPI \"Kopi\" 25000 colour red\n", "`colour`"),
        ("+ voucher X double 2\n", "percent or fixed"),
        ("> [order] KOPI xtwo\n", "bad quantity"),
        ("$ paid\n", "no payment is waited on"),
        ("? stock NOPE = 1\n", "no product NOPE"),
    ] {
        let mut shop = TranscriptShop::open().unwrap();
        let err = run_transcript_with_shop(&flows, bad, Some(&mut shop)).unwrap_err();
        assert!(
            err.contains("line 1") && err.contains(needle),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn flow_set_ids_and_versions() {
    let flows = load_flows();
    let ids = flows.ids();
    assert!(ids.contains(&"shop".to_string()));
    let v1 = flows.get("shop").unwrap().version.clone();
    let again = load_flows();
    assert_eq!(again.get("shop").unwrap().version, v1);
}

#[test]
fn state_round_trips_as_json() {
    let flows = load_flows();
    let ctx = FlowContext {
        now_ms: 5,
        contact: None,
        referral: None,
        message_id: None,
        contact_key: None,
        max_steps: 100,
    };
    let (st, _) = step(
        &flows,
        FlowState::default(),
        FlowInput::Message {
            text: Some("menu"),
            reply_id: None,
        },
        &ctx,
    )
    .unwrap();
    let json = serde_json::to_string(&st).unwrap();
    let back: FlowState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
    assert!(back.awaiting_input);
}

#[test]
fn runaway_guard_returns_error() {
    // A long (acyclic, so valid) chain of set nodes exceeds a small max_steps.
    let mut yaml = String::from("id: chain\ntriggers: [{keyword: chain}]\nstart: n0\nnodes:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  n{i}:\n    set: {{x: \"{i}\"}}\n    next: n{}\n",
            i + 1
        ));
    }
    yaml.push_str("  n10:\n    send: {text: done}\n");
    let flows = FlowSet::load(&[("chain.yaml".into(), yaml)]).unwrap();
    let input = FlowInput::Message {
        text: Some("chain"),
        reply_id: None,
    };
    let small = FlowContext {
        now_ms: 0,
        contact: None,
        referral: None,
        message_id: None,
        contact_key: None,
        max_steps: 5,
    };
    assert_eq!(
        step(&flows, FlowState::default(), input, &small).unwrap_err(),
        FlowError::Runaway {
            flow: "chain".into(),
            started_at_ms: 0
        }
    );
    let big = FlowContext {
        max_steps: 100,
        ..small
    };
    let (st, actions) = step(&flows, FlowState::default(), input, &big).unwrap();
    assert_eq!(st, FlowState::default());
    assert!(matches!(
        &actions[..],
        [
            parley::flow::FlowAction::Send(_),
            parley::flow::FlowAction::Ended { .. }
        ]
    ));
}

#[test]
fn bad_flows_report_every_error_with_positions() {
    let errs = FlowSet::load(&read_dir("tests/bad_flows", "yaml")).unwrap_err();
    let all = errs.join("\n");
    let expect = [
        "tests/bad_flows/bad.yaml:7:11: node `a`: `next` target `missing` does not exist",
        "tests/bad_flows/bad.yaml:8:3: node `orphan` is unreachable",
        "tests/bad_flows/bad.yaml:10:3: node `loop2` closes a loop back to `loop1`",
        "tests/bad_flows/bad.yaml:15:17: node `bad_expr`: bad expression",
        "tests/bad_flows/bad.yaml:19:7: node `bad_regex`: invalid regex",
        "tests/bad_flows/bad.yaml:21:5: node `too_many`: WhatsApp limit: buttons has 4 item(s)",
        "tests/bad_flows/bad.yaml:21:5: node `too_many`: WhatsApp limit: buttons[1].title is 26 characters long",
        "tests/bad_flows/bad.yaml:31:14: node `bad_tpl`: unknown template filter `shout`",
        "tests/bad_flows/bad.yaml:33:11: node `bad_profile`: contact.email: `not-an-email` is not an email address",
        "tests/bad_flows/dup.yaml:1:1: duplicate flow id `bad`",
        "tests/bad_flows/dupids.yaml:28:3: duplicate node id `done`",
        "tests/bad_flows/dupids.yaml:6:5: node `menu`: WhatsApp limit: buttons[1].id \"yes\" is used more than once",
        "tests/bad_flows/dupids.yaml:14:5: node `rows`: WhatsApp limit: sections[1].rows[0].id \"r1\" is used more than once",
        "tests/bad_flows/dup.yaml:2:1: start node `nowhere` does not exist",
        "tests/bad_flows/syntax.yaml:4:",
    ];
    for e in expect {
        assert!(all.contains(e), "missing {e:?} in:\n{all}");
    }
}

#[test]
fn condition_cycle_without_wait_is_rejected_but_ask_cycle_is_fine() {
    let looping = "start: a\nnodes:\n  a:\n    set: {i: \"i + 1\"}\n    next: b\n  b:\n    condition: {if: \"i < 5\", then: a, else: c}\n  c:\n    send: {text: done}\n";
    let errs = FlowSet::load(&[("loop.yaml".into(), looping.into())]).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("loop.yaml:6:3: node `b` closes a loop"),
        "{errs:?}"
    );
    let ok = "start: a\nnodes:\n  a:\n    ask: {type: text, save: t}\n    next: b\n  b:\n    send: {text: again}\n    next: a\n";
    let flows = FlowSet::load(&[("ok.yaml".into(), ok.into())]).unwrap();
    assert_eq!(flows.ids(), vec!["ok".to_string()]);
}

#[test]
fn syntax_errors_use_yaml_positions() {
    let errs = FlowSet::load(&read_dir("tests/bad_flows", "yaml")).unwrap_err();
    let syn: Vec<_> = errs.iter().filter(|e| e.contains("syntax.yaml")).collect();
    assert_eq!(syn.len(), 1, "{errs:?}");
    assert!(
        syn[0].starts_with("tests/bad_flows/syntax.yaml:4:"),
        "{syn:?}"
    );
    assert!(syn[0].contains("sned"), "{syn:?}");
}

#[test]
fn a_split_is_sticky_per_contact_and_follows_its_weights() {
    let flows = load_flows();
    let run = |key: &str| -> String {
        let ctx = FlowContext {
            now_ms: 0,
            contact: None,
            referral: None,
            message_id: None,
            contact_key: Some(key),
            max_steps: 100,
        };
        let input = FlowInput::Message {
            text: Some("offer"),
            reply_id: None,
        };
        let (_, actions) = step(&flows, FlowState::default(), input, &ctx).unwrap();
        match &actions[..] {
            [parley::flow::FlowAction::Send(parley::whatsapp::send::OutboundMessage::Text {
                body,
                ..
            }), parley::flow::FlowAction::Ended { .. }] => body.clone(),
            other => panic!("{other:?}"),
        }
    };
    let mut a = 0;
    for n in 0..2000 {
        let key = format!("62812{n:08}");
        let first = run(&key);
        assert_eq!(run(&key), first, "sticky for {key}");
        assert!(first == "Offer A (a)" || first == "Offer B (b)", "{first}");
        if first.starts_with("Offer A") {
            a += 1;
        }
    }
    assert!(
        (1250..=1550).contains(&a),
        "70/30 by weight: {a} of 2000 in A"
    );
}

#[test]
fn a_split_with_one_variant_a_zero_weight_or_a_dangling_next_is_refused() {
    let bad = "start: s\nnodes:\n  s:\n    split:\n      variants:\n        - {name: a, weight: 0, next: nowhere}\n";
    let errs = FlowSet::load(&[("split.yaml".into(), bad.into())])
        .unwrap_err()
        .join("\n");
    assert!(errs.contains("at least two variants"), "{errs}");
    assert!(errs.contains("weight 0"), "{errs}");
    assert!(errs.contains("nowhere"), "{errs}");
    assert!(errs.lines().all(|l| l.starts_with("split.yaml:")), "{errs}");
}

#[test]
fn on_update_decides_which_version_a_conversation_in_progress_runs() {
    let flow = |policy: &str, question: &str, node: &str| {
        format!(
            "id: x\non_update: {policy}\ntriggers:\n  - keyword: go\nstart: {node}\nnodes:\n  {node}:\n    ask: {{type: text, prompt: \"{question}\", save: a}}\n    next: bye\n  bye:\n    send: {{text: \"bye {{{{a}}}}\"}}\n    end: true\n"
        )
    };
    let ctx = FlowContext {
        now_ms: 0,
        contact: None,
        referral: None,
        message_id: None,
        contact_key: Some("u"),
        max_steps: 100,
    };
    for (policy, same_node, expect_restart, expect_old) in [
        ("pin", true, false, true),
        ("migrate", true, false, false),
        ("migrate", false, true, false),
        ("restart", true, true, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        fs::write(&path, flow(policy, "v1?", "q")).unwrap();
        let registry =
            parley::behaviour::FlowRegistry::new(parley::flow::load_dir(dir.path()).unwrap());
        let input = FlowInput::Message {
            text: Some("go"),
            reply_id: None,
        };
        let (state, _) = step(&registry.current(), FlowState::default(), input, &ctx).unwrap();
        let v1 = state.version.clone();
        fs::write(
            &path,
            flow(policy, "v2?", if same_node { "q" } else { "q2" }),
        )
        .unwrap();
        registry.reload(dir.path()).unwrap();
        let mut state = state;
        let (set, restart) = registry.resolve(&mut state);
        assert_eq!(
            restart.is_some(),
            expect_restart,
            "{policy}, same node {same_node}"
        );
        assert_eq!(
            set.get("x").unwrap().version == *v1.as_ref().unwrap(),
            expect_old,
            "{policy}, same node {same_node}"
        );
        // A migrated session runs, and records, the version it migrated to.
        if policy == "migrate" && same_node {
            assert_eq!(state.version, Some(set.get("x").unwrap().version.clone()));
        } else {
            assert_eq!(state.version, v1, "{policy}, same node {same_node}");
        }
    }
}

#[test]
fn regex_triggers_priorities_and_global_keywords() {
    let files = vec![
        (
            "general.yaml".to_string(),
            "triggers:\n  - keyword: help\n    match: contains\nstart: a\nnodes:\n  a:\n    send: {text: general help}\n    end: true\n".to_string(),
        ),
        (
            "orders.yaml".to_string(),
            "triggers:\n  - regex: \"^order \\\\d+$\"\n  - keyword: help with order\n    match: prefix\n    priority: 5\nstart: a\nnodes:\n  a:\n    send: {text: order desk}\n    end: true\n".to_string(),
        ),
        (
            "survey.yaml".to_string(),
            "triggers:\n  - keyword: survey\n  - keyword: stop\n    global: true\n    start: bye\nstart: q\nnodes:\n  q:\n    ask: {type: number, prompt: \"Score?\", save: s}\n    next: bye\n  bye:\n    send: {text: ok bye}\n    end: true\n".to_string(),
        ),
    ];
    let flows = FlowSet::load(&files).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let ctx = FlowContext {
        now_ms: 0,
        contact: None,
        referral: None,
        message_id: None,
        contact_key: Some("u"),
        max_steps: 100,
    };
    let say = |state: FlowState, text: &str| {
        let input = FlowInput::Message {
            text: Some(text),
            reply_id: None,
        };
        let (state, actions) = step(&flows, state, input, &ctx).unwrap();
        let texts: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                parley::flow::FlowAction::Send(parley::whatsapp::send::OutboundMessage::Text {
                    body,
                    ..
                }) => Some(body.clone()),
                _ => None,
            })
            .collect();
        (state, texts.join(" / "))
    };
    assert_eq!(
        say(FlowState::default(), "order 42").1,
        "order desk",
        "regex"
    );
    assert_eq!(
        say(FlowState::default(), "order forty").1,
        "",
        "regex must match"
    );
    assert_eq!(say(FlowState::default(), "I need help").1, "general help");
    assert_eq!(
        say(FlowState::default(), "help with order 7").1,
        "order desk",
        "priority 5 beats 0"
    );
    let (waiting, asked) = say(FlowState::default(), "survey");
    assert_eq!(asked, "Score?");
    // Not global: taken as the (invalid) answer, not as a trigger.
    let (still, retry) = say(waiting.clone(), "order 42");
    assert!(still.is_active() && retry != "order desk", "{retry}");
    // Global: leaves the question.
    let (done, bye) = say(waiting, "stop");
    assert_eq!(bye, "ok bye");
    assert!(!done.is_active());
}

#[test]
fn a_bad_trigger_regex_is_reported_with_its_position() {
    let bad = "triggers:\n  - regex: \"(\"\nstart: a\nnodes:\n  a:\n    send: {text: x}\n";
    let errs = FlowSet::load(&[("re.yaml".into(), bad.into())])
        .unwrap_err()
        .join("\n");
    assert!(
        errs.starts_with("re.yaml:") && errs.contains("invalid"),
        "{errs}"
    );
}

#[test]
fn a_flow_sends_cta_url_location_and_template_messages_with_templated_strings() {
    let flows = load_flows();
    let budi = parley::conversation::ContactInfo {
        profile_name: Some("Budi".into()),
        ..Default::default()
    };
    let ctx = FlowContext {
        now_ms: 0,
        contact: Some(&budi),
        referral: None,
        message_id: None,
        contact_key: Some("u"),
        max_steps: 100,
    };
    let input = FlowInput::Message {
        text: Some("rich"),
        reply_id: None,
    };
    let (_, actions) = step(&flows, FlowState::default(), input, &ctx).unwrap();
    let bodies: Vec<serde_json::Value> = actions
        .iter()
        .filter_map(|a| match a {
            parley::flow::FlowAction::Send(m) => Some(m.to_request_body("628", None, None)),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["interactive"]["type"], "cta_url");
    assert_eq!(bodies[0]["interactive"]["body"]["text"], "Track order Budi");
    assert_eq!(bodies[1]["type"], "location");
    assert_eq!(
        bodies[2]["template"]["components"][0]["parameters"][0]["text"],
        "Budi"
    );
}

#[test]
fn a_message_that_is_not_one_is_refused_at_load() {
    let bad = "start: a\nnodes:\n  a:\n    send:\n      message: {kind: cta_url, body: x}\n";
    let errs = FlowSet::load(&[("m.yaml".into(), bad.into())])
        .unwrap_err()
        .join("\n");
    assert!(
        errs.starts_with("m.yaml:") && errs.contains("not a message"),
        "{errs}"
    );
}

#[test]
fn the_published_flow_schema_matches_the_flow_types() {
    let published: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/flow.schema.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        published,
        parley::flow::flow_schema(),
        "flows/flow.schema.json is stale: run `cargo run -- flows schema > flows/flow.schema.json`"
    );
    // Every top-level key the shipped flows use is in it.
    let props = published["properties"].as_object().unwrap();
    for (name, text) in read_dir("flows", "yaml") {
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
        for key in doc.as_object().unwrap().keys() {
            assert!(props.contains_key(key), "{name}: `{key}` not in the schema");
        }
    }
}

#[test]
fn a_default_trigger_answers_what_nothing_else_takes_and_only_then() {
    let yaml = r#"
id: fallback
triggers:
  - default: true
  - keyword: hi
    priority: -5
    start: hello
start: sorry
nodes:
  sorry:
    send: {text: "Sorry?"}
  hello:
    send: {text: "Hello"}
"#;
    let flows = FlowSet::load(&[("fallback.yaml".into(), yaml.into())]).unwrap();
    run_transcript(
        &flows,
        "> hi\n< Hello\n> what\n< Sorry?\n> #button\n< Sorry?\n",
    )
    .unwrap();
}

#[test]
fn new_node_kinds_are_validated_with_positions() {
    let yaml = r#"id: broken
access: superuser
triggers:
  - keyword: x
    default: true
start: a
nodes:
  a:
    jump: {flow: nowhere, return: true}
    next: b
  b:
    http: {url: "ftp://x.example/", timeout: 2m, method: TRACE}
    on_error: gone
    next: c
  c:
    wait: {until: "25:00", on_reply: d}
  d:
    ask: {type: media, media_types: [hologram]}
    on_error: a
    next: e
  e:
    set: {contact.name: "'x'", tag.add: 5}
    next: f
  f:
    send: {buttons: {body: b, buttons: [{id: a, title: A, access: root}]}}
    wait: {for: 1h}
"#;
    let errs = FlowSet::load(&[("broken.yaml".into(), yaml.into())])
        .unwrap_err()
        .join("\n");
    for needle in [
        "broken.yaml:2:1: access `superuser`",
        "exactly one of `keyword`, `button`, `regex`, `referral`, `order` or `default`",
        "jump target flow `nowhere` does not exist",
        "`on_error` target `gone` does not exist",
        "method `TRACE`",
        "url must start with https://",
        "timeout `2m` must be a duration up to 30s",
        "`until: 25:00` must be a time of day HH:MM",
        "media type `hologram`",
        "`on_error` is only allowed on http and shop (catalog, cart, checkout, order_status, payment, voucher, custom_order) nodes",
        "`contact.name` comes from WhatsApp",
        "`set.tag.add` takes a tag name",
        "access `root` must be public, registered or activated",
        "only one of send/ask/condition/set/jump/wait/split/http/handoff",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
    }
    for line in errs.lines() {
        let mut parts = line.splitn(4, ':');
        assert_eq!(parts.next(), Some("broken.yaml"), "{line}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{line}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{line}");
    }
}

#[test]
fn a_variable_no_flow_ever_sets_is_an_error_unless_it_has_a_default() {
    let yaml = r#"id: typo
triggers: [{keyword: x}]
start: a
nodes:
  a:
    ask: {type: number, save: qty}
    next: b
  b:
    condition: {if: "qyt > 2", then: c, else: c}
  c:
    send: {text: "{{qty}} {{totl}} {{maybe | default('-')}}"}
"#;
    let errs = FlowSet::load(&[("typo.yaml".into(), yaml.into())])
        .unwrap_err()
        .join("\n");
    assert!(
        errs.contains("typo.yaml:9:22: node `b`: variable `qyt` is never set"),
        "{errs}"
    );
    assert!(
        errs.contains("node `c`: variable `totl` is never set"),
        "{errs}"
    );
    assert!(
        !errs.contains("`qty`") && !errs.contains("`maybe`"),
        "{errs}"
    );
    // Set by another flow (a subflow shares its caller's variables): fine.
    let other = "id: setter\nstart: s\nnodes:\n  s:\n    set: {qyt: \"1\", totl: \"2\"}\n";
    FlowSet::load(&[
        ("typo.yaml".into(), yaml.into()),
        ("setter.yaml".into(), other.into()),
    ])
    .unwrap();
}

#[test]
fn a_default_trigger_never_takes_a_flow_that_waits_on_a_timer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reminder = fs::read_to_string(root.join("flows/reminder.yaml")).unwrap();
    let fallback = "id: fallback\ntriggers:\n  - default: true\nstart: sorry\nnodes:\n  sorry:\n    send: {text: \"Sorry, I did not get that.\"}\n    end: true\n";
    let flows = FlowSet::load(&[
        ("reminder.yaml".into(), reminder),
        ("fallback.yaml".into(), fallback.into()),
    ])
    .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let script = "\
> remind me
< I will remind you in 2 hours
// the wait takes no reply: the message is ignored, the wait goes on
> hello?
? active reminder
~ 2h
< Reminder!
? idle
// with no flow active, default answers
> hello?
< Sorry, I did not get that.
? idle
// a keyword trigger still starts its flow
> remind me
< I will remind you in 2 hours
";
    run_transcript(&flows, script).unwrap();
}
