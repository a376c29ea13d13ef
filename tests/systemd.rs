//! The systemd contract, on the real binary: `parleyd serve` runs with `NOTIFY_SOCKET` bound
//! to a datagram socket of this test, as systemd would run it, and the notifications are
//! checked in order: READY=1 once the listener answers, STATUS= lines, WATCHDOG=1 pings,
//! RELOADING=1 then READY=1 around `parleyd reload` (a broken flow file is refused and named,
//! the old flows stay, STATUS= says why; a live key applies, a restart-only key is named; a
//! rotated admin token from the credentials applies), STOPPING=1 and exit 0
//! within the unit's TimeoutStopSec on SIGTERM. Secrets come from `$CREDENTIALS_DIRECTORY`
//! as `LoadCredential=` provides them. The unit file itself goes through
//! `systemd-analyze verify` and `systemd-analyze security`.

#![cfg(target_os = "linux")]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley_testkit::text_webhook;

const PNID: &str = "106540352242922";
const SECRET: &str = "cred-app-secret-51x";
const ADMIN: &str = "cred-admin-token-7k-0123456789abcdef";
const ROTATED_ADMIN: &str = "cred-admin-token-rotated-2m-0123456789abcdef";
/// systemd would send WATCHDOG_USEC from `WatchdogSec=`; short here so pings come quickly.
const WATCHDOG_USEC: u64 = 1_000_000;
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/parleyd.service");

