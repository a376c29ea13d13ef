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
