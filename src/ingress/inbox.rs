//! A signed webhook's events as inbox rows, and what must follow their commit, decided
//! without I/O: [`map`] turns the typed events into rows (messages of configured accounts
//! `pending` for their conversation, statuses applied in the same transaction, the rest
//! recorded `done`, anything for an unknown phone_number_id kept `unrouted`), and
//! [`Inbox::after_commit`] says, from which rows were new, what the send gates and the
//! conversations must hear. The handler in `webhook.rs` reads, verifies, commits and answers.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::conversation::WINDOW_CLOSED_CODE;
use crate::domain::{InboxKind, InboxState};
use crate::outbox::{parse_callback, SendFailure};
use crate::store::NewInboxRow;
use crate::store::StatusApply;
use crate::whatsapp::event::{AccountEvent, WebhookEvent};

/// A committed event the send gates must hear about.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum GateSignal {
    Account(AccountEvent),
    SendError {
        account: String,
        user_key: Option<String>,
        code: i64,
    },
}

/// The rows of one webhook, with what follows their commit.
#[derive(Debug)]
pub(super) struct Inbox {
    pub(super) rows: Vec<NewInboxRow>,
    /// By row index: what the send gates hear of once the row is committed as new.
    signals: Vec<(usize, GateSignal)>,
    /// By row index: a `failed` status for one of our messages (its account, and what its
    /// conversation hears).
    failures: Vec<(usize, String, SendFailure)>,
    /// Events for a phone_number_id this daemon does not serve.
    pub(super) unknown_accounts: u64,
}

/// What follows a commit: for the rows that were new, not for redelivered ones.
#[derive(Debug, Default, PartialEq)]
pub(super) struct AfterCommit {
    pub(super) signals: Vec<GateSignal>,
    /// (account, failure): Meta says one of our messages failed; its conversation hears of
    /// it as of a send the API refused (131047: the window is closed, and the message goes
    /// through the window policy).
    pub(super) failures: Vec<(String, SendFailure)>,
}

impl Inbox {
    /// `seqs[i]`: the seq row `i` was committed at, `None` if it was there already.
    pub(super) fn after_commit(self, seqs: &[Option<i64>]) -> AfterCommit {
        let new = |i: &usize| matches!(seqs.get(*i), Some(Some(_)));
        AfterCommit {
            signals: self
                .signals
                .into_iter()
                .filter(|(i, _)| new(i))
                .map(|(_, s)| s)
                .collect(),
            failures: self
                .failures
                .into_iter()
                .filter(|(i, ..)| new(i))
                .map(|(_, account, f)| (account, f))
                .collect(),
        }
    }
}

