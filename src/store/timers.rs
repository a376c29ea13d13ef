//! Durable timers: inserted by steps, fired by the timer loop into their conversation.

use sqlx::Row;

use super::exec::{exec_rows, SyncTx};
use super::sql::{in_list, values_list, Val};
use super::*;
use crate::domain::TimerState;
use crate::domain::{AccountId, UserKey};

/// A due timer.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub id: i64,
    pub account: AccountId,
    pub user_key: UserKey,
    pub name: String,
    pub payload: String,
    pub due_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub idem_key: String,
    pub name: String,
    pub payload: String,
    pub due_at: i64,
}

impl Store {
    pub async fn due_timers(&self, now: i64, limit: i64) -> Result<Vec<DueTimer>, StoreError> {
        let rows = self
            .fetch(
                "SELECT id, account, user_key, name, payload, due_at FROM timers WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $2",
                vec![Val::I(now), Val::I(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DueTimer {
                    id: r.try_get("id")?,
                    account: r.try_get::<String, _>("account")?.into(),
                    user_key: r.try_get::<String, _>("user_key")?.into(),
                    name: r.try_get("name")?,
                    payload: r.try_get("payload")?,
                    due_at: r.try_get("due_at")?,
                })
            })
            .collect()
    }
}

/// Timers consumed by steps.
pub(crate) fn mark_fired(tx: &mut dyn SyncTx, fired: &[i64]) -> Result<(), StoreError> {
    exec_rows(
        tx,
        fired,
        |n| {
            format!(
                "UPDATE timers SET state = 'fired' WHERE id IN ({})",
                in_list(n, 1)
            )
        },
        |id| [Val::I(*id)],
    )
}

/// Timers started by steps (a step that runs again starts none twice: idem keys).
pub(crate) fn insert_timers(
    tx: &mut dyn SyncTx,
    timers: &[(&StepCommit, &NewTimer)],
) -> Result<(), StoreError> {
    exec_rows(
        tx,
        timers,
        |n| {
            format!(
                "INSERT INTO timers (account, user_key, idem_key, name, payload, due_at, state, created_at) VALUES {} \
                 ON CONFLICT (idem_key) DO NOTHING",
                values_list(n, 8, 1)
            )
        },
        |(s, t)| {
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
                Val::S(t.idem_key.clone()),
                Val::S(t.name.clone()),
                Val::S(t.payload.clone()),
                Val::I(t.due_at),
                Val::S(TimerState::Pending.as_str().to_string()),
                Val::I(s.now),
            ]
        },
    )
}
