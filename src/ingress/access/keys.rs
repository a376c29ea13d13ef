//! `/keys`: create (the key's text is in that answer only), list, show, revoke. A key makes
//! keys of its role or lower only, and a key scoped to one account only keys of that
//! account; a key revokes keys of its role or lower (its own too).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::AppState;
use super::audit::{id_cursor, page, page_limit};
use super::{error, new_key, shown_prefix, AuditDetails, Caller};
use crate::domain::{AccountId, Role};
use crate::store::{ApiKey, NewApiKey};

const MAX_NAME_CHARS: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", get(show_key).delete(revoke_key))
        .route("/keys/{id}/revoke", post(revoke_key))
}

fn view(k: &ApiKey, now: i64) -> Value {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else {
        "active"
    };
    json!({
        "id": k.id,
        "name": k.name,
        "role": k.role,
        "account": k.account,
        "prefix": shown_prefix(&k.prefix),
        "status": status,
        "created_by": k.created_by,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "last_used_at": k.last_used_at,
        "revoked_at": k.revoked_at,
    })
}

fn store_error(e: crate::store::StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct NewKeyBody {
    name: String,
    #[schema(value_type = String, pattern = "^(owner|admin|manager|agent)$")]
    role: Role,
    /// A configured phone_number_id; left out: every account (a scoped caller's own).
    #[serde(default)]
    account: Option<String>,
    /// Unix ms; left out: never.
    #[serde(default)]
    expires_at: Option<i64>,
}

/// `POST /keys` `{"name", "role", "account"?, "expires_at"?}`: 201 with the key's text in
/// `key` (shown this once).
async fn create_key(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let req: NewKeyBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("bad request body: {e}"),
            )
        }
    };
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("name must be 1..={MAX_NAME_CHARS} characters"),
        );
    }
    let now = app.engine.clock.now_ms();
    if req.expires_at.is_some_and(|t| t <= now) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at (unix ms) must be in the future",
        );
    }
    if req.role > caller.role {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "a {} key cannot create a {} key: only keys of its role or lower",
                caller.role, req.role
            ),
        );
    }
    let account = match (&caller.account, req.account) {
        (Some(mine), None) => Some(mine.clone()),
        (Some(mine), Some(a)) if a != mine.as_str() => {
            return error(
                StatusCode::FORBIDDEN,
                format!("this key reaches only account {mine}: it makes keys for it only"),
            )
        }
        (_, a) => a.map(|a| AccountId::from(a.as_str())),
    };
    if let Some(a) = &account {
        if app.engine.settings().account(a.as_str()).is_none() {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "unknown account");
        }
    }
    let (text, prefix, hash) = match new_key() {
        Ok(k) => k,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no randomness for a key: {e}"),
            )
        }
    };
    let new = NewApiKey {
        name,
        role: req.role,
        account: account.as_ref(),
        prefix: &prefix,
        hash: &hash,
        created_by: caller.key,
        expires_at: req.expires_at,
    };
    let id = match app.engine.store.create_api_key(&new, now).await {
        Ok(id) => id,
        Err(e) => return store_error(e),
    };
    tracing::info!(key = id, role = %req.role, "API key created.");
    let key = match app.engine.store.api_key(id).await {
        Ok(Some(k)) => k,
        Ok(None) => return error(StatusCode::SERVICE_UNAVAILABLE, "the new key vanished"),
        Err(e) => return store_error(e),
    };
    let mut shown = view(&key, now);
    shown["key"] = json!(text.expose_secret());
    let mut response = (StatusCode::CREATED, Json(shown)).into_response();
    response.extensions_mut().insert(AuditDetails(json!({
        "key_id": id,
        "role": key.role,
        "account": key.account,
    })));
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /keys`: newest first (a scoped key sees its account's keys only); never a key's text.
async fn list_keys(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListQuery>, QueryRejection>,
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
    let found = match app
        .engine
        .store
        .api_keys(caller.account.as_ref(), before, limit + 1)
        .await
    {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let now = app.engine.clock.now_ms();
    page(found, limit, |k| k.id, |k| view(k, now))
}

/// The key `id` if `caller` may see it.
async fn visible(app: &AppState, caller: &Caller, id: &str) -> Result<ApiKey, Response> {
    let not_found = || error(StatusCode::NOT_FOUND, "no such key");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    match app.engine.store.api_key(id).await {
        Ok(Some(k)) if caller.reaches(k.account.as_ref()) => Ok(k),
        Ok(_) => Err(not_found()),
        Err(e) => Err(store_error(e)),
    }
}

/// `GET /keys/{id}`.
async fn show_key(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match visible(&app, &caller, &id).await {
        Ok(k) => Json(view(&k, app.engine.clock.now_ms())).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /keys/{id}` or `POST /keys/{id}/revoke`: refused from then on (401). Revoking a
/// revoked key changes nothing.
async fn revoke_key(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let key = match visible(&app, &caller, &id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    if key.role > caller.role {
        return error(
            StatusCode::FORBIDDEN,
            format!("a {} key cannot revoke a {} key", caller.role, key.role),
        );
    }
    let now = app.engine.clock.now_ms();
    let revoked = match app.engine.store.revoke_api_key(key.id, now).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    if revoked {
        tracing::info!(key = key.id, "API key revoked.");
    }
    let key = match app.engine.store.api_key(key.id).await {
        Ok(Some(k)) => k,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => return store_error(e),
    };
    let mut response = Json(view(&key, now)).into_response();
    response.extensions_mut().insert(AuditDetails(json!({
        "key_id": key.id,
        "role": key.role,
        "revoked_now": revoked,
    })));
    response
}
