//! `/admin/v1/` commerce: the catalog (products, categories, stock, CSV import) and orders.
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

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::domain::{AccountId, Currency, Money, MoneyError, OrderStatus, ProductKind, UserKey};
use crate::store::{
    CatalogQuery, Category, CategoryDeleted, Order, OrderFilter, OrderUpdate, Product,
    ProductWrite, StoreError,
};

/// A catalog of 10,000 products as CSV is a few MiB.
pub const IMPORT_MAX_BODY: usize = 16 * 1024 * 1024;
const IMPORT_MAX_ROWS: usize = 10_000;
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// CSV columns, in the order a template would have them.
const COLUMNS: [&str; 12] = [
    "sku",
    "name",
    "price",
    "stock",
    "category",
    "description",
    "image_url",
    "active",
    "kind",
    "period_days",
    "access_link",
    "position",
];

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
        .route("/categories", get(list_categories).post(put_category))
        .route("/categories/{slug}", delete(delete_category))
        .route("/orders", get(list_orders))
        .route("/orders/{number}", get(show_order).patch(patch_order))
}

/// An answer other than success: `{"error": message}` (and `errors`, each problem, when
/// there are several).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 422 with every problem found.
    fn problems(errors: Vec<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: errors.join("; "),
            errors,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        (self.status, Json(body)).into_response()
    }
}

type Answer = Result<Response, ApiError>;

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

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        status => ApiError::new(status, e.body_text()),
    })
}

/// A JSON body as `T`: 400 when it is not JSON, 422 when it does not fit `T`.
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("bad request body: {e}")),
        _ => ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    })
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

/// An opaque page cursor: the hex of the text it stands for.
fn cursor(text: &str) -> String {
    hex::encode(text)
}

fn uncursor(given: &str) -> Result<String, ApiError> {
    hex::decode(given)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad cursor"))
}

fn page_limit(given: Option<i64>) -> Result<i64, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1..={MAX_LIMIT}"))),
    }
}

fn now(app: &AppState) -> i64 {
    app.engine.clock.now_ms()
}

// --- products -------------------------------------------------------------------------

