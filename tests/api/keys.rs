//! API keys, roles and the audit log: a key's life (shown once, stored hashed, revoked and
//! expired keys refused), no escalation, every route of the admin router with every role,
//! a key scoped to one account, and the audit rows of mutating calls.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parley::conversation::CoreLogic;
use parley::domain::Role;
use parley_testkit::FakeGraph;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::on_both_stores;

const OTHER: &str = "106540352242923";
const USER: &str = "6281200000071";

async fn app(db: &TestDb) -> (TestApp, ManualClock, Arc<FakeGraph>) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(db, &graph);
    settings.http.auth_failures_burst = 1000;
    let other: parley::config::AccountSettings = serde_json::from_value(json!({
        "phone_number_id": OTHER,
        "display_phone_number": "15550783882",
        "waba_id": "102290129340399"
    }))
    .expect("account");
    settings.accounts.push(other);
    let clock = ManualClock::at_now();
    let app =
        spawn_app_with_logic_and_clock(settings, Arc::new(CoreLogic), Arc::new(clock.clone()))
            .await;
    (app, clock, graph)
}

/// A new key made with `token`: (id, text).
async fn make_key(app: &TestApp, token: &str, role: &str, account: Option<&str>) -> (i64, String) {
    let mut body = json!({"name": format!("{role} key"), "role": role});
    if let Some(a) = account {
        body["account"] = json!(a);
    }
    let (status, made) = app
        .admin(Method::POST, "/keys", Some(token), Some(body))
        .await;
    assert_eq!(status, 201, "{made}");
    (
        made["id"].as_i64().expect("id"),
        made["key"].as_str().expect("key").to_string(),
    )
}

async fn with_agent(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    ua: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}/admin/v1{}", app.base, path))
        .bearer_auth(key)
        .header("user-agent", ua);
    if path.contains("/handoff") || path.contains("/release") {
        req = req.json(&json!({"reason": "probe"}));
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every text column of a table, as one string.
async fn table_text(db: &TestDb, table: &str) -> String {
    let store = db.store().await;
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT {} FROM {table}",
        match table {
            "api_keys" => "name || ' ' || role || ' ' || prefix || ' ' || hash || ' ' || created_by",
            _ => "key_id || ' ' || role || ' ' || action || ' ' || resource || ' ' || ip || ' ' || COALESCE(user_agent, '') || ' ' || details",
        }
    ))
    .fetch_all(store.pool())
    .await
    .expect("read table");
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

