//! Products: create or update by sku, show, change, delete, list, stock adjustments.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::domain::material::{quantity_text, StockChange};
use crate::domain::ProductKind;
use crate::store::{MaterialLine, Product, ProductFilter, ProductStockAdjusted, ProductWrite};

/// A product as the API shows it; with the materials one unit takes, when they were read
/// (a single product's answers; listings leave them out).
fn product_view(p: &Product, materials: Option<&[MaterialLine]>) -> Value {
    let mut view = json!({
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
    });
    if let Some(lines) = materials {
        view["materials"] = materials_view(lines);
    }
    view
}

pub(super) fn materials_view(lines: &[MaterialLine]) -> Value {
    lines
        .iter()
        .map(|l| json!({"material": l.material, "quantity": quantity_text(l.quantity)}))
        .collect()
}

/// A product's fields as a request gives them: None left out, `Some(None)` cleared.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct ProductFields {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub(super) sku: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub(super) name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    pub(super) price: Option<Price>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) stock: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) image_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) category: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub(super) active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    pub(super) kind: Option<ProductKind>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) period_days: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) access_link: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub(super) position: Option<i64>,
}

pub(super) fn check_sku(sku: &str) -> Result<(), String> {
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

pub(super) fn check_https(field: &str, value: &str) -> Result<(), String> {
    let ok = value.len() <= 2048
        && url::Url::parse(value).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(format!("{field} must be an https URL (at most 2048 bytes)"))
    }
}

/// The product `fields` make of `base` (None: a new product), checked whole: every problem.
pub(super) fn merged(
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

pub(super) async fn category_slugs(
    app: &AppState,
    account: &AccountId,
) -> Result<HashSet<String>, ApiError> {
    Ok(app
        .engine
        .store
        .categories(account)
        .await?
        .into_iter()
        .map(|c| c.slug)
        .collect())
}

/// Write `fields` over the product `sku` (creating it): 201 created, 200 updated.
pub(super) async fn save_product(
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
    let materials = store.product_materials(account, sku).await?;
    Ok((status, Json(product_view(&saved, Some(&materials)))).into_response())
}

/// `POST /products`: create or update by `sku`.
pub(super) async fn put_product(
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
pub(super) async fn patch_product(
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

pub(super) async fn show_product(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.product(&account, &sku).await? {
        Some(p) => {
            let materials = app.engine.store.product_materials(&account, &sku).await?;
            Ok(Json(product_view(&p, Some(&materials))).into_response())
        }
        None => Err(ApiError::not_found("no such product")),
    }
}

pub(super) async fn delete_product(
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
pub(super) struct ProductListParams {
    account: Option<String>,
    category: Option<String>,
    active: Option<bool>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /products`: a page in catalog order (position, then sku) and the next page's cursor.
pub(super) async fn list_products(
    State(app): State<AppState>,
    q: Result<Query<ProductListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let after = text_cursor(params.cursor.as_deref())?;
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
    let items = app
        .engine
        .store
        .products(
            &account,
            &ProductFilter {
                category: params.category.as_deref(),
                active: params.active,
                after,
                offset: 0,
                limit: limit + 1,
            },
        )
        .await?;
    Ok(page(
        items,
        limit,
        |p| format!("{}:{}", p.position, p.sku),
        |p| product_view(p, None),
    ))
}

/// `POST /products/{sku}/stock` `{delta | set, reason?}`: whole units in (or out), or the
/// count of units on hand that no unpaid order holds (the product's `stock`); never below
/// zero, so the units reserved by unpaid orders (`reserved`, apart) are never taken.
pub(super) async fn adjust_stock(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let (change, reason) = json_body::<StockBody>(body)?.change()?;
    let units = |v: &Value, field: &str| {
        v.as_i64().ok_or_else(|| {
            ApiError::invalid(format!("{field} {v} must be a whole number of units"))
        })
    };
    let change = match change {
        StockChange::Delta(v) => StockChange::Delta(units(&v, "delta")?),
        StockChange::Set(v) => StockChange::Set(units(&v, "set")?),
    };
    let adjusted = app
        .engine
        .store
        .adjust_product_stock(&account, &sku, change, now(&app))
        .await?;
    let (stock, reserved) = match adjusted {
        ProductStockAdjusted::Adjusted { stock, reserved } => (stock, reserved),
        ProductStockAdjusted::NotFound => return Err(ApiError::not_found("no such product")),
        ProductStockAdjusted::Untracked => {
            return Err(ApiError::conflict(
                "the product's stock is not tracked: set `stock` first",
            ))
        }
        ProductStockAdjusted::BelowZero { refused, reserved } => {
            return Err(ApiError::conflict(format!(
                "stock would go negative ({}): {} on hand that no unpaid order holds, {reserved} reserved apart",
                refused.wanted, refused.stock
            )))
        }
    };
    tracing::info!(
        account = %account,
        sku = %sku,
        change = ?change,
        stock,
        reason = reason.as_deref().unwrap_or(""),
        "Stock adjusted by the admin API."
    );
    Ok(Json(json!({ "sku": sku, "stock": stock, "reserved": reserved })).into_response())
}
