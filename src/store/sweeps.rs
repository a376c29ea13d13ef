//! What the shop's sweeps read and mark (the reconciliation pass runs them, see
//! ingress/sweeps.rs): abandoned carts and their one reminder, subscriptions' renewal and end
//! notices. Written through the pool, one statement at a time; every mark is a
//! compare-and-set on the state it moves from, so two passes never both move a row.
//!
//! A cart's reminder: `none` → `pending` (claimed, before the send) → `sent` (after the
//! conversation took it). A crash in between leaves it `pending`, and the next pass sends it
//! again under the same request id, which the conversation answers as a duplicate.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, CartRecovery, UserKey};

/// An open cart the abandoned-cart sweep may remind.
#[derive(Debug, Clone, PartialEq)]
pub struct AbandonedCart {
    pub id: i64,
    pub user_key: UserKey,
    pub recovery: CartRecovery,
    pub updated_at: i64,
}

/// A subscription whose customer is to be told of its period's end (coming or past).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionNotice {
    pub id: i64,
    pub user_key: UserKey,
    pub sku: String,
    /// The plan's name (its sku when the product is gone).
    pub plan: String,
    pub period_end: i64,
    /// The period_end this notice was last given for (renewal or end, as read).
    pub told_until: Option<i64>,
}

impl Store {
    /// `account`'s open carts with items and no order whose reminder is due: untouched since
    /// `idle_before` and never reminded, or claimed and not recorded sent. Oldest first.
    pub async fn abandoned_carts(
        &self,
        account: &AccountId,
        idle_before: i64,
        limit: i64,
    ) -> Result<Vec<AbandonedCart>, StoreError> {
        let rows = self
            .fetch(
                "SELECT c.id, c.user_key, c.recovery, c.updated_at FROM carts c \
                 WHERE c.account = $1 AND c.status = 'open' AND c.order_id IS NULL \
                 AND (c.recovery = 'pending' OR (c.recovery = 'none' AND c.updated_at <= $2)) \
                 AND EXISTS (SELECT 1 FROM cart_items i WHERE i.cart_id = c.id) \
                 ORDER BY c.id LIMIT $3",
                vec![account.into(), Val::I(idle_before), Val::I(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AbandonedCart {
                    id: r.try_get("id")?,
                    user_key: UserKey::new(r.try_get::<String, _>("user_key")?),
                    recovery: stored(r, "recovery")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Claim cart `id`'s reminder before it is sent (`none` → `pending`), if it is still open
    /// and untouched since `idle_before`. Whether this call claimed it.
    pub async fn claim_cart_reminder(
        &self,
        id: i64,
        idle_before: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .run(
                "UPDATE carts SET recovery = 'pending', reminded_at = $1 \
                 WHERE id = $2 AND status = 'open' AND recovery = 'none' AND updated_at <= $3",
                vec![Val::I(now), Val::I(id), Val::I(idle_before)],
            )
            .await?;
        Ok(claimed > 0)
    }

    /// The conversation took cart `id`'s reminder (`pending` → `sent`, at `now`).
    pub async fn cart_reminded(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let moved = self
            .run(
                "UPDATE carts SET recovery = 'sent', reminded_at = $1 WHERE id = $2 AND recovery = 'pending'",
                vec![Val::I(now), Val::I(id)],
            )
            .await?;
        Ok(moved > 0)
    }

    /// Reminded carts with no order since `reminded_before` are no longer recoverable
    /// (`sent` → `expired`; the cart itself is kept), at most `limit`; how many.
    pub async fn expire_cart_recoveries(
        &self,
        reminded_before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "UPDATE carts SET recovery = 'expired' WHERE recovery = 'sent' AND id IN \
             (SELECT id FROM carts WHERE recovery = 'sent' AND order_id IS NULL AND reminded_at <= $1 \
              ORDER BY id LIMIT $2)",
            vec![Val::I(reminded_before), Val::I(limit)],
        )
        .await
    }

    /// `account`'s active subscriptions ending after `now` and by `until` whose customer was
    /// not given this period's renewal notice. Soonest first.
    pub async fn subscriptions_to_remind(
        &self,
        account: &AccountId,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionNotice>, StoreError> {
        let rows = self
            .fetch(
                "SELECT s.id, s.user_key, s.sku, s.period_end, s.renewal_notified_until AS told_until, p.name \
                 FROM subscriptions s LEFT JOIN products p ON p.account = s.account AND p.sku = s.sku \
                 WHERE s.account = $1 AND s.status = 'active' AND s.period_end > $2 AND s.period_end <= $3 \
                 AND (s.renewal_notified_until IS NULL OR s.renewal_notified_until <> s.period_end) \
                 ORDER BY s.period_end, s.id LIMIT $4",
                vec![account.into(), Val::I(now), Val::I(until), Val::I(limit)],
            )
            .await?;
        rows.iter().map(notice_of).collect()
    }

    /// `account`'s expired subscriptions whose customer was not told that the period ended.
    pub async fn subscriptions_ended_untold(
        &self,
        account: &AccountId,
        limit: i64,
    ) -> Result<Vec<SubscriptionNotice>, StoreError> {
        let rows = self
            .fetch(
                "SELECT s.id, s.user_key, s.sku, s.period_end, s.end_notified_until AS told_until, p.name \
                 FROM subscriptions s LEFT JOIN products p ON p.account = s.account AND p.sku = s.sku \
                 WHERE s.account = $1 AND s.status = 'expired' \
                 AND (s.end_notified_until IS NULL OR s.end_notified_until <> s.period_end) \
                 ORDER BY s.period_end, s.id LIMIT $2",
                vec![account.into(), Val::I(limit)],
            )
            .await?;
        rows.iter().map(notice_of).collect()
    }

    /// The customer heard the renewal notice of the period ending at `period_end` (nothing
    /// changes if the period has moved since).
    pub async fn subscription_renewal_told(
        &self,
        id: i64,
        period_end: i64,
    ) -> Result<bool, StoreError> {
        let marked = self
            .run(
                "UPDATE subscriptions SET renewal_notified_until = $1 WHERE id = $2 AND period_end = $1",
                vec![Val::I(period_end), Val::I(id)],
            )
            .await?;
        Ok(marked > 0)
    }

    /// The customer heard that the period ending at `period_end` ended (nothing changes if
    /// it was renewed since).
    pub async fn subscription_end_told(
        &self,
        id: i64,
        period_end: i64,
    ) -> Result<bool, StoreError> {
        let marked = self
            .run(
                "UPDATE subscriptions SET end_notified_until = $1 WHERE id = $2 AND period_end = $1",
                vec![Val::I(period_end), Val::I(id)],
            )
            .await?;
        Ok(marked > 0)
    }
}

fn notice_of(r: &sqlx::any::AnyRow) -> Result<SubscriptionNotice, StoreError> {
    let sku: String = r.try_get("sku")?;
    let name: Option<String> = r.try_get("name")?;
    Ok(SubscriptionNotice {
        id: r.try_get("id")?,
        user_key: UserKey::new(r.try_get::<String, _>("user_key")?),
        plan: name.unwrap_or_else(|| sku.clone()),
        sku,
        period_end: r.try_get("period_end")?,
        told_until: r.try_get("told_until")?,
    })
}