fn product_view(p: &Product) -> Value {
    json!({
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "price": p.price.plain(),
        "currency": p.price.currency,
        "stock": p.stock,
        "reserved": p.reserved,
        "image_url": p.image_url,
        "category": p.category,
        "active": p.active,
        "kind": p.kind,
        "period_days": p.period_days,
        "access_link": p.access_link,
        "position": p.position,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

/// A product's fields as a request gives them: None left out, `Some(None)` cleared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductFields {
    #[serde(default, deserialize_with = "present")]
    sku: Option<String>,
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    price: Option<Price>,
    #[serde(default, deserialize_with = "nullable")]
    stock: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    image_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    category: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    kind: Option<ProductKind>,
    #[serde(default, deserialize_with = "nullable")]
    period_days: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    access_link: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    position: Option<i64>,
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

fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_sku(sku: &str) -> Result<(), String> {
    if !valid_key(sku) {
        return Err(format!(
            "sku {sku:?} must be 1..=64 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    if sku == "import" {
        return Err("sku \"import\" is reserved (POST /products/import)".into());
    }
    Ok(())
}

fn check_https(field: &str, value: &str) -> Result<(), String> {
    let ok = value.len() <= 2048
        && url::Url::parse(value).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(format!("{field} must be an https URL (at most 2048 bytes)"))
    }
}

/// The product `fields` make of `base` (None: a new product), checked whole: every problem.
fn merged(
    sku: &str,
    base: Option<&Product>,
    fields: ProductFields,
    currency: Currency,
    categories: &HashSet<String>,
    now: i64,
) -> Result<ProductWrite, Vec<String>> {
    let mut errors = Vec::new();
    if let Err(e) = check_sku(sku) {
        errors.push(e);
    }
    let mut p = base.cloned().unwrap_or_else(|| Product {
        sku: sku.to_string(),
        name: String::new(),
        description: None,
        price: Money::zero(currency),
        stock: None,
        reserved: 0,
        image_url: None,
        category: None,
        active: true,
        kind: ProductKind::Product,
        period_days: None,
        access_link: None,
        position: 0,
        created_at: now,
        updated_at: now,
    });
    match fields.name {
        Some(name) => {
            p.name = name.trim().to_string();
            if !(1..=200).contains(&p.name.chars().count()) {
                errors.push("name must be 1..=200 characters".into());
            }
        }
        None if base.is_none() => errors.push("name is required".into()),
        None => {}
    }
    match fields.price.map(|price| price.money(currency)) {
        Some(Ok(price)) => p.price = price,
        Some(Err(e)) => errors.push(e),
        None if base.is_none() => errors.push("price is required".into()),
        None => {}
    }
    if let Some(d) = fields.description {
        p.description = d.filter(|d| !d.trim().is_empty());
    }
    if p.description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 4096)
    {
        errors.push("description must be at most 4096 characters".into());
    }
    let set_stock = fields.stock.is_some();
    if let Some(stock) = fields.stock {
        match stock {
            Some(n) if n < 0 => errors.push(format!("stock {n} is negative")),
            None if p.reserved > 0 => errors.push(format!(
                "stock cannot be untracked while {} units are reserved by unpaid orders",
                p.reserved
            )),
            _ => {}
        }
        p.stock = stock;
    }
    if let Some(url) = fields.image_url {
        p.image_url = url.filter(|u| !u.is_empty());
    }
    if let Some(url) = &p.image_url {
        if let Err(e) = check_https("image_url", url) {
            errors.push(e);
        }
    }
    if let Some(c) = fields.category {
        p.category = c.filter(|c| !c.is_empty());
    }
    if let Some(c) = &p.category {
        if !categories.contains(c) {
            errors.push(format!(
                "category {c:?} does not exist (POST /admin/v1/categories first)"
            ));
        }
    }
    if let Some(active) = fields.active {
        p.active = active;
    }
    if let Some(kind) = fields.kind {
        p.kind = kind;
    }
    if let Some(days) = fields.period_days {
        p.period_days = days;
    }
    if let Some(link) = fields.access_link {
        p.access_link = link.filter(|l| !l.is_empty());
    }
    match (p.kind, p.period_days) {
        (ProductKind::Plan, None) => errors.push("a plan needs period_days (1..=3650)".into()),
        (ProductKind::Plan, Some(d)) if !(1..=3650).contains(&d) => {
            errors.push(format!("period_days {d} must be 1..=3650"))
        }
        (ProductKind::Product, Some(_)) => errors.push("period_days is for plans only".into()),
        _ => {}
    }
    match (&p.access_link, p.kind) {
        (Some(_), ProductKind::Product) => errors.push("access_link is for plans only".into()),
        (Some(link), ProductKind::Plan) => {
            if let Err(e) = check_https("access_link", link) {
                errors.push(e);
            }
        }
        (None, _) => {}
    }
    if let Some(position) = fields.position {
        p.position = position;
    }
    p.updated_at = now;
    if errors.is_empty() {
        Ok(ProductWrite {
            product: p,
            set_stock,
        })
    } else {
        Err(errors)
    }
}

async fn category_slugs(app: &AppState, account: &AccountId) -> Result<HashSet<String>, ApiError> {
    Ok(app
        .engine
        .store
        .categories(account)
        .await?
        .into_iter()
        .map(|c| c.slug)
        .collect())
}

#[derive(Debug, Deserialize)]
struct AccountParam {
    account: Option<String>,
}

/// Write `fields` over the product `sku` (creating it): 201 created, 200 updated.
async fn save_product(
    app: &AppState,
    account: &AccountId,
    currency: Currency,
    sku: &str,
    fields: ProductFields,
    create: bool,
) -> Answer {
    let store = &app.engine.store;
    let base = store.product(account, sku).await?;
    if base.is_none() && !create {
        return Err(ApiError::not_found("no such product"));
    }
    let categories = category_slugs(app, account).await?;
    let write = merged(sku, base.as_ref(), fields, currency, &categories, now(app))
        .map_err(ApiError::problems)?;
    let (created, _) = store
        .upsert_products(account, std::slice::from_ref(&write), now(app))
        .await?;
    let saved = store
        .product(account, sku)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(product_view(&saved))).into_response())
}

/// `POST /products`: create or update by `sku`.
async fn put_product(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: ProductFields = json_body(body)?;
    let sku = fields
        .sku
        .take()
        .ok_or_else(|| ApiError::invalid("sku is required"))?;
    save_product(&app, &account, currency, &sku, fields, true).await
}

/// `PATCH /products/{sku}`: change the fields given.
async fn patch_product(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: ProductFields = json_body(body)?;
    if fields.sku.take().is_some_and(|s| s != sku) {
        return Err(ApiError::invalid("a product's sku cannot be changed"));
    }
    save_product(&app, &account, currency, &sku, fields, false).await
}

async fn show_product(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.product(&account, &sku).await? {
        Some(p) => Ok(Json(product_view(&p)).into_response()),
        None => Err(ApiError::not_found("no such product")),
    }
}

async fn delete_product(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    if app.engine.store.delete_product(&account, &sku).await? {
        tracing::info!(account = %account, sku = %sku, "Product deleted by the admin API.");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("no such product"))
    }
}

