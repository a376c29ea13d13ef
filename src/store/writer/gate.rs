//! The SendGate's durable writes: daily blocks, tier reaches, account control.

use super::*;

/// SendGate writes: reaches (the frequent kind) as multi-row upserts, the rest one by one.
pub(super) fn apply_gate_writes(
    tx: &mut dyn SyncTx,
    writes: &[&GateWrite],
) -> Result<(), StoreError> {
    // One row per (waba, user): PostgreSQL refuses to upsert the same key twice in a statement.
    let mut reaches: HashMap<(&str, &str), (&str, i64)> = HashMap::new();
    for w in writes {
        match w {
            GateWrite::TierReach {
                waba,
                user_key,
                account,
                at,
            } => {
                let e = reaches
                    .entry((waba.as_str(), user_key.as_str()))
                    .or_insert((account.as_str(), *at));
                if *at >= e.1 {
                    *e = (account.as_str(), *at);
                }
            }
            GateWrite::TierRelease {
                waba,
                user_key,
                at,
                previous,
            } => {
                if reaches
                    .get(&(waba.as_str(), user_key.as_str()))
                    .is_some_and(|r| r.1 == *at)
                {
                    reaches.remove(&(waba.as_str(), user_key.as_str()));
                }
                match previous {
                    None => exec(
                        tx,
                        "DELETE FROM tier_reach WHERE waba = $1 AND user_key = $2 AND reached_at = $3",
                        vec![waba.as_str().into(), user_key.as_str().into(), Val::I(*at)],
                    )?,
                    Some(prev) => exec(
                        tx,
                        "UPDATE tier_reach SET reached_at = $1 WHERE waba = $2 AND user_key = $3 AND reached_at = $4",
                        vec![
                            Val::I(*prev),
                            waba.as_str().into(),
                            user_key.as_str().into(),
                            Val::I(*at),
                        ],
                    )?,
                };
            }
            GateWrite::Daily {
                account,
                day,
                reserved,
                used,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO send_daily_usage (account, day, reserved, used, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (account, day) DO UPDATE SET reserved = excluded.reserved, used = excluded.used, \
                     updated_at = excluded.updated_at",
                    vec![
                        account.as_str().into(),
                        day.as_str().into(),
                        Val::I(*reserved),
                        Val::I(*used),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Control {
                account,
                state_json,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO account_gate (account, state, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (account) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    vec![
                        account.as_str().into(),
                        state_json.as_str().into(),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Unreachable {
                account,
                user_key,
                code,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO unreachable_contacts (account, user_key, code, at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account, user_key) DO UPDATE SET code = excluded.code, at = excluded.at",
                    vec![
                        account.as_str().into(),
                        user_key.as_str().into(),
                        Val::OptI(*code),
                        Val::I(*at),
                    ],
                )?;
            }
            GateWrite::Template {
                waba,
                name,
                language,
                status,
                reason,
                at,
            } => {
                exec(
                    tx,
                    "INSERT INTO template_states (waba, name, language, status, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (waba, name, language) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                     updated_at = excluded.updated_at",
                    vec![
                        waba.as_str().into(),
                        name.as_str().into(),
                        language.as_str().into(),
                        status.as_str().into(),
                        Val::OptS(reason.clone()),
                        Val::I(*at),
                    ],
                )?;
            }
        }
    }
    let reaches: Vec<(&str, &str, &str, i64)> = reaches
        .into_iter()
        .map(|((waba, user), (account, at))| (waba, user, account, at))
        .collect();
    for chunk in std_chunks(&reaches) {
        let text = shaped(tx, chunk.len(), |n| {
            format!(
            "INSERT INTO tier_reach (waba, user_key, account, reached_at) VALUES {} \
             ON CONFLICT (waba, user_key) DO UPDATE SET account = excluded.account, reached_at = excluded.reached_at",
            values_list(n, 4, 1)
        )
        });
        let mut vals = Vec::with_capacity(chunk.len() * 4);
        for (waba, user, account, at) in chunk {
            vals.extend([
                Val::S(waba.to_string()),
                Val::S(user.to_string()),
                Val::S(account.to_string()),
                Val::I(*at),
            ]);
        }
        tx.exec(&text, vals)?;
    }
    Ok(())
}
