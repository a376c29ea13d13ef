//! `GET /webhook` (Meta's subscription handshake) and `POST /webhook` (events).
//!
//! POST: verify the signature on the raw bytes, parse into typed events, append them to the
//! inbox through the group-commit writer, and answer 200 only once they are committed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signature;
use super::AppState;
use crate::metrics::metrics;
use crate::outbox::parse_callback;
use crate::store::writer::StatusApply;
use crate::store::{now_ms, NewDeadLetter, NewInboxRow};
use crate::whatsapp::event::WebhookEvent;
use crate::whatsapp::webhook::parse_webhook_report;

pub async fn verify_subscription(State(app): State<AppState>, req: Request) -> Response {
    let ip = super::client_ip(req.extensions());
    let allowance = super::allowance(&app);
    if let Some(wait) = app
        .auth_failures
        .blocked(ip, allowance, std::time::Instant::now())
    {
        return super::too_many_failures("verify", wait);
    }
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let settings = app.engine.settings();
    let expected = settings.whatsapp.verify_token.expose_secret().as_bytes();
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    let token = q
        .get("hub.verify_token")
        .map(String::as_bytes)
        .unwrap_or(b"");
    let token_ok = !expected.is_empty() && bool::from(token.ct_eq(expected));
    match (mode_ok && token_ok, q.get("hub.challenge")) {
        (true, Some(challenge)) => {
            tracing::info!("Webhook subscription verified.");
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            if !token_ok {
                app.auth_failures
                    .failed(ip, allowance, std::time::Instant::now());
                metrics()
                    .auth_failures
                    .inc("endpoint=\"verify\",result=\"refused\"");
            }
            if let Some(held_back) = app.refusal_logs.verify.take() {
                tracing::warn!(held_back, "Webhook verification refused.");
            }
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

fn result(label: &'static str, status: StatusCode, body: &'static str) -> Response {
    metrics().webhooks.inc(label);
    (status, body).into_response()
}

pub async fn receive(State(app): State<AppState>, req: Request) -> Response {
    let arrived = std::time::Instant::now();
    if app.draining() {
        return result(
            "result=\"draining\"",
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        );
    }
    let (parts, body) = req.into_parts();
    let settings = app.engine.settings_arc();
    let secret = settings.whatsapp.app_secret.expose_secret().as_bytes();
    // Refused on its headers alone: nothing unsigned is read.
    let claimed = match signature::Claimed::parse(
        parts
            .headers
            .get("x-hub-signature-256")
            .map(|v| v.as_bytes()),
    ) {
        Ok(c) if !secret.is_empty() => c,
        Ok(_) => return unauthorized(&app, &signature::SignatureError::NoSecret, None),
        Err(e) => return unauthorized(&app, &e, None),
    };
    let mut body = body;
    let read = read_body(
        &app,
        &parts.headers,
        &mut body,
        settings.http.max_body_bytes,
    )
    .await;
    if matches!(read, Err(BodyError::TooLarge | BodyError::Busy)) {
        // Signed, but refused: read the rest and throw it away (nothing is kept, and the body
        // deadline still applies), so that the client reads our answer instead of a reset.
        tokio::spawn(discard(body, DISCARD_AT_MOST));
    }
    let body = match read {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            if let Some(held_back) = app.refusal_logs.webhook.take() {
                tracing::warn!(held_back, "Webhook refused: body over the size limit.");
            }
            return result(
                "result=\"too_large\"",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            );
        }
        Err(BodyError::Busy) => {
            if let Some(held_back) = app.refusal_logs.webhook.take() {
                tracing::warn!(
                    held_back,
                    "Webhook refused with 503: too many unauthenticated bytes in flight."
                );
            }
            return result("result=\"busy\"", StatusCode::SERVICE_UNAVAILABLE, "busy");
        }
        Err(BodyError::TimedOut) => {
            return result(
                "result=\"timeout\"",
                StatusCode::REQUEST_TIMEOUT,
                "body too slow",
            );
        }
        Err(BodyError::Unreadable(e)) => {
            tracing::debug!(error = %e, "Webhook body could not be read.");
            return result(
                "result=\"unreadable\"",
                StatusCode::BAD_REQUEST,
                "body could not be read",
            );
        }
    };
    if let Err(e) = claimed.verify(secret, &body.bytes) {
        return unauthorized(&app, &e, Some(body.bytes.len()));
    }
    // Authenticated: these bytes no longer count against the unauthenticated budget.
    let body = body.bytes;
    let report = match parse_webhook_report(&body) {
        Ok(r) => r,
        Err(e) => {
            // Signed by Meta but not something we can read: keep the bytes, answer 200 (a
            // retry would carry the same bytes for days).
            tracing::warn!(error = %e, bytes = body.len(), "Signed webhook does not parse; dead-lettered.");
            let dl = kept_bytes("webhook_malformed", e.to_string(), &body);
            return keep(&app, dl, "result=\"malformed\"").await;
        }
    };
    // Items Meta signed but that could not be read whole (a message without its id, a change
    // whose value is not an object…): the rest goes on, and the bytes are kept for a human.
    let dropped: Vec<String> = report
        .skipped
        .iter()
        .filter(|s| s.dropped)
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect();
    let partial = (!dropped.is_empty()).then(|| {
        tracing::warn!(items = dropped.len(), bytes = body.len(), "Signed webhook has items that do not parse; they are dead-lettered, the rest is taken.");
        let mut reason = dropped.iter().take(20).cloned().collect::<Vec<_>>().join("; ");
        if dropped.len() > 20 {
            reason.push_str(&format!("; and {} more", dropped.len() - 20));
        }
        kept_bytes("webhook_partial", reason, &body)
    });
    let rows = inbox_rows(&app, report.webhook.events, arrived);
    if rows.is_empty() {
        return match partial {
            Some(dl) => keep(&app, dl, "result=\"partial\"").await,
            None => result("result=\"empty\"", StatusCode::OK, "ok"),
        };
    }
    let signals: Vec<(usize, GateSignal)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| gate_signal(r).map(|s| (i, s)))
        .collect();
    let failures: Vec<_> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let st = r.status.as_ref().filter(|st| st.status == "failed")?;
            (r.state == "done").then_some(())?;
            let detail = st.failure();
            Some((
                i,
                r.account.clone(),
                r.user_key.clone()?,
                st.outbox_id?,
                st.error_code,
                detail,
            ))
        })
        .collect();
    match app.engine.writer.append_inbox(rows).await {
        Ok(seqs) => {
            if let Some(dl) = partial {
                // Before the 200: a redelivery finds the rows taken and keeps these again.
                if let Err(e) = app.engine.writer.dead_letter(dl, None).await {
                    tracing::error!(error = %e, "Store unavailable; webhook refused with 503.");
                    return store_unavailable();
                }
            }
            // What concerns the send gates (health, quality, errors Meta reported for our
            // messages), applied once: only rows that were new.
            let fresh: Vec<GateSignal> = signals
                .into_iter()
                .filter(|(i, _)| matches!(seqs.get(*i), Some(Some(_))))
                .map(|(_, s)| s)
                .collect();
            // Meta says one of our messages failed: its conversation hears of it, as of a
            // send the API refused (131047: the window is closed, and the message goes
            // through the window policy).
            for (i, account, user, outbox_id, code, detail) in failures {
                if matches!(seqs.get(i), Some(Some(_))) {
                    if let Some(actor) = app.router.get(&account) {
                        let failure = crate::outbox::SendFailure {
                            user_key: user,
                            outbox_id,
                            code,
                            detail,
                            message: None,
                        };
                        let _ = actor.cast(crate::actors::AccountMsg::SendFailed(failure));
                    }
                }
            }
            if !fresh.is_empty() {
                let engine = app.engine.clone();
                tokio::spawn(async move { apply_gate_signals(&engine, fresh).await });
            }
            if seqs.iter().all(Option::is_none) {
                result("result=\"duplicate\"", StatusCode::OK, "ok")
            } else {
                result("result=\"ok\"", StatusCode::OK, "ok")
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "Store unavailable; webhook refused with 503.");
            store_unavailable()
        }
    }
}

