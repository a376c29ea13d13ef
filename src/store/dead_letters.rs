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

/// A dead letter as an operator reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub kind: String,
    pub account: Option<String>,
    pub user_key: Option<String>,
    /// What it names: the inbox seq (`inbox_event`), the outbox id (`outbox_send`,
    /// `delivery_failed`), the timer id (`timer_event`).
    pub ref_id: Option<i64>,
    pub reason: String,
    pub raw: Option<Vec<u8>>,
    pub created_at: i64,
    /// `replayed` | `discarded`; None while open.
    pub resolution: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolution_note: Option<String>,
}

/// Which dead letters a list shows.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub kind: Option<String>,
    pub account: Option<String>,
    /// Only open ones (no resolution).
    pub open: bool,
    /// Newest first, older than this id.
    pub before: Option<i64>,
}

const DEAD_LETTER_COLUMNS: &str =
    "id, kind, account, user_key, ref_id, reason, raw, created_at, resolution, resolved_at, resolution_note";

fn dead_letter_of(r: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    use sqlx::Row;
    Ok(DeadLetter {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        account: r.try_get("account")?,
        user_key: r.try_get("user_key")?,
        ref_id: r.try_get("ref_id")?,
        reason: r.try_get("reason")?,
        raw: r.try_get("raw")?,
        created_at: r.try_get("created_at")?,
        resolution: r.try_get("resolution")?,
        resolved_at: r.try_get("resolved_at")?,
        resolution_note: r.try_get("resolution_note")?,
    })
}

impl Store {
    /// Dead letters, newest first (`limit` of them).
    pub async fn dead_letters(
        &self,
        f: &DeadLetterFilter,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE 1 = 1");
        let mut args = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Val| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(k) = &f.kind {
            arg(&mut sql, " AND kind = ?", Val::S(k.clone()));
        }
        if let Some(a) = &f.account {
            arg(&mut sql, " AND account = ?", Val::S(a.clone()));
        }
        if f.open {
            sql.push_str(" AND resolution IS NULL");
        }
        if let Some(b) = f.before {
            arg(&mut sql, " AND id < ?", Val::I(b));
        }
        arg(&mut sql, " ORDER BY id DESC LIMIT ?", Val::I(limit));
        let rows = self.fetch(&sql, args).await?;
        rows.iter().map(dead_letter_of).collect()
    }

    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"),
                vec![Val::I(id)],
            )
            .await?;
        rows.first().map(dead_letter_of).transpose()
    }

    /// Close an open dead letter as `resolution` (replayed, discarded). False: it was
    /// closed already (by another request).
    pub async fn resolve_dead_letter(
        &self,
        id: i64,
        resolution: &str,
        note: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "UPDATE dead_letters SET resolution = $1, resolved_at = $2, resolution_note = $3 \
                 WHERE id = $4 AND resolution IS NULL",
                vec![
                    Val::S(resolution.into()),
                    Val::I(now),
                    Val::OptS(note.map(str::to_string)),
                    Val::I(id),
                ],
            )
            .await?
            > 0)
    }

    /// The note of a resolved dead letter (what its replay came to).
    pub async fn resolve_dead_letter_note(&self, id: i64, note: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE dead_letters SET resolution_note = $1 WHERE id = $2",
            vec![Val::S(note.into()), Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// Open a dead letter again (a replay that did not go through).
    pub async fn reopen_dead_letter(&self, id: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE dead_letters SET resolution = NULL, resolved_at = NULL, resolution_note = NULL WHERE id = $1",
            vec![Val::I(id)],
        )
        .await?;
        Ok(())
    }
}