async fn a_key_is_shown_once_stored_hashed_and_refused_once_revoked_or_expired(db: TestDb) {
    let (app, clock, _graph) = app(&db).await;
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "desk", "role": "agent"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_i64().unwrap();
    assert!(key.starts_with("pk_live_") && key.len() == 8 + 64, "{key}");
    assert_eq!(made["prefix"], key[..20]);
    assert_eq!(
        (&made["role"], &made["status"]),
        (&json!("agent"), &json!("active"))
    );
    assert_eq!(made["created_by"], "admin.token");

    // Stored hashed: the table holds the SHA-256 of the key, and nowhere its text.
    let stored = table_text(&db, "api_keys").await;
    assert!(
        !stored.contains(&key[8..]),
        "the key's secret is stored: {stored}"
    );
    assert!(stored.contains(&hex::encode(Sha256::digest(key.as_bytes()))));

    // Listed and shown without it.
    let (status, list) = app
        .admin(Method::GET, "/keys", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id),
        "{list}"
    );
    assert!(!list.to_string().contains(&key[8..]), "{list}");
    let (_, shown) = app
        .admin(Method::GET, &format!("/keys/{id}"), Some(ADMIN_TOKEN), None)
        .await;
    assert!(shown.get("key").is_none() && !shown.to_string().contains(&key[8..]));
    assert_eq!(shown["last_used_at"], Value::Null);

    // It works, and its use is noted.
    let (status, _) = app.admin(Method::GET, "/accounts", Some(&key), None).await;
    assert_eq!(status, 200);
    let (_, shown) = app
        .admin(Method::GET, &format!("/keys/{id}"), Some(ADMIN_TOKEN), None)
        .await;
    assert!(shown["last_used_at"].is_i64(), "{shown}");

    // A key one digit off, a made-up one, the prefix alone: 401.
    let mut off = key.clone().into_bytes();
    let last = off.len() - 1;
    off[last] = if off[last] == b'0' { b'1' } else { b'0' };
    for wrong in [
        String::from_utf8(off).unwrap(),
        format!("pk_live_{}", "0".repeat(64)),
        key[..20].to_string(),
    ] {
        assert_eq!(
            app.admin(Method::GET, "/accounts", Some(&wrong), None)
                .await
                .0,
            401
        );
    }

    // Revoked: 401 from then on; revoking again changes nothing.
    let (status, revoked) = app
        .admin(
            Method::DELETE,
            &format!("/keys/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, &revoked["status"]),
        (200, &json!("revoked")),
        "{revoked}"
    );
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(&key), None)
            .await
            .0,
        401
    );
    let (status, again) = app
        .admin(
            Method::POST,
            &format!("/keys/{id}/revoke"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, &again["revoked_at"]),
        (200, &revoked["revoked_at"])
    );

    // Expiry: in force until its time, 401 after.
    let (status, bad) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "old", "role": "agent", "expires_at": 1000})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let expires_at = parley::actors::Clock::now_ms(&clock) + 60_000;
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "temp", "role": "manager", "expires_at": expires_at})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let temp = made["key"].as_str().unwrap().to_string();
    assert_eq!(
        app.admin(Method::GET, "/flows", Some(&temp), None).await.0,
        404
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        app.admin(Method::GET, "/flows", Some(&temp), None).await.0,
        401
    );
    let (_, shown) = app
        .admin(
            Method::GET,
            &format!("/keys/{}", made["id"]),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(shown["status"], "expired");
    app.stop().await;
}
on_both_stores!(
    lifecycle,
    a_key_is_shown_once_stored_hashed_and_refused_once_revoked_or_expired
);

