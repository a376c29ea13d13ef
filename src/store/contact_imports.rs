//! Contact CSV import jobs: made when an import starts, finished with its counts and per-line
//! errors, read by the admin API while it runs. Written through the pool.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::*;
use crate::domain::{AccountId, ImportState};

#[derive(Debug, Clone, Serialize)]
pub struct ImportJob {
    pub id: i64,
    pub dry_run: bool,
    pub state: ImportState,
    pub total: i64,
    pub valid: i64,
    pub applied: i64,
    pub errors: Value,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    pub async fn create_import_job(
        &self,
        account: &AccountId,
        dry_run: bool,
        now: i64,
    ) -> Result<i64, StoreError> {
        let rows = self
            .fetch(
                "INSERT INTO contact_imports (account, dry_run, state, created_at) VALUES ($1, $2, 'running', $3) RETURNING id",
                vec![account.into(), Val::I(dry_run.into()), Val::I(now)],
            )
            .await?;
        Ok(rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("no id returned".into()))?
            .try_get("id")?)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn finish_import_job(
        &self,
        id: i64,
        state: ImportState,
        total: i64,
        valid: i64,
        applied: i64,
        errors: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE contact_imports SET state = $2, total = $3, valid = $4, applied = $5, errors = $6, finished_at = $7 WHERE id = $1",
            vec![
                Val::I(id),
                state.as_str().into(),
                Val::I(total),
                Val::I(valid),
                Val::I(applied),
                Val::S(errors.to_string()),
                Val::I(now),
            ],
        )
        .await?;
        Ok(())
    }

    /// Imports left `running` by a process that stopped: failed, with the reason (one node
    /// runs an import; several nodes would have to own their jobs first).
    pub async fn interrupt_import_jobs(&self, now: i64) -> Result<u64, StoreError> {
        let errors = serde_json::json!([{
            "line": Value::Null,
            "error": "interrupted by a restart: nothing after the last applied line was imported; import the file again",
        }]);
        self.run(
            "UPDATE contact_imports SET state = 'failed', errors = $1, finished_at = $2 WHERE state = 'running'",
            vec![Val::S(errors.to_string()), Val::I(now)],
        )
        .await
    }

    pub async fn import_job(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<Option<ImportJob>, StoreError> {
        let rows = self
            .fetch(
                "SELECT id, dry_run, state, total, valid, applied, errors, created_at, finished_at FROM contact_imports \
                 WHERE id = $1 AND account = $2",
                vec![Val::I(id), account.into()],
            )
            .await?;
        rows.first()
            .map(|r| {
                let errors: String = r.try_get("errors")?;
                Ok(ImportJob {
                    id: r.try_get("id")?,
                    dry_run: r.try_get::<i64, _>("dry_run")? != 0,
                    state: stored(r, "state")?,
                    total: r.try_get("total")?,
                    valid: r.try_get("valid")?,
                    applied: r.try_get("applied")?,
                    errors: serde_json::from_str(&errors).unwrap_or(Value::Null),
                    created_at: r.try_get("created_at")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .transpose()
    }
}
