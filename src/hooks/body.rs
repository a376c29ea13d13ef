//! The body every attempt of an event sends (the same bytes each time):
//! `{"type", "timestamp", "data"}` as the Standard Webhooks payload structure has it, `data`
//! carrying the account, the conversation and its `sequence` beside the event's own fields.

use serde_json::{json, Map, Value};

/// What a stored event holds.
pub struct EventParts<'a> {
    pub event_type: &'a str,
    pub account: &'a str,
    pub user_key: Option<&'a str>,
    pub sequence: Option<i64>,
    /// The event's own `data` (JSON object text).
    pub payload: &'a str,
    /// When it happened (ms).
    pub at_ms: i64,
}

/// The body sent for an event.
pub fn event_body(e: &EventParts<'_>) -> String {
    let mut data = match serde_json::from_str::<Value>(e.payload) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    data.insert("account".into(), json!(e.account));
    if let Some(user) = e.user_key {
        data.insert("conversation".into(), json!(user));
    }
    if let Some(seq) = e.sequence {
        data.insert("sequence".into(), json!(seq));
    }
    json!({
        "type": e.event_type,
        "timestamp": utc_text(e.at_ms),
        "data": Value::Object(data),
    })
    .to_string()
}

/// `2026-12-07T12:00:00.000Z` for a time in ms.
pub fn utc_text(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to a civil date (the proleptic Gregorian calendar, from 1970-01-01).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_text() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_body_carries_the_conversation_and_its_sequence() {
        let body = event_body(&EventParts {
            event_type: "message.received",
            account: "111",
            user_key: Some("6281"),
            sequence: Some(3),
            payload: r#"{"wamid":"w1"}"#,
            at_ms: 0,
        });
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "message.received");
        assert_eq!(v["data"]["sequence"], 3);
        assert_eq!(v["data"]["conversation"], "6281");
        assert_eq!(v["data"]["wamid"], "w1");
        assert_eq!(v["data"]["account"], "111");
    }
}
