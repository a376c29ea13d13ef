//! The admin API's errors as RFC 9457 problem details (`application/problem+json`): every
//! answer of 400 or more whose body is a JSON object with an `error` becomes
//! `{"type": "about:blank", "title", "status", "detail", …}`, its other members (`error`,
//! `errors`, `required_role`, `details`) kept as extension members, so clients reading
//! `error` keep working. One layer over the whole admin router: routes added later answer the
//! same way without knowing it. axum's own plain-text refusals (a path segment that is no
//! number, an unreadable JSON body) become problems too, their text the `detail`.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

/// The content type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The largest error body rewritten (errors are small; a larger one is passed on as it is).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// `body` (an error answer's JSON) as a problem of `status`; None when it is not one of ours.
pub fn problem(status: StatusCode, body: &Value) -> Option<Value> {
    let obj = body.as_object()?;
    let detail = obj.get("error")?.as_str()?.to_string();
    let mut out = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    for (k, v) in obj {
        if !matches!(
            k.as_str(),
            "type" | "title" | "status" | "detail" | "instance"
        ) {
            out[k] = v.clone();
        }
    }
    Some(out)
}

pub async fn as_problem(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
    // axum's own refusals (a path segment that is no number, a body that is no JSON) are
    // plain text: their text becomes the problem's detail.
    let is_text = content_type.is_some_and(|c| c.starts_with("text/plain"));
    if status.as_u16() < 400 || !(is_json || is_text) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let body = if is_json {
        serde_json::from_slice::<Value>(&bytes).ok()
    } else {
        Some(json!({ "error": String::from_utf8_lossy(&bytes).trim() }))
    };
    let rewritten = body
        .and_then(|v| problem(status, &v))
        .and_then(|p| serde_json::to_vec(&p).ok());
    match rewritten {
        Some(p) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(p))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_becomes_a_problem_keeping_its_members() {
        let p = problem(
            StatusCode::FORBIDDEN,
            &json!({"error": "needs admin", "required_role": "admin"}),
        )
        .unwrap();
        assert_eq!(p["type"], "about:blank");
        assert_eq!(p["title"], "Forbidden");
        assert_eq!(p["status"], 403);
        assert_eq!(p["detail"], "needs admin");
        assert_eq!(p["error"], "needs admin");
        assert_eq!(p["required_role"], "admin");
        assert!(problem(StatusCode::NOT_FOUND, &json!({"items": []})).is_none());
        assert!(problem(StatusCode::NOT_FOUND, &json!([1])).is_none());
    }
}
