//! What the Graph API receives: one request body of every kind Parley sends, as the (fake)
//! Graph API received it from the daemon, validated against the request schema of Meta's
//! OpenAPI file. The schemas are vendored in `tests/fixtures/graph-schemas/` (see its
//! PROVENANCE.md and `extract.py`); the patches below are applied here, in memory, each with
//! its reason, so the vendored copy stays byte-for-byte what the script extracts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parley::conversation::CoreLogic;
use parley::whatsapp::send::{MediaSource, MediaType, OutboundMessage};
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

use crate::helpers::*;
use crate::on_both_stores;

const FIXTURE: &str = "tests/fixtures/graph-schemas/messages.json";
/// Meta's file, where the workplace keeps it: `shared/` beside the repository.
const SPEC: &str = "../shared/specs/business-messaging-api_v23.0.yaml";
const SPEC_SHA256: &str = "c7148d5e2aeff32f2effc3d3557795d7eddd07abf8b017c9e40e86bb3312c116";
/// Where the vendored document is registered (never fetched).
const SCHEMA_URL: &str = "https://graph-schemas.parley.test/messages.json";

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    serde_json::from_slice(&std::fs::read(&path).expect("the vendored schemas")).expect("JSON")
}

/// Make the file's schemas describe real payloads, following shared/specs/PROVENANCE.md and,
/// where the file and Meta's prose disagree, the prose. Each place is listed in
/// tests/fixtures/graph-schemas/PROVENANCE.md.
fn patch(doc: &mut Value) {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("components/schemas");
    // 1. (shared/specs/PROVENANCE.md, fix 1) Each message variant is
    //    `allOf[BaseMessageProperties, {additionalProperties: false, ...}]`, whose second
    //    branch refuses `messaging_product`, `to` and `recipient_type`: the keyword moves to
    //    the variant as `unevaluatedProperties: false`, which sees both branches.
    let mut moved = 0;
    for schema in schemas.values_mut() {
        let Some(branches) = schema.get_mut("allOf").and_then(Value::as_array_mut) else {
            continue;
        };
        let mut closed = false;
        for branch in branches.iter_mut().filter_map(Value::as_object_mut) {
            if branch.get("additionalProperties") == Some(&Value::Bool(false)) {
                branch.remove("additionalProperties");
                closed = true;
            }
        }
        if closed {
            schema["unevaluatedProperties"] = Value::Bool(false);
            moved += 1;
        }
    }
    assert_eq!(
        moved, 10,
        "the file changed: ten variants were closed this way"
    );

    // 2. `biz_opaque_callback_data` is missing from BaseMessageProperties (the file has it only
    //    for calls). Meta's messages reference: "An arbitrary string, useful for tracking …
    //    Maximum 512 characters."
    //    https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages
    schemas["BaseMessageProperties"]["properties"]["biz_opaque_callback_data"] =
        json!({"type": "string", "maxLength": 512});

    // 3. Interactive `cta_url` is missing from InteractiveObject.type and ActionObject.
    //    Meta's CTA URL button page: `action: {name: "cta_url", parameters: {display_text,
    //    url}}`.
    //    https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/interactive-cta-url-messages
    schemas["InteractiveObject"]["properties"]["type"]["enum"]
        .as_array_mut()
        .expect("InteractiveObject.type enum")
        .push(json!("cta_url"));
    schemas["ActionObject"]["oneOf"]
        .as_array_mut()
        .expect("ActionObject.oneOf")
        .push(json!({
            "required": ["name", "parameters"],
            "properties": {
                "name": {"type": "string", "enum": ["cta_url"]},
                "parameters": {
                    "type": "object",
                    "required": ["display_text", "url"],
                    "properties": {
                        "display_text": {"type": "string", "maxLength": 20},
                        "url": {"type": "string"}
                    }
                }
            }
        }));

    // 4. LanguageObject requires `policy`; Meta's template guide sends `language: {code}`
    //    alone (`policy` is optional, and "deterministic" its only value).
    //    https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates
    schemas["LanguageObject"]["required"] = json!(["code"]);

    // 5. TemplateComponent.index has the pattern `^[2-6, 11-14]$`, which refuses "0"; the
    //    same schema's description says "Position index of the button (0-9)" and its example
    //    is "0", as in the template guide above.
    schemas["TemplateComponent"]["properties"]["index"]["pattern"] = json!("^[0-9]$");
}

