//! Payments and the gateways' callbacks. Written through the pool.
//!
//! A payment row is committed PENDING, with its idempotency key, before its gateway is
//! called; a callback is recorded (once per gateway event) before it is answered, and applied
//! after the gateway's status API confirmed it. A settlement moves the payment and its order
//! in one transaction, and only from the status it was read in (a compare-and-set): two
//! callbacks settling one payment at once cannot both take effect.

use sqlx::Row;

use super::orders::OrderStock;
use super::sql::Val;
use super::*;
use crate::domain::{AccountId, Currency, GatewayKind, Money, PaymentMethod, PaymentStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: i64,
    pub account: String,
    pub order_id: i64,
    pub order_number: String,
    pub user_key: String,
    pub provider: String,
    pub kind: GatewayKind,
    pub method: PaymentMethod,
    pub provider_ref: Option<String>,
    pub bank: Option<String>,
    pub code: Option<String>,
    pub amount: Money,
    pub paid_amount: Option<Money>,
    pub status: PaymentStatus,
    pub expires_at: i64,
    /// The gateway's instructions (JSON), once it answered the create call.
    pub details: Option<String>,
    /// The status its conversation was last told.
    pub notified: Option<PaymentStatus>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
}

impl Payment {
    /// Our id at the gateway (at most 30 of `[A-Za-z0-9-]`, as Finpay allows).
    pub fn gateway_id(&self) -> String {
        gateway_id(self.id)
    }
}

/// The id a payment has at its gateway.
pub fn gateway_id(id: i64) -> String {
    format!("PAY-{id:08}")
}

/// The payment id in a gateway id, if it is one of ours.
pub fn payment_of_gateway_id(text: &str) -> Option<i64> {
    text.strip_prefix("PAY-")?.parse().ok()
}

/// What a paid plan gives: its access link, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanAccess {
    pub name: String,
    pub link: Option<String>,
    /// The end of the subscription (ms).
    pub until: i64,
}

/// A payment to open.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub account: &'a AccountId,
    pub order_id: i64,
    pub user_key: &'a str,
    pub provider: &'a str,
    pub kind: GatewayKind,
    pub method: PaymentMethod,
    pub bank: Option<&'a str>,
    pub amount: Money,
    pub expires_at: i64,
    pub idem_key: &'a str,
    pub now: i64,
}

const PAYMENT_COLUMNS: &str = "p.id, p.account, p.order_id, o.order_number, p.user_key, p.provider, p.kind, p.method, p.provider_ref, p.bank, p.code, p.amount, p.paid_amount, p.currency, p.status, p.expires_at, p.details, p.notified, p.created_at, p.paid_at";

fn payment_of(r: &sqlx::any::AnyRow) -> Result<Payment, StoreError> {
    let currency: Currency = r
        .try_get::<String, _>("currency")?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("payments.currency: {e}")))?;
    let money = |text: String| {
        Money::parse(&text, currency).map_err(|e| StoreError::Corrupt(format!("payments: {e}")))
    };
    let notified: Option<String> = r.try_get("notified")?;
    Ok(Payment {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        order_id: r.try_get("order_id")?,
        order_number: r.try_get("order_number")?,
        user_key: r.try_get("user_key")?,
        provider: r.try_get("provider")?,
        kind: stored(r, "kind")?,
        method: stored(r, "method")?,
        provider_ref: r.try_get("provider_ref")?,
        bank: r.try_get("bank")?,
        code: r.try_get("code")?,
        amount: money(r.try_get("amount")?)?,
        paid_amount: r
            .try_get::<Option<String>, _>("paid_amount")?
            .map(money)
            .transpose()?,
        status: stored(r, "status")?,
        expires_at: r.try_get("expires_at")?,
        details: r.try_get("details")?,
        notified: notified
            .map(|n| n.parse())
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("payments.notified: {e}")))?,
        created_at: r.try_get("created_at")?,
        paid_at: r.try_get("paid_at")?,
    })
}

