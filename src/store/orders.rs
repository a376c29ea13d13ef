//! Orders and their items: a checkout turns the open cart into an order in one transaction,
//! reserving the stock of every line (all or none); payment commits the reservation, expiry or
//! cancellation releases it. Written through the pool.
//!
//! Lock order: a checkout updates its products in sku order, so two checkouts of the same
//! products on PostgreSQL wait for each other instead of deadlocking.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{
    AccountId, CartStatus, Currency, Money, OrderPayment, OrderSource, OrderStatus, UserKey,
};

/// Where an order's stock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStock {
    /// Held for the payment.
    Reserved,
    /// Sold.
    Committed,
    /// Given back (expired or cancelled).
    Released,
}

impl OrderStock {
    /// What a new order's stock is: held for its payment if any line is tracked.
    pub(super) fn of_new(any_tracked: bool) -> OrderStock {
        if any_tracked {
            OrderStock::Reserved
        } else {
            OrderStock::Committed
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            OrderStock::Reserved => "reserved",
            OrderStock::Committed => "committed",
            OrderStock::Released => "released",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub subtotal: Money,
    /// What a catalog `order` message claimed, when it differed from our price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_price: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: i64,
    pub order_number: String,
    pub user_key: String,
    pub customer_name: Option<String>,
    pub customer_address: Option<String>,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    pub status: OrderStatus,
    pub payment_status: OrderPayment,
    pub voucher: Option<String>,
    pub source: OrderSource,
    pub notes: Option<String>,
    pub stock: OrderStock,
    pub created_at: i64,
    pub updated_at: i64,
    pub items: Vec<OrderItem>,
}

/// Who the order is for.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    pub wa_id: Option<String>,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// What a checkout did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Checkout {
    Ordered {
        order: Box<Order>,
    },
    /// A line cannot be had in its quantity: nothing was reserved.
    OutOfStock {
        sku: String,
        name: String,
    },
    /// No such product (a catalog order naming a sku we do not sell).
    Unknown {
        sku: String,
    },
    /// No open cart, or an empty one.
    Empty,
    /// The cart's voucher cannot be claimed now: nothing was reserved, and the voucher is off
    /// the cart (the next checkout goes without it).
    VoucherRefused {
        code: String,
        reason: crate::domain::VoucherRefusal,
    },
}

/// A line to reserve.
pub(super) struct WantedLine {
    pub(super) sku: String,
    pub(super) quantity: i64,
    pub(super) claimed: Option<Money>,
}

const ORDER_COLUMNS: &str = "id, order_number, user_key, customer_name, customer_address, subtotal, discount, total, currency, status, payment_status, voucher, source, notes, stock, created_at, updated_at";

fn money(r: &sqlx::any::AnyRow, column: &str, currency: Currency) -> Result<Money, StoreError> {
    Money::parse(&r.try_get::<String, _>(column)?, currency)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn order_of(r: &sqlx::any::AnyRow) -> Result<Order, StoreError> {
    let currency: Currency = r
        .try_get::<String, _>("currency")?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("orders.currency: {e}")))?;
    let stock = match r.try_get::<String, _>("stock")?.as_str() {
        "reserved" => OrderStock::Reserved,
        "committed" => OrderStock::Committed,
        "released" => OrderStock::Released,
        other => return Err(StoreError::Corrupt(format!("orders.stock: {other:?}"))),
    };
    Ok(Order {
        id: r.try_get("id")?,
        order_number: r.try_get("order_number")?,
        user_key: r.try_get("user_key")?,
        customer_name: r.try_get("customer_name")?,
        customer_address: r.try_get("customer_address")?,
        subtotal: money(r, "subtotal", currency)?,
        discount: money(r, "discount", currency)?,
        total: money(r, "total", currency)?,
        status: stored(r, "status")?,
        payment_status: stored(r, "payment_status")?,
        voucher: r.try_get("voucher")?,
        source: stored(r, "source")?,
        notes: r.try_get("notes")?,
        stock,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        items: Vec::new(),
    })
}

