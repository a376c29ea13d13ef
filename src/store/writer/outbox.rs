//! Dead letters and the outbox updates of the sender, batched.

use super::*;

pub(super) fn insert_dead_letter(
    tx: &mut dyn SyncTx,
    dl: &NewDeadLetter,
) -> Result<(), StoreError> {
    exec(tx,
        "INSERT INTO dead_letters (kind, account, user_key, ref_id, reason, raw, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            Val::S(dl.kind.to_string()),
            Val::OptS(dl.account.clone()),
            Val::OptS(dl.user_key.clone()),
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

/// One `UPDATE … id IN (…)` over `ids`, in the fixed row counts whose texts are kept: `lead`
/// binds the statement's first parameters, the ids follow (`build` numbers them from there).
fn update_by_ids(
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
pub(super) fn apply_outbox_updates(
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

pub(super) fn apply_outbox_update(
    tx: &mut dyn SyncTx,
    update: &OutboxUpdate,
) -> Result<(), StoreError> {
    match update {
        OutboxUpdate::Unsent { account, rows } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            update_by_ids(tx, &ids, &[Val::S(account.clone())], |n| {
                format!(
                    "UPDATE outbox SET state = 'pending' WHERE account = $1 AND state = 'sending' AND id IN ({})",
                    in_list(n, 2)
                )
            })?;
        }
        OutboxUpdate::Cancelled { account, rows, at } => {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            let lead = [Val::I(*at), Val::S(account.clone())];
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
