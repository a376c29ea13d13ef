//! `GET /admin/v1/accounts/{phone_number_id}/health`: one answer to "is this number working?"
//! — its sending state (paused, halted, quality, Meta's tier), today's quota, the replies not
//! yet accepted by Meta (how many, and how old the oldest), and when the last message came in
//! and went out. `status` sums it up: `paused` | `halted` | `critical` | `degraded` | `ok`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::store::AccountTraffic;

/// A reply older than this and still not accepted by Meta makes the account `degraded`.
const STALE_UNSENT_MS: i64 = 5 * 60 * 1000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/accounts/{phone_number_id}/health", get(health))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The account's state in one word, from its gate's view (`usage`'s JSON: `health`,
/// `control.{quality, account, paused, halted}`) and its traffic.
pub fn status_of(usage: &Value, traffic: &AccountTraffic, now_ms: i64) -> &'static str {
    let control = &usage["control"];
    if !control["paused"].is_null() {
        return "paused";
    }
    if !control["halted"].is_null() {
        return "halted";
    }
    let healths = [&usage["health"], &control["quality"], &control["account"]];
    if healths.iter().any(|h| h.as_str() == Some("critical")) {
        return "critical";
    }
    let stale = traffic
        .oldest_unsent_at
        .is_some_and(|t| now_ms - t > STALE_UNSENT_MS);
    if stale || healths.iter().any(|h| h.as_str() == Some("warning")) {
        return "degraded";
    }
    "ok"
}

async fn health(State(app): State<AppState>, Path(pnid): Path<String>) -> Response {
    if app.engine.settings().account(&pnid).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    }
    let Some(gate) = app.engine.gates.get(&pnid) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the account's sender is not running yet",
        );
    };
    let traffic = match app.engine.store.account_traffic(&pnid).await {
        Ok(t) => t,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
    };
    let now = app.engine.clock.now_ms();
    let view = gate.usage(now);
    let u = &view["usage"];
    let control = &u["control"];
    let age = |t: Option<i64>| t.map(|t| (now - t).max(0) / 1000);
    Json(json!({
        "phone_number_id": pnid,
        "status": status_of(u, &traffic, now),
        "sending": {
            "health": u["health"],
            "paused": control.get("paused"),
            "halted": control.get("halted"),
        },
        "quality": {"health": control["quality"], "event": control["quality_event"]},
        "account_status": {"health": control["account"], "event": control["account_event"]},
        "tier": {"meta": control["meta_tier"], "limit": view["tier"]["limit"], "label": view["tier"]["label"]},
        "today": {
            "day": u["day"],
            "sent": u["sent_today"],
            "daily_limit": u["daily_limit"],
        },
        "backlog": {
            "unsent": traffic.backlog,
            "oldest_unsent_at": traffic.oldest_unsent_at,
            "oldest_unsent_age_s": age(traffic.oldest_unsent_at),
            "current_mps": u["current_mps"],
            "cool_off_until": u["cool_off_until"],
        },
        "last_inbound_at": traffic.last_inbound_at,
        "last_outbound_at": traffic.last_outbound_at,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(health: &str, quality: &str, extra: Value) -> Value {
        let mut control = json!({"quality": quality, "account": "healthy"});
        for (k, v) in extra.as_object().unwrap() {
            control[k] = v.clone();
        }
        json!({"health": health, "control": control})
    }

    #[test]
    fn the_status_sums_up_the_worst() {
        let quiet = AccountTraffic::default();
        let now = 10_000_000;
        assert_eq!(
            status_of(&usage("healthy", "healthy", json!({})), &quiet, now),
            "ok"
        );
        assert_eq!(
            status_of(&usage("healthy", "warning", json!({})), &quiet, now),
            "degraded"
        );
        assert_eq!(
            status_of(&usage("critical", "healthy", json!({})), &quiet, now),
            "critical"
        );
        let stop = json!({"reason": "x", "since": 1});
        assert_eq!(
            status_of(
                &usage("healthy", "healthy", json!({"halted": stop})),
                &quiet,
                now
            ),
            "halted"
        );
        assert_eq!(
            status_of(
                &usage(
                    "healthy",
                    "healthy",
                    json!({"halted": stop, "paused": stop})
                ),
                &quiet,
                now
            ),
            "paused"
        );
        let stuck = AccountTraffic {
            backlog: 3,
            oldest_unsent_at: Some(now - STALE_UNSENT_MS - 1),
            ..AccountTraffic::default()
        };
        assert_eq!(
            status_of(&usage("healthy", "healthy", json!({})), &stuck, now),
            "degraded"
        );
        let fresh = AccountTraffic {
            oldest_unsent_at: Some(now - 1_000),
            ..stuck
        };
        assert_eq!(
            status_of(&usage("healthy", "healthy", json!({})), &fresh, now),
            "ok"
        );
    }
}
