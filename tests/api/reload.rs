//! `POST /admin/v1/reload` with a changed configuration file: live keys (secrets, tokens,
//! limits) apply to the running daemon while a conversation goes on; restart-only keys are
//! named; an invalid file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parley::config::Settings;
use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;
use crate::on_both_stores;

const USER: &str = "6281200000777";

/// What the test changes between reloads; the rest is the usual test configuration.
struct Knobs<'a> {
    admin_token: &'a str,
    app_secret: &'a str,
    access_token: &'a str,
    log_level: &'a str,
    max_connections: u32,
    messages_per_second: u32,
}

impl Default for Knobs<'_> {
    fn default() -> Self {
        Knobs {
            admin_token: ADMIN_TOKEN,
            app_secret: SECRET,
            access_token: ACCESS_TOKEN,
            log_level: "info",
            max_connections: 4,
            messages_per_second: 80,
        }
    }
}

/// The daemon's `--config FILE`: a reload reads it again.
fn write_config(dir: &Path, db: &TestDb, graph: &FakeGraph, k: &Knobs) -> PathBuf {
    let path = dir.join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\
             [whatsapp]\napp_secret = \"{}\"\nverify_token = \"v\"\naccess_token = \"unused\"\n\
             graph_base_url = \"{}\"\nrequest_timeout = \"800ms\"\n\
             [store]\nurl = \"{}\"\nmax_connections = {}\n\
             [admin]\ntoken = \"{}\"\n\
             [outbox]\nbackoff_base = \"20ms\"\nbackoff_max = \"500ms\"\nambiguous_resend_after = \"300ms\"\n\
             [log]\nlevel = \"{}\"\n\
             [[accounts]]\nphone_number_id = \"{PNID}\"\nwaba_id = \"102290129340398\"\n\
             access_token = \"{}\"\nmessages_per_second = {}\n",
            k.app_secret,
            graph.base_url,
            db.url,
            k.max_connections,
            k.admin_token,
            k.log_level,
            k.access_token,
            k.messages_per_second,
        ),
    )
    .unwrap();
    path
}

async fn reload(app: &TestApp, token: &str) -> (u16, Value) {
    app.admin(Method::POST, "/reload", Some(token), None).await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The user writes `text` (signed with `secret`); the echo goes out. Returns the bearer of
/// the echo's send.
async fn echo_bearer(app: &TestApp, graph: &FakeGraph, secret: &str, n: u32) -> String {
    let body = text_webhook(
        PNID,
        USER,
        &format!("wamid.RELOAD{n}"),
        &format!("message {n}"),
        now_secs(),
    );
    let status = app
        .post_raw(
            body.as_bytes().to_vec(),
            Some(&sign(secret.as_bytes(), body.as_bytes())),
        )
        .await;
    assert_eq!(status, 200, "webhook {n} signed with the secret in force");
    let want = format!("echo: message {n}");
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.accepted() && a.text() == Some(&want)))
            .await,
        "the echo of message {n} was sent"
    );
    graph
        .delivered()
        .into_iter()
        .find(|a| a.text() == Some(&want))
        .and_then(|a| a.authorization)
        .unwrap_or_default()
}

/// A daemon started from a config file (default knobs) in a temp dir, with its fake Graph API.
async fn started_from_a_file(db: &TestDb) -> (Arc<FakeGraph>, tempfile::TempDir, TestApp) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), db, &graph, &Knobs::default());
    let settings = Settings::load(Some(&config)).expect("the test config loads");
    let app = spawn_app(settings, Arc::new(Echo)).await;
    (graph, dir, app)
}

