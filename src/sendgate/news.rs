//! What the business's systems hear of an account's gate (pure: the control as last recorded
//! and as it is now in, webhook events out): `account.health` when the account's health
//! moves, `account.halted` when business-initiated sending halts (or all sending pauses).
//! They are written with the control itself, in the writer's transaction.

use super::gate::{Control, Stop};
use crate::hooks::EventType;
use crate::store::NewHookEvent;

/// The events of a move from `before` to `after`.
pub fn control_events(
    account: &str,
    before: &Control,
    after: &Control,
    now_ms: i64,
) -> Vec<NewHookEvent> {
    let mut out = Vec::new();
    let event = |event_type: EventType, key: String, data: serde_json::Value| NewHookEvent {
        account: account.to_string(),
        user_key: None,
        event_type,
        data,
        dedup_key: format!("account:{account}:{}:{key}", event_type.as_str()),
        at: now_ms,
    };
    let (was, is) = (before.health(), after.health());
    if was != is {
        out.push(event(
            EventType::AccountHealth,
            format!("{now_ms}:{}", json_name(is)),
            serde_json::json!({
                "health": is,
                "previous": was,
                "quality": after.quality,
                "quality_event": after.quality_event,
                "account_status": after.account,
                "account_event": after.account_event,
                "messaging_limit": after.meta_tier,
                "halted": after.halted.is_some(),
                "paused": after.paused.is_some(),
            }),
        ));
    }
    let stops = [
        ("business_initiated", &before.halted, &after.halted),
        ("all", &before.paused, &after.paused),
    ];
    for (scope, was, is) in stops {
        if let (
            None,
            Some(Stop {
                code,
                reason,
                since,
            }),
        ) = (was, is)
        {
            out.push(event(
                EventType::AccountHalted,
                format!("{scope}:{since}"),
                serde_json::json!({
                    "scope": scope,
                    "code": code,
                    "reason": reason,
                    "since": since,
                }),
            ));
        }
    }
    out
}

fn json_name(h: super::Health) -> String {
    serde_json::to_value(h)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sendgate::Health;

    #[test]
    fn a_halt_is_told_once_with_the_health_it_brings() {
        let before = Control::default();
        let mut after = before.clone();
        after.halted = Some(Stop {
            code: Some(131048),
            reason: "spam rate limit".into(),
            since: 7,
        });
        let events = control_events("pn", &before, &after, 9);
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, [EventType::AccountHealth, EventType::AccountHalted]);
        assert_eq!(events[0].data["health"], "critical");
        assert_eq!(events[0].data["previous"], "healthy");
        assert_eq!(events[1].data["scope"], "business_initiated");
        assert_eq!(events[1].data["code"], 131048);
        // Nothing moved: nothing to tell.
        assert!(control_events("pn", &after, &after, 10).is_empty());
        // Resumed: health only.
        let back = control_events("pn", &after, &before, 11);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].data["health"], "healthy");
    }

    #[test]
    fn a_quality_flag_is_a_health_event_and_a_pause_a_halt_of_all_sending() {
        let before = Control::default();
        let mut flagged = before.clone();
        flagged.quality = Health::Warning;
        flagged.quality_event = Some("FLAGGED".into());
        let e = control_events("pn", &before, &flagged, 1);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].data["quality_event"], "FLAGGED");
        let mut paused = flagged.clone();
        paused.paused = Some(Stop {
            code: Some(190),
            reason: "token expired".into(),
            since: 2,
        });
        let e = control_events("pn", &flagged, &paused, 2);
        assert_eq!(e[1].event_type, EventType::AccountHalted);
        assert_eq!(e[1].data["scope"], "all");
        assert_ne!(e[0].dedup_key, e[1].dedup_key);
    }
}
