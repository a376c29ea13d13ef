//! The OpenAPI document (`GET /admin/v1/openapi.json`) against the router, and schemathesis
//! (PyPI) against the document: every route the router serves is in it and it names no
//! other; run with the owner's token, schemathesis finds no 5xx, no answer its schema does
//! not allow, and no operation that answers without a key; with an agent's key, every
//! operation above the agent role is refused (403, naming its role). Fails, never skips,
//! under CI when schemathesis is missing; says so loudly when it skips elsewhere.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use parley::domain::{AccountId, PaymentStatus, Role, UserKey};
use parley::store::Store;
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_stores;

const USER: &str = "6281200000123";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (METHOD, template under /admin/v1) of every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let rel = path
            .strip_prefix("/admin/v1")
            .unwrap_or_else(|| panic!("{path} is not under /admin/v1"));
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), rel.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_document_names_every_route_the_router_serves_and_no_other() {
    let doc = parley::ingress::openapi_document();
    let served = crate::keys::routes_in_source();
    let written = documented(doc);
    let missing: Vec<_> = served.difference(&written).collect();
    let extra: Vec<_> = written.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes the router serves that the OpenAPI document leaves out: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "operations of the OpenAPI document no route serves: {extra:?}"
    );
    // Each operation declares the role ROUTE_ROLES gives it.
    for (method, path) in &written {
        let line = parley::ingress::route_role(method, path).expect("a role");
        let op = &doc["paths"][format!("/admin/v1{path}")][method.to_lowercase()];
        assert_eq!(op["x-parley-role"], line.role.as_str(), "{method} {path}");
        assert_eq!(op["security"][0]["bearer"], json!([]), "{method} {path}");
    }
    for line in parley::ingress::ROUTE_ROLES
        .iter()
        .filter(|l| !l.path.ends_with("/*"))
    {
        assert!(
            written
                .iter()
                .any(|(m, p)| p == line.path && (line.method == "*" || line.method == m)),
            "ROUTE_ROLES names {} {}, which the document leaves out",
            line.method,
            line.path
        );
    }
    let events: BTreeSet<&str> = doc["webhooks"]
        .as_object()
        .expect("webhooks")
        .keys()
        .map(String::as_str)
        .collect();
    let catalog: BTreeSet<&str> = parley::hooks::EventType::ALL
        .iter()
        .map(|e| e.as_str())
        .collect();
    assert_eq!(events, catalog);
}

/// How schemathesis is run: its CLI from the Python package (on no PATH in particular).
const RUN_CLI: &str =
    "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; \
     sys.exit(schemathesis())";

/// Whether schemathesis can run here; under CI it must.
fn schemathesis_present() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", RUN_CLI, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "schemathesis is missing: `python3 -m pip install schemathesis` (CI must run it)"
        );
        eprintln!(
            "\n\n*** WARNING: schemathesis is not installed: the OpenAPI fuzzing test is \
             SKIPPED (python3 -m pip install schemathesis) ***\n\n"
        );
    }
    ok
}

/// schemathesis's hooks: a fresh Idempotency-Key for each request that sends a well-formed
/// one (a key reused on another request is refused, 422, before the handler runs); a
/// malformed one is kept, its 400 tested.
const HOOKS: &str = r#"
import re
import uuid

import schemathesis

WELL_FORMED = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str) and WELL_FORMED.fullmatch(value):
            headers[name] = uuid.uuid4().hex
"#;

/// An order of one `sku` by [`USER`], with a manual payment for it (paid if `paid`): the
/// order's number and the payment's id.
async fn seed_order(store: &Store, sku: &str, key: &str, paid: bool) -> (String, i64) {
    let (order, payment) = order_with_payment(store, USER, key, sku, 1).await;
    if paid {
        let now = parley::store::now_ms();
        let moved = store
            .settle_payment(
                payment,
                PaymentStatus::Pending,
                PaymentStatus::Paid,
                None,
                now,
            )
            .await
            .expect("paid");
        assert!(moved);
    }
    (order, payment)
}

