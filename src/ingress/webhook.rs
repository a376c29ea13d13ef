//! `GET /webhook` (Meta's subscription handshake) and `POST /webhook` (events).
//!
//! POST: verify the signature on the raw bytes, parse into typed events, map them to inbox
//! rows ([`super::inbox`]), append them through the group-commit writer, and answer 200 only
//! once they are committed.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::inbox::{self, GateSignal};
use super::signature;
use super::AppState;
use crate::metrics::metrics;
use crate::store::NewDeadLetter;
use crate::whatsapp::webhook::{parse_webhook_report, SkippedItem};

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
    let body = match authenticated_body(&app, req).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
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
    let partial = partial_letter(&report.skipped, &body);
    let mut inbox = rows_of(&app, report.webhook.events, arrived);
    if inbox.rows.is_empty() {
        return match partial {
            Some(dl) => keep(&app, dl, "result=\"partial\"").await,
            None => result("result=\"empty\"", StatusCode::OK, "ok"),
        };
    }
    match app
        .engine
        .writer
        .append_inbox(std::mem::take(&mut inbox.rows))
        .await
    {
        Ok(seqs) => committed(&app, inbox.after_commit(&seqs), &seqs, partial).await,
        Err(e) => {
            tracing::error!(error = %e, "Store unavailable; webhook refused with 503.");
            store_unavailable()
        }
    }
}

/// The body of a webhook whose signature holds, or the answer that refuses it. Refused on
/// its headers alone when it is not signed: nothing unsigned is read.
async fn authenticated_body(app: &AppState, req: Request) -> Result<Bytes, Response> {
    let (parts, mut body) = req.into_parts();
    let settings = app.engine.settings_arc();
    let secret = settings.whatsapp.app_secret.expose_secret().as_bytes();
    let claimed = match signature::Claimed::parse(
        parts
            .headers
            .get("x-hub-signature-256")
            .map(|v| v.as_bytes()),
    ) {
        Ok(c) if !secret.is_empty() => c,
        Ok(_) => {
            return Err(unauthorized(
                app,
                &signature::SignatureError::NoSecret,
                None,
            ))
        }
        Err(e) => return Err(unauthorized(app, &e, None)),
    };
    let read = read_body(app, &parts.headers, &mut body, settings.http.max_body_bytes).await;
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
            return Err(result(
                "result=\"too_large\"",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            ));
        }
        Err(BodyError::Busy) => {
            if let Some(held_back) = app.refusal_logs.webhook.take() {
                tracing::warn!(
                    held_back,
                    "Webhook refused with 503: too many unauthenticated bytes in flight."
                );
            }
            return Err(result(
                "result=\"busy\"",
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
            ));
        }
        Err(BodyError::TimedOut) => {
            return Err(result(
                "result=\"timeout\"",
                StatusCode::REQUEST_TIMEOUT,
                "body too slow",
            ));
        }
        Err(BodyError::Unreadable(e)) => {
            tracing::debug!(error = %e, "Webhook body could not be read.");
            return Err(result(
                "result=\"unreadable\"",
                StatusCode::BAD_REQUEST,
                "body could not be read",
            ));
        }
    };
    if let Err(e) = claimed.verify(secret, &body.bytes) {
        return Err(unauthorized(app, &e, Some(body.bytes.len())));
    }
    // Authenticated: these bytes no longer count against the unauthenticated budget.
    Ok(body.bytes)
}

/// Items Meta signed but that could not be read whole (a message without its id, a change
/// whose value is not an object…): the rest goes on, and the bytes are kept for a human.
fn partial_letter(skipped: &[SkippedItem], body: &Bytes) -> Option<NewDeadLetter> {
    let dropped: Vec<String> = skipped
        .iter()
        .filter(|s| s.dropped)
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect();
    if dropped.is_empty() {
        return None;
    }
    tracing::warn!(
        items = dropped.len(),
        bytes = body.len(),
        "Signed webhook has items that do not parse; they are dead-lettered, the rest is taken."
    );
    let mut reason = dropped
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if dropped.len() > 20 {
        reason.push_str(&format!("; and {} more", dropped.len() - 20));
    }
    Some(kept_bytes("webhook_partial", reason, body))
}

/// The inbox rows of parsed webhook events (counting those for accounts not configured here).
pub(super) fn rows_of(
    app: &AppState,
    events: Vec<crate::whatsapp::event::WebhookEvent>,
    arrived: std::time::Instant,
) -> inbox::Inbox {
    let inbox = {
        let settings = app.engine.settings();
        inbox::map(
            events,
            |pnid| settings.account(pnid).is_some(),
            // The injected clock, as every time the engine records (analytics count an
            // inbound message on the day it arrived, a reply on the day it was queued).
            app.engine.clock.now_ms(),
            arrived,
        )
    };
    if inbox.unknown_accounts > 0 {
        metrics()
            .unknown_account_events
            .fetch_add(inbox.unknown_accounts, std::sync::atomic::Ordering::Relaxed);
    }
    inbox
}

/// After the rows' commit: tell the conversations and the send gates what concerns them
/// (committed messages reach their conversations through the writer's dispatcher).
pub(super) fn hand_on(app: &AppState, after: inbox::AfterCommit) {
    for (account, failure) in after.failures {
        if let Some(actor) = app.router.get(&account) {
            let _ = actor.cast(crate::actors::AccountMsg::SendFailed(failure));
        }
    }
    if !after.signals.is_empty() {
        let engine = app.engine.clone();
        tokio::spawn(async move { apply_gate_signals(&engine, after.signals).await });
    }
}

/// The rows are committed (`seqs[i]` is `None` for one that was there already): keep what
/// could not be read, tell the conversations and the send gates what concerns them, answer.
async fn committed(
    app: &AppState,
    after: inbox::AfterCommit,
    seqs: &[Option<i64>],
    partial: Option<NewDeadLetter>,
) -> Response {
    if let Some(dl) = partial {
        // Before the 200: a redelivery finds the rows taken and keeps these again.
        if let Err(e) = app.engine.writer.dead_letter(dl, None).await {
            tracing::error!(error = %e, "Store unavailable; webhook refused with 503.");
            return store_unavailable();
        }
    }
    hand_on(app, after);
    if seqs.iter().all(Option::is_none) {
        result("result=\"duplicate\"", StatusCode::OK, "ok")
    } else {
        result("result=\"ok\"", StatusCode::OK, "ok")
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
