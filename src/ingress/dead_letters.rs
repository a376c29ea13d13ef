//! `/admin/v1/dead-letters`: what Parley could not process or deliver, for an operator to
//! read, replay or discard.
//!
//! - `GET /dead-letters?kind=&account=&open=true&limit=&cursor=`: newest first.
//! - `GET /dead-letters/{id}`: one, with its raw bytes (`raw_text` when they are UTF-8, else
//!   `raw_base64`).
//! - `POST /dead-letters/{id}/replay`: do again what failed, once per letter:
//!   - `webhook_malformed` / `webhook_partial`: the kept webhook body is read again (a fixed
//!     parser takes it now); its events are taken as Meta's would be (those already in the
//!     inbox are duplicates and change nothing). Still unreadable: 422, the letter stays open.
//!   - `inbox_event`: the message is put in the inbox again under a key of this letter, and
//!     its conversation handles it as a new message (after what it has handled since).
//!   - `outbox_send` / `delivery_failed`: the message is sent again as a new message at the end
//!     of its conversation (within the 24 h window; outside it: 409, the letter stays open).
//!   - other kinds (`timer_event`, `flow_failed`, media): 409, nothing to do again: discard.
//! - `POST /dead-letters/{id}/discard` `{"note"?}`: closed as handled by hand.
//!
//! A closed letter is neither replayed nor discarded again (409).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{id_cursor, json_body, page, page_limit, query, Answer, ApiError};
use super::AppState;
use crate::conversation::ConversationEvent;
use crate::domain::WindowPolicy;
use crate::store::{DeadLetter, DeadLetterFilter};
use crate::whatsapp::event::WebhookEvent;
use crate::whatsapp::send::OutboundMessage;
use crate::whatsapp::webhook::parse_webhook_report;

/// Largest discard body (a note).
const MAX_BODY: usize = 4 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/{id}", get(show))
        .route("/dead-letters/{id}/replay", post(replay))
        .route(
            "/dead-letters/{id}/discard",
            post(discard).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)),
        )
}

fn view(d: &DeadLetter, with_raw: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "kind": d.kind,
        "account": d.account,
        "user": d.user_key,
        "ref_id": d.ref_id,
        "reason": d.reason,
        "created_at": d.created_at,
        "status": d.resolution.as_deref().unwrap_or("open"),
        "resolved_at": d.resolved_at,
        "resolution_note": d.resolution_note,
        "replayable": replayable(&d.kind),
        "raw_bytes": d.raw.as_ref().map(Vec::len),
    });
    if with_raw {
        if let Some(raw) = &d.raw {
            match std::str::from_utf8(raw) {
                Ok(text) => v["raw_text"] = json!(text),
                Err(_) => {
                    v["raw_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(raw))
                }
            }
        }
    }
    v
}

