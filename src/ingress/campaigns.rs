//! `/admin/v1/campaigns`: create, inspect, pause, resume and cancel campaigns.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::campaign::{
    parse_when, CampaignRequest, RecipientsRequest, SupervisorMsg, DEFAULT_RATE_PER_MINUTE,
};
use crate::domain::CampaignStatus;
use crate::store::{CampaignRow, NewCampaign, NewRecipients};

/// A campaign with an explicit list of 100,000 recipients is a few MiB of JSON.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
}

fn supervisor(app: &AppState) -> Option<&ractor::ActorRef<SupervisorMsg>> {
    app.campaigns.get()
}

pub async fn create(State(app): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: CampaignRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("bad request body: {e}"),
            )
        }
    };
    let spec = match req.spec() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    if app
        .engine
        .settings()
        .account(&req.phone_number_id)
        .is_none()
    {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    }
    let scheduled_for = match req.scheduled_for.as_ref().map(parse_when).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let recipients = match &req.recipients {
        RecipientsRequest::Tag { tag } => NewRecipients::Tag(tag.clone()),
        RecipientsRequest::List(list) => {
            let mut out = Vec::with_capacity(list.len());
            for r in list {
                let user = r.wa_id.trim().trim_start_matches('+').to_string();
                if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("recipient `{}` is not a wa_id", r.wa_id),
                    );
                }
                let vars = (!r.vars.is_empty())
                    .then(|| serde_json::to_string(&r.vars))
                    .transpose()
                    .unwrap_or(None);
                out.push((user, vars));
            }
            NewRecipients::List(out)
        }
    };
    let now = app.engine.clock.now_ms();
    let status = match (req.start, scheduled_for) {
        (false, _) => CampaignStatus::Draft,
        (true, Some(at)) if at > now => CampaignStatus::Scheduled,
        (true, _) => CampaignStatus::Running,
    };
    let new = NewCampaign {
        account: req.phone_number_id.clone(),
        name: req.name.clone(),
        kind: spec.kind.as_str().to_string(),
        spec: match serde_json::to_string(&spec) {
            Ok(s) => s,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        status,
        rate_per_minute: i64::from(req.rate_limit_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE)),
        scheduled_for,
        enrolled_at: scheduled_for.map_or(now, |at| at.max(now)),
        first_offset_ms: spec.steps.first().map_or(0, |s| s.offset_ms),
        now,
    };
    let id = match app.engine.store.create_campaign(&new, &recipients).await {
        Ok(id) => id,
        Err(e) => return store_error(e),
    };
    let total = match app.engine.store.campaign(id).await {
        Ok(Some(row)) => row.total,
        Ok(None) => 0,
        Err(e) => return store_error(e),
    };
    if status != CampaignStatus::Draft {
        if let Some(sup) = supervisor(&app) {
            let _ = sup.cast(SupervisorMsg::Start(id));
        }
    }
    tracing::info!(campaign = id, account = %new.account, kind = %new.kind, total, status = %status, "Campaign created.");
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "status": status, "total": total })),
    )
        .into_response()
}

async fn load(app: &AppState, id: i64) -> Result<CampaignRow, Response> {
    match app.engine.store.campaign(id).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, "no such campaign")),
        Err(e) => Err(store_error(e)),
    }
}

