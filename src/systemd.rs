//! The systemd service contract (`Type=notify`, see `systemd/parleyd.service`):
//!
//! - `READY=1` once migrations ran, the actors run and the listener is bound;
//! - `STATUS=` with live conversations, outbox and inbox lag, and why the last reload failed;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, only after the root supervisor, every account
//!   actor and every store writer answered: a stuck engine misses it and systemd restarts it;
//! - `RELOADING=1` + `MONOTONIC_USEC=` before a reload, `READY=1` after it;
//! - `STOPPING=1` when the drain starts.
//!
//! Everything here is a no-op without `$NOTIFY_SOCKET` (not run by systemd, or a test).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use sd_notify::NotifyState;

use crate::actors::{AccountMsg, AccountRouter, Engine, RootMsg};
use crate::behaviour::FlowRegistry;
use crate::metrics::metrics;

/// Where the daemon is in its life, for deciding which notifications make sense.
const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;
static PHASE: AtomicU8 = AtomicU8::new(STARTING);

/// Config keys changed on disk that the running daemon cannot apply: shown in `STATUS=`
/// until a restart.
static RESTART_NEEDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How often `STATUS=` is refreshed when there is no watchdog to keep.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// Whether systemd (or a test) listens.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = send_to(&socket, message.as_bytes()) {
        tracing::warn!(error = %e, "Notifying the service manager failed.");
    }
}

/// One datagram to `$NOTIFY_SOCKET`: a path, or a Linux abstract socket when it starts with
/// `@` (sd_notify(3); the sd-notify crate handles paths only).
fn send_to(socket: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let out = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            out.send_to_addr(message, &addr)
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "abstract sockets exist on Linux only",
        )),
        None => out.send_to(message, socket),
    }
}

/// Startup is complete: the store is migrated and the listener bound.
pub fn ready(flows: Option<&FlowRegistry>) {
    PHASE.store(READY, Ordering::SeqCst);
    let status = status_line(flows, None);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The drain has started (SIGTERM).
pub fn stopping() {
    PHASE.store(STOPPING, Ordering::SeqCst);
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("Stopping: refusing new webhooks, draining"),
    ]);
}

/// Remember (and show in `STATUS=`) the config keys that need a restart; empty clears it.
pub fn set_restart_needed(keys: Vec<String>) {
    *RESTART_NEEDED.lock().unwrap_or_else(|e| e.into_inner()) = keys;
}

/// A reload in progress: `RELOADING=1` now, `READY=1` from [`Reload::done`]. Only while
/// ready: a reload during start or stop changes nothing systemd should hear about.
#[must_use]
pub struct Reload {
    active: bool,
}

pub fn reloading() -> Reload {
    let active = PHASE.load(Ordering::SeqCst) == READY;
    if active {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }
    Reload { active }
}

