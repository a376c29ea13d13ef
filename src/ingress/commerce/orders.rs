//! Orders: listed newest first, shown, moved forward by the operator.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::domain::{OrderStatus, UserKey};
use crate::store::{Order, OrderFilter, OrderUpdate};

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
pub(super) struct OrderListParams {
    account: Option<String>,
    status: Option<OrderStatus>,
    user: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /orders`: newest first, with their items.
pub(super) async fn list_orders(
    State(app): State<AppState>,
    q: Result<Query<OrderListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let before_id = id_cursor(params.cursor.as_deref().filter(|c| !c.is_empty()))?;
    let user = params
        .user
        .as_deref()
        .map(|u| UserKey::from(u.trim().trim_start_matches('+')));
    let orders = app
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
    Ok(page(orders, limit, |o| o.id.to_string(), order_view))
}

pub(super) async fn show_order(
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct OrderChange {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    status: Option<OrderStatus>,
    /// Empty or null: cleared.
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

/// `PATCH /orders/{number}` `{status?, notes?}`: forward only (pending → processing →
/// completed; pending or processing → cancelled, which gives reserved stock back); 409 else.
pub(super) async fn patch_order(
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
            if change.status.is_some() {
                tell_customer(&app, &account, &order).await;
            }
            Ok(Json(order_view(&order)).into_response())
        }
        OrderUpdate::NotFound => Err(ApiError::not_found("no such order")),
        OrderUpdate::Refused { current } => Err(ApiError::conflict(format!(
            "the order is {current}: it cannot become {}",
            change.status.map_or("changed", OrderStatus::as_str)
        ))),
    }
}

/// The customer hears their order's new status (outside the 24 h window: the
/// `commerce.order_status_template`, else held until they write again). Once per status: the request id names the order and the status.
async fn tell_customer(
    app: &AppState,
    account: &crate::domain::AccountId,
    order: &crate::store::Order,
) {
    let policy =
        crate::commerce::sweep::order_status_policy(order, &app.engine.settings().commerce);
    tell(
        app,
        account,
        order.user_key.as_str(),
        format!("order:{}:{}", order.order_number, order.status),
        crate::commerce::text::order_status_news(order),
        policy,
    )
    .await;
}
