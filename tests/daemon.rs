//! The real binary: SIGTERM drains and exits 0 in time; `check` names bad keys; logs at
//! TRACE keep secrets, phone numbers and message bodies out.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley::testing::{text_webhook, FakeGraph};

const PNID: &str = "106540352242922";
const SECRET: &str = "app-secret-9f3k2";
const ACCESS: &str = "EAAG-access-token-77x";
const ADMIN: &str = "admin-token-q8w7";
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
    let child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reap = Reap(Some(child));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "daemon ready");

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