/// A little of everything, so that GET-by-id routes find something: schemathesis's
/// configuration (`schemathesis.toml`) naming what was made as the path parameters.
async fn seed(app: &TestApp, graph: &FakeGraph, store: &Store) -> String {
    let status = app
        .post_webhook(&text_webhook(
            PNID,
            USER,
            "wamid.SEED1",
            "hello",
            now_secs(),
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            app.admin(
                Method::GET,
                &format!("/conversations/{PNID}/{USER}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await
            .0 == 200
        })
        .await,
        "the seeded conversation"
    );
    // A signed body that is no webhook: a dead letter (`webhook_malformed`).
    assert_eq!(app.post_webhook("{\"object\": 1}").await, 200);
    // Two of each: the second for its DELETE, so that the first stays for the other routes.
    let calls = [
        (
            "/contacts",
            json!({"wa_id": "6281200000124", "name": "Ani", "tags": ["vip"]}),
        ),
        (
            "/contacts",
            json!({"wa_id": "6281200000125", "name": "Budi"}),
        ),
        ("/contact-fields", json!({"name": "city", "kind": "text"})),
        (
            "/contact-fields",
            json!({"name": "oldfield", "kind": "number"}),
        ),
        ("/categories", json!({"slug": "tea", "name": "Tea"})),
        ("/categories", json!({"slug": "gone", "name": "Gone"})),
        (
            "/materials",
            json!({"name": "leaf", "unit": "g", "stock": "100"}),
        ),
        ("/materials", json!({"name": "dust", "unit": "g"})),
        (
            "/products",
            json!({"sku": "TEA-1", "name": "Green tea", "price": "15000", "stock": 10, "category": "tea"}),
        ),
        (
            "/products",
            json!({"sku": "TEA-2", "name": "Old tea", "price": "9000"}),
        ),
        (
            "/products",
            json!({"sku": "CLUB", "name": "Tea club", "price": "50000", "kind": "plan",
            "period_days": 30, "access_link": "https://example.com/club"}),
        ),
        (
            "/vouchers",
            json!({"code": "HELLO", "kind": "percent", "value": "10"}),
        ),
        (
            "/vouchers",
            json!({"code": "BYE", "kind": "percent", "value": "5"}),
        ),
        ("/keys", json!({"name": "seed", "role": "agent"})),
        ("/keys", json!({"name": "seed 2", "role": "agent"})),
        (
            "/webhooks",
            json!({"url": format!("{}/hook", graph.base_url), "description": "seed"}),
        ),
        (
            "/webhooks",
            json!({"url": format!("{}/hook2", graph.base_url)}),
        ),
        (
            "/campaigns",
            json!({"name": "seed", "phone_number_id": PNID,
            "message": {"template": {"name": "promo", "language": "id"}},
            "recipients": [{"wa_id": USER}]}),
        ),
    ];
    let mut made: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
    for (path, body) in calls {
        let (status, answer) = app
            .admin(Method::POST, path, Some(ADMIN_TOKEN), Some(body))
            .await;
        assert!(
            status == 200 || status == 201,
            "seeding {path}: {status} {answer}"
        );
        made.entry(path).or_default().push(answer);
    }
    let id = |path: &str, i: usize| made[path][i]["id"].to_string().replace('"', "");
    let (_, letters) = app
        .admin(Method::GET, "/dead-letters", Some(ADMIN_TOKEN), None)
        .await;
    let letter = letters["items"][0]["id"].as_i64().expect("a dead letter");
    // Commerce: an order with a payment waiting (confirm, show), one paid (refund), a plan
    // paid (its subscription), a custom order, and a contact import job.
    let (order, waiting) = seed_order(store, "TEA-1", "seed-1", false).await;
    let (_, paid) = seed_order(store, "TEA-1", "seed-2", true).await;
    seed_order(store, "CLUB", "seed-3", true).await;
    let (_, subs) = app
        .admin(Method::GET, "/subscriptions", Some(ADMIN_TOKEN), None)
        .await;
    let subscription = subs["items"][0]["id"].as_i64().expect("a subscription");
    let custom = store
        .create_custom_order(
            &AccountId::from(PNID),
            &UserKey::from(USER),
            "a cake with a tea leaf on it",
            None,
            "seed-custom",
            parley::store::now_ms(),
        )
        .await
        .expect("a custom order");
    let answer = app
        .http
        .post(format!(
            "{}/admin/v1/contacts/import?account={PNID}&dry_run=true",
            app.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body("wa_id,name\n6281200000126,Citra\n")
        .send()
        .await
        .expect("an import");
    assert_eq!(answer.status(), 202);
    let job: Value = answer.json().await.expect("the job");
    let job = job["job_id"].as_i64().expect("an import job");
    // A webhook delivery (a test event) for the replay route.
    let hook = id("/webhooks", 0);
    let (status, v) = app
        .admin(
            Method::POST,
            &format!("/webhooks/{hook}/test"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(status < 300, "a test event: {status} {v}");
    let mut delivery = None;
    for _ in 0..100 {
        let (_, list) = app
            .admin(
                Method::GET,
                &format!("/webhooks/{hook}/deliveries"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        delivery = list["items"][0]["delivery_id"].as_i64();
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let delivery = delivery.expect("a delivery attempt");
    format!(
        r#"hooks = "parley_hooks"

[parameters]
"query.account" = "{PNID}"
"path.phone_number_id" = "{PNID}"
"path.user" = "{USER}"
"path.wa_id" = "6281200000124"
"path.sku" = "TEA-1"
"path.slug" = "tea"
"path.code" = "HELLO"

[[operations]]
include-name-regex = "^POST /admin/v1/webhooks/[^/]+/deliveries/"
parameters = {{ "path.id" = "{hook}", "path.delivery" = "{delivery}" }}

[[operations]]
include-method = "DELETE"
parameters = {{ "path.wa_id" = "6281200000125", "path.sku" = "TEA-2", "path.slug" = "gone", "path.code" = "BYE" }}
{}"#,
        [
            ("webhooks/", "GET|POST|PATCH", "id", hook.clone()),
            ("webhooks/", "DELETE", "id", id("/webhooks", 1)),
            ("keys/", "GET|POST", "id", id("/keys", 0)),
            ("keys/", "DELETE", "id", id("/keys", 1)),
            ("materials/", "GET|POST|PATCH", "name", "leaf".into()),
            ("materials/", "DELETE", "name", "dust".into()),
            ("contact-fields/", "DELETE", "name", "oldfield".into()),
            ("campaigns/", "GET|POST", "id", id("/campaigns", 0)),
            ("dead-letters/", "GET|POST", "id", letter.to_string()),
            ("orders/", "GET|PATCH", "number", order),
            ("payments/", "GET", "id", waiting.to_string()),
            ("payments/[^/]+/confirm", "POST", "id", waiting.to_string()),
            ("payments/[^/]+/refund", "POST", "id", paid.to_string()),
            ("subscriptions/", "GET", "id", subscription.to_string()),
            ("custom-orders/", "GET|PATCH", "id", custom.to_string()),
            ("contacts/import/", "GET", "id", job.to_string()),
        ]
        .iter()
        .map(|(path, methods, name, value)| format!(
            // One filter (two would be either-or): the label, `METHOD /path`.
            "\n[[operations]]\ninclude-name-regex = \"^({methods}) /admin/v1/{path}\"\n\
             parameters = {{ \"path.{name}\" = \"{value}\" }}\n"
        ))
        .collect::<String>()
    )
}

async fn schemathesis_finds_nothing(db: TestDb) {
    if !schemathesis_present() {
        return;
    }
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.flows.http_allow = vec!["127.0.0.1/32".into()];
    // schemathesis's ignored_auth check sends many requests without a key.
    settings.http.auth_failures_burst = 1_000_000;
    // The shipped flows, so that the flow and bot routes have something to show.
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_flows(settings).await;
    let config = seed(&app, &graph, &db.store().await).await;

    let (status, doc) = app
        .admin(Method::GET, "/openapi.json", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(&doc, parley::ingress::openapi_document());
    // Without a key: 401, as every route.
    assert_eq!(
        app.admin(Method::GET, "/openapi.json", None, None).await.0,
        401
    );
    // axum's own refusal of a path segment that is no number is a problem too.
    let resp = app
        .http
        .get(format!("{}/admin/v1/dead-letters/abc", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("a request");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["content-type"],
        parley::ingress::PROBLEM_JSON,
        "a plain-text refusal"
    );

    // An agent's key: every operation above the agent role is refused, naming its role.
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "agent", "role": "agent"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let agent = made["key"].as_str().expect("key").to_string();
    let mut above = 0;
    for (method, path) in documented(&doc) {
        let role: Role = doc["paths"][format!("/admin/v1{path}")][method.to_lowercase()]
            ["x-parley-role"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a role");
        if role == Role::Agent {
            continue;
        }
        above += 1;
        let concrete = path
            .replace("{phone_number_id}", PNID)
            .replace("{user}", USER);
        let concrete = concrete
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
        let (status, answer) = app.admin(m, &concrete, Some(&agent), body).await;
        assert_eq!(status, 403, "{method} {path} as an agent: {answer}");
        assert_eq!(answer["required_role"], role.as_str(), "{answer}");
    }
    assert!(above > 40, "only {above} operations above the agent role");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write the document");
    std::fs::write(dir.path().join("schemathesis.toml"), config).expect("write the config");
    std::fs::write(dir.path().join("parley_hooks.py"), HOOKS).expect("write the hooks");
    let started = Instant::now();
    let (file_arg, base) = (file.clone(), app.base.clone());
    // A deeper run by hand: PARLEY_SCHEMATHESIS_EXAMPLES=100 (CI runs 10 per operation).
    let examples = std::env::var("PARLEY_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let checks = std::env::var("PARLEY_SCHEMATHESIS_CHECKS").unwrap_or_else(|_| {
        "not_a_server_error,response_schema_conformance,content_type_conformance,ignored_auth"
            .into()
    });
    let cwd = dir.path().to_path_buf();
    // The server answers on this runtime's workers while schemathesis runs.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", RUN_CLI, "--no-color", "run"])
            .arg(&file_arg)
            .args(["--url", &base])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--checks", &checks])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args([
                "--max-examples",
                &examples,
                "--workers",
                "2",
                "--seed",
                "21",
            ])
            .args(["--request-timeout", "20", "--suppress-health-check", "all"])
            .env("PYTHONPATH", &cwd)
            .current_dir(&cwd)
            .output()
    })
    .await
    .expect("schemathesis's thread")
    .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis ({} store) took {:.0} s:\n{text}",
        if db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.elapsed().as_secs_f64(),
    );
    assert!(out.status.success(), "schemathesis found problems (above)");
    app.stop().await;
}
on_both_stores!(schemathesis, schemathesis_finds_nothing);
