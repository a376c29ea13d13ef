//! Vouchers: `POST /vouchers` creates or updates by `code` (a field left out keeps its value
//! on an update, `null` clears it), `GET /vouchers` a page by code, `GET/PATCH/DELETE
//! /vouchers/{code}`. Codes are stored upper-case and found in any case. Times are RFC 3339
//! text (`"2026-12-31T23:59:59+07:00"`), answered in UTC; `valid_to` is the last valid
//! moment. `value` is a percent (0 < v ≤ 100) for `kind: percent`, an amount of the account's
//! currency for `kind: fixed` (as a product's price); `min_total` an amount too. `user`
//! binds the voucher to one customer (a wa_id). `used` is read-only.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::domain::{voucher_code, UserKey, Voucher, VoucherKind};

fn time_text(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| format!("{}Z", t.naive_utc()).replacen(' ', "T", 1))
}

fn voucher_view(v: &Voucher, currency: Currency) -> Value {
    json!({
        "code": v.code,
        "kind": v.kind,
        "value": v.value.normalize().to_string(),
        "currency": currency,
        "min_total": v.min_total.map(|m| m.normalize().to_string()),
        "valid_from": time_text(v.valid_from),
        "valid_to": time_text(v.valid_to),
        "usage_limit": v.usage_limit,
        "used": v.used,
        "user": v.user_key,
        "active": v.active,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
    })
}

/// A voucher's fields as a request gives them: None left out, `Some(None)` cleared.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct VoucherFields {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    code: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    kind: Option<VoucherKind>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    value: Option<Price>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    min_total: Option<Option<Price>>,
    #[serde(default, deserialize_with = "nullable")]
    valid_from: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    valid_to: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    usage_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    user: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    active: Option<bool>,
}

fn check_code(code: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "code {code:?} must be 1..=32 characters of A-Z 0-9 _ -"
        ))
    }
}

fn time_ms(field: &str, text: Option<String>, errors: &mut Vec<String>) -> Option<i64> {
    let text = text?;
    match chrono::DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => {
            errors.push(format!(
                "{field} {text:?} must be an RFC 3339 time (\"2026-12-31T23:59:59+07:00\")"
            ));
            None
        }
    }
}

/// The voucher `fields` make of `base` (None: a new one), checked whole: every problem.
fn merged(
    code: &str,
    base: Option<&Voucher>,
    fields: VoucherFields,
    currency: Currency,
    now: i64,
) -> Result<Voucher, Vec<String>> {
    let mut errors = Vec::new();
    if let Err(e) = check_code(code) {
        errors.push(e);
    }
    let mut v = base.cloned().unwrap_or_else(|| Voucher {
        code: voucher_code(code),
        kind: VoucherKind::Percent,
        value: Decimal::ZERO,
        min_total: None,
        valid_from: None,
        valid_to: None,
        usage_limit: None,
        used: 0,
        user_key: None,
        active: true,
        created_at: now,
        updated_at: now,
    });
    match fields.kind {
        Some(kind) => v.kind = kind,
        None if base.is_none() => errors.push("kind is required (percent or fixed)".into()),
        None => {}
    }
    if let Some(value) = &fields.value {
        match (v.kind, value) {
            (VoucherKind::Percent, Price::Text(t)) => match Decimal::from_str_exact(t.trim()) {
                Ok(d) => v.value = d,
                Err(_) => errors.push(format!("value {t:?} is not a number")),
            },
            (VoucherKind::Percent, Price::Whole(n)) => v.value = Decimal::from(*n),
            (VoucherKind::Percent, Price::Other(o)) => errors.push(format!(
                "value {o} must be a decimal string or a whole number, never a JSON float"
            )),
            (VoucherKind::Fixed, price) => match price.money(currency) {
                Ok(m) => v.value = m.amount,
                Err(e) => errors.push(e.replacen("price", "value", 1)),
            },
        }
    } else if base.is_none() {
        errors.push("value is required".into());
    }
    match v.kind {
        VoucherKind::Percent if v.value <= Decimal::ZERO || v.value > Decimal::ONE_HUNDRED => {
            errors.push(format!(
                "a percent value must be 0 < value ≤ 100, not {}",
                v.value
            ))
        }
        VoucherKind::Fixed if v.value <= Decimal::ZERO => {
            errors.push("a fixed value must be more than zero".into())
        }
        VoucherKind::Fixed if Money::new(v.value, currency).is_err() => {
            errors.push(format!("value {} is not an amount of {currency}", v.value))
        }
        _ => {}
    }
    if let Some(min) = fields.min_total {
        v.min_total = match min.map(|m| m.money(currency)) {
            None => None,
            Some(Ok(m)) => Some(m.amount),
            Some(Err(e)) => {
                errors.push(e.replacen("price", "min_total", 1));
                v.min_total
            }
        };
    }
    if let Some(from) = fields.valid_from {
        v.valid_from = time_ms("valid_from", from, &mut errors);
    }
    if let Some(to) = fields.valid_to {
        v.valid_to = time_ms("valid_to", to, &mut errors);
    }
    if let (Some(from), Some(to)) = (v.valid_from, v.valid_to) {
        if from >= to {
            errors.push("valid_from must be before valid_to".into());
        }
    }
    if let Some(limit) = fields.usage_limit {
        if limit.is_some_and(|l| l < 1) {
            errors.push("usage_limit must be at least 1 (null: unlimited)".into());
        }
        v.usage_limit = limit;
    }
    if let Some(user) = fields.user {
        v.user_key = user
            .map(|u| UserKey::from(u.trim().trim_start_matches('+')).into_string())
            .filter(|u| !u.is_empty());
    }
    if v.user_key
        .as_ref()
        .is_some_and(|u| !(5..=20).contains(&u.len()) || !u.bytes().all(|b| b.is_ascii_digit()))
    {
        errors.push("user must be a customer's WhatsApp number (digits)".into());
    }
    if let Some(active) = fields.active {
        v.active = active;
    }
    v.updated_at = now;
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(errors)
    }
}