#[derive(Debug, Deserialize)]
struct ProductListParams {
    account: Option<String>,
    category: Option<String>,
    active: Option<bool>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /products`: a page in catalog order (position, then sku) and the next page's cursor.
async fn list_products(
    State(app): State<AppState>,
    q: Result<Query<ProductListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let after = params.cursor.as_deref().map(uncursor).transpose()?;
    let after = match after.as_deref().map(|c| c.split_once(':')) {
        None => None,
        Some(Some((position, sku))) => Some((
            position
                .parse::<i64>()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad cursor"))?,
            sku,
        )),
        Some(None) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad cursor")),
    };
    let mut items = app
        .engine
        .store
        .catalog(
            &account,
            &CatalogQuery {
                category: params.category.as_deref(),
                active: params.active,
                after,
                limit: limit + 1,
            },
        )
        .await?;
    let next = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items
            .last()
            .map(|p| cursor(&format!("{}:{}", p.position, p.sku)))
    });
    let items: Vec<Value> = items.iter().map(product_view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next.flatten() })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockChange {
    delta: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /products/{sku}/stock` `{delta, reason?}`: units in (or out); never below zero.
async fn adjust_stock(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let change: StockChange = json_body(body)?;
    if change
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 200)
    {
        return Err(ApiError::invalid("reason must be at most 200 characters"));
    }
    let store = &app.engine.store;
    let adjusted = store
        .adjust_stock(&account, &sku, change.delta, now(&app))
        .await?;
    let product = store
        .product(&account, &sku)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    let Some(stock) = adjusted else {
        return Err(match product.stock {
            None => ApiError::conflict("the product's stock is not tracked: set `stock` first"),
            Some(on_hand) => ApiError::conflict(format!(
                "stock would go negative: {on_hand} on hand, delta {}",
                change.delta
            )),
        });
    };
    tracing::info!(
        account = %account,
        sku = %sku,
        delta = change.delta,
        stock,
        reason = change.reason.as_deref().unwrap_or(""),
        "Stock adjusted by the admin API."
    );
    Ok(Json(json!({ "sku": sku, "stock": stock, "reserved": product.reserved })).into_response())
}

// --- CSV import -----------------------------------------------------------------------

/// One cell of a CSV row as a field: empty clears (or, for `active` and `kind`, leaves).
fn row_fields(header: &[&str], row: &csv::StringRecord) -> (ProductFields, Vec<String>) {
    let mut f = ProductFields::default();
    let mut errors = Vec::new();
    let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let whole = |column: &str, v: &str, errors: &mut Vec<String>| -> Option<i64> {
        if v.is_empty() {
            return None;
        }
        v.parse::<i64>()
            .map_err(|_| errors.push(format!("{column} {v:?} is not a whole number")))
            .ok()
    };
    for (column, value) in header.iter().zip(row.iter()) {
        match *column {
            "sku" => f.sku = Some(value.to_string()),
            "name" => f.name = Some(value.to_string()),
            "price" if value.is_empty() => errors.push("price is empty".into()),
            "price" => f.price = Some(Price::Text(value.to_string())),
            "stock" => f.stock = Some(whole("stock", value, &mut errors)),
            "category" => f.category = Some(text(value)),
            "description" => f.description = Some(text(value)),
            "image_url" => f.image_url = Some(text(value)),
            "access_link" => f.access_link = Some(text(value)),
            "period_days" => f.period_days = Some(whole("period_days", value, &mut errors)),
            "position" => f.position = whole("position", value, &mut errors),
            "active" => match value.to_ascii_lowercase().as_str() {
                "" => {}
                "true" | "1" | "yes" => f.active = Some(true),
                "false" | "0" | "no" => f.active = Some(false),
                _ => errors.push(format!("active {value:?} must be true or false")),
            },
            "kind" if value.is_empty() => {}
            "kind" => match value.parse::<ProductKind>() {
                Ok(k) => f.kind = Some(k),
                Err(_) => errors.push(format!("kind {value:?} must be product or plan")),
            },
            _ => {}
        }
    }
    (f, errors)
}

