//! The real binary: SIGTERM drains and exits 0 in time; `check` names bad keys; logs at
//! TRACE keep secrets, phone numbers and message bodies out; a config error never quotes a
//! secret; the database is owner-only whatever the umask.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph};

mod common;
use common::*;

const PHONE: &str = "6281234567890";
const BODY: &str = "my secret order details";

/// `parleyd` run from `cwd` under `umask`, set by a shell that then execs it (same pid): the
/// test process's own umask, shared by every test thread, is left alone.
fn parleyd_under_umask(umask: &str, cwd: &std::path::Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_parleyd"))
        .current_dir(cwd);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0_and_trace_logs_hold_no_secrets_numbers_or_bodies() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut reap, pid, base) = start(&config, &[("RUST_LOG", "trace")], Stdio::from(log)).await;
    let client = reqwest::Client::new();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = text_webhook(PNID, PHONE, "wamid.DAEMON1", BODY, now);
    let status = client
        .post(format!("{base}/webhook"))
        .header(
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let status = client
        .post(format!("{base}/admin/v1/messages"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"phone_number_id": PNID, "to": PHONE, "text": BODY}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.accepted())
                .count()
                >= 2)
            .await
    );

    // A client that never finishes its request body does not hold the shutdown.
    let mut stuck = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stuck,
        b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"object\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(term.unwrap().success());
    let mut exit = None;
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(s) = reap.0.as_mut().unwrap().try_wait().unwrap() {
            exit = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = exit.expect("daemon exits within 10 s of SIGTERM");
    reap.0 = None;
    assert!(exit.success(), "exit status {exit:?}");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.len() > 1000, "trace logging was on");
    for (what, needle) in [
        ("app secret", SECRET),
        ("access token", ACCESS),
        ("admin token", ADMIN),
        ("phone number", PHONE),
        ("message body", BODY),
    ] {
        assert!(!logs.contains(needle), "the {what} appears in the logs");
    }
    assert!(logs.contains("TRACE"), "trace events were written");
}