/// Turn typed events into inbox rows. `known`: whether a phone_number_id is configured here.
pub(super) fn map(
    events: Vec<WebhookEvent>,
    known: impl Fn(&str) -> bool,
    received_at: i64,
    arrived: Instant,
) -> Inbox {
    let mut inbox = Inbox {
        rows: Vec::with_capacity(events.len()),
        signals: Vec::new(),
        failures: Vec::new(),
        unknown_accounts: 0,
    };
    for event in events {
        let payload = match serde_json::to_string(&event) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "Could not encode an event; skipped.");
                continue;
            }
        };
        let index = inbox.rows.len();
        let row = match event {
            WebhookEvent::Message(m) => {
                let routed = known(&m.phone_number_id);
                inbox.unknown_accounts += u64::from(!routed);
                let user_key = m.user_key().map(str::to_string);
                let state = match (routed, &user_key) {
                    (false, _) => InboxState::Unrouted,
                    (true, None) => InboxState::Done,
                    (true, Some(_)) => InboxState::Pending,
                };
                NewInboxRow {
                    account: m.phone_number_id.clone().into(),
                    user_key: user_key.map(Into::into),
                    kind: InboxKind::Message,
                    dedup_key: format!("m:{}", m.wamid),
                    wamid: Some(m.wamid.clone().into()),
                    payload,
                    received_at,
                    state,
                    status: None,
                    dispatch: Some(Arc::new(m)),
                    arrived: Some(arrived),
                }
            }
            WebhookEvent::Status(s) => {
                let routed = known(&s.phone_number_id);
                inbox.unknown_accounts += u64::from(!routed);
                let error = s.errors.first();
                let callback = s
                    .biz_opaque_callback_data
                    .as_deref()
                    .and_then(parse_callback);
                let status = StatusApply {
                    status: s.status.as_str().to_string(),
                    rank: s.status.rank(),
                    at_ms: if s.timestamp > 0 {
                        s.timestamp * 1000
                    } else {
                        received_at
                    },
                    outbox_id: callback.map(|(id, _)| id),
                    error_code: error.map(|e| e.code),
                    error_detail: error.map(|e| {
                        e.details
                            .clone()
                            .or_else(|| e.message.clone())
                            .or_else(|| e.title.clone())
                            .unwrap_or_default()
                    }),
                };
                // The conversation that sent it (its writer owns the row), else whom Meta
                // names.
                let user_key = callback
                    .and_then(|(_, user_key)| user_key)
                    .map(str::to_string)
                    .or_else(|| s.recipient_id.clone());
                if routed {
                    inbox.status_follow_ups(index, &s.phone_number_id, &user_key, &status);
                }
                NewInboxRow {
                    account: s.phone_number_id.clone().into(),
                    user_key: user_key.map(Into::into),
                    kind: InboxKind::Status,
                    dedup_key: format!("s:{}:{}", s.wamid, s.status.as_str()),
                    wamid: Some(s.wamid.clone().into()),
                    payload,
                    received_at,
                    state: if routed {
                        InboxState::Done
                    } else {
                        InboxState::Unrouted
                    },
                    status: Some(status),
                    dispatch: None,
                    arrived: None,
                }
            }
            WebhookEvent::ChangeError(e) => {
                tracing::warn!(codes = ?e.errors.iter().map(|e| e.code).collect::<Vec<_>>(), "Meta reported errors for an account.");
                let account = e.phone_number_id.clone().unwrap_or_default();
                recorded(account, InboxKind::ChangeError, "e", payload, received_at)
            }
            WebhookEvent::AccountEvent(a) => {
                tracing::info!(field = %a.field, waba = %a.waba_id, "Account event received.");
                let account = a
                    .phone_number_id
                    .clone()
                    .unwrap_or_else(|| a.waba_id.clone());
                let row = recorded(account, InboxKind::AccountEvent, "a", payload, received_at);
                inbox.signals.push((index, GateSignal::Account(a)));
                row
            }
        };
        inbox.rows.push(row);
    }
    inbox
}

impl Inbox {
    /// A routed status that reports an error: the send gates hear of the codes they act on
    /// (and of 131047), and a `failed` one's conversation hears its message failed.
    fn status_follow_ups(
        &mut self,
        index: usize,
        account: &str,
        user_key: &Option<String>,
        status: &StatusApply,
    ) {
        if let Some(code) = status.error_code {
            if code == WINDOW_CLOSED_CODE || crate::sendgate::outcome_for_code(code, "").is_some() {
                self.signals.push((
                    index,
                    GateSignal::SendError {
                        account: account.to_string(),
                        user_key: user_key.clone(),
                        code,
                    },
                ));
            }
        }
        if status.status != "failed" {
            return;
        }
        if let (Some(user), Some(outbox_id)) = (user_key, status.outbox_id) {
            self.failures.push((
                index,
                account.to_string(),
                SendFailure {
                    user_key: user.clone().into(),
                    outbox_id,
                    code: status.error_code,
                    detail: status.failure(),
                    message: None,
                },
            ));
        }
    }
}

