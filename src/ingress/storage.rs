//! `GET /admin/v1/storage`: what the store holds, table by table (rows, bytes with indexes,
//! the oldest row and its age), the database's size, and the retention windows that bound
//! each table. Counting reads every row: an operator's call, not a probe to poll.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::api::Answer;
use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/storage", get(storage))
}

async fn storage(State(app): State<AppState>) -> Answer {
    let engine = &app.engine;
    let report = engine.store.storage().await?;
    let now = engine.clock.now_ms();
    let r = engine.settings().retention.clone();
    let window = |table: &str| -> Option<String> {
        Some(match table {
            "inbox" => format!(
                "statuses: {} (payload), rows {}; messages: {}",
                r.inbox,
                r.inbox.max(r.dedup),
                r.messages.max(r.dedup)
            ),
            "outbox" => format!("read receipts: {}; messages: {}", r.outbox, r.messages),
            "search_docs" => r.messages.to_string(),
            "flow_execution_steps" => r.flow_steps.to_string(),
            "flow_executions" => format!("ended sessions: {}", r.flow_steps),
            "campaign_recipients" | "campaign_messages" => r.campaign_recipients.to_string(),
            "dead_letters" => r.dead_letters.to_string(),
            "media_files" => r.media.to_string(),
            "hook_events" | "hook_deliveries" | "hook_attempts" => r.webhook_log.to_string(),
            "chatbot_sessions" => format!("ended sessions: {}", r.sessions),
            "conversation_handoffs" => r.sessions.to_string(),
            "timers" => format!("fired or cancelled: {}", r.sessions),
            _ => return None,
        })
    };
    let tables: Vec<_> = report
        .tables
        .iter()
        .map(|t| {
            json!({
                "table": t.table,
                "rows": t.rows,
                "bytes": t.bytes,
                "oldest_at": t.oldest_at,
                "oldest_age_seconds": t.oldest_at.map(|at| (now - at).max(0) / 1000),
                "retention": window(&t.table),
            })
        })
        .collect();
    Ok(Json(json!({
        "dialect": report.dialect,
        "bytes_method": report.bytes_method,
        "database_bytes": report.database_bytes,
        "free_bytes": report.free_bytes,
        "auto_vacuum": report.auto_vacuum,
        "log_messages": r.log_messages,
        "tables": tables,
    }))
    .into_response())
}
