//! The outbox: every message to send, inserted by the step that decided it (keyed so a step
//! that runs again inserts nothing), moved by the sender (`sending`, `sent`, `failed`, ...) and
//! by status webhooks (`delivered`, `read`), never backwards.

use std::collections::HashMap;

use sqlx::Row;

use super::exec::{exec, int, query_rows, shaped, text_col, Col, SyncTx};
use super::sql::{in_list, std_chunks, typed_values_list, values_list, Val};
use super::*;
use crate::domain::{AccountId, UserKey, Wamid};
use crate::domain::{OutboxKind, OutboxState};
use crate::metrics::metrics;
use crate::whatsapp::event::DeliveryStatus;

/// The idem key of outbox row `n` of the step that applied inbox row `seq`: the seq alone
/// leads (zero-padded, so that key order is arrival order), see the conversation actor.
pub fn inbound_reply_key(seq: i64, n: usize) -> String {
    format!("in{seq:020}:{n}")
}

/// The idem keys of every outbox row the step of inbox row `seq` inserted: [from, to).
pub fn inbound_reply_key_range(seq: i64) -> (String, String) {
    idem_key_range(format!("in{seq:020}:"))
}

/// The outbox idem keys (`{account}:{user}:{origin}:{n}`, see the conversation actor) that
/// start with `prefix` (which ends in `:`): from `prefix` (inclusive) to the same text ending
/// in `;` (exclusive; `;` follows `:` in byte order). Both stores compare idem keys byte by
/// byte, so this is exactly the keys with the prefix, read through the unique index. (The
/// queries also check account and user, as `account || ''` so that SQLite's planner, which
/// has no statistics, does not take an index on the account alone instead.)
pub(crate) fn idem_key_range(prefix: String) -> (String, String) {
    debug_assert!(prefix.ends_with(':'));
    let upper = format!("{};", &prefix[..prefix.len() - 1]);
    (prefix, upper)
}

/// The columns [`outbox_record`] reads.
const OUTBOX_RECORD: &str =
    "id, account, user_key, kind, message, reply_to, state, updated_at, class, idem_key";

pub(crate) fn outbox_record(r: &sqlx::any::AnyRow) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        id: r.try_get("id")?,
        account: r.try_get::<String, _>("account")?.into(),
        user_key: r.try_get::<String, _>("user_key")?.into(),
        kind: stored(r, "kind")?,
        message_json: r.try_get("message")?,
        reply_to: r.try_get("reply_to")?,
        state: stored(r, "state")?,
        updated_at: r.try_get("updated_at")?,
        class: crate::domain::SendClass::parse(r.try_get("class")?),
        turn: None,
        campaign: crate::domain::campaign_of_idem_key(&r.try_get::<String, _>("idem_key")?),
    })
}

#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    pub idem_key: String,
    /// message | mark_read
    pub kind: OutboxKind,
    /// `OutboundMessage` as JSON.
    pub message_json: String,
    pub reply_to: Option<String>,
    pub source_seq: Option<i64>,
    /// service | business (see `sendgate::SendClass`).
    pub class: crate::domain::SendClass,
}

/// An outbox row as the sender needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub id: i64,
    pub account: AccountId,
    pub user_key: UserKey,
    pub kind: OutboxKind,
    pub message_json: String,
    pub reply_to: Option<String>,
    pub state: OutboxState,
    pub updated_at: i64,
    /// service | business (see `sendgate::SendClass`).
    pub class: crate::domain::SendClass,
    /// For a chatbot's reply: when its turn's answer came (not stored; only for the metrics).
    pub turn: Option<TurnClock>,
    /// The campaign that sent it (read from its idem key), so a pause can withhold it.
    pub campaign: Option<i64>,
}

/// A chatbot turn's clock, carried by its reply to the send so that Parley's time in the turn
/// is measured to the request to the Graph API, not only to the hand-over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnClock {
    /// The model's answer was received.
    pub answered_at: std::time::Instant,
    /// The turn's time from the webhook's arrival to the model call's start, if this process
    /// received the webhook.
    pub before_call: Option<std::time::Duration>,
}

