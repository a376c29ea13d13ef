//! What one attempt's outcome means for its message, decided without I/O.
//!
//! In: the Graph API's answer as [`crate::whatsapp::graph_error`] classified it, which attempt
//! this was, the message's kind and class, the outbox settings and a jitter draw. Out: what
//! the gate learns from it, and what becomes of the row ([`Next`]). [`super::deliver`] makes
//! the request and carries the verdict out.

use std::time::Duration;

use crate::config::OutboxSettings;
use crate::domain::{backoff_with, OutboxKind, SendClass, Wamid};
use crate::sendgate::Outcome as GateOutcome;
use crate::whatsapp::graph_error::{flow_control, FlowControl, PermanentAction, SendOutcome};

/// The attempt being judged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
    /// 1 for the first attempt.
    pub(super) number: u32,
    pub(super) kind: OutboxKind,
    pub(super) class: SendClass,
}

/// What becomes of the row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    /// Meta took it: the wamid is recorded (none for a read receipt).
    Sent { wamid: Option<Wamid> },
    /// Tried again after `delay` (zero when the gate paces it: a throttle, a pair rate).
    Retry {
        code: Option<i64>,
        reason: String,
        delay: Duration,
        /// No answer, or a 5xx: Meta may have taken it (the next attempt counts against the
        /// daily cap again).
        maybe_sent: bool,
        /// No answer at all: it is not sent again until a status webhook had time to say it
        /// arrived (a read receipt has no status: it is simply sent again).
        in_doubt: bool,
    },
    /// Kept until the account is resumed: sending is paused, or business-initiated sending
    /// halted and this message is business-initiated.
    Held,
    /// Failed for good: recorded, reported to its conversation. `refund`: Meta definitely
    /// refused it, so its daily unit and tier slot are free again (not after giving up on
    /// attempts that may have reached Meta).
    Failed {
        code: Option<i64>,
        detail: String,
        refund: bool,
    },
}

/// A judged attempt.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    /// What the gate learns: a throttle, a pair rate, a pause, a halt, an unreachable
    /// recipient, or that the number's sends go through again.
    pub(super) gate: Option<GateOutcome>,
    pub(super) next: Next,
    /// The `sends` metric's `result` label.
    pub(super) result: &'static str,
    /// The Graph error code, else the HTTP status (none for an accepted send): the `sends`
    /// metric's `code` label, and what the gate's alerts name.
    pub(super) code: Option<i64>,
    /// A definite refusal's meaning, for the log.
    pub(super) refusal: Option<PermanentAction>,
}