/// The patched schemas, compiled: (schemas, Message, MarkMessageRequestPayload).
fn compiled(doc: Value) -> (boon::Schemas, boon::SchemaIndex, boon::SchemaIndex) {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    // OpenAPI 3.1's schema dialect is JSON Schema 2020-12.
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.add_resource(SCHEMA_URL, doc).expect("add schemas");
    let mut compile = |name: &str| {
        compiler
            .compile(
                &format!("{SCHEMA_URL}#/components/schemas/{name}"),
                &mut schemas,
            )
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };
    // The request schema of POST /{Version}/{Phone-Number-ID}/messages.
    let message = compile("Message");
    // Read receipts go to the same endpoint but are described only by this schema (which no
    // path references), as the operation's own example "Send typing indicator and read
    // receipt" and Meta's page show:
    // https://developers.facebook.com/documentation/business-messaging/whatsapp/typing-indicators/
    let receipt = compile("MarkMessageRequestPayload");
    (schemas, message, receipt)
}

/// Which kind a message is, as this test counts them. Exhaustive: a new kind of message
/// does not compile here until it has a sample below.
fn kind(m: &OutboundMessage) -> String {
    match m {
        OutboundMessage::Text { .. } => "text".into(),
        OutboundMessage::Buttons { .. } => "buttons".into(),
        OutboundMessage::List { .. } => "list".into(),
        OutboundMessage::CtaUrl { .. } => "cta_url".into(),
        OutboundMessage::Template { .. } => "template".into(),
        OutboundMessage::Media {
            media_type, source, ..
        } => {
            let by = match source {
                MediaSource::Id(_) => "id",
                MediaSource::Link(_) => "link",
            };
            format!("{}_by_{by}", media_type.as_str())
        }
        OutboundMessage::Location { .. } => "location".into(),
        OutboundMessage::Reaction { .. } => "reaction".into(),
        OutboundMessage::MarkRead { .. } => "mark_read".into(),
    }
}