impl Reload {
    /// The reload finished (applied or refused): back to ready, with the status saying why.
    pub fn done(self, flows: Option<&FlowRegistry>) {
        if self.active && PHASE.load(Ordering::SeqCst) == READY {
            let status = status_line(flows, None);
            send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }
}

/// `Ready: 3 live conversations, outbox 0 pending, inbox lag 0` plus, when there is one, why
/// the last flow reload was refused and which config keys wait for a restart.
pub fn status_line(flows: Option<&FlowRegistry>, problem: Option<&str>) -> String {
    let m = metrics();
    let live = m.live_conversations.load(Ordering::Relaxed).max(0);
    let pending = m.outbox_pending.load(Ordering::Relaxed).max(0);
    let lag = m.inbox_pending.load(Ordering::Relaxed).max(0);
    let head = match problem {
        Some(p) => format!("Stalled: {p}"),
        None => "Ready".to_string(),
    };
    let mut line =
        format!("{head}: {live} live conversations, outbox {pending} pending, inbox lag {lag}");
    if let Some(errors) = flows.and_then(|f| f.status().1) {
        let first = errors.first().map(String::as_str).unwrap_or("");
        line.push_str(&format!(
            "; flow reload refused, old flows kept ({} error(s)): {}",
            errors.len(),
            one_line(first)
        ));
    }
    let restart = RESTART_NEEDED.lock().unwrap_or_else(|e| e.into_inner());
    if !restart.is_empty() {
        line.push_str(&format!(
            "; config changed, restart needed for: {}",
            restart.join(", ")
        ));
    }
    line
}

/// Status lines are one line; flow errors may span several.
fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Half of `WATCHDOG_USEC` when systemd asks for a watchdog for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Ask every part of the engine that must keep moving for an answer: the root supervisor,
/// each account actor (the one that routes its conversations and owns its sender) and each
/// store writer thread. Err names the first that did not answer within `timeout`.
pub async fn check_progress(
    engine: &Engine,
    root: &ActorRef<RootMsg>,
    router: &AccountRouter,
    timeout: Duration,
) -> Result<(), String> {
    let ms = timeout.as_millis() as u64;
    let root_answer = async {
        ractor::call_t!(root, RootMsg::Ping, ms)
            .map_err(|e| format!("the root supervisor did not answer ({e})"))
    };
    let accounts =
        futures::future::join_all(router.all().into_iter().map(|(pnid, account)| async move {
            ractor::call_t!(account, AccountMsg::LiveConversations, ms)
                .map(|_| ())
                .map_err(|e| format!("account {pnid} did not answer ({e})"))
        }));
    let writer = async {
        match tokio::time::timeout(timeout, engine.writer.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the store writer failed ({e})")),
            Err(_) => Err(format!("the store writer did not answer in {ms} ms")),
        }
    };
    let (root_answer, accounts, writer) = tokio::join!(root_answer, accounts, writer);
    root_answer?;
    accounts.into_iter().collect::<Result<Vec<()>, String>>()?;
    writer
}

/// The supervision loop: refreshes `STATUS=` and, with a watchdog, sends `WATCHDOG=1` only
/// after [`check_progress`] passed. Runs until aborted (at shutdown).
pub async fn supervise(engine: Arc<Engine>, root: ActorRef<RootMsg>, router: AccountRouter) {
    let watchdog = watchdog_period();
    let period = watchdog.unwrap_or(STATUS_PERIOD);
    // A check may use three quarters of a period: pings stay less than two periods (one
    // WATCHDOG_USEC) apart while the engine answers.
    let timeout = (period * 3 / 4).max(Duration::from_millis(10));
    if let Some(p) = watchdog {
        tracing::info!(period_ms = p.as_millis() as u64, "Watchdog enabled.");
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tick.tick().await;
        if PHASE.load(Ordering::SeqCst) != READY {
            continue;
        }
        let outcome = check_progress(&engine, &root, &router, timeout).await;
        if PHASE.load(Ordering::SeqCst) != READY {
            continue;
        }
        match outcome {
            Ok(()) => {
                if stalled {
                    tracing::info!("The engine answers again.");
                    stalled = false;
                }
                let status = status_line(engine.flows.as_ref(), None);
                if watchdog.is_some() {
                    send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    send(&[NotifyState::Status(&status)]);
                }
            }
            Err(problem) => {
                tracing::warn!(%problem, "The engine is not making progress; watchdog withheld.");
                stalled = true;
                let status = status_line(engine.flows.as_ref(), Some(&problem));
                send(&[NotifyState::Status(&status)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines_stay_on_one_short_line() {
        let long = "a\nb".repeat(500);
        let s = super::one_line(&long);
        assert!(!s.contains('\n'));
        assert!(s.chars().count() <= 301);
    }

    #[test]
    fn the_status_names_live_conversations_outbox_and_inbox_lag() {
        let s = super::status_line(None, None);
        assert!(s.starts_with("Ready: "), "{s}");
        assert!(s.contains("live conversations"), "{s}");
        assert!(s.contains("outbox"), "{s}");
        assert!(s.contains("inbox lag"), "{s}");
        let s = super::status_line(None, Some("account 1 did not answer"));
        assert!(s.starts_with("Stalled: account 1 did not answer"), "{s}");
    }
}
