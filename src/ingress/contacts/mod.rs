//! `/admin/v1/` contacts, conversations (the inbox) and custom field definitions.
//!
//! The account is the `account` query parameter (a configured phone_number_id; may be left
//! out when exactly one account is configured). A contact is named by its WhatsApp number
//! (`wa_id`, digits). Errors are `{"error": "..."}` (and `errors`, one per problem): 400 bad
//! JSON, query or cursor, 404, 415 not CSV, 422 invalid. Lists are keyset pages: `limit`
//! (1..=200, default 50), `cursor` (opaque, from `next_cursor`).
//!
//! A change to a contact's tags, profile fields or block is written to its row and told to
//! its conversation (the state flows read), so both agree; a contact made before the
//! customer first wrote seeds the conversation when it starts. A blocked contact's messages
//! are kept in the inbox (they count, and show in the conversation) but no bot or flow
//! answers them; campaigns skip blocked and opted-out contacts.
//!
//! Here contacts; `conversations.rs` the inbox; `csv.rs` import and export.

mod conversations;
mod csv;

pub(in crate::ingress) use conversations::AssignBody;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::{cursor, json_body, optional_json_body, query, uncursor, Answer, ApiError};
use super::AppState;
use crate::domain::contact::{normalize_tags, normalize_wa_id, FieldDef};
use crate::domain::profile::{normalize, ProfileField};
use crate::domain::{AccountId, ConsentAction, ContactSource, CustomFieldKind, UserKey};
use crate::store::{
    ConsentChange, ContactAfter, ContactFilter, ContactOrder, ContactRecord, ContactWrite,
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(list_contacts).post(upsert_contact))
        .route(
            "/contacts/import",
            post(csv::import).layer(DefaultBodyLimit::max(csv::IMPORT_MAX_BODY)),
        )
        .route("/contacts/import/{id}", get(csv::import_job))
        .route("/contacts/export", get(csv::export))
        .route(
            "/contacts/{wa_id}",
            get(show_contact)
                .patch(patch_contact)
                .delete(delete_contact),
        )
        .route("/contacts/{wa_id}/tags", post(edit_tags))
        .route("/contacts/{wa_id}/consent", get(consent_ledger))
        .route("/contacts/{wa_id}/{action}", post(contact_action))
        .route("/contact-fields", get(list_fields).post(put_field))
        .route(
            "/contact-fields/{name}",
            axum::routing::delete(delete_field),
        )
        .route("/conversations", get(conversations::list))
        .route("/messages/search", get(search_messages))
        .route(
            "/conversations/{phone_number_id}/{user}/read",
            post(conversations::mark_read),
        )
        .route(
            "/conversations/{phone_number_id}/{user}/assign",
            post(conversations::assign),
        )
}

/// The account a request names, or the only one configured.
fn account(app: &AppState, given: Option<&str>) -> Result<AccountId, ApiError> {
    let settings = app.engine.settings_arc();
    let found = match given {
        Some(id) => settings.account(id),
        None if settings.accounts.len() == 1 => settings.accounts.first(),
        None => {
            return Err(ApiError::bad(
                "several accounts are configured: give ?account=PHONE_NUMBER_ID",
            ))
        }
    };
    found
        .map(|a| a.phone_number_id.clone())
        .ok_or_else(|| ApiError::not_found("unknown account"))
}

fn page_limit(given: Option<i64>) -> Result<i64, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1..={MAX_LIMIT}"))),
    }
}

fn now(app: &AppState) -> i64 {
    app.engine.clock.now_ms()
}

fn user_of(wa_id: &str) -> Result<UserKey, ApiError> {
    normalize_wa_id(wa_id)
        .map(|w| UserKey::from(w.as_str()))
        .map_err(|e| ApiError::not_found(format!("no such contact: {e}")))
}

#[derive(Debug, Deserialize)]
struct AccountParam {
    account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    account: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    tag: Option<String>,
    blocked: Option<bool>,
    opted_out: Option<bool>,
    source: Option<String>,
    /// Unix milliseconds.
    updated_since: Option<i64>,
    /// A number prefix or a part of the name.
    q: Option<String>,
}