/// Judge one attempt's outcome. `jitter` in [0, 1) spreads the backoff of retried sends.
pub(super) fn verdict(
    outcome: SendOutcome,
    attempt: Attempt,
    settings: &OutboxSettings,
    jitter: f64,
) -> Verdict {
    let code_or_status =
        |code: Option<i64>, http_status: u16| code.or(Some(i64::from(http_status)));
    match outcome {
        SendOutcome::Accepted { wamid } => Verdict {
            gate: Some(GateOutcome::Accepted),
            next: Next::Sent {
                wamid: wamid.map(Into::into),
            },
            result: "accepted",
            code: None,
            refusal: None,
        },
        SendOutcome::Retry {
            code,
            http_status,
            retry_after,
            reason,
            in_doubt,
        } => {
            // Flow control (the number's rate, the user's pair rate) is the gate's business:
            // it slows down instead of failing the message, so it gets more attempts.
            let pace = flow_control(code, http_status);
            let gate = match pace {
                Some(FlowControl::Throughput) => GateOutcome::Throttled { retry_after },
                Some(FlowControl::PairRate) => GateOutcome::PairLimited,
                None => GateOutcome::Transient,
            };
            let max = match pace {
                Some(_) => settings.max_attempts.saturating_mul(4),
                None => settings.max_attempts,
            };
            let next = if attempt.number >= max {
                Next::Failed {
                    code,
                    detail: format!("gave up after {} attempts: {reason}", attempt.number),
                    refund: false,
                }
            } else {
                Next::Retry {
                    code,
                    reason,
                    // The gate holds the number or the user for as long as needed.
                    delay: match pace {
                        Some(_) => Duration::ZERO,
                        None => backoff_with(
                            settings.backoff_base,
                            settings.backoff_max,
                            attempt.number - 1,
                            retry_after,
                            jitter,
                        ),
                    },
                    maybe_sent: http_status == 0 || http_status >= 500,
                    in_doubt: in_doubt && attempt.kind != OutboxKind::MarkRead,
                }
            };
            Verdict {
                gate: Some(gate),
                next,
                result: "retry",
                code: code_or_status(code, http_status),
                refusal: None,
            }
        }
        SendOutcome::Permanent {
            code,
            http_status,
            details,
            action,
        } => {
            let gate = match action {
                PermanentAction::PauseAccount => Some(GateOutcome::Pause {
                    code,
                    reason: details.clone(),
                }),
                PermanentAction::HaltBusinessInitiated => Some(GateOutcome::Halt {
                    code,
                    reason: details.clone(),
                }),
                PermanentAction::RecipientUnreachable => Some(GateOutcome::Unreachable),
                _ => None,
            };
            let next = match action {
                PermanentAction::PauseAccount => Next::Held,
                PermanentAction::HaltBusinessInitiated if attempt.class == SendClass::Business => {
                    Next::Held
                }
                _ => Next::Failed {
                    code,
                    detail: details,
                    refund: true,
                },
            };
            Verdict {
                gate,
                next,
                result: "failed",
                code: code_or_status(code, http_status),
                refusal: Some(action),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutboxSettings {
        OutboxSettings {
            max_in_flight: 8,
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            ambiguous_resend_after: Duration::from_secs(60),
        }
    }

    fn message(number: u32, class: SendClass) -> Attempt {
        Attempt {
            number,
            kind: OutboxKind::Message,
            class,
        }
    }

    fn retry(code: Option<i64>, http_status: u16, in_doubt: bool) -> SendOutcome {
        SendOutcome::Retry {
            code,
            http_status,
            retry_after: None,
            reason: "busy".into(),
            in_doubt,
        }
    }

    fn refused(code: i64, action: PermanentAction) -> SendOutcome {
        SendOutcome::Permanent {
            code: Some(code),
            http_status: 400,
            details: format!("refused {code}"),
            action,
        }
    }

    fn judge(outcome: SendOutcome, attempt: Attempt) -> Verdict {
        verdict(outcome, attempt, &settings(), 0.5)
    }

    #[test]
    fn an_accepted_send_records_its_wamid_and_clears_the_recipients_backoff() {
        let v = judge(
            SendOutcome::Accepted {
                wamid: Some("wamid.X".into()),
            },
            message(1, SendClass::Service),
        );
        assert_eq!(v.gate, Some(GateOutcome::Accepted));
        assert_eq!(
            v.next,
            Next::Sent {
                wamid: Some("wamid.X".into())
            }
        );
        assert_eq!((v.result, v.code), ("accepted", None));
    }

    #[test]
    fn a_throttle_slows_the_gate_and_retries_at_once_with_four_times_the_attempts() {
        let v = judge(
            retry(Some(130429), 400, false),
            message(3, SendClass::Service),
        );
        assert_eq!(v.gate, Some(GateOutcome::Throttled { retry_after: None }));
        assert!(matches!(v.next, Next::Retry { delay, .. } if delay.is_zero()));
        assert_eq!(v.code, Some(130429));
        // A 429 without a code is the same throttle.
        let v = judge(retry(None, 429, false), message(1, SendClass::Service));
        assert_eq!(v.gate, Some(GateOutcome::Throttled { retry_after: None }));
        assert_eq!(v.code, Some(429));
        // Given up only after 4 × max_attempts.
        let v = judge(
            retry(Some(130429), 400, false),
            message(12, SendClass::Service),
        );
        assert!(matches!(v.next, Next::Failed { refund: false, .. }));
    }

    #[test]
    fn a_pair_rate_backs_off_that_recipient_only() {
        let v = judge(
            retry(Some(131056), 400, false),
            message(1, SendClass::Service),
        );
        assert_eq!(v.gate, Some(GateOutcome::PairLimited));
        assert!(matches!(v.next, Next::Retry { delay, .. } if delay.is_zero()));
    }

    #[test]
    fn a_transient_failure_backs_off_and_a_5xx_or_no_answer_may_have_been_sent() {
        let v = judge(retry(Some(2), 500, false), message(2, SendClass::Service));
        assert_eq!(v.gate, Some(GateOutcome::Transient));
        match v.next {
            Next::Retry {
                delay,
                maybe_sent,
                in_doubt,
                ..
            } => {
                // 100 ms << 1, jittered to 75 % at 0.5.
                assert_eq!(delay, Duration::from_millis(150));
                assert!(maybe_sent);
                assert!(!in_doubt);
            }
            other => panic!("{other:?}"),
        }
        let v = judge(retry(Some(4), 400, false), message(1, SendClass::Service));
        assert!(matches!(
            v.next,
            Next::Retry {
                maybe_sent: false,
                ..
            }
        ));
    }

    #[test]
    fn no_answer_puts_a_message_in_doubt_but_not_a_read_receipt() {
        let v = judge(retry(None, 0, true), message(1, SendClass::Service));
        assert!(matches!(
            v.next,
            Next::Retry {
                in_doubt: true,
                maybe_sent: true,
                ..
            }
        ));
        let receipt = Attempt {
            number: 1,
            kind: OutboxKind::MarkRead,
            class: SendClass::Service,
        };
        let v = judge(retry(None, 0, true), receipt);
        assert!(matches!(
            v.next,
            Next::Retry {
                in_doubt: false,
                ..
            }
        ));
    }

    #[test]
    fn giving_up_on_transient_failures_keeps_the_units_they_may_have_used() {
        let v = judge(retry(Some(2), 500, false), message(3, SendClass::Service));
        match v.next {
            Next::Failed {
                code,
                detail,
                refund,
            } => {
                assert_eq!(code, Some(2));
                assert_eq!(detail, "gave up after 3 attempts: busy");
                assert!(!refund);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_credentials_error_pauses_the_account_and_keeps_the_message() {
        let v = judge(
            refused(190, PermanentAction::PauseAccount),
            message(1, SendClass::Service),
        );
        assert!(matches!(
            v.gate,
            Some(GateOutcome::Pause {
                code: Some(190),
                ..
            })
        ));
        assert_eq!(v.next, Next::Held);
        assert_eq!(v.refusal, Some(PermanentAction::PauseAccount));
    }

    #[test]
    fn a_halt_keeps_business_initiated_messages_and_fails_service_replies() {
        let halt = || refused(131048, PermanentAction::HaltBusinessInitiated);
        let v = judge(halt(), message(1, SendClass::Business));
        assert!(matches!(v.gate, Some(GateOutcome::Halt { .. })));
        assert_eq!(v.next, Next::Held);
        let v = judge(halt(), message(1, SendClass::Service));
        assert!(matches!(v.gate, Some(GateOutcome::Halt { .. })));
        assert!(matches!(v.next, Next::Failed { refund: true, .. }));
    }

    #[test]
    fn an_unreachable_recipient_is_remembered_and_the_message_failed_with_its_units_back() {
        let v = judge(
            refused(131026, PermanentAction::RecipientUnreachable),
            message(1, SendClass::Business),
        );
        assert_eq!(v.gate, Some(GateOutcome::Unreachable));
        assert!(matches!(
            v.next,
            Next::Failed {
                code: Some(131026),
                refund: true,
                ..
            }
        ));
        assert_eq!((v.result, v.code), ("failed", Some(131026)));
    }

    #[test]
    fn other_refusals_teach_the_gate_nothing() {
        let v = judge(
            refused(131047, PermanentAction::WindowClosed),
            message(1, SendClass::Service),
        );
        assert_eq!(v.gate, None);
        assert!(matches!(v.next, Next::Failed { refund: true, .. }));
    }
}