fn unauthorized(app: &AppState, e: &signature::SignatureError, bytes: Option<usize>) -> Response {
    if let Some(held_back) = app.refusal_logs.webhook.take() {
        tracing::warn!(error = %e, bytes, held_back, "Webhook refused: bad signature.");
    }
    result(
        "result=\"unauthorized\"",
        StatusCode::UNAUTHORIZED,
        "bad signature",
    )
}

enum BodyError {
    TooLarge,
    Busy,
    TimedOut,
    Unreadable(axum::Error),
}

/// A body read before its signature was checked, with the share of
/// `http.max_unauthenticated_body_bytes` it holds.
struct Unverified {
    bytes: Bytes,
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A refused body is read on and thrown away up to this much, then the connection closes.
const DISCARD_AT_MOST: usize = 64 * 1024 * 1024;

async fn discard(mut body: Body, at_most: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, Bytes::len);
        if seen > at_most {
            break;
        }
    }
}

/// Read a webhook body: at most `max` bytes, each counted against the unauthenticated-bytes
/// budget while it is held (a full budget answers 503 at once rather than waiting).
async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: &mut Body,
    max: usize,
) -> Result<Unverified, BodyError> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    // The chunks as they came (no buffer doubling while unauthenticated: what is held is
    // what was counted), joined once at the end.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut timed_out = false;
            while let Some(c) = cause {
                timed_out |= c.is::<super::listener::BodyTimeout>();
                cause = c.source();
            }
            if timed_out {
                BodyError::TimedOut
            } else {
                BodyError::Unreadable(e)
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if len + data.len() > max {
            return Err(BodyError::TooLarge);
        }
        if !data.is_empty() {
            let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
            let permit = app
                .unauthenticated_bytes
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| BodyError::Busy)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        len += data.len();
        chunks.push(data);
    }
    Ok(Unverified {
        bytes: match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut joined = bytes::BytesMut::with_capacity(len);
                for c in chunks {
                    joined.extend_from_slice(&c);
                }
                joined.freeze()
            }
        },
        _held: held,
    })
}