fn subtotal_of(items: &[OrderItem], currency: Currency) -> Result<Money, StoreError> {
    items
        .iter()
        .try_fold(Money::zero(currency), |sum, i| sum.plus(&i.subtotal))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The human-readable number of the order with this id: unique as the id is.
pub fn order_number(id: i64) -> String {
    format!("ORD-{id:06}")
}

/// Which orders a listing shows.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter<'a> {
    pub user: Option<&'a UserKey>,
    /// Only those not completed or cancelled.
    pub open_only: bool,
    pub status: Option<OrderStatus>,
    /// Those with a smaller id (newest first): the admin API's cursor.
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Turn the conversation's open cart into an order, reserving every line's stock, once per
    /// `idem_key` (a checkout made again after a crash finds its order).
    pub async fn checkout(
        &self,
        account: &AccountId,
        user: &UserKey,
        idem_key: &str,
        customer: &Customer,
        now: i64,
    ) -> Result<Checkout, StoreError> {
        let mut tx = self.pool().begin().await?;
        // A write first (see store/carts.rs), which also holds the cart on PostgreSQL.
        self.tx_run(
            &mut tx,
            "UPDATE carts SET updated_at = $1 WHERE account = $2 AND user_key = $3 AND status = 'open'",
            vec![Val::I(now), account.into(), user.into()],
        )
        .await?;
        if let Some(order) = self.tx_order_by_key(&mut tx, idem_key).await? {
            tx.commit().await?;
            return Ok(Checkout::Ordered {
                order: Box::new(order),
            });
        }
        if let Some(refused) = self.tx_refused_checkout(&mut tx, account, idem_key).await? {
            tx.commit().await?;
            return Ok(refused);
        }
        let Some(cart) = self.tx_open_cart(&mut tx, account, user).await? else {
            tx.rollback().await?;
            return Ok(Checkout::Empty);
        };
        if cart.lines.is_empty() {
            tx.rollback().await?;
            return Ok(Checkout::Empty);
        }
        let wanted: Vec<WantedLine> = cart
            .lines
            .iter()
            .map(|l| WantedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                claimed: None,
            })
            .collect();
        let (items, any_tracked) = match self
            .tx_reserve(&mut tx, account, cart.currency, wanted, now)
            .await?
        {
            Ok(reserved) => reserved,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(refused);
            }
        };
        // The cart's voucher claimed in this transaction, or the checkout refused for it.
        let (code, subtotal) = (cart.voucher.as_deref(), subtotal_of(&items, cart.currency)?);
        let discount = match self
            .tx_checkout_voucher(&mut tx, account, user, code, subtotal, now)
            .await?
        {
            Ok(off) => off,
            Err(refused) => {
                tx.rollback().await?;
                return self
                    .refuse_checkout_voucher(account, user, idem_key, refused, now)
                    .await;
            }
        };
        let order = self
            .tx_insert_order(
                &mut tx,
                NewOrder {
                    account,
                    user,
                    idem_key,
                    customer,
                    currency: cart.currency,
                    voucher: cart.voucher.clone(),
                    discount,
                    items,
                    source: OrderSource::Whatsapp,
                    stock: OrderStock::of_new(any_tracked),
                    now,
                },
            )
            .await?;
        if let Some(code) = cart.voucher.as_deref() {
            self.tx_claim_order(&mut tx, account, user, code, order.id)
                .await?;
        }
        self.tx_run(
            &mut tx,
            // A reminded cart that becomes an order was recovered (store/sweeps.rs).
            "UPDATE carts SET status = $1, order_id = $2, updated_at = $3, \
             recovery = CASE WHEN recovery IN ('pending', 'sent') THEN 'recovered' ELSE recovery END \
             WHERE id = $4",
            vec![
                CartStatus::Ordered.as_str().into(),
                Val::I(order.id),
                Val::I(now),
                Val::I(cart.id),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Checkout::Ordered {
            order: Box::new(order),
        })
    }

    /// Reserve every line's stock in sku order (the lock order), all or none: the priced
    /// items and whether any is tracked, or why the order cannot be had.
    pub(super) async fn tx_reserve(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        currency: Currency,
        mut wanted: Vec<WantedLine>,
        now: i64,
    ) -> Result<Result<(Vec<OrderItem>, bool), Checkout>, StoreError> {
        wanted.sort_by(|a, b| a.sku.cmp(&b.sku));
        let mut items = Vec::with_capacity(wanted.len());
        let mut any_tracked = false;
        for line in wanted {
            let reserved = self
                .tx_fetch(
                    tx,
                    "UPDATE products SET stock = stock - $1, \
                     reserved = reserved + CASE WHEN stock IS NULL THEN 0 ELSE $1 END, updated_at = $2 \
                     WHERE account = $3 AND sku = $4 AND active = 1 AND currency = $5 AND (stock IS NULL OR stock >= $1) \
                     RETURNING name, price, stock",
                    vec![
                        Val::I(line.quantity),
                        Val::I(now),
                        account.into(),
                        line.sku.as_str().into(),
                        currency.as_str().into(),
                    ],
                )
                .await?;
            let Some(r) = reserved.first() else {
                let known = self
                    .tx_fetch(
                        tx,
                        "SELECT name FROM products WHERE account = $1 AND sku = $2 AND active = 1 AND currency = $3",
                        vec![
                            account.into(),
                            line.sku.as_str().into(),
                            currency.as_str().into(),
                        ],
                    )
                    .await?;
                return Ok(Err(match known.first() {
                    Some(p) => Checkout::OutOfStock {
                        sku: line.sku,
                        name: p.try_get("name")?,
                    },
                    None => Checkout::Unknown { sku: line.sku },
                }));
            };
            any_tracked |= r.try_get::<Option<i64>, _>("stock")?.is_some();
            let unit_price = money(r, "price", currency)?;
            let subtotal = unit_price
                .times(line.quantity as u32)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            items.push(OrderItem {
                sku: line.sku,
                name: r.try_get("name")?,
                quantity: line.quantity,
                unit_price,
                subtotal,
                catalog_price: line.claimed.filter(|c| *c != unit_price),
            });
        }
        Ok(Ok((items, any_tracked)))
    }

    pub(super) async fn tx_insert_order(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        o: NewOrder<'_>,
    ) -> Result<Order, StoreError> {
        let currency = o.currency;
        let subtotal = subtotal_of(&o.items, currency)?;
        let discount = o.discount;
        let total = subtotal
            .minus_saturating(&discount)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = self
            .tx_fetch(
                tx,
                "INSERT INTO orders (account, order_number, user_key, wa_id, customer_name, customer_address, subtotal, discount, total, currency, status, payment_status, voucher, source, stock, idem_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $2, $16, $16) RETURNING id",
                vec![
                    o.account.into(),
                    o.idem_key.into(),
                    o.user.into(),
                    Val::OptS(o.customer.wa_id.clone()),
                    Val::OptS(o.customer.name.clone()),
                    Val::OptS(o.customer.address.clone()),
                    subtotal.plain().into(),
                    discount.plain().into(),
                    total.plain().into(),
                    currency.as_str().into(),
                    OrderStatus::Pending.as_str().into(),
                    OrderPayment::Unpaid.as_str().into(),
                    Val::OptS(o.voucher.clone()),
                    o.source.as_str().into(),
                    o.stock.as_str().into(),
                    Val::I(o.now),
                ],
            )
            .await?;
        let id: i64 = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("INSERT … RETURNING gave no row".into()))?
            .try_get("id")?;
        let number = order_number(id);
        self.tx_run(
            tx,
            "UPDATE orders SET order_number = $1 WHERE id = $2",
            vec![number.as_str().into(), Val::I(id)],
        )
        .await?;
        for (line, item) in o.items.iter().enumerate() {
            self.tx_run(
                tx,
                "INSERT INTO order_items (order_id, line, sku, name, quantity, unit_price, subtotal, catalog_price) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    Val::I(id),
                    Val::I(line as i64 + 1),
                    item.sku.as_str().into(),
                    item.name.as_str().into(),
                    Val::I(item.quantity),
                    item.unit_price.plain().into(),
                    item.subtotal.plain().into(),
                    Val::OptS(item.catalog_price.map(|m| m.plain())),
                ],
            )
            .await?;
        }
        let e = NewHookEvent {
            account: o.account.to_string(),
            user_key: Some(o.user.to_string()),
            event_type: crate::hooks::EventType::OrderCreated,
            data: serde_json::json!({
                "order_id": id,
                "order_number": number,
                "source": o.source.as_str(),
                "currency": currency.as_str(),
                "subtotal": subtotal.plain(),
                "discount": discount.plain(),
                "total": total.plain(),
                "items": o.items.iter().map(|i| serde_json::json!({
                    "sku": i.sku.as_str(),
                    "name": i.name,
                    "quantity": i.quantity,
                    "unit_price": i.unit_price.plain(),
                })).collect::<Vec<_>>(),
            }),
            dedup_key: format!("order:{id}"),
            at: o.now,
        };
        self.tx_hook_event(tx, &e).await?;
        Ok(Order {
            id,
            order_number: number,
            user_key: o.user.to_string(),
            customer_name: o.customer.name.clone(),
            customer_address: o.customer.address.clone(),
            subtotal,
            discount,
            total,
            status: OrderStatus::Pending,
            payment_status: OrderPayment::Unpaid,
            voucher: o.voucher,
            source: o.source,
            notes: None,
            stock: o.stock,
            created_at: o.now,
            updated_at: o.now,
            items: o.items,
        })
    }

    pub(super) async fn tx_order_by_key(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        idem_key: &str,
    ) -> Result<Option<Order>, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE idem_key = $1"),
                vec![idem_key.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let mut order = order_of(r)?;
        order.items = self.tx_items(tx, order.id, order.total.currency).await?;
        Ok(Some(order))
    }

    async fn tx_items(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        order: i64,
        currency: Currency,
    ) -> Result<Vec<OrderItem>, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                "SELECT sku, name, quantity, unit_price, subtotal, catalog_price FROM order_items WHERE order_id = $1 ORDER BY line",
                vec![Val::I(order)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let catalog_price: Option<String> = r.try_get("catalog_price")?;
                Ok(OrderItem {
                    sku: r.try_get("sku")?,
                    name: r.try_get("name")?,
                    quantity: r.try_get("quantity")?,
                    unit_price: money(r, "unit_price", currency)?,
                    subtotal: money(r, "subtotal", currency)?,
                    catalog_price: catalog_price
                        .map(|p| Money::parse(&p, currency))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("catalog_price: {e}")))?,
                })
            })
            .collect()
    }

    /// Orders of an account, newest first, with their items.
    pub async fn orders(
        &self,
        account: &AccountId,
        f: &OrderFilter<'_>,
    ) -> Result<Vec<Order>, StoreError> {
        let mut text = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE account = $1");
        let mut vals: Vec<Val> = vec![account.into()];
        if let Some(u) = f.user {
            vals.push(u.into());
            text.push_str(&format!(" AND user_key = ${}", vals.len()));
        }
        if f.open_only {
            text.push_str(" AND status IN ('pending', 'processing')");
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
        let mut tx = self.pool().begin().await?;
        let rows = self.tx_fetch(&mut tx, &text, vals).await?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut o = order_of(r)?;
            o.items = self.tx_items(&mut tx, o.id, o.total.currency).await?;
            orders.push(o);
        }
        tx.commit().await?;
        Ok(orders)
    }

    /// One order by its number.
    pub async fn order(
        &self,
        account: &AccountId,
        number: &str,
    ) -> Result<Option<Order>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let rows = self
            .tx_fetch(
                &mut tx,
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE account = $1 AND order_number = $2"
                ),
                vec![account.into(), number.into()],
            )
            .await?;
        let order = match rows.first() {
            Some(r) => {
                let mut o = order_of(r)?;
                o.items = self.tx_items(&mut tx, o.id, o.total.currency).await?;
                Some(o)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(order)
    }

    /// Move an order to `status`: cancelling gives its reserved stock back. The order after
    /// it, or None when there is none; a completed or cancelled order does not move.
    pub async fn set_order_status(
        &self,
        account: &AccountId,
        number: &str,
        status: OrderStatus,
        notes: Option<&str>,
        now: i64,
    ) -> Result<Option<Order>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let changed = self
            .tx_run(
                &mut tx,
                "UPDATE orders SET status = $1, notes = COALESCE($2, notes), updated_at = $3 \
                 WHERE account = $4 AND order_number = $5 AND status IN ('pending', 'processing')",
                vec![
                    status.as_str().into(),
                    Val::OptS(notes.map(str::to_string)),
                    Val::I(now),
                    account.into(),
                    number.into(),
                ],
            )
            .await?;
        if changed > 0 && status == OrderStatus::Cancelled {
            self.tx_release_stock(&mut tx, account, number, now).await?;
        }
        tx.commit().await?;
        self.order(account, number).await
    }

    /// The order `number`'s reserved units back to stock ([`Store::tx_release_order`]).
    pub(super) async fn tx_release_stock(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        number: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                "SELECT id FROM orders WHERE account = $1 AND order_number = $2",
                vec![account.into(), number.into()],
            )
            .await?;
        match rows.first() {
            Some(r) => {
                self.tx_release_order(tx, account, r.try_get("id")?, now)
                    .await
            }
            None => Ok(false),
        }
    }

    /// Give a reserved order's units back to stock (once: the order's stock state moves).
    pub(super) async fn tx_release_order(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        order: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.tx_settle_stock(tx, account, order, OrderStock::Released, now)
            .await
    }

    /// A reserved order's units leave `reserved`, once: sold (`Committed`) or back on hand
    /// (`Released`). Whether they moved (false: the order held none).
    pub(super) async fn tx_settle_stock(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        order: i64,
        to: OrderStock,
        now: i64,
    ) -> Result<bool, StoreError> {
        let moved = self
            .tx_run(
                tx,
                "UPDATE orders SET stock = $1, updated_at = $2 \
                 WHERE account = $3 AND id = $4 AND stock = 'reserved'",
                vec![
                    to.as_str().into(),
                    Val::I(now),
                    account.into(),
                    Val::I(order),
                ],
            )
            .await?;
        if moved == 0 {
            return Ok(false);
        }
        let items = self
            .tx_fetch(
                tx,
                "SELECT sku, quantity FROM order_items WHERE order_id = $1 ORDER BY sku",
                vec![Val::I(order)],
            )
            .await?;
        let back = if to == OrderStock::Released { 1 } else { 0 };
        for item in &items {
            self.tx_run(
                tx,
                "UPDATE products SET stock = stock + $1 * $2, reserved = reserved - $1, updated_at = $3 \
                 WHERE account = $4 AND sku = $5 AND stock IS NOT NULL",
                vec![
                    Val::I(item.try_get("quantity")?),
                    Val::I(back),
                    Val::I(now),
                    account.into(),
                    item.try_get::<String, _>("sku")?.into(),
                ],
            )
            .await?;
        }
        Ok(true)
    }
}

pub(super) struct NewOrder<'a> {
    pub(super) account: &'a AccountId,
    pub(super) user: &'a UserKey,
    pub(super) idem_key: &'a str,
    pub(super) customer: &'a Customer,
    pub(super) currency: Currency,
    pub(super) voucher: Option<String>,
    /// What the voucher takes off the subtotal (zero without one).
    pub(super) discount: Money,
    pub(super) items: Vec<OrderItem>,
    pub(super) source: OrderSource,
    pub(super) stock: OrderStock,
    pub(super) now: i64,
}
