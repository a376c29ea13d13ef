//! Subscriptions to plans as the admin API lists them (newest first). The rows are written
//! where a paid order starts or extends them (`payments`) and where they end.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, SubscriptionStatus, UserKey};

/// A customer's subscription to a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Subscription {
    pub id: i64,
    pub account: String,
    pub user_key: String,
    pub sku: String,
    pub period_start: i64,
    pub period_end: i64,
    pub status: SubscriptionStatus,
    /// The order that last started or extended it.
    pub last_order_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which subscriptions a listing shows.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter<'a> {
    pub user: Option<&'a UserKey>,
    pub status: Option<SubscriptionStatus>,
    /// Those with a smaller id (newest first): the admin API's cursor.
    pub before_id: Option<i64>,
    pub limit: i64,
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, account, user_key, sku, period_start, period_end, status, last_order_id, created_at, updated_at";

fn subscription_of(r: &sqlx::any::AnyRow) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        user_key: r.try_get("user_key")?,
        sku: r.try_get("sku")?,
        period_start: r.try_get("period_start")?,
        period_end: r.try_get("period_end")?,
        status: stored(r, "status")?,
        last_order_id: r.try_get("last_order_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// An account's subscriptions, newest first.
    pub async fn subscriptions(
        &self,
        account: &AccountId,
        f: &SubscriptionFilter<'_>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let mut text =
            format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE account = $1");
        let mut vals: Vec<Val> = vec![account.into()];
        if let Some(u) = f.user {
            vals.push(u.into());
            text.push_str(&format!(" AND user_key = ${}", vals.len()));
        }
        if let Some(s) = f.status {
            vals.push(s.as_str().into());
            text.push_str(&format!(" AND status = ${}", vals.len()));
        }
        if let Some(before) = f.before_id {
            vals.push(Val::I(before));
            text.push_str(&format!(" AND id < ${}", vals.len()));
        }
        vals.push(Val::I(f.limit.max(0)));
        text.push_str(&format!(" ORDER BY id DESC LIMIT ${}", vals.len()));
        self.fetch(&text, vals)
            .await?
            .iter()
            .map(subscription_of)
            .collect()
    }

    /// One subscription of an account.
    pub async fn subscription(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE account = $1 AND id = $2"
                ),
                vec![account.into(), Val::I(id)],
            )
            .await?;
        rows.first().map(subscription_of).transpose()
    }
}