fn store_unavailable() -> Response {
    result(
        "result=\"store_unavailable\"",
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
    )
}

/// A dead letter holding a signed body's bytes.
fn kept_bytes(kind: &'static str, reason: String, body: &Bytes) -> NewDeadLetter {
    NewDeadLetter {
        kind,
        account: None,
        user_key: None,
        ref_id: None,
        reason,
        raw: Some(body.to_vec()),
    }
}

/// Keep `dl` and answer 200 counted under `label`, or 503 if the store does not take it.
async fn keep(app: &AppState, dl: NewDeadLetter, label: &'static str) -> Response {
    match app.engine.writer.dead_letter(dl, None).await {
        Ok(()) => result(label, StatusCode::OK, "recorded"),
        Err(e) => {
            tracing::error!(error = %e, "Store unavailable; webhook refused with 503.");
            store_unavailable()
        }
    }
}

/// A committed event the send gates must hear about.
enum GateSignal {
    Account(crate::whatsapp::event::AccountEvent),
    SendError {
        account: String,
        user_key: Option<String>,
        code: i64,
    },
}

fn gate_signal(row: &NewInboxRow) -> Option<GateSignal> {
    match row.kind {
        "account_event" => match serde_json::from_str::<WebhookEvent>(&row.payload) {
            Ok(WebhookEvent::AccountEvent(a)) => Some(GateSignal::Account(a)),
            _ => None,
        },
        "status" if row.state == "done" => {
            let status = row.status.as_ref()?;
            let code = status.error_code?;
            if code != crate::conversation::WINDOW_CLOSED_CODE {
                crate::sendgate::outcome_for_code(code, "")?;
            }
            Some(GateSignal::SendError {
                account: row.account.clone(),
                user_key: row.user_key.clone(),
                code,
            })
        }
        _ => None,
    }
}

async fn apply_gate_signals(engine: &crate::actors::Engine, signals: Vec<GateSignal>) {
    let now = engine.clock.now_ms();
    for s in signals {
        match s {
            GateSignal::Account(ev) => {
                engine
                    .gates
                    .on_account_event(
                        &engine.settings_arc().accounts,
                        &engine.store,
                        &engine.writer,
                        &ev,
                        now,
                    )
                    .await
            }
            GateSignal::SendError {
                account,
                user_key,
                code,
                ..
            } => {
                engine
                    .gates
                    .on_status_error(
                        &engine.store,
                        &engine.writer,
                        &account,
                        user_key.as_deref(),
                        code,
                        now,
                    )
                    .await
            }
        }
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..16])
}