/// `parleyd COMMAND --config FILE`: (exit code, stdout and stderr).
fn parleyd(command: &str, config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args([command, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `parleyd reload --config FILE`: (exit success, stdout and stderr).
fn parleyd_reload(config: &std::path::Path) -> (bool, String) {
    let (code, text) = parleyd("reload", config);
    (code == Some(0), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parleyd_reload_applies_the_log_level_and_a_rotated_verify_token_and_exits_0() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut reap, pid, base) = start(&config, &[], Stdio::from(log)).await;
    let client = reqwest::Client::new();
    let handshake = |token: &'static str| {
        let client = client.clone();
        let url = format!(
            "{base}/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=c-{token}"
        );
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    // At info, a verified handshake is logged.
    assert_eq!(handshake("v").await, 200);

    // New verify token, and only warnings logged from now on.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("verify_token = \"v\"", "verify_token = \"v-rotated\"")
            + "[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let (ok, out) = parleyd_reload(&config);
    assert!(ok, "only live keys changed: {out}");
    assert!(
        out.contains("configuration applied: log.level, whatsapp.verify_token"),
        "{out}"
    );
    assert_eq!(handshake("v").await, 403, "the old verify token is refused");
    assert_eq!(handshake("v-rotated").await, 200);
    let (ok, out) = parleyd_reload(&config);
    assert!(ok && !out.contains("configuration applied"), "{out}");

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(term.unwrap().success());
    let exit = reap.0.take().unwrap().wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        logs.matches("Webhook subscription verified").count(),
        1,
        "the handshake after the reload was not logged at warn: {logs}"
    );
    assert!(
        logs.contains("Webhook verification refused"),
        "warnings are still logged: {logs}"
    );
    assert!(
        !logs.contains("v-rotated"),
        "the verify token is not logged"
    );
}

#[test]
fn check_names_every_bad_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[http]\nlisten = \"not an address\"\n[store]\nurl = \"mysql://x\"\n[[accounts]]\nphone_number_id = \"abc\"\nmessages_per_second = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "http.listen",
        "store.url",
        "accounts[0].phone_number_id",
        "accounts[0].messages_per_second",
    ] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    assert!(err.contains("bad.toml"), "the file is named: {err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[accounts]]\nphone_number_id = \"1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `parleyd check --config FILE`: (exit code, stdout and stderr).
fn parleyd_check(config: &std::path::Path) -> (Option<i32>, String) {
    parleyd("check", config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_on_a_secret_line_is_named_by_file_and_line_but_the_secret_is_shown_nowhere() {
    // Arrange: a running daemon, its log in a file.
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let good = std::fs::read_to_string(&config).unwrap();
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut reap, pid, base) = start(&config, &[], Stdio::from(log)).await;
    let client = reqwest::Client::new();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let typos = [
        // A closing quote lost while editing, the key misspelt as well, no quotes at all.
        (
            format!("access_token = \"{ACCESS}\""),
            format!("access_token = \"{ACCESS}"),
            ACCESS,
        ),
        (
            format!("access_token = \"{ACCESS}\""),
            format!("acess_token = \"{ACCESS}"),
            ACCESS,
        ),
        (
            format!("app_secret = \"{SECRET}\""),
            format!("app_secret = {SECRET}"),
            SECRET,
        ),
        (
            format!("token = \"{ADMIN}\""),
            format!("token = \"{ADMIN}\"\""),
            ADMIN,
        ),
    ];
    for (right, wrong, secret) in &typos {
        let line = line_of(right);
        std::fs::write(&config, good.replace(right, wrong)).unwrap();
        let located = format!("{}:{line}:", config.display());

        // Act + assert: the reload answer (the running admin token still works).
        let response = client
            .post(format!("{base}/admin/v1/reload"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "`{wrong}` is refused");
        let answer = response.text().await.unwrap();
        assert!(!answer.contains(secret), "the reload answer: {answer}");
        assert!(answer.contains(&located), "{located} in: {answer}");

        // `parleyd check`, and `parleyd reload` (which reads the file first).
        let (code, out) = parleyd_check(&config);
        assert_eq!(code, Some(1), "{out}");
        assert!(!out.contains(secret), "check shows the secret: {out}");
        assert!(out.contains(&located), "{located} in: {out}");
        let (ok, out) = parleyd_reload(&config);
        assert!(!ok && !out.contains(secret), "reload: {out}");
    }
    std::fs::write(&config, &good).unwrap();

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(term.unwrap().success());
    let exit = reap.0.take().unwrap().wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        logs.matches("Configuration no longer loads").count(),
        typos.len(),
        "each refused reload is logged: {logs}"
    );
    assert!(
        logs.contains(&format!(
            "{}:{}:",
            config.display(),
            line_of("access_token")
        )),
        "the log names file:line: {logs}"
    );
    for (_, _, secret) in &typos {
        assert!(!logs.contains(secret), "a secret in the log: {logs}");
    }
}

#[test]
fn check_refuses_a_short_admin_token_and_warns_of_an_empty_app_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.toml");
    let short = "only-31-characters-long-token-x";
    assert_eq!(short.len(), 31);
    std::fs::write(
        &path,
        format!("[admin]\ntoken = \"{short}\"\n[[accounts]]\nphone_number_id = \"1\"\n"),
    )
    .unwrap();
    let (code, out) = parleyd_check(&path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("admin.token: 31 characters") && out.contains("at least 32"),
        "{out}"
    );
    assert!(!out.contains(short), "the token is not shown: {out}");

    // A long enough token passes; the empty app secret (every webhook refused) is a warning.
    std::fs::write(
        &path,
        format!("[admin]\ntoken = \"{short}y\"\n[[accounts]]\nphone_number_id = \"1\"\n"),
    )
    .unwrap();
    let (code, out) = parleyd_check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: whatsapp.app_secret is empty"),
        "{out}"
    );
    // A one-character app secret is not Meta's: a warning too.
    std::fs::write(
        &path,
        "[whatsapp]\napp_secret = \"x\"\nverify_token = \"v\"\n[[accounts]]\nphone_number_id = \"1\"\n",
    )
    .unwrap();
    let (code, out) = parleyd_check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: whatsapp.app_secret is 1 characters"),
        "{out}"
    );
    std::fs::write(
        &path,
        "[whatsapp]\napp_secret = \"0123456789abcdef0123456789abcdef\"\nverify_token = \"v\"\n[[accounts]]\nphone_number_id = \"1\"\n",
    )
    .unwrap();
    let (code, out) = parleyd_check(&path);
    assert_eq!(code, Some(0), "{out}");
    // The demo store flow's payment node: this account names no payment provider.
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("warning") && !l.contains("sets no `payments` provider"))
        .collect();
    assert!(warnings.is_empty(), "{out}");
}