fn replayable(kind: &str) -> bool {
    matches!(
        kind,
        "webhook_malformed" | "webhook_partial" | "inbox_event" | "outbox_send" | "delivery_failed"
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    kind: Option<String>,
    account: Option<String>,
    #[serde(default)]
    open: bool,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(State(app): State<AppState>, q: Result<Query<ListQuery>, QueryRejection>) -> Answer {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let filter = DeadLetterFilter {
        kind: q.kind,
        account: q.account,
        open: q.open,
        before: id_cursor(q.cursor.as_deref().filter(|c| !c.is_empty()))?,
    };
    let found = app.engine.store.dead_letters(&filter, limit + 1).await?;
    Ok(page(found, limit, |d| d.id.to_string(), |d| view(d, false)))
}

async fn letter(app: &AppState, id: i64) -> Result<DeadLetter, ApiError> {
    app.engine
        .store
        .dead_letter(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such dead letter"))
}

async fn show(State(app): State<AppState>, Path(id): Path<i64>) -> Answer {
    let d = letter(&app, id).await?;
    Ok(Json(view(&d, true)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct DiscardBody {
    note: Option<String>,
}

async fn discard(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let empty = matches!(&body, Ok(b) if b.is_empty());
    let body: DiscardBody = if empty {
        DiscardBody::default()
    } else {
        json_body(body)?
    };
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(ApiError::invalid("note: at most 1000 characters"));
    }
    let d = letter(&app, id).await?;
    let now = app.engine.clock.now_ms();
    if !app
        .engine
        .store
        .resolve_dead_letter(id, "discarded", body.note.as_deref(), now)
        .await?
    {
        return Err(closed(&d));
    }
    tracing::info!(dead_letter = id, kind = %d.kind, "A dead letter was discarded.");
    let d = letter(&app, id).await?;
    Ok(Json(view(&d, false)).into_response())
}

fn closed(d: &DeadLetter) -> ApiError {
    ApiError::conflict(format!(
        "dead letter {} is {} already",
        d.id,
        d.resolution.as_deref().unwrap_or("closed")
    ))
}

/// What a replay came to, for the answer and the letter's note.
struct Replayed {
    note: String,
    detail: Value,
}

async fn replay(State(app): State<AppState>, Path(id): Path<i64>) -> Answer {
    let d = letter(&app, id).await?;
    if d.resolution.is_some() {
        return Err(closed(&d));
    }
    if !replayable(&d.kind) {
        return Err(ApiError::conflict(format!(
            "a {} dead letter cannot be replayed (nothing to do again): discard it",
            d.kind
        )));
    }
    // Claimed first: two replays at once make one.
    let now = app.engine.clock.now_ms();
    if !app
        .engine
        .store
        .resolve_dead_letter(id, "replayed", Some("replaying"), now)
        .await?
    {
        return Err(closed(&letter(&app, id).await?));
    }
    let done = match d.kind.as_str() {
        "webhook_malformed" | "webhook_partial" => replay_webhook(&app, &d).await,
        "inbox_event" => replay_inbox_event(&app, &d).await,
        _ => replay_send(&app, &d).await,
    };
    match done {
        Ok(r) => {
            app.engine
                .store
                .resolve_dead_letter_note(id, &r.note)
                .await?;
            tracing::info!(dead_letter = id, kind = %d.kind, result = %r.note, "A dead letter was replayed.");
            let d = letter(&app, id).await?;
            let mut v = view(&d, false);
            v["replay"] = r.detail;
            Ok((StatusCode::OK, Json(v)).into_response())
        }
        Err(e) => {
            app.engine.store.reopen_dead_letter(id).await?;
            Err(e)
        }
    }
}

async fn replay_webhook(app: &AppState, d: &DeadLetter) -> Result<Replayed, ApiError> {
    let raw = d
        .raw
        .clone()
        .ok_or_else(|| ApiError::conflict("its bytes were not kept"))?;
    let report = parse_webhook_report(&raw)
        .map_err(|e| ApiError::invalid(format!("it still does not parse: {e}")))?;
    let unreadable = report.skipped.iter().filter(|s| s.dropped).count();
    let mut inbox = super::webhook::rows_of(app, report.webhook.events, std::time::Instant::now());
    let rows = std::mem::take(&mut inbox.rows);
    let seqs = if rows.is_empty() {
        Vec::new()
    } else {
        app.engine.writer.append_inbox(rows).await?
    };
    let taken = seqs.iter().filter(|s| s.is_some()).count();
    let duplicates = seqs.len() - taken;
    super::webhook::hand_on(app, inbox.after_commit(&seqs));
    if taken == 0 && unreadable > 0 {
        // What could be read was taken before; the rest still cannot be.
        return Err(ApiError::invalid(format!(
            "nothing new in it can be read yet ({unreadable} items still do not parse)"
        )));
    }
    Ok(Replayed {
        note: format!(
            "{taken} events taken, {duplicates} already there, {unreadable} still unreadable"
        ),
        detail: json!({"taken": taken, "duplicates": duplicates, "unreadable": unreadable}),
    })
}

async fn replay_inbox_event(app: &AppState, d: &DeadLetter) -> Result<Replayed, ApiError> {
    let event: WebhookEvent = d
        .raw
        .as_deref()
        .and_then(|raw| serde_json::from_slice(raw).ok())
        .ok_or_else(|| ApiError::conflict("its event was not kept in a readable form"))?;
    if !matches!(event, WebhookEvent::Message(_)) {
        return Err(ApiError::conflict("it is not a message"));
    }
    let mut inbox = super::webhook::rows_of(app, vec![event], std::time::Instant::now());
    let mut rows = std::mem::take(&mut inbox.rows);
    for r in &mut rows {
        // Its own key: the first copy is still in the inbox (dead), and a second replay of
        // this letter is refused above.
        r.dedup_key = format!("replay:{}:{}", d.id, r.dedup_key);
    }
    let seqs = app.engine.writer.append_inbox(rows).await?;
    super::webhook::hand_on(app, inbox.after_commit(&seqs));
    let seq = seqs.first().copied().flatten();
    Ok(Replayed {
        note: match seq {
            Some(s) => format!("put in the inbox again as {s}"),
            None => "in the inbox already".into(),
        },
        detail: json!({"inbox_seq": seq}),
    })
}

async fn replay_send(app: &AppState, d: &DeadLetter) -> Result<Replayed, ApiError> {
    let (Some(account), Some(user), Some(outbox_id)) = (&d.account, &d.user_key, d.ref_id) else {
        return Err(ApiError::conflict("it names no message"));
    };
    let message: OutboundMessage = app
        .engine
        .store
        .outbox_message(outbox_id)
        .await?
        .and_then(|m| serde_json::from_str(&m).ok())
        .ok_or_else(|| ApiError::conflict("its message is no longer kept"))?;
    let actor = app
        .router
        .get(account)
        .ok_or_else(|| ApiError::conflict(format!("account {account} is not configured")))?;
    let event = ConversationEvent::Outgoing {
        request_id: format!("dead-letter-{}", d.id),
        message,
        reply_to: None,
        policy: Some(WindowPolicy::Fail),
    };
    match super::command(&actor, user.as_str(), event).await {
        Ok(Ok(done)) => {
            let id = done.ids.first().copied();
            Ok(Replayed {
                note: match id {
                    Some(i) => format!("sent again as outbox {i}"),
                    None => "sent again".into(),
                },
                detail: json!({"outbox_id": id}),
            })
        }
        Ok(Err(reason)) if reason.contains("window") => Err(ApiError::conflict(reason)),
        Ok(Err(reason)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("account busy: {e}"),
        )),
    }
}
