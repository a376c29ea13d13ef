//! One batch's statements: the ops grouped into multi-row writes per table.

use super::*;

/// Run a fixed statement (written with `$N` parameters).
pub(super) fn exec(
    tx: &mut dyn SyncTx,
    sql: &'static str,
    vals: Vec<Val>,
) -> Result<u64, StoreError> {
    let text = kept_text(tx, (sql.as_ptr() as usize, sql.len()), || sql.to_string());
    tx.exec(&text, vals)
}

/// The text of a multi-row statement for `rows` rows, `build(rows)`, as the connection runs it.
/// `build` is a plain function (a closure that captures nothing), so one function always makes
/// one text, and the text is kept per function and row count.
pub(super) fn shaped(tx: &dyn SyncTx, rows: usize, build: fn(usize) -> String) -> Rc<str> {
    kept_text(tx, (build as usize, rows), || build(rows))
}

thread_local! {
    /// Statement texts in the writer's connection's form, made once per writer thread: a batch
    /// looks a text up instead of formatting kilobytes of SQL and rewriting its parameters for
    /// every statement (~9 % of the writer thread in the shop benchmark).
    static TEXTS: RefCell<HashMap<(Dialect, usize, usize), Rc<str>>> = RefCell::new(HashMap::new());
}

pub(super) fn kept_text(
    tx: &dyn SyncTx,
    key: (usize, usize),
    build: impl FnOnce() -> String,
) -> Rc<str> {
    let key = (tx.dialect(), key.0, key.1);
    TEXTS.with(|texts| {
        if let Some(text) = texts.borrow().get(&key) {
            return text.clone();
        }
        let text: Rc<str> = for_connection(key.0, &build()).into();
        texts.borrow_mut().insert(key, text.clone());
        text
    })
}

pub(super) fn text_col(row: &Values, i: usize) -> &str {
    text(row, i).unwrap_or("")
}

/// Write `ops` in the open transaction `tx`, with multi-row statements per kind; returns one
/// result per operation.
/// Write `ops` in `tx`. `reclaim`: they are written again after their batch reported a
/// failure (see [`commit_steps`]).
pub(super) fn write_ops(
    tx: &mut dyn SyncTx,
    ops: &[WriteOp],
    reclaim: bool,
) -> Result<Vec<OpResult>, StoreError> {
    let (inserted, outbox_ids) = (|| {
        // 1. Inbox appends, all ops together.
        let appends: Vec<&Vec<NewInboxRow>> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Append { rows, .. } => Some(rows),
                _ => None,
            })
            .collect();
        let inserted = append_rows(tx, &appends)?;

        // 2. Steps.
        let steps: Vec<&StepCommit> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Step { commit, .. } => Some(commit.as_ref()),
                _ => None,
            })
            .collect();
        let outbox_ids = commit_steps(tx, &steps, reclaim)?;

        // 3. Dead letters (rare, one statement each) and outbox updates (batched).
        let mut updates = Vec::new();
        for op in ops {
            match op {
                WriteOp::DeadLetter { dl, inbox_dead, .. } => {
                    insert_dead_letter(tx, dl)?;
                    if let (TIMER_DEAD_LETTER, Some(timer)) = (dl.kind, dl.ref_id) {
                        exec(
                            tx,
                            "UPDATE timers SET state = 'dead' WHERE id = $1 AND state = 'pending'",
                            vec![Val::I(timer)],
                        )?;
                    }
                    if let Some(dead) = inbox_dead {
                        let sql = "UPDATE inbox SET state = 'dead', prev_seq = $1 WHERE seq = $2";
                        exec(tx, sql, vec![Val::I(dead.prev_seq), Val::I(dead.seq)])?;
                        // The history's head moves past it as a step's would.
                        let sql = "UPDATE conversations SET last_applied_seq = $1 \
                                   WHERE account = $2 AND user_key = $3 AND last_applied_seq < $1";
                        exec(
                            tx,
                            sql,
                            vec![
                                Val::I(dead.seq),
                                Val::OptS(dl.account.clone()),
                                Val::OptS(dl.user_key.clone()),
                            ],
                        )?;
                    }
                }
                WriteOp::Outbox { update, .. } => updates.push(update),
                _ => {}
            }
        }
        apply_outbox_updates(tx, &updates)?;
        // 4. SendGate state.
        let gate: Vec<&GateWrite> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Gate { write, .. } => Some(write),
                _ => None,
            })
            .collect();
        apply_gate_writes(tx, &gate)?;
        Ok::<_, StoreError>((inserted, outbox_ids))
    })()?;
    let mut results: Vec<OpResult> = Vec::with_capacity(ops.len());

    for op in ops {
        results.push(match op {
            WriteOp::Append { rows, .. } => OpResult::Append(
                rows.iter()
                    .map(|r| {
                        inserted
                            .get(&(r.account.as_str(), r.dedup_key.as_str()))
                            .copied()
                    })
                    .collect(),
            ),
            WriteOp::Step { commit, .. } => OpResult::Step(
                commit
                    .outbox
                    .iter()
                    .filter_map(|o| {
                        outbox_ids.get(o.idem_key.as_str()).map(|id| OutboxRecord {
                            id: *id,
                            account: commit.account.clone(),
                            user_key: commit.user_key.clone(),
                            kind: o.kind.to_string(),
                            message_json: o.message_json.clone(),
                            reply_to: o.reply_to.clone(),
                            state: "pending".into(),
                            updated_at: commit.now,
                            class: o.class,
                            turn: None,
                            campaign: crate::domain::campaign_of_idem_key(&o.idem_key),
                        })
                    })
                    .collect(),
            ),
            _ => OpResult::Unit,
        });
    }
    Ok(results)
}

