//! Carts: one open cart per conversation, its items, and the record of each commerce call a
//! conversation made (so a call made again after a crash is answered as the first was,
//! without a second effect). Written through the pool.
//!
//! Every transaction here begins with a write, so that SQLite takes its write lock first
//! (waiting `busy_timeout` for the writer) instead of failing a read transaction's upgrade.

use serde::{de::DeserializeOwned, Serialize};
use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, CartStatus, Currency, Money, UserKey};

/// A line of a cart, priced from the catalog as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CartLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    /// The product can be sold in this quantity now (active, in stock).
    pub available: bool,
}

/// A conversation's open cart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cart {
    pub id: i64,
    pub currency: Currency,
    pub voucher: Option<String>,
    /// The voucher of `voucher` as it is now (None too when it was deleted since).
    pub voucher_terms: Option<crate::domain::Voucher>,
    pub lines: Vec<CartLine>,
    pub updated_at: i64,
}

/// A change to a conversation's cart.
#[derive(Debug, Clone, PartialEq)]
pub enum CartChange<'a> {
    Add { sku: &'a str, quantity: i64 },
    Remove { sku: &'a str },
    Clear,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartChanged {
    Ok,
    /// Not enough units for what the cart would then hold.
    OutOfStock,
    /// No such active product (or, to remove, not in the cart).
    Unknown,
}

impl Store {
    /// The conversation's open cart, if it has one.
    pub async fn open_cart(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<Option<Cart>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let cart = self.tx_open_cart(&mut tx, account, user).await?;
        tx.commit().await?;
        Ok(cart)
    }

    pub(super) async fn tx_open_cart(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<Option<Cart>, StoreError> {
        let carts = self
            .tx_fetch(
                tx,
                "SELECT id, currency, voucher, updated_at FROM carts WHERE account = $1 AND user_key = $2 AND status = 'open'",
                vec![account.into(), user.into()],
            )
            .await?;
        let Some(c) = carts.first() else {
            return Ok(None);
        };
        let id: i64 = c.try_get("id")?;
        let currency: Currency = c
            .try_get::<String, _>("currency")?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("carts.currency: {e}")))?;
        let rows = self
            .tx_fetch(
                tx,
                "SELECT i.sku, i.quantity, p.name, p.price, p.currency, p.stock, p.active \
                 FROM cart_items i LEFT JOIN products p ON p.account = $1 AND p.sku = i.sku \
                 WHERE i.cart_id = $2 ORDER BY i.added_at, i.sku",
                vec![account.into(), Val::I(id)],
            )
            .await?;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let sku: String = r.try_get("sku")?;
            let quantity: i64 = r.try_get("quantity")?;
            let name: Option<String> = r.try_get("name")?;
            let price: Option<String> = r.try_get("price")?;
            let (name, unit_price, available) = match (name, price) {
                (Some(name), Some(price)) => {
                    let stock: Option<i64> = r.try_get("stock")?;
                    let active = r.try_get::<i64, _>("active")? != 0;
                    let unit_price = Money::parse(&price, currency)
                        .map_err(|e| StoreError::Corrupt(format!("products.price: {e}")))?;
                    let currency_ok = r.try_get::<String, _>("currency")? == currency.as_str();
                    let available = active && currency_ok && stock.is_none_or(|s| s >= quantity);
                    (name, unit_price, available)
                }
                // Removed from the catalog since it was added.
                _ => (sku.clone(), Money::zero(currency), false),
            };
            lines.push(CartLine {
                sku,
                name,
                quantity,
                unit_price,
                available,
            });
        }
        let voucher: Option<String> = c.try_get("voucher")?;
        let voucher_terms = self
            .tx_cart_voucher(tx, account, voucher.as_deref())
            .await?;
        Ok(Some(Cart {
            id,
            currency,
            voucher,
            voucher_terms,
            lines,
            updated_at: c.try_get("updated_at")?,
        }))
    }

    /// Change the conversation's cart (opening one in `currency` if needed), once per
    /// `call_id`: the call made again answers as it did the first time. The cart after it.
    pub async fn change_cart(
        &self,
        account: &AccountId,
        user: &UserKey,
        call_id: &str,
        change: CartChange<'_>,
        currency: Currency,
        now: i64,
    ) -> Result<(CartChanged, Option<Cart>), StoreError> {
        let mut tx = self.pool().begin().await?;
        if let Some(done) = self
            .claim_call::<CartChanged>(&mut tx, account, call_id, now)
            .await?
        {
            tx.rollback().await?;
            return Ok((done, self.open_cart(account, user).await?));
        }
        let outcome = match change {
            CartChange::Add { sku, quantity } => {
                let product = self
                    .tx_fetch(
                        &mut tx,
                        "SELECT stock, active, currency FROM products WHERE account = $1 AND sku = $2",
                        vec![account.into(), sku.into()],
                    )
                    .await?;
                match product.first() {
                    None => CartChanged::Unknown,
                    Some(p)
                        if p.try_get::<i64, _>("active")? == 0
                            || p.try_get::<String, _>("currency")? != currency.as_str() =>
                    {
                        CartChanged::Unknown
                    }
                    Some(p) => {
                        let stock: Option<i64> = p.try_get("stock")?;
                        let open = self
                            .tx_fetch(
                                &mut tx,
                                "SELECT c.id, i.quantity FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.id AND i.sku = $1 \
                                 WHERE c.account = $2 AND c.user_key = $3 AND c.status = 'open'",
                                vec![sku.into(), account.into(), user.into()],
                            )
                            .await?;
                        let (cart, held) = match open.first() {
                            Some(r) => (
                                Some(r.try_get::<i64, _>("id")?),
                                r.try_get::<Option<i64>, _>("quantity")?.unwrap_or(0),
                            ),
                            None => (None, 0),
                        };
                        if stock.is_some_and(|s| s < held + quantity) {
                            CartChanged::OutOfStock
                        } else {
                            let cart = match cart {
                                Some(id) => id,
                                None => {
                                    self.tx_new_cart(&mut tx, account, user, currency, now)
                                        .await?
                                }
                            };
                            self.tx_run(
                                &mut tx,
                                "INSERT INTO cart_items (cart_id, sku, quantity, added_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity",
                                vec![Val::I(cart), sku.into(), Val::I(quantity), Val::I(now)],
                            )
                            .await?;
                            CartChanged::Ok
                        }
                    }
                }
            }
            CartChange::Remove { sku } => {
                let removed = self
                    .tx_run(
                        &mut tx,
                        "DELETE FROM cart_items WHERE sku = $1 AND cart_id IN \
                         (SELECT id FROM carts WHERE account = $2 AND user_key = $3 AND status = 'open')",
                        vec![sku.into(), account.into(), user.into()],
                    )
                    .await?;
                if removed > 0 {
                    CartChanged::Ok
                } else {
                    CartChanged::Unknown
                }
            }
            CartChange::Clear => {
                self.tx_run(
                    &mut tx,
                    "UPDATE carts SET status = $1, updated_at = $2 WHERE account = $3 AND user_key = $4 AND status = 'open'",
                    vec![
                        CartStatus::Cleared.as_str().into(),
                        Val::I(now),
                        account.into(),
                        user.into(),
                    ],
                )
                .await?;
                CartChanged::Ok
            }
        };
        if outcome == CartChanged::Ok {
            self.tx_run(
                &mut tx,
                "UPDATE carts SET updated_at = $1 WHERE account = $2 AND user_key = $3 AND status = 'open'",
                vec![Val::I(now), account.into(), user.into()],
            )
            .await?;
        }
        self.finish_call(&mut tx, account, call_id, &outcome)
            .await?;
        let cart = self.tx_open_cart(&mut tx, account, user).await?;
        tx.commit().await?;
        Ok((outcome, cart))
    }

    /// Open a cart for the conversation; its id.
    pub(super) async fn tx_new_cart(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
        currency: Currency,
        now: i64,
    ) -> Result<i64, StoreError> {
        let made = self
            .tx_fetch(
                tx,
                "INSERT INTO carts (account, user_key, status, currency, created_at, updated_at) \
                 VALUES ($1, $2, 'open', $3, $4, $4) RETURNING id",
                vec![
                    account.into(),
                    user.into(),
                    currency.as_str().into(),
                    Val::I(now),
                ],
            )
            .await?;
        let row = made
            .first()
            .ok_or_else(|| StoreError::Corrupt("INSERT … RETURNING gave no row".into()))?;
        Ok(row.try_get("id")?)
    }

    /// The first statement of a call's transaction (a write: see the module doc): claims
    /// `call_id`, or gives what the call answered the first time it was made.
    pub(super) async fn claim_call<T: DeserializeOwned>(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        call_id: &str,
        now: i64,
    ) -> Result<Option<T>, StoreError> {
        let claimed = self
            .tx_run(
                tx,
                "INSERT INTO commerce_calls (account, call_id, outcome, created_at) VALUES ($1, $2, '', $3) \
                 ON CONFLICT (account, call_id) DO NOTHING",
                vec![account.into(), call_id.into(), Val::I(now)],
            )
            .await?;
        if claimed > 0 {
            return Ok(None);
        }
        let rows = self
            .tx_fetch(
                tx,
                "SELECT outcome FROM commerce_calls WHERE account = $1 AND call_id = $2",
                vec![account.into(), call_id.into()],
            )
            .await?;
        let text: String = rows
            .first()
            .map(|r| r.try_get("outcome"))
            .transpose()?
            .unwrap_or_default();
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("commerce_calls.outcome: {e}")))
    }

    /// Record what the claimed call answered, in its transaction.
    pub(super) async fn finish_call<T: Serialize>(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        call_id: &str,
        outcome: &T,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Corrupt(format!("commerce call outcome: {e}")))?;
        self.tx_run(
            tx,
            "UPDATE commerce_calls SET outcome = $1 WHERE account = $2 AND call_id = $3",
            vec![text.into(), account.into(), call_id.into()],
        )
        .await?;
        Ok(())
    }
}
