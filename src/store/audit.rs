//! The admin API's audit log: one row per mutating call, append-only (there is no update or
//! delete here, and the table's triggers refuse both). Written through the pool.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, KeyRef, Role};

const COLUMNS: &str =
    "id, at, key_id, role, action, resource, account, status, ip, user_agent, details";

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub key_id: KeyRef,
    pub role: Role,
    /// Method and route template: "POST /keys".
    pub action: String,
    /// The concrete path.
    pub resource: String,
    pub account: Option<AccountId>,
    pub status: i64,
    pub ip: String,
    pub user_agent: Option<String>,
    /// A small JSON object (ids, never a request body).
    pub details: String,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub key_id: Option<KeyRef>,
    pub action: Option<&'a str>,
    pub account: Option<&'a AccountId>,
    /// At or after (unix ms).
    pub since: Option<i64>,
}

fn audit_of(r: &sqlx::any::AnyRow) -> Result<AuditEntry, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        key_id: r
            .try_get::<String, _>("key_id")?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("audit_log.key_id: {e}")))?,
        role: role
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("audit_log.role: {e}")))?,
        action: r.try_get("action")?,
        resource: r.try_get("resource")?,
        account: r
            .try_get::<Option<String>, _>("account")?
            .map(|a| AccountId::from(a.as_str())),
        status: r.try_get("status")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        details: r.try_get("details")?,
    })
}

impl Store {
    /// Append one row (its `id` is ignored).
    pub async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO audit_log (at, key_id, role, action, resource, account, status, ip, user_agent, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            vec![
                Val::I(e.at),
                e.key_id.to_string().into(),
                e.role.as_str().into(),
                e.action.as_str().into(),
                e.resource.as_str().into(),
                Val::OptS(e.account.as_ref().map(|a| a.as_str().to_string())),
                Val::I(e.status),
                e.ip.as_str().into(),
                Val::OptS(e.user_agent.clone()),
                e.details.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// A page of the log, newest first, those before `before` (an id).
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter<'_>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE id < $1 AND ($2 = '' OR key_id = $2) \
                     AND ($3 = '' OR action = $3) AND ($4 = '' OR account = $4) AND at >= $5 \
                     ORDER BY id DESC LIMIT $6"
                ),
                vec![
                    Val::I(before.unwrap_or(i64::MAX)),
                    filter
                        .key_id
                        .map_or(String::new(), |k| k.to_string())
                        .into(),
                    filter.action.unwrap_or("").into(),
                    filter.account.map_or("", AccountId::as_str).into(),
                    Val::I(filter.since.unwrap_or(i64::MIN)),
                    Val::I(limit.max(0)),
                ],
            )
            .await?;
        rows.iter().map(audit_of).collect()
    }
}
