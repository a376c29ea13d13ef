//! Contacts, the inbox and CSV through the admin API, on both stores: CRUD, filters and keyset
//! pages walked to the end, tags, typed custom fields, block (the bot stays silent, the
//! message is kept), the consent ledger, erasure that keeps counts, import jobs with bad lines
//! and dry runs, export round-trip, and the conversations list after a scripted exchange.

use std::sync::Arc;
use std::time::Duration;

use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

const FLOW: &str = r#"
id: hello
triggers:
  - keyword: hi
start: greet
nodes:
  greet:
    send: {text: "Hello there!"}
"#;

async fn start(db: &TestDb) -> (TestApp, Arc<FakeGraph>, tempfile::TempDir) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("hello.yaml"), FLOW).unwrap();
    let mut settings = test_settings(db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    (app, graph, flows)
}

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin(method, path, Some(ADMIN_TOKEN), body).await
}

fn replies_to(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .delivered()
        .into_iter()
        .filter(|a| a.to() == Some(user))
        .filter_map(|a| a.text().map(str::to_string))
        .collect()
}

/// Every page of `path` (with `limit`), following `next_cursor`: the wa_ids in order.
async fn walk(app: &TestApp, path: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, body) = call(app, Method::GET, &url, None).await;
        assert_eq!(status, 200, "{url}: {body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        out.extend(
            items
                .iter()
                .map(|c| c["wa_id"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("more than 100 pages of {path}");
}

fn number(i: usize) -> String {
    format!("62812000{i:05}")
}

async fn contacts_crud_filters_and_consent(db: TestDb) {
    let (app, _graph, _flows) = start(&db).await;

    // Custom field definitions: typed; a bad one refused.
    for def in [
        json!({"name": "tier", "kind": "list", "options": ["gold", "silver"]}),
        json!({"name": "orders", "kind": "number"}),
        json!({"name": "since", "kind": "date"}),
        json!({"name": "vip", "kind": "boolean"}),
        json!({"name": "note", "kind": "text"}),
    ] {
        let (status, body) = call(&app, Method::POST, "/contact-fields", Some(def)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(
        &app,
        Method::POST,
        "/contact-fields",
        Some(json!({"name": "colour", "kind": "list"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/contact-fields",
        Some(json!({"name": "x", "kind": "money"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // 23 contacts: every third tagged vip, every fourth from the API.
    for i in 0..23 {
        let mut tags = vec!["customer"];
        if i % 3 == 0 {
            tags.push("vip");
        }
        let body = json!({
            "wa_id": format!("+{}", number(i)),
            "name": format!("Customer {i}"),
            "tags": tags,
            "source": (if i % 4 == 0 { "api" } else { "manual" }),
            "profile": {"email": format!("C{i}@Mail.Example")},
            "custom_fields": {"tier": "gold", "orders": i, "vip": i % 3 == 0},
        });
        let (status, created) = call(&app, Method::POST, "/contacts", Some(body)).await;
        assert_eq!(status, 201, "{created}");
    }
    let (status, c) = call(&app, Method::GET, &format!("/contacts/{}", number(3)), None).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["name"], "Customer 3");
    assert_eq!(
        c["profile"]["email"], "c3@mail.example",
        "checked as flows do"
    );
    assert_eq!(c["custom_fields"]["tier"], "gold");
    assert_eq!(c["custom_fields"]["vip"], true);
    assert_eq!(c["tags"], json!(["customer", "vip"]));
    assert_eq!(c["source"], "manual");

    // Bad values are refused, each named; nothing changes.
    let (status, body) = call(
        &app,
        Method::PATCH,
        &format!("/contacts/{}", number(3)),
        Some(json!({
            "custom_fields": {"tier": "bronze", "orders": "many", "shoe": "42"},
            "profile": {"email": "not-an-email"},
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("tier") && e.contains("one of gold, silver")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("orders") && e.contains("not a number")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("shoe") && e.contains("not defined")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("contact.email")),
        "{errors:?}"
    );
    let (_, c) = call(&app, Method::GET, &format!("/contacts/{}", number(3)), None).await;
    assert_eq!(c["custom_fields"]["tier"], "gold");

    // Update: a field changed, one cleared, the rest kept; the name changes.
    let (status, c) = call(
        &app,
        Method::PATCH,
        &format!("/contacts/{}", number(3)),
        Some(json!({"name": "Budi", "custom_fields": {"tier": "silver", "vip": null}, "profile": {"gender": "Perempuan"}})),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["name"], "Budi");
    assert_eq!(c["custom_fields"]["tier"], "silver");
    assert!(c["custom_fields"].get("vip").is_none(), "{c}");
    assert_eq!(c["custom_fields"]["orders"], 3);
    assert_eq!(c["profile"]["gender"], "female");
    assert_eq!(c["profile"]["email"], "c3@mail.example");
    let (status, _) = call(
        &app,
        Method::PATCH,
        "/contacts/6289999999999",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 404);

    // Tags: add and remove.
    let (status, c) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/tags", number(4)),
        Some(json!({"add": ["vip", "late payer"], "remove": ["customer"]})),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["tags"], json!(["late payer", "vip"]));

    // Every page, no duplicates, none missed, in order.
    let all = walk(&app, "/contacts", 5).await;
    let expected: Vec<String> = (0..23).map(number).collect();
    assert_eq!(all, expected);
    let vip = walk(&app, "/contacts?tag=vip", 2).await;
    let mut expected_vip: Vec<String> = (0..23).filter(|i| i % 3 == 0).map(number).collect();
    expected_vip.push(number(4));
    expected_vip.sort();
    assert_eq!(vip, expected_vip);
    let api = walk(&app, "/contacts?source=api", 3).await;
    assert_eq!(
        api,
        (0..23)
            .filter(|i| i % 4 == 0)
            .map(number)
            .collect::<Vec<_>>()
    );
    let prefix = walk(&app, "/contacts?q=%2B628120000001", 50).await;
    assert_eq!(prefix, (10..20).map(number).collect::<Vec<_>>());
    let named = walk(&app, "/contacts?q=BUD", 50).await;
    assert_eq!(named, vec![number(3)]);
    // A name prefix pages in name order.
    let mut by_name: Vec<(String, String)> = (0..23)
        .filter(|i| *i != 3)
        .map(|i| (format!("customer {i}"), number(i)))
        .collect();
    by_name.sort();
    let customers = walk(&app, "/contacts?q=Customer", 4).await;
    assert_eq!(
        customers,
        by_name.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
    );
    assert!(walk(&app, "/contacts?q=nobody", 4).await.is_empty());
    let (status, body) = call(&app, Method::GET, "/contacts?source=fax", None).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = call(&app, Method::GET, "/contacts?cursor=zz", None).await;
    assert_eq!(status, 400);

    // Changed since: only what changed after the mark, in that order, walked in pages.
    let (_, everyone) = call(&app, Method::GET, "/contacts?limit=200", None).await;
    let mark = everyone["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["updated_at"].as_i64().unwrap())
        .max()
        .unwrap()
        + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in [7, 1, 9] {
        let (status, _) = call(
            &app,
            Method::PATCH,
            &format!("/contacts/{}", number(i)),
            Some(json!({"name": format!("Changed {i}")})),
        )
        .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let changed = walk(&app, &format!("/contacts?updated_since={mark}"), 2).await;
    assert_eq!(changed, vec![number(7), number(1), number(9)]);

    // Block and unblock.
    let (status, c) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/block", number(5)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(c["blocked_at"].is_i64());
    assert_eq!(
        walk(&app, "/contacts?blocked=true", 10).await,
        vec![number(5)]
    );
    assert_eq!(walk(&app, "/contacts?blocked=false", 50).await.len(), 22);
    let (_, c) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/unblock", number(5)),
        None,
    )
    .await;
    assert!(c["blocked_at"].is_null());
    assert!(walk(&app, "/contacts?blocked=true", 10).await.is_empty());

    // Opt-out and back in: the ledger has both, with who and from where.
    let (status, c) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/opt-out", number(6)),
        Some(json!({"source": "phone call", "by": "agent-7", "note": "asked on the phone"})),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(c["opted_out_at"].is_i64());
    assert_eq!(
        walk(&app, "/contacts?opted_out=true", 10).await,
        vec![number(6)]
    );
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/opt-in", number(6)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(walk(&app, "/contacts?opted_out=true", 10).await.is_empty());
    let (_, ledger) = call(
        &app,
        Method::GET,
        &format!("/contacts/{}/consent", number(6)),
        None,
    )
    .await;
    let entries = ledger["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ledger}");
    assert_eq!(entries[0]["action"], "opt_out");
    assert_eq!(entries[0]["source"], "phone call");
    assert_eq!(entries[0]["actor"], "agent-7");
    assert_eq!(entries[0]["note"], "asked on the phone");
    assert_eq!(entries[1]["action"], "opt_in");
    assert_eq!(entries[1]["source"], "admin");
    assert!(entries[1]["at"].as_i64() >= entries[0]["at"].as_i64());
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/contacts/{}/opt-out", number(99)),
        None,
    )
    .await;
    assert_eq!(status, 404);

    app.stop().await;
}
on_both_stores!(
    contacts_crud_filters_and_consent,
    contacts_crud_filters_and_consent
);

async fn import_with_bad_lines_and_export_round_trip(db: TestDb) {
    let (app, _graph, _flows) = start(&db).await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/contact-fields",
        Some(json!({"name": "tier", "kind": "list", "options": ["gold", "silver"]})),
    )
    .await;
    assert_eq!(status, 200);
    let csv = "wa_id,name,tags,email,tier\n\
               6281300000001,Ani,vip;new,ani@mail.example,gold\n\
               12ab,Bad Number,,,\n\
               6281300000002,Budi,,budi@,silver\n\
               6281300000003,\"Citra, S.\",new,,bronze\n\
               6281300000004,Dewi,,,\n\
               6281300000001,Again,,,\n";
    let post = |dry: bool| {
        let url = format!(
            "{}/admin/v1/contacts/import{}",
            app.base,
            if dry { "?dry_run=true" } else { "" }
        );
        app.http
            .post(url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
    };
    let job = |id: i64| {
        let app = &app;
        async move {
            let mut last = Value::Null;
            for _ in 0..200 {
                let (status, body) =
                    call(app, Method::GET, &format!("/contacts/import/{id}"), None).await;
                assert_eq!(status, 200, "{body}");
                if body["state"] != "running" {
                    return body;
                }
                last = body;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("import {id} still running: {last}");
        }
    };

    // A dry run: every problem with its line, nothing written.
    let resp = post(true).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let started: Value = resp.json().await.unwrap();
    let done = job(started["job_id"].as_i64().unwrap()).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["dry_run"], true);
    assert_eq!(done["total"], 6);
    assert_eq!(done["valid"], 2);
    assert_eq!(done["applied"], 0);
    let lines: Vec<i64> = done["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 7], "{done}");
    let errors = done["errors"].to_string();
    assert!(errors.contains("not a WhatsApp number"), "{errors}");
    assert!(errors.contains("contact.email"), "{errors}");
    assert!(errors.contains("one of gold, silver"), "{errors}");
    assert!(errors.contains("also on line 2"), "{errors}");
    assert!(
        walk(&app, "/contacts", 50).await.is_empty(),
        "a dry run writes nothing"
    );

    // A header that names an unknown column: refused at once.
    let resp = app
        .http
        .post(format!("{}/admin/v1/contacts/import", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body("wa_id,shoe\n6281300000009,42\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);

    // For real: the good lines are applied, the bad ones reported.
    let resp = post(false).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let started: Value = resp.json().await.unwrap();
    let done = job(started["job_id"].as_i64().unwrap()).await;
    assert_eq!(done["applied"], 2, "{done}");
    assert_eq!(done["errors"].as_array().unwrap().len(), 4);
    assert_eq!(
        walk(&app, "/contacts", 50).await,
        vec!["6281300000001", "6281300000004"]
    );
    let (_, ani) = call(&app, Method::GET, "/contacts/6281300000001", None).await;
    assert_eq!(ani["source"], "import");
    assert_eq!(ani["tags"], json!(["new", "vip"]));
    assert_eq!(ani["custom_fields"]["tier"], "gold");
    // One more, by hand, with a comma and a quote in its name.
    call(
        &app,
        Method::POST,
        "/contacts",
        Some(json!({"wa_id": "6281300000005", "name": "Eka \"E\", Jr.", "custom_fields": {"tier": "silver"}})),
    )
    .await;

    // Export, and the export imported again changes nothing.
    let export = || async {
        let resp = app
            .http
            .get(format!("{}/admin/v1/contacts/export", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        resp.text().await.unwrap()
    };
    let first = export().await;
    let mut reader = csv::Reader::from_reader(first.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[..3], &["wa_id", "name", "tags"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[2][1], "Eka \"E\", Jr.");
    let tier = header.iter().position(|h| h == "tier").unwrap();
    assert_eq!(&rows[0][tier], "gold");
    let before: Vec<Value> = {
        let (_, b) = call(&app, Method::GET, "/contacts", None).await;
        b["items"].as_array().unwrap().clone()
    };
    let resp = app
        .http
        .post(format!("{}/admin/v1/contacts/import", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let started: Value = resp.json().await.unwrap();
    let done = job(started["job_id"].as_i64().unwrap()).await;
    assert_eq!(done["applied"], 3, "{done}");
    assert_eq!(done["errors"], json!([]));
    let (_, after) = call(&app, Method::GET, "/contacts", None).await;
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("updated_at");
        v.as_object_mut().unwrap().remove("source");
        v
    };
    let after: Vec<Value> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(strip)
        .collect();
    assert_eq!(after, before.iter().map(strip).collect::<Vec<_>>());
    let second = export().await;
    let data = |s: &str| -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_reader(s.as_bytes());
        r.records()
            .map(|r| {
                r.unwrap()
                    .iter()
                    .take(3 + 7 + 1)
                    .map(String::from)
                    .collect()
            })
            .collect()
    };
    assert_eq!(data(&first), data(&second));
    app.stop().await;
}
on_both_stores!(
    import_with_bad_lines_and_export_round_trip,
    import_with_bad_lines_and_export_round_trip
);

async fn conversations_inbox_block_and_erasure(db: TestDb) {
    let (app, graph, _flows) = start(&db).await;
    let store = db.store().await;
    let (a, b) = ("6281400000001", "6281400000002");
    let t = now_secs() - 60;
    app.post_webhook(&text_webhook(PNID, a, "wamid.A1", "hi", t))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            replies_to(&graph, a).len() == 1
        })
        .await
    );
    app.post_webhook(&text_webhook(PNID, b, "wamid.B1", "hi", t))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            replies_to(&graph, b).len() == 1
        })
        .await
    );
    app.post_webhook(&text_webhook(PNID, a, "wamid.A2", "thanks a lot", t + 1))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND state = 'done'",
            )
            .await
                == 3
        })
        .await
    );

    let list = |path: &'static str| {
        let app = &app;
        async move {
            let (status, body) = call(app, Method::GET, path, None).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let body = list("/conversations").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["user"], a, "newest first");
    assert_eq!(items[1]["user"], b);
    assert_eq!(items[0]["unread"], 2);
    assert_eq!(items[1]["unread"], 1);
    assert_eq!(items[0]["status"], "bot");
    assert!(items[0]["assignee"].is_null());
    let last_in = items[0]["last_inbound_at"].as_i64().unwrap();
    assert_eq!(last_in, (t + 1) * 1000);
    assert_eq!(
        items[0]["window_expires_at"].as_i64().unwrap(),
        last_in + 24 * 3600 * 1000
    );
    assert_eq!(items[0]["last_message"]["preview"], "thanks a lot");
    assert_eq!(items[1]["last_message"]["direction"], "out");
    assert_eq!(items[1]["last_message"]["preview"], "Hello there!");
    assert_eq!(body["next_cursor"], Value::Null);
    // Pages of one: both, once each.
    let (_, p1) = call(&app, Method::GET, "/conversations?limit=1", None).await;
    assert_eq!(p1["items"][0]["user"], a);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = call(
        &app,
        Method::GET,
        &format!("/conversations?limit=1&cursor={c}"),
        None,
    )
    .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1, "{p2}");
    assert_eq!(p2["items"][0]["user"], b);
    if let Some(c) = p2["next_cursor"].as_str() {
        let (_, p3) = call(
            &app,
            Method::GET,
            &format!("/conversations?limit=1&cursor={c}"),
            None,
        )
        .await;
        assert!(p3["items"].as_array().unwrap().is_empty(), "{p3}");
    }

    // Read, then one more message: one unread. Assigned, then handed to a human.
    let (status, r) = call(
        &app,
        Method::POST,
        &format!("/conversations/{PNID}/{a}/read"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/conversations/{PNID}/{a}/assign"),
        Some(json!({"assignee": "agent-7"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/conversations/{PNID}/6281499999999/assign"),
        Some(json!({"assignee": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/conversations/{PNID}/{a}/handoff"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let body = list("/conversations").await;
    assert_eq!(body["items"][0]["unread"], 0);
    assert_eq!(body["items"][0]["assignee"], "agent-7");
    assert_eq!(body["items"][0]["status"], "waiting_for_agent");
    app.post_webhook(&text_webhook(PNID, a, "wamid.A3", "hello?", t + 2))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            list("/conversations").await["items"][0]["unread"] == 1
        })
        .await
    );

    // Blocked: the message is kept and counted, nobody answers it; unblocked, the bot does.
    let (status, c) = call(&app, Method::POST, &format!("/contacts/{b}/block"), None).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["source"], "whatsapp");
    app.post_webhook(&text_webhook(PNID, b, "wamid.B2", "hi", t + 3))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let body = list("/conversations").await;
            body["items"][0]["user"] == b && body["items"][0]["unread"] == 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        replies_to(&graph, b).len(),
        1,
        "no reply to a blocked contact"
    );
    assert!(list("/conversations").await["items"][0]["blocked"] == true);
    call(&app, Method::POST, &format!("/contacts/{b}/unblock"), None).await;
    app.post_webhook(&text_webhook(PNID, b, "wamid.B3", "hi", t + 4))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            replies_to(&graph, b).len() == 2
        })
        .await
    );

    // A contact made before the customer writes, blocked: its first message gets no answer.
    let c = "6281400000003";
    call(
        &app,
        Method::POST,
        "/contacts",
        Some(json!({"wa_id": c, "tags": ["lead"]})),
    )
    .await;
    call(&app, Method::POST, &format!("/contacts/{c}/block"), None).await;
    app.post_webhook(&text_webhook(PNID, c, "wamid.C1", "hi", t + 5))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            list("/conversations").await["items"][0]["user"] == c
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(replies_to(&graph, c).is_empty());
    let (_, cc) = call(&app, Method::GET, &format!("/contacts/{c}"), None).await;
    assert_eq!(cc["source"], "manual");
    assert_eq!(
        cc["tags"],
        json!(["lead"]),
        "the first message keeps the contact's tags"
    );

    // Search, both directions, by contact and time, in pages.
    let search = |path: String| {
        let app = &app;
        async move {
            let (status, body) = call(app, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let hits = search("/messages/search?q=thanks".into()).await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(hits["items"][0]["user"], a);
    assert_eq!(hits["items"][0]["direction"], "in");
    assert_eq!(hits["items"][0]["text"], "thanks a lot");
    let hits = search("/messages/search?q=hello%20THERE".into()).await;
    let replies = hits["items"].as_array().unwrap().clone();
    assert_eq!(replies.len(), 3, "{hits}");
    assert!(replies.iter().all(|h| h["direction"] == "out"));
    let hits = search(format!("/messages/search?q=hello&user={b}")).await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 2, "{hits}");
    let future = (now_secs() + 3600) * 1000;
    let hits = search(format!("/messages/search?q=hello&from={future}")).await;
    assert!(hits["items"].as_array().unwrap().is_empty(), "{hits}");
    let mut paged = Vec::new();
    let mut next = search("/messages/search?q=there%20hello&limit=1".into()).await;
    loop {
        paged.extend(
            next["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].clone()),
        );
        match next["next_cursor"].as_str() {
            Some(c) => {
                next = search(format!(
                    "/messages/search?q=there%20hello&limit=1&cursor={c}"
                ))
                .await
            }
            None => break,
        }
    }
    assert_eq!(
        paged,
        replies.iter().map(|h| h["id"].clone()).collect::<Vec<_>>()
    );
    let (status, _) = call(&app, Method::GET, "/messages/search?q=", None).await;
    assert_eq!(status, 422);

    // Delete: bodies erased, counts kept.
    let before = app.conversation(b).await["messages"]
        .as_array()
        .unwrap()
        .len();
    assert!(before >= 5, "{before}");
    let held = app.conversation(b).await["state"].to_string();
    assert!(
        held.contains("Test User"),
        "the state knew the customer: {held}"
    );
    let (status, erased) = call(&app, Method::DELETE, &format!("/contacts/{b}"), None).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["erased"]["inbound_messages"], 3, "{erased}");
    assert!(
        erased["erased"]["outbound_messages"].as_i64().unwrap() >= 2,
        "{erased}"
    );
    let view = app.conversation(b).await;
    // The conversation forgot the customer (its profile name came with each message); its
    // counts and window stay.
    assert!(
        view["state"]["contact"]["profile_name"].is_null(),
        "{}",
        view["state"]
    );
    assert!(
        !view["state"].to_string().contains("Test User"),
        "{}",
        view["state"]
    );
    assert!(
        view["state"]["inbound_count"].as_u64().unwrap() >= 3,
        "{}",
        view["state"]
    );
    assert_eq!(view["window_open"], true, "{view}");
    let messages = view["messages"].as_array().unwrap();
    assert_eq!(messages.len(), before, "counts kept");
    for m in messages.iter().filter(|m| m["kind"] != "mark_read") {
        assert_eq!(m["content"], json!({"erased": true}), "{m}");
    }
    assert!(!view.to_string().contains("Hello there!"));
    let (status, _) = call(&app, Method::GET, &format!("/contacts/{b}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbox WHERE kind = 'message' AND payload LIKE '%\"hi\"%' AND user_key = '6281400000002'").await,
        0
    );
    let hits = search(format!("/messages/search?q=hello&user={b}")).await;
    assert!(
        hits["items"].as_array().unwrap().is_empty(),
        "erased from the index: {hits}"
    );
    let hits = search("/messages/search?q=hello".into()).await;
    let texts: Vec<&str> = hits["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["hello?", "Hello there!"], "{hits}");
    let listed = list("/conversations").await;
    let bview = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user"] == b)
        .unwrap()
        .clone();
    assert_eq!(bview["last_message"]["preview"], "(erased)");

    // A keyword opt-out and opt-in land in the consent ledger.
    let d = "6281400000004";
    app.post_webhook(&text_webhook(PNID, d, "wamid.D1", "STOP", t + 6))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&app, Method::GET, &format!("/contacts/{d}"), None)
                .await
                .1["opted_out_at"]
                .is_i64()
        })
        .await
    );
    app.post_webhook(&text_webhook(PNID, d, "wamid.D2", "START", t + 7))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&app, Method::GET, &format!("/contacts/{d}/consent"), None)
                .await
                .1["items"]
                .as_array()
                .is_some_and(|i| i.len() == 2)
        })
        .await
    );
    let (_, dc) = call(&app, Method::GET, &format!("/contacts/{d}"), None).await;
    assert!(dc["opted_out_at"].is_null(), "{dc}");
    let ledger = &dc["consent"];
    assert_eq!(ledger[0]["action"], "opt_out", "{dc}");
    assert_eq!(ledger[0]["source"], "whatsapp");
    assert_eq!(ledger[0]["actor"], "customer");
    assert_eq!(ledger[1]["action"], "opt_in");
    app.stop().await;
}
on_both_stores!(
    conversations_inbox_block_and_erasure,
    conversations_inbox_block_and_erasure
);
