//! `/admin/v1/`: `admin.token` or an API key, each route behind its role
//! ([`super::access`]: authentication, roles, account scope, audit log; disabled with no
//! `admin.token`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::actors::{AccountMsg, CommandOutcome};
use crate::conversation::{ConversationEvent, ConversationState};
use crate::whatsapp::send::OutboundMessage;

pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/accounts", get(accounts))
        .route("/accounts/{phone_number_id}/usage", get(usage))
        .route("/accounts/{phone_number_id}/resume", post(resume))
        .route("/conversations/{phone_number_id}/{user}", get(conversation))
        .route("/messages", post(send_message))
        .route(
            "/conversations/{phone_number_id}/{user}/handoff",
            post(handoff),
        )
        .route(
            "/conversations/{phone_number_id}/{user}/reply",
            post(agent_reply),
        )
        .route(
            "/conversations/{phone_number_id}/{user}/release",
            post(release),
        )
        .route(
            "/campaigns",
            post(super::campaigns::create).layer(axum::extract::DefaultBodyLimit::max(
                super::campaigns::MAX_BODY,
            )),
        )
        .route("/campaigns/{id}", get(super::campaigns::show))
        .route(
            "/campaigns/{id}/recipients",
            get(super::campaigns::recipients),
        )
        .route("/campaigns/{id}/{action}", post(super::campaigns::act))
        .route("/flows", get(flows))
        .route("/bots", get(bots))
        .route("/flows/reload", post(reload_flows))
        .merge(super::commerce::routes())
        .merge(super::dead_letters::routes())
        .merge(super::storage::routes())
        .merge(super::health::routes())
        .merge(super::access::routes())
        .merge(super::contacts::routes())
        .merge(super::hooks::routes())
        .merge(super::analytics::routes())
        .route("/payments/reconcile", post(super::payments::reconcile_now))
        .route("/payments/{id}", get(super::payments::show))
        .route(
            "/payments/{id}/confirm",
            post(super::payments::confirm_by_owner),
        )
        .route("/reload", post(reload_all))
        .route("/openapi.json", get(super::openapi::serve));
    // Every route above, and every module merged into it, behind its role (access::roles);
    // every error as RFC 9457 problem details.
    super::access::guard(api, state).layer(axum::middleware::from_fn(super::problem::as_problem))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `GET accounts`: a key scoped to one account sees that one only.
async fn accounts(
    State(app): State<AppState>,
    Extension(caller): Extension<super::access::Caller>,
) -> Response {
    let mut out = Vec::new();
    let settings = app.engine.settings_arc();
    for a in &settings.accounts {
        if !caller.reaches(Some(&a.phone_number_id)) {
            continue;
        }
        let (conversations, contacts, outbox_open) =
            match app.engine.store.account_counts(&a.phone_number_id).await {
                Ok(c) => c,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
            };
        let live = match app.router.get(&a.phone_number_id) {
            Some(actor) => ractor::call_t!(actor, AccountMsg::LiveConversations, 2_000).ok(),
            None => None,
        };
        out.push(json!({
            "phone_number_id": a.phone_number_id,
            "live_conversations": live,
            "display_phone_number": a.display_phone_number,
            "waba_id": a.waba_id,
            "running": app.router.get(&a.phone_number_id).is_some(),
            "mark_read": a.mark_read,
            "limits": {
                "messages_per_second": a.messages_per_second,
                "pair_rate_interval_ms": a.pair_rate_interval.as_millis() as u64,
                "pair_rate_burst": a.pair_rate_burst,
                "daily_limit": a.daily_limit,
                "messaging_tier": a.messaging_tier.to_string(),
                "timezone": a.timezone,
            },
            "conversations": conversations,
            "contacts": contacts,
            "outbox_open": outbox_open,
        }));
    }
    Json(json!({ "accounts": out })).into_response()
}