/// Write `fields` over the voucher `code` (creating it): 201 created, 200 updated.
async fn save_voucher(
    app: &AppState,
    account: &AccountId,
    currency: Currency,
    code: &str,
    fields: VoucherFields,
    create: bool,
) -> Answer {
    let store = &app.engine.store;
    let base = store.voucher(account, code).await?;
    if base.is_none() && !create {
        return Err(ApiError::not_found("no such voucher"));
    }
    let v = merged(code, base.as_ref(), fields, currency, now(app)).map_err(ApiError::problems)?;
    let created = store.upsert_voucher(account, &v, now(app)).await?;
    let saved = store
        .voucher(account, code)
        .await?
        .ok_or_else(|| ApiError::not_found("no such voucher"))?;
    tracing::info!(account = %account, code = %saved.code, created, "Voucher saved by the admin API.");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(voucher_view(&saved, currency))).into_response())
}

/// `POST /vouchers`: create or update by `code`.
pub(super) async fn put_voucher(
    State(app): State<AppState>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: VoucherFields = json_body(body)?;
    let code = fields
        .code
        .take()
        .ok_or_else(|| ApiError::invalid("code is required"))?;
    save_voucher(&app, &account, currency, code.trim(), fields, true).await
}

/// `PATCH /vouchers/{code}`: change the fields given.
pub(super) async fn patch_voucher(
    State(app): State<AppState>,
    Path(code): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let mut fields: VoucherFields = json_body(body)?;
    if fields
        .code
        .take()
        .is_some_and(|c| voucher_code(&c) != voucher_code(&code))
    {
        return Err(ApiError::invalid("a voucher's code cannot be changed"));
    }
    save_voucher(&app, &account, currency, &code, fields, false).await
}

pub(super) async fn show_voucher(
    State(app): State<AppState>,
    Path(code): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    match app.engine.store.voucher(&account, &code).await? {
        Some(v) => Ok(Json(voucher_view(&v, currency)).into_response()),
        None => Err(ApiError::not_found("no such voucher")),
    }
}

pub(super) async fn delete_voucher(
    State(app): State<AppState>,
    Path(code): Path<String>,
    q: Result<Query<AccountParam>, QueryRejection>,
) -> Answer {
    let (account, _) = account(&app, query(q)?.account.as_deref())?;
    if app.engine.store.delete_voucher(&account, &code).await? {
        tracing::info!(account = %account, code = %voucher_code(&code), "Voucher deleted by the admin API.");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("no such voucher"))
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct VoucherListParams {
    account: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /vouchers`: a page by code and the next page's cursor.
pub(super) async fn list_vouchers(
    State(app): State<AppState>,
    q: Result<Query<VoucherListParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (account, currency) = account(&app, params.account.as_deref())?;
    let limit = page_limit(params.limit)?;
    let after = text_cursor(params.cursor.as_deref())?;
    let items = app
        .engine
        .store
        .vouchers(&account, after.as_deref(), limit + 1)
        .await?;
    Ok(page(
        items,
        limit,
        |v| v.code.clone(),
        |v| voucher_view(v, currency),
    ))
}