/// One datagram from the daemon, with when it arrived.
struct Note {
    at: Instant,
    lines: Vec<String>,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
    fn status(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// Reads the notification socket on a thread; the test takes datagrams in order.
struct Notes {
    rx: mpsc::Receiver<Note>,
    seen: Vec<Note>,
}

impl Notes {
    fn bind(path: &Path) -> Notes {
        let socket = UnixDatagram::bind(path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let note = Note {
                    at: Instant::now(),
                    lines: text.lines().map(str::to_string).collect(),
                };
                if tx.send(note).is_err() {
                    break;
                }
            }
        });
        Notes {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next datagram that satisfies `pred`, skipping (and keeping) the others.
    fn next_where(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Note) -> bool) -> &Note {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(note) => {
                    let hit = pred(&note);
                    self.seen.push(note);
                    if hit {
                        return self.seen.last().unwrap();
                    }
                }
                Err(_) => panic!(
                    "no {what} within {timeout:?}; received: {:?}",
                    self.seen
                        .iter()
                        .map(|n| n.lines.join("|"))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }
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

/// The config file carries no secret: they come from the credentials directory.
fn write_config(dir: &Path, port: u16, idle_timeout: &str) -> PathBuf {
    write_config_with(dir, port, idle_timeout, 8)
}

/// `max_connections`: `store.max_connections`, a key only a restart applies.
fn write_config_with(dir: &Path, port: u16, idle_timeout: &str, max_connections: u32) -> PathBuf {
    let path = dir.join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[whatsapp]\ngraph_base_url = \"http://127.0.0.1:9\"\n\
             [store]\nurl = \"sqlite://{dir}/parley.db\"\nmax_connections = {max_connections}\n\
             [flows]\ndir = \"{dir}/flows\"\nwatch = false\n\
             [conversation]\nidle_timeout = \"{idle_timeout}\"\n\
             [[accounts]]\nphone_number_id = \"{PNID}\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    path
}

/// `TimeoutStopSec=` of the unit file: SIGTERM must end the process within it.
fn unit_stop_timeout() -> Duration {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let value = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("the unit sets TimeoutStopSec");
    parley::config::parse_duration(value).unwrap()
}

/// What `ExecReload=` runs (with the same credentials as the daemon).
fn parleyd_reload(config: &Path, credentials: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["reload", "--config"])
        .arg(config)
        .env("CREDENTIALS_DIRECTORY", credentials)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_speaks_the_systemd_notify_protocol_from_ready_to_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/flows/reminder.yaml"),
        flows.join("reminder.yaml"),
    )
    .unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("whatsapp.app_secret"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    std::fs::write(credentials.join("admin.token"), ADMIN).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "10m");
    let mut notes = Notes::bind(&dir.path().join("notify.sock"));

    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reap = Reap(Some(child));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // READY=1 comes once, after migrations and the bind: the listener answers at once.
    let ready = notes.next_where("READY=1", Duration::from_secs(60), |n| n.has("READY=1"));
    let status = ready
        .status()
        .expect("READY=1 comes with a STATUS=")
        .to_string();
    assert!(
        status.contains("live conversations") && status.contains("outbox"),
        "{status}"
    );
    let health = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert!(health.status().is_success(), "{}", health.status());
    assert!(
        dir.path().join("parley.db").exists(),
        "the store was created and migrated before READY=1"
    );
    let ready_after = started.elapsed();

    // The webhook secret came from $CREDENTIALS_DIRECTORY (the config file has none).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = text_webhook(PNID, "6281234567890", "wamid.SYSTEMD1", "remind me", now);
    let answer = http
        .post(format!("{base}/webhook"))
        .header(
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "signed with the credential secret");

    // WATCHDOG=1 at half WATCHDOG_USEC, each with a fresh STATUS=.
    let first = notes
        .next_where("WATCHDOG=1", Duration::from_secs(5), |n| {
            n.has("WATCHDOG=1")
        })
        .at;
    let mut last = first;
    for _ in 0..3 {
        let note = notes.next_where("WATCHDOG=1", Duration::from_secs(5), |n| {
            n.has("WATCHDOG=1")
        });
        assert!(
            note.status().is_some_and(|s| s.contains("inbox lag")),
            "a watchdog ping refreshes STATUS="
        );
        let gap = note.at - last;
        assert!(
            gap < Duration::from_micros(WATCHDOG_USEC),
            "watchdog pings {gap:?} apart; WATCHDOG_USEC is {WATCHDOG_USEC} µs"
        );
        last = note.at;
    }

    // A broken flow file: `parleyd reload` fails and names it; RELOADING=1 then READY=1,
    // STATUS= says why; the old flows keep running.
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad_flows/syntax.yaml"),
        flows.join("syntax.yaml"),
    )
    .unwrap();
    let (ok, out) = parleyd_reload(&config, &credentials);
    assert!(!ok, "reload with a broken flow must fail: {out}");
    assert!(
        out.contains("syntax.yaml:4:"),
        "the error names the file: {out}"
    );
    assert!(out.contains("the running flows stay"), "{out}");
    let reloading = notes.next_where("RELOADING=1", Duration::from_secs(5), |n| {
        n.has("RELOADING=1")
    });
    assert!(
        reloading.lines.iter().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "RELOADING=1 carries MONOTONIC_USEC: {:?}",
        reloading.lines
    );
    let back = notes.next_where("READY=1 after the reload", Duration::from_secs(5), |n| {
        n.has("READY=1")
    });
    let why = back.status().unwrap_or_default().to_string();
    assert!(
        why.contains("flow reload refused") && why.contains("syntax.yaml"),
        "STATUS= says why: {why}"
    );
    let running: serde_json::Value = http
        .get(format!("{base}/admin/v1/flows"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = running["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, ["reminder"], "the old flows stay: {running}");

    // The flow fixed, a live key and a key that cannot change live changed: the live one
    // applies, the other is named, exit 1.
    std::fs::remove_file(flows.join("syntax.yaml")).unwrap();
    write_config_with(dir.path(), port, "5m", 9);
    let (ok, out) = parleyd_reload(&config, &credentials);
    assert!(
        !ok,
        "a changed key that needs a restart fails the reload: {out}"
    );
    assert!(
        out.contains("only a restart applies these keys: store.max_connections"),
        "{out}"
    );
    assert!(
        out.contains("configuration applied: conversation.idle_timeout"),
        "{out}"
    );
    assert!(out.contains("flows reloaded: reminder@"), "{out}");
    let back = notes.next_where("READY=1 after the reload", Duration::from_secs(5), |n| {
        n.has("READY=1")
    });
    let why = back.status().unwrap_or_default().to_string();
    assert!(
        why.contains("restart needed for: store.max_connections")
            && !why.contains("idle_timeout")
            && !why.contains("flow reload refused"),
        "{why}"
    );

    // The restart-only key back as it runs, the live one kept: the reload succeeds and has
    // nothing left to apply; SIGHUP does the same.
    write_config_with(dir.path(), port, "5m", 8);
    let (ok, out) = parleyd_reload(&config, &credentials);
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: reloaded"), "{out}");
    assert!(!out.contains("configuration applied"), "{out}");
    notes.next_where("READY=1 after the reload", Duration::from_secs(5), |n| {
        n.has("READY=1")
    });

    // A rotated credential (`systemctl reload` after replacing the file): `parleyd reload`
    // reads the same credentials, so it presents the new admin token; the daemon applies
    // it and refuses the old one from then on.
    std::fs::write(credentials.join("admin.token"), ROTATED_ADMIN).unwrap();
    let (ok, out) = parleyd_reload(&config, &credentials);
    assert!(ok, "{out}");
    assert!(out.contains("configuration applied: admin.token"), "{out}");
    notes.next_where("READY=1 after the rotation", Duration::from_secs(5), |n| {
        n.has("READY=1")
    });
    for (token, expected) in [(ADMIN, 401), (ROTATED_ADMIN, 200)] {
        let status = http
            .get(format!("{base}/admin/v1/flows"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), expected, "admin token {token}");
    }
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    notes.next_where("RELOADING=1 on SIGHUP", Duration::from_secs(5), |n| {
        n.has("RELOADING=1")
    });
    let back = notes.next_where("READY=1 after SIGHUP", Duration::from_secs(5), |n| {
        n.has("READY=1")
    });
    let status = back.status().unwrap_or_default().to_string();
    assert!(
        status.starts_with("Ready:") && !status.contains("restart needed"),
        "{status}"
    );

    // SIGTERM: STOPPING=1, then exit 0 within the unit's TimeoutStopSec.
    let stop_timeout = unit_stop_timeout();
    let term_at = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    notes.next_where("STOPPING=1", Duration::from_secs(5), |n| {
        n.has("STOPPING=1")
    });
    let mut child = reap.0.take().unwrap();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            term_at.elapsed() < stop_timeout,
            "still running {stop_timeout:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    // Nothing after STOPPING=1 claims readiness again.
    while let Ok(note) = notes.rx.recv_timeout(Duration::from_millis(100)) {
        assert!(
            !note.has("READY=1") && !note.has("WATCHDOG=1"),
            "{:?}",
            note.lines
        );
    }
    eprintln!(
        "systemd contract: READY=1 {ready_after:?} after spawn; stopped {:?} after SIGTERM",
        term_at.elapsed()
    );
}

/// A stuck engine must miss the watchdog: while another process holds SQLite's write lock,
/// the store writer cannot commit, so no WATCHDOG=1 is sent and STATUS= says what stalls;
/// once the lock goes, the pings resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_writer_that_cannot_commit_withholds_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "10m");
    let mut notes = Notes::bind(&dir.path().join("notify.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(Some(child));
    notes.next_where("READY=1", Duration::from_secs(60), |n| n.has("READY=1"));
    notes.next_where("WATCHDOG=1", Duration::from_secs(5), |n| {
        n.has("WATCHDOG=1")
    });

    let db = rusqlite::Connection::open(dir.path().join("parley.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked_at = Instant::now();
    let stalled = notes.next_where("a Stalled STATUS=", Duration::from_secs(5), |n| {
        n.status().is_some_and(|s| s.starts_with("Stalled:"))
    });
    assert!(
        stalled.status().unwrap().contains("store writer"),
        "{:?}",
        stalled.lines
    );
    // Hold the lock for three watchdog periods: no ping may come after the first check
    // that started while locked (one may already have been on its way).
    std::thread::sleep(Duration::from_micros(3 * WATCHDOG_USEC));
    while let Ok(note) = notes.rx.try_recv() {
        notes.seen.push(note);
    }
    let pings_while_locked: Vec<Duration> = notes
        .seen
        .iter()
        .filter(|n| n.has("WATCHDOG=1") && n.at > locked_at)
        .map(|n| n.at - locked_at)
        .collect();
    assert!(
        pings_while_locked
            .iter()
            .all(|at| *at < Duration::from_micros(WATCHDOG_USEC / 2)),
        "watchdog pings while the writer was stuck: {pings_while_locked:?}"
    );
    db.execute_batch("ROLLBACK").unwrap();
    let resumed = notes.next_where("WATCHDOG=1 after the lock", Duration::from_secs(15), |n| {
        n.has("WATCHDOG=1") && n.at > locked_at + Duration::from_micros(3 * WATCHDOG_USEC)
    });
    assert!(resumed.status().is_some_and(|s| s.starts_with("Ready:")));
}

/// `NOTIFY_SOCKET=@name` is a Linux abstract socket (how systemd passes it in some setups).
#[test]
fn notifications_reach_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    let config = write_config(dir.path(), free_port(), "10m");
    let name = format!("parley-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(Some(child));
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf).expect("a notification within 60 s");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
}

/// With `WATCHDOG_PID` naming another process, the watchdog is not ours: no WATCHDOG=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_pings_when_watchdog_pid_names_another_process() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "10m");
    let mut notes = Notes::bind(&dir.path().join("notify.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_parleyd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(Some(child));
    notes.next_where("READY=1", Duration::from_secs(60), |n| n.has("READY=1"));
    std::thread::sleep(Duration::from_millis(800));
    while let Ok(note) = notes.rx.recv_timeout(Duration::from_millis(50)) {
        assert!(!note.has("WATCHDOG=1"), "{:?}", note.lines);
    }
}

/// `systemd-analyze verify` passes with empty stderr and `security --offline=true` scores
/// ≤ 2.5. Without systemd-analyze the test says so loudly and passes, unless
/// `PARLEY_REQUIRE_SYSTEMD_ANALYZE=1` (set by .ci/run after installing it) makes it fail.
#[test]
fn the_unit_file_verifies_cleanly_and_scores_at_most_2_5() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("PARLEY_REQUIRE_SYSTEMD_ANALYZE").is_err(),
            "systemd-analyze is required (PARLEY_REQUIRE_SYSTEMD_ANALYZE) but not installed"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit file was NOT checked");
        return;
    }
    // The unit names /usr/bin/parleyd; verify checks that it exists, so point it at the
    // binary under test (the only change).
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(UNIT)
        .unwrap()
        .replace("/usr/bin/parleyd", env!("CARGO_BIN_EXE_parleyd"));
    let path = dir.path().join("parleyd.service");
    std::fs::write(&path, unit).unwrap();

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        verify.status
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for parleyd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(security.status.success(), "{text}");
    assert!(score <= 2.5, "exposure {score} > 2.5:\n{text}");
}

#[test]
fn the_unit_gives_room_for_every_connection_and_bounds_memory() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
            .trim()
            .to_string()
    };
    let nofile: usize = value("LimitNOFILE").parse().unwrap();
    let defaults = parley::config::Settings::load(None).unwrap();
    assert!(
        nofile >= 2 * defaults.http.max_connections,
        "LimitNOFILE={nofile} leaves no room beside http.max_connections={}",
        defaults.http.max_connections
    );
    assert!(value("MemoryMax").ends_with('G'));
}
