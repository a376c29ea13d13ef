//! Vouchers and their claims. A voucher's code is stored upper-case and looked up
//! upper-cased, so "hemat10" finds "HEMAT10". Written through the pool.
//!
//! A flow's `voucher` node only checks a code and puts it on the open cart
//! ([`Store::apply_voucher`], once per call id). The claim is the checkout's
//! ([`Store::tx_checkout_voucher`], inside its transaction): one conditional
//! `UPDATE vouchers SET used = used + 1 WHERE … used < usage_limit AND <valid now>` (PostgreSQL
//! re-checks the condition on the row it waited for, SQLite has one writer), then an
//! `INSERT INTO voucher_claims` whose primary key (account, code, user_key) makes "already
//! used by you" race-free: of two customers taking the last use at once exactly one gets it,
//! and the other's checkout rolls back with nothing reserved.

use rust_decimal::Decimal;
use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::voucher::{decide, discount};
use crate::domain::{voucher_code, AccountId, Currency, Money, UserKey, Voucher, VoucherRefusal};

const VOUCHER_COLUMNS: &str = "code, kind, value, min_total, valid_from, valid_to, usage_limit, used, user_key, active, created_at, updated_at";

fn decimal(r: &sqlx::any::AnyRow, column: &str) -> Result<Option<Decimal>, StoreError> {
    r.try_get::<Option<String>, _>(column)?
        .map(|t| {
            Decimal::from_str_exact(&t)
                .map_err(|e| StoreError::Corrupt(format!("vouchers.{column}: {e}")))
        })
        .transpose()
}