/// Today's count against the daily limit, tier usage, current rate, health, and whether (and
/// why) sending is paused or halted.
async fn usage(State(app): State<AppState>, Path(pnid): Path<String>) -> Response {
    let live = app.engine.settings_arc();
    let Some(settings) = live.account(&pnid) else {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    };
    let Some(gate) = app.engine.gates.get(&pnid) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the account's sender is not running yet",
        );
    };
    let now = app.engine.clock.now_ms();
    let view = gate.usage(now);
    let u = &view["usage"];
    let templates = match app.engine.store.template_problems(&gate.waba).await {
        Ok(t) => t
            .into_iter()
            .map(|(name, language, status, reason)| {
                json!({"name": name, "language": language, "status": status, "reason": reason})
            })
            .collect::<Vec<_>>(),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let control = &u["control"];
    Json(json!({
        "phone_number_id": pnid,
        "waba_id": settings.waba_id,
        "timezone": settings.timezone,
        "day": u["day"],
        "today": {
            "sent": u["sent_today"],
            "daily_limit": u["daily_limit"],
            "remaining": u["daily_limit"].as_u64().map(|l| l.saturating_sub(u["sent_today"].as_u64().unwrap_or(0))),
            "reserved": u["daily_reserved"],
        },
        "tier": view["tier"],
        "rate": {
            "configured_mps": u["configured_mps"],
            "current_mps": u["current_mps"],
            "measured_mps_10s": u["measured_mps"],
            "cool_off_until": u["cool_off_until"],
            "pair_rate_interval_ms": settings.pair_rate_interval.as_millis() as u64,
            "pair_rate_burst": settings.pair_rate_burst,
            "recipients_backing_off": u["recipients_backing_off"],
        },
        "health": u["health"],
        "quality": {"health": control["quality"], "event": control["quality_event"], "meta_tier": control["meta_tier"]},
        "account_status": {"health": control["account"], "event": control["account_event"]},
        "paused": control.get("paused"),
        "halted": control.get("halted"),
        "unreachable_contacts": u["unreachable_contacts"],
        "templates_not_approved": templates,
    }))
    .into_response()
}

/// Lift a pause (190) and a halt (131048 / 131031 / 368 / account restriction) once fixed.
async fn resume(State(app): State<AppState>, Path(pnid): Path<String>) -> Response {
    if app.engine.settings().account(&pnid).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    }
    let Some(gate) = app.engine.gates.get(&pnid) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the account's sender is not running yet",
        );
    };
    let now = app.engine.clock.now_ms();
    let (changed, before) = gate.with_gate(|g| {
        let before = g.control().clone();
        (g.resume(), before)
    });
    if changed {
        if let Err(e) = gate.record_control(&app.engine.writer, now).await {
            // Put it back: a resume that is not durable would be undone by a restart.
            gate.with_gate(|g| g.set_control(before));
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"));
        }
        tracing::warn!(account = %pnid, "Sending resumed by the admin API.");
    }
    gate.wake.notify_one();
    let health = gate.with_gate(|g| g.control().health());
    Json(json!({ "resumed": changed, "health": health })).into_response()
}

async fn conversation(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
) -> Response {
    if app.engine.settings().account(&pnid).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    }
    let store = &app.engine.store;
    let key = crate::domain::ConversationKey::new(pnid.as_str(), user.as_str());
    let stored = match store.load_conversation(&key).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let Some(stored) = stored else {
        return error(StatusCode::NOT_FOUND, "no such conversation");
    };
    let state: ConversationState = serde_json::from_str(&stored.state_json).unwrap_or_default();
    let now = app.engine.clock.now_ms();
    let contact = store.contact(&key).await.ok().flatten();
    let messages = match store.conversation_messages(&key, 50).await {
        Ok(m) => m,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    Json(json!({
        "phone_number_id": pnid,
        "user": user,
        "contact": contact,
        "state": state,
        "window_open": state.window_open(now),
        "handoff": state.handoff.as_ref().map(|h| json!({
            "status": h.status,
            "reason": h.reason,
            "since": h.since,
            "last_activity": h.last_activity,
        })),
        "window_expires_at": state.last_inbound_at.map(|t| t + crate::conversation::SERVICE_WINDOW_MS),
        "last_applied_seq": stored.last_applied_seq,
        "messages": messages,
    }))
    .into_response()
}

/// `GET bots`: each bot with its sessions by outcome, answers, mean answer time and cost.
async fn bots(State(app): State<AppState>) -> Response {
    let Some(registry) = &app.engine.flows else {
        return error(StatusCode::NOT_FOUND, "this daemon runs no flows");
    };
    let counters = match app.engine.store.bot_counters().await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let list: Vec<serde_json::Value> = registry
        .bots()
        .bots()
        .iter()
        .map(|b| {
            let mine = counters.iter().filter(|c| c.0 == b.id);
            let mut sessions = serde_json::Map::new();
            let (mut answers, mut ms, mut micros) = (0i64, 0i64, 0i64);
            for (_, status, n, turns, response_ms, cost) in mine {
                sessions.insert(status.clone(), json!(n));
                answers += turns;
                ms += response_ms;
                micros += cost;
            }
            json!({
                "id": b.id,
                "provider": b.provider,
                "model": b.model,
                "sessions": sessions,
                "answers": answers,
                "avg_response_ms": if answers > 0 { Some(ms / answers) } else { None },
                "cost": rust_decimal::Decimal::new(micros, 6).normalize().to_string(),
            })
        })
        .collect();
    Json(json!({ "bots": list })).into_response()
}