/// Insert inbox rows; returns (account, dedup_key) → seq for the rows this call inserted.
/// A key repeated within the batch is inserted once, and only its first row gets the seq.
pub(super) fn append_rows<'a>(
    tx: &mut dyn SyncTx,
    appends: &[&'a Vec<NewInboxRow>],
) -> Result<HashMap<(&'a str, &'a str), i64>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&NewInboxRow> = appends
        .iter()
        .flat_map(|rows| rows.iter())
        .filter(|r| seen.insert((r.account.as_str(), r.dedup_key.as_str())))
        .collect();
    let mut inserted: HashMap<(&str, &str), i64> = HashMap::with_capacity(unique.len());
    let mut fresh_status: Vec<&NewInboxRow> = Vec::new();
    for chunk in std_chunks(&unique) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO inbox (account, user_key, kind, dedup_key, wamid, status, payload, received_at, state) VALUES {} \
             ON CONFLICT (account, dedup_key) DO NOTHING RETURNING seq, account, dedup_key",
            values_list(n, 9, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 9);
        for r in chunk {
            vals.push(Val::S(r.account.clone()));
            vals.push(Val::OptS(r.user_key.clone()));
            vals.push(Val::S(r.kind.to_string()));
            vals.push(Val::S(r.dedup_key.clone()));
            vals.push(Val::OptS(r.wamid.clone()));
            vals.push(Val::OptS(r.status.as_ref().map(|s| s.status.clone())));
            vals.push(Val::S(r.payload.clone()));
            vals.push(Val::I(r.received_at));
            vals.push(Val::S(r.state.to_string()));
        }
        let rows = tx.query(&text, vals, &[Col::Int, Col::Text, Col::Text])?;
        let mut by_key: HashMap<(&str, &str), i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            by_key.insert((text_col(row, 1), text_col(row, 2)), int(row, 0));
        }
        for r in chunk {
            if let Some(seq) = by_key.get(&(r.account.as_str(), r.dedup_key.as_str())) {
                inserted.insert((r.account.as_str(), r.dedup_key.as_str()), *seq);
                if r.status.is_some() {
                    fresh_status.push(r);
                }
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
            ("message", true) => "kind=\"message\",new=\"true\"",
            ("message", false) => "kind=\"message\",new=\"false\"",
            ("status", true) => "kind=\"status\",new=\"true\"",
            ("status", false) => "kind=\"status\",new=\"false\"",
            (_, true) => "kind=\"other\",new=\"true\"",
            (_, false) => "kind=\"other\",new=\"false\"",
        });
    }
    Ok(inserted)
}

/// Move an outbound message forward (never back) on a status webhook. Matches by our outbox
/// id (echoed callback data) or by wamid. A status for a send we have not recorded yet is
/// kept in the inbox and applied when the wamid is recorded.
pub(super) fn apply_status(
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
