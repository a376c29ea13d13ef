//! A call carried out against the store, after the step that asked for it was committed.

use std::time::Duration;

use super::calls::{Answer, Call, Op, PaymentAnswer};
use crate::domain::{AccountId, Currency, Money, PaymentMethod, PaymentStatus, UserKey};
use crate::payments::{CreatePayment, GatewayError, Gateways, Instructions, LineItem};
use crate::store::{
    CartChange, CatalogLine, Customer, NewPayment, OrderFilter, ProductFilter, Store, StoreError,
};

/// What a call needs: the store, and the payment gateways.
#[derive(Clone, Copy)]
pub struct Shop<'a> {
    pub store: &'a Store,
    pub gateways: &'a Gateways,
}

/// Why a call could not be made this time.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Store(e) => !matches!(e, StoreError::Corrupt(_)),
            CallError::Gateway(e) => e.is_retryable(),
        }
    }
}

/// Tries of a call whose store is unreachable, before the flow hears it failed.
const ATTEMPTS: u32 = 4;

/// Whose call it is, in which currency the account sells.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub account: &'a AccountId,
    pub user: &'a UserKey,
    pub wa_id: Option<&'a str>,
    pub currency: Currency,
    /// The account's payment provider, when a `payment` node names none.
    pub provider: Option<&'a str>,
}

/// Make `call` (retrying a store that does not answer); a changing call takes effect once
/// however often it is made.
pub async fn run(shop: Shop<'_>, who: Caller<'_>, call: &Call, now: i64) -> Answer {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match once(shop, who, call, now).await {
            Ok(answer) => return answer,
            Err(e) if attempt < ATTEMPTS && e.retryable() => {
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

async fn once(shop: Shop<'_>, who: Caller<'_>, call: &Call, now: i64) -> Result<Answer, CallError> {
    let store = shop.store;
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
                        active: Some(true),
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
        Op::Payment {
            order,
            provider,
            method,
            bank,
            store: outlet,
            expires_ms,
        } => {
            let request = PaymentRequest {
                order,
                provider: provider.as_deref().or(who.provider),
                method: *method,
                bank: bank.as_deref(),
                outlet: outlet.as_deref(),
                expires_ms: *expires_ms,
            };
            Answer::Payment(open_payment(shop, who, &call.id, request, now).await?)
        }
        Op::CustomOrder {
            description,
            media_id,
        } => Answer::CustomOrder(match description.trim() {
            "" => None,
            d => Some(
                store
                    .create_custom_order(
                        account,
                        user,
                        d,
                        media_id.as_deref().filter(|m| !m.is_empty()),
                        &format!("{account}:{}", call.id),
                        now,
                    )
                    .await?,
            ),
        }),
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

struct PaymentRequest<'a> {
    order: &'a str,
    provider: Option<&'a str>,
    method: PaymentMethod,
    bank: Option<&'a str>,
    outlet: Option<&'a str>,
    expires_ms: i64,
}

/// The PENDING row first (committed, with the call's id as its idempotency key), then the
/// gateway; a call made again finds the row and, once the gateway answered, its instructions.
async fn open_payment(
    shop: Shop<'_>,
    who: Caller<'_>,
    call_id: &str,
    r: PaymentRequest<'_>,
    now: i64,
) -> Result<PaymentAnswer, CallError> {
    let Some(order) = shop.store.order(who.account, r.order).await? else {
        return Ok(PaymentAnswer::Refused {
            reason: format!("no order {:?}", r.order),
        });
    };
    // No payment can be opened: the order is cancelled, its stock given back.
    let number = order.order_number.clone();
    let refused = |reason: String| async move {
        tracing::warn!(order = %number, %reason, "An order cannot be paid.");
        shop.store
            .set_order_status(
                who.account,
                &number,
                crate::domain::OrderStatus::Cancelled,
                Some(&reason),
                now,
            )
            .await?;
        Ok::<_, CallError>(PaymentAnswer::Refused { reason })
    };
    let Some(provider) = r.provider else {
        return refused("no payment provider is configured for this account".into()).await;
    };
    let Some(gateway) = shop.gateways.get(provider) else {
        return refused(format!("no payment provider {provider:?}")).await;
    };
    if !crate::payments::supports(gateway.kind(), r.method) {
        return refused(format!(
            "{} cannot take {} payments",
            gateway.kind(),
            r.method
        ))
        .await;
    }
    let p = shop
        .store
        .open_payment(&NewPayment {
            account: who.account,
            order_id: order.id,
            user_key: who.user.as_str(),
            provider,
            kind: gateway.kind(),
            method: r.method,
            bank: r.bank,
            amount: order.total,
            expires_at: now + r.expires_ms,
            idem_key: call_id,
            now,
        })
        .await?;
    if p.status != PaymentStatus::Pending {
        return Ok(PaymentAnswer::Settled {
            payment_id: p.id,
            status: p.status,
        });
    }
    if let Some(instructions) = p
        .details
        .as_deref()
        .and_then(|d| serde_json::from_str::<Instructions>(d).ok())
    {
        return Ok(PaymentAnswer::Opened {
            payment_id: p.id,
            instructions,
            amount: p.amount,
            order: order.order_number,
        });
    }
    let request = CreatePayment {
        payment_id: p.gateway_id(),
        idempotency_key: call_id.to_string(),
        amount: p.amount,
        method: r.method,
        bank: r.bank.map(str::to_string),
        store: r.outlet.map(str::to_string),
        description: format!("Order {}", order.order_number),
        items: order
            .items
            .iter()
            .map(|i| LineItem {
                name: i.name.clone(),
                quantity: i.quantity as u32,
                unit_price: i.unit_price,
            })
            .collect(),
        customer: crate::payments::Customer {
            name: order
                .customer_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "Customer".into()),
            email: None,
            phone: who.wa_id.unwrap_or(who.user.as_str()).to_string(),
        },
        expires_at_unix: p.expires_at / 1000,
        now_unix: now / 1000,
        callback_url: None,
        return_url: None,
    };
    match gateway.create(&request).await {
        Ok(created) => {
            let details = serde_json::to_string(&created.instructions)
                .map_err(|e| StoreError::Corrupt(format!("payment instructions: {e}")))?;
            shop.store
                .payment_created(
                    p.id,
                    &created.provider_ref,
                    code_of(&created.instructions),
                    &details,
                    created.expires_at_unix.map(|s| s * 1000),
                    now,
                )
                .await?;
            Ok(PaymentAnswer::Opened {
                payment_id: p.id,
                instructions: created.instructions,
                amount: p.amount,
                order: order.order_number,
            })
        }
        Err(e) if e.is_retryable() => Err(e.into()),
        Err(e) => {
            tracing::warn!(payment = p.id, error = %e, "A gateway refused to open a payment.");
            shop.store
                .settle_payment(
                    p.id,
                    PaymentStatus::Pending,
                    PaymentStatus::Failed,
                    None,
                    now,
                )
                .await?;
            Ok(PaymentAnswer::Refused {
                reason: e.to_string(),
            })
        }
    }
}

/// The number the customer pays to (a VA, a bill key, a pay code), kept on the row.
fn code_of(i: &Instructions) -> Option<&str> {
    match i {
        Instructions::VirtualAccount { number, .. } => Some(number),
        Instructions::BillPayment { bill_key, .. } => Some(bill_key),
        Instructions::PayCode { code, .. } => Some(code),
        Instructions::Link { url } => Some(url),
        Instructions::Qris { .. } | Instructions::Manual { .. } => None,
    }
}
