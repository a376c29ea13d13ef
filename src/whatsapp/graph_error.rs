//! Classify a Graph API response to `POST /{version}/{phone_number_id}/messages`
//! (cloud-api.md §3 response shape, §5 error codes) into what the sender should do.

use std::time::Duration;

use serde::Deserialize;

/// What the sender does with one attempt's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Meta accepted the message (not yet delivered). `wamid` = `messages[0].id`;
    /// `None` for mark-read / typing (`{"success":true}`).
    Accepted { wamid: Option<String> },
    /// Transient: try again later (honour `retry_after` when given).
    Retry {
        code: Option<i64>,
        http_status: u16,
        retry_after: Option<Duration>,
        reason: String,
        /// No answer came (a timeout, a dropped connection): Meta may have taken the
        /// message, so it is not sent again before a status webhook could settle it.
        in_doubt: bool,
    },
    /// Will not succeed as is; `action` says what to do instead.
    Permanent {
        code: Option<i64>,
        http_status: u16,
        details: String,
        action: PermanentAction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermanentAction {
    /// Bug or unexpected answer: park the message for a human.
    DeadLetter,
    /// 131047: more than 24 h since the user's last message; only a template can go now.
    WindowClosed,
    /// 131026: recipient cannot receive (not on WhatsApp, old client, ToS…).
    RecipientUnreachable,
    /// 131048 (spam rate limit), 131031 (account locked), 368 (policy block):
    /// stop business-initiated sends from this number and alert.
    HaltBusinessInitiated,
    /// 190 (token), 131005 / 10 (permission), 131042 (payment), 133010 (number not registered),
    /// or a bare HTTP 401: pause the whole account's queue until fixed.
    PauseAccount,
    /// 132000–132016: template missing, paused, disabled or wrongly parameterised.
    TemplateProblem,
    /// 131021: recipient is the sender; nothing to do.
    Drop,
}

/// Graph's `{"error":{...}}` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub error_data: Option<GraphErrorData>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GraphErrorData {
    #[serde(default)]
    pub details: Option<String>,
}

impl GraphError {
    pub fn details(&self) -> Option<&str> {
        self.error_data.as_ref()?.details.as_deref()
    }

    /// `"code 131047 (OAuthException): message: details [fbtrace_id X]"`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(c) = self.code {
            s.push_str(&format!("code {c}"));
            if let Some(sub) = self.error_subcode {
                s.push_str(&format!("/{sub}"));
            }
        } else {
            s.push_str("no code");
        }
        if let Some(k) = &self.kind {
            s.push_str(&format!(" ({k})"));
        }
        if let Some(m) = &self.message {
            s.push_str(": ");
            s.push_str(m);
        }
        if let Some(d) = self.details() {
            s.push_str(": ");
            s.push_str(d);
        }
        if let Some(t) = &self.fbtrace_id {
            s.push_str(&format!(" [fbtrace_id {t}]"));
        }
        s
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GraphError,
}

#[derive(Deserialize)]
struct SuccessBody {
    #[serde(default)]
    messages: Vec<SuccessMessage>,
    #[serde(default)]
    success: Option<bool>,
}

#[derive(Deserialize)]
struct SuccessMessage {
    #[serde(default)]
    id: Option<String>,
}

/// Parse Graph's error object, if the body carries one.
pub fn parse_graph_error(body: &[u8]) -> Option<GraphError> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error)
}

/// `Retry-After` as integer (or decimal) seconds; HTTP-date forms are ignored (`None`).
pub fn parse_retry_after(header: &str) -> Option<Duration> {
    let h = header.trim();
    if let Ok(secs) = h.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    h.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
        .map(Duration::from_secs_f64)
}

/// Error codes that are transient regardless of the HTTP status (cloud-api.md §5):
/// 130429 throughput, 131056 pair rate (often HTTP 400), 4 app call limit, 80007 WABA
/// call limit, 131057 throughput upgrade in progress, 2 Graph "temporary issue".
pub fn is_retryable_code(code: i64) -> bool {
    matches!(code, 130429 | 131056 | 4 | 80007 | 131057 | 2)
}

/// What a transient refusal says about the pace of sending. The gate slows down for these
/// instead of failing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// The number's throughput: 130429, or HTTP 429 without a Graph error code.
    Throughput,
    /// One recipient's pair rate: 131056 (often with HTTP 400).
    PairRate,
}

