//! The messages an account's owner was sent (`owner_wa_id`), by request id: a retry of one
//! finds it here and sends nothing.

use super::sql::Val;
use super::*;
use crate::domain::AccountId;

impl Store {
    /// Whether the owner's message `request_id` was handed to their conversation already.
    pub async fn owner_notice_given(
        &self,
        account: &AccountId,
        request_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(!self
            .fetch(
                "SELECT request_id FROM owner_notices WHERE account = $1 AND request_id = $2",
                vec![account.into(), request_id.into()],
            )
            .await?
            .is_empty())
    }

    /// Record that the owner's message `request_id` was handed to their conversation.
    pub async fn owner_notice_record(
        &self,
        account: &AccountId,
        request_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO owner_notices (account, request_id, told_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account, request_id) DO NOTHING",
            vec![account.into(), request_id.into(), Val::I(now)],
        )
        .await?;
        Ok(())
    }
}
