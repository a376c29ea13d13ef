//! Who calls the admin API and what they may do: `admin.token` (the owner's bootstrap) or an
//! API key (`pk_live_…`, stored hashed, with a role, an optional account scope and an
//! expiry); every route's role ([`roles::ROUTE_ROLES`]); and the audit log, one row per
//! mutating call, written here so that every route, present and future, is covered.
//!
//! Two layers wrap the admin router: [`authenticate`] (every request, unknown paths too:
//! 401 for a missing, wrong, expired or revoked key, and wrong ones count against the
//! client's allowance) and [`authorize`] (matched routes: 403 naming the role needed, or the
//! account a scoped key may reach; then the audit row). `keys.rs` is `/keys`, `audit.rs`
//! `/audit`.

mod audit;
mod idempotency;
mod keys;

pub(in crate::ingress) use keys::NewKeyBody;
pub mod roles;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::{AccountId, KeyRef, Role};
use roles::{route_role, Scope};

pub use audit::AuditDetails;
pub use idempotency::KEEP_MS as IDEMPOTENCY_KEEP_MS;

/// What a key's text starts with.
const KEY_PREFIX: &str = "pk_live_";
/// Hex digits of a key's secret (32 random bytes).
const SECRET_HEX: usize = 64;
/// Hex digits of the secret kept in clear to find the key (not secret).
const LOOKUP_HEX: usize = 12;
/// A key's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;
/// The most of a body read to find a scoped key's account in it.
const MAX_SCOPED_BODY: usize = super::campaigns::MAX_BODY;

/// The caller of a request, once authenticated (a request extension).
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key: KeyRef,
    pub role: Role,
    /// The one account the key reaches; None: every account.
    pub account: Option<AccountId>,
}

impl Caller {
    fn owner_token() -> Caller {
        Caller {
            key: KeyRef::AdminToken,
            role: Role::Owner,
            account: None,
        }
    }

    /// Whether this caller may see what belongs to `account` (None: every account's).
    pub fn reaches(&self, account: Option<&AccountId>) -> bool {
        match (&self.account, account) {
            (None, _) => true,
            (Some(mine), Some(a)) => mine == a,
            (Some(_), None) => false,
        }
    }
}

/// The `/keys` and `/audit` routes.
pub fn routes() -> Router<AppState> {
    keys::routes().merge(audit::routes())
}

/// `api` behind the admin API's guard: authentication for every request, the role and scope
/// of each matched route, and the audit log.
pub fn guard(api: Router<AppState>, state: AppState) -> Router<AppState> {
    api.route_layer(middleware::from_fn_with_state(
        state.clone(),
        idempotency::idempotent,
    ))
    .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
    .layer(middleware::from_fn_with_state(state, authenticate))
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    Refusal::new(status, message).into_response()
}

/// An answer other than success: `{"error": message, …}`.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    body: serde_json::Value,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn bearer(req: &Request) -> &[u8] {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"")
}

fn token_matches(expected: Option<&SecretString>, given: &[u8]) -> bool {
    expected
        .is_some_and(|t| !given.is_empty() && bool::from(given.ct_eq(t.expose_secret().as_bytes())))
}

/// SHA-256 of a key's text, hex: what the store keeps.
fn key_hash(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))
}

/// A new key: its text (shown once), its lookup prefix and its hash.
fn new_key() -> Result<(SecretString, String, String), getrandom::Error> {
    let mut secret = [0u8; SECRET_HEX / 2];
    getrandom::fill(&mut secret)?;
    let hex = hex::encode(secret);
    let text = format!("{KEY_PREFIX}{hex}");
    let hash = key_hash(text.as_bytes());
    Ok((
        SecretString::from(text),
        hex[..LOOKUP_HEX].to_string(),
        hash,
    ))
}

/// The prefix as shown: `pk_live_0123456789ab`.
fn shown_prefix(prefix: &str) -> String {
    format!("{KEY_PREFIX}{prefix}")
}

