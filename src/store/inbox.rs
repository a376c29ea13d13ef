//! The inbox: every webhook event, appended once by its dedup key (messages `pending` until
//! their conversation applies them, statuses applied to the outbox as they are inserted), and
//! the chain of each conversation's applied messages (`prev_seq`).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row;

use super::exec::{exec_rows, int, query_rows, text_col, Col, SyncTx};
use super::sql::{typed_values_list, values_list, Val};
use super::*;
use crate::domain::{AccountId, ConversationKey, UserKey, Wamid};
use crate::domain::{InboxKind, InboxState};
use crate::metrics::metrics;
use crate::whatsapp::event::InboundMessage;

/// An inbox row waiting to be applied.
#[derive(Debug, Clone)]
pub struct PendingInbox {
    pub seq: i64,
    pub payload: String,
}

/// A row to append to the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxRow {
    pub account: AccountId,
    pub user_key: Option<UserKey>,
    /// message | status | change_error | account_event
    pub kind: InboxKind,
    pub dedup_key: String,
    pub wamid: Option<Wamid>,
    pub payload: String,
    pub received_at: i64,
    /// pending | done | unrouted
    pub state: InboxState,
    /// For a status row: how it moves the outbound message it names.
    pub status: Option<StatusApply>,
    /// For a message row: handed to the conversation once committed.
    pub dispatch: Option<Arc<InboundMessage>>,
    /// When its webhook arrived (for the latency metrics; not stored).
    pub arrived: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub struct StatusApply {
    pub status: String,
    pub rank: i64,
    pub at_ms: i64,
    /// Our outbox id, from `biz_opaque_callback_data`.
    pub outbox_id: Option<i64>,
    pub error_code: Option<i64>,
    pub error_detail: Option<String>,
}

impl StatusApply {
    /// What a `failed` status says, for a dead letter or the conversation.
    pub fn failure(&self) -> String {
        match (self.error_code, &self.error_detail) {
            (Some(c), Some(d)) => format!("failed status from Meta, error {c}: {d}"),
            (Some(c), None) => format!("failed status from Meta, error {c}"),
            (None, _) => "failed status from Meta".to_string(),
        }
    }
}

/// An inbound message handed to its conversation.
#[derive(Debug, Clone)]
pub struct InboxDispatch {
    pub seq: i64,
    pub account: AccountId,
    pub user_key: UserKey,
    pub message: Arc<InboundMessage>,
    /// `Some(batch)`: handed over while the transaction that appends it is still open, so that
    /// the conversation's step can join that transaction (one commit instead of two). The
    /// step must name the batch in [`StepCommit::batch`]; if the batch fails, the step is
    /// refused and the conversation replays from the store. `None`: already committed.
    pub batch: Option<u64>,
    /// When its webhook arrived, if this process received it.
    pub arrived: Option<std::time::Instant>,
}

/// An inbox message the conversation gives up on, chained into its history like an applied
/// one.
#[derive(Debug, Clone, Copy)]
pub struct DeadInbox {
    pub seq: i64,
    /// The conversation's message applied before it (0: none).
    pub prev_seq: i64,
}

