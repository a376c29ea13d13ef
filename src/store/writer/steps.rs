//! A conversation step's rows: state, records, outbox rows, timers.

use super::*;

/// On a retry after an in-doubt commit, the step's own rows come back (see [`commit_steps`]).
pub(super) const RECLAIM: &str = "DO UPDATE SET updated_at = excluded.updated_at \
     WHERE outbox.created_at = excluded.created_at AND outbox.state = 'pending'";

pub(super) fn outbox_insert(rows: usize, conflict: &str) -> String {
    format!(
        "INSERT INTO outbox (account, user_key, idem_key, kind, message, reply_to, source_seq, state, created_at, updated_at, class) VALUES {} \
         ON CONFLICT (idem_key) {conflict} RETURNING id, idem_key",
        values_list(rows, 11, 1)
    )
}

/// Write the steps' state and rows; returns the ids of the outbox rows by idem key.
///
/// An outbox row whose key is taken is not written again and not returned (the step ran
/// before and its sends were handed over then), except with `reclaim`: the step is written
/// again after its batch reported a failure, and a row with its key, its `created_at` and
/// still `pending` is this very step's, committed by that batch after all and never handed
/// to the sender; it is returned as if inserted now.
pub(super) fn commit_steps(
    tx: &mut dyn SyncTx,
    steps: &[&StepCommit],
    reclaim: bool,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut ids = HashMap::new();
    if steps.is_empty() {
        return Ok(ids);
    }
    for chunk in std_chunks(steps) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO conversations (account, user_key, state, last_inbound_at, last_applied_seq, created_at, updated_at) VALUES {} \
             ON CONFLICT (account, user_key) DO UPDATE SET state = excluded.state, last_inbound_at = excluded.last_inbound_at, \
             last_applied_seq = excluded.last_applied_seq, updated_at = excluded.updated_at \
             WHERE conversations.last_applied_seq <= excluded.last_applied_seq",
            values_list(n, 7, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 7);
        for s in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(s.state_json.clone()),
                Val::OptI(s.last_inbound_at),
                Val::I(s.last_applied_seq),
                Val::I(s.now),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }

    let contacts: Vec<(&StepCommit, &ContactUpsert)> = steps
        .iter()
        .filter_map(|s| s.contact.as_ref().map(|c| (*s, c)))
        .collect();
    for chunk in std_chunks(&contacts) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO contacts (account, user_key, wa_id, user_id, profile_name, first_seen_at, last_seen_at, tags, opted_out_at) VALUES {} \
             ON CONFLICT (account, user_key) DO UPDATE SET wa_id = COALESCE(excluded.wa_id, contacts.wa_id), \
             user_id = COALESCE(excluded.user_id, contacts.user_id), \
             profile_name = COALESCE(excluded.profile_name, contacts.profile_name), last_seen_at = excluded.last_seen_at, \
             tags = COALESCE(excluded.tags, contacts.tags), \
             opted_out_at = CASE WHEN excluded.opted_out_at IS NULL THEN contacts.opted_out_at \
             WHEN excluded.opted_out_at = 0 THEN NULL ELSE excluded.opted_out_at END",
            values_list(n, 9, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 9);
        for (s, c) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::OptS(c.wa_id.clone()),
                Val::OptS(c.user_id.clone()),
                Val::OptS(c.profile_name.clone()),
                Val::I(s.now),
                Val::I(s.now),
                Val::OptS(c.tags.clone()),
                // A first row never records an opt-in (0): NULL is the same.
                Val::OptI(c.opted_out_at),
            ]);
        }
        tx.exec(&text, vals)?;
    }

    let done: Vec<(i64, i64)> = steps
        .iter()
        .filter_map(|s| s.inbox_done.map(|seq| (seq, s.prev_seq)))
        .collect();
    for chunk in std_chunks(&done) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
                "UPDATE inbox SET state = 'done', prev_seq = v.column2 \
             FROM (VALUES {}) AS v WHERE inbox.seq = v.column1",
                typed_values_list(n, &["BIGINT", "BIGINT"])
            )
        });
        let vals = chunk
            .iter()
            .flat_map(|(seq, prev)| [Val::I(*seq), Val::I(*prev)])
            .collect();
        tx.exec(&text, vals)?;
    }
    let fired: Vec<i64> = steps.iter().filter_map(|s| s.timer_fired).collect();
    for chunk in std_chunks(&fired) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
                "UPDATE timers SET state = 'fired' WHERE id IN ({})",
                in_list(n, 1)
            )
        });
        tx.exec(&text, chunk.iter().map(|s| Val::I(*s)).collect())?;
    }

    let outbox: Vec<(&StepCommit, &NewOutboxRow)> = steps
        .iter()
        .flat_map(|s| s.outbox.iter().map(move |o| (*s, o)))
        .collect();
    for chunk in std_chunks(&outbox) {
        // Each form its own plain function: a text is kept per function (see `shaped`).
        let build: fn(usize) -> String = if reclaim {
            |n| outbox_insert(n, RECLAIM)
        } else {
            |n| outbox_insert(n, "DO NOTHING")
        };
        let text = shaped(tx, chunk.len(), build);
        let mut vals = Vec::with_capacity(chunk.len() * 11);
        for (s, o) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(o.idem_key.clone()),
                Val::S(o.kind.to_string()),
                Val::S(o.message_json.clone()),
                Val::OptS(o.reply_to.clone()),
                Val::OptI(o.source_seq),
                // Not yet handed to the HTTP client: the sender marks it `sending` (batched
                // with other sends' marks) just before the POST. After a crash a `pending` row
                // is sent at once; only a `sending` one may have reached Meta.
                Val::S("pending".into()),
                Val::I(s.now),
                Val::I(s.now),
                Val::S(o.class.as_str().to_string()),
            ]);
        }
        for row in tx.query(&text, vals, &[Col::Int, Col::Text])? {
            ids.insert(text_col(&row, 1).to_string(), int(&row, 0));
        }
    }

    let timers: Vec<(&StepCommit, &NewTimer)> = steps
        .iter()
        .flat_map(|s| s.timers.iter().map(move |t| (*s, t)))
        .collect();
    for chunk in std_chunks(&timers) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO timers (account, user_key, idem_key, name, payload, due_at, state, created_at) VALUES {} \
             ON CONFLICT (idem_key) DO NOTHING",
            values_list(n, 8, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 8);
        for (s, t) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(t.idem_key.clone()),
                Val::S(t.name.clone()),
                Val::S(t.payload.clone()),
                Val::I(t.due_at),
                Val::S("pending".into()),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    let bots: Vec<(&StepCommit, &crate::domain::BotSummary)> = steps
        .iter()
        .flat_map(|s| s.bot_records.iter().map(move |r| (*s, r)))
        .collect();
    for chunk in std_chunks(&bots) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost, cost_micros, response_ms, updated_at) VALUES {} \
             ON CONFLICT (account, user_key, bot, started_at) DO UPDATE SET status = excluded.status, turns = excluded.turns, \
             tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, cost = excluded.cost, cost_micros = excluded.cost_micros, \
             response_ms = excluded.response_ms, updated_at = excluded.updated_at",
            values_list(n, 12, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 12);
        for (s, r) in chunk {
            let micros = rust_decimal::prelude::ToPrimitive::to_i64(
                &(r.cost * rust_decimal::Decimal::from(1_000_000)).round(),
            )
            .unwrap_or(i64::MAX);
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.bot.clone()),
                Val::I(r.started_at),
                Val::S(r.status.as_str().to_string()),
                Val::I(i64::from(r.turns)),
                Val::I(r.tokens_in as i64),
                Val::I(r.tokens_out as i64),
                Val::S(r.cost.normalize().to_string()),
                Val::I(micros),
                Val::I(r.response_ms as i64),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    let records: Vec<(&StepCommit, &crate::domain::FlowRecord)> = steps
        .iter()
        .flat_map(|s| s.flow_records.iter().map(move |r| (*s, r)))
        .collect();
    for chunk in std_chunks(&records) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO flow_executions (account, user_key, flow_id, started_at, version, status, node, steps, updated_at, ended_at) VALUES {} \
             ON CONFLICT (account, user_key, flow_id, started_at) DO UPDATE SET status = excluded.status, node = excluded.node, \
             steps = flow_executions.steps + 1, updated_at = excluded.updated_at, ended_at = excluded.ended_at",
            values_list(n, 10, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 10);
        for (s, r) in chunk {
            let ended = matches!(r.status, "completed" | "failed").then_some(s.now);
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::S(r.version.clone()),
                Val::S(r.status.to_string()),
                Val::OptS(r.node.clone()),
                Val::I(1),
                Val::I(s.now),
                Val::OptI(ended),
            ]);
        }
        tx.exec(&text, vals)?;
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO flow_execution_steps (account, user_key, flow_id, started_at, node, status, at) VALUES {}",
            values_list(n, 7, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 7);
        for (s, r) in chunk {
            vals.extend([
                Val::S(s.account.clone()),
                Val::S(s.user_key.clone()),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::OptS(r.node.clone()),
                Val::S(r.status.to_string()),
                Val::I(s.now),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    Ok(ids)
}
