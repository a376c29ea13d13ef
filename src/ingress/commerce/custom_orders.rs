//! Custom orders: what customers described in chat (with their reference picture), listed
//! newest first, shown, and moved on by the owner (new → quoted → accepted | rejected →
//! done); the customer hears each move.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::domain::CustomOrderStatus;
use crate::store::{CustomOrder, CustomOrderUpdate};

fn custom_order_view(o: &CustomOrder) -> Value {
    json!({
        "id": o.id,
        "user": o.user_key,
        "description": o.description,
        "media_id": o.media_id,
        "status": o.status,
        "notes": o.notes,
        "owner_told": o.owner_told_at.is_some(),
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    account: Option<String>,
    status: Option<CustomOrderStatus>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /custom-orders`: newest first.
pub(super) async fn list_custom_orders(
    State(app): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let before = id_cursor(params.cursor.as_deref().filter(|c| !c.is_empty()))?;
    let found = app
        .engine
        .store
        .custom_orders(&account, params.status, before, limit + 1)
        .await?;
    Ok(page(found, limit, |o| o.id.to_string(), custom_order_view))
}

pub(super) async fn show_custom_order(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.custom_order(&account, id).await? {
        Some(o) => Ok(Json(custom_order_view(&o)).into_response()),
        None => Err(ApiError::not_found("no such custom order")),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CustomOrderChange)]
pub(in crate::ingress) struct Change {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    status: Option<CustomOrderStatus>,
    /// Empty or null: cleared.
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

/// `PATCH /custom-orders/{id}` `{status?, notes?}` (a quote goes in `notes`): forward only;
/// 409 else. The customer is told the new status, with the notes.
pub(super) async fn patch_custom_order(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let change: Change = json_body(body)?;
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
        .update_custom_order(&account, id, change.status, notes.as_deref(), now(&app))
        .await?;
    match outcome {
        CustomOrderUpdate::Updated(o) => {
            tracing::info!(account = %account, custom_order = id, status = %o.status, "Custom order changed by the admin API.");
            if change.status.is_some() {
                tell(
                    &app,
                    &account,
                    o.user_key.as_str(),
                    format!("custom:{}:{}", o.id, o.status),
                    crate::commerce::text::custom_order_news(&o),
                    crate::domain::WindowPolicy::Hold,
                )
                .await;
            }
            Ok(Json(custom_order_view(&o)).into_response())
        }
        CustomOrderUpdate::NotFound => Err(ApiError::not_found("no such custom order")),
        CustomOrderUpdate::Refused { current } => Err(ApiError::conflict(format!(
            "the custom order is {current}: it cannot become {}",
            change.status.map_or("changed", CustomOrderStatus::as_str)
        ))),
    }
}