impl Store {
    /// The PENDING payment for `idem_key`, opened now if there is none (committed before
    /// its gateway is called).
    pub async fn open_payment(&self, p: &NewPayment<'_>) -> Result<Payment, StoreError> {
        self.run(
            "INSERT INTO payments (account, order_id, user_key, provider, kind, method, bank, amount, currency, status, expires_at, idem_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) ON CONFLICT (idem_key) DO NOTHING",
            vec![
                p.account.into(),
                Val::I(p.order_id),
                p.user_key.into(),
                p.provider.into(),
                p.kind.as_str().into(),
                p.method.as_str().into(),
                Val::OptS(p.bank.map(str::to_string)),
                p.amount.plain().into(),
                p.amount.currency.as_str().into(),
                PaymentStatus::Pending.as_str().into(),
                Val::I(p.expires_at),
                p.idem_key.into(),
                Val::I(p.now),
            ],
        )
        .await?;
        self.payment_where("p.idem_key = $1", vec![p.idem_key.into()])
            .await?
            .ok_or_else(|| StoreError::Corrupt("a payment just opened is gone".into()))
    }

    async fn payment_where(
        &self,
        cond: &str,
        vals: Vec<Val>,
    ) -> Result<Option<Payment>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id WHERE {cond}"
                ),
                vals,
            )
            .await?;
        rows.first().map(payment_of).transpose()
    }

    pub async fn payment(&self, id: i64) -> Result<Option<Payment>, StoreError> {
        self.payment_where("p.id = $1", vec![Val::I(id)]).await
    }

    pub async fn payment_by_ref(
        &self,
        provider: &str,
        provider_ref: &str,
    ) -> Result<Option<Payment>, StoreError> {
        self.payment_where(
            "p.provider = $1 AND p.provider_ref = $2",
            vec![provider.into(), provider_ref.into()],
        )
        .await
    }

    /// The gateway answered the create call: its reference and what the customer is shown.
    pub async fn payment_created(
        &self,
        id: i64,
        provider_ref: &str,
        code: Option<&str>,
        details: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE payments SET provider_ref = $1, code = $2, details = $3, expires_at = COALESCE($4, expires_at), updated_at = $5 WHERE id = $6",
            vec![
                provider_ref.into(),
                Val::OptS(code.map(str::to_string)),
                details.into(),
                Val::OptI(expires_at),
                Val::I(now),
                Val::I(id),
            ],
        )
        .await?;
        Ok(())
    }

    /// The gateway's reference, learnt from a verified callback that came before the create
    /// call's answer (kept only while the row has none).
    pub async fn payment_ref_learned(&self, id: i64, provider_ref: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE payments SET provider_ref = $1 WHERE id = $2 AND provider_ref IS NULL",
            vec![provider_ref.into(), Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// Record a callback; false when this event was recorded before (a redelivery).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_payment_event(
        &self,
        provider: &str,
        event_key: &str,
        payment_id: Option<i64>,
        status: &str,
        amount: Option<&Money>,
        raw: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "INSERT INTO payment_events (provider, event_key, payment_id, status, amount, raw, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (provider, event_key) DO NOTHING",
                vec![
                    provider.into(),
                    event_key.into(),
                    Val::OptI(payment_id),
                    status.into(),
                    Val::OptS(amount.map(Money::plain)),
                    raw.into(),
                    Val::I(now),
                ],
            )
            .await?
            > 0)
    }

    /// Move a payment from `from` to `to` (only if it is still in `from`) and its order with
    /// it: PAID commits the order's reserved stock, consumes its materials (once per order;
    /// a fall below a minimum is recorded as an alert owed) and marks it paid; EXPIRED, FAILED and
    /// CANCELLED release the stock and cancel the order; REFUNDED marks the order refunded and
    /// cancelled (its stock stays sold). Its callbacks are marked applied.
    /// Whether it moved.
    pub async fn settle_payment(
        &self,
        id: i64,
        from: PaymentStatus,
        to: PaymentStatus,
        paid_amount: Option<&Money>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let moved = self
            .tx_fetch(
                &mut tx,
                "UPDATE payments SET status = $1, paid_amount = COALESCE($2, paid_amount), \
                 paid_at = CASE WHEN $1 IN ('PAID', 'PAID_LATE', 'MISMATCH') THEN $3 ELSE paid_at END, updated_at = $3 \
                 WHERE id = $4 AND status = $5 RETURNING order_id, account, user_key, provider, method, amount, paid_amount, currency",
                vec![
                    to.as_str().into(),
                    Val::OptS(paid_amount.map(Money::plain)),
                    Val::I(now),
                    Val::I(id),
                    from.as_str().into(),
                ],
            )
            .await?;
        let Some(r) = moved.first() else {
            tx.rollback().await?;
            return Ok(false);
        };
        let order: i64 = r.try_get("order_id")?;
        let account = AccountId::from(r.try_get::<String, _>("account")?);
        let hook = match to {
            PaymentStatus::Paid => Some(crate::hooks::EventType::PaymentPaid),
            PaymentStatus::Expired => Some(crate::hooks::EventType::PaymentExpired),
            PaymentStatus::PaidLate => Some(crate::hooks::EventType::PaymentPaidLate),
            _ => None,
        };
        if let Some(event_type) = hook {
            let e = NewHookEvent {
                account: account.to_string(),
                user_key: Some(r.try_get("user_key")?),
                event_type,
                data: serde_json::json!({
                    "payment_id": id,
                    "order_id": order,
                    "status": to.as_str(),
                    "provider": r.try_get::<String, _>("provider")?,
                    "method": r.try_get::<String, _>("method")?,
                    "amount": r.try_get::<String, _>("amount")?,
                    "paid_amount": r.try_get::<Option<String>, _>("paid_amount")?,
                    "currency": r.try_get::<String, _>("currency")?,
                }),
                dedup_key: format!("payment:{id}:{}", to.as_str()),
                at: now,
            };
            self.tx_hook_event(&mut tx, &e).await?;
        }
        match to {
            PaymentStatus::Paid => {
                self.tx_run(
                    &mut tx,
                    "UPDATE orders SET payment_status = 'paid', status = CASE WHEN status = 'pending' THEN 'processing' ELSE status END, updated_at = $1 WHERE id = $2",
                    vec![Val::I(now), Val::I(order)],
                )
                .await?;
                self.tx_settle_stock(&mut tx, &account, order, OrderStock::Committed, now)
                    .await?;
                self.tx_consume_materials(&mut tx, &account, order, now)
                    .await?;
                self.tx_start_plans(&mut tx, &account, order, now).await?;
            }
            PaymentStatus::Expired | PaymentStatus::Failed | PaymentStatus::Cancelled => {
                let released = self.tx_release_order(&mut tx, &account, order, now).await?;
                if released || from == PaymentStatus::Pending {
                    self.tx_run(
                        &mut tx,
                        "UPDATE orders SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status = 'pending' AND payment_status = 'unpaid'",
                        vec![Val::I(now), Val::I(order)],
                    )
                    .await?;
                }
            }
            PaymentStatus::Refunded => {
                // Refunded in full at the gateway (its own news): as a full refund made
                // here, the order is refunded and cancelled; the stock stays sold (the owner
                // adjusts it).
                self.tx_run(
                    &mut tx,
                    "UPDATE orders SET payment_status = 'refunded', status = 'cancelled', updated_at = $1 WHERE id = $2",
                    vec![Val::I(now), Val::I(order)],
                )
                .await?;
            }
            _ => {}
        }
        self.tx_run(
            &mut tx,
            "UPDATE payment_events SET applied = 1 WHERE payment_id = $1 AND applied = 0",
            vec![Val::I(id)],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Mark a payment's callbacks applied (they brought no change).
    pub async fn payment_events_applied(&self, id: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE payment_events SET applied = 1 WHERE payment_id = $1 AND applied = 0",
            vec![Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// Payments to ask their gateway about: PENDING past their expiry, or with a callback
    /// recorded and not yet applied (a crash after answering it).
    pub async fn payments_to_reconcile(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id \
                     WHERE p.status = 'PENDING' AND (p.expires_at <= $1 OR EXISTS \
                     (SELECT 1 FROM payment_events e WHERE e.payment_id = p.id AND e.applied = 0)) \
                     ORDER BY p.id LIMIT $2"
                ),
                vec![Val::I(now), Val::I(limit)],
            )
            .await?;
        rows.iter().map(payment_of).collect()
    }

    /// PENDING payments the gateway never answered the create call of (no reference, no
    /// instructions), made before `before`: their call died with a process, or is stuck.
    pub async fn payments_unopened(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id \
                     WHERE p.status = 'PENDING' AND p.details IS NULL AND p.created_at < $1 \
                     ORDER BY p.id LIMIT $2"
                ),
                vec![Val::I(before), Val::I(limit)],
            )
            .await?;
        rows.iter().map(payment_of).collect()
    }

    /// Payments whose conversation has not heard their last status.
    pub async fn payments_to_notify(&self, limit: i64) -> Result<Vec<Payment>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id \
                     WHERE p.status <> 'PENDING' AND (p.notified IS NULL OR p.notified <> p.status) \
                     ORDER BY p.id LIMIT $1"
                ),
                vec![Val::I(limit)],
            )
            .await?;
        rows.iter().map(payment_of).collect()
    }

    pub async fn payment_notified(&self, id: i64, status: PaymentStatus) -> Result<(), StoreError> {
        self.run(
            "UPDATE payments SET notified = $1 WHERE id = $2",
            vec![status.as_str().into(), Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// Payments held for the owner (PAID_LATE, MISMATCH) whose owner has not been told.
    pub async fn payments_for_owner(&self, limit: i64) -> Result<Vec<Payment>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id \
                     WHERE p.status IN ('PAID_LATE', 'MISMATCH') AND (p.owner_told IS NULL OR p.owner_told <> p.status) \
                     ORDER BY p.id LIMIT $1"
                ),
                vec![Val::I(limit)],
            )
            .await?;
        rows.iter().map(payment_of).collect()
    }

    /// The owner was told of payment `id` in `status`.
    pub async fn payment_owner_told(
        &self,
        id: i64,
        status: PaymentStatus,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE payments SET owner_told = $1 WHERE id = $2",
            vec![status.as_str().into(), Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// The plans a paid order bought: each starts its subscription, or extends a running one
    /// from its current end (`period_days` × quantity).
    async fn tx_start_plans(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        order: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let plans = self
            .tx_fetch(
                tx,
                "SELECT o.user_key, i.sku, i.quantity, p.period_days FROM order_items i \
                 JOIN orders o ON o.id = i.order_id \
                 JOIN products p ON p.account = o.account AND p.sku = i.sku \
                 WHERE i.order_id = $1 AND p.kind = 'plan' AND p.period_days IS NOT NULL ORDER BY i.sku",
                vec![Val::I(order)],
            )
            .await?;
        for plan in &plans {
            let days: i64 =
                plan.try_get::<i64, _>("period_days")? * plan.try_get::<i64, _>("quantity")?;
            self.tx_run(
                tx,
                "INSERT INTO subscriptions (account, user_key, sku, period_start, period_end, status, last_order_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4 + $5, 'active', $6, $4, $4) \
                 ON CONFLICT (account, user_key, sku) DO UPDATE SET \
                 period_start = CASE WHEN subscriptions.status = 'active' AND subscriptions.period_end > $4 THEN subscriptions.period_start ELSE $4 END, \
                 period_end = CASE WHEN subscriptions.status = 'active' AND subscriptions.period_end > $4 THEN subscriptions.period_end + $5 ELSE $4 + $5 END, \
                 status = 'active', last_order_id = $6, reminded_at = NULL, updated_at = $4",
                vec![
                    account.into(),
                    plan.try_get::<String, _>("user_key")?.into(),
                    plan.try_get::<String, _>("sku")?.into(),
                    Val::I(now),
                    Val::I(days * 86_400_000),
                    Val::I(order),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// What a paid order's plans give its customer: each plan's name, access link and the
    /// end of its subscription.
    pub async fn plan_access(&self, order: i64) -> Result<Vec<PlanAccess>, StoreError> {
        let rows = self
            .fetch(
                "SELECT p.name, p.access_link, s.period_end FROM order_items i \
                 JOIN orders o ON o.id = i.order_id \
                 JOIN products p ON p.account = o.account AND p.sku = i.sku \
                 JOIN subscriptions s ON s.account = o.account AND s.user_key = o.user_key AND s.sku = i.sku \
                 WHERE i.order_id = $1 AND p.kind = 'plan' ORDER BY i.line",
                vec![Val::I(order)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PlanAccess {
                    name: r.try_get("name")?,
                    link: r.try_get("access_link")?,
                    until: r.try_get("period_end")?,
                })
            })
            .collect()
    }

    /// Subscriptions whose period has ended become `expired`; how many.
    pub async fn expire_subscriptions(&self, now: i64) -> Result<u64, StoreError> {
        self.run(
            "UPDATE subscriptions SET status = 'expired', updated_at = $1 WHERE status = 'active' AND period_end <= $1",
            vec![Val::I(now)],
        )
        .await
    }
}
