//! A call carried out against the store, after the step that asked for it was committed.

use std::time::Duration;

use super::calls::{Answer, Call, Op};
use crate::domain::Money;
use crate::domain::{AccountId, Currency, UserKey};
use crate::store::{
    CartChange, CatalogLine, Customer, OrderFilter, ProductFilter, Store, StoreError,
};

/// Tries of a call whose store is unreachable, before the flow hears it failed.
const ATTEMPTS: u32 = 4;

/// Whose call it is, in which currency the account sells.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub account: &'a AccountId,
    pub user: &'a UserKey,
    pub wa_id: Option<&'a str>,
    pub currency: Currency,
}

/// Make `call` (retrying a store that does not answer); a changing call takes effect once
/// however often it is made.
pub async fn run(store: &Store, who: Caller<'_>, call: &Call, now: i64) -> Answer {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match once(store, who, call, now).await {
            Ok(answer) => return answer,
            Err(e) if attempt < ATTEMPTS && !matches!(e, StoreError::Corrupt(_)) => {
                tracing::warn!(call = %call.id, attempt, error = %e, "A commerce call failed; trying again.");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(call = %call.id, error = %e, "A commerce call failed.");
                return Answer::Failed {
                    error: e.to_string(),
                };
            }
        }
    }
}

async fn once(store: &Store, who: Caller<'_>, call: &Call, now: i64) -> Result<Answer, StoreError> {
    let (account, user) = (who.account, who.user);
    let change = |c| store.change_cart(account, user, &call.id, c, who.currency, now);
    Ok(match &call.op {
        Op::Catalog {
            category,
            page,
            per_page,
        } => {
            let per_page = (*per_page).max(1) as i64;
            let mut products = store
                .products(
                    account,
                    &ProductFilter {
                        category: category.as_deref(),
                        active_only: true,
                        after: None,
                        offset: *page as i64 * per_page,
                        limit: per_page + 1,
                    },
                )
                .await?;
            let more = products.len() as i64 > per_page;
            products.truncate(per_page as usize);
            Answer::Page {
                products,
                page: *page,
                more,
            }
        }
        Op::Product { sku } => Answer::Product(
            store
                .product(account, sku)
                .await?
                .filter(|p| p.active)
                .map(Box::new),
        ),
        Op::CartAdd { sku, quantity } => {
            let (changed, cart) = change(CartChange::Add {
                sku,
                quantity: *quantity as i64,
            })
            .await?;
            Answer::Cart { changed, cart }
        }
        Op::CartRemove { sku } => {
            let (changed, cart) = change(CartChange::Remove { sku }).await?;
            Answer::Cart { changed, cart }
        }
        Op::CartClear => {
            let (changed, cart) = change(CartChange::Clear).await?;
            Answer::Cart { changed, cart }
        }
        Op::CartShow => Answer::Cart {
            changed: crate::store::CartChanged::Ok,
            cart: store.open_cart(account, user).await?,
        },
        Op::Checkout { name, address } => {
            let customer = Customer {
                wa_id: who.wa_id.map(str::to_string),
                name: name.clone(),
                address: address.clone(),
            };
            Answer::Checkout(
                store
                    .checkout(account, user, &call.id, &customer, now)
                    .await?,
            )
        }
        Op::CatalogOrder { wamid, items } => {
            let lines: Vec<CatalogLine> = items
                .iter()
                .map(|i| CatalogLine {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    claimed: i
                        .currency
                        .parse()
                        .ok()
                        .filter(|c| *c == who.currency)
                        .and_then(|c| Money::parse(&i.price, c).ok()),
                })
                .collect();
            let customer = Customer {
                wa_id: who.wa_id.map(str::to_string),
                name: None,
                address: None,
            };
            Answer::Checkout(
                store
                    .catalog_order(
                        account,
                        user,
                        &format!("catalog:{wamid}"),
                        &customer,
                        &lines,
                        who.currency,
                        now,
                    )
                    .await?,
            )
        }
        Op::Voucher { code } => Answer::Voucher(
            store
                .apply_voucher(account, user, &call.id, code, who.currency, now)
                .await?,
        ),
        Op::Orders => Answer::Orders(
            store
                .orders(
                    account,
                    &OrderFilter {
                        user: Some(user),
                        open_only: true,
                        limit: 10,
                        ..OrderFilter::default()
                    },
                )
                .await?,
        ),
    })
}
