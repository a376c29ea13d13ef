//! Custom orders: what a customer described in chat (and the picture they sent), for the
//! owner to quote. Made once per shop call (`idem_key` is the call's id); the owner is told
//! after the commit by the reconciliation pass ([`Store::custom_orders_untold`]), so a crash
//! between the two loses nothing. Written through the pool.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, CustomOrderStatus, UserKey};

const COLUMNS: &str =
    "id, account, user_key, description, media_id, status, notes, created_at, updated_at, owner_told_at";

#[derive(Debug, Clone, PartialEq)]
pub struct CustomOrder {
    pub id: i64,
    pub account: AccountId,
    pub user_key: UserKey,
    pub description: String,
    /// The reference picture (`media_files.media_id`), if one was sent.
    pub media_id: Option<String>,
    pub status: CustomOrderStatus,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub owner_told_at: Option<i64>,
}

fn custom_order_of(r: &sqlx::any::AnyRow) -> Result<CustomOrder, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(CustomOrder {
        id: r.try_get("id")?,
        account: AccountId::from(r.try_get::<String, _>("account")?.as_str()),
        user_key: UserKey::from(r.try_get::<String, _>("user_key")?.as_str()),
        description: r.try_get("description")?,
        media_id: r.try_get("media_id")?,
        status: status
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("custom_orders.status: {e}")))?,
        notes: r.try_get("notes")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        owner_told_at: r.try_get("owner_told_at")?,
    })
}

/// What changing a custom order came to.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomOrderUpdate {
    Updated(CustomOrder),
    NotFound,
    /// The status may not move there from where it is.
    Refused {
        current: CustomOrderStatus,
    },
}

impl Store {
    /// Record a custom order, once per `idem_key`: made again, the first one's id.
    pub async fn create_custom_order(
        &self,
        account: &AccountId,
        user: &UserKey,
        description: &str,
        media_id: Option<&str>,
        idem_key: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.run(
            "INSERT INTO custom_orders (account, user_key, description, media_id, status, idem_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'new', $5, $6, $6) ON CONFLICT (idem_key) DO NOTHING",
            vec![
                account.into(),
                user.as_str().into(),
                description.into(),
                Val::OptS(media_id.map(str::to_string)),
                idem_key.into(),
                Val::I(now),
            ],
        )
        .await?;
        let rows = self
            .fetch(
                "SELECT id FROM custom_orders WHERE idem_key = $1",
                vec![idem_key.into()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt(format!("custom order {idem_key:?} vanished")))?;
        Ok(row.try_get("id")?)
    }

    pub async fn custom_order(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<Option<CustomOrder>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {COLUMNS} FROM custom_orders WHERE account = $1 AND id = $2"),
                vec![account.into(), Val::I(id)],
            )
            .await?;
        rows.first().map(custom_order_of).transpose()
    }

    /// A page of an account's custom orders, newest first, those before `before` (an id),
    /// with `status` if given.
    pub async fn custom_orders(
        &self,
        account: &AccountId,
        status: Option<CustomOrderStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<CustomOrder>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM custom_orders WHERE account = $1 AND id < $2 \
                     AND ($3 = '' OR status = $3) ORDER BY id DESC LIMIT $4"
                ),
                vec![
                    account.into(),
                    Val::I(before.unwrap_or(i64::MAX)),
                    status.map_or("", CustomOrderStatus::as_str).into(),
                    Val::I(limit.max(0)),
                ],
            )
            .await?;
        rows.iter().map(custom_order_of).collect()
    }

    /// Move a custom order's status (forward only, [`CustomOrderStatus::may_become`]) and/or
    /// set its notes.
    pub async fn update_custom_order(
        &self,
        account: &AccountId,
        id: i64,
        status: Option<CustomOrderStatus>,
        notes: Option<&str>,
        now: i64,
    ) -> Result<CustomOrderUpdate, StoreError> {
        let Some(current) = self.custom_order(account, id).await? else {
            return Ok(CustomOrderUpdate::NotFound);
        };
        let to = status.unwrap_or(current.status);
        if to != current.status && !current.status.may_become(to) {
            return Ok(CustomOrderUpdate::Refused {
                current: current.status,
            });
        }
        // Compare-and-set on the status read: a concurrent change makes this one refused.
        let changed = self
            .run(
                "UPDATE custom_orders SET status = $1, notes = COALESCE($2, notes), updated_at = $3 \
                 WHERE account = $4 AND id = $5 AND status = $6",
                vec![
                    to.as_str().into(),
                    Val::OptS(notes.map(str::to_string)),
                    Val::I(now),
                    account.into(),
                    Val::I(id),
                    current.status.as_str().into(),
                ],
            )
            .await?;
        if changed == 0 {
            return Ok(CustomOrderUpdate::Refused {
                current: current.status,
            });
        }
        Ok(match self.custom_order(account, id).await? {
            Some(o) => CustomOrderUpdate::Updated(o),
            None => CustomOrderUpdate::NotFound,
        })
    }

    /// Custom orders whose owner has not been told yet, oldest first.
    pub async fn custom_orders_untold(&self, limit: i64) -> Result<Vec<CustomOrder>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM custom_orders WHERE owner_told_at IS NULL ORDER BY id LIMIT $1"
                ),
                vec![Val::I(limit.max(0))],
            )
            .await?;
        rows.iter().map(custom_order_of).collect()
    }

    pub async fn custom_order_told(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE custom_orders SET owner_told_at = $1 WHERE id = $2 AND owner_told_at IS NULL",
            vec![Val::I(now), Val::I(id)],
        )
        .await?;
        Ok(())
    }
}
