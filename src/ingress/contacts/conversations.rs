//! `GET /conversations?account=…`: the inbox, newest first (by the customer's latest
//! message), each with its last message, unread count, status (bot | waiting_for_agent |
//! with_agent, from the handoff), assignee, `window_expires_at` (the 24 h customer-service
//! window; null when closed or never opened) and the flow and node it is at. Computed on read
//! (see `store::conversation_list`): the message path writes nothing for it. Mark read and
//! assign are the admin API's own rows.

use serde_json::{json, Value};

use super::*;
use crate::conversation::{ConversationState, HandoffStatus, SERVICE_WINDOW_MS};
use crate::domain::{ConversationKey, ConversationStatus};
use crate::store::MessageView;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConversationsQuery {
    account: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const PREVIEW_CHARS: usize = 100;

/// A message's text as an inbox shows it (its first 100 characters), else its kind.
fn preview(m: &MessageView) -> String {
    let c = &m.content;
    let text = crate::store::message_text(c)
        .map(str::to_string)
        .unwrap_or_else(|| match c.get("erased") {
            Some(_) => "(erased)".to_string(),
            None => format!("({})", m.kind),
        });
    text.chars().take(PREVIEW_CHARS).collect()
}

pub(super) fn status_of(state: &ConversationState) -> ConversationStatus {
    match state.handoff.as_ref().map(|h| h.status) {
        None => ConversationStatus::Bot,
        Some(HandoffStatus::Waiting) => ConversationStatus::WaitingForAgent,
        Some(HandoffStatus::WithAgent) => ConversationStatus::WithAgent,
    }
}

/// When the customer-service window closes (None: closed).
pub(super) fn window_expires_at(state: &ConversationState, now: i64) -> Option<i64> {
    state
        .window_open(now)
        .then(|| state.last_inbound_at.map(|t| t + SERVICE_WINDOW_MS))
        .flatten()
}

pub(super) async fn list(
    State(app): State<AppState>,
    q: Result<Query<ConversationsQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let account = account(&app, q.account.as_deref())?;
    let limit = page_limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            uncursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::bad("bad cursor"))
        })
        .transpose()?;
    let store = &app.engine.store;
    let (page, next) = store
        .recent_conversations(&account, before, limit as usize)
        .await?;
    let now = now(&app);
    let mut items = Vec::with_capacity(page.len());
    for c in page {
        let key = ConversationKey::new(account.as_str(), c.user_key.as_str());
        let state: ConversationState = store
            .load_conversation(&key)
            .await?
            .and_then(|s| serde_json::from_str(&s.state_json).ok())
            .unwrap_or_default();
        let mark = store.conversation_mark(&account, &c.user_key).await?;
        let unread = store
            .unread_count(&account, &c.user_key, mark.read_seq)
            .await?;
        // The last message either way (a read receipt is not one).
        let recent = store.conversation_messages(&key, 4).await?;
        let last: Vec<&MessageView> = recent.iter().filter(|m| m.kind != "mark_read").collect();
        let flow: Option<Value> = state.ext.get("flow").and_then(|l| l.read());
        items.push(json!({
            "user": c.user_key.as_str(),
            "name": state.contact.profile_name,
            "last_message": last.last().map(|m| json!({
                "direction": m.direction,
                "kind": m.kind,
                "preview": preview(m),
                "at": m.at,
            })),
            "unread": unread,
            "status": status_of(&state),
            "assignee": mark.assignee,
            "last_inbound_at": state.last_inbound_at,
            "window_expires_at": window_expires_at(&state, now),
            "flow": flow.as_ref().and_then(|f| f.get("flow")).cloned().unwrap_or(Value::Null),
            "node": flow.as_ref().and_then(|f| f.get("node")).cloned().unwrap_or(Value::Null),
            "blocked": state.contact.blocked,
        }));
    }
    let next = next.map(|s| cursor(&s.to_string()));
    Ok(Json(json!({ "items": items, "next_cursor": next })).into_response())
}

fn conversation_of(
    app: &AppState,
    pnid: &str,
    user: &str,
) -> Result<(AccountId, UserKey), ApiError> {
    if app.engine.settings().account(pnid).is_none() {
        return Err(ApiError::not_found("unknown phone_number_id"));
    }
    Ok((AccountId::from(pnid), UserKey::from(user)))
}

/// `POST /conversations/{pnid}/{user}/read`: every message so far is read.
pub(super) async fn mark_read(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
) -> Answer {
    let (account, user) = conversation_of(&app, &pnid, &user)?;
    let store = &app.engine.store;
    let seq = store.latest_inbound_seq(&account, &user).await?;
    if seq == 0 {
        return Err(ApiError::not_found("no such conversation"));
    }
    store
        .mark_conversation_read(&account, &user, seq, now(&app))
        .await?;
    Ok(Json(json!({ "read_seq": seq, "unread": 0 })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct AssignBody {
    /// An agent (a key id or a name); null unassigns.
    assignee: Option<String>,
}

/// `POST /conversations/{pnid}/{user}/assign` `{"assignee": "agent"}` (null: unassign).
pub(super) async fn assign(
    State(app): State<AppState>,
    Path((pnid, user)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, user) = conversation_of(&app, &pnid, &user)?;
    let b: AssignBody = json_body(body)?;
    let assignee = b.assignee.map(|a| a.trim().to_string());
    if assignee
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.chars().count() > 100 || a.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("assignee: 1 to 100 characters"));
    }
    let store = &app.engine.store;
    let key = ConversationKey::new(account.as_str(), user.as_str());
    if store.load_conversation(&key).await?.is_none() {
        return Err(ApiError::not_found("no such conversation"));
    }
    store
        .assign_conversation(&account, &user, assignee.as_deref(), now(&app))
        .await?;
    Ok(Json(json!({ "assignee": assignee })).into_response())
}