async fn flows(State(app): State<AppState>) -> Response {
    let Some(registry) = &app.engine.flows else {
        return error(StatusCode::NOT_FOUND, "this daemon runs no flows");
    };
    let (current, last_error) = registry.status();
    let counts = match app.engine.store.flow_execution_counts().await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let list: Vec<_> = current
        .iter()
        .map(|(id, version)| {
            let mut executions = serde_json::Map::new();
            for status in crate::domain::FlowRunStatus::ALL.map(|s| s.as_str()) {
                let n = counts
                    .iter()
                    .find(|(f, s, _)| f == id && s == status)
                    .map_or(0, |c| c.2);
                executions.insert(status.to_string(), json!(n));
            }
            json!({"id": id, "version": version, "executions": executions})
        })
        .collect();
    Json(json!({ "flows": list, "last_reload_errors": last_error })).into_response()
}

async fn reload_flows(State(app): State<AppState>) -> Response {
    let Some(registry) = &app.engine.flows else {
        return error(StatusCode::NOT_FOUND, "this daemon runs no flows");
    };
    let dir = app.engine.settings().flows.dir.clone();
    match crate::reload::reload_flows(&app.engine, registry, &dir).await {
        Ok(loaded) => {
            let list: Vec<_> = loaded
                .iter()
                .map(|(id, version)| json!({"id": id, "version": version}))
                .collect();
            Json(json!({ "flows": list })).into_response()
        }
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({ "error": "flows not reloaded: the running flows stay", "errors": errors }),
            ),
        )
            .into_response(),
    }
}

/// Flows and configuration (what `parleyd reload` asks for): 200 when everything changed on
/// disk now runs, 409 when config keys changed that need a restart, 422 when files are
/// invalid (the running flows or configuration stay).
async fn reload_all(State(app): State<AppState>) -> Response {
    let outcome = crate::reload::reload(&app.engine).await;
    let status = if !outcome.flow_errors.is_empty() || !outcome.config_errors.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if !outcome.restart_required.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    (status, Json(outcome)).into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SendRequest {
    phone_number_id: String,
    to: String,
    /// A full message in Parley's form (`{"kind": "buttons", ...}`), or use `text` / `template`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    message: Option<OutboundMessage>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    template: Option<TemplateShortcut>,
    #[serde(default)]
    reply_to: Option<String>,
    /// Makes a retried request create no second message.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// A free-form message outside the 24 h window: "fail" (409, the default), "hold" (sent
    /// when the user writes again) or `{"template": {...}}` (sent instead).
    #[serde(default)]
    outside_window: Option<OutsideWindow>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum OutsideWindow {
    Word(String),
    Template { template: TemplateShortcut },
}

impl OutsideWindow {
    fn policy(self) -> Result<crate::conversation::WindowPolicy, String> {
        use crate::conversation::WindowPolicy;
        match self {
            OutsideWindow::Word(w) if w == "fail" => Ok(WindowPolicy::Fail),
            OutsideWindow::Word(w) if w == "hold" => Ok(WindowPolicy::Hold),
            OutsideWindow::Word(w) => Err(format!(
                "outside_window `{w}` must be \"fail\", \"hold\" or {{\"template\": …}}"
            )),
            OutsideWindow::Template { template } => Ok(WindowPolicy::Template(template.message())),
        }
    }
}

impl TemplateShortcut {
    /// The template message (`body_params` become the body component).
    fn message(self) -> OutboundMessage {
        let mut components = self.components;
        if !self.body_params.is_empty() {
            components.push(json!({
                "type": "body",
                "parameters": self.body_params.iter().map(|p| json!({"type": "text", "text": p})).collect::<Vec<_>>(),
            }));
        }
        OutboundMessage::Template {
            name: self.name,
            language: self.language,
            components,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct TemplateShortcut {
    name: String,
    language: String,
    #[serde(default)]
    components: Vec<serde_json::Value>,
    #[serde(default)]
    body_params: Vec<String>,
}

async fn send_message(State(app): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("bad request body: {e}"),
            )
        }
    };
    let message = match (req.message, req.text, req.template) {
        (Some(m), None, None) => m,
        (None, Some(body), None) => OutboundMessage::Text {
            body,
            preview_url: false,
        },
        (None, None, Some(t)) => t.message(),
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "give exactly one of message, text or template",
            )
        }
    };
    if message.is_mark_read() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "mark_read is not a message",
        );
    }
    if let Some(resp) = beyond_limits(&message) {
        return resp;
    }
    if req.to.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "`to` is required");
    }
    let Some(account) = app.router.get(&req.phone_number_id) else {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    };
    let policy = match req.outside_window.map(OutsideWindow::policy).transpose() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let request_id = request_id(req.idempotency_key);
    let to = req.to.trim_start_matches('+').to_string();
    let event = ConversationEvent::Outgoing {
        request_id,
        message,
        reply_to: req.reply_to,
        policy,
    };
    let result = super::command(&account, to, event).await;
    match result {
        Ok(Ok(done)) if done.held => (
            StatusCode::ACCEPTED,
            Json(json!({ "held": true, "duplicate": done.duplicate, "reason": "outside the 24 h window: sent when the user writes again" })),
        )
            .into_response(),
        Ok(Ok(done)) if done.duplicate => duplicate(&done),
        Ok(Ok(done)) => match done.ids.first() {
            Some(id) => (StatusCode::ACCEPTED, Json(json!({ "outbox_id": id }))).into_response(),
            // Same idempotency key as an earlier request: already queued.
            None => (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response(),
        },
        Ok(Err(reason)) if reason.contains("window") => error(StatusCode::CONFLICT, reason),
        Ok(Err(reason)) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("account busy: {e}"),
        ),
    }
}