/// The header's columns, checked: known ones, each once, `sku` among them.
fn csv_header(record: &csv::StringRecord) -> Result<Vec<&str>, ApiError> {
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(record.len());
    for name in record.iter() {
        if !COLUMNS.contains(&name) {
            return Err(ApiError::invalid(format!(
                "line 1: unknown column {name:?} (columns: {})",
                COLUMNS.join(", ")
            )));
        }
        if !seen.insert(name) {
            return Err(ApiError::invalid(format!("line 1: column {name:?} twice")));
        }
        columns.push(name);
    }
    if !seen.contains("sku") {
        return Err(ApiError::invalid("line 1: the header has no sku column"));
    }
    Ok(columns)
}

/// `POST /products/import` (`Content-Type: text/csv`): every row checked first; one bad row
/// and nothing is imported (422, each problem with its line); else all in one transaction.
async fn import_products(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"));
    if !is_csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the catalog as Content-Type: text/csv",
        ));
    }
    let bytes = body_bytes(body)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_ref());
    let header_record = reader
        .headers()
        .map_err(|e| ApiError::invalid(format!("line 1: {e}")))?
        .clone();
    let header = csv_header(&header_record)?;
    let mut errors = Vec::new();
    let mut rows: Vec<(u64, ProductFields)> = Vec::new();
    for (n, record) in reader.records().enumerate() {
        if n >= IMPORT_MAX_ROWS {
            return Err(ApiError::invalid(format!(
                "more than {IMPORT_MAX_ROWS} rows: split the file"
            )));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(format!("line {line}: {}", csv_problem(&e)));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            errors.push(format!(
                "line {line}: {} fields, the header has {}",
                record.len(),
                header.len()
            ));
            continue;
        }
        let (fields, problems) = row_fields(&header, &record);
        errors.extend(problems.into_iter().map(|p| format!("line {line}: {p}")));
        rows.push((line, fields));
    }
    if rows.is_empty() && errors.is_empty() {
        return Err(ApiError::invalid("the file has no rows"));
    }
    let store = &app.engine.store;
    let skus: Vec<&str> = rows.iter().filter_map(|(_, f)| f.sku.as_deref()).collect();
    let existing: HashMap<String, Product> = store
        .products_with_skus(&account, &skus)
        .await?
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect();
    let categories = category_slugs(&app, &account).await?;
    let now = now(&app);
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut writes = Vec::with_capacity(rows.len());
    for (line, mut fields) in rows {
        let sku = fields.sku.take().unwrap_or_default();
        if let Some(first) = first_line.get(&sku) {
            errors.push(format!("line {line}: sku {sku:?} is also on line {first}"));
            continue;
        }
        first_line.insert(sku.clone(), line);
        match merged(&sku, existing.get(&sku), fields, currency, &categories, now) {
            Ok(w) => writes.push(w),
            Err(problems) => {
                errors.extend(problems.into_iter().map(|p| format!("line {line}: {p}")))
            }
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| line_of(e));
        let bad_lines: HashSet<u64> = errors.iter().map(|e| line_of(e)).collect();
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{} bad rows: nothing imported", bad_lines.len()),
            errors,
        });
    }
    let (created, updated) = store.upsert_products(&account, &writes, now).await?;
    tracing::info!(account = %account, created, updated, "Catalog imported by the admin API.");
    Ok(Json(json!({ "created": created, "updated": updated })).into_response())
}

