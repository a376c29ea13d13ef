//! One batch's statements: the ops grouped into multi-row writes per table.

use super::*;

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
                                Val::OptS(dl.account.clone().map(Into::into)),
                                Val::OptS(dl.user_key.as_deref().map(str::to_string)),
                            ],
                        )?;
                    }
                }
                WriteOp::Outbox { update, .. } => updates.push(update),
                WriteOp::HookWrites { statements, .. } => {
                    for (sql, vals) in statements {
                        let text = super::super::exec::for_connection(tx.dialect(), sql);
                        tx.exec(&text, vals.clone())?;
                    }
                }
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
        // 5. Events, after every other row (see `hooks::NEXT_SEQUENCE`): each message's
        // before its step's.
        let inbox_events = super::super::hooks::inbox_events(&appends, &inserted);
        super::super::hooks::write_hook_events(
            tx,
            inbox_events
                .iter()
                .chain(steps.iter().flat_map(|s| s.hook_events.iter())),
        )?;
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
                            kind: o.kind,
                            message_json: o.message_json.clone(),
                            reply_to: o.reply_to.clone(),
                            state: crate::domain::OutboxState::Pending,
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
