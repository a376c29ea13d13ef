//! Fuzz harnesses: what each cargo-fuzz target under `fuzz/` runs on its input, and what
//! `tests/fuzz_corpus.rs` replays over every stored corpus file and past crash, so stable
//! CI (no nightly, no libFuzzer) keeps checking what fuzzing found.
//!
//! Each function must never panic on any input; where a property is cheap to state, it is
//! asserted too (a panic is what the fuzzer reports).

use std::collections::BTreeMap;

use parley::conversation::ContactInfo;
use parley::flow::expr::Env;
use parley::flow::template::Template;
use parley::flow::{FlowSet, Value};
use parley::ingress::signature::{sign, verify};
use parley::whatsapp::webhook::{parse_webhook, parse_webhook_report};

/// A harness: any bytes in, a panic when something is wrong.
pub type Harness = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*` folder.
pub const TARGETS: [(&str, Harness); 4] = [
    ("webhook", webhook),
    ("signature", signature),
    ("flow", flow),
    ("template", template),
];

/// The webhook decoder on an untrusted POST body: an answer, never a panic, and the two
/// entry points agree.
pub fn webhook(data: &[u8]) {
    let report = parse_webhook_report(data);
    let plain = parse_webhook(data);
    assert_eq!(report.is_ok(), plain.is_ok(), "the two decoders disagree");
    if let (Ok(report), Ok(plain)) = (report, plain) {
        assert_eq!(report.webhook, plain);
    }
}

/// `X-Hub-Signature-256`. Input: 1 byte (secret length mod 33), the secret, then the header
/// value up to the first newline, then the body. A header verifies only if it is the HMAC
/// (in either hex case); the HMAC always verifies.
pub fn signature(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 33).min(rest.len());
    let (secret, rest) = rest.split_at(n);
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let outcome = verify(secret, Some(header), body);
    if secret.is_empty() {
        assert!(outcome.is_err(), "no secret must refuse everything");
        return;
    }
    let good = sign(secret, body);
    if outcome.is_ok() {
        assert!(
            header.eq_ignore_ascii_case(good.as_bytes()),
            "a header that is not the HMAC verified"
        );
    }
    assert!(verify(secret, Some(good.as_bytes()), body).is_ok());
    assert!(verify(secret, None, body).is_err());
}

/// The flow parser and validator on one file: flows or errors, never a panic; a refusal
/// always says why.
pub fn flow(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    for name in ["fuzz.yaml", "fuzz.json"] {
        if let Err(errors) = FlowSet::load(&[(name.to_string(), text.clone())]) {
            assert!(!errors.is_empty(), "a refused flow file with no error");
        }
    }
}

/// The template renderer: a template parses or is refused; a parsed one renders the same
/// way twice, and text without `{{` renders as itself.
pub fn template(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let mut vars = BTreeMap::new();
    vars.insert("x".to_string(), Value::Str("{{y}}".to_string()));
    vars.insert("y".to_string(), Value::Str("Y".to_string()));
    vars.insert(
        "n".to_string(),
        Value::Num(rust_decimal::Decimal::new(-123456, 2)),
    );
    vars.insert("b".to_string(), Value::Bool(true));
    let contact = ContactInfo {
        profile_name: Some("Ana".into()),
        ..ContactInfo::default()
    };
    let env = Env {
        vars: &vars,
        contact: &contact,
    };
    if let Ok(t) = Template::parse(&src) {
        let once = t.render(&env);
        assert_eq!(once, t.render(&env), "rendering is not deterministic");
        if !src.contains("{{") {
            assert_eq!(once, src, "text without {{{{ changed when rendered");
        }
    }
    assert_eq!(Template::literal(&src).render(&env), src);
}
