//! `/admin/v1/` commerce: the catalog (products, categories, stock, CSV import), materials,
//! orders, vouchers, subscriptions and refunds.
//!
//! The account is the `account` query parameter (a configured phone_number_id), which may be
//! left out when exactly one account is configured. Money is a decimal string in the
//! account's currency ("50000"; an integer is taken too, a JSON float never). Requests are
//! typed at the edge (unknown fields refused); every error is `{"error": "..."}`: 400 bad
//! JSON or query, 404, 409 a conflict with the state, 413 too large, 415 not CSV, 422 invalid.
//!
//! Products: `POST /products` creates or updates by `sku`; a field left out keeps its value
//! on an update (its default on a create: untracked stock, active, kind product, position
//! 0), `null` clears it. A product's category must exist (`POST /categories` first): a typo
//! does not make a new category.
//!
//! Materials: `POST /materials` creates or updates by `name` (its `unit` required on a
//! create); quantities (`stock`, `min_stock`, a product's `quantity` per unit, a stock
//! `delta` or `set`) are decimal strings ("0.25") or whole numbers, never JSON floats. A
//! product's stock changes in whole units.
//!
//! Here the routes and what the commerce endpoints share (the account, money, optional fields;
//! errors, bodies and cursors are `super::api`'s);
//! `products.rs`, `import.rs` (CSV), `categories.rs`, `materials.rs`, `orders.rs`,
//! `vouchers.rs`, `subscriptions.rs`, `refunds.rs` (a payment's refund) the endpoints; `owner.rs` telling an account's owner.

mod categories;
mod custom_orders;
mod import;
mod materials;
mod orders;
pub mod owner;
pub(in crate::ingress) use categories::CategoryBody;
pub(in crate::ingress) use custom_orders::Change as CustomOrderChange;
pub(in crate::ingress) use materials::{MaterialFields, MaterialLinesBody};
pub(in crate::ingress) use orders::OrderChange;
pub(in crate::ingress) use products::ProductFields;
pub(in crate::ingress) use refunds::RefundBody;
pub(in crate::ingress) use vouchers::VoucherFields;
mod products;
mod refunds;
pub(crate) use refunds::settle_pending as settle_pending_refunds;
mod subscriptions;
mod vouchers;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::de::Deserializer;
use serde::Deserialize;
use serde_json::Value;

use super::api::{
    body_bytes, id_cursor, json_body, page, page_limit, query, text_cursor, Answer, ApiError,
};
use super::AppState;
use crate::domain::material::StockChange;
use crate::domain::{AccountId, Currency, Money, MoneyError};
use crate::store::StoreError;
use categories::{delete_category, list_categories, put_category};
use custom_orders::{list_custom_orders, patch_custom_order, show_custom_order};
use import::{import_products, IMPORT_MAX_BODY};
use materials::{
    adjust_material, delete_material, list_materials, patch_material, put_material,
    put_product_materials, show_material,
};
use orders::{list_orders, patch_order, show_order};
use products::{
    adjust_stock, delete_product, list_products, patch_product, put_product, show_product,
};
use subscriptions::{list_subscriptions, show_subscription};
use vouchers::{delete_voucher, list_vouchers, patch_voucher, put_voucher, show_voucher};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/products", get(list_products).post(put_product))
        .route(
            "/products/import",
            post(import_products).layer(DefaultBodyLimit::max(IMPORT_MAX_BODY)),
        )
        .route(
            "/products/{sku}",
            get(show_product)
                .patch(patch_product)
                .delete(delete_product),
        )
        .route("/products/{sku}/stock", post(adjust_stock))
        .route("/products/{sku}/materials", put(put_product_materials))
        .route("/materials", get(list_materials).post(put_material))
        .route(
            "/materials/{name}",
            get(show_material)
                .patch(patch_material)
                .delete(delete_material),
        )
        .route("/materials/{name}/stock", post(adjust_material))
        .route("/subscriptions", get(list_subscriptions))
        .route("/subscriptions/{id}", get(show_subscription))
        .route("/categories", get(list_categories).post(put_category))
        .route("/categories/{slug}", delete(delete_category))
        .route("/orders", get(list_orders))
        .route("/orders/{number}", get(show_order).patch(patch_order))
        .route("/custom-orders", get(list_custom_orders))
        .route(
            "/custom-orders/{id}",
            get(show_custom_order).patch(patch_custom_order),
        )
        .route("/payments/{id}/refund", post(refunds::refund_payment))
        .route("/vouchers", get(list_vouchers).post(put_voucher))
        .route(
            "/vouchers/{code}",
            get(show_voucher)
                .patch(patch_voucher)
                .delete(delete_voucher),
        )
}