fn voucher_of(r: &sqlx::any::AnyRow) -> Result<Voucher, StoreError> {
    Ok(Voucher {
        code: r.try_get("code")?,
        kind: stored(r, "kind")?,
        value: decimal(r, "value")?
            .ok_or_else(|| StoreError::Corrupt("vouchers.value is null".into()))?,
        min_total: decimal(r, "min_total")?,
        valid_from: r.try_get("valid_from")?,
        valid_to: r.try_get("valid_to")?,
        usage_limit: r.try_get("usage_limit")?,
        used: r.try_get("used")?,
        user_key: r.try_get("user_key")?,
        active: r.try_get::<i64, _>("active")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// What a flow's `voucher` node found (recorded as its call's outcome).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum VoucherApplied {
    /// On the open cart now: what it takes off the cart as it is.
    Applied {
        code: String,
        subtotal: Money,
        discount: Money,
        total: Money,
    },
    /// Not put on the cart.
    Refused {
        code: String,
        reason: VoucherRefusal,
    },
}

impl Cart {
    /// Every available line's price × quantity (before a voucher).
    pub fn subtotal(&self) -> Money {
        self.lines
            .iter()
            .filter(|l| l.available)
            .filter_map(|l| l.unit_price.times(l.quantity as u32).ok())
            .fold(Money::zero(self.currency), |sum, m| {
                sum.plus(&m).unwrap_or(sum)
            })
    }
}

impl Store {
    /// Create the voucher or update the one with its code (its `used` count kept): whether
    /// it was created.
    pub async fn upsert_voucher(
        &self,
        account: &AccountId,
        v: &Voucher,
        now: i64,
    ) -> Result<bool, StoreError> {
        let code = voucher_code(&v.code);
        let fields = |first: Val| {
            vec![
                first,
                code.as_str().into(),
                v.kind.as_str().into(),
                v.value.normalize().to_string().into(),
                Val::OptS(v.min_total.map(|m| m.normalize().to_string())),
                Val::OptI(v.valid_from),
                Val::OptI(v.valid_to),
                Val::OptI(v.usage_limit),
                Val::OptS(v.user_key.clone()),
                Val::I(v.active as i64),
                Val::I(now),
            ]
        };
        let update = "UPDATE vouchers SET kind = $3, value = $4, min_total = $5, valid_from = $6, valid_to = $7, \
                      usage_limit = $8, user_key = $9, active = $10, updated_at = $11 WHERE account = $1 AND code = $2";
        // The first statement is a write (see store/carts.rs).
        let mut tx = self.pool().begin().await?;
        if self.tx_run(&mut tx, update, fields(account.into())).await? > 0 {
            tx.commit().await?;
            return Ok(false);
        }
        let inserted = self
            .tx_run(
                &mut tx,
                "INSERT INTO vouchers (account, code, kind, value, min_total, valid_from, valid_to, usage_limit, used, user_key, active, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $11) ON CONFLICT (account, code) DO NOTHING",
                fields(account.into()),
            )
            .await?;
        if inserted == 0 {
            // Created by someone else since the UPDATE found nothing.
            self.tx_run(&mut tx, update, fields(account.into())).await?;
        }
        tx.commit().await?;
        Ok(inserted > 0)
    }

    /// The voucher of this code (any case).
    pub async fn voucher(
        &self,
        account: &AccountId,
        code: &str,
    ) -> Result<Option<Voucher>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE account = $1 AND code = $2"),
                vec![account.into(), voucher_code(code).into()],
            )
            .await?;
        rows.first().map(voucher_of).transpose()
    }

    /// A page of an account's vouchers by code, those after `after`.
    pub async fn vouchers(
        &self,
        account: &AccountId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Voucher>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE account = $1 AND code > $2 ORDER BY code LIMIT $3"
                ),
                vec![
                    account.into(),
                    after.unwrap_or("").into(),
                    Val::I(limit.max(0)),
                ],
            )
            .await?;
        rows.iter().map(voucher_of).collect()
    }

    /// Remove a voucher (orders keep its code; its claims stay, so a code made again is not
    /// claimed twice by one customer); false if there was none.
    pub async fn delete_voucher(
        &self,
        account: &AccountId,
        code: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "DELETE FROM vouchers WHERE account = $1 AND code = $2",
                vec![account.into(), voucher_code(code).into()],
            )
            .await?
            > 0)
    }

    async fn tx_voucher(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        code: &str,
    ) -> Result<Option<Voucher>, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE account = $1 AND code = $2"),
                vec![account.into(), code.into()],
            )
            .await?;
        rows.first().map(voucher_of).transpose()
    }

    async fn tx_claimed(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        code: &str,
        user: &UserKey,
    ) -> Result<bool, StoreError> {
        Ok(!self
            .tx_fetch(
                tx,
                "SELECT order_id FROM voucher_claims WHERE account = $1 AND code = $2 AND user_key = $3",
                vec![account.into(), code.into(), user.into()],
            )
            .await?
            .is_empty())
    }

    /// A flow's `voucher` node: check `typed` for this customer against the open cart (opened
    /// in `currency` if there is none) and, when it may be used, put it on the cart; once per
    /// `call_id` (made again, it answers as the first time). Nothing is claimed here.
    pub async fn apply_voucher(
        &self,
        account: &AccountId,
        user: &UserKey,
        call_id: &str,
        typed: &str,
        currency: Currency,
        now: i64,
    ) -> Result<VoucherApplied, StoreError> {
        let code = voucher_code(typed);
        let mut tx = self.pool().begin().await?;
        if let Some(done) = self
            .claim_call::<VoucherApplied>(&mut tx, account, call_id, now)
            .await?
        {
            tx.rollback().await?;
            return Ok(done);
        }
        let voucher = self.tx_voucher(&mut tx, account, &code).await?;
        let claimed = self.tx_claimed(&mut tx, account, &code, user).await?;
        let cart = self.tx_open_cart(&mut tx, account, user).await?;
        let subtotal = cart.as_ref().map_or(Money::zero(currency), Cart::subtotal);
        let outcome = match decide(voucher.as_ref(), user, now, subtotal, claimed) {
            Ok(off) => {
                let cart_id = match &cart {
                    Some(c) => c.id,
                    None => {
                        self.tx_new_cart(&mut tx, account, user, currency, now)
                            .await?
                    }
                };
                self.tx_run(
                    &mut tx,
                    "UPDATE carts SET voucher = $1, updated_at = $2 WHERE id = $3",
                    vec![code.as_str().into(), Val::I(now), Val::I(cart_id)],
                )
                .await?;
                VoucherApplied::Applied {
                    code,
                    subtotal,
                    discount: off,
                    total: subtotal.minus_saturating(&off).unwrap_or(subtotal),
                }
            }
            Err(reason) => VoucherApplied::Refused { code, reason },
        };
        self.finish_call(&mut tx, account, call_id, &outcome)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// In a checkout's transaction: claim the cart's voucher `code` (if any) for `user` (one
    /// use, one claim row) and give what it takes off `subtotal`, or the checkout refused for
    /// it. After a refusal the caller rolls back (the use taken here with it) and calls
    /// [`Store::refuse_checkout_voucher`].
    pub(super) async fn tx_checkout_voucher(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
        code: Option<&str>,
        subtotal: Money,
        now: i64,
    ) -> Result<Result<Money, Checkout>, StoreError> {
        let Some(code) = code else {
            return Ok(Ok(Money::zero(subtotal.currency)));
        };
        let refused = |reason| {
            Err(Checkout::VoucherRefused {
                code: code.to_string(),
                reason,
            })
        };
        let taken = self
            .tx_fetch(
                tx,
                &format!(
                    "UPDATE vouchers SET used = used + 1, updated_at = $1 \
                     WHERE account = $2 AND code = $3 AND active = 1 \
                     AND (usage_limit IS NULL OR used < usage_limit) \
                     AND (valid_from IS NULL OR valid_from <= $1) AND (valid_to IS NULL OR valid_to >= $1) \
                     AND (user_key IS NULL OR user_key = $4) RETURNING {VOUCHER_COLUMNS}"
                ),
                vec![Val::I(now), account.into(), code.into(), user.into()],
            )
            .await?;
        let Some(row) = taken.first() else {
            // Why not, in the customer's words (used up meanwhile, expired, …).
            let voucher = self.tx_voucher(tx, account, code).await?;
            let claimed = self.tx_claimed(tx, account, code, user).await?;
            return Ok(refused(
                decide(voucher.as_ref(), user, now, subtotal, claimed)
                    .err()
                    .unwrap_or(VoucherRefusal::UsedUp),
            ));
        };
        let voucher = voucher_of(row)?;
        let claimed = self
            .tx_run(
                tx,
                "INSERT INTO voucher_claims (account, code, user_key, order_id, claimed_at) VALUES ($1, $2, $3, 0, $4) \
                 ON CONFLICT (account, code, user_key) DO NOTHING",
                vec![account.into(), code.into(), user.into(), Val::I(now)],
            )
            .await?;
        if claimed == 0 {
            return Ok(refused(VoucherRefusal::AlreadyUsed));
        }
        Ok(discount(&voucher, subtotal).or_else(refused))
    }

    /// The claim made by [`Store::tx_checkout_voucher`] names its order.
    pub(super) async fn tx_claim_order(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
        code: &str,
        order_id: i64,
    ) -> Result<(), StoreError> {
        self.tx_run(
            tx,
            "UPDATE voucher_claims SET order_id = $1 WHERE account = $2 AND code = $3 AND user_key = $4",
            vec![Val::I(order_id), account.into(), code.into(), user.into()],
        )
        .await?;
        Ok(())
    }

    /// After a checkout rolled back for its voucher: the voucher comes off the open cart (the
    /// next checkout goes without it), and the refusal is recorded under the checkout's key
    /// (made again after a crash, it answers the same).
    pub(super) async fn refuse_checkout_voucher(
        &self,
        account: &AccountId,
        user: &UserKey,
        idem_key: &str,
        refused: Checkout,
        now: i64,
    ) -> Result<Checkout, StoreError> {
        let Checkout::VoucherRefused { code, .. } = &refused else {
            return Ok(refused);
        };
        let code = code.clone();
        let outcome = serde_json::to_string(&refused)
            .map_err(|e| StoreError::Corrupt(format!("checkout outcome: {e}")))?;
        let mut tx = self.pool().begin().await?;
        self.tx_run(
            &mut tx,
            "UPDATE carts SET voucher = NULL, updated_at = $1 WHERE account = $2 AND user_key = $3 AND status = 'open' AND voucher = $4",
            vec![Val::I(now), account.into(), user.into(), code.into()],
        )
        .await?;
        self.tx_run(
            &mut tx,
            "INSERT INTO commerce_calls (account, call_id, outcome, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, call_id) DO NOTHING",
            vec![account.into(), idem_key.into(), outcome.into(), Val::I(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(refused)
    }

    /// A checkout refused for its voucher before under this key, if it was.
    pub(super) async fn tx_refused_checkout(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        idem_key: &str,
    ) -> Result<Option<Checkout>, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                "SELECT outcome FROM commerce_calls WHERE account = $1 AND call_id = $2",
                vec![account.into(), idem_key.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let text: String = r.try_get("outcome")?;
        Ok(serde_json::from_str::<Checkout>(&text)
            .ok()
            .filter(|c| matches!(c, Checkout::VoucherRefused { .. })))
    }

    /// The voucher on a cart, as it is now (for what the cart shows).
    pub(super) async fn tx_cart_voucher(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        code: Option<&str>,
    ) -> Result<Option<Voucher>, StoreError> {
        match code {
            Some(code) => self.tx_voucher(tx, account, code).await,
            None => Ok(None),
        }
    }
}
