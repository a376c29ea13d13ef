//! Admin API keys: their hashes (never their text), role, account scope, expiry, use and
//! revocation. Written through the pool (a key is made or revoked rarely; its last use is
//! written at most once a minute).

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, KeyRef, Role};

const COLUMNS: &str = "id, name, role, account, prefix, hash, created_by, expires_at, created_at, \
                       last_used_at, revoked_at";

/// A key as stored: its hash, never its text.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// The one account it reaches; None: every account.
    pub account: Option<AccountId>,
    /// The first hex digits of its secret (not secret: shown to tell keys apart).
    pub prefix: String,
    /// SHA-256 of the key's text, hex.
    pub hash: String,
    pub created_by: KeyRef,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key to record (its hash made by the caller).
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub name: &'a str,
    pub role: Role,
    pub account: Option<&'a AccountId>,
    pub prefix: &'a str,
    pub hash: &'a str,
    pub created_by: KeyRef,
    pub expires_at: Option<i64>,
}

fn api_key_of(r: &sqlx::any::AnyRow) -> Result<ApiKey, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("api_keys.role: {e}")))?,
        account: r
            .try_get::<Option<String>, _>("account")?
            .map(|a| AccountId::from(a.as_str())),
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        created_by: r
            .try_get::<String, _>("created_by")?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("api_keys.created_by: {e}")))?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Record a new key; its id.
    pub async fn create_api_key(&self, key: &NewApiKey<'_>, now: i64) -> Result<i64, StoreError> {
        self.run(
            "INSERT INTO api_keys (name, role, account, prefix, hash, created_by, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                key.name.into(),
                key.role.as_str().into(),
                Val::OptS(key.account.map(|a| a.as_str().to_string())),
                key.prefix.into(),
                key.hash.into(),
                key.created_by.to_string().into(),
                Val::OptI(key.expires_at),
                Val::I(now),
            ],
        )
        .await?;
        let rows = self
            .fetch(
                "SELECT id FROM api_keys WHERE hash = $1",
                vec![key.hash.into()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("a new api key vanished".into()))?;
        Ok(row.try_get("id")?)
    }

    /// The keys whose secret starts with `prefix` (revoked and expired ones too).
    pub async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = $1"),
                vec![prefix.into()],
            )
            .await?;
        rows.iter().map(api_key_of).collect()
    }

    pub async fn api_key(&self, id: i64) -> Result<Option<ApiKey>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"),
                vec![Val::I(id)],
            )
            .await?;
        rows.first().map(api_key_of).transpose()
    }

    /// A page of keys, newest first, those before `before` (an id); only those scoped to
    /// `account` when given.
    pub async fn api_keys(
        &self,
        account: Option<&AccountId>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE id < $1 AND ($2 = '' OR account = $2) \
                     ORDER BY id DESC LIMIT $3"
                ),
                vec![
                    Val::I(before.unwrap_or(i64::MAX)),
                    account.map_or("", AccountId::as_str).into(),
                    Val::I(limit.max(0)),
                ],
            )
            .await?;
        rows.iter().map(api_key_of).collect()
    }

    /// Revoke a key (a revoked one keeps its first revocation time); whether it was in force.
    pub async fn revoke_api_key(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let n = self
            .run(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                vec![Val::I(now), Val::I(id)],
            )
            .await?;
        Ok(n > 0)
    }

    /// Note a key's use (the caller writes it at most once a minute per key).
    pub async fn touch_api_key(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2",
            vec![Val::I(now), Val::I(id)],
        )
        .await?;
        Ok(())
    }
}
