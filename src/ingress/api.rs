//! What every `/admin/v1/` endpoint shares: the error answer ([`ApiError`], turned into RFC
//! 9457 problem details by [`super::problem`]), typed query strings and JSON bodies read at
//! the edge (400 unreadable, 422 does not fit), opaque cursors and pages.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::store::StoreError;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// An answer other than success: `{"error": message}` (and `errors`, each problem, when
/// there are several).
#[derive(Debug)]
pub(in crate::ingress) struct ApiError {
    status: StatusCode,
    pub(in crate::ingress) message: String,
    errors: Vec<String>,
}

impl ApiError {
    pub(in crate::ingress) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub(in crate::ingress) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 400: the request cannot be read as asked.
    pub(in crate::ingress) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(in crate::ingress) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(in crate::ingress) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 422 with every problem found.
    pub(in crate::ingress) fn problems(errors: Vec<String>) -> ApiError {
        ApiError::problems_titled(errors.join("; "), errors)
    }

    /// 422 with every problem found, under one `message` of its own.
    pub(in crate::ingress) fn problems_titled(
        message: impl Into<String>,
        errors: Vec<String>,
    ) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            errors,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        (self.status, Json(body)).into_response()
    }
}

pub(in crate::ingress) type Answer = Result<Response, ApiError>;

pub(in crate::ingress) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

pub(in crate::ingress) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        status => ApiError::new(status, e.body_text()),
    })
}

/// A JSON object body as `T`: 400 when it is not JSON, 422 when it is not an object or does
/// not fit `T`. (serde would read a struct from an array of its fields in order; every body
/// of this API is an object, and the document says so.)
pub(in crate::ingress) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    object_body(&body_bytes(body)?)
}

/// A JSON body as `T`, whatever its kind (for the one body that may be a bare list): 400 when
/// it is not JSON, 422 when it does not fit `T`.
pub(in crate::ingress) fn json_any_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("bad request body: {e}")),
        _ => ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    })
}

/// An optional JSON object body: nothing (or only whitespace) is `T::default()`.
pub(in crate::ingress) fn optional_json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    object_body(&bytes)
}

fn object_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("bad request body: {e}")))
}

/// An opaque page cursor: the hex of the text it stands for.
pub(in crate::ingress) fn cursor(text: &str) -> String {
    hex::encode(text)
}

pub(in crate::ingress) fn uncursor(given: &str) -> Result<String, ApiError> {
    hex::decode(given)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad cursor"))
}

pub(in crate::ingress) fn page_limit(given: Option<i64>) -> Result<i64, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1..={MAX_LIMIT}"))),
    }
}

/// The text a page's cursor stands for (an empty cursor is none: the first page).
pub(in crate::ingress) fn text_cursor(given: Option<&str>) -> Result<Option<String>, ApiError> {
    given.filter(|c| !c.is_empty()).map(uncursor).transpose()
}

/// The id a newest-first page's cursor names.
pub(in crate::ingress) fn id_cursor(given: Option<&str>) -> Result<Option<i64>, ApiError> {
    given
        .map(|c| {
            uncursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad cursor"))
        })
        .transpose()
}

/// A page of `found` (read with `limit + 1`): its first `limit` as `view` shows them, and the
/// next page's cursor (the last one's `key`) when there is more.
pub(in crate::ingress) fn page<T>(
    mut found: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
    view: impl Fn(&T) -> Value,
) -> Response {
    let next = (found.len() as i64 > limit)
        .then(|| {
            found.truncate(limit as usize);
            found.last().map(|t| cursor(&key(t)))
        })
        .flatten();
    let items: Vec<Value> = found.iter().map(view).collect();
    Json(json!({ "items": items, "next_cursor": next })).into_response()
}
