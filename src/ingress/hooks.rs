//! `/admin/v1/webhooks`: the business's webhook endpoints and their delivery log.
//!
//! - `POST /webhooks` `{url, events?, account?, description?}` creates an endpoint and
//!   answers its secret (`whsec_…`), shown this once;
//! - `GET /webhooks` (`account`, `limit`, `cursor`), `GET /webhooks/{id}`,
//!   `PATCH /webhooks/{id}` `{url?, events?, active?, description?}`, `DELETE /webhooks/{id}`;
//! - `POST /webhooks/{id}/rotate`: a new secret (shown once); the previous one keeps signing
//!   beside it for `webhooks.rotation_overlap`;
//! - `GET /webhooks/{id}/deliveries` (`limit`, `cursor`): every attempt, newest first;
//! - `POST /webhooks/{id}/deliveries/{delivery}/replay`: that delivery again, from the
//!   start of the schedule; `POST /webhooks/{id}/recover` `{since}` (ms): every failed or
//!   exhausted delivery since then; `POST /webhooks/{id}/test`: a `webhook.test` event.
//!
//! A URL must be https, or an address `flows.http_allow` allows (the flows' SSRF guard).
//! Errors are `{"error": "..."}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::hooks::{new_endpoint_id, new_secret, EventFilter, EventType};
use crate::outcall::Refusal;
use crate::store::{EndpointChange, HookAttempt, HookEndpoint, NewEndpoint, NewHookEvent};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// The longest URL or description taken.
const MAX_TEXT: usize = 2048;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/webhooks/{id}/rotate", post(rotate))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/deliveries/{delivery}/replay", post(replay))
        .route("/webhooks/{id}/recover", post(recover))
        .route("/webhooks/{id}/test", post(test_event))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal, answered as `{"error": ...}` with its status.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(e: crate::store::StoreError) -> Refused {
        tracing::warn!(error = %e, "The webhooks admin API could not reach the store.");
        Refused(StatusCode::SERVICE_UNAVAILABLE, "store unavailable".into())
    }
}

fn store_error(e: crate::store::StoreError) -> Response {
    Refused::from(e).into_response()
}

fn view(ep: &HookEndpoint) -> Value {
    json!({
        "id": ep.id,
        "account": ep.account,
        "url": ep.url,
        "events": ep.events.0,
        "active": ep.active,
        "description": ep.description,
        "failing_since": ep.failing_since,
        "disabled_reason": ep.disabled_reason,
        "previous_secret_until": ep.prev_secret_until,
        "created_at": ep.created_at,
        "updated_at": ep.updated_at,
    })
}

fn attempt_view(a: &HookAttempt) -> Value {
    json!({
        "id": a.id,
        "delivery_id": a.delivery_id,
        "event_id": a.event_id,
        "event_type": a.event_type,
        "at": a.at,
        "latency_ms": a.latency_ms,
        "status": a.status,
        "body": a.body,
        "error": a.error,
        "delivery_state": a.delivery_state.as_str(),
    })
}

fn events_of(given: &[String]) -> Result<EventFilter, Refused> {
    given
        .iter()
        .map(|e| e.parse::<EventType>())
        .collect::<Result<Vec<_>, _>>()
        .map(EventFilter)
        .map_err(|e| Refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// The URL, if the guard lets it be called.
async fn checked_url(app: &AppState, url: &str) -> Result<(), Refused> {
    if url.len() > MAX_TEXT {
        return Err(Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "url: too long".into(),
        ));
    }
    match app.engine.outcall.load().check_url(url).await {
        Ok(_) => Ok(()),
        Err(Refusal::Guard(why)) | Err(Refusal::Invalid(why)) => Err(Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("url: {why}"),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct CreateBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    description: String,
}

async fn create(State(app): State<AppState>, body: Option<Json<CreateBody>>) -> Response {
    let Some(Json(b)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "a JSON body {url, events?, account?, description?} is needed",
        );
    };
    if let Some(a) = &b.account {
        if app.engine.settings().account(a).is_none() {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "account: unknown phone_number_id",
            );
        }
    }
    if b.description.len() > MAX_TEXT {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "description: too long");
    }
    let events = match events_of(&b.events) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = checked_url(&app, &b.url).await {
        return r.into_response();
    }
    let secret = match new_secret() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let id = new_endpoint_id();
    let now = app.engine.clock.now_ms();
    let n = NewEndpoint {
        id: &id,
        account: b.account.as_deref(),
        url: &b.url,
        events: &events,
        secret: &secret,
        description: &b.description,
        now,
    };
    if let Err(e) = app.engine.store.create_hook_endpoint(&n).await {
        return store_error(e);
    }
    match app.engine.store.hook_endpoint(&id).await {
        Ok(Some(ep)) => {
            let mut v = view(&ep);
            v["secret"] = json!(secret.expose_secret());
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such webhook endpoint"),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    account: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn limit_of(given: Option<i64>) -> Result<i64, Refused> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Refused(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={MAX_LIMIT}"),
        )),
    }
}

