//! Subscriptions to plans: listed newest first (by customer, by status), shown.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::domain::{SubscriptionStatus, UserKey};
use crate::store::{order_number, Subscription, SubscriptionFilter};

fn subscription_view(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "wa_id": s.user_key,
        "sku": s.sku,
        "status": s.status,
        "period_start": s.period_start,
        "period_end": s.period_end,
        "last_order": s.last_order_id.map(order_number),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct SubscriptionListParams {
    account: Option<String>,
    wa_id: Option<String>,
    status: Option<SubscriptionStatus>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /subscriptions?wa_id=&status=`: newest first, and the next page's cursor.
pub(super) async fn list_subscriptions(
    State(app): State<AppState>,
    q: Result<Query<SubscriptionListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, _) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let before_id = id_cursor(params.cursor.as_deref().filter(|c| !c.is_empty()))?;
    let user = params
        .wa_id
        .as_deref()
        .map(|u| UserKey::from(u.trim().trim_start_matches('+')));
    let items = app
        .engine
        .store
        .subscriptions(
            &account,
            &SubscriptionFilter {
                user: user.as_ref(),
                status: params.status,
                before_id,
                limit: limit + 1,
            },
        )
        .await?;
    Ok(page(items, limit, |s| s.id.to_string(), subscription_view))
}

/// `GET /subscriptions/{id}`.
pub(super) async fn show_subscription(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("no such subscription"))?;
    match app.engine.store.subscription(&account, id).await? {
        Some(s) => Ok(Json(subscription_view(&s)).into_response()),
        None => Err(ApiError::not_found("no such subscription")),
    }
}
