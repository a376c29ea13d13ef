//! The real binary under `kill -9`, on SQLite and on PostgreSQL: every reply once, in order,
//! within 30 s of its message; a reply the killed process never handed to the HTTP client is
//! sent at once by the next one; only a send whose request may have left waits for its status.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley::ingress::signature::sign;
use parley_testkit::{text_webhook, FakeGraph, Fault, Outcome};

mod common;
use common::*;

/// A webhook delivered the way Meta does: again (same bytes) until it is answered 200, after
/// 0.2 s, 0.4 s, … capped at 2 s; and about one in twenty delivered a second time anyway.
#[derive(Clone)]
struct Meta {
    client: reqwest::Client,
    url: String,
}

impl Meta {
    fn new(base: &str) -> Meta {
        Meta {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            url: format!("{base}/webhook"),
        }
    }

    async fn deliver(&self, body: String) {
        let sig = sign(SECRET.as_bytes(), body.as_bytes());
        let mut times = if fastrand::u8(..) < 13 { 2 } else { 1 };
        let mut wait = Duration::from_millis(200);
        while times > 0 {
            let ok = self
                .client
                .post(&self.url)
                .header("x-hub-signature-256", &sig)
                .body(body.clone())
                .send()
                .await
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false);
            if ok {
                times -= 1;
                wait = Duration::from_millis(200);
            } else {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// `sent`, `delivered` and `read` for one accepted send, 2, 3 and 5 ms apart, each echoing
/// the send's `biz_opaque_callback_data`, as the Cloud API reports them.
async fn report_statuses(meta: Meta, wamid: String, to: String, callback: Option<String>) {
    for (status, pause) in [("sent", 2), ("delivered", 3), ("read", 5)] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let body = parley_testkit::status_webhook(
            PNID,
            &wamid,
            status,
            &to,
            callback.as_deref(),
            parley::store::now_ms() / 1000,
        );
        meta.deliver(body).await;
    }
}

/// Users play the shop conversation against the real binary while it is killed with SIGKILL
/// at random moments and started again half a second later, on the same store. The driver
/// behaves like Meta: a webhook not answered 200 is delivered again, about 5 % are delivered
/// twice anyway, and every message the fake Graph API accepted is reported back in `sent`,
/// `delivered` and `read` status webhooks echoing its `biz_opaque_callback_data` (which is how
/// a send whose outcome the killed process never saw is settled instead of sent twice).
/// `outbox.ambiguous_resend_after` keeps its default. Every reply must come within 30 s of
/// its message, and every user's transcript must come out exactly right: every reply once,
/// in order. No writer may deadlock or fall back to writing its batch op by op.
async fn shop_conversations_survive_kill_9(store_url: String) {
    let graph = Arc::new(FakeGraph::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("PARLEY__STORE__URL", store_url.as_str()),
        ("PARLEY__FLOWS__DIR", "flows"),
        ("PARLEY__FLOWS__WATCH", "false"),
    ];
    let log_of = |life: usize| dir.path().join(format!("life-{life}.log"));
    let stderr = |life: usize| Stdio::from(std::fs::File::create(log_of(life)).unwrap());
    let (reap, pid, _) = start(&config, &env, stderr(0)).await;
    let daemon = Arc::new(Mutex::new((reap, pid)));
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let meta = Meta::new(&base);

    // Meta, part 2: statuses for every accepted message.
    let statuses = {
        let (graph, done, meta) = (graph.clone(), done.clone(), meta.clone());
        tokio::spawn(async move {
            let mut reported = 0;
            let mut reports = tokio::task::JoinSet::new();
            while !done.load(Ordering::Relaxed) {
                let attempts = graph.attempts();
                for a in attempts.iter().skip(reported).filter(|a| a.is_delivery()) {
                    let Outcome::Accepted(Some(wamid)) = &a.outcome else {
                        continue;
                    };
                    reports.spawn(report_statuses(
                        meta.clone(),
                        wamid.clone(),
                        a.to().unwrap_or("").to_string(),
                        a.callback().map(str::to_string),
                    ));
                }
                reported = attempts.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            while reports.join_next().await.is_some() {}
        })
    };

    // The killer: SIGKILL at random moments, then start again on the same store 0.5 s later.
    // Each kill's window: from the kill until the new process answers.
    let windows: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let killer = {
        let (daemon, done, config, kills, windows) = (
            daemon.clone(),
            done.clone(),
            config.clone(),
            kills.clone(),
            windows.clone(),
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let logs: Vec<std::path::PathBuf> = (1..=6).map(log_of).collect();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) && kills.load(Ordering::Relaxed) < 5 {
                tokio::time::sleep(Duration::from_millis(1_000 + fastrand::u64(..2_000))).await;
                let pid = daemon.lock().unwrap().1;
                let killed_at = Instant::now();
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                let life = kills.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut d = daemon.lock().unwrap();
                    if let Some(mut child) = d.0 .0.take() {
                        let _ = child.wait();
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let log = Stdio::from(std::fs::File::create(&logs[life - 1]).unwrap());
                let (reap, pid, _) = start(&config, &env, log).await;
                *daemon.lock().unwrap() = (reap, pid);
                windows.lock().unwrap().push((killed_at, Instant::now()));
            }
        })
    };

    // The users: each plays the conversation at least twice, waiting for every answer (30 s
    // at most), and goes on until the daemon has been killed five times.
    let users: Vec<String> = (0..12).map(|u| format!("62814000000{u:02}")).collect();
    let mut players = Vec::new();
    for user in users.clone() {
        let (graph, meta, kills) = (graph.clone(), meta.clone(), kills.clone());
        players.push(tokio::spawn(async move {
            let mut n = 0;
            let mut round = 0;
            let mut waits = Vec::new();
            while round < 2 || (kills.load(Ordering::Relaxed) < 5 && round < 60) {
                round += 1;
                for (input, button, expected) in parley_testkit::SHOP_SCRIPT {
                    n += 1;
                    let wamid = format!("wamid.C{user}-{round}-{n:02}");
                    let ts = parley::store::now_ms() / 1000;
                    let body = if button {
                        parley_testkit::button_reply_webhook(
                            PNID, &user, &wamid, input, "Catalog", ts,
                        )
                    } else {
                        text_webhook(PNID, &user, &wamid, input, ts)
                    };
                    let asked = Instant::now();
                    meta.deliver(body).await;
                    let answered = graph
                        .wait_until(Duration::from_secs(30), |a| {
                            a.iter()
                                .filter(|a| a.is_delivery() && a.to() == Some(user.as_str()))
                                .count()
                                >= n
                        })
                        .await;
                    assert!(
                        answered,
                        "{user}: no answer to `{input}` within 30 s (expected {expected:?})"
                    );
                    waits.push((asked, asked.elapsed()));
                }
            }
            (round, waits)
        }));
    }
    let mut rounds = Vec::new();
    let mut waits = Vec::new();
    for p in players {
        let (r, w) = p.await.unwrap();
        rounds.push(r);
        waits.extend(w);
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
            .flat_map(|_| parley_testkit::SHOP_SCRIPT.iter().map(|s| s.2))
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
    // What the lives logged: no deadlock broken, no batch written again op by op.
    let mut logs = String::new();
    for life in 0..=kills {
        logs.push_str(&std::fs::read_to_string(log_of(life)).unwrap_or_default());
    }
    for bad in ["deadlock", "retrying each operation alone"] {
        let hits: Vec<&str> = logs.lines().filter(|l| l.contains(bad)).collect();
        assert!(hits.is_empty(), "the daemon logged `{bad}`: {hits:#?}");
    }
    // Outside the kill windows: replies whose message came while a process was up and that
    // no kill interrupted (those a kill held up in doubt afterwards still count here).
    let windows = windows.lock().unwrap().clone();
    let mut outside: Vec<Duration> = waits
        .iter()
        .filter(|(asked, wait)| {
            !windows.iter().any(|(killed, ready)| {
                (*asked >= *killed && *asked <= *ready)
                    || (*killed >= *asked && *killed <= *asked + *wait)
            })
        })
        .map(|(_, wait)| *wait)
        .collect();
    outside.sort();
    let mut waits: Vec<Duration> = waits.into_iter().map(|(_, wait)| wait).collect();
    waits.sort();
    let pct = |p: usize| waits[(waits.len() * p / 100).min(waits.len() - 1)];
    let outside_p99 = outside
        .get((outside.len() * 99 / 100).min(outside.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    let in_doubt = logs
        .lines()
        .filter(|l| l.contains("No status came for a send in doubt"))
        .count();
    let slow = logs
        .lines()
        .filter(|l| l.contains("slow statement"))
        .count();
    // Sends each start found in doubt (their request may have left): the JSON log's field.
    let found_in_doubt: u64 = logs
        .lines()
        .filter(|l| l.contains("Resuming unsent outbox rows"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("in_doubt").and_then(|n| n.as_u64()))
        .sum();
    eprintln!(
        "{} replies, {kills} kills: wait p50 {:?}, p99 {:?}, max {:?}; outside the kill windows \
         {} replies, p99 {outside_p99:?}; {in_doubt} sends resent after their doubt, \
         {found_in_doubt} found in doubt at a start; {slow} slow statements logged",
        waits.len(),
        pct(50),
        pct(99),
        waits.last().unwrap(),
        outside.len()
    );
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

/// The moment a send is in doubt is its hand-over to the HTTP client. One send at a time:
/// the fake Graph API takes A's first reply and does not answer; B's reply and A's second are
/// committed behind it, never handed over. The process dies. The next one sends B's reply at
/// once (though `outbox.ambiguous_resend_after` is a minute), holds A's second behind A's
/// first (order), which waits for its status; the status settles it (no second send), and
/// A's second follows at once.
async fn a_reply_never_handed_over_is_sent_at_once_after_a_crash(store_url: String) {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &graph.base_url, port);
    let env = [
        ("PARLEY__STORE__URL", store_url.as_str()),
        ("PARLEY__FLOWS__DIR", "flows"),
        ("PARLEY__FLOWS__WATCH", "false"),
        ("PARLEY__OUTBOX__MAX_IN_FLIGHT", "1"),
        ("PARLEY__OUTBOX__AMBIGUOUS_RESEND_AFTER", "60s"),
    ];
    let (mut reap, pid, base) = start(&config, &env, Stdio::null()).await;
    let meta = Meta::new(&base);
    let (a, b) = ("6281400000901", "6281400000902");
    let ts = || parley::store::now_ms() / 1000;
    let replies_to = |user: &str| {
        graph
            .attempts()
            .into_iter()
            .filter(|x| x.is_delivery() && x.to() == Some(user))
            .map(|x| reply_text(&x.body))
            .collect::<Vec<_>>()
    };

    graph.push_fault(Fault::SlowAccept(Duration::from_secs(600)));
    meta.deliver(text_webhook(PNID, a, "wamid.H1", "menu", ts()))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |x| x
                .iter()
                .any(|x| x.is_delivery() && x.to() == Some(a)))
            .await,
        "A's first reply never reached the fake"
    );
    meta.deliver(text_webhook(PNID, b, "wamid.H2", "menu", ts()))
        .await;
    meta.deliver(parley_testkit::button_reply_webhook(
        PNID,
        a,
        "wamid.H3",
        "catalog",
        "Catalog",
        ts(),
    ))
    .await;
    // Both committed and queued behind the one send in flight: not handed over.
    let store = parley::store::Store::connect(&store_url, 1).await.unwrap();
    let states = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT user_key, state FROM outbox WHERE kind = 'message' ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while states().await.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Each conversation's rows in its own order (ids order rows within a conversation; two
    // conversations may sit on two writers, whose commits interleave in any order).
    let before = states().await;
    let of = |user: &str| -> Vec<String> {
        before
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, state)| state.clone())
            .collect()
    };
    assert_eq!(
        (of(a), of(b)),
        (
            vec!["sending".to_string(), "pending".to_string()],
            vec!["pending".to_string()]
        ),
        "one send handed over, two committed behind it: {before:?}"
    );

    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    if let Some(mut child) = reap.0.take() {
        let _ = child.wait();
    }
    let (_reap, pid, _) = start(&config, &env, Stdio::null()).await;
    let restarted = Instant::now();
    assert!(
        graph
            .wait_until(Duration::from_secs(5), |x| x
                .iter()
                .any(|x| x.is_delivery() && x.to() == Some(b)))
            .await,
        "B's reply, never handed over, was not sent at once after the restart"
    );
    // A's second waits behind A's first, which is in doubt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        replies_to(a).len(),
        1,
        "A's second overtook A's first in doubt"
    );
    // Meta reports A's first: settled, not sent again; A's second goes at once.
    let first = graph
        .attempts()
        .into_iter()
        .find(|x| x.is_delivery() && x.to() == Some(a))
        .unwrap();
    let Outcome::Accepted(Some(wamid)) = &first.outcome else {
        panic!("the fake took A's first reply")
    };
    report_statuses(
        meta.clone(),
        wamid.clone(),
        a.to_string(),
        first.callback().map(str::to_string),
    )
    .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(5), |x| x
                .iter()
                .filter(|x| x.is_delivery() && x.to() == Some(a))
                .count()
                >= 2)
            .await,
        "A's second reply did not follow once A's first was settled"
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "the in-doubt send was resent by time, not settled by its status"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let expected: Vec<String> = parley_testkit::SHOP_SCRIPT[..2]
        .iter()
        .map(|s| s.2.to_string())
        .collect();
    assert_eq!(replies_to(a), expected, "A: each reply once, in order");
    assert_eq!(replies_to(b), expected[..1].to_vec(), "B: its reply once");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_never_handed_over_is_sent_at_once_after_a_crash_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_reply_never_handed_over_is_sent_at_once_after_a_crash(format!(
        "sqlite://{}/handover.db",
        dir.path().display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_never_handed_over_is_sent_at_once_after_a_crash_on_postgres() {
    if let Some(url) = fresh_postgres().await {
        a_reply_never_handed_over_is_sent_at_once_after_a_crash(url.clone()).await;
        drop_postgres(&url).await;
    }
}
