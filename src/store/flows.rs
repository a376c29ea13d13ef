//! Flow versions as loaded, flow executions and their steps, chatbot sessions.

use sqlx::Row;

use super::exec::{exec_rows, SyncTx};
use super::sql::{values_list, Val};
use super::*;

impl Store {
    /// Per bot: (bot, status, sessions, answers, response ms, cost in millionths).
    pub async fn bot_counters(
        &self,
    ) -> Result<Vec<(String, String, i64, i64, i64, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT bot, status, COUNT(*) AS n, CAST(SUM(turns) AS BIGINT) AS turns, CAST(SUM(response_ms) AS BIGINT) AS ms, \
                 CAST(SUM(cost_micros) AS BIGINT) AS micros \
                 FROM chatbot_sessions GROUP BY bot, status",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("bot")?,
                    r.try_get("status")?,
                    r.try_get("n")?,
                    r.try_get("turns")?,
                    r.try_get("ms")?,
                    r.try_get("micros")?,
                ))
            })
            .collect()
    }

    /// Keep the source of each flow version that goes live (once per version).
    pub async fn save_flow_versions(
        &self,
        versions: &[(String, String, std::sync::Arc<str>)],
    ) -> Result<(), StoreError> {
        let now = super::now_ms();
        for (id, version, source) in versions {
            self.run(
                "INSERT INTO flow_versions (flow_id, version, source, first_loaded_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (flow_id, version) DO NOTHING",
                vec![
                    id.as_str().into(),
                    version.as_str().into(),
                    source.as_ref().into(),
                    Val::I(now),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// (id, version, source) of the flow versions that unfinished sessions run.
    pub async fn flow_versions_in_use(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT v.flow_id, v.version, v.source FROM flow_versions v WHERE EXISTS \
                 (SELECT 1 FROM flow_executions e WHERE e.flow_id = v.flow_id AND e.version = v.version \
                  AND e.status IN ('running', 'paused'))",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("flow_id")?,
                    r.try_get("version")?,
                    r.try_get("source")?,
                ))
            })
            .collect()
    }

    /// Flow sessions per (flow, status), for the admin API's counters.
    pub async fn flow_execution_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT flow_id, status, COUNT(*) AS n FROM flow_executions GROUP BY flow_id, status",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("flow_id")?, r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

/// Steps' chatbot sessions: one row per session, its counters as the step left them.
pub(crate) fn record_bot_sessions(
    tx: &mut dyn SyncTx,
    sessions: &[(&StepCommit, &crate::domain::BotSummary)],
) -> Result<(), StoreError> {
    exec_rows(
        tx,
        sessions,
        |n| {
            format!(
                "INSERT INTO chatbot_sessions (account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost, cost_micros, response_ms, updated_at) VALUES {} \
                 ON CONFLICT (account, user_key, bot, started_at) DO UPDATE SET status = excluded.status, turns = excluded.turns, \
                 tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, cost = excluded.cost, cost_micros = excluded.cost_micros, \
                 response_ms = excluded.response_ms, updated_at = excluded.updated_at",
                values_list(n, 12, 1)
            )
        },
        |(s, r)| {
            let micros = rust_decimal::prelude::ToPrimitive::to_i64(
                &(r.cost * rust_decimal::Decimal::from(1_000_000)).round(),
            )
            .unwrap_or(i64::MAX);
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
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
            ]
        },
    )
}

/// Steps' flow executions (one row per run, its step count and where it stands) and their
/// steps (one row each).
pub(crate) fn record_flow_executions(
    tx: &mut dyn SyncTx,
    records: &[(&StepCommit, &crate::domain::FlowRecord)],
) -> Result<(), StoreError> {
    exec_rows(
        tx,
        records,
        |n| {
            format!(
                "INSERT INTO flow_executions (account, user_key, flow_id, started_at, version, status, node, steps, updated_at, ended_at) VALUES {} \
                 ON CONFLICT (account, user_key, flow_id, started_at) DO UPDATE SET status = excluded.status, node = excluded.node, \
                 steps = flow_executions.steps + 1, updated_at = excluded.updated_at, ended_at = excluded.ended_at",
                values_list(n, 10, 1)
            )
        },
        |(s, r)| {
            let ended = r.status.is_ended().then_some(s.now);
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::S(r.version.clone()),
                Val::S(r.status.as_str().to_string()),
                Val::OptS(r.node.clone()),
                Val::I(1),
                Val::I(s.now),
                Val::OptI(ended),
            ]
        },
    )?;
    exec_rows(
        tx,
        records,
        |n| {
            format!(
                "INSERT INTO flow_execution_steps (account, user_key, flow_id, started_at, node, status, at) VALUES {}",
                values_list(n, 7, 1)
            )
        },
        |(s, r)| {
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
                Val::S(r.flow_id.clone()),
                Val::I(r.started_at),
                Val::OptS(r.node.clone()),
                Val::S(r.status.as_str().to_string()),
                Val::I(s.now),
            ]
        },
    )
}
