//! Dead letters: what Parley could not process or deliver, kept for a human.

use super::exec::{exec, SyncTx};
use super::sql::Val;
use super::*;
use crate::domain::{AccountId, UserKey};
use crate::metrics::metrics;

#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// webhook_malformed | inbox_event | outbox_send | timer
    pub kind: &'static str,
    pub account: Option<AccountId>,
    pub user_key: Option<UserKey>,
    pub ref_id: Option<i64>,
    pub reason: String,
    pub raw: Option<Vec<u8>>,
}

/// A dead letter of this kind takes its timer (`ref_id`) out of the pending ones.
pub const TIMER_DEAD_LETTER: &str = "timer_event";

pub(crate) fn insert_dead_letter(
    tx: &mut dyn SyncTx,
    dl: &NewDeadLetter,
) -> Result<(), StoreError> {
    exec(tx,
        "INSERT INTO dead_letters (kind, account, user_key, ref_id, reason, raw, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            Val::S(dl.kind.to_string()),
            Val::OptS(dl.account.clone().map(Into::into)),
            Val::OptS(dl.user_key.as_deref().map(str::to_string)),
            Val::OptI(dl.ref_id),
            Val::S(dl.reason.clone()),
            Val::Bytes(dl.raw.clone()),
            Val::I(crate::store::now_ms()),
        ],
    )
    ?;
    metrics().dead_letters.inc(&format!("kind=\"{}\"", dl.kind));
    Ok(())
}