/// The filter a list query names, or why not.
fn filter_of(q: &ListQuery) -> Result<ContactFilter, ApiError> {
    Ok(ContactFilter {
        tag: q.tag.clone(),
        blocked: q.blocked,
        opted_out: q.opted_out,
        source: q
            .source
            .as_deref()
            .map(|s| {
                s.parse::<ContactSource>().map_err(|_| {
                    ApiError::invalid("source must be manual, import, api or whatsapp")
                })
            })
            .transpose()?,
        updated_since: q.updated_since,
        search: q.q.clone(),
    })
}

fn after_of(given: Option<&str>, order: ContactOrder) -> Result<Option<ContactAfter>, ApiError> {
    given
        .map(|c| {
            let text = uncursor(c)?;
            let (sort, key) = match order {
                ContactOrder::Key => ("", text.as_str()),
                _ => text
                    .split_once('\u{1f}')
                    .ok_or_else(|| ApiError::bad("bad cursor"))?,
            };
            let mut after = ContactAfter {
                user_key: key.to_string(),
                ..ContactAfter::default()
            };
            match order {
                ContactOrder::Key => {}
                ContactOrder::Updated => {
                    after.updated_at = sort.parse().map_err(|_| ApiError::bad("bad cursor"))?
                }
                ContactOrder::Name => after.name = sort.to_string(),
            }
            Ok(after)
        })
        .transpose()
}

fn after_key(c: &ContactRecord, order: ContactOrder) -> String {
    match order {
        ContactOrder::Key => c.user_key.clone(),
        ContactOrder::Updated => format!("{}\u{1f}{}", c.updated_at.unwrap_or(0), c.user_key),
        ContactOrder::Name => format!("{}\u{1f}{}", c.sort_name, c.user_key),
    }
}

/// `GET /contacts`: a page of contacts, filtered.
async fn list_contacts(
    State(app): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let account = account(&app, q.account.as_deref())?;
    let limit = page_limit(q.limit)?;
    let filter = filter_of(&q)?;
    let order = filter.order();
    let after = after_of(q.cursor.as_deref().filter(|c| !c.is_empty()), order)?;
    let mut found = app
        .engine
        .store
        .contacts_page(&account, &filter, after.as_ref(), limit + 1)
        .await?;
    let next = (found.len() as i64 > limit)
        .then(|| {
            found.truncate(limit as usize);
            found.last().map(|c| cursor(&after_key(c, order)))
        })
        .flatten();
    Ok(Json(json!({ "items": found, "next_cursor": next })).into_response())
}

async fn show_contact(
    State(app): State<AppState>,
    Path(wa_id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    let store = &app.engine.store;
    let Some(c) = store.contact_record(&account, &user).await? else {
        return Err(ApiError::not_found("no such contact"));
    };
    let mut view = json!(c);
    view["consent"] = json!(store.consent_ledger(&account, &user).await?);
    Ok(Json(view).into_response())
}

/// A contact as written by the API.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct ContactBody {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Profile fields by name (`email`, `full_name`, ...); "" or null clears one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    profile: Option<Map<String, Value>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom fields by name, checked against their definitions; null clears one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    custom_fields: Option<Map<String, Value>>,
    /// manual (the default) or api.
    #[serde(default)]
    source: Option<String>,
}