/// Cursors are opaque: the hex of the last item's key.
fn uncursor(given: Option<&str>) -> Result<Option<String>, Refused> {
    given
        .map(|c| {
            hex::decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Refused(StatusCode::BAD_REQUEST, "bad cursor".into()))
        })
        .transpose()
}

fn page<T>(
    mut found: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
    item: impl Fn(&T) -> Value,
) -> Response {
    let next = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|t| hex::encode(key(t)))
    } else {
        None
    };
    let items: Vec<Value> = found.iter().map(item).collect();
    Json(json!({ "items": items, "next_cursor": next })).into_response()
}

async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let limit = match limit_of(q.limit) {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let after = match uncursor(q.cursor.as_deref().filter(|c| !c.is_empty())) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match app
        .engine
        .store
        .hook_endpoints(q.account.as_deref(), after.as_deref(), limit + 1)
        .await
    {
        Ok(found) => page(found, limit, |e| e.id.clone(), view),
        Err(e) => store_error(e),
    }
}

async fn endpoint(app: &AppState, id: &str) -> Result<HookEndpoint, Refused> {
    match app.engine.store.hook_endpoint(id).await {
        Ok(Some(ep)) => Ok(ep),
        Ok(None) => Err(Refused(
            StatusCode::NOT_FOUND,
            "no such webhook endpoint".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn show(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match endpoint(&app, &id).await {
        Ok(ep) => Json(view(&ep)).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct UpdateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    description: Option<String>,
}

async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<UpdateBody>>,
) -> Response {
    let Some(Json(b)) = body else {
        return error(StatusCode::BAD_REQUEST, "a JSON body is needed");
    };
    if let Some(url) = &b.url {
        if let Err(r) = checked_url(&app, url).await {
            return r.into_response();
        }
    }
    if b.description.as_ref().is_some_and(|d| d.len() > MAX_TEXT) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "description: too long");
    }
    let events = match b.events.as_deref().map(events_of).transpose() {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let change = EndpointChange {
        url: b.url,
        events,
        active: b.active,
        description: b.description,
    };
    let now = app.engine.clock.now_ms();
    match app
        .engine
        .store
        .update_hook_endpoint(&id, &change, now)
        .await
    {
        Ok(true) => show(State(app), Path(id)).await,
        Ok(false) => error(StatusCode::NOT_FOUND, "no such webhook endpoint"),
        Err(e) => store_error(e),
    }
}

async fn remove(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.engine.store.delete_hook_endpoint(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such webhook endpoint"),
        Err(e) => store_error(e),
    }
}

async fn rotate(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let secret = match new_secret() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let now = app.engine.clock.now_ms();
    let until = now + app.engine.settings().webhooks.rotation_overlap.as_millis() as i64;
    match app
        .engine
        .store
        .rotate_hook_secret(&id, &secret, until, now)
        .await
    {
        Ok(true) => Json(json!({
            "id": id,
            "secret": secret.expose_secret(),
            "previous_secret_until": until,
        }))
        .into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such webhook endpoint"),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn deliveries(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(r) = endpoint(&app, &id).await {
        return r.into_response();
    }
    let limit = match limit_of(q.limit) {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let before = match uncursor(q.cursor.as_deref().filter(|c| !c.is_empty())) {
        Ok(c) => match c.map(|c| c.parse::<i64>()).transpose() {
            Ok(b) => b,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad cursor"),
        },
        Err(r) => return r.into_response(),
    };
    match app.engine.store.hook_attempts(&id, before, limit + 1).await {
        Ok(found) => page(found, limit, |a| a.id.to_string(), attempt_view),
        Err(e) => store_error(e),
    }
}

async fn replay(
    State(app): State<AppState>,
    Path((id, delivery)): Path<(String, i64)>,
) -> Response {
    let now = app.engine.clock.now_ms();
    match app
        .engine
        .store
        .replay_hook_delivery(&id, delivery, now)
        .await
    {
        Ok(true) => (StatusCode::ACCEPTED, Json(json!({ "replayed": delivery }))).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such delivery of this endpoint"),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct RecoverBody {
    /// Unix ms.
    since: i64,
}

async fn recover(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<RecoverBody>>,
) -> Response {
    let Some(Json(b)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "a JSON body {since} (unix ms) is needed",
        );
    };
    if let Err(r) = endpoint(&app, &id).await {
        return r.into_response();
    }
    let now = app.engine.clock.now_ms();
    match app
        .engine
        .store
        .recover_hook_deliveries(&id, b.since, now)
        .await
    {
        Ok(n) => (StatusCode::ACCEPTED, Json(json!({ "recovered": n }))).into_response(),
        Err(e) => store_error(e),
    }
}

async fn test_event(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let ep = match endpoint(&app, &id).await {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    let now = app.engine.clock.now_ms();
    let e = NewHookEvent {
        account: ep.account.clone().unwrap_or_default(),
        user_key: None,
        event_type: EventType::WebhookTest,
        data: json!({ "endpoint_id": ep.id }),
        dedup_key: format!("test:{}:{now}:{:08x}", ep.id, fastrand::u32(..)),
        at: now,
    };
    match app.engine.store.hook_test_event(&ep.id, &e).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "sent": true }))).into_response(),
        Err(e) => store_error(e),
    }
}
