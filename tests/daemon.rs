//! The real binary: SIGTERM drains and exits 0 in time; `check` names bad keys; logs at
//! TRACE keep secrets, phone numbers and message bodies out; a config error never quotes a
//! secret; the database is owner-only whatever the umask.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley::testing::{text_webhook, FakeGraph};

const PNID: &str = "106540352242922";
const SECRET: &str = "app-secret-9f3k2";
const ACCESS: &str = "EAAG-access-token-77x";
const ADMIN: &str = "admin-token-q8w7-3f9c1e7a5b2d4068";
const PHONE: &str = "6281234567890";
const BODY: &str = "my secret order details";

fn write_config(dir: &std::path::Path, graph: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[whatsapp]\napp_secret = \"{SECRET}\"\nverify_token = \"v\"\naccess_token = \"{ACCESS}\"\n\
             graph_base_url = \"{graph}\"\n[store]\nurl = \"sqlite://{}/parley.db\"\n[admin]\ntoken = \"{ADMIN}\"\n\
             [[accounts]]\nphone_number_id = \"{PNID}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path
}

/// Kills the daemon if a failed assertion leaves it running.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `parleyd serve` on `config` and wait until it is ready: (guard, pid, base URL).
async fn start(
    config: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Reap, u32, String) {
    start_with(
        Command::new(env!("CARGO_BIN_EXE_parleyd")),
        config,
        env,
        stderr,
    )
    .await
}

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