/// Insert inbox rows; returns (account, dedup_key) → seq for the rows this call inserted.
/// A key repeated within the batch is inserted once, and only its first row gets the seq.
pub(crate) fn append_rows<'a>(
    tx: &mut dyn SyncTx,
    appends: &[&'a Vec<NewInboxRow>],
) -> Result<HashMap<(&'a str, &'a str), i64>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&NewInboxRow> = appends
        .iter()
        .flat_map(|rows| rows.iter())
        .filter(|r| seen.insert((r.account.as_str(), r.dedup_key.as_str())))
        .collect();
    let found = query_rows(
        tx,
        &unique,
        |n| {
            format!(
                "INSERT INTO inbox (account, user_key, kind, dedup_key, wamid, status, payload, received_at, state) VALUES {} \
                 ON CONFLICT (account, dedup_key) DO NOTHING RETURNING seq, account, dedup_key",
                values_list(n, 9, 1)
            )
        },
        &[Col::Int, Col::Text, Col::Text],
        |r| {
            [
                Val::from(&r.account),
                Val::OptS(r.user_key.as_deref().map(str::to_string)),
                Val::S(r.kind.as_str().to_string()),
                Val::S(r.dedup_key.clone()),
                Val::OptS(r.wamid.as_deref().map(str::to_string)),
                Val::OptS(r.status.as_ref().map(|s| s.status.clone())),
                Val::S(r.payload.clone()),
                Val::I(r.received_at),
                Val::S(r.state.as_str().to_string()),
            ]
        },
    )?;
    let by_key: HashMap<(&str, &str), i64> = found
        .iter()
        .map(|row| ((text_col(row, 1), text_col(row, 2)), int(row, 0)))
        .collect();
    let mut inserted: HashMap<(&str, &str), i64> = HashMap::with_capacity(by_key.len());
    let mut fresh_status: Vec<&NewInboxRow> = Vec::new();
    for r in &unique {
        if let Some(seq) = by_key.get(&(r.account.as_str(), r.dedup_key.as_str())) {
            inserted.insert((r.account.as_str(), r.dedup_key.as_str()), *seq);
            if r.status.is_some() {
                fresh_status.push(r);
            }
        }
    }
    for r in fresh_status {
        if let (Some(s), Some(wamid)) = (&r.status, &r.wamid) {
            apply_status(tx, &r.account, wamid, s)?;
        }
    }
    let m = metrics();
    for r in &unique {
        let new = inserted.contains_key(&(r.account.as_str(), r.dedup_key.as_str()));
        m.inbox_events.inc(match (r.kind, new) {
            (InboxKind::Message, true) => "kind=\"message\",new=\"true\"",
            (InboxKind::Message, false) => "kind=\"message\",new=\"false\"",
            (InboxKind::Status, true) => "kind=\"status\",new=\"true\"",
            (InboxKind::Status, false) => "kind=\"status\",new=\"false\"",
            (_, true) => "kind=\"other\",new=\"true\"",
            (_, false) => "kind=\"other\",new=\"false\"",
        });
    }
    Ok(inserted)
}

impl Store {
    /// Unapplied messages of one conversation, in inbox order.
    pub async fn pending_inbox(
        &self,
        key: &ConversationKey,
        after_seq: i64,
    ) -> Result<Vec<PendingInbox>, StoreError> {
        let (account, user_key) = (key.account.as_str(), key.user.as_str());
        let rows = self
            .fetch(
                "SELECT seq, payload FROM inbox WHERE account = $1 AND user_key = $2 AND seq > $3 AND state = 'pending' \
                 AND kind = 'message' ORDER BY seq",
                vec![account.into(), user_key.into(), Val::I(after_seq)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PendingInbox {
                    seq: r.try_get("seq")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }

    /// Conversations of `account` with unapplied messages, oldest first; optionally only rows
    /// received before `older_than` (the periodic sweep).
    /// Messages committed and not yet applied, and when the oldest of them arrived (ms).
    pub async fn inbox_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        let rows = self
            .fetch(
                "SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM inbox WHERE state = 'pending' AND kind = 'message'",
                vec![],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("COUNT returned no row".into()))?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    pub async fn conversations_with_pending(
        &self,
        account: &str,
        older_than: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, MIN(seq) AS first FROM inbox WHERE state = 'pending' AND account = $1 AND received_at <= $2 \
                 AND kind = 'message' AND user_key IS NOT NULL GROUP BY user_key ORDER BY first",
                vec![account.into(), Val::I(older_than.unwrap_or(i64::MAX))],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get("user_key")?))
            .collect()
    }
}

/// Messages applied by steps, `(seq, prev_seq)`: done, and chained to the conversation's
/// message applied before them.
pub(crate) fn mark_applied(tx: &mut dyn SyncTx, done: &[(i64, i64)]) -> Result<(), StoreError> {
    exec_rows(
        tx,
        done,
        |n| {
            format!(
                "UPDATE inbox SET state = 'done', prev_seq = v.column2 \
                 FROM (VALUES {}) AS v WHERE inbox.seq = v.column1",
                typed_values_list(n, &["BIGINT", "BIGINT"])
            )
        },
        |(seq, prev)| [Val::I(*seq), Val::I(*prev)],
    )
}