/// A change to outbox rows. Each names the conversation of its row (`account`, `user_key`):
/// it is written by that conversation's writer, the only one that writes the row (see the
/// module doc).
#[derive(Debug, Clone)]
pub enum OutboxUpdate {
    /// About to POST: a crash from here on leaves the outcome ambiguous.
    Sending {
        id: i64,
        account: AccountId,
        user_key: UserKey,
        at: i64,
    },
    /// Never attempted (still queued at a clean stop): send at once on the next start.
    /// `rows`: (user_key, id); split among their writers.
    Unsent {
        account: AccountId,
        rows: Vec<(UserKey, i64)>,
    },
    /// Withheld for a cancelled campaign: settled unsent, for good. `rows` as for `Unsent`.
    Cancelled {
        account: AccountId,
        rows: Vec<(UserKey, i64)>,
        at: i64,
    },
    Sent {
        id: i64,
        account: AccountId,
        user_key: UserKey,
        wamid: Option<Wamid>,
        at: i64,
    },
    Retrying {
        id: i64,
        account: AccountId,
        user_key: UserKey,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
    /// Permanent failure: the row is failed and a dead letter is written.
    Failed {
        id: i64,
        account: AccountId,
        user_key: UserKey,
        attempts: i64,
        code: Option<i64>,
        detail: String,
        at: i64,
    },
}

/// Move an outbound message forward (never back) on a status webhook. Matches by our outbox
/// id (echoed callback data) or by wamid. A status for a send we have not recorded yet is
/// kept in the inbox and applied when the wamid is recorded.
pub(crate) fn apply_status(
    tx: &mut dyn SyncTx,
    account: &str,
    wamid: &str,
    s: &StatusApply,
) -> Result<(), StoreError> {
    if s.rank == 0 {
        return Ok(());
    }
    let moved = exec(tx,
        "UPDATE outbox SET status = $1, status_rank = $2, status_at = $3, wamid = COALESCE(wamid, $4), \
         state = CASE WHEN state IN ('pending', 'sending') THEN 'sent' ELSE state END, \
         error_code = COALESCE($5, error_code), error_detail = COALESCE($6, error_detail), updated_at = $3 \
         WHERE account = $7 AND (wamid = $4 OR id = $8) AND status_rank < $2",
        vec![
            Val::S(s.status.clone()),
            Val::I(s.rank),
            Val::I(s.at_ms),
            Val::S(wamid.to_string()),
            Val::OptI(s.error_code),
            Val::OptS(s.error_detail.clone()),
            Val::S(account.to_string()),
            Val::I(s.outbox_id.unwrap_or(-1)),
        ],
    )
    ?;
    if moved > 0 && s.status == "failed" {
        // Meta took the message and then could not deliver it (131026 unreachable, 131049
        // ecosystem, 131047 window…): kept for a human like a send the API refused.
        let reason = s.failure();
        exec(
            tx,
            "INSERT INTO dead_letters (kind, account, user_key, ref_id, reason, raw, created_at) \
             SELECT 'delivery_failed', account, user_key, id, $1, NULL, $2 FROM outbox \
             WHERE account = $3 AND (wamid = $4 OR id = $5) AND status = 'failed'",
            vec![
                Val::S(reason),
                Val::I(crate::store::now_ms()),
                Val::S(account.to_string()),
                Val::S(wamid.to_string()),
                Val::I(s.outbox_id.unwrap_or(-1)),
            ],
        )?;
        metrics().dead_letters.inc("kind=\"delivery_failed\"");
    }
    Ok(())
}

/// One `UPDATE … id IN (…)` over `ids`, in the fixed row counts whose texts are kept: `lead`
/// binds the statement's first parameters, the ids follow (`build` numbers them from there).
pub(crate) fn update_by_ids(
    tx: &mut dyn SyncTx,
    ids: &[i64],
    lead: &[Val],
    build: fn(usize) -> String,
) -> Result<(), StoreError> {
    for chunk in std_chunks(ids) {
        let text = shaped(tx, chunk.len(), build);
        let mut vals = Vec::with_capacity(lead.len() + chunk.len());
        vals.extend_from_slice(lead);
        vals.extend(chunk.iter().map(|id| Val::I(*id)));
        tx.exec(&text, vals)?;
    }
    Ok(())
}

/// The frequent updates (sending, sent) as a few multi-row statements; the rare ones alone.
pub(crate) fn apply_outbox_updates(
    tx: &mut dyn SyncTx,
    updates: &[&OutboxUpdate],
) -> Result<(), StoreError> {
    let mut sending: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut sending_at = 0;
    let mut sent_plain: Vec<i64> = Vec::new();
    let mut sent_plain_at = 0;
    let mut sent: Vec<(i64, &str, &str, i64)> = Vec::new();
    for u in updates {
        match u {
            OutboxUpdate::Sending {
                id, account, at, ..
            } => {
                sending.entry(account.as_str()).or_default().push(*id);
                sending_at = sending_at.max(*at);
            }
            OutboxUpdate::Sent {
                id,
                wamid: None,
                at,
                ..
            } => {
                sent_plain.push(*id);
                sent_plain_at = sent_plain_at.max(*at);
            }
            OutboxUpdate::Sent {
                id,
                account,
                wamid: Some(w),
                at,
                ..
            } => sent.push((*id, account.as_str(), w.as_str(), *at)),
            other => apply_outbox_update(tx, other)?,
        }
    }
    for (account, ids) in &sending {
        // By account and id: the open rows' index answers it in one descent per row.
        // (Without the account PostgreSQL may read that partial index whole, with every
        // entry of a row sent since the last vacuum.)
        let lead = [Val::I(sending_at), Val::S(account.to_string())];
        update_by_ids(tx, ids, &lead, |n| {
            format!(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = $1 \
                 WHERE account = $2 AND state IN ('pending', 'sending') AND id IN ({})",
                in_list(n, 3)
            )
        })?;
    }
    update_by_ids(tx, &sent_plain, &[Val::I(sent_plain_at)], |n| {
        format!(
            "UPDATE outbox SET state = 'sent', updated_at = $1 WHERE id IN ({})",
            in_list(n, 2)
        )
    })?;
    // Statuses that arrived before we recorded the wamid: the UPDATE itself says which rows
    // have one (one probe of `inbox_status_wamid` per row, no extra round trip); those few
    // are read and applied below.
    let mut early: Vec<(i64, &str, &str, i64)> = Vec::new();
    for chunk in std_chunks(&sent) {
        let mut vals = Vec::with_capacity(chunk.len() * 3);
        for (id, _, wamid, at) in chunk {
            vals.extend([Val::I(*id), Val::S(wamid.to_string()), Val::I(*at)]);
        }
        let text = shaped(tx, chunk.len(), |n| {
            let rows = typed_values_list(n, &["BIGINT", "TEXT", "BIGINT"]);
            format!(
                "UPDATE outbox SET state = 'sent', wamid = v.column2, \
             status = CASE WHEN outbox.status_rank = 0 THEN 'sent' ELSE outbox.status END, \
             status_rank = CASE WHEN outbox.status_rank = 0 THEN 1 ELSE outbox.status_rank END, \
             status_at = COALESCE(outbox.status_at, v.column3), updated_at = v.column3 \
             FROM (VALUES {rows}) AS v WHERE outbox.id = v.column1 \
             RETURNING outbox.id, CAST(CASE WHEN EXISTS (SELECT 1 FROM inbox \
             WHERE inbox.kind = 'status' AND inbox.account = outbox.account \
             AND inbox.wamid = outbox.wamid) THEN 1 ELSE 0 END AS BIGINT)"
            )
        });
        let found = tx.query(&text, vals, &[Col::Int, Col::Int])?;
        for row in found.iter().filter(|r| crate::store::exec::int(r, 1) == 1) {
            let id = crate::store::exec::int(row, 0);
            early.extend(chunk.iter().filter(|(i, ..)| *i == id));
        }
    }
    let mut by_account: HashMap<&str, Vec<(i64, &str, i64)>> = HashMap::new();
    for (id, account, wamid, at) in &early {
        by_account
            .entry(account)
            .or_default()
            .push((*id, wamid, *at));
    }
    for (account, rows) in by_account {
        for chunk in std_chunks(&rows) {
            let text = shaped(tx, chunk.len(), |n| {
                format!(
                "SELECT wamid, status FROM inbox WHERE kind = 'status' AND account = $1 AND wamid IN ({})",
                in_list(n, 2)
            )
            });
            let mut vals = vec![Val::S(account.to_string())];
            vals.extend(chunk.iter().map(|(_, w, _)| Val::S(w.to_string())));
            let found = tx.query(&text, vals, &[Col::Text, Col::OptText])?;
            let mut best: HashMap<String, DeliveryStatus> = HashMap::new();
            for r in &found {
                let wamid = text_col(r, 0).to_string();
                let status = DeliveryStatus::parse(crate::store::exec::text(r, 1).unwrap_or(""));
                match best.get(&wamid) {
                    Some(b) if b.rank() >= status.rank() => {}
                    _ => {
                        best.insert(wamid, status);
                    }
                }
            }
            for (id, wamid, at) in chunk {
                if let Some(status) = best.get(*wamid).filter(|s| s.rank() > 1) {
                    let apply = StatusApply {
                        status: status.as_str().to_string(),
                        rank: status.rank(),
                        at_ms: *at,
                        outbox_id: Some(*id),
                        error_code: None,
                        error_detail: None,
                    };
                    apply_status(tx, account, wamid, &apply)?;
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn apply_outbox_update(
    tx: &mut dyn SyncTx,
    update: &OutboxUpdate,
) -> Result<(), StoreError> {
    match update {
        OutboxUpdate::Unsent { account, rows } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            update_by_ids(tx, &ids, &[Val::S(account.to_string())], |n| {
                format!(
                    "UPDATE outbox SET state = 'pending' WHERE account = $1 AND state = 'sending' AND id IN ({})",
                    in_list(n, 2)
                )
            })?;
        }
        OutboxUpdate::Cancelled { account, rows, at } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            let lead = [Val::I(*at), Val::S(account.to_string())];
            update_by_ids(tx, &ids, &lead, |n| {
                format!(
                    "UPDATE outbox SET state = 'cancelled', updated_at = $1 \
                     WHERE account = $2 AND state IN ('pending', 'sending') AND id IN ({})",
                    in_list(n, 3)
                )
            })?;
        }
        // Batched by `apply_outbox_updates`, which sends only the other kinds here.
        OutboxUpdate::Sent { .. } | OutboxUpdate::Sending { .. } => {}
        OutboxUpdate::Retrying {
            id,
            attempts,
            code,
            detail,
            at,
            ..
        } => {
            exec(tx,
                "UPDATE outbox SET attempts = $1, error_code = $2, error_detail = $3, updated_at = $4 WHERE id = $5",
                vec![Val::I(*attempts), Val::OptI(*code), Val::S(detail.clone()), Val::I(*at), Val::I(*id)],
            )
            ?;
        }
        OutboxUpdate::Failed {
            id,
            account,
            user_key,
            attempts,
            code,
            detail,
            at,
        } => {
            exec(tx,
                "UPDATE outbox SET state = 'failed', attempts = $1, error_code = $2, error_detail = $3, updated_at = $4 WHERE id = $5",
                vec![Val::I(*attempts), Val::OptI(*code), Val::S(detail.clone()), Val::I(*at), Val::I(*id)],
            )
            ?;
            insert_dead_letter(
                tx,
                &NewDeadLetter {
                    kind: "outbox_send",
                    account: Some(account.clone()),
                    user_key: Some(user_key.clone()),
                    ref_id: Some(*id),
                    reason: match code {
                        Some(c) => format!("Graph API error {c}: {detail}"),
                        None => detail.clone(),
                    },
                    raw: None,
                },
            )?;
        }
    }
    Ok(())
}

/// On a retry after an in-doubt commit, the step's own rows come back (see [`commit_steps`]).
pub(crate) const RECLAIM: &str = "DO UPDATE SET updated_at = excluded.updated_at \
     WHERE outbox.created_at = excluded.created_at AND outbox.state = 'pending'";

pub(crate) fn outbox_insert(rows: usize, conflict: &str) -> String {
    format!(
        "INSERT INTO outbox (account, user_key, idem_key, kind, message, reply_to, source_seq, state, created_at, updated_at, class) VALUES {} \
         ON CONFLICT (idem_key) {conflict} RETURNING id, idem_key",
        values_list(rows, 11, 1)
    )
}

impl Store {
    /// The highest outbox id so far (0 for none).
    pub async fn outbox_high_water(&self) -> Result<i64, StoreError> {
        let rows = self
            .fetch("SELECT COALESCE(MAX(id), 0) AS high FROM outbox", vec![])
            .await?;
        Ok(match rows.first() {
            Some(r) => r.try_get("high")?,
            None => 0,
        })
    }

    /// The account's outbound requests not yet settled, up to id `through`, oldest first.
    pub async fn open_outbox(
        &self,
        account: &str,
        through: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {OUTBOX_RECORD} FROM outbox \
                     WHERE account = $1 AND state IN ('pending', 'sending') AND id <= $2 ORDER BY id"
                ),
                vec![account.into(), Val::I(through)],
            )
            .await?;
        rows.iter().map(outbox_record).collect()
    }

    /// The rows of commits reported failed that landed after all, oldest first: for each
    /// (step time, idem keys), the rows with those keys created at that time and still
    /// `pending` (see `WriterHandle::commit_step`).
    pub async fn unconfirmed_outbox(
        &self,
        commits: &[(i64, Vec<String>)],
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut records = Vec::new();
        for (created_at, keys) in commits {
            let mut vals = vec![Val::I(*created_at)];
            vals.extend(keys.iter().map(|k| Val::S(k.clone())));
            let rows = self
                .fetch(
                    &format!(
                        "SELECT {OUTBOX_RECORD} FROM outbox WHERE created_at = $1 AND state = 'pending' \
                         AND idem_key IN ({}) ORDER BY id",
                        super::sql::in_list(keys.len(), 2)
                    ),
                    vals,
                )
                .await?;
            for r in &rows {
                records.push(outbox_record(r)?);
            }
        }
        Ok(records)
    }

    /// The ids, in order, of the outbox rows whose idem key is `prefix` (ending in `:`) and
    /// a number: the rows of the step that `prefix` names, whichever of its effects they were.
    pub async fn outbox_ids_of_step(&self, prefix: String) -> Result<Vec<i64>, StoreError> {
        let (from, to) = idem_key_range(prefix);
        let rows = self
            .fetch(
                "SELECT id, idem_key FROM outbox WHERE idem_key >= $1 AND idem_key < $2 ORDER BY id",
                vec![from.clone().into(), to.into()],
            )
            .await?;
        let mut ids = Vec::new();
        // Not a longer key of another step (`…:outa:b:0` is not request `a`'s).
        for row in &rows {
            let key: String = row.try_get(1)?;
            let rest = key.strip_prefix(from.as_str()).unwrap_or_default();
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                ids.push(row.try_get(0)?);
            }
        }
        Ok(ids)
    }

    /// The message JSON of an outbox row.
    pub async fn outbox_message(&self, id: i64) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT message FROM outbox WHERE id = $1 AND kind = 'message'",
                vec![Val::I(id)],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok(r.try_get("message")?))
            .transpose()
    }

    pub async fn outbox_state(&self, id: i64) -> Result<Option<OutboxState>, StoreError> {
        let rows = self
            .fetch("SELECT state FROM outbox WHERE id = $1", vec![Val::I(id)])
            .await?;
        rows.first().map(|r| stored(r, "state")).transpose()
    }
}