async fn a_key_makes_and_revokes_keys_of_its_role_or_lower_only(db: TestDb) {
    let (app, _clock, _graph) = app(&db).await;
    let (_, admin) = make_key(&app, ADMIN_TOKEN, "admin", None).await;
    let (_, manager) = make_key(&app, ADMIN_TOKEN, "manager", None).await;
    let (owner_id, _) = make_key(&app, ADMIN_TOKEN, "owner", None).await;

    let (status, body) = app
        .admin(
            Method::POST,
            "/keys",
            Some(&admin),
            Some(json!({"name": "x", "role": "owner"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("owner"), "{body}");
    let (made_admin, _) = make_key(&app, &admin, "admin", None).await;
    make_key(&app, &admin, "agent", None).await;

    // A manager manages no keys at all.
    let (status, body) = app
        .admin(
            Method::POST,
            "/keys",
            Some(&manager),
            Some(json!({"name": "x", "role": "agent"})),
        )
        .await;
    assert_eq!(
        (status, &body["required_role"]),
        (403, &json!("admin")),
        "{body}"
    );
    assert_eq!(
        app.admin(Method::GET, "/keys", Some(&manager), None)
            .await
            .0,
        403
    );

    // An admin cannot revoke an owner's key; it revokes an admin's.
    let (status, body) = app
        .admin(
            Method::DELETE,
            &format!("/keys/{owner_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/keys/{made_admin}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // Nothing was made by a refused call.
    let store = db.store().await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM api_keys WHERE role = 'owner'").await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    no_escalation,
    a_key_makes_and_revokes_keys_of_its_role_or_lower_only
);

/// Every admin route as the source declares it: (method, template). Each `.route("…", …)`
/// under src/ingress/ but the public ones of src/ingress/mod.rs, with its methods.
pub(crate) fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("src/ingress")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("src/ingress") {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p != std::path::Path::new("src/ingress/mod.rs")
            {
                files.push(p);
            }
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in text.match_indices(".route(") {
            let rest = text[i + ".route(".len()..].trim_start();
            let Some(lit) = rest.strip_prefix('"') else {
                panic!(
                    "{}: a .route( whose path is not a literal: write it as one, so that this \
                     test finds the route and checks its role",
                    f.display()
                );
            };
            let path = &lit[..lit.find('"').unwrap()];
            // The route's arguments: up to its closing parenthesis.
            let args = &lit[path.len() + 1..];
            let mut depth = 1;
            let end = args
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(j, _)| j)
                .unwrap();
            let args = &args[..end];
            for m in ["get", "post", "put", "patch", "delete"] {
                let found = args.match_indices(&format!("{m}(")).any(|(j, _)| {
                    j == 0 || !args[..j].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if found {
                    out.insert((m.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    out
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s {
            "{phone_number_id}" => PNID.to_string(),
            "{user}" => USER.to_string(),
            "{id}" => "999999".to_string(),
            s if s.starts_with('{') => "probe-x".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn every_route_answers_each_role_as_its_declared_role_says(db: TestDb) {
    let (app, _clock, _graph) = app(&db).await;
    let mut routes: Vec<(String, String)> = routes_in_source().into_iter().collect();
    assert!(
        routes.len() > 40,
        "the scan found too few routes: {routes:?}"
    );
    // Every line of the table that names one route is a route of the router.
    for line in parley::ingress::ROUTE_ROLES
        .iter()
        .filter(|l| !l.path.ends_with("/*"))
    {
        assert!(
            routes
                .iter()
                .any(|(m, p)| p == line.path && (line.method == "*" || line.method == m)),
            "ROUTE_ROLES names {} {}, which no module routes",
            line.method,
            line.path
        );
    }
    // `POST /reload` last: it reloads the configuration.
    routes.sort_by_key(|(_, p)| p == "/reload");
    let mut keys = Vec::new();
    for role in Role::ALL {
        keys.push((
            role,
            make_key(&app, ADMIN_TOKEN, role.as_str(), None).await.1,
        ));
    }
    for (method, template) in &routes {
        let line = parley::ingress::route_role(method, template)
            .unwrap_or_else(|| panic!("{method} {template} declares no role in ROUTE_ROLES"));
        let path = concrete(template);
        for (role, key) in &keys {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
            let (status, answer) = app.admin(m, &path, Some(key), body).await;
            assert_ne!(status, 405, "{method} {template}: no such method");
            assert_ne!(status, 401, "{method} {template} as {role}: {answer}");
            if *role < line.role {
                assert_eq!(status, 403, "{method} {template} as {role}: {answer}");
                assert_eq!(answer["required_role"], line.role.as_str(), "{answer}");
            } else {
                assert_ne!(status, 403, "{method} {template} as {role}: {answer}");
            }
        }
    }
    // A route nobody declared would be refused to everyone: the table has no line for it.
    assert!(parley::ingress::route_role("GET", "/undeclared").is_none());
    app.stop().await;
}
on_both_stores!(
    every_route_every_role,
    every_route_answers_each_role_as_its_declared_role_says
);

async fn a_scoped_key_reaches_its_account_only(db: TestDb) {
    let (app, _clock, _graph) = app(&db).await;
    let (_, agent) = make_key(&app, ADMIN_TOKEN, "agent", Some(PNID)).await;
    let (_, manager) = make_key(&app, ADMIN_TOKEN, "manager", Some(PNID)).await;
    let (admin_id, admin) = make_key(&app, ADMIN_TOKEN, "admin", Some(PNID)).await;
    let (unscoped_id, unscoped_manager) = make_key(&app, ADMIN_TOKEN, "manager", None).await;
    // An account that is not configured cannot scope a key.
    let (status, _) = app
        .admin(
            Method::POST,
            "/keys",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x", "role": "agent", "account": "123"})),
        )
        .await;
    assert_eq!(status, 422);

    // Lists are filtered.
    let (status, list) = app
        .admin(Method::GET, "/accounts", Some(&agent), None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&Value> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["phone_number_id"])
        .collect();
    assert_eq!(ids, vec![&json!(PNID)], "{list}");
    let (_, all) = app
        .admin(Method::GET, "/accounts", Some(&unscoped_manager), None)
        .await;
    assert_eq!(all["accounts"].as_array().unwrap().len(), 2);

    // Routes naming an account in their path.
    for path in [
        format!("/accounts/{OTHER}/usage"),
        format!("/conversations/{OTHER}/{USER}"),
    ] {
        let (status, body) = app.admin(Method::GET, &path, Some(&agent), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(PNID), "{body}");
    }
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/conversations/{PNID}/{USER}"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "its own account: no such conversation yet: {body}"
    );

    // The account in the query (commerce): filled in when left out, refused when another.
    let (status, body) = app
        .admin(Method::GET, "/products", Some(&manager), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .admin(
            Method::GET,
            &format!("/products?account={OTHER}"),
            Some(&manager),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .admin(Method::GET, "/products", Some(&unscoped_manager), None)
        .await;
    assert_eq!(
        status, 400,
        "an unscoped key names the account when two are configured"
    );

    // The account in the body.
    let template = json!({"name": "hello", "language": "en"});
    let (status, _) = app
        .admin(
            Method::POST,
            "/messages",
            Some(&manager),
            Some(json!({"phone_number_id": OTHER, "to": USER, "template": template})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .admin(
            Method::POST,
            "/messages",
            Some(&manager),
            Some(json!({"phone_number_id": PNID, "to": USER, "template": template})),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // Routes about no one account are refused to scoped keys.
    for (m, path) in [
        (Method::GET, "/flows"),
        (Method::POST, "/flows/reload"),
        (Method::GET, "/payments/1"),
    ] {
        let (status, body) = app.admin(m, path, Some(&manager), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }

    // A scoped admin makes keys for its account only, and sees those only.
    let (status, made) = app
        .admin(
            Method::POST,
            "/keys",
            Some(&admin),
            Some(json!({"name": "x", "role": "agent"})),
        )
        .await;
    assert_eq!((status, &made["account"]), (201, &json!(PNID)), "{made}");
    let (status, _) = app
        .admin(
            Method::POST,
            "/keys",
            Some(&admin),
            Some(json!({"name": "x", "role": "agent", "account": OTHER})),
        )
        .await;
    assert_eq!(status, 403);
    let (_, list) = app.admin(Method::GET, "/keys", Some(&admin), None).await;
    let items = list["items"].as_array().unwrap();
    assert!(items.iter().all(|k| k["account"] == PNID), "{list}");
    assert!(items.iter().any(|k| k["id"] == admin_id));
    let (status, _) = app
        .admin(
            Method::GET,
            &format!("/keys/{unscoped_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/keys/{unscoped_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // Its audit log: its account's rows only.
    let (status, audit) = app.admin(Method::GET, "/audit", Some(&admin), None).await;
    assert_eq!(status, 200);
    let rows = audit["items"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["account"] == PNID),
        "{audit}"
    );
    app.stop().await;
}
on_both_stores!(scope, a_scoped_key_reaches_its_account_only);

async fn mutating_calls_leave_audit_rows_without_secrets(db: TestDb) {
    let (app, _clock, _graph) = app(&db).await;
    let (agent_id, agent) = make_key(&app, ADMIN_TOKEN, "agent", None).await;
    let ua = "keys-test/1.0";
    let handoff = format!("/conversations/{PNID}/{USER}/handoff");
    let (status, body) = with_agent(&app, Method::POST, &handoff, &agent, ua).await;
    assert_eq!(status, 200, "{body}");
    // Reads leave none.
    with_agent(
        &app,
        Method::GET,
        &format!("/conversations/{PNID}/{USER}"),
        &agent,
        ua,
    )
    .await;
    with_agent(&app, Method::GET, "/accounts", &agent, ua).await;
    // A refused call is a row too.
    let (status, _) = with_agent(&app, Method::POST, "/flows/reload", &agent, ua).await;
    assert_eq!(status, 403);

    let agent_label = agent_id.to_string();
    let (status, log) = app
        .admin(Method::GET, "/audit", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{log}");
    let rows = log["items"].as_array().unwrap();
    let by_agent: Vec<&Value> = rows
        .iter()
        .filter(|r| r["key_id"].as_str() == Some(agent_label.as_str()))
        .collect();
    assert_eq!(by_agent.len(), 2, "{log}");
    let reload = by_agent[0];
    assert_eq!(
        (&reload["action"], &reload["status"]),
        (&json!("POST /flows/reload"), &json!(403))
    );
    let row = by_agent[1];
    assert_eq!(
        row["action"],
        "POST /conversations/{phone_number_id}/{user}/handoff"
    );
    assert_eq!(row["resource"], handoff);
    assert_eq!(row["role"], "agent");
    assert_eq!(row["account"], PNID);
    assert_eq!(row["status"], 200);
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["user_agent"], ua);
    assert!(row["at"].is_i64());
    // The key's creation, by admin.token, with the new key's id.
    let made = rows
        .iter()
        .find(|r| r["action"] == "POST /keys")
        .expect("the key's creation is audited");
    assert_eq!(
        (&made["key_id"], &made["role"]),
        (&json!("admin.token"), &json!("owner"))
    );
    assert_eq!(made["details"]["key_id"], agent_id);
    assert_eq!(made["status"], 201);
    assert!(rows
        .iter()
        .all(|r| !r["action"].as_str().unwrap().starts_with("GET")));
    let store = db.store().await;
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM audit_log WHERE action LIKE 'GET %'"
        )
        .await,
        0
    );

    // No secret anywhere in the log.
    let text = table_text(&db, "audit_log").await;
    for secret in [&agent[8..], ADMIN_TOKEN, "probe"] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }

    // Filters and pages.
    let (_, mine) = app
        .admin(
            Method::GET,
            &format!("/audit?key={agent_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let (_, creations) = app
        .admin(
            Method::GET,
            "/audit?action=POST%20/keys",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        creations["items"].as_array().unwrap().len(),
        1,
        "{creations}"
    );
    let later = row["at"].as_i64().unwrap() + 3_600_000;
    let (_, none) = app
        .admin(
            Method::GET,
            &format!("/audit?since={later}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    let (_, first) = app
        .admin(Method::GET, "/audit?limit=1", Some(ADMIN_TOKEN), None)
        .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more rows")
        .to_string();
    let (_, second) = app
        .admin(
            Method::GET,
            &format!("/audit?limit=1&cursor={cursor}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(second["items"][0]["id"].as_i64() < first["items"][0]["id"].as_i64());
    // Agents do not read the log.
    assert_eq!(
        app.admin(Method::GET, "/audit", Some(&agent), None).await.0,
        403
    );

    // Append-only, down to the table.
    for sql in ["UPDATE audit_log SET status = 0", "DELETE FROM audit_log"] {
        assert!(
            sqlx::query(sql).execute(store.pool()).await.is_err(),
            "{sql} was allowed"
        );
    }
    app.stop().await;
}
on_both_stores!(audit, mutating_calls_leave_audit_rows_without_secrets);

async fn wrong_keys_count_against_the_clients_allowance(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.http.auth_failures_burst = 3;
    settings.http.auth_failures_interval = Duration::from_secs(60);
    let app = spawn_app(settings, Arc::new(CoreLogic)).await;
    let (_, key) = make_key(&app, ADMIN_TOKEN, "agent", None).await;
    let wrong = format!("pk_live_{}", "a".repeat(64));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            app.admin(Method::GET, "/accounts", Some(&wrong), None)
                .await
                .0,
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(&key), None)
            .await
            .0,
        429
    );
    app.stop().await;
}
on_both_stores!(throttled, wrong_keys_count_against_the_clients_allowance);
