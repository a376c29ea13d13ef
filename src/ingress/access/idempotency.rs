//! `Idempotency-Key` on every admin `POST` (IETF httpapi-idempotency-key-header): the same
//! key from the same caller within a day gets the first answer back (with
//! `Idempotent-Replayed: true`) instead of doing it again — after a timeout, a retry cannot
//! make a second campaign, product, key or refund.
//!
//! - The key: 1 to 255 visible ASCII characters (else 400).
//! - The same key on another request (method, path, query or body differ): 422.
//! - The same key while its first request still runs: 409 (try again later).
//! - A first answer of 429 or 5xx is not kept: the same request may be tried again.
//! - A claim whose process died before answering is taken over after a minute.
//!
//! Runs after the caller is admitted (so a refused request claims nothing), for `POST` with
//! the header only; keys are per caller (`admin.token` or an API key's id).

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::Caller;
use crate::ingress::AppState;
use crate::store::IdemRecord;

const HEADER: &str = "idempotency-key";
/// How long a key is kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// A claim with no answer this old is taken for abandoned.
const ABANDONED_MS: i64 = 60_000;
/// The largest request body fingerprinted (the largest any admin route takes).
const MAX_REQUEST: usize = crate::ingress::campaigns::MAX_BODY;
/// The largest answer kept; a larger one is given but not kept (the key is let go).
const MAX_ANSWER: usize = 1024 * 1024;

fn refuse(status: StatusCode, message: &str) -> Response {
    super::error(status, message)
}

/// Whether `key` is a key this API takes.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// SHA-256 of what makes two requests the same one.
pub fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

pub(super) async fn idempotent(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).map(|v| v.as_bytes().to_vec()) else {
        return next.run(req).await;
    };
    if !valid_key(&key) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        );
    }
    let key = String::from_utf8_lossy(&key).into_owned();
    let Some(caller) = req.extensions().get::<Caller>().map(|c| c.key.to_string()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_REQUEST).await {
        Ok(b) => b,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let print = fingerprint(&parts.method, &target, &bytes);
    let store = &app.engine.store;
    let now = app.engine.clock.now_ms();
    let claimed = store
        .claim_idempotency_key(&caller, &key, &print, now, now - ABANDONED_MS)
        .await;
    match claimed {
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        Ok(IdemRecord::OtherRequest) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for another request",
            )
        }
        Ok(IdemRecord::InFlight) => {
            return refuse(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still running: try again later",
            )
        }
        Ok(IdemRecord::Answered {
            status,
            content_type,
            body,
        }) => {
            let mut resp =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            let h = resp.headers_mut();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.insert(header::CONTENT_TYPE, ct);
            }
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return resp;
        }
        Ok(IdemRecord::Claimed) => {}
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status();
    let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let (parts, body) = resp.into_parts();
    if retryable {
        // Not kept: the same request may be tried again.
        release(store, &caller, &key).await;
        return Response::from_parts(parts, body);
    }
    let answer = match to_bytes(body, usize::MAX).await {
        Ok(a) => a,
        Err(e) => {
            release(store, &caller, &key).await;
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the answer could not be read: {e}"),
            );
        }
    };
    if answer.len() > MAX_ANSWER {
        release(store, &caller, &key).await;
        return Response::from_parts(parts, Body::from(answer));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // A secret shown once (a new key, a webhook secret) is not kept: the replay says so.
    let kept = without_secrets(&answer);
    if let Err(e) = store
        .answer_idempotency_key(&caller, &key, status.as_u16(), content_type, &kept)
        .await
    {
        tracing::warn!(error = %e, "An Idempotency-Key's answer could not be kept; a retry within a minute is refused, then runs again.");
    }
    Response::from_parts(parts, Body::from(answer))
}

/// What is shown once and never kept: API keys' and webhook secrets' texts.
const SECRET_PREFIXES: &[&str] = &["pk_live_", "whsec_"];
/// What a replay shows in a secret's place.
pub const SHOWN_ONCE: &str = "[shown once: not kept]";

/// `answer` with every JSON string that is a secret replaced by [`SHOWN_ONCE`] (an answer
/// that is not JSON is kept as it is: no route answers a secret in another form).
pub fn without_secrets(answer: &[u8]) -> Vec<u8> {
    fn walk(v: &mut serde_json::Value) -> bool {
        let mut found = false;
        match v {
            serde_json::Value::String(s) if SECRET_PREFIXES.iter().any(|p| s.starts_with(p)) => {
                *s = SHOWN_ONCE.to_string();
                found = true;
            }
            serde_json::Value::Array(items) => {
                for i in items {
                    found |= walk(i);
                }
            }
            serde_json::Value::Object(map) => {
                for i in map.values_mut() {
                    found |= walk(i);
                }
            }
            _ => {}
        }
        found
    }
    match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(mut v) => {
            if walk(&mut v) {
                serde_json::to_vec(&v).unwrap_or_default()
            } else {
                answer.to_vec()
            }
        }
        Err(_) => answer.to_vec(),
    }
}

async fn release(store: &crate::store::Store, caller: &str, key: &str) {
    if let Err(e) = store.release_idempotency_key(caller, key).await {
        tracing::warn!(error = %e, "An Idempotency-Key could not be let go; it is taken over after a minute.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_shown_once_are_not_kept() {
        let kept = without_secrets(
            br#"{"id":3,"key":"pk_live_abc","nested":[{"secret":"whsec_x"}],"name":"pk"}"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(v["key"], SHOWN_ONCE);
        assert_eq!(v["nested"][0]["secret"], SHOWN_ONCE);
        assert_eq!(v["name"], "pk");
        assert_eq!(without_secrets(b"not json"), b"not json".to_vec());
    }

    #[test]
    fn keys_are_visible_ascii() {
        assert!(valid_key(b"order-123_abc"));
        assert!(valid_key(&[b'a'; 255]));
        assert!(!valid_key(b""));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key("é".as_bytes()));
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint() {
        let a = fingerprint(&Method::POST, "/admin/v1/products", b"{\"sku\":\"A\"}");
        assert_eq!(
            a,
            fingerprint(&Method::POST, "/admin/v1/products", b"{\"sku\":\"A\"}")
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/admin/v1/products", b"{\"sku\":\"B\"}")
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/admin/v1/products?x=1", b"{\"sku\":\"A\"}")
        );
    }
}
