//! Outbound webhooks' deliveries and their attempts (the delivery log): what the sender
//! (`hooksend`) takes when due, records after each attempt, and what the admin API lists,
//! replays and recovers. Written through the pool, but for the sender's attempt records on
//! SQLite (through the writer); the events and endpoints they belong to are in
//! [`super::hooks`].

use std::borrow::Cow;

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::hooks::{DeliveryState, EventType};

/// A delivery due, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub attempts: i64,
    pub event_id: String,
    pub event_type: String,
    pub account: String,
    pub user_key: Option<String>,
    pub sequence: Option<i64>,
    pub payload: String,
    pub event_at: i64,
    pub endpoint_id: String,
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone)]
pub struct HookAttempt {
    pub id: i64,
    pub delivery_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub at: i64,
    pub latency_ms: i64,
    pub status: i64,
    pub body: String,
    pub error: Option<String>,
    pub delivery_state: DeliveryState,
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub endpoint_id: String,
    pub event_id: String,
    pub at: i64,
    pub latency_ms: i64,
    pub status: u16,
    pub body: String,
    pub error: Option<String>,
    /// The delivery's state after it, and its next attempt's time when pending.
    pub state: DeliveryState,
    pub next_at: i64,
    /// The endpoint's `failing_since` as read before the attempt: its failure record is
    /// written only when the attempt changes it (succeeded while failing, failed while not).
    pub endpoint_failing_since: Option<i64>,
}

impl Store {
    /// Deliveries due at `now` to active endpoints, oldest first. Each is leased until
    /// `lease_until` (its `next_at` moves there), so the next poll does not take it again
    /// while it is in flight; a crash leaves it due when the lease ends.
    /// The lease is written as the attempts' records are (`hook_write`: on SQLite in
    /// `writer`'s next group commit).
    pub async fn take_due_hook_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
        writer: &WriterHandle,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows = self
            .fetch(
                // The few due deliveries first (an index range in order, stopped at the
                // limit), then their events: never a join over the whole backlog.
                "SELECT d.id, d.attempts, d.endpoint_id, e.id AS event_id, e.event_type, e.account, e.user_key, e.sequence, e.payload, e.created_at \
                 FROM (SELECT id, attempts, endpoint_id, event_id, next_at FROM hook_deliveries \
                       WHERE state = 'pending' AND next_at <= $1 \
                       AND endpoint_id IN (SELECT id FROM hook_endpoints WHERE active = 1) \
                       ORDER BY state, next_at, id LIMIT $2) d \
                 JOIN hook_events e ON e.id = d.event_id ORDER BY d.next_at, d.id",
                vec![Val::I(now), Val::I(limit)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(DueDelivery {
                id: r.try_get("id")?,
                attempts: r.try_get("attempts")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                account: r.try_get("account")?,
                user_key: r.try_get("user_key")?,
                sequence: r.try_get("sequence")?,
                payload: r.try_get("payload")?,
                event_at: r.try_get("created_at")?,
                endpoint_id: r.try_get("endpoint_id")?,
            });
        }
        if !out.is_empty() {
            let ids: Vec<String> = out.iter().map(|d| d.id.to_string()).collect();
            // Ids are integers read from the store: safe to inline.
            let lease = format!(
                "UPDATE hook_deliveries SET next_at = $1 WHERE state = 'pending' AND id IN ({})",
                ids.join(",")
            );
            self.hook_write(vec![(lease.into(), vec![Val::I(lease_until)])], writer)
                .await?;
        }
        Ok(out)
    }

    /// Record attempts, move their deliveries and their endpoints' failure records, all in
    /// one transaction (the sender records each attempt as it ends: one write transaction
    /// per delivery where there were two, the failure record only when it changes).
    pub async fn record_hook_attempts(
        &self,
        records: &[AttemptRecord],
        writer: &WriterHandle,
    ) -> Result<(), StoreError> {
        let statements = records.iter().flat_map(attempt_statements).collect();
        self.hook_write(statements, writer).await
    }

