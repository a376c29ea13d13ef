//! The HTTP edge: Meta's webhook, health, metrics and the admin API.

mod access;
mod admin;
mod analytics;
pub mod analytics_fold;
mod api;
mod campaigns;
mod commerce;
mod dead_letters;
mod health;
pub use access::roles::{route_role, RouteRole, Scope, ROUTE_ROLES};
mod contacts;
mod hooks;
mod openapi;
pub use commerce::owner;
pub use openapi::document as openapi_document;
mod inbox;
pub mod listener;
pub mod payments;
mod problem;
pub use problem::PROBLEM_JSON;
mod qr;
pub mod retention;
pub mod signature;
mod storage;
mod sweeps;
mod throttle;
mod webhook;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::actors::{AccountRouter, Engine};

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub engine: Arc<Engine>,
    pub router: AccountRouter,
    /// Set on SIGTERM: webhooks get 503 so that Meta redelivers them to the next process.
    pub draining: AtomicBool,
    /// The campaign supervisor (set once the app has started it).
    pub campaigns: std::sync::OnceLock<ractor::ActorRef<crate::campaign::SupervisorMsg>>,
    /// When a reload request without the running admin token last made the daemon read its
    /// configuration files (at most once a second).
    pub reload_disk_read: std::sync::Mutex<Option<std::time::Instant>>,
    /// Webhook body bytes read and not yet authenticated (`http.max_unauthenticated_body_bytes`).
    pub unauthenticated_bytes: Arc<tokio::sync::Semaphore>,
    /// Wrong admin and verify tokens per client address.
    pub auth_failures: throttle::AuthThrottle,
    /// Refused requests are logged at most once a second per kind.
    pub refusal_logs: RefusalLogs,
}

pub struct RefusalLogs {
    pub admin: throttle::LogBudget,
    pub verify: throttle::LogBudget,
    pub webhook: throttle::LogBudget,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, router: AccountRouter) -> Self {
        fn engine_budget(engine: &Engine) -> usize {
            engine.settings().http.max_unauthenticated_body_bytes
        }
        AppState(Arc::new(Inner {
            engine: engine.clone(),
            router,
            draining: AtomicBool::new(false),
            campaigns: std::sync::OnceLock::new(),
            reload_disk_read: std::sync::Mutex::new(None),
            unauthenticated_bytes: Arc::new(tokio::sync::Semaphore::new(
                engine_budget(&engine).min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            auth_failures: throttle::AuthThrottle::default(),
            refusal_logs: RefusalLogs {
                admin: throttle::LogBudget::per(std::time::Duration::from_secs(1)),
                verify: throttle::LogBudget::per(std::time::Duration::from_secs(1)),
                webhook: throttle::LogBudget::per(std::time::Duration::from_secs(1)),
            },
        }))
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Every route on one listener.
pub fn router(state: AppState) -> Router {
    public_routes()
        .merge(private_routes(state.clone()))
        .with_state(state)
}

/// With `http.admin_listen`: the webhook and health checks for the public listener, the admin
/// API and metrics for the private one.
pub fn split_routers(state: AppState) -> (Router, Router) {
    (
        public_routes().with_state(state.clone()),
        private_routes(state.clone()).with_state(state),
    )
}

fn public_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhook",
            // The POST reads its body itself (within http.max_body_bytes), after the
            // signature header.
            get(webhook::verify_subscription)
                .post(webhook::receive)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/payments/{name}/callback",
            axum::routing::post(payments::callback)
                .layer(DefaultBodyLimit::max(payments::MAX_CALLBACK_BYTES)),
        )
        .route("/payments/qr/{file}", get(qr::image))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

fn private_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .nest("/admin/v1", admin::routes(state))
}

/// The client's address, as the listener saw it (tests that call the router directly have
/// none: they count as one unspecified client).
pub(crate) fn client_ip(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip())
}

/// The allowance of failed authentications in force.
pub(crate) fn allowance(app: &AppState) -> throttle::Allowance {
    let http = &app.engine.settings().http;
    throttle::Allowance {
        burst: http.auth_failures_burst,
        interval: http.auth_failures_interval,
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up) for a client past its allowance.
pub(crate) fn too_many_failures(
    endpoint: &'static str,
    retry_after: std::time::Duration,
) -> Response {
    crate::metrics::metrics().auth_failures.inc(match endpoint {
        "admin" => "endpoint=\"admin\",result=\"throttled\"",
        _ => "endpoint=\"verify\",result=\"throttled\"",
    });
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.max(1).to_string())],
        "too many failed attempts",
    )
        .into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match app.engine.store.ready().await {
        Ok(true) => (StatusCode::OK, "ready").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")).into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::metrics().render(),
    )
        .into_response()
}

/// Hand `event` to the conversation `user` of `account` and wait for the outcome.
pub(crate) async fn command(
    account: &ractor::ActorRef<crate::actors::AccountMsg>,
    user: impl Into<crate::domain::UserKey>,
    event: crate::conversation::ConversationEvent,
) -> Result<
    Result<crate::actors::CommandOutcome, String>,
    ractor::RactorErr<crate::actors::AccountMsg>,
> {
    ractor::call_t!(
        account,
        |reply| crate::actors::AccountMsg::Command {
            user_key: user.into(),
            event,
            reply,
        },
        10_000
    )
}
