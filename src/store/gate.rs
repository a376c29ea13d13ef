//! The SendGate's durable state: daily usage, the messaging tier's reach, the account's
//! control (paused, halted), unreachable contacts and template states.

use std::collections::HashMap;

use sqlx::Row;

use super::exec::{exec, exec_rows, SyncTx};
use super::sql::{values_list, Val};
use super::*;
use crate::domain::{AccountId, UserKey};

/// SendGate state that must survive a restart.
#[derive(Debug, Clone)]
pub enum GateWrite {
    /// The account may send up to `reserved` messages on `day` (set exactly).
    Daily {
        account: AccountId,
        day: String,
        reserved: i64,
        used: i64,
        at: i64,
    },
    /// `user_key` was reached with a business-initiated message (before the send).
    TierReach {
        waba: String,
        user_key: UserKey,
        account: AccountId,
        at: i64,
    },
    /// Undo a reach Meta refused: back to `previous`, or gone.
    TierRelease {
        waba: String,
        user_key: UserKey,
        at: i64,
        previous: Option<i64>,
    },
    /// The account's health, halt and pause (JSON of `sendgate::Control`), with the
    /// webhook events of the move (`account.health`, `account.halted`).
    Control {
        account: AccountId,
        state_json: String,
        at: i64,
        events: Vec<super::NewHookEvent>,
    },
    Unreachable {
        account: AccountId,
        user_key: UserKey,
        code: Option<i64>,
        at: i64,
    },
    Template {
        waba: String,
        name: String,
        language: String,
        status: String,
        reason: Option<String>,
        at: i64,
    },
}

/// SendGate writes: reaches (the frequent kind) as multi-row upserts, the rest one by one.
pub(crate) fn apply_gate_writes(
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
                events,
            } => {
                super::hooks::write_hook_events(tx, events)?;
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
    exec_rows(
        tx,
        &reaches,
        |n| {
            format!(
                "INSERT INTO tier_reach (waba, user_key, account, reached_at) VALUES {} \
                 ON CONFLICT (waba, user_key) DO UPDATE SET account = excluded.account, reached_at = excluded.reached_at",
                values_list(n, 4, 1)
            )
        },
        |(waba, user, account, at)| {
            [
                Val::S(waba.to_string()),
                Val::S(user.to_string()),
                Val::S(account.to_string()),
                Val::I(*at),
            ]
        },
    )
}

impl Store {
    /// SendGate: what was reserved of `day` (`reserved`, `used`), if anything.
    pub async fn daily_usage(
        &self,
        account: &str,
        day: &str,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT reserved, used FROM send_daily_usage WHERE account = $1 AND day = $2",
                vec![account.into(), day.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok((r.try_get("reserved")?, r.try_get("used")?)))
            .transpose()
    }

    /// SendGate: users of `waba` reached since `since` (business-initiated), with the time.
    pub async fn tier_reach(
        &self,
        waba: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, reached_at FROM tier_reach WHERE waba = $1 AND reached_at > $2",
                vec![waba.into(), Val::I(since)],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("user_key")?, r.try_get("reached_at")?)))
            .collect()
    }

    /// SendGate: the stored control (JSON) of an account.
    pub async fn account_gate(&self, account: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT state FROM account_gate WHERE account = $1",
                vec![account.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok(r.try_get("state")?))
            .transpose()
    }

    /// SendGate: contacts marked unreachable since `since`.
    pub async fn unreachable_contacts(
        &self,
        account: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, at FROM unreachable_contacts WHERE account = $1 AND at > $2",
                vec![account.into(), Val::I(since)],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("user_key")?, r.try_get("at")?)))
            .collect()
    }

    /// Templates of `waba` whose last state is not APPROVED: (name, language, status, reason).
    pub async fn template_problems(
        &self,
        waba: &str,
    ) -> Result<Vec<(String, String, String, Option<String>)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT name, language, status, reason FROM template_states WHERE waba = $1 AND status <> 'APPROVED' ORDER BY name, language",
                vec![waba.into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("language")?,
                    r.try_get("status")?,
                    r.try_get("reason")?,
                ))
            })
            .collect()
    }
}
