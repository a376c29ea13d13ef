//! The outbox sender of one account: sends committed outbox rows to the Graph API.
//!
//! One message in flight per conversation (so replies keep their order), up to
//! `outbox.max_in_flight` conversations at once. Every attempt passes the account's SendGate
//! first ([`crate::sendgate`]): a conversation that must wait (pair rate, 131056) is parked
//! without holding up the others; service replies are tried before business-initiated
//! messages; account-wide waits (throughput, cool-off, daily cap) stop the queue until due. Retryable failures (429, 5xx, 130429,
//! timeouts) back off exponentially with jitter, never sooner than Retry-After; permanent ones
//! fail the row, write a dead letter and tell the conversation.
//!
//! After a crash, only a send that may have reached Meta is in doubt. A row is committed
//! `pending`; the sender marks it `sending` just before handing its request to the HTTP
//! client (the marks of concurrent sends share the writers' group commits). On restart a
//! `pending` row is sent at once, in its conversation's order; a `sending` row waits for a
//! status webhook echoing its id for `outbox.ambiguous_resend_after` counted from its send
//! (time this process was not answering webhooks does not count: Meta holds and redelivers
//! them), and is sent again if none came. Its conversation's later replies wait behind it,
//! so order holds and the silence is bounded by that window.
//!
//! # Where its parts are
//! `mod.rs` the handle ([`OutboxSender`]) and our callback data; `queues.rs` the per-account
//! queues; `run.rs` the sender's loop; `deliver.rs` one send and what its outcome means for
//! the row; `receipts.rs` the read receipts' lanes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{AccountSettings, Settings};
pub use crate::domain::backoff;
use crate::domain::{OutboxKind, OutboxState, UserKey, Wamid};
use crate::engine::Engine;
use crate::metrics::metrics;
use crate::sendgate::{
    apply_effects, AccountGate, BlockRequest, Decision, Outcome as GateOutcome, OutcomeEffects,
    Scope, SendClass, TierWrite,
};
use crate::store::OutboxRecord;
use crate::store::{GateWrite, OutboxUpdate};
use crate::telemetry::mask;
use crate::whatsapp::client::ReceiptConn;
use crate::whatsapp::graph_error::SendOutcome;
use crate::whatsapp::send::OutboundMessage;

mod deliver;
mod queues;
mod receipts;
mod run;
mod verdict;

use deliver::*;
use queues::*;
pub use receipts::token_for;
use receipts::*;
use run::*;
use verdict::*;

/// Prefix of the `biz_opaque_callback_data` we attach, so a status can name its outbox row.
pub const CALLBACK_PREFIX: &str = "parley:";

/// The `biz_opaque_callback_data` of outbox row `id` of conversation `user_key`. Meta echoes it
/// in the row's status webhooks, which then go to the writer that owns the row even when
/// their `recipient_id` is not the conversation's key (a number Meta normalised, a status
/// without one): one writer per outbox row, whatever Meta reports.
pub fn callback_data(id: i64, user_key: &str) -> String {
    format!("{CALLBACK_PREFIX}{id}:{user_key}")
}

/// What [`callback_data`] made: (outbox id, conversation key). A row sent before the key was
/// part of it gives only its id.
pub fn parse_callback(data: &str) -> Option<(i64, Option<&str>)> {
    let rest = data.strip_prefix(CALLBACK_PREFIX)?;
    let (id, user_key) = match rest.split_once(':') {
        Some((id, user_key)) if !user_key.is_empty() => (id, Some(user_key)),
        Some((id, _)) => (id, None),
        None => (rest, None),
    };
    Some((id.parse().ok()?, user_key))
}

enum Cmd {
    Enqueue(Vec<OutboxRecord>),
    /// (user, newest inbound wamid to mark read)
    MarkRead(UserKey, Wamid),
    Shutdown(oneshot::Sender<()>),
}

/// A message the sender gave up on for good (its row is `failed` and a dead letter kept),
/// for the conversation that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFailure {
    pub user_key: UserKey,
    pub outbox_id: i64,
    pub code: Option<i64>,
    pub detail: String,
    /// The message, when the sender has it (else the conversation reads it back).
    pub message: Option<OutboundMessage>,
}

/// Where the sender reports a [`SendFailure`]: handed in by whoever starts it (the account
/// actor routes it to the conversation), so the sender knows no actor.
pub type FailureReport = Arc<dyn Fn(SendFailure) + Send + Sync>;

/// Handle on an account's sender task.
#[derive(Clone)]
pub struct OutboxSender {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl OutboxSender {
    pub fn start(
        engine: Arc<Engine>,
        account: Arc<AccountSettings>,
        report: FailureReport,
        resume_through: i64,
    ) -> OutboxSender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, account, report, resume_through, rx));
        OutboxSender { tx }
    }

    /// Queue committed rows (in the order the conversation created them).
    pub fn enqueue(&self, records: Vec<OutboxRecord>) {
        metrics()
            .outbox_pending
            .fetch_add(records.len() as i64, Ordering::Relaxed);
        let _ = self.tx.send(Cmd::Enqueue(records));
    }

    /// Mark `user`'s messages read up to `wamid` (marking one read marks the earlier ones
    /// too, so a burst needs one receipt). Receipts are not stored: one lost to a crash costs
    /// a blue tick, never a message; and they do not wait behind the conversation's replies.
    pub fn mark_read(&self, user_key: &UserKey, wamid: Wamid) {
        let _ = self.tx.send(Cmd::MarkRead(user_key.clone(), wamid));
    }

    /// Stop launching sends; wait for the ones in flight (bounded by the request timeout).
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_callback_names_the_row_and_the_conversation_that_owns_it() {
        let data = callback_data(42, "6281234567890");
        assert_eq!(parse_callback(&data), Some((42, Some("6281234567890"))));
        assert_eq!(
            parse_callback("parley:42"),
            Some((42, None)),
            "sent before the key was added"
        );
        assert_eq!(parse_callback("parley:42:"), Some((42, None)));
        assert_eq!(parse_callback("parley:x:1"), None);
        assert_eq!(parse_callback("someone-else:42"), None);
    }

    #[test]
    fn a_burst_of_receipts_for_one_user_sends_the_newest_once_the_first_is_done() {
        let mut r = Receipts::default();
        r.push("u1".into(), "w1".into());
        r.push("u2".into(), "x1".into());
        assert_eq!(r.next(), Some(("u1".into(), "w1".into())));
        r.push("u1".into(), "w2".into());
        r.push("u1".into(), "w3".into());
        assert_eq!(r.next(), Some(("u2".into(), "x1".into())));
        assert_eq!(r.next(), None, "u1 has one in flight");
        r.finished("u1".into());
        assert_eq!(
            r.next(),
            Some(("u1".into(), "w3".into())),
            "only the newest"
        );
        r.finished("u1".into());
        r.finished("u2".into());
        assert_eq!(r.next(), None);
    }
}
