//! Fault injection for tests: a commit that lands but is reported failed, as when a
//! PostgreSQL connection is cut after the server made the COMMIT durable and before its
//! answer arrived. Armed per store URL, so tests running side by side do not see each
//! other's faults; unarmed, it costs one relaxed load per commit. Compiled only with the
//! `faults` feature (turned on by `parley-testkit`, a dev-dependency) or in unit tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::store::StoreError;

static ARMED: AtomicBool = AtomicBool::new(false);
static LOST: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

/// The store a URL names: the options after `?` (which the store may add) aside.
fn base(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The next `n` commits of the writer on `url` that hold a conversation's step land and
/// are reported failed.
pub fn lose_commit_acks(url: &str, n: usize) {
    let url = base(url);
    let mut lost = LOST.lock().unwrap_or_else(|e| e.into_inner());
    lost.retain(|(u, _)| u != url);
    if n > 0 {
        lost.push((url.to_string(), n));
    }
    ARMED.store(!lost.is_empty(), Ordering::Relaxed);
}

/// `result` of a commit on `url`, or the lost acknowledgement if one is armed.
pub(super) fn acknowledge<T>(
    url: &str,
    ops: &[super::WriteOp],
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if !ARMED.load(Ordering::Relaxed)
        || result.is_err()
        || !ops
            .iter()
            .any(|op| matches!(op, super::WriteOp::Step { .. }))
    {
        return result;
    }
    let url = base(url);
    let mut lost = LOST.lock().unwrap_or_else(|e| e.into_inner());
    let Some(i) = lost.iter().position(|(u, _)| u == url) else {
        return result;
    };
    lost[i].1 -= 1;
    if lost[i].1 == 0 {
        lost.remove(i);
    }
    ARMED.store(!lost.is_empty(), Ordering::Relaxed);
    Err(StoreError::Unavailable(
        "connection lost during COMMIT (injected; the commit landed)".into(),
    ))
}