    /// The webhook sender's writes, in one transaction. On SQLite in `writer`'s next group
    /// commit ([`WriterHandle::hook_writes`]): a pool transaction there waits for the
    /// database's one write lock behind the conversations' batches. On PostgreSQL through the
    /// pool: its rows lock one by one, and these rows are no conversation writer's.
    async fn hook_write(
        &self,
        statements: Vec<(Cow<'static, str>, Vec<Val>)>,
        writer: &WriterHandle,
    ) -> Result<(), StoreError> {
        if statements.is_empty() {
            return Ok(());
        }
        match self.dialect() {
            Dialect::Sqlite => writer.hook_writes(statements).await,
            // One statement (a lease) is its own transaction: no BEGIN and COMMIT round trips.
            Dialect::Postgres if statements.len() == 1 => {
                let (sql, vals) = statements.into_iter().next().unwrap_or_default();
                self.run(&sql, vals).await.map(|_| ())
            }
            Dialect::Postgres => {
                let mut tx = self.pool().begin().await?;
                for (sql, vals) in statements {
                    self.tx_run(&mut tx, &sql, vals).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// Disable an endpoint, fail its pending deliveries and tell the others that want to
    /// know (`endpoint.disabled`), in one transaction; whether it was active.
    pub async fn disable_hook_endpoint(
        &self,
        ep: &HookEndpoint,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = self
            .tx_run(
                &mut tx,
                "UPDATE hook_endpoints SET active = 0, disabled_reason = $1, updated_at = $2 WHERE id = $3 AND active = 1",
                vec![reason.into(), Val::I(now), ep.id.as_str().into()],
            )
            .await?;
        if n > 0 {
            // Its pending deliveries fail now rather than wait for ever: the business
            // recovers them (`POST /webhooks/{id}/recover`) once the endpoint works again.
            self.tx_run(
                &mut tx,
                "UPDATE hook_deliveries SET state = 'failed', updated_at = $2 WHERE endpoint_id = $1 AND state = 'pending'",
                vec![ep.id.as_str().into(), Val::I(now)],
            )
            .await?;
            let account = ep.account.clone().unwrap_or_default();
            let endpoints: Vec<String> = self
                .hook_subs()
                .endpoints_for(&account, EventType::EndpointDisabled)
                .into_iter()
                .filter(|id| *id != ep.id)
                .collect();
            let e = NewHookEvent {
                account,
                user_key: None,
                event_type: EventType::EndpointDisabled,
                data: serde_json::json!({"endpoint_id": ep.id, "reason": reason}),
                dedup_key: format!("disabled:{}:{now}", ep.id),
                at: now,
            };
            self.tx_hook_event_to(&mut tx, &e, &endpoints).await?;
        }
        tx.commit().await?;
        self.reload_hook_subs().await?;
        Ok(n > 0)
    }

    /// The delivery log of an endpoint, newest first, before attempt `before`.
    pub async fn hook_attempts(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HookAttempt>, StoreError> {
        let rows = self
            .fetch(
                "SELECT a.id, a.delivery_id, a.event_id, e.event_type, a.at, a.latency_ms, a.status, a.body, a.error, d.state \
                 FROM hook_attempts a JOIN hook_events e ON e.id = a.event_id JOIN hook_deliveries d ON d.id = a.delivery_id \
                 WHERE a.endpoint_id = $1 AND a.id < $2 ORDER BY a.id DESC LIMIT $3",
                vec![endpoint.into(), Val::I(before.unwrap_or(i64::MAX)), Val::I(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(HookAttempt {
                    id: r.try_get("id")?,
                    delivery_id: r.try_get("delivery_id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    at: r.try_get("at")?,
                    latency_ms: r.try_get("latency_ms")?,
                    status: r.try_get("status")?,
                    body: r.try_get("body")?,
                    error: r.try_get("error")?,
                    delivery_state: state.parse().map_err(|e: crate::hooks::UnknownEvent| {
                        StoreError::Corrupt(e.to_string())
                    })?,
                })
            })
            .collect()
    }

    /// Send a delivery of `endpoint` again from the start of the schedule; whether it exists.
    pub async fn replay_hook_delivery(
        &self,
        endpoint: &str,
        delivery: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "UPDATE hook_deliveries SET state = 'pending', attempts = 0, next_at = $1, updated_at = $1 WHERE id = $2 AND endpoint_id = $3",
                vec![Val::I(now), Val::I(delivery), endpoint.into()],
            )
            .await?
            > 0)
    }

    /// Send again every failed or exhausted delivery of `endpoint` whose event came at or
    /// after `since`; how many.
    pub async fn recover_hook_deliveries(
        &self,
        endpoint: &str,
        since: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "UPDATE hook_deliveries SET state = 'pending', attempts = 0, next_at = $1, updated_at = $1 \
             WHERE endpoint_id = $2 AND state IN ('failed', 'exhausted') AND created_at >= $3",
            vec![Val::I(now), endpoint.into(), Val::I(since)],
        )
        .await
    }
}

/// The statements that record attempt `a`: the attempt row, its delivery's new state, and its
/// endpoint's failure record when the attempt changes it (succeeded while failing, failed
/// while not).
fn attempt_statements(a: &AttemptRecord) -> Vec<(Cow<'static, str>, Vec<Val>)> {
    let mut out: Vec<(Cow<'static, str>, Vec<Val>)> = vec![
        (
            "INSERT INTO hook_attempts (delivery_id, endpoint_id, event_id, at, latency_ms, status, body, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                .into(),
            vec![
                Val::I(a.delivery_id),
                a.endpoint_id.as_str().into(),
                a.event_id.as_str().into(),
                Val::I(a.at),
                Val::I(a.latency_ms),
                Val::I(i64::from(a.status)),
                a.body.as_str().into(),
                Val::OptS(a.error.clone()),
            ],
        ),
        (
            "UPDATE hook_deliveries SET state = $1, attempts = attempts + 1, next_at = $2, last_status = $3, updated_at = $4 WHERE id = $5"
                .into(),
            vec![
                a.state.as_str().into(),
                Val::I(a.next_at),
                Val::I(i64::from(a.status)),
                Val::I(a.at),
                Val::I(a.delivery_id),
            ],
        ),
    ];
    match (a.state == DeliveryState::Succeeded, a.endpoint_failing_since) {
        (true, Some(_)) => out.push((
            "UPDATE hook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL"
                .into(),
            vec![a.endpoint_id.as_str().into()],
        )),
        (false, None) => out.push((
            "UPDATE hook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL"
                .into(),
            vec![a.endpoint_id.as_str().into(), Val::I(a.at)],
        )),
        _ => {}
    }
    out
}