/// The line number an import problem starts with (for sorting them).
fn line_of(problem: &str) -> u64 {
    problem
        .strip_prefix("line ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

// --- categories -----------------------------------------------------------------------

fn category_view(c: &Category) -> Value {
    json!({ "slug": c.slug, "name": c.name, "position": c.position })
}

async fn list_categories(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let items: Vec<Value> = app
        .engine
        .store
        .categories(&account)
        .await?
        .iter()
        .map(category_view)
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryBody {
    slug: String,
    name: String,
    #[serde(default)]
    position: i64,
}

/// `POST /categories` `{slug, name, position?}`: create (201) or rename (200).
async fn put_category(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let c: CategoryBody = json_body(body)?;
    let mut errors = Vec::new();
    if !valid_key(&c.slug) {
        errors.push(format!(
            "slug {:?} must be 1..=64 characters of A-Z a-z 0-9 . _ -",
            c.slug
        ));
    }
    let name = c.name.trim().to_string();
    if !(1..=100).contains(&name.chars().count()) {
        errors.push("name must be 1..=100 characters".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::problems(errors));
    }
    let store = &app.engine.store;
    let existed = category_slugs(&app, &account).await?.contains(&c.slug);
    let category = Category {
        slug: c.slug,
        name,
        position: c.position,
    };
    store.upsert_category(&account, &category).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(category_view(&category))).into_response())
}

/// `DELETE /categories/{slug}`: 204; 409 while products name it.
async fn delete_category(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app
        .engine
        .store
        .delete_unused_category(&account, &slug)
        .await?
    {
        CategoryDeleted::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        CategoryDeleted::Absent => Err(ApiError::not_found("no such category")),
        CategoryDeleted::InUse(n) => Err(ApiError::conflict(format!(
            "{n} products are in this category: move or delete them first"
        ))),
    }
}

// --- orders ---------------------------------------------------------------------------

fn order_view(o: &Order) -> Value {
    let items: Vec<Value> = o
        .items
        .iter()
        .map(|i| {
            json!({
                "sku": i.sku,
                "name": i.name,
                "quantity": i.quantity,
                "unit_price": i.unit_price.plain(),
                "subtotal": i.subtotal.plain(),
                "catalog_price": i.catalog_price.map(|m| m.plain()),
            })
        })
        .collect();
    json!({
        "number": o.order_number,
        "user": o.user_key,
        "customer_name": o.customer_name,
        "customer_address": o.customer_address,
        "items": items,
        "subtotal": o.subtotal.plain(),
        "discount": o.discount.plain(),
        "total": o.total.plain(),
        "currency": o.total.currency,
        "status": o.status,
        "payment_status": o.payment_status,
        "voucher": o.voucher,
        "source": o.source,
        "notes": o.notes,
        "stock": o.stock,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    })
}

#[derive(Debug, Deserialize)]
struct OrderListParams {
    account: Option<String>,
    status: Option<OrderStatus>,
    user: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /orders`: newest first, with their items.
async fn list_orders(
    State(app): State<AppState>,
    q: Result<Query<OrderListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let before_id = params
        .cursor
        .as_deref()
        .map(|c| {
            uncursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad cursor"))
        })
        .transpose()?;
    let user = params
        .user
        .as_deref()
        .map(|u| UserKey::from(u.trim().trim_start_matches('+')));
    let mut orders = app
        .engine
        .store
        .orders(
            &account,
            &OrderFilter {
                user: user.as_ref(),
                status: params.status,
                before_id,
                limit: limit + 1,
                ..OrderFilter::default()
            },
        )
        .await?;
    let next = (orders.len() as i64 > limit).then(|| {
        orders.truncate(limit as usize);
        orders.last().map(|o| cursor(&o.id.to_string()))
    });
    let items: Vec<Value> = orders.iter().map(order_view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next.flatten() })).into_response())
}

async fn show_order(
    State(app): State<AppState>,
    Path(number): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.order(&account, &number).await? {
        Some(o) => Ok(Json(order_view(&o)).into_response()),
        None => Err(ApiError::not_found("no such order")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderChange {
    #[serde(default, deserialize_with = "present")]
    status: Option<OrderStatus>,
    /// Empty or null: cleared.
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

/// `PATCH /orders/{number}` `{status?, notes?}`: forward only (pending → processing →
/// completed; pending or processing → cancelled, which gives reserved stock back); 409 else.
async fn patch_order(
    State(app): State<AppState>,
    Path(number): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let change: OrderChange = json_body(body)?;
    if change.status.is_none() && change.notes.is_none() {
        return Err(ApiError::invalid("give status, notes or both"));
    }
    let notes = change.notes.map(Option::unwrap_or_default);
    if notes.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::invalid("notes must be at most 2000 characters"));
    }
    let outcome = app
        .engine
        .store
        .update_order(
            &account,
            &number,
            change.status,
            notes.as_deref(),
            now(&app),
        )
        .await?;
    match outcome {
        OrderUpdate::Updated(order) => {
            tracing::info!(account = %account, order = %number, status = %order.status, "Order changed by the admin API.");
            Ok(Json(order_view(&order)).into_response())
        }
        OrderUpdate::NotFound => Err(ApiError::not_found("no such order")),
        OrderUpdate::Refused { current } => Err(ApiError::conflict(format!(
            "the order is {current}: it cannot become {}",
            change.status.map_or("changed", OrderStatus::as_str)
        ))),
    }
}