/// An event about an account rather than a conversation, recorded `done` once: keyed by a
/// hash of its payload under `prefix`.
fn recorded(
    account: String,
    kind: InboxKind,
    prefix: &str,
    payload: String,
    received_at: i64,
) -> NewInboxRow {
    NewInboxRow {
        account: account.into(),
        user_key: None,
        kind,
        dedup_key: format!("{prefix}:{}", short_hash(&payload)),
        wamid: None,
        payload,
        received_at,
        state: InboxState::Done,
        status: None,
        dispatch: None,
        arrived: None,
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::webhook::parse_webhook;

    const OURS: &str = "106540352242922";

    fn events(value: serde_json::Value, field: &str) -> Vec<WebhookEvent> {
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}]
        });
        parse_webhook(body.to_string().as_bytes()).unwrap().events
    }

    fn message(pnid: &str, wamid: &str) -> Vec<WebhookEvent> {
        events(
            serde_json::json!({
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
                "contacts": [{"profile": {"name": "Budi"}, "wa_id": "6281234567890"}],
                "messages": [{"from": "6281234567890", "id": wamid, "timestamp": "1739321024",
                              "type": "text", "text": {"body": "hi"}}]
            }),
            "messages",
        )
    }

    fn status(status: &str, callback: Option<&str>, code: Option<i64>) -> Vec<WebhookEvent> {
        let mut s = serde_json::json!({"id": "wamid.OUT", "status": status,
            "timestamp": "1739321030", "recipient_id": "6281234567890"});
        if let Some(cb) = callback {
            s["biz_opaque_callback_data"] = cb.into();
        }
        if let Some(code) = code {
            s["errors"] = serde_json::json!([{"code": code, "title": "refused"}]);
        }
        events(
            serde_json::json!({
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": OURS},
                "statuses": [s]
            }),
            "messages",
        )
    }

    fn ours(pnid: &str) -> bool {
        pnid == OURS
    }

    #[test]
    fn a_message_for_a_served_number_waits_for_its_conversation_and_is_handed_over() {
        let inbox = map(message(OURS, "wamid.IN"), ours, 5_000, Instant::now());
        let row = &inbox.rows[0];
        assert_eq!(
            (row.kind, row.state),
            (InboxKind::Message, InboxState::Pending)
        );
        assert_eq!(row.user_key.as_deref(), Some("6281234567890"));
        assert_eq!(row.dedup_key, "m:wamid.IN");
        assert_eq!(row.received_at, 5_000);
        assert!(row.dispatch.is_some());
        assert_eq!(inbox.unknown_accounts, 0);
    }

    #[test]
    fn a_message_for_another_number_is_kept_unrouted_and_counted() {
        let inbox = map(message("999", "wamid.IN"), ours, 5_000, Instant::now());
        assert_eq!(inbox.rows[0].state, InboxState::Unrouted);
        assert_eq!(inbox.unknown_accounts, 1);
    }

    #[test]
    fn a_status_goes_to_the_conversation_our_callback_names() {
        let cb = crate::outbox::callback_data(42, "US.1");
        let inbox = map(
            status("delivered", Some(&cb), None),
            ours,
            5_000,
            Instant::now(),
        );
        let row = &inbox.rows[0];
        assert_eq!((row.kind, row.state), (InboxKind::Status, InboxState::Done));
        assert_eq!(row.user_key.as_deref(), Some("US.1"));
        assert_eq!(row.dedup_key, "s:wamid.OUT:delivered");
        let applied = row.status.as_ref().unwrap();
        assert_eq!(
            (applied.outbox_id, applied.at_ms),
            (Some(42), 1_739_321_030_000)
        );
        assert_eq!(inbox.after_commit(&[Some(1)]), AfterCommit::default());
    }

    #[test]
    fn a_failed_status_reaches_its_conversation_and_the_gate_once_only_when_new() {
        let cb = crate::outbox::callback_data(42, "6281234567890");
        let failed = || status("failed", Some(&cb), Some(131047));
        let after = map(failed(), ours, 5_000, Instant::now()).after_commit(&[Some(7)]);
        assert_eq!(
            after.signals,
            vec![GateSignal::SendError {
                account: OURS.into(),
                user_key: Some("6281234567890".into()),
                code: 131047,
            }]
        );
        assert_eq!(after.failures.len(), 1);
        let (account, failure) = &after.failures[0];
        assert_eq!(account, OURS);
        assert_eq!((failure.outbox_id, failure.code), (42, Some(131047)));
        // Redelivered: the row was there already, nobody hears of it again.
        let again = map(failed(), ours, 5_000, Instant::now()).after_commit(&[None]);
        assert_eq!(again, AfterCommit::default());
    }

    #[test]
    fn an_error_code_the_gate_does_not_act_on_is_not_signalled() {
        let after = map(
            status("failed", None, Some(131000)),
            ours,
            0,
            Instant::now(),
        )
        .after_commit(&[Some(1)]);
        assert!(after.signals.is_empty());
        // No callback of ours: no outbox row to fail.
        assert!(after.failures.is_empty());
    }

    #[test]
    fn an_account_event_reaches_the_gate_typed_without_reading_its_payload_back() {
        let evs = events(
            serde_json::json!({"display_phone_number": "15550783881", "event": "FLAGGED",
                               "current_limit": "TIER_1K"}),
            "phone_number_quality_update",
        );
        let inbox = map(evs, ours, 0, Instant::now());
        assert_eq!(inbox.rows[0].kind, InboxKind::AccountEvent);
        assert!(inbox.rows[0].dedup_key.starts_with("a:"));
        let after = inbox.after_commit(&[Some(3)]);
        assert!(matches!(
            &after.signals[..],
            [GateSignal::Account(a)] if a.field == "phone_number_quality_update"
        ));
    }
}
