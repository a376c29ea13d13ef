//! Orders from WhatsApp's catalog `order` message: priced from our catalog, their stock
//! reserved as a checkout's, once per message.

use super::orders::{NewOrder, OrderStock, WantedLine};
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
        // The claim is the transaction's first statement, a write (see store/carts.rs).
        if let Some(done) = self
            .claim_call::<Checkout>(&mut tx, account, idem_key, now)
            .await?
        {
            tx.rollback().await?;
            return Ok(done);
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
        let ordered = Checkout::Ordered {
            order: Box::new(order),
        };
        self.finish_call(&mut tx, account, idem_key, &ordered)
            .await?;
        tx.commit().await?;
        Ok(ordered)
    }
}