/// The key `given` names, if it is one in force.
async fn key_caller(
    app: &AppState,
    given: &[u8],
) -> Result<Option<Caller>, crate::store::StoreError> {
    let Some(hex) = given.strip_prefix(KEY_PREFIX.as_bytes()) else {
        return Ok(None);
    };
    if hex.len() != SECRET_HEX || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Ok(None);
    }
    let prefix = String::from_utf8_lossy(&hex[..LOOKUP_HEX]).to_ascii_lowercase();
    let hash = key_hash(given);
    let now = app.engine.clock.now_ms();
    let candidates = app.engine.store.api_keys_by_prefix(&prefix).await?;
    let Some(key) = candidates
        .into_iter()
        .find(|k| bool::from(k.hash.as_bytes().ct_eq(hash.as_bytes())))
    else {
        return Ok(None);
    };
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|t| t <= now) {
        return Ok(None);
    }
    if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
        if let Err(error) = app.engine.store.touch_api_key(key.id, now).await {
            tracing::warn!(key = key.id, %error, "Cannot note an API key's use.");
        }
    }
    Ok(Some(Caller {
        key: KeyRef::Key(key.id),
        role: key.role,
        account: key.account,
    }))
}

fn refused(app: &AppState, req: &Request) -> Response {
    let ip = super::client_ip(req.extensions());
    app.auth_failures
        .failed(ip, super::allowance(app), std::time::Instant::now());
    crate::metrics::metrics()
        .auth_failures
        .inc("endpoint=\"admin\",result=\"refused\"");
    if let Some(held_back) = app.refusal_logs.admin.take() {
        tracing::warn!(
            path = %super::throttle::masked_path(req.uri().path()),
            held_back,
            "Admin request refused: missing, wrong, expired or revoked token."
        );
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "missing or wrong bearer token" })),
    )
        .into_response()
}

/// A client past its allowance of wrong tokens waits, whatever token it sends now.
fn throttled(app: &AppState, req: &Request) -> Option<Response> {
    let ip = super::client_ip(req.extensions());
    let wait = app
        .auth_failures
        .blocked(ip, super::allowance(app), std::time::Instant::now())?;
    Some(super::too_many_failures("admin", wait))
}

/// Every admin request: `admin.token` or a key in force, else 401 (404 while the admin API
/// is disabled: no `admin.token`).
async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(running) = app.engine.settings().admin.enabled_token().cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: set admin.token",
        );
    };
    if let Some(wait) = throttled(&app, &req) {
        return wait;
    }
    let given = bearer(&req).to_vec();
    let caller = if token_matches(Some(&running), &given) {
        Some(Caller::owner_token())
    } else {
        match key_caller(&app, &given).await {
            Ok(c) => c,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        }
    };
    let caller = match caller {
        Some(c) => c,
        None if is_reload(&req) && reload_token_on_disk(&app, &given).await => {
            Caller::owner_token()
        }
        None => return refused(&app, &req),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn is_reload(req: &Request) -> bool {
    req.method() == Method::POST && relative(req.uri().path()) == "/reload"
}

/// `POST /reload` also takes the token the configuration on disk sets now: `parleyd reload`
/// reads the files it asks the daemon to apply, so after a rotation of `admin.token` it
/// presents the new token (which is in force once the reload is done). Reading the files costs
/// a parse: a caller without the running token gets that at most once a second.
async fn reload_token_on_disk(app: &AppState, given: &[u8]) -> bool {
    let may_read = !given.is_empty() && {
        let mut last = app
            .reload_disk_read
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ok = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if ok {
            *last = Some(std::time::Instant::now());
        }
        ok
    };
    if !may_read {
        return false;
    }
    let file = app.engine.settings().config_file.clone();
    let on_disk = tokio::task::spawn_blocking(move || {
        crate::config::Settings::load(file.as_deref())
            .ok()
            .and_then(|s| s.admin.enabled_token().cloned())
    })
    .await
    .ok()
    .flatten();
    let matches = token_matches(on_disk.as_ref(), given);
    if matches {
        tracing::info!("Reload asked with the admin.token the configuration on disk sets.");
    }
    matches
}

/// A path under `/admin/v1` as the table names it.
fn relative(path: &str) -> &str {
    match path.strip_prefix("/admin/v1") {
        Some("") => "/",
        Some(rest) => rest,
        None => path,
    }
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Each matched route: the caller's role and account against the route's line, then the
/// handler, then (for a mutating call) the audit row.
async fn authorize(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // authenticate() always runs first.
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    };
    let method = req.method().clone();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| relative(m.as_str()).to_string())
        .unwrap_or_default();
    let resource = relative(req.uri().path()).to_string();
    let mutating = is_mutating(&method);
    let ip = super::client_ip(req.extensions()).to_string();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect::<String>());
    let mut account = None;
    let response = match admit(&caller, &method, &template, req).await {
        Ok((req, named)) => {
            account = named;
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    };
    if !mutating {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let details = parts
        .extensions
        .remove::<AuditDetails>()
        .map_or_else(|| json!({}), |d| d.0);
    let entry = crate::store::AuditEntry {
        id: 0,
        at: app.engine.clock.now_ms(),
        key_id: caller.key,
        role: caller.role,
        action: format!("{method} {template}"),
        resource,
        account: account.or(caller.account.clone()),
        status: i64::from(parts.status.as_u16()),
        ip,
        user_agent,
        details: details.to_string(),
    };
    if let Err(error) = app.engine.store.append_audit(&entry).await {
        tracing::error!(%error, action = %entry.action, "Cannot write an audit row.");
    }
    Response::from_parts(parts, body)
}

/// The request as the handler gets it and the account it names, or the refusal.
async fn admit(
    caller: &Caller,
    method: &Method,
    template: &str,
    req: Request,
) -> Result<(Request, Option<AccountId>), Refusal> {
    let Some(line) = route_role(method.as_str(), template) else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("{method} {template} declares no role (see ROUTE_ROLES): refused to every key"),
        ));
    };
    if caller.role < line.role {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "error": format!("this route needs the {} role; this key is {}", line.role, caller.role),
                "required_role": line.role,
            }),
        });
    }
    match line.scope {
        Scope::Filtered => Ok((req, None)),
        Scope::Global if caller.account.is_some() => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "this route is not about one account: a key scoped to one account cannot use it",
        )),
        Scope::Global => Ok((req, None)),
        Scope::Account => account_of_route(caller, template, req),
        Scope::Body(field) => account_of_body(caller, field, req).await,
    }
}