/// The account a request names (or the only one configured), and its currency.
fn account(app: &AppState, given: Option<&str>) -> Result<(AccountId, Currency), ApiError> {
    let settings = app.engine.settings_arc();
    let found = match given {
        Some(id) => settings.account(id),
        None if settings.accounts.len() == 1 => settings.accounts.first(),
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "several accounts are configured: give ?account=PHONE_NUMBER_ID",
            ))
        }
    };
    found
        .map(|a| (a.phone_number_id.clone(), a.currency))
        .ok_or_else(|| ApiError::not_found("unknown account"))
}

/// An optional field that may not be `null` (left out: None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field that may be `null` (cleared), apart from left out (None).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A text to a customer of `account` (outside the 24 h window: as `policy` says), once per
/// `request_id`.
async fn tell(
    app: &AppState,
    account: &AccountId,
    user: &str,
    request_id: String,
    body: String,
    policy: crate::domain::WindowPolicy,
) {
    tell_through(&app.router, account, user, request_id, body, policy).await
}

/// [`tell`] for a caller holding the account router alone (the reconciliation pass).
async fn tell_through(
    router: &crate::actors::AccountRouter,
    account: &AccountId,
    user: &str,
    request_id: String,
    body: String,
    policy: crate::domain::WindowPolicy,
) {
    let Some(actor) = router.get(account.as_str()) else {
        return;
    };
    let event = crate::conversation::ConversationEvent::Outgoing {
        request_id: request_id.clone(),
        message: crate::whatsapp::send::OutboundMessage::Text {
            body,
            preview_url: false,
        },
        reply_to: None,
        policy: Some(policy),
    };
    let told = crate::ingress::command(&actor, user, event).await;
    if !matches!(told, Ok(Ok(_))) {
        tracing::warn!(%request_id, "A customer could not be told of a change.");
    }
}

fn now(app: &AppState) -> i64 {
    app.engine.clock.now_ms()
}

#[derive(Debug, Deserialize)]
struct AccountParam {
    account: Option<String>,
}

/// A price as given: a decimal string, a whole number, or (refused) anything else.
#[derive(Debug)]
enum Price {
    Text(String),
    Whole(i64),
    Other(String),
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => Price::Text(s),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Price::Whole(i),
                None => Price::Other(n.to_string()),
            },
            other => Price::Other(other.to_string()),
        })
    }
}

impl Price {
    fn money(&self, currency: Currency) -> Result<Money, String> {
        match self {
            Price::Text(text) => Money::parse(text, currency).map_err(|e| match e {
                MoneyError::Negative(_) => format!("price {text:?} is negative"),
                MoneyError::TooPrecise { places, .. } => format!(
                    "price {text:?} has more than {places} decimal places for {currency}"
                ),
                _ => format!("price {text:?} is not an amount"),
            }),
            Price::Whole(n) if *n < 0 => Err(format!("price {n} is negative")),
            Price::Whole(n) => Money::new((*n).into(), currency).map_err(|e| format!("price: {e}")),
            Price::Other(v) => Err(format!(
                "price {v} must be a decimal string (\"12.50\") or a whole number, never a JSON float"
            )),
        }
    }
}

/// A stock change as given: `{"delta": …}` or `{"set": …}` (one of them), and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct StockBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    delta: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    set: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
}

impl StockBody {
    /// The change (its amount still as given) and the reason, or 422.
    fn change(self) -> Result<(StockChange<Value>, Option<String>), ApiError> {
        if self
            .reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > 200)
        {
            return Err(ApiError::invalid("reason must be at most 200 characters"));
        }
        let change = match (self.delta, self.set) {
            (Some(d), None) => StockChange::Delta(d),
            (None, Some(s)) => StockChange::Set(s),
            _ => return Err(ApiError::invalid("give either delta or set")),
        };
        Ok((change, self.reason))
    }
}

fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