/// The write a body asks for, every problem found, checked as flows' profile fields and the
/// account's custom field definitions check them.
fn write_of(
    body: ContactBody,
    defs: &[FieldDef],
    today: chrono::NaiveDate,
) -> Result<ContactWrite, Vec<String>> {
    let mut errors = Vec::new();
    let mut w = ContactWrite::default();
    if let Some(name) = body.name {
        let name = name.trim().to_string();
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            errors.push("name: at most 100 characters, no control characters".into());
        }
        w.profile_name = Some(name);
    }
    if let Some(profile) = body.profile {
        let id_type = profile
            .get("identity_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        for (k, v) in profile {
            let Some(field) = ProfileField::of(&k) else {
                errors.push(format!("profile.{k}: not a profile field (email, full_name, address, birth_date, identity_type, identity_number, gender)"));
                continue;
            };
            let text = match &v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => {
                    errors.push(format!("contact.{k}: {other} is not a text"));
                    continue;
                }
            };
            match normalize(field, &text, id_type.as_deref(), today) {
                Ok(v) => w.profile.push((field, v)),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    if let Some(tags) = body.tags {
        match normalize_tags(tags.iter().map(String::as_str)) {
            Ok(t) => w.tags = Some(t),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(custom) = body.custom_fields {
        for (k, v) in custom {
            match defs.iter().find(|d| d.name == k) {
                None => errors.push(format!(
                    "custom field `{k}` is not defined (POST /contact-fields first)"
                )),
                Some(def) => match def.check(&v) {
                    Ok(v) => {
                        w.custom.insert(k, v);
                    }
                    Err(e) => errors.push(e.to_string()),
                },
            }
        }
    }
    w.source = match body.source.as_deref() {
        None => None,
        Some(s) => match s.parse::<ContactSource>() {
            Ok(s @ (ContactSource::Manual | ContactSource::Api)) => Some(s),
            _ => {
                errors.push("source must be manual or api".into());
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(w)
    } else {
        Err(errors)
    }
}

fn today(app: &AppState) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_millis(now(app))
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

/// Write a contact and tell its conversation (when there is one) what changed.
async fn write_contact(
    app: &AppState,
    account: &AccountId,
    user: &UserKey,
    w: &ContactWrite,
) -> Result<bool, ApiError> {
    let created = app
        .engine
        .store
        .upsert_contact(account, user, w, now(app))
        .await?;
    if w.tags.is_some() || !w.profile.is_empty() {
        tell_conversation(
            app,
            account,
            user,
            w.tags.as_ref().map(|t| t.iter().cloned().collect()),
            w.profile
                .iter()
                .map(|(f, v)| (f.name().to_string(), v.clone()))
                .collect(),
            None,
        )
        .await;
    }
    Ok(created)
}

/// A contact change, told to its conversation if it has one (a conversation that starts
/// later takes it from the contact row).
async fn tell_conversation(
    app: &AppState,
    account: &AccountId,
    user: &UserKey,
    tags: Option<BTreeSet<String>>,
    profile: BTreeMap<String, String>,
    blocked: Option<bool>,
) {
    let key = crate::domain::ConversationKey::new(account.as_str(), user.as_str());
    if !matches!(app.engine.store.load_conversation(&key).await, Ok(Some(_))) {
        return;
    }
    let Some(actor) = app.router.get(account.as_str()) else {
        return;
    };
    let event = crate::conversation::ConversationEvent::ContactEdit {
        tags,
        profile,
        blocked,
    };
    if !matches!(
        super::command(&actor, user.as_str(), event).await,
        Ok(Ok(_))
    ) {
        tracing::warn!(account = %account, "A contact change could not be told to its conversation.");
    }
}

/// Tell a deleted contact's conversation to forget the customer; true when it did (or there
/// is none to tell).
async fn forget_conversation(app: &AppState, account: &AccountId, user: &UserKey) -> bool {
    let key = crate::domain::ConversationKey::new(account.as_str(), user.as_str());
    match app.engine.store.load_conversation(&key).await {
        Ok(None) => return true,
        Ok(Some(_)) => {}
        Err(_) => return false,
    }
    let Some(actor) = app.router.get(account.as_str()) else {
        return false;
    };
    let event = crate::conversation::ConversationEvent::Forget;
    let done = matches!(
        super::command(&actor, user.as_str(), event).await,
        Ok(Ok(_))
    );
    if !done {
        tracing::warn!(account = %account, "A deleted contact's conversation could not be told to forget it.");
    }
    done
}

/// `POST /contacts`: create or update by `wa_id` (201 created, 200 updated).
async fn upsert_contact(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let mut body: ContactBody = json_body(body)?;
    let wa_id = body
        .wa_id
        .take()
        .ok_or_else(|| ApiError::invalid("wa_id is required"))?;
    let wa_id = normalize_wa_id(&wa_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let user = UserKey::from(wa_id.as_str());
    let defs = app.engine.store.field_defs(&account).await?;
    let w = write_of(body, &defs, today(&app)).map_err(ApiError::problems)?;
    let created = write_contact(&app, &account, &user, &w).await?;
    let c = app.engine.store.contact_record(&account, &user).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(c))).into_response())
}

/// `PATCH /contacts/{wa_id}`: change an existing contact.
async fn patch_contact(
    State(app): State<AppState>,
    Path(wa_id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    let body: ContactBody = json_body(body)?;
    if body.wa_id.is_some() {
        return Err(ApiError::invalid("a contact's wa_id cannot change"));
    }
    let store = &app.engine.store;
    if store.contact_record(&account, &user).await?.is_none() {
        return Err(ApiError::not_found("no such contact"));
    }
    let defs = store.field_defs(&account).await?;
    let w = write_of(body, &defs, today(&app)).map_err(ApiError::problems)?;
    write_contact(&app, &account, &user, &w).await?;
    Ok(Json(json!(store.contact_record(&account, &user).await?)).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct TagsBody {
    /// The whole set (replaces the tags).
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /contacts/{wa_id}/tags` `{"tags": [...]}` or `{"add": [...], "remove": [...]}`.
async fn edit_tags(
    State(app): State<AppState>,
    Path(wa_id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    let body: TagsBody = json_body(body)?;
    let store = &app.engine.store;
    let Some(c) = store.contact_record(&account, &user).await? else {
        return Err(ApiError::not_found("no such contact"));
    };
    let mut tags: Vec<String> = body.tags.unwrap_or(c.tags);
    tags.extend(body.add);
    let remove = normalize_tags(body.remove.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let tags = normalize_tags(tags.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid(e.to_string()))?
        .into_iter()
        .filter(|t| !remove.contains(t))
        .collect();
    let w = ContactWrite {
        tags: Some(tags),
        ..ContactWrite::default()
    };
    write_contact(&app, &account, &user, &w).await?;
    Ok(Json(json!(store.contact_record(&account, &user).await?)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct ConsentBody {
    /// Where the request came from (admin, api, import, ...): "admin" when left out.
    #[serde(default)]
    source: Option<String>,
    /// Who asked (an agent, a key): "admin" when left out.
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /contacts/{wa_id}/{block|unblock|opt-out|opt-in}`.
async fn contact_action(
    State(app): State<AppState>,
    Path((wa_id, action)): Path<(String, String)>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    let store = &app.engine.store;
    let now = now(&app);
    match action.as_str() {
        "block" | "unblock" => {
            // No fields; a body, if any, is still a JSON object.
            let _: serde_json::Map<String, Value> = optional_json_body(body)?;
            let blocked = action == "block";
            if !store
                .set_contact_blocked(&account, &user, blocked, now)
                .await?
            {
                return Err(ApiError::not_found("no such contact"));
            }
            tell_conversation(&app, &account, &user, None, BTreeMap::new(), Some(blocked)).await;
        }
        "opt-out" | "opt-in" => {
            let b: ConsentBody = optional_json_body(body)?;
            let short = |v: &Option<String>, what: &str| -> Result<(), ApiError> {
                match v {
                    Some(s) if s.trim().is_empty() || s.chars().count() > 200 => {
                        Err(ApiError::invalid(format!("{what}: 1 to 200 characters")))
                    }
                    _ => Ok(()),
                }
            };
            short(&b.source, "source")?;
            short(&b.by, "by")?;
            short(&b.note, "note")?;
            let consent = if action == "opt-out" {
                ConsentAction::OptOut
            } else {
                ConsentAction::OptIn
            };
            if !store
                .record_consent(
                    &account,
                    &user,
                    &ConsentChange {
                        action: consent,
                        source: b.source.as_deref().unwrap_or("admin"),
                        actor: b.by.as_deref().unwrap_or("admin"),
                        note: b.note.as_deref(),
                    },
                    now,
                )
                .await?
            {
                return Err(ApiError::not_found("no such contact"));
            }
        }
        _ => {
            return Err(ApiError::not_found(
                "no such action (block, unblock, opt-out, opt-in)",
            ))
        }
    }
    Ok(Json(json!(store.contact_record(&account, &user).await?)).into_response())
}

/// `GET /contacts/{wa_id}/consent`: the consent ledger, oldest first.
async fn consent_ledger(
    State(app): State<AppState>,
    Path(wa_id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    let entries = app.engine.store.consent_ledger(&account, &user).await?;
    Ok(Json(json!({ "items": entries })).into_response())
}

/// `DELETE /contacts/{wa_id}`: the contact, its message bodies and media, and what its
/// conversation knows of the customer (counts are kept).
async fn delete_contact(
    State(app): State<AppState>,
    Path(wa_id): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let user = user_of(&wa_id)?;
    if app
        .engine
        .store
        .contact_record(&account, &user)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("no such contact"));
    }
    // What the conversation holds of the customer (profile, flow variables, a chatbot's
    // context, held messages) goes first, through its actor (the conversation's one
    // writer): if it cannot, nothing is deleted and the caller tries again.
    if !forget_conversation(&app, &account, &user).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the contact's conversation could not be reached: nothing was deleted; try again",
        ));
    }
    let Some(erased) = app.engine.store.delete_contact(&account, &user).await? else {
        return Err(ApiError::not_found("no such contact"));
    };
    for path in &erased.media_paths {
        if let Err(e) = tokio::fs::remove_file(path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "A deleted contact's media file could not be removed.");
            }
        }
    }
    tracing::info!(account = %account, "Contact deleted by the admin API; its message bodies, media and conversation state erased.");
    Ok(Json(json!({ "deleted": true, "erased": erased })).into_response())
}

async fn list_fields(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let defs = app.engine.store.field_defs(&account).await?;
    let items: Vec<Value> = defs.iter().map(field_view).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

fn field_view(d: &FieldDef) -> Value {
    json!({ "name": d.name, "kind": d.kind, "options": d.options })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct FieldBody {
    name: String,
    kind: String,
    #[serde(default)]
    options: Vec<String>,
}

/// `POST /contact-fields` `{"name", "kind": text|number|date|list|boolean, "options"}`.
async fn put_field(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let b: FieldBody = json_body(body)?;
    let kind: CustomFieldKind = b
        .kind
        .parse()
        .map_err(|_| ApiError::invalid("kind must be text, number, date, list or boolean"))?;
    let def =
        FieldDef::new(&b.name, kind, b.options).map_err(|e| ApiError::invalid(e.to_string()))?;
    app.engine
        .store
        .put_field_def(&account, &def, now(&app))
        .await?;
    Ok(Json(field_view(&def)).into_response())
}

async fn delete_field(
    State(app): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    if !app.engine.store.delete_field_def(&account, &name).await? {
        return Err(ApiError::not_found("no such field"));
    }
    Ok(Json(json!({ "deleted": name })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    account: Option<String>,
    /// The words to find (all of them).
    q: String,
    /// One contact's messages (a wa_id).
    user: Option<String>,
    /// Unix milliseconds: at or after.
    from: Option<i64>,
    /// Unix milliseconds: before.
    to: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /messages/search?q=…[&user=&from=&to=]`: messages either way with every word of `q`,
/// newest first (FTS5 on SQLite, tsvector on PostgreSQL).
async fn search_messages(
    State(app): State<AppState>,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let account = account(&app, q.account.as_deref())?;
    let limit = page_limit(q.limit)?;
    let text = q.q.trim();
    if text.is_empty() || text.chars().count() > 200 {
        return Err(ApiError::invalid("q: 1 to 200 characters"));
    }
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            let text = uncursor(c)?;
            text.split_once(':')
                .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
                .ok_or_else(|| ApiError::bad("bad cursor"))
        })
        .transpose()?;
    let user = q
        .user
        .as_deref()
        .map(|u| {
            normalize_wa_id(u)
                .map(|w| UserKey::from(w.as_str()))
                .map_err(|e| ApiError::invalid(e.to_string()))
        })
        .transpose()?;
    let mut hits = app
        .engine
        .store
        .search_messages(
            &account,
            &crate::store::SearchQuery {
                text: text.to_string(),
                user,
                from: q.from,
                to: q.to,
                before,
                limit: limit + 1,
            },
        )
        .await?;
    let next = (hits.len() as i64 > limit)
        .then(|| {
            hits.truncate(limit as usize);
            hits.last().map(|h| cursor(&format!("{}:{}", h.at, h.id)))
        })
        .flatten();
    Ok(Json(json!({ "items": hits, "next_cursor": next })).into_response())
}
