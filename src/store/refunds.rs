//! Refunds of payments. Written through the pool.
//!
//! A refund row is committed (`requested`) under its idempotency key before the gateway is
//! asked, so a retry finds it and asks again with the same key instead of refunding twice.
//! Its answer is recorded with the payment's move in one transaction: the payment's row is
//! written first (a lock on both stores), the refunds it has are read under that lock, and
//! the caller's pure rule decides whether they add up to the whole payment (then REFUNDED,
//! from the status it was read in, a compare-and-set).

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{Money, PaymentStatus, RefundStatus};

/// What asking to open a refund came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundOpened {
    /// Written now, or found under its key.
    Opened(Refund),
    /// More than the payment's other refunds leave (`left`).
    TooMuch { left: Money },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub id: i64,
    pub payment_id: i64,
    pub amount: Money,
    pub reason: String,
    pub provider_ref: Option<String>,
    pub status: RefundStatus,
    pub idem_key: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const REFUND_COLUMNS: &str = "id, payment_id, amount, currency, reason, provider_ref, status, idem_key, error, created_at, updated_at";

fn refund_of(r: &sqlx::any::AnyRow) -> Result<Refund, StoreError> {
    let currency: crate::domain::Currency = r
        .try_get::<String, _>("currency")?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("refunds.currency: {e}")))?;
    let amount = Money::parse(&r.try_get::<String, _>("amount")?, currency)
        .map_err(|e| StoreError::Corrupt(format!("refunds.amount: {e}")))?;
    Ok(Refund {
        id: r.try_get("id")?,
        payment_id: r.try_get("payment_id")?,
        amount,
        reason: r.try_get("reason")?,
        provider_ref: r.try_get("provider_ref")?,
        status: stored(r, "status")?,
        idem_key: r.try_get("idem_key")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// The refund under `idem_key`, written now (`requested`) if there is none and `fits`
    /// allows its amount. Under the payment's row lock (taken first, on both stores), `fits` is
    /// given the amounts the payment's other refunds hold (requested, pending, succeeded):
    /// two refunds asked at once are checked in turn, never both against the same remainder.
    pub async fn open_refund(
        &self,
        payment_id: i64,
        amount: &Money,
        reason: &str,
        idem_key: &str,
        now: i64,
        fits: impl FnOnce(&[Money]) -> Result<(), Money>,
    ) -> Result<RefundOpened, StoreError> {
        let mut tx = self.pool().begin().await?;
        let locked = self
            .tx_run(
                &mut tx,
                "UPDATE payments SET updated_at = updated_at WHERE id = $1",
                vec![Val::I(payment_id)],
            )
            .await?;
        if locked == 0 {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!("payment {payment_id} is gone")));
        }
        let existing = self
            .tx_fetch(
                &mut tx,
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE idem_key = $1"),
                vec![idem_key.into()],
            )
            .await?;
        if let Some(r) = existing.first() {
            let r = refund_of(r)?;
            tx.rollback().await?;
            return Ok(RefundOpened::Opened(r));
        }
        let others = self
            .tx_fetch(
                &mut tx,
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 AND status IN ('requested', 'pending', 'succeeded')"
                ),
                vec![Val::I(payment_id)],
            )
            .await?;
        let held = others
            .iter()
            .map(|r| refund_of(r).map(|r| r.amount))
            .collect::<Result<Vec<_>, _>>()?;
        if let Err(left) = fits(&held) {
            tx.rollback().await?;
            return Ok(RefundOpened::TooMuch { left });
        }
        self.tx_run(
            &mut tx,
            "INSERT INTO refunds (payment_id, amount, currency, reason, status, idem_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            vec![
                Val::I(payment_id),
                amount.plain().into(),
                amount.currency.as_str().into(),
                reason.into(),
                RefundStatus::Requested.as_str().into(),
                idem_key.into(),
                Val::I(now),
            ],
        )
        .await?;
        let rows = self
            .tx_fetch(
                &mut tx,
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE idem_key = $1"),
                vec![idem_key.into()],
            )
            .await?;
        let r = rows
            .first()
            .map(refund_of)
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt("a refund just written is gone".into()))?;
        tx.commit().await?;
        Ok(RefundOpened::Opened(r))
    }

    /// Refunds a gateway took as pending, oldest first: the reconciliation pass asks where
    /// they stand.
    pub async fn refunds_pending(&self, limit: i64) -> Result<Vec<Refund>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = 'pending' AND provider_ref IS NOT NULL ORDER BY id LIMIT $1"
                ),
                vec![Val::I(limit)],
            )
            .await?;
        rows.iter().map(refund_of).collect()
    }

    pub async fn refund_by_key(&self, idem_key: &str) -> Result<Option<Refund>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE idem_key = $1"),
                vec![idem_key.into()],
            )
            .await?;
        rows.first().map(refund_of).transpose()
    }

    /// A payment's refunds, oldest first.
    pub async fn refunds_of(&self, payment_id: i64) -> Result<Vec<Refund>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id"),
                vec![Val::I(payment_id)],
            )
            .await?;
        rows.iter().map(refund_of).collect()
    }

    /// The gateway refused the refund (or it cannot be made there, or a pending one failed):
    /// it holds no amount.
    pub async fn refund_failed(&self, id: i64, error: &str, now: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE refunds SET status = $1, error = $2, updated_at = $3 WHERE id = $4 AND status IN ('requested', 'failed', 'pending')",
            vec![
                RefundStatus::Failed.as_str().into(),
                error.into(),
                Val::I(now),
                Val::I(id),
            ],
        )
        .await?;
        Ok(())
    }

    /// The gateway took refund `id` (`status`: pending or succeeded). In the same
    /// transaction, under the payment's row lock, `full` is given the payment's status and
    /// the amounts of all its refunds that succeeded (a pending one holds its amount but has
    /// not given it back: the payment moves once it has); when it answers a status (REFUNDED), the
    /// payment moves there from the status it was read in, its conversation counts as told
    /// (the refund's own message tells it), and its order is marked refunded and cancelled.
    /// The stock is not given back: what was sold may be in the customer's hands; the owner
    /// adjusts it. Whether the payment moved.
    pub async fn refund_done(
        &self,
        id: i64,
        payment_id: i64,
        status: RefundStatus,
        provider_ref: Option<&str>,
        now: i64,
        full: impl FnOnce(PaymentStatus, &[Money]) -> Option<PaymentStatus>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The payment's row first: a write lock, so two refunds ending at once add up in turn.
        let locked = self
            .tx_fetch(
                &mut tx,
                "UPDATE payments SET updated_at = $1 WHERE id = $2 RETURNING status, order_id",
                vec![Val::I(now), Val::I(payment_id)],
            )
            .await?;
        let Some(row) = locked.first() else {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!("payment {payment_id} is gone")));
        };
        let current: PaymentStatus = stored(row, "status")?;
        let order: i64 = row.try_get("order_id")?;
        self.tx_run(
            &mut tx,
            "UPDATE refunds SET status = $1, provider_ref = COALESCE($2, provider_ref), error = NULL, updated_at = $3 \
             WHERE id = $4 AND status IN ('requested', 'failed', 'pending')",
            vec![
                status.as_str().into(),
                Val::OptS(provider_ref.map(str::to_string)),
                Val::I(now),
                Val::I(id),
            ],
        )
        .await?;
        let rows = self
            .tx_fetch(
                &mut tx,
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 AND status = 'succeeded'"),
                vec![Val::I(payment_id)],
            )
            .await?;
        let amounts = rows
            .iter()
            .map(|r| refund_of(r).map(|r| r.amount))
            .collect::<Result<Vec<_>, _>>()?;
        let mut moved = false;
        if let Some(to) = full(current, &amounts) {
            moved = self
                .tx_run(
                    &mut tx,
                    "UPDATE payments SET status = $1, notified = $1, updated_at = $2 WHERE id = $3 AND status = $4",
                    vec![
                        to.as_str().into(),
                        Val::I(now),
                        Val::I(payment_id),
                        current.as_str().into(),
                    ],
                )
                .await?
                > 0;
            if moved {
                self.tx_run(
                    &mut tx,
                    "UPDATE orders SET payment_status = 'refunded', status = 'cancelled', updated_at = $1 WHERE id = $2",
                    vec![Val::I(now), Val::I(order)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(moved)
    }
}