/// [`start`] with the command that runs `parleyd`.
async fn start_with(
    mut command: Command,
    config: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Reap, u32, String) {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let child = command
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = child.id();
    let reap = Reap(Some(child));
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return (reap, pid, base);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("daemon did not become ready");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    assert!(!out.contains("warning"), "{out}");
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

/// The text of a reply as the fake Graph API saw it (text body or interactive body).
fn reply_text(body: &serde_json::Value) -> String {
    body.pointer("/text/body")
        .or_else(|| body.pointer("/interactive/body/text"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// A fresh PostgreSQL database for this run, or None (said loudly) when there is no server.
async fn fresh_postgres() -> Option<String> {
    let admin = std::env::var("PARLEY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("parley_chaos_{:016x}", fastrand::u64(..));
    sqlx::any::install_default_drivers();
    match sqlx::AnyPool::connect(&admin).await {
        Ok(pool) => {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            Some(format!("{base}/{name}"))
        }
        Err(e) => {
            if std::env::var("CI").is_ok() {
                panic!("PostgreSQL is required in CI but {admin} does not answer: {e}");
            }
            eprintln!(
                "\n!!! SKIPPED the PostgreSQL crash test: no server at {admin} ({e}). CI must run it.\n"
            );
            None
        }
    }
}

/// Drop a database [`fresh_postgres`] made, once its test passed (a failed run keeps it to
/// look at).
async fn drop_postgres(url: &str) {
    let Some((base, name)) = url.rsplit_once('/') else {
        return;
    };
    let admin = std::env::var("PARLEY_TEST_POSTGRES").unwrap_or_else(|_| format!("{base}/test"));
    if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}

/// The crash test: users play the shop conversation against the real binary while it is
/// killed with SIGKILL at random moments and restarted. The driver behaves like Meta: a
/// webhook not answered 200 is delivered again, some webhooks are delivered twice anyway, and
/// every message the fake Graph API accepted is reported back in a status webhook echoing
/// its `biz_opaque_callback_data` (which is how a send whose outcome the killed process never
/// saw is settled instead of sent twice). Every user's transcript must come out exactly
/// right: every reply once, in order.
async fn shop_conversations_survive_kill_9(store_url: String) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("PARLEY__STORE__URL", store_url.as_str()),
        ("PARLEY__OUTBOX__AMBIGUOUS_RESEND_AFTER", "2s"),
        ("PARLEY__FLOWS__DIR", "flows"),
        ("PARLEY__FLOWS__WATCH", "false"),
    ];
    let (reap, pid, _) = start(&config, &env, Stdio::null()).await;
    let daemon = Arc::new(Mutex::new((reap, pid)));
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // Meta, part 1: deliver a webhook until it is answered 200 (and now and then twice).
    let deliver = {
        let (client, base) = (client.clone(), base.clone());
        move |body: String| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let sig = sign(SECRET.as_bytes(), body.as_bytes());
                let mut times = if fastrand::u8(..) < 20 { 2 } else { 1 };
                while times > 0 {
                    let ok = client
                        .post(format!("{base}/webhook"))
                        .header("x-hub-signature-256", &sig)
                        .body(body.clone())
                        .send()
                        .await
                        .map(|r| r.status().as_u16() == 200)
                        .unwrap_or(false);
                    if ok {
                        times -= 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };

    // Meta, part 2: a `sent` status for every accepted message, echoing its callback.
    let statuses = {
        let (graph, done, deliver) = (graph.clone(), done.clone(), deliver.clone());
        tokio::spawn(async move {
            let mut reported = 0;
            while !done.load(Ordering::Relaxed) {
                let accepted: Vec<_> = graph
                    .attempts()
                    .into_iter()
                    .filter(|a| a.is_delivery())
                    .collect();
                for (n, a) in accepted.iter().enumerate().skip(reported) {
                    let wamid = match &a.outcome {
                        parley::testing::Outcome::Accepted(Some(w)) => w.clone(),
                        _ => format!("wamid.ST{n}"),
                    };
                    let body = parley::testing::status_webhook(
                        PNID,
                        &wamid,
                        "sent",
                        a.to().unwrap_or(""),
                        a.callback(),
                        parley::store::now_ms() / 1000,
                    );
                    deliver(body).await;
                }
                reported = accepted.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The killer: SIGKILL at random moments, then start again on the same store.
    let killer = {
        let (daemon, done, config, kills) =
            (daemon.clone(), done.clone(), config.clone(), kills.clone());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) && kills.load(Ordering::Relaxed) < 6 {
                tokio::time::sleep(Duration::from_millis(400 + fastrand::u64(..800))).await;
                let pid = daemon.lock().unwrap().1;
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                kills.fetch_add(1, Ordering::Relaxed);
                {
                    let mut d = daemon.lock().unwrap();
                    if let Some(mut child) = d.0 .0.take() {
                        let _ = child.wait();
                    }
                }
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (reap, pid, _) = start(&config, &env, Stdio::null()).await;
                *daemon.lock().unwrap() = (reap, pid);
            }
        })
    };

    // The users: each plays the conversation at least twice, waiting for every answer, and
    // goes on until the daemon has been killed five times.
    let users: Vec<String> = (0..12).map(|u| format!("62814000000{u:02}")).collect();
    let mut players = Vec::new();
    for user in users.clone() {
        let (graph, deliver, kills) = (graph.clone(), deliver.clone(), kills.clone());
        players.push(tokio::spawn(async move {
            let mut n = 0;
            let mut round = 0;
            while round < 2 || (kills.load(Ordering::Relaxed) < 5 && round < 40) {
                round += 1;
                for (input, button, expected) in parley::testing::SHOP_SCRIPT {
                    n += 1;
                    let wamid = format!("wamid.C{user}-{round}-{n:02}");
                    let ts = parley::store::now_ms() / 1000;
                    let body = if button {
                        parley::testing::button_reply_webhook(
                            PNID, &user, &wamid, input, "Catalog", ts,
                        )
                    } else {
                        text_webhook(PNID, &user, &wamid, input, ts)
                    };
                    deliver(body).await;
                    let answered = graph
                        .wait_until(Duration::from_secs(60), |a| {
                            a.iter()
                                .filter(|a| {
                                    a.accepted()
                                        && !a.is_mark_read()
                                        && a.to() == Some(user.as_str())
                                })
                                .count()
                                >= n
                        })
                        .await;
                    assert!(
                        answered,
                        "{user}: no answer to `{input}` (expected {expected:?})"
                    );
                }
            }
            round
        }));
    }
    let mut rounds = Vec::new();
    for p in players {
        rounds.push(p.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    killer.await.unwrap();
    let kills = kills.load(Ordering::Relaxed);
    statuses.await.unwrap();
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(kills >= 5, "killed only {kills} times");
    let accepted: Vec<_> = graph
        .attempts()
        .into_iter()
        .filter(|a| a.is_delivery())
        .collect();
    for (user, rounds) in users.iter().zip(rounds) {
        let expected: Vec<&str> = (0..rounds)
            .flat_map(|_| parley::testing::SHOP_SCRIPT.iter().map(|s| s.2))
            .collect();
        // Each send with the outbox id it carried: a duplicate shows whether one row went out
        // twice or two rows were made for one message.
        let sent: Vec<(String, Option<&str>)> = accepted
            .iter()
            .filter(|a| a.to() == Some(user.as_str()))
            .map(|a| (reply_text(&a.body), a.callback()))
            .collect();
        let got: Vec<&str> = sent.iter().map(|(text, _)| text.as_str()).collect();
        assert_eq!(
            got, expected,
            "{user}: every reply once, in order; sent (text, outbox id): {sent:?}"
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.lock().unwrap().1.to_string())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_shop_conversations_on_sqlite_keeps_every_transcript_exact() {
    let dir = tempfile::tempdir().unwrap();
    shop_conversations_survive_kill_9(format!("sqlite://{}/chaos.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_shop_conversations_on_postgres_keeps_every_transcript_exact() {
    if let Some(url) = fresh_postgres().await {
        shop_conversations_survive_kill_9(url.clone()).await;
        drop_postgres(&url).await;
    }
}