/// Steps' outbox rows; returns the ids of the rows inserted, by idem key. A row whose key is
/// taken is not written again and not returned, except with `reclaim` (see
/// `writer::commit_steps`).
pub(crate) fn insert_outbox(
    tx: &mut dyn SyncTx,
    rows: &[(&StepCommit, &NewOutboxRow)],
    reclaim: bool,
) -> Result<HashMap<String, i64>, StoreError> {
    // Each form its own plain function: a text is kept per function (see `shaped`).
    let build: fn(usize) -> String = if reclaim {
        |n| outbox_insert(n, RECLAIM)
    } else {
        |n| outbox_insert(n, "DO NOTHING")
    };
    let found = query_rows(tx, rows, build, &[Col::Int, Col::Text], |(s, o)| {
        [
            Val::from(&s.account),
            Val::from(&s.user_key),
            Val::S(o.idem_key.clone()),
            Val::S(o.kind.as_str().to_string()),
            Val::S(o.message_json.clone()),
            Val::OptS(o.reply_to.clone()),
            Val::OptI(o.source_seq),
            // Not yet handed to the HTTP client: the sender marks it `sending` (batched
            // with other sends' marks) just before the POST. After a crash a `pending` row
            // is sent at once; only a `sending` one may have reached Meta.
            Val::S(OutboxState::Pending.as_str().to_string()),
            Val::I(s.now),
            Val::I(s.now),
            Val::S(o.class.as_str().to_string()),
        ]
    })?;
    Ok(found
        .iter()
        .map(|row| (text_col(row, 1).to_string(), int(row, 0)))
        .collect())
}
