//! Status webhooks and replies racing for the same outbox rows on parallel writers.
//!
//! Its own test binary: the counters it reads are process-wide, and tests elsewhere make
//! group commits fail on purpose; here nothing else runs that could move them.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use helpers::*;
use parley_testkit::{status_webhook, text_webhook, FakeGraph, Outcome};

const USERS: usize = 96;
const MESSAGES: usize = 6;
const DEADLOCKS: &str = "parley_store_deadlocks_total";
const FALLBACKS: &str = "parley_store_batch_fallbacks_total";

/// One scenario at a time, so that each reads only its own app's moves of the counters.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// Whom a status names as its `recipient_id`.
#[derive(Clone, Copy)]
enum Recipient {
    /// The number the message was sent to.
    AsSent,
    /// Another form of it (Meta names the wa_id it normalised the number to, as it does for
    /// some countries' numbers): not the conversation's key.
    Normalised,
}

/// Like Meta: every message taken gets `sent`, `delivered` and `read` at once, each echoing
/// our callback data, while the sender is still recording the send. Returns the answers.
fn report_statuses(
    app: Arc<TestApp>,
    graph: Arc<FakeGraph>,
    done: Arc<AtomicBool>,
    recipient: Recipient,
) -> tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<Vec<u16>>>> {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut posts = Vec::new();
        while !done.load(Ordering::SeqCst) {
            graph
                .wait_until(Duration::from_millis(50), |log| log.len() > seen)
                .await;
            let new = graph.attempts_from(seen);
            seen += new.len();
            for a in new.into_iter().filter(|a| a.is_delivery()) {
                let (Some(to), Some(cb), Outcome::Accepted(Some(wamid))) =
                    (a.to(), a.callback(), &a.outcome)
                else {
                    continue;
                };
                let to = match recipient {
                    Recipient::AsSent => to.to_string(),
                    Recipient::Normalised => format!("{}9{}", &to[..4], &to[4..]),
                };
                let (cb, wamid) = (cb.to_string(), wamid.clone());
                let app = app.clone();
                posts.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for status in ["sent", "delivered", "read"] {
                        let body = status_webhook(PNID, &wamid, status, &to, Some(&cb), now_secs());
                        answers.push(app.post_webhook(&body).await);
                    }
                    answers
                }));
            }
        }
        posts
    })
}

async fn status_webhooks_racing_replies_on_four_writers_cause_no_deadlock_and_no_fallback(
    db: TestDb,
) {
    statuses_race_replies(db, Recipient::AsSent).await;
}
on_both_stores!(
    racing_statuses,
    status_webhooks_racing_replies_on_four_writers_cause_no_deadlock_and_no_fallback
);

/// The status's `recipient_id` would route it to another writer than the one owning its row;
/// the conversation's key in the callback data routes it to the owner.
async fn statuses_naming_another_recipient_still_go_to_the_rows_writer(db: TestDb) {
    statuses_race_replies(db, Recipient::Normalised).await;
}
on_both_stores!(
    misnamed_statuses,
    statuses_naming_another_recipient_still_go_to_the_rows_writer
);

async fn statuses_race_replies(db: TestDb, recipient: Recipient) {
    let _alone = ALONE.lock().await;
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.store.writers = 4;
    let app = Arc::new(spawn_app(settings, Arc::new(Echo)).await);
    let (_, before) = app.get("/metrics").await;

    let done = Arc::new(AtomicBool::new(false));
    let reporter = report_statuses(app.clone(), graph.clone(), done.clone(), recipient);
    let mut users = Vec::new();
    for u in 0..USERS {
        let app = app.clone();
        users.push(tokio::spawn(async move {
            let user = format!("6281234{u:05}");
            for k in 0..MESSAGES {
                let body = text_webhook(
                    PNID,
                    &user,
                    &format!("wamid.IN{u:03}{k}"),
                    &format!("m{k}"),
                    now_secs(),
                );
                assert_eq!(app.post_webhook(&body).await, 200);
            }
        }));
    }
    for u in users {
        u.await.unwrap();
    }
    let total = USERS * MESSAGES;
    assert!(
        graph.wait_delivered(total, Duration::from_secs(60)).await,
        "every message answered"
    );
    let store = db.store().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND status = 'read'",
            )
            .await
                == total as i64
        })
        .await,
        "every reply read"
    );
    // Each status is kept under the conversation that sent the message (whose writer owns
    // the row), not under the number Meta named.
    let misfiled = count(
        &store,
        "SELECT COUNT(*) FROM inbox WHERE kind = 'status' AND user_key NOT LIKE '6281234%'",
    )
    .await;
    assert_eq!(misfiled, 0, "statuses filed under another key");
    done.store(true, Ordering::SeqCst);
    for post in reporter.await.unwrap() {
        assert_eq!(post.await.unwrap(), [200, 200, 200]);
    }
    assert_eq!(graph.delivered().len(), total, "each message answered once");

    let (_, after) = app.get("/metrics").await;
    for name in [DEADLOCKS, FALLBACKS] {
        assert_eq!(
            counter(&after, name) - counter(&before, name),
            0,
            "{name} moved"
        );
    }
    let Ok(app) = Arc::try_unwrap(app) else {
        panic!("the app is still shared");
    };
    app.stop().await;
}
