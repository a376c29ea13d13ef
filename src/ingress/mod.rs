//! The HTTP edge: Meta's webhook, health, metrics and the admin API.

mod admin;
mod campaigns;
pub mod signature;
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
}

impl AppState {
    pub fn new(engine: Arc<Engine>, router: AccountRouter) -> Self {
        AppState(Arc::new(Inner {
            engine,
            router,
            draining: AtomicBool::new(false),
            campaigns: std::sync::OnceLock::new(),
            reload_disk_read: std::sync::Mutex::new(None),
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

pub fn router(state: AppState) -> Router {
    let max_body = state.engine.settings().http.max_body_bytes;
    Router::new()
        .route(
            "/webhook",
            get(webhook::verify_subscription)
                .post(webhook::receive)
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/admin/v1", admin::routes(state.clone()))
        .with_state(state)
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
