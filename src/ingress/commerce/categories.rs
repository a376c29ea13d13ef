//! Categories: a product's category must exist first.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::products::category_slugs;
use super::*;
use crate::store::{Category, CategoryDeleted};

fn category_view(c: &Category) -> Value {
    json!({ "slug": c.slug, "name": c.name, "position": c.position })
}

pub(super) async fn list_categories(
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct CategoryBody {
    slug: String,
    name: String,
    #[serde(default)]
    position: i64,
}

/// `POST /categories` `{slug, name, position?}`: create (201) or rename (200).
pub(super) async fn put_category(
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
pub(super) async fn delete_category(
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