/// The flow control a refusal asks for, if any (cloud-api.md §5).
pub fn flow_control(code: Option<i64>, http_status: u16) -> Option<FlowControl> {
    match code {
        Some(130429) => Some(FlowControl::Throughput),
        None if http_status == 429 => Some(FlowControl::Throughput),
        Some(131056) => Some(FlowControl::PairRate),
        _ => None,
    }
}

/// The permanent action for an error code; `None` when the code is not specifically known.
pub fn permanent_action_for_code(code: i64) -> Option<PermanentAction> {
    Some(match code {
        131047 => PermanentAction::WindowClosed,
        131026 => PermanentAction::RecipientUnreachable,
        131048 | 131031 | 368 => PermanentAction::HaltBusinessInitiated,
        190 | 131005 | 10 | 131042 | 133010 => PermanentAction::PauseAccount,
        132000..=132016 => PermanentAction::TemplateProblem,
        131021 => PermanentAction::Drop,
        _ => return None,
    })
}

fn snippet(body: &[u8]) -> String {
    const MAX: usize = 300;
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

/// Classify one Graph response (status, `Retry-After` header, raw body).
pub fn classify(http_status: u16, retry_after_header: Option<&str>, body: &[u8]) -> SendOutcome {
    let retry_after = retry_after_header.and_then(parse_retry_after);

    if (200..300).contains(&http_status) {
        if let Ok(ok) = serde_json::from_slice::<SuccessBody>(body) {
            if let Some(id) = ok
                .messages
                .into_iter()
                .next()
                .and_then(|m| m.id)
                .filter(|id| !id.is_empty())
            {
                return SendOutcome::Accepted { wamid: Some(id) };
            }
            if ok.success == Some(true) {
                return SendOutcome::Accepted { wamid: None };
            }
        }
        let err = parse_graph_error(body);
        return SendOutcome::Permanent {
            code: err.as_ref().and_then(|e| e.code),
            http_status,
            details: format!("unexpected {http_status} response body: {}", snippet(body)),
            action: PermanentAction::DeadLetter,
        };
    }

    let err = parse_graph_error(body);
    let code = err.as_ref().and_then(|e| e.code);
    let description = match &err {
        Some(e) => e.describe(),
        None if body.is_empty() => "empty body".to_string(),
        None => format!("unparsed body: {}", snippet(body)),
    };

    let transient_status = http_status == 429 || http_status == 408 || http_status >= 500;
    if transient_status || code.is_some_and(is_retryable_code) {
        return SendOutcome::Retry {
            code,
            http_status,
            retry_after,
            reason: format!("HTTP {http_status}, {description}"),
            in_doubt: false,
        };
    }

    let action = code
        .and_then(permanent_action_for_code)
        .unwrap_or(if http_status == 401 {
            PermanentAction::PauseAccount
        } else {
            PermanentAction::DeadLetter
        });
    SendOutcome::Permanent {
        code,
        http_status,
        details: format!("HTTP {http_status}, {description}"),
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_body(code: i64, details: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {
                "message": "(#X) some title",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "AazVq0zGJpXwQ3x"
            }
        }))
        .unwrap()
    }

    fn permanent_action(status: u16, code: i64) -> PermanentAction {
        match classify(status, None, &err_body(code, "d")) {
            SendOutcome::Permanent {
                action, code: c, ..
            } => {
                assert_eq!(c, Some(code));
                action
            }
            other => panic!("{code}: {other:?}"),
        }
    }

    fn is_retry(status: u16, code: i64) -> bool {
        matches!(
            classify(status, None, &err_body(code, "d")),
            SendOutcome::Retry { .. }
        )
    }

    #[test]
    fn accepted_with_wamid() {
        let body = br#"{"messaging_product":"whatsapp","contacts":[{"input":"16315551181","wa_id":"16315551181"}],"messages":[{"id":"wamid.HBgLMTYzMTU1NTExODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA","message_status":"accepted"}]}"#;
        assert_eq!(
            classify(200, None, body),
            SendOutcome::Accepted {
                wamid: Some("wamid.HBgLMTYzMTU1NTExODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into())
            }
        );
    }

    #[test]
    fn accepted_mark_read() {
        assert_eq!(
            classify(200, None, br#"{"success":true}"#),
            SendOutcome::Accepted { wamid: None }
        );
    }

    #[test]
    fn unexpected_2xx_is_dead_letter() {
        for body in [
            &br#"{"success":false}"#[..],
            b"",
            b"<html>ok</html>",
            br#"{"messages":[]}"#,
        ] {
            match classify(200, None, body) {
                SendOutcome::Permanent {
                    action: PermanentAction::DeadLetter,
                    http_status: 200,
                    ..
                } => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn http_429_with_retry_after() {
        match classify(429, Some("2"), &err_body(130429, "throughput")) {
            SendOutcome::Retry {
                code,
                http_status,
                retry_after,
                reason,
                ..
            } => {
                assert_eq!(code, Some(130429));
                assert_eq!(http_status, 429);
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
                assert!(reason.contains("130429"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // HTTP-date Retry-After is ignored, still a retry.
        assert!(matches!(
            classify(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b""),
            SendOutcome::Retry {
                retry_after: None,
                code: None,
                ..
            }
        ));
    }

    #[test]
    fn pair_rate_limit_400_is_retry() {
        match classify(400, None, &err_body(131056, "pair rate")) {
            SendOutcome::Retry {
                code, http_status, ..
            } => {
                assert_eq!(code, Some(131056));
                assert_eq!(http_status, 400);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn window_closed_400() {
        match classify(
            400,
            None,
            &err_body(
                131047,
                "Message failed to send because more than 24 hours have passed",
            ),
        ) {
            SendOutcome::Permanent {
                code,
                http_status,
                details,
                action,
            } => {
                assert_eq!(code, Some(131047));
                assert_eq!(http_status, 400);
                assert_eq!(action, PermanentAction::WindowClosed);
                assert!(details.contains("24 hours"), "{details}");
                assert!(details.contains("AazVq0zGJpXwQ3x"), "{details}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_error_with_garbage_body() {
        match classify(500, Some("garbage"), b"<html>502 Bad Gateway</html>") {
            SendOutcome::Retry {
                code,
                http_status,
                retry_after,
                reason,
                ..
            } => {
                assert_eq!(code, None);
                assert_eq!(http_status, 500);
                assert_eq!(retry_after, None);
                assert!(reason.contains("Bad Gateway"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(is_retry(500, 131000));
        assert!(is_retry(503, 133004));
    }

    #[test]
    fn retryable_codes() {
        for code in [130429, 131056, 4, 80007, 131057] {
            assert!(is_retry(400, code), "{code}");
        }
        assert!(is_retry(408, 1));
    }

    #[test]
    fn permanent_actions() {
        assert_eq!(
            permanent_action(400, 131026),
            PermanentAction::RecipientUnreachable
        );
        assert_eq!(
            permanent_action(400, 131048),
            PermanentAction::HaltBusinessInitiated
        );
        assert_eq!(
            permanent_action(403, 131031),
            PermanentAction::HaltBusinessInitiated
        );
        assert_eq!(
            permanent_action(403, 368),
            PermanentAction::HaltBusinessInitiated
        );
        assert_eq!(permanent_action(401, 190), PermanentAction::PauseAccount);
        assert_eq!(permanent_action(403, 131005), PermanentAction::PauseAccount);
        for code in [132000, 132001, 132005, 132007, 132012, 132015, 132016] {
            assert_eq!(
                permanent_action(400, code),
                PermanentAction::TemplateProblem,
                "{code}"
            );
        }
        assert_eq!(permanent_action(400, 131021), PermanentAction::Drop);
        assert_eq!(permanent_action(400, 131008), PermanentAction::DeadLetter);
        assert_eq!(permanent_action(400, 131009), PermanentAction::DeadLetter);
        assert_eq!(permanent_action(400, 131051), PermanentAction::DeadLetter);
        assert_eq!(permanent_action(400, 100), PermanentAction::DeadLetter);
    }

    #[test]
    fn bare_4xx() {
        assert!(matches!(
            classify(401, None, b""),
            SendOutcome::Permanent {
                action: PermanentAction::PauseAccount,
                code: None,
                ..
            }
        ));
        assert!(matches!(
            classify(404, None, b"not json"),
            SendOutcome::Permanent {
                action: PermanentAction::DeadLetter,
                code: None,
                http_status: 404,
                ..
            }
        ));
    }

    #[test]
    fn graph_error_parse() {
        let e = parse_graph_error(&err_body(131047, "too late")).unwrap();
        assert_eq!(e.code, Some(131047));
        assert_eq!(e.kind.as_deref(), Some("OAuthException"));
        assert_eq!(e.details(), Some("too late"));
        assert_eq!(e.fbtrace_id.as_deref(), Some("AazVq0zGJpXwQ3x"));
        assert!(parse_graph_error(b"{}").is_none());
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
    }
}