fn outside(scope: &AccountId) -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        format!("this key reaches only account {scope}"),
    )
}

/// The account a route names (path segment, else `account` query); for a scoped key, its own
/// (filled in when left out).
fn account_of_route(
    caller: &Caller,
    template: &str,
    mut req: Request,
) -> Result<(Request, Option<AccountId>), Refusal> {
    let path = relative(req.uri().path()).to_string();
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let in_path = t
        .iter()
        .position(|s| matches!(*s, "{phone_number_id}" | "{account}" | "{pnid}"))
        // `/accounts/{id}/…`
        .or_else(|| {
            t.windows(2)
                .position(|w| w[0] == "accounts" && w[1].starts_with('{'))
                .map(|i| i + 1)
        })
        .and_then(|i| p.get(i).map(|s| s.to_string()));
    let in_query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "account")
            .map(|(_, v)| v.into_owned())
    });
    let named = in_path.or(in_query).map(|a| AccountId::from(a.as_str()));
    let Some(scope) = &caller.account else {
        return Ok((req, named));
    };
    match named {
        Some(a) if &a == scope => Ok((req, Some(a))),
        Some(_) => Err(outside(scope)),
        None => {
            // Left out: the key's own account.
            let uri = req.uri().clone();
            let mut query: String =
                url::form_urlencoded::Serializer::new(uri.query().unwrap_or("").to_string())
                    .append_pair("account", scope.as_str())
                    .finish();
            if query.starts_with('&') {
                query.remove(0);
            }
            let with = format!("{}?{query}", uri.path());
            *req.uri_mut() = with
                .parse()
                .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "bad request path"))?;
            Ok((req, Some(scope.clone())))
        }
    }
}

/// A scoped key's body must name its account in `field`.
async fn account_of_body(
    caller: &Caller,
    field: &str,
    req: Request,
) -> Result<(Request, Option<AccountId>), Refusal> {
    let Some(scope) = &caller.account else {
        return Ok((req, None));
    };
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_SCOPED_BODY)
        .await
        .map_err(|_| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    let named = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_string));
    match named {
        Some(a) if a == scope.as_str() => Ok((
            Request::from_parts(parts, Body::from(bytes)),
            Some(scope.clone()),
        )),
        _ => Err(outside(scope)),
    }
}
