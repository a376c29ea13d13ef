//! The configured accounts (written at start-up) and their counters.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::config::AccountSettings;

impl Store {
    /// Record the configured accounts (start-up).
    pub async fn upsert_accounts(&self, accounts: &[AccountSettings]) -> Result<(), StoreError> {
        let now = super::now_ms();
        for a in accounts {
            self.run(
                "INSERT INTO accounts (phone_number_id, display_phone_number, waba_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
                 display_phone_number = excluded.display_phone_number, waba_id = excluded.waba_id, updated_at = excluded.updated_at",
                vec![
                    a.phone_number_id.as_str().into(),
                    a.display_phone_number.as_str().into(),
                    a.waba_id.as_str().into(),
                    Val::I(now),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Counts for the admin API: (conversations, contacts, open outbox rows) of an account.
    pub async fn account_counts(&self, account: &str) -> Result<(i64, i64, i64), StoreError> {
        let one = |text: &'static str| async move {
            let rows = self.fetch(text, vec![account.into()]).await?;
            Ok::<i64, StoreError>(
                rows.first()
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?
                    .unwrap_or(0),
            )
        };
        Ok((
            one("SELECT COUNT(*) FROM conversations WHERE account = $1").await?,
            one("SELECT COUNT(*) FROM contacts WHERE account = $1").await?,
            one("SELECT COUNT(*) FROM outbox WHERE account = $1 AND state IN ('pending', 'sending')").await?,
        ))
    }
}

/// What an account's health shows of its traffic, read by indexed queries (the open
/// replies' partial index; the newest rows by primary key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountTraffic {
    /// Replies and messages not yet accepted by Meta (`pending`, `sending`).
    pub backlog: i64,
    /// When the oldest of them was committed.
    pub oldest_unsent_at: Option<i64>,
    /// When the newest inbound message arrived.
    pub last_inbound_at: Option<i64>,
    /// When the newest message Meta accepted was accepted.
    pub last_outbound_at: Option<i64>,
}

impl Store {
    pub async fn account_traffic(&self, account: &str) -> Result<AccountTraffic, StoreError> {
        let open = self
            .fetch(
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
                 WHERE account = $1 AND state IN ('pending', 'sending')",
                vec![Val::S(account.into())],
            )
            .await?;
        let (backlog, oldest_unsent_at) = match open.first() {
            Some(r) => (
                r.try_get::<i64, _>("n")?,
                r.try_get::<Option<i64>, _>("oldest")?,
            ),
            None => (0, None),
        };
        let newest = |sql: &'static str| async move {
            let rows = self.fetch(sql, vec![Val::S(account.into())]).await?;
            rows.first()
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()
                .map_err(StoreError::from)
        };
        Ok(AccountTraffic {
            backlog,
            oldest_unsent_at,
            last_inbound_at: newest(
                "SELECT received_at FROM inbox WHERE account = $1 AND kind = 'message' ORDER BY seq DESC LIMIT 1",
            )
            .await?,
            last_outbound_at: newest(
                "SELECT updated_at FROM outbox WHERE account = $1 AND state = 'sent' ORDER BY id DESC LIMIT 1",
            )
            .await?,
        })
    }
}
