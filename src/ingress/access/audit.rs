//! `GET /audit`: the log of mutating calls, newest first, with filters; and what a handler
//! hands the audit row ([`AuditDetails`]).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::super::AppState;
use super::{error, Caller, Refusal};
use crate::store::AuditFilter;

/// A small JSON object a handler puts in its response's extensions for the audit row (ids,
/// never a secret or a request body).
#[derive(Debug, Clone)]
pub struct AuditDetails(pub serde_json::Value);

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list_audit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// "admin.token" or a key's id.
    key: Option<String>,
    /// "POST /keys".
    action: Option<String>,
    /// Unix ms.
    since: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /audit?key=&action=&since=&limit=&cursor=`: a key scoped to one account sees that
/// account's rows only.
async fn list_audit(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = match page_limit(q.limit) {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let before = match id_cursor(q.cursor.as_deref().filter(|c| !c.is_empty())) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let key_id = match q.key.as_deref().map(str::parse).transpose() {
        Ok(k) => k,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "key must be \"admin.token\" or a key's id",
            )
        }
    };
    let filter = AuditFilter {
        key_id,
        action: q.action.as_deref(),
        account: caller.account.as_ref(),
        since: q.since,
    };
    let found = match app
        .engine
        .store
        .audit_entries(&filter, before, limit + 1)
        .await
    {
        Ok(f) => f,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    page(
        found,
        limit,
        |e| e.id,
        |e| {
            json!({
                "id": e.id,
                "at": e.at,
                "key_id": e.key_id,
                "role": e.role,
                "action": e.action,
                "resource": e.resource,
                "account": e.account,
                "status": e.status,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "details": serde_json::from_str::<serde_json::Value>(&e.details).unwrap_or(json!({})),
            })
        },
    )
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub(super) fn page_limit(given: Option<i64>) -> Result<i64, Refusal> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("limit must be 1..={MAX_LIMIT}"),
        )),
    }
}

/// The id a newest-first page's cursor names (the hex of its text, as the commerce lists).
pub(super) fn id_cursor(given: Option<&str>) -> Result<Option<i64>, Refusal> {
    given
        .map(|c| {
            hex::decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "bad cursor"))
        })
        .transpose()
}

/// A page of `found` (read with `limit + 1`) and the next page's cursor.
pub(super) fn page<T>(
    mut found: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> i64,
    view: impl Fn(&T) -> serde_json::Value,
) -> Response {
    let next = (found.len() as i64 > limit)
        .then(|| {
            found.truncate(limit as usize);
            found.last().map(|t| hex::encode(id(t).to_string()))
        })
        .flatten();
    let items: Vec<serde_json::Value> = found.iter().map(view).collect();
    Json(json!({ "items": items, "next_cursor": next })).into_response()
}