async fn secrets_and_tokens_rotate_live_while_a_conversation_runs(db: TestDb) {
    // Arrange: a daemon started from a file, a conversation under way.
    let (graph, dir, app) = started_from_a_file(&db).await;
    assert_eq!(
        echo_bearer(&app, &graph, SECRET, 1).await,
        format!("Bearer {ACCESS_TOKEN}")
    );

    // Act: new admin token, app secret, account access token, log level and rate.
    let rotated = Knobs {
        admin_token: "admin-token-2-rotated-0123456789abcdef",
        app_secret: "app-secret-2",
        access_token: "access-token-2",
        log_level: "warn,parley=debug",
        messages_per_second: 40,
        ..Knobs::default()
    };
    write_config(dir.path(), &db, &graph, &rotated);
    let (status, outcome) = reload(&app, ADMIN_TOKEN).await;

    // Assert: all applied, nothing waits for a restart.
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        strings(&outcome["applied"]),
        [
            "accounts[0].access_token",
            "accounts[0].messages_per_second",
            "admin.token",
            "log.level",
            "whatsapp.app_secret",
        ],
        "{outcome}"
    );
    assert!(
        strings(&outcome["restart_required"]).is_empty(),
        "{outcome}"
    );
    assert!(
        !outcome.to_string().contains("access-token-2"),
        "no secret in the outcome"
    );
    // The old admin token is refused now; the new one works.
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
            .await
            .0,
        401
    );
    let (status, accounts) = app
        .admin(
            Method::GET,
            "/accounts",
            Some("admin-token-2-rotated-0123456789abcdef"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        accounts["accounts"][0]["limits"]["messages_per_second"], 40,
        "{accounts}"
    );
    let (_, usage) = app
        .admin(
            Method::GET,
            &format!("/accounts/{PNID}/usage"),
            Some("admin-token-2-rotated-0123456789abcdef"),
            None,
        )
        .await;
    assert_eq!(
        (
            &usage["rate"]["configured_mps"],
            &usage["rate"]["current_mps"]
        ),
        (&serde_json::json!(40), &serde_json::json!(40.0)),
        "the running gate took the new rate: {usage}"
    );
    // Webhooks signed with the old secret are refused; the same conversation goes on with
    // the new secret, and its next send carries the new bearer.
    let body = text_webhook(PNID, USER, "wamid.OLDSIG", "old", now_secs());
    assert_eq!(
        app.post_raw(
            body.as_bytes().to_vec(),
            Some(&sign(SECRET.as_bytes(), body.as_bytes()))
        )
        .await,
        401
    );
    assert_eq!(
        echo_bearer(&app, &graph, "app-secret-2", 2).await,
        "Bearer access-token-2"
    );

    // A second reload of the same files has nothing left to apply or to report.
    let (status, outcome) = reload(&app, "admin-token-2-rotated-0123456789abcdef").await;
    assert_eq!(status, 200, "{outcome}");
    assert!(strings(&outcome["applied"]).is_empty(), "{outcome}");
    assert!(
        strings(&outcome["restart_required"]).is_empty(),
        "{outcome}"
    );
    app.stop().await;
}
on_both_stores!(
    rotation,
    secrets_and_tokens_rotate_live_while_a_conversation_runs
);