pub async fn show(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    let row = match load(&app, id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (mut counters, variants) = match app.engine.store.campaign_counters(id).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    counters.total = counters.total.max(row.total);
    let names: Vec<String> = serde_json::from_str::<crate::campaign::CampaignSpec>(&row.spec)
        .map(|s| s.variants.into_iter().map(|v| v.name).collect())
        .unwrap_or_default();
    let variants: Vec<serde_json::Value> = if names.is_empty() {
        Vec::new()
    } else {
        variants
            .into_iter()
            .map(|v| {
                let mut j = serde_json::to_value(&v).unwrap_or_default();
                j["name"] = json!(names.get(v.variant as usize));
                j
            })
            .collect()
    };
    Json(json!({
        "id": row.id,
        "name": row.name,
        "type": row.kind,
        "phone_number_id": row.account,
        "status": row.status,
        "pause_reason": row.pause_reason,
        // Sends already with the HTTP client when it was paused (the most that could still
        // reach Meta after the pause); its other unsent messages are withheld.
        "in_flight_at_pause": app
            .engine
            .gates
            .get(&row.account)
            .and_then(|g| g.with_holds(|h| h.withdrawal(row.id)))
            .map(|w| w.in_flight_at_pause),
        "counters": counters,
        "variants": variants,
        "rate_limit_per_minute": row.rate_per_minute,
        "scheduled_for": row.scheduled_for,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<i64>,
}

/// Per-recipient status (with the failure reason), a page at a time: `?after=ID&limit=N`.
pub async fn recipients(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    Query(page): Query<Page>,
) -> Response {
    if let Err(resp) = load(&app, id).await {
        return resp;
    }
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    match app
        .engine
        .store
        .campaign_recipients(id, page.after, limit)
        .await
    {
        Ok(list) => {
            let next = (list.len() as i64 == limit).then(|| list.last().map(|r| r.id));
            Json(json!({ "recipients": list, "next_after": next.flatten() })).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `POST /campaigns/{id}/pause|resume|cancel`.
pub async fn act(State(app): State<AppState>, Path((id, action)): Path<(i64, String)>) -> Response {
    let row = match load(&app, id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let now = app.engine.clock.now_ms();
    let store = &app.engine.store;
    use CampaignStatus::{Cancelled, Draft, Paused, Running, Scheduled};
    let (from, to, reason): (&[CampaignStatus], CampaignStatus, Option<&str>) =
        match action.as_str() {
            "pause" => (&[Running, Scheduled], Paused, Some("paused by an operator")),
            "cancel" => (&[Draft, Scheduled, Running, Paused], Cancelled, None),
            "resume" => {
                let to = if row.scheduled_for.is_some_and(|at| at > now) {
                    Scheduled
                } else {
                    Running
                };
                (&[Paused, Draft], to, None)
            }
            _ => return error(StatusCode::NOT_FOUND, "actions: pause, resume, cancel"),
        };
    if action == "resume" && row.status == Draft {
        // A draft starts now (or at its schedule): drip offsets count from then.
        let first = serde_json::from_str::<crate::campaign::CampaignSpec>(&row.spec)
            .ok()
            .and_then(|s| s.steps.first().map(|s| s.offset_ms))
            .unwrap_or(0);
        let at = row.scheduled_for.map_or(now, |s| s.max(now));
        if let Err(e) = store.enroll_campaign(id, at, first).await {
            return store_error(e);
        }
    }
    match store.set_campaign_status(id, from, to, reason, now).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                format!("the campaign is {}: cannot {action} it", row.status),
            )
        }
        Err(e) => return store_error(e),
    }
    let gate = app.engine.gates.get(&row.account);
    // Paused: what its pacer handed to the sender and is not yet with the HTTP client is
    // withheld from now on (a page still being handed over is withheld too, as it lands).
    let withdrawal = match (action.as_str(), &gate) {
        ("pause", Some(g)) => Some(g.withdraw_campaign(id)),
        ("resume", Some(g)) => {
            g.release_campaign(id);
            None
        }
        // Cancelled: withheld for good, and settled unsent.
        ("cancel", Some(g)) => Some(g.cancel_campaign(id)),
        _ => None,
    };
    if let Some(sup) = supervisor(&app) {
        if action == "resume" {
            let _ = sup.cast(SupervisorMsg::Start(id));
        } else {
            let _ = ractor::call_t!(sup, |reply| SupervisorMsg::Stop(id, reply), 5_000);
        }
    }
    tracing::info!(campaign = id, action = %action, status = %to, "Campaign changed by an operator.");
    let mut body = json!({ "id": id, "status": to });
    if let Some(w) = withdrawal {
        body["in_flight_at_pause"] = json!(w.in_flight_at_pause);
    }
    Json(body).into_response()
}