/// Turn typed events into inbox rows: messages of configured accounts are `pending` for their
/// conversation; statuses are applied in the same transaction; the rest is recorded as `done`;
/// anything for an unknown phone_number_id is kept as `unrouted`.
fn inbox_rows(
    app: &AppState,
    events: Vec<WebhookEvent>,
    arrived: std::time::Instant,
) -> Vec<NewInboxRow> {
    let settings = app.engine.settings();
    let received_at = now_ms();
    let known = |pnid: &str| settings.account(pnid).is_some();
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let payload = match serde_json::to_string(&event) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "Could not encode an event; skipped.");
                continue;
            }
        };
        match event {
            WebhookEvent::Message(m) => {
                let routed = known(&m.phone_number_id);
                if !routed {
                    metrics()
                        .unknown_account_events
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let user_key = m.user_key().map(str::to_string);
                let state = match (routed, &user_key) {
                    (false, _) => "unrouted",
                    (true, None) => "done",
                    (true, Some(_)) => "pending",
                };
                rows.push(NewInboxRow {
                    account: m.phone_number_id.clone(),
                    user_key,
                    kind: "message",
                    dedup_key: format!("m:{}", m.wamid),
                    wamid: Some(m.wamid.clone()),
                    payload,
                    received_at,
                    state,
                    status: None,
                    dispatch: Some(Arc::new(m)),
                    arrived: Some(arrived),
                });
            }
            WebhookEvent::Status(s) => {
                let routed = known(&s.phone_number_id);
                if !routed {
                    metrics()
                        .unknown_account_events
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let error = s.errors.first();
                let callback = s
                    .biz_opaque_callback_data
                    .as_deref()
                    .and_then(parse_callback);
                rows.push(NewInboxRow {
                    account: s.phone_number_id.clone(),
                    // The conversation that sent it (its writer owns the row), else whom Meta
                    // names.
                    user_key: callback
                        .and_then(|(_, user_key)| user_key)
                        .map(str::to_string)
                        .or_else(|| s.recipient_id.clone()),
                    kind: "status",
                    dedup_key: format!("s:{}:{}", s.wamid, s.status.as_str()),
                    wamid: Some(s.wamid.clone()),
                    payload,
                    received_at,
                    state: if routed { "done" } else { "unrouted" },
                    status: Some(StatusApply {
                        status: s.status.as_str().to_string(),
                        rank: s.status.rank(),
                        at_ms: if s.timestamp > 0 {
                            s.timestamp * 1000
                        } else {
                            received_at
                        },
                        outbox_id: callback.map(|(id, _)| id),
                        error_code: error.map(|e| e.code),
                        error_detail: error.map(|e| {
                            e.details
                                .clone()
                                .or_else(|| e.message.clone())
                                .or_else(|| e.title.clone())
                                .unwrap_or_default()
                        }),
                    }),
                    dispatch: None,
                    arrived: None,
                });
            }
            WebhookEvent::ChangeError(e) => {
                tracing::warn!(codes = ?e.errors.iter().map(|e| e.code).collect::<Vec<_>>(), "Meta reported errors for an account.");
                rows.push(NewInboxRow {
                    account: e.phone_number_id.clone().unwrap_or_default(),
                    user_key: None,
                    kind: "change_error",
                    dedup_key: format!("e:{}", short_hash(&payload)),
                    wamid: None,
                    payload,
                    received_at,
                    state: "done",
                    status: None,
                    dispatch: None,
                    arrived: None,
                });
            }
            WebhookEvent::AccountEvent(a) => {
                tracing::info!(field = %a.field, waba = %a.waba_id, "Account event received.");
                rows.push(NewInboxRow {
                    account: a
                        .phone_number_id
                        .clone()
                        .unwrap_or_else(|| a.waba_id.clone()),
                    user_key: None,
                    kind: "account_event",
                    dedup_key: format!("a:{}", short_hash(&payload)),
                    wamid: None,
                    payload,
                    received_at,
                    state: "done",
                    status: None,
                    dispatch: None,
                    arrived: None,
                });
            }
        }
    }
    rows
}