/// A conversation command's answer: 200 with `body`, or why not.
fn command_response(
    result: Result<Result<CommandOutcome, String>, ractor::RactorErr<AccountMsg>>,
    body: serde_json::Value,
) -> Response {
    match result {
        Ok(Ok(_)) => (StatusCode::OK, Json(body)).into_response(),
        Ok(Err(reason)) if reason.contains("window") => error(StatusCode::CONFLICT, reason),
        Ok(Err(reason)) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("account busy: {e}"),
        ),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

fn reason_of(body: &axum::body::Bytes, default: &str) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default.to_string());
    }
    serde_json::from_slice::<ReasonBody>(body)
        .map(|b| b.reason.unwrap_or_else(|| default.to_string()))
        .map_err(|e| format!("bad request body: {e}"))
}

/// `POST conversations/{pnid}/{user}/handoff` `{"reason": "…"}`: a human takes over; the bot
/// stays silent until released (or `handoff.timeout` passes without a message).
async fn handoff(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    with_reason(
        &app,
        &pnid,
        user,
        &body,
        |reason| ConversationEvent::Handoff { reason },
        json!({ "handoff": "waiting" }),
    )
    .await
}

/// `POST conversations/{pnid}/{user}/release`: back to the bot.
async fn release(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    with_reason(
        &app,
        &pnid,
        user,
        &body,
        |reason| ConversationEvent::Release { reason },
        json!({ "handoff": null }),
    )
    .await
}

/// A conversation command whose body is an optional `{"reason"}`; `answer` on success.
async fn with_reason(
    app: &AppState,
    pnid: &str,
    user: String,
    body: &axum::body::Bytes,
    event: impl FnOnce(String) -> ConversationEvent,
    answer: serde_json::Value,
) -> Response {
    let Some(account) = app.router.get(pnid) else {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    };
    let reason = match reason_of(body, "admin") {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    command_response(super::command(&account, user, event(reason)).await, answer)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ReplyBody {
    text: Option<String>,
    #[schema(value_type = Option<Object>)]
    message: Option<OutboundMessage>,
    idempotency_key: Option<String>,
}

/// `POST conversations/{pnid}/{user}/reply` `{"text": "…"}` (or `{"message": {…}}`): an
/// agent answers as the business. The conversation is with the agent from then on.
async fn agent_reply(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(account) = app.router.get(&pnid) else {
        return error(StatusCode::NOT_FOUND, "unknown phone_number_id");
    };
    let req: ReplyBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("bad request body: {e}"),
            )
        }
    };
    let message = match (req.text, req.message) {
        (Some(body), None) => OutboundMessage::Text {
            body,
            preview_url: false,
        },
        (None, Some(m)) if !m.is_mark_read() => m,
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "give exactly one of text or message",
            )
        }
    };
    if let Some(resp) = beyond_limits(&message) {
        return resp;
    }
    let request_id = request_id(req.idempotency_key);
    let event = ConversationEvent::AgentReply {
        request_id,
        message,
    };
    match super::command(&account, user, event).await {
        Ok(Ok(done)) if done.duplicate => duplicate(&done),
        Ok(Ok(CommandOutcome { ids, .. })) => (
            StatusCode::ACCEPTED,
            Json(json!({ "outbox_id": ids.first(), "handoff": "with_agent" })),
        )
            .into_response(),
        other => command_response(other, json!({})),
    }
}

/// 200 for a retried request: nothing new is queued; `outbox_id` is what it queued the
/// first time.
fn duplicate(done: &CommandOutcome) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "duplicate": true, "outbox_id": done.ids.first() })),
    )
        .into_response()
}

/// 422 with every WhatsApp limit `message` breaks, if it breaks any.
fn beyond_limits(message: &OutboundMessage) -> Option<Response> {
    let errors = message.validate().err()?;
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Some(
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "message breaks WhatsApp limits", "details": list })),
        )
            .into_response(),
    )
}

/// The caller's idempotency key, else a fresh random one.
fn request_id(key: Option<String>) -> String {
    key.unwrap_or_else(|| format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))
}