/// The modes of the default store's folder, its database, `-wal` and `-shm`.
fn store_modes(cwd: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    [
        "data",
        "data/parley.db",
        "data/parley.db-wal",
        "data/parley.db-shm",
    ]
    .iter()
    .map(|p| {
        let mode = std::fs::metadata(cwd.join(p))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        (p.to_string(), mode)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_its_wal_and_shm_and_its_folder_are_owner_only_under_umask_0022() {
    use std::os::unix::fs::PermissionsExt;

    let graph = FakeGraph::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    // Started as the README shows: the default store, `data/parley.db` under the working dir.
    let config = write_config(cwd.path(), &graph.base_url, port);
    let text = std::fs::read_to_string(&config).unwrap();
    let store_line = text.lines().find(|l| l.starts_with("url = ")).unwrap();
    std::fs::write(&config, text.replace(store_line, "")).unwrap();
    let flows = concat!(env!("CARGO_MANIFEST_DIR"), "/flows");
    let env = [
        ("PARLEY__FLOWS__DIR", flows),
        ("PARLEY__FLOWS__WATCH", "false"),
    ];
    let expected = vec![
        ("data".to_string(), 0o700),
        ("data/parley.db".to_string(), 0o600),
        ("data/parley.db-wal".to_string(), 0o600),
        ("data/parley.db-shm".to_string(), 0o600),
    ];
    let stop = |pid: u32, mut reap: Reap| {
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        assert!(term.unwrap().success());
        let exit = reap.0.take().unwrap().wait().unwrap();
        assert!(exit.success(), "exit status {exit:?}");
    };

    // A first start creates them.
    let (reap, pid, base) = start_with(
        parleyd_under_umask("022", cwd.path()),
        &config,
        &env,
        Stdio::null(),
    )
    .await;
    let now = parley::store::now_ms() / 1000;
    let body = text_webhook(PNID, PHONE, "wamid.MODES1", "hello", now);
    let status = reqwest::Client::new()
        .post(format!("{base}/webhook"))
        .header(
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert_eq!(store_modes(cwd.path()), expected, "created owner-only");
    stop(pid, reap);

    // Files left readable by an earlier version are tightened at the next start, said once.
    let wide = |p: &str, mode: u32| {
        let path = cwd.path().join(p);
        if !path.exists() {
            std::fs::write(&path, "").unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    wide("data", 0o755);
    wide("data/parley.db", 0o644);
    wide("data/parley.db-wal", 0o644);
    wide("data/parley.db-shm", 0o644);
    let log_path = cwd.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (reap, pid, _) = start_with(
        parleyd_under_umask("022", cwd.path()),
        &config,
        &env,
        Stdio::from(log),
    )
    .await;
    assert_eq!(store_modes(cwd.path()), expected, "tightened");
    stop(pid, reap);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        logs.matches("made its files and folder owner-only").count(),
        1,
        "{logs}"
    );
}

#[test]
fn migrate_creates_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .arg("migrate")
        .env(
            "PARLEY__STORE__URL",
            format!("sqlite://{}/sub/p.db", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("sub/p.db").exists());
}

/// `parleyd compact` turns a SQLite file made without incremental auto-vacuum (an earlier
/// version's) into one with it, its free pages given back and its rows kept; it refuses while
/// something answers at the daemon's address.
#[test]
fn compact_converts_an_old_sqlite_file_and_refuses_while_a_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), "http://127.0.0.1:9", port);
    let db = dir.path().join("parley.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA auto_vacuum = NONE; CREATE TABLE kept (x TEXT); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO kept SELECT printf('%0500d', i) FROM n; \
             DELETE FROM kept WHERE rowid > 1000;",
        )
        .unwrap();
        let free: i64 = conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        assert!(free > 0, "deleted rows leave free pages");
    }
    let compact = || {
        Command::new(env!("CARGO_BIN_EXE_parleyd"))
            .args(["compact", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    // Something answers at the daemon's address: refused, the file untouched.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = compact();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop it first"), "{err}");
    drop(listener);

    let out = compact();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("auto_vacuum none -> incremental"), "{said}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("PRAGMA auto_vacuum"), 2, "incremental");
    assert_eq!(one("PRAGMA freelist_count"), 0);
    assert_eq!(one("SELECT COUNT(*) FROM kept"), 1000);
}

/// kill -9 at random moments while webhooks stream in; Meta redelivers whatever was not
/// answered 200 (and now and then what was). Every message must be applied exactly once: the
/// inbox holds each once, none is left pending, and each conversation counted each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_applies_each_message_once() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/parley.db", dir.path().display());
    let users: Vec<String> = (0..10).map(|u| format!("62813000000{u:02}")).collect();
    let per_user = 30;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut pending: Vec<String> = (0..per_user)
        .flat_map(|i| users.iter().map(move |u| (u.clone(), i)))
        .map(|(u, i)| {
            text_webhook(
                PNID,
                &u,
                &format!("wamid.K{u}-{i:02}"),
                &format!("{u}-{i:02}"),
                now,
            )
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut kills = 0;
    for _life in 0..30 {
        if pending.is_empty() {
            break;
        }
        let killing = kills < 5;
        let port = free_port();
        let config = write_config(dir.path(), &graph.base_url, port);
        let (mut reap, pid, base) = start(&config, &[], Stdio::null()).await;
        // 8 concurrent senders; a killing life is killed after a random number of posts,
        // with the next batch of posts already in flight.
        let kill_after = 8 + fastrand::usize(..48);
        let mut next = Vec::new();
        let mut posted = 0;
        for chunk in pending.chunks(8) {
            let posts = chunk.iter().map(|body| {
                let (client, base, body) = (client.clone(), base.clone(), body.clone());
                async move {
                    let sig = sign(SECRET.as_bytes(), body.as_bytes());
                    let request = client
                        .post(format!("{base}/webhook"))
                        .header("x-hub-signature-256", sig)
                        .body(body.clone());
                    let ok = request
                        .send()
                        .await
                        .map(|r| r.status().as_u16() == 200)
                        .unwrap_or(false);
                    (ok, body)
                }
            });
            let killer = async {
                if killing && posted + chunk.len() > kill_after {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(..3))).await;
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    true
                } else {
                    false
                }
            };
            let (results, killed) = futures::join!(futures::future::join_all(posts), killer);
            for (ok, body) in results {
                if !ok || (killing && fastrand::u8(..) < 8) {
                    next.push(body);
                }
            }
            posted += chunk.len();
            if killed {
                kills += 1;
                break;
            }
        }
        next.extend(pending[posted..].iter().cloned());
        if !killing {
            // A clean life: let it apply everything it took, then stop it.
            let store = parley::store::Store::connect(&db_url, 1).await.unwrap();
            let mut settled = false;
            for _ in 0..200 {
                let left: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE state = 'pending'")
                        .fetch_one(store.pool())
                        .await
                        .unwrap();
                if left == 0 {
                    settled = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(settled, "every committed message applied");
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = reap.0.as_mut().unwrap().wait();
        reap.0 = None;
        pending = next;
    }
    assert!(pending.is_empty(), "every webhook acknowledged in the end");
    assert!(kills >= 5, "the daemon was killed {kills} times");
    let store = parley::store::Store::connect(&db_url, 1).await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE kind = 'message'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        total,
        (users.len() * per_user) as i64,
        "each message is in the inbox once"
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE state <> 'done'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "none pending or dead");
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM conversations")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(states.len(), users.len());
    for state in states {
        assert!(
            state.contains(&format!("\"inbound_count\":{per_user}")),
            "applied exactly once: {state}"
        );
    }
}

#[test]
fn check_prints_file_line_col_for_every_flow_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad_flows/bad.yaml"),
        flows.join("bad.yaml"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .arg("check")
        .env("PARLEY__FLOWS__DIR", &flows)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let located = err
        .lines()
        .filter(|l| {
            l.contains("bad.yaml:")
                && l.split(':')
                    .nth(2)
                    .is_some_and(|c| c.parse::<u32>().is_ok())
        })
        .count();
    assert!(located >= 5, "file:line:col lines expected:\n{err}");
    // The shipped flows pass.
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kill -9 while a daily limit is being used up: the daily count lives in the store in
/// reserved blocks, so no number of crashes lets more than the limit through in a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_lets_the_daily_limit_be_exceeded() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[whatsapp]\napp_secret = \"{SECRET}\"\nverify_token = \"v\"\naccess_token = \"{ACCESS}\"\n\
             graph_base_url = \"{}\"\n[store]\nurl = \"sqlite://{}/parley.db\"\n[admin]\ntoken = \"{ADMIN}\"\n\
             [outbox]\nambiguous_resend_after = \"200ms\"\n\
             [[accounts]]\nphone_number_id = \"{PNID}\"\ndaily_limit = 40\nmessages_per_second = 20\npair_rate_interval = \"0s\"\nmessaging_tier = \"unlimited\"\n",
            graph.base_url,
            dir.path().display()
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let accepted = |graph: &FakeGraph| graph.delivered().len();
    let mut queued = 0;
    for life in 0..3 {
        let (mut reap, pid, base) = start(&config, &[], Stdio::null()).await;
        // Each life queues more than the limit could ever take.
        for i in 0..30 {
            let r = client
                .post(format!("{base}/admin/v1/messages"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({
                    "phone_number_id": PNID,
                    "to": format!("62816{life}{i:04}"),
                    "template": {"name": "promo", "language": "en"},
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            queued += 1;
        }
        if life < 2 {
            // Let some go, then kill it mid-stream.
            let target = accepted(&graph) + 8;
            graph
                .wait_until(Duration::from_secs(10), |a| {
                    a.iter().filter(|a| a.accepted()).count() >= target
                })
                .await;
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            if let Some(mut child) = reap.0.take() {
                let _ = child.wait();
            }
        } else {
            // The last life runs until nothing more goes out.
            let mut last = accepted(&graph);
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let now = accepted(&graph);
                if now == last {
                    break;
                }
                last = now;
            }
        }
    }
    let sent = accepted(&graph);
    assert!(queued > 40);
    assert!(
        sent <= 40,
        "{sent} messages went out with a daily limit of 40"
    );
    // Each crash may waste at most one reserved block (2) plus what was in flight.
    assert!(sent >= 30, "only {sent} went out");
}

/// `parleyd simulate store` sells from a copy of the configured store's catalog: the list,
/// a quantity, the cart, the checkout, a simulated payment settled by `/pay`; the configured
/// store is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_sells_from_a_copy_of_the_catalog() {
    use parley::domain::{AccountId, Currency, Money, ProductKind};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let url = format!("sqlite://{}", db.display());
    let store = parley::store::Store::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    store
        .upsert_product(
            &AccountId::from("1"),
            &parley::store::Product {
                sku: "KOPI".into(),
                name: "Kopi Arabica".into(),
                description: None,
                price: Money::parse("25000", Currency::IDR).unwrap(),
                stock: Some(5),
                reserved: 0,
                image_url: None,
                category: None,
                active: true,
                kind: ProductKind::Product,
                period_days: None,
                access_link: None,
                position: 0,
                created_at: 0,
                updated_at: 0,
            },
        )
        .await
        .unwrap();
    store.close().await;
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\n[flows]\ndir = \"{}\"\n[[accounts]]\nphone_number_id = \"1\"\n",
            std::env::current_dir().unwrap().join("flows").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["simulate", "store", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"#KOPI\n2\n#checkout\n/pay\n/quit\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "(the shop: 1 product(s) of account 1, copied; nothing is written back)",
        "bot> What would you like? Pick a product.",
        "Kopi Arabica [#KOPI]",
        "bot> Kopi Arabica: Rp 25.000. How many?",
        "bot> In your cart:\n2 × Kopi Arabica — Rp 50.000\nTotal: Rp 50.000",
        "bot> Order ORD-000001 is placed:",
        "bot> (a simulated payment: /pay marks it paid, /expire lets it expire)",
        "bot> Payment of Rp 50.000 received for order ORD-000001. Thank you!",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The configured store is as it was: no cart, no order, the stock untouched.
    let store = parley::store::Store::connect(&url, 1).await.unwrap();
    let kopi = store
        .product(&AccountId::from("1"), "KOPI")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kopi.stock, kopi.reserved), (Some(5), 0));
    assert!(store
        .orders(
            &AccountId::from("1"),
            &parley::store::OrderFilter {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_empty());
}
