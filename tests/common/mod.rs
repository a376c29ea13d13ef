//! What the tests of the real binary share: a config, starting `parleyd` and waiting until it
//! is ready, a PostgreSQL database of its own.
#![allow(dead_code)] // each test binary uses a part

use std::process::{Command, Stdio};
use std::time::Duration;

pub const PNID: &str = "106540352242922";
pub const SECRET: &str = "app-secret-9f3k2";
pub const ACCESS: &str = "EAAG-access-token-77x";
pub const ADMIN: &str = "admin-token-q8w7-3f9c1e7a5b2d4068";

pub fn write_config(dir: &std::path::Path, graph: &str, port: u16) -> std::path::PathBuf {
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
pub struct Reap(pub Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `parleyd serve` on `config` and wait until it is ready: (guard, pid, base URL).
pub async fn start(
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

/// [`start`] with the command that runs `parleyd`.
pub async fn start_with(
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The text of a reply as the fake Graph API saw it (text body or interactive body).
pub fn reply_text(body: &serde_json::Value) -> String {
    body.pointer("/text/body")
        .or_else(|| body.pointer("/interactive/body/text"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// A fresh PostgreSQL database for this run, or None (said loudly) when there is no server.
pub async fn fresh_postgres() -> Option<String> {
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
pub async fn drop_postgres(url: &str) {
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
