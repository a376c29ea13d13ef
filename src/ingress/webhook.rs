//! `GET /webhook` (Meta's subscription handshake) and `POST /webhook` (events).
//!
//! POST: verify the signature on the raw bytes, parse into typed events, append them to the
//! inbox through the group-commit writer, and answer 200 only once they are committed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signature;
use super::AppState;
use crate::metrics::metrics;
use crate::outbox::CALLBACK_PREFIX;
use crate::store::writer::StatusApply;
use crate::store::{now_ms, NewDeadLetter, NewInboxRow};
use crate::whatsapp::event::WebhookEvent;
use crate::whatsapp::webhook::parse_webhook_report;

pub async fn verify_subscription(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
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
            tracing::warn!("Webhook verification refused.");
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

fn result(label: &'static str, status: StatusCode, body: &'static str) -> Response {
    metrics().webhooks.inc(label);
    (status, body).into_response()
}

pub async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let arrived = std::time::Instant::now();
    let body = match body {
        Ok(b) => b,
        // Over the 4 MiB limit (413), or a body that broke off: counted like the rest.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("Webhook refused: body over the size limit.");
            return result("result=\"too_large\"", e.status(), "body too large");
        }
        Err(e) => {
            tracing::warn!(error = %e, "Webhook body could not be read.");
            return result(
                "result=\"unreadable\"",
                e.status(),
                "body could not be read",
            );
        }
    };
    if app.draining() {
        return result(
            "result=\"draining\"",
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        );
    }
    let verified = signature::verify(
        app.engine
            .settings()
            .whatsapp
            .app_secret
            .expose_secret()
            .as_bytes(),
        headers.get("x-hub-signature-256").map(|v| v.as_bytes()),
        &body,
    );
    if let Err(e) = verified {
        tracing::warn!(error = %e, bytes = body.len(), "Webhook refused: bad signature.");
        return result(
            "result=\"unauthorized\"",
            StatusCode::UNAUTHORIZED,
            "bad signature",
        );
    }
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
                        let _ = actor.cast(crate::actors::AccountMsg::SendFailed {
                            user_key: user,
                            outbox_id,
                            code,
                            detail,
                            message: None,
                        });
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
                rows.push(NewInboxRow {
                    account: s.phone_number_id.clone(),
                    user_key: s.recipient_id.clone(),
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
                        outbox_id: s
                            .biz_opaque_callback_data
                            .as_deref()
                            .and_then(|d| d.strip_prefix(CALLBACK_PREFIX))
                            .and_then(|id| id.parse().ok()),
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