async fn a_restart_only_key_is_named_while_the_live_ones_apply(db: TestDb) {
    let (graph, dir, app) = started_from_a_file(&db).await;
    echo_bearer(&app, &graph, SECRET, 1).await;

    let changed = Knobs {
        admin_token: "admin-token-3-rotated-0123456789abcdef",
        access_token: "access-token-3",
        max_connections: 5,
        ..Knobs::default()
    };
    write_config(dir.path(), &db, &graph, &changed);
    // `parleyd reload` reads the new file, so it presents the new admin token.
    let (status, outcome) = reload(&app, "admin-token-3-rotated-0123456789abcdef").await;
    assert_eq!(status, 409, "{outcome}");
    assert_eq!(
        strings(&outcome["applied"]),
        ["accounts[0].access_token", "admin.token"],
        "{outcome}"
    );
    assert_eq!(
        strings(&outcome["restart_required"]),
        ["store.max_connections"]
    );
    assert_eq!(
        app.admin(
            Method::GET,
            "/accounts",
            Some("admin-token-3-rotated-0123456789abcdef"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        echo_bearer(&app, &graph, SECRET, 2).await,
        "Bearer access-token-3"
    );
    // Until a restart, the restart-only key is named again; the live ones are not.
    let (status, outcome) = reload(&app, "admin-token-3-rotated-0123456789abcdef").await;
    assert_eq!(status, 409, "{outcome}");
    assert!(strings(&outcome["applied"]).is_empty(), "{outcome}");
    assert_eq!(
        strings(&outcome["restart_required"]),
        ["store.max_connections"]
    );
    // Back to the running value: nothing to report.
    write_config(
        dir.path(),
        &db,
        &graph,
        &Knobs {
            max_connections: 4,
            ..changed
        },
    );
    let (status, outcome) = reload(&app, "admin-token-3-rotated-0123456789abcdef").await;
    assert_eq!(status, 200, "{outcome}");
    // A token that neither the daemon nor the file has is refused.
    assert_eq!(
        reload(&app, "admin-token-4-rotated-0123456789abcdef")
            .await
            .0,
        401
    );
    app.stop().await;
}
on_both_stores!(
    restart_only,
    a_restart_only_key_is_named_while_the_live_ones_apply
);

async fn an_invalid_configuration_changes_nothing(db: TestDb) {
    let (graph, dir, app) = started_from_a_file(&db).await;
    echo_bearer(&app, &graph, SECRET, 1).await;

    // Live keys changed, but one value is invalid: none of them may apply.
    write_config(
        dir.path(),
        &db,
        &graph,
        &Knobs {
            admin_token: "admin-token-5-rotated-0123456789abcdef",
            access_token: "access-token-5",
            messages_per_second: 0,
            ..Knobs::default()
        },
    );
    let (status, outcome) = reload(&app, ADMIN_TOKEN).await;
    assert_eq!(status, 422, "{outcome}");
    let errors = strings(&outcome["config_errors"]).join("\n");
    assert!(
        errors.contains("accounts[0].messages_per_second"),
        "{outcome}"
    );
    assert!(strings(&outcome["applied"]).is_empty(), "{outcome}");
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
            .await
            .0,
        200,
        "the running admin token stays"
    );
    assert_eq!(
        app.admin(
            Method::GET,
            "/accounts",
            Some("admin-token-5-rotated-0123456789abcdef"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        echo_bearer(&app, &graph, SECRET, 2).await,
        format!("Bearer {ACCESS_TOKEN}"),
        "the running access token stays"
    );
    // A log filter that does not parse is refused the same way.
    write_config(
        dir.path(),
        &db,
        &graph,
        &Knobs {
            admin_token: "admin-token-5-rotated-0123456789abcdef",
            log_level: "info,[bad",
            ..Knobs::default()
        },
    );
    let (status, outcome) = reload(&app, ADMIN_TOKEN).await;
    assert_eq!(status, 422, "{outcome}");
    assert!(
        strings(&outcome["config_errors"])
            .join("\n")
            .contains("log.level"),
        "{outcome}"
    );
    assert_eq!(
        app.admin(Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
            .await
            .0,
        200
    );
    app.stop().await;
}
on_both_stores!(invalid, an_invalid_configuration_changes_nothing);

async fn a_typo_on_a_secret_line_is_answered_by_file_and_line_without_the_secret(db: TestDb) {
    let (graph, dir, app) = started_from_a_file(&db).await;
    let config = dir.path().join("parley.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (right, wrong, secret) in [
        // The account's token loses its closing quote; the app secret its quotes.
        (
            format!("access_token = \"{ACCESS_TOKEN}\""),
            format!("access_token = \"{ACCESS_TOKEN}"),
            ACCESS_TOKEN,
        ),
        (
            format!("app_secret = \"{SECRET}\""),
            format!("app_secret = {SECRET}"),
            SECRET,
        ),
    ] {
        std::fs::write(&config, good.replace(&right, &wrong)).unwrap();
        let (status, outcome) = reload(&app, ADMIN_TOKEN).await;
        assert_eq!(status, 422, "{outcome}");
        let errors = strings(&outcome["config_errors"]);
        let located = format!("{}:{}:", config.display(), line_of(&right));
        assert!(
            !outcome.to_string().contains(secret),
            "the secret is in the answer: {outcome}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(&located)),
            "{located} expected: {outcome}"
        );
    }
    // Nothing changed: the running secret and token go on.
    assert_eq!(
        echo_bearer(&app, &graph, SECRET, 1).await,
        format!("Bearer {ACCESS_TOKEN}")
    );
    app.stop().await;
}
on_both_stores!(
    typo,
    a_typo_on_a_secret_line_is_answered_by_file_and_line_without_the_secret
);
