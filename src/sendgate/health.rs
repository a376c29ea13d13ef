//! Account health from Meta's account webhooks: `phone_number_quality_update`,
//! `account_update` and `message_template_status_update` (pure: event in, change out).

use super::gate::{Control, Health, Stop};
use crate::whatsapp::event::AccountEvent;

/// What an account webhook means for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountSignal {
    /// The number's quality (and, often, its current messaging limit).
    Quality {
        health: Health,
        event: String,
        tier: Option<String>,
    },
    /// An account-level decision by Meta.
    Account {
        health: Health,
        event: String,
        /// Business-initiated sending must stop (restriction, ban).
        halt: bool,
    },
    /// A template's review or quality state changed.
    Template {
        name: String,
        language: String,
        status: String,
        reason: Option<String>,
    },
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| match x {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Read an account event; `None` for fields and events that do not concern sending.
pub fn interpret(ev: &AccountEvent) -> Option<AccountSignal> {
    let v = &ev.value;
    let event = text(v, "event").unwrap_or_default().to_ascii_uppercase();
    match ev.field.as_str() {
        "phone_number_quality_update" => {
            let health = match event.as_str() {
                "FLAGGED" | "DOWNGRADE" => Health::Warning,
                "UNFLAGGED" | "UPGRADE" | "ONBOARDING" => Health::Healthy,
                _ => return None,
            };
            Some(AccountSignal::Quality {
                health,
                event,
                tier: text(v, "current_limit"),
            })
        }
        "account_update" => {
            let (health, halt) = match event.as_str() {
                "ACCOUNT_VIOLATION" => (Health::Critical, false),
                "ACCOUNT_RESTRICTION" | "DISABLED_UPDATE" | "ACCOUNT_DELETED" => {
                    (Health::Critical, true)
                }
                _ => return None,
            };
            Some(AccountSignal::Account {
                health,
                event,
                halt,
            })
        }
        "message_template_status_update" | "message_template_quality_update" => {
            let status = if ev.field == "message_template_quality_update" {
                text(v, "new_quality_score").map(|q| format!("QUALITY_{q}"))?
            } else {
                event
            };
            Some(AccountSignal::Template {
                name: text(v, "message_template_name")?,
                language: text(v, "message_template_language").unwrap_or_default(),
                status,
                reason: text(v, "reason").filter(|r| r != "NONE"),
            })
        }
        _ => None,
    }
}

/// The phone number an account event names, when it names one (`metadata` first).
pub fn event_phone(ev: &AccountEvent) -> Option<String> {
    text(&ev.value, "display_phone_number").or_else(|| text(&ev.value, "phone_number"))
}

/// Apply a signal to an account's control; true when it changed.
pub fn apply(control: &mut Control, signal: &AccountSignal, now_ms: i64) -> bool {
    let before = control.clone();
    match signal {
        AccountSignal::Quality {
            health,
            event,
            tier,
        } => {
            control.quality = *health;
            control.quality_event = Some(event.clone());
            if let Some(t) = tier {
                if super::gate::parse_meta_tier(t).is_some() {
                    control.meta_tier = Some(t.clone());
                }
            }
        }
        AccountSignal::Account {
            health,
            event,
            halt,
        } => {
            control.account = *health;
            control.account_event = Some(event.clone());
            if *halt && control.halted.is_none() {
                control.halted = Some(Stop {
                    code: None,
                    reason: format!("account_update {event}"),
                    since: now_ms,
                });
            }
        }
        AccountSignal::Template { .. } => {}
    }
    *control != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(field: &str, value: serde_json::Value) -> AccountEvent {
        AccountEvent {
            waba_id: "1".into(),
            field: field.into(),
            phone_number_id: None,
            value,
        }
    }

    #[test]
    fn a_flagged_number_warns_and_takes_meta_tier() {
        let s = interpret(&ev(
            "phone_number_quality_update",
            json!({"display_phone_number": "15550783881", "event": "FLAGGED", "current_limit": "TIER_10K"}),
        ))
        .unwrap();
        let mut c = Control::default();
        assert!(apply(&mut c, &s, 5));
        assert_eq!(c.health(), Health::Warning);
        assert_eq!(c.meta_tier.as_deref(), Some("TIER_10K"));
        assert!(!apply(&mut c, &s, 6), "the same again changes nothing");
        let back = interpret(&ev(
            "phone_number_quality_update",
            json!({"event": "UNFLAGGED", "current_limit": "TIER_10K"}),
        ))
        .unwrap();
        apply(&mut c, &back, 7);
        assert_eq!(c.health(), Health::Healthy);
    }

    #[test]
    fn a_restriction_halts_business_initiated_sending() {
        let s = interpret(&ev(
            "account_update",
            json!({"phone_number": "15550783881", "event": "ACCOUNT_RESTRICTION"}),
        ))
        .unwrap();
        let mut c = Control::default();
        apply(&mut c, &s, 5);
        assert_eq!(c.health(), Health::Critical);
        assert!(c.halted.is_some());
        let v = interpret(&ev("account_update", json!({"event": "ACCOUNT_VIOLATION"}))).unwrap();
        let mut c = Control::default();
        apply(&mut c, &v, 5);
        assert_eq!(c.health(), Health::Critical);
        assert!(c.halted.is_none());
    }

    #[test]
    fn template_states_are_read() {
        let s = interpret(&ev(
            "message_template_status_update",
            json!({"event": "PAUSED", "message_template_id": 1, "message_template_name": "promo", "message_template_language": "id", "reason": "NONE"}),
        ))
        .unwrap();
        assert_eq!(
            s,
            AccountSignal::Template {
                name: "promo".into(),
                language: "id".into(),
                status: "PAUSED".into(),
                reason: None
            }
        );
        assert!(interpret(&ev("account_update", json!({"event": "VERIFIED_ACCOUNT"}))).is_none());
    }
}
