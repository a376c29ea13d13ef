//! Materials: create or update by name, show, change, delete, list, stock adjustments; and
//! the materials a product takes per unit.
//!
//! A change that takes a material below its `min_stock` owes the owner one alert (sent after
//! the commit, see `owner.rs`); one that brings it back to `min_stock` clears it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::products::materials_view;
use super::*;
use crate::domain::material::{quantity_of, quantity_text, StockChange};
use crate::store::{
    Material, MaterialAdjusted, MaterialDeleted, MaterialLine, MaterialWrite, MaterialWritten,
    ProductMaterialsSet,
};

/// The most materials one product may take.
const MAX_PRODUCT_MATERIALS: usize = 50;

fn material_view(m: &Material) -> Value {
    json!({
        "name": m.name,
        "unit": m.unit,
        "stock": quantity_text(m.stock),
        "min_stock": quantity_text(m.min_stock),
        "low": m.stock < m.min_stock,
        "low_alert": m.low_alert,
        "updated_at": m.updated_at,
    })
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_key(name) {
        Ok(())
    } else {
        Err(format!(
            "material name {name:?} must be 1..=64 characters of A-Z a-z 0-9 . _ -"
        ))
    }
}

/// A material's fields as a request gives them (None: left out).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct MaterialFields {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    unit: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::ingress::openapi::decimal)]
    stock: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::ingress::openapi::decimal)]
    min_stock: Option<Value>,
}

impl MaterialFields {
    /// The write they make, checked whole: every problem.
    fn write(&self) -> Result<MaterialWrite, ApiError> {
        let mut errors = Vec::new();
        let unit = self.unit.as_ref().map(|u| u.trim().to_string());
        if unit
            .as_ref()
            .is_some_and(|u| !(1..=20).contains(&u.chars().count()))
        {
            errors.push("unit must be 1..=20 characters (kg, g, l, pcs, …)".to_string());
        }
        let mut quantity = |field: &str, v: &Option<Value>| {
            v.as_ref()
                .map(|v| quantity_of(v, false))
                .transpose()
                .unwrap_or_else(|e| {
                    errors.push(format!("{field}: {e}"));
                    None
                })
        };
        let stock = quantity("stock", &self.stock);
        let min_stock = quantity("min_stock", &self.min_stock);
        if errors.is_empty() {
            Ok(MaterialWrite {
                unit,
                stock,
                min_stock,
            })
        } else {
            Err(ApiError::problems(errors))
        }
    }
}

/// After a change that may have taken materials below their minimum: tell the owner (in
/// the background; what is owed is in the store, the reconciliation pass tells it too).
fn tell_owner_later(app: &AppState) {
    let (engine, router) = (app.engine.clone(), app.router.clone());
    tokio::spawn(async move {
        if let Err(e) = super::owner::tell_low_materials(&engine, &router).await {
            tracing::warn!(error = %e, "Low-stock alerts wait for the next pass.");
        }
    });
}

async fn save_material(
    app: &AppState,
    account: &AccountId,
    name: &str,
    fields: MaterialFields,
    create: bool,
) -> Answer {
    check_name(name).map_err(ApiError::invalid)?;
    let write = fields.write()?;
    let written = app
        .engine
        .store
        .write_material(account, name, &write, create, now(app))
        .await?;
    let (status, m) = match written {
        MaterialWritten::Created(m) => (StatusCode::CREATED, m),
        MaterialWritten::Updated(m) => (StatusCode::OK, m),
        MaterialWritten::NotFound => return Err(ApiError::not_found("no such material")),
        MaterialWritten::NoUnit => {
            return Err(ApiError::invalid("unit is required for a new material"))
        }
    };
    tracing::info!(account = %account, material = %name, stock = %quantity_text(m.stock), "Material written by the admin API.");
    tell_owner_later(app);
    Ok((status, Json(material_view(&m))).into_response())
}

/// `POST /materials` `{name, unit, stock?, min_stock?}`: create or update by name.
pub(super) async fn put_material(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: MaterialFields = json_body(body)?;
    let name = fields
        .name
        .take()
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    save_material(&app, &account, &name, fields, true).await
}

/// `PATCH /materials/{name}` `{unit?, stock?, min_stock?}`.
pub(super) async fn patch_material(
    State(app): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: MaterialFields = json_body(body)?;
    if fields.name.take().is_some_and(|n| n != name) {
        return Err(ApiError::invalid("a material's name cannot be changed"));
    }
    save_material(&app, &account, &name, fields, false).await
}

pub(super) async fn show_material(
    State(app): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.material(&account, &name).await? {
        Some(m) => Ok(Json(material_view(&m)).into_response()),
        None => Err(ApiError::not_found("no such material")),
    }
}