/// Every kind Parley sends. A new media type does not compile here until it is listed.
fn every_kind() -> BTreeSet<String> {
    let media = [
        MediaType::Image,
        MediaType::Video,
        MediaType::Audio,
        MediaType::Document,
        MediaType::Sticker,
    ];
    for t in media {
        match t {
            MediaType::Image
            | MediaType::Video
            | MediaType::Audio
            | MediaType::Document
            | MediaType::Sticker => {}
        }
    }
    let mut kinds: BTreeSet<String> = [
        "text",
        "buttons",
        "list",
        "cta_url",
        "template",
        "location",
        "reaction",
        "mark_read",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for t in media {
        kinds.insert(format!("{}_by_id", t.as_str()));
        kinds.insert(format!("{}_by_link", t.as_str()));
    }
    kinds
}

/// One admin send request per kind (and the variants of it Parley builds itself), by name.
fn samples(user: &str, inbound: &str) -> Vec<(&'static str, Value)> {
    let send = |message: Value| json!({"phone_number_id": PNID, "to": user, "message": message});
    let media = |t: &str, source: Value, caption: bool| {
        let mut m = json!({"kind": "media", "media_type": t, "source": source});
        if caption {
            m["caption"] = json!("Your receipt");
        }
        if t == "document" {
            m["filename"] = json!("receipt.pdf");
        }
        send(m)
    };
    let mut out = vec![
        (
            "text",
            json!({"phone_number_id": PNID, "to": user, "reply_to": inbound,
                   "message": {"kind": "text", "body": "See https://example.com/o/1", "preview_url": true}}),
        ),
        (
            "text_shortcut",
            json!({"phone_number_id": PNID, "to": user, "text": "Hello"}),
        ),
        (
            "buttons",
            send(
                json!({"kind": "buttons", "header": "Order #1234", "body": "Confirm?", "footer": "Lucky Shrub",
                        "buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}, {"id": "later", "title": "Later"}]}),
            ),
        ),
        (
            "list",
            send(
                json!({"kind": "list", "header": "Shipping", "body": "Choose one", "footer": "Lucky Shrub", "button": "Options",
                        "sections": [
                            {"title": "Fast", "rows": [{"id": "express", "title": "Express", "description": "Next day"}]},
                            {"title": "Slow", "rows": [{"id": "normal", "title": "Normal"}]}]}),
            ),
        ),
        (
            "cta_url",
            send(
                json!({"kind": "cta_url", "header": "Parcel", "body": "Track your parcel", "footer": "Lucky Shrub",
                        "display_text": "Track", "url": "https://example.com/t/123"}),
            ),
        ),
        (
            "template",
            send(
                json!({"kind": "template", "name": "order_update", "language": "en_US", "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/h.jpg"}}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Budi"},
                    {"type": "currency", "currency": {"fallback_value": "Rp45.000", "code": "IDR", "amount_1000": 45000000}}]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "TRACK"}]}]}),
            ),
        ),
        (
            "template_shortcut",
            json!({"phone_number_id": PNID, "to": user,
                   "template": {"name": "order_update", "language": "id", "body_params": ["Budi", "45000"]}}),
        ),
        (
            "location",
            send(
                json!({"kind": "location", "latitude": -6.2088, "longitude": 106.8456,
                        "name": "Shop", "address": "Jl. Sudirman 1"}),
            ),
        ),
        (
            "reaction",
            send(json!({"kind": "reaction", "message_id": inbound, "emoji": "\u{1F44D}"})),
        ),
        (
            "reaction_removed",
            send(json!({"kind": "reaction", "message_id": inbound, "emoji": ""})),
        ),
    ];
    let by_id: [(&'static str, &str); 5] = [
        ("image_by_id", "image"),
        ("video_by_id", "video"),
        ("audio_by_id", "audio"),
        ("document_by_id", "document"),
        ("sticker_by_id", "sticker"),
    ];
    for (name, t) in by_id {
        out.push((name, media(t, json!({"id": "1003383421387256"}), true)));
    }
    let by_link: [(&'static str, &str, &str); 5] = [
        ("image_by_link", "image", "https://example.com/r.jpg"),
        ("video_by_link", "video", "https://example.com/r.mp4"),
        ("audio_by_link", "audio", "https://example.com/r.ogg"),
        ("document_by_link", "document", "https://example.com/r.pdf"),
        ("sticker_by_link", "sticker", "https://example.com/r.webp"),
    ];
    for (name, t, link) in by_link {
        out.push((name, media(t, json!({"link": link}), true)));
    }
    out
}

/// Every request body of every outbound kind conforms to Meta's request schema (as patched
/// above), exactly as the daemon put it on the wire.
async fn every_request_parley_sends_matches_the_graph_api_request_schema(db: TestDb) {
    let (schemas, message, receipt) = compiled({
        let mut doc = fixture();
        patch(&mut doc);
        doc
    });
    let graph = Arc::new(FakeGraph::start().await);
    let app = spawn_app(test_settings(&db, &graph), Arc::new(CoreLogic)).await;
    let user = "6281200000990";
    let inbound = "wamid.SCHEMA1";
    // The user writes first (the window opens; the read receipt goes out).
    assert_eq!(
        app.post_webhook(&text_webhook(PNID, user, inbound, "hi", now_secs()))
            .await,
        200
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            let path = format!("/conversations/{PNID}/{user}");
            app.admin(Method::GET, &path, Some(ADMIN_TOKEN), None)
                .await
                .1["window_open"]
                == true
        })
        .await
    );

    let samples = samples(user, inbound);
    let mut covered = BTreeSet::from(["mark_read".to_string()]);
    let mut by_callback = BTreeMap::new();
    for (name, request) in &samples {
        if let Some(m) = request.get("message") {
            let m: OutboundMessage = serde_json::from_value(m.clone()).expect(name);
            covered.insert(kind(&m));
        }
        let (status, answer) = app
            .admin(
                Method::POST,
                "/messages",
                Some(ADMIN_TOKEN),
                Some(request.clone()),
            )
            .await;
        assert_eq!(status, 202, "{name}: {answer}");
        let id = answer["outbox_id"].as_i64().expect("outbox_id");
        by_callback.insert(parley::outbox::callback_data(id, user), *name);
    }
    assert_eq!(covered, every_kind(), "a sample of every kind");
    assert!(
        graph
            .wait_until(Duration::from_secs(15), |a| {
                a.iter().filter(|a| a.is_delivery()).count() >= samples.len()
                    && a.iter().any(|a| a.is_mark_read())
            })
            .await,
        "everything sent: {:?}",
        graph.attempts()
    );

    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    let mut location = None;
    for attempt in graph.attempts() {
        let name = if attempt.is_mark_read() {
            "read_receipt"
        } else {
            let callback = attempt.callback().expect("a callback on every message");
            *by_callback
                .get(callback)
                .unwrap_or_else(|| panic!("not a sample: {}", attempt.body))
        };
        seen.insert(name);
        if name == "location" {
            location = Some(attempt.body.clone());
        }
        let schema = if attempt.is_mark_read() {
            receipt
        } else {
            message
        };
        if let Err(e) = schemas.validate(&attempt.body, schema) {
            failures.push(format!("{name}: {e:#}\n{}", attempt.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let expected: BTreeSet<&str> = samples
        .iter()
        .map(|(n, _)| *n)
        .chain(["read_receipt"])
        .collect();
    assert_eq!(seen, expected);

    // The validator is not lenient: the coordinates as numbers (as sent before), or a field
    // the API does not define, are refused.
    let mut location = location.expect("the location body");
    assert_eq!(
        location["location"],
        json!({"latitude": "-6.2088", "longitude": "106.8456", "name": "Shop", "address": "Jl. Sudirman 1"})
    );
    location["location"]["latitude"] = json!(-6.2088);
    assert!(schemas.validate(&location, message).is_err());
    location["location"]["latitude"] = json!("-6.2088");
    location["surprise"] = json!(true);
    assert!(schemas.validate(&location, message).is_err());
    app.stop().await;
}
on_both_stores!(
    graph_schema,
    every_request_parley_sends_matches_the_graph_api_request_schema
);

/// Meta's file, if this checkout has `shared/` beside it (the workplace does; a clean clone
/// elsewhere does not, and `.ci/run` requires it only where it is there, through
/// `PARLEY_REQUIRE_META_SPEC`). `PARLEY_META_SPEC` names it elsewhere.
fn spec_path() -> Option<PathBuf> {
    let path = std::env::var_os("PARLEY_META_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("PARLEY_REQUIRE_META_SPEC").is_ok() {
        panic!(
            "{} is missing but PARLEY_REQUIRE_META_SPEC is set",
            path.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED: {} is not there to check the vendored schemas against (set PARLEY_META_SPEC). !!!!!\n",
        path.display()
    );
    None
}

/// The vendored schemas are those of Meta's pinned file, unchanged, at the pointers the
/// fixture names (what `extract.py --check` says, without Python).
#[test]
fn the_vendored_schemas_are_those_of_metas_file() {
    let doc = fixture();
    let provenance = &doc["x-provenance"];
    assert_eq!(provenance["sha256"], SPEC_SHA256);
    let pointers: Vec<&str> = provenance["pointers"]
        .as_array()
        .expect("pointers")
        .iter()
        .map(|p| p.as_str().expect("a pointer"))
        .collect();
    let vendored = doc["components"]["schemas"].as_object().expect("schemas");
    assert_eq!(pointers.len(), vendored.len());
    let Some(path) = spec_path() else {
        return;
    };
    let bytes = std::fs::read(&path).expect("read the spec");
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), SPEC_SHA256);
    let spec: Value = serde_norway::from_slice(&bytes).expect("the spec parses");
    for pointer in pointers {
        let name = pointer
            .strip_prefix("/components/schemas/")
            .expect("a schema pointer");
        assert_eq!(
            spec.pointer(pointer),
            vendored.get(name),
            "{pointer} differs from Meta's file: run tests/fixtures/graph-schemas/extract.py"
        );
    }
    // Every schema they reference is vendored too.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc["components"], &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(r);
        assert!(vendored.contains_key(name), "{r} is not vendored");
    }
}
