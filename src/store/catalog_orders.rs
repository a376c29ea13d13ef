//! Orders from WhatsApp's catalog `order` message: priced from our catalog, their stock
//! reserved as a checkout's, once per message.

use super::orders::{NewOrder, OrderStock, WantedLine};
use super::sql::Val;
use super::*;
use crate::domain::{AccountId, Currency, Money, OrderSource, UserKey};

/// A line of WhatsApp's catalog `order` message.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogLine {
    /// `product_retailer_id`.
    pub sku: String,
    pub quantity: i64,
    /// `item_price` as the message claimed it, if it is an amount of our currency.
    pub claimed: Option<Money>,
}

impl Store {
    /// An order from WhatsApp's catalog `order` message, priced from our catalog by sku (a
    /// price the message claimed that differs from ours is kept beside it; ours wins), its
    /// stock reserved as a checkout's; once per `idem_key` (the message's wamid).
    #[allow(clippy::too_many_arguments)]
    pub async fn catalog_order(
        &self,
        account: &AccountId,
        user: &UserKey,
        idem_key: &str,
        customer: &Customer,
        lines: &[CatalogLine],
        currency: Currency,
        now: i64,
    ) -> Result<Checkout, StoreError> {
        let mut tx = self.pool().begin().await?;
        // A write first (see store/carts.rs).
        let claimed = self
            .tx_run(
                &mut tx,
                "INSERT INTO commerce_calls (account, call_id, outcome, created_at) VALUES ($1, $2, 'catalog order', $3) \
                 ON CONFLICT (account, call_id) DO NOTHING",
                vec![account.into(), idem_key.into(), Val::I(now)],
            )
            .await?;
        if claimed == 0 {
            if let Some(order) = self.tx_order_by_key(&mut tx, idem_key).await? {
                tx.commit().await?;
                return Ok(Checkout::Ordered {
                    order: Box::new(order),
                });
            }
        }
        let mut merged: Vec<WantedLine> = Vec::new();
        for l in lines.iter().filter(|l| l.quantity > 0) {
            match merged.iter_mut().find(|w| w.sku == l.sku) {
                Some(w) => w.quantity += l.quantity,
                None => merged.push(WantedLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    claimed: l.claimed,
                }),
            }
        }
        if merged.is_empty() {
            tx.rollback().await?;
            return Ok(Checkout::Empty);
        }
        let (items, any_tracked) = match self
            .tx_reserve(&mut tx, account, currency, merged, now)
            .await?
        {
            Ok(reserved) => reserved,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(refused);
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
                    currency,
                    voucher: None,
                    discount: Money::zero(currency),
                    items,
                    source: OrderSource::Catalog,
                    stock: OrderStock::of_new(any_tracked),
                    now,
                },
            )
            .await?;
        tx.commit().await?;
        Ok(Checkout::Ordered {
            order: Box::new(order),
        })
    }
}