/// `DELETE /materials/{name}`: 409 while a product uses it.
pub(super) async fn delete_material(
    State(app): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.delete_material(&account, &name).await? {
        MaterialDeleted::Deleted => {
            tracing::info!(account = %account, material = %name, "Material deleted by the admin API.");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        MaterialDeleted::InUse(skus) => Err(ApiError::conflict(format!(
            "products use this material ({}): take it off them first (PUT /admin/v1/products/{{sku}}/materials)",
            skus.join(", ")
        ))),
        MaterialDeleted::Absent => Err(ApiError::not_found("no such material")),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct MaterialListParams {
    account: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /materials`: a page by name and the next page's cursor.
pub(super) async fn list_materials(
    State(app): State<AppState>,
    q: Result<Query<MaterialListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let after = text_cursor(params.cursor.as_deref())?;
    let items = app
        .engine
        .store
        .materials(&account, after.as_deref(), limit + 1)
        .await?;
    Ok(page(items, limit, |m| m.name.clone(), material_view))
}

/// `POST /materials/{name}/stock` `{delta | set, reason?}`: decimal quantities; never
/// lowered below zero (a stock paid orders took below zero may still be raised).
pub(super) async fn adjust_material(
    State(app): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let (change, reason) = json_body::<StockBody>(body)?.change()?;
    let change = match change {
        StockChange::Delta(v) => StockChange::Delta(
            quantity_of(&v, true).map_err(|e| ApiError::invalid(format!("delta: {e}")))?,
        ),
        StockChange::Set(v) => StockChange::Set(
            quantity_of(&v, false).map_err(|e| ApiError::invalid(format!("set: {e}")))?,
        ),
    };
    let adjusted = app
        .engine
        .store
        .adjust_material_stock(&account, &name, change, now(&app))
        .await?;
    let m = match adjusted {
        MaterialAdjusted::Adjusted(m) => m,
        MaterialAdjusted::NotFound => return Err(ApiError::not_found("no such material")),
        MaterialAdjusted::BelowZero(refused) => {
            return Err(ApiError::conflict(format!(
                "stock would go below zero ({}): {} on hand",
                quantity_text(refused.wanted),
                quantity_text(refused.stock)
            )))
        }
    };
    tracing::info!(
        account = %account,
        material = %name,
        change = ?change,
        stock = %quantity_text(m.stock),
        reason = reason.as_deref().unwrap_or(""),
        "Material stock adjusted by the admin API."
    );
    tell_owner_later(&app);
    Ok(Json(material_view(&m)).into_response())
}

/// One material a product takes per unit, as given.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct MaterialLineBody {
    material: String,
    #[schema(schema_with = crate::ingress::openapi::decimal)]
    quantity: Value,
}

/// The list, bare or as `{"materials": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(in crate::ingress) enum MaterialLinesBody {
    Bare(Vec<MaterialLineBody>),
    Wrapped { materials: Vec<MaterialLineBody> },
}

/// `PUT /products/{sku}/materials` `[{material, quantity}]`: replace what one unit of the
/// product takes (`[]`: nothing). Every material must exist; each appears once.
pub(super) async fn put_product_materials(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let lines = match super::super::api::json_any_body::<MaterialLinesBody>(body)? {
        MaterialLinesBody::Bare(l) | MaterialLinesBody::Wrapped { materials: l } => l,
    };
    let mut errors = Vec::new();
    if lines.len() > MAX_PRODUCT_MATERIALS {
        errors.push(format!(
            "at most {MAX_PRODUCT_MATERIALS} materials per product"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut checked = Vec::with_capacity(lines.len());
    for l in &lines {
        if let Err(e) = check_name(&l.material) {
            errors.push(e);
        }
        if !seen.insert(l.material.as_str()) {
            errors.push(format!("material {:?} is listed twice", l.material));
        }
        match quantity_of(&l.quantity, false) {
            Ok(q) if q.is_zero() => errors.push(format!(
                "{}: quantity must be above zero (leave the material out instead)",
                l.material
            )),
            Ok(q) => checked.push(MaterialLine {
                material: l.material.clone(),
                quantity: q,
            }),
            Err(e) => errors.push(format!("{}: quantity {e}", l.material)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::problems(errors));
    }
    let set = app
        .engine
        .store
        .set_product_materials(&account, &sku, &checked, now(&app))
        .await?;
    match set {
        ProductMaterialsSet::Set(lines) => {
            tracing::info!(account = %account, sku = %sku, materials = lines.len(), "Product materials set by the admin API.");
            Ok(Json(json!({ "sku": sku, "materials": materials_view(&lines) })).into_response())
        }
        ProductMaterialsSet::NoProduct => Err(ApiError::not_found("no such product")),
        ProductMaterialsSet::UnknownMaterials(names) => Err(ApiError::invalid(format!(
            "no such material: {} (POST /admin/v1/materials first)",
            names.join(", ")
        ))),
    }
}
