//! What a step's outcome asks of the store and of the actor, decided without I/O.
//!
//! The conversation actor is a thin shell: it loads the state, runs [`super::step`], hands
//! what `step` returned to [`plan`], commits the plan's [`StepCommit`] in one transaction,
//! then runs the effects. Everything between `step` and the commit is policy and lives
//! here, unit-tested: which effects become outbox rows, timers and session records, each
//! row's idempotency key (what makes a step that runs again insert nothing new), whether the
//! contact's row changes, and whether there is anything to commit at all.

use crate::domain::profile::ProfileField;
use std::time::Instant;

use crate::domain::{is_campaign_request, OutboxKind, SendClass};
use crate::hooks::EventType;
use crate::store::{ContactUpsert, NewHookEvent, NewOutboxRow, NewTimer, StepCommit, TurnClock};

use super::{ConversationEvent, ConversationState, Effect};

/// What started a step, with what only that kind of start carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    /// An inbox row. `batch`: the writer's batch that is still open with it (see
    /// `InboxDispatch::batch`); `arrived`: when this process received its webhook.
    Inbox {
        seq: i64,
        batch: Option<u64>,
        arrived: Option<Instant>,
    },
    /// A timer came due.
    Timer { id: i64 },
    /// The outcome of a call the conversation made: an HTTP node's, a media fetch's, or a
    /// model's (whose reply's send measures the turn: `answered`).
    CallOutcome { answered: Option<TurnClock> },
    /// The business acted on the conversation, or the outbox reported a send failed.
    Command,
}

impl Origin {
    /// The inbox row this step applies.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Origin::Inbox { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The timer this step consumes.
    pub fn timer(&self) -> Option<i64> {
        match self {
            Origin::Timer { id } => Some(*id),
            _ => None,
        }
    }

    pub fn batch(&self) -> Option<u64> {
        match self {
            Origin::Inbox { batch, .. } => *batch,
            _ => None,
        }
    }

    pub fn arrived(&self) -> Option<Instant> {
        match self {
            Origin::Inbox { arrived, .. } => *arrived,
            _ => None,
        }
    }

    pub fn answered(&self) -> Option<TurnClock> {
        match self {
            Origin::CallOutcome { answered } => *answered,
            _ => None,
        }
    }
}

/// A step's outcome, as [`plan`] reads it.
pub struct Outcome<'a> {
    pub account: &'a str,
    pub user: &'a str,
    /// The state before the step and after it.
    pub before: &'a ConversationState,
    pub after: &'a ConversationState,
    pub event: &'a ConversationEvent,
    pub effects: &'a [Effect],
    pub origin: Origin,
    /// The last inbox seq applied before this step.
    pub last_applied_seq: i64,
    pub now: i64,
    /// An opt-out change the inbound message's text asks for (true: out, false: back in), as
    /// the campaign settings read it.
    pub opt_out: Option<bool>,
}

/// What the actor does with a step's outcome.
#[derive(Debug)]
pub struct Plan {
    /// The one transaction of this step; `None` when nothing changed (a command refused by
    /// the window policy, say).
    pub commit: Option<StepCommit>,
    /// The newest inbound message to mark read, after the commit (receipts are cosmetic and
    /// not stored).
    pub receipt: Option<crate::domain::Wamid>,
    /// Refusals nobody hears of: a flow's or bot's message the window policy refused (a
    /// business's command hears its refusal in the answer to its request).
    pub unheard_refusals: Vec<String>,
}

/// Decide what a step's outcome commits and asks for.
pub fn plan(o: &Outcome<'_>) -> Result<Plan, serde_json::Error> {
    let (account, user, now) = (o.account, o.user, o.now);
    let origin = origin_key(o.event, now);
    let class = send_class(o.event, o.after, now);
    let mut outbox = Vec::new();
    let mut timers = Vec::new();
    let mut receipt = None;
    let mut unheard_refusals = Vec::new();
    let mut flow_records = Vec::new();
    let mut bot_records = Vec::new();
    let command = matches!(
        o.event,
        ConversationEvent::Outgoing { .. } | ConversationEvent::AgentReply { .. }
    );
    for (n, effect) in o.effects.iter().enumerate() {
        match effect {
            Effect::Send {
                message, reply_to, ..
            } => outbox.push(NewOutboxRow {
                idem_key: outbox_idem_key(account, user, o.event, &origin, n),
                kind: OutboxKind::Message,
                message_json: serde_json::to_string(message)?,
                reply_to: reply_to.clone(),
                source_seq: o.origin.seq(),
                class,
            }),
            Effect::MarkRead { wamid } => receipt = Some(wamid.clone()),
            Effect::StartTimer {
                name,
                due_at,
                payload,
            } => timers.push(NewTimer {
                idem_key: format!("{}{n}", step_key_prefix(account, user, &origin)),
                name: name.clone(),
                payload: payload.to_string(),
                due_at: *due_at,
            }),
            Effect::Refuse { reason } if !command => unheard_refusals.push(reason.clone()),
            Effect::Refuse { .. }
            | Effect::Held
            | Effect::Http(_)
            | Effect::BotCall(_)
            | Effect::FetchMedia(_)
            | Effect::Commerce(_) => {}
            Effect::FlowRecord(r) => flow_records.push(r.clone()),
            Effect::BotRecord(r) => bot_records.push(r.clone()),
        }
    }
    let unchanged = o.after == o.before
        && outbox.is_empty()
        && timers.is_empty()
        && flow_records.is_empty()
        && bot_records.is_empty()
        && o.origin.seq().is_none()
        && o.origin.timer().is_none();
    let mut hook_events = handoff_events(o, &origin);
    hook_events.extend(flow_events(o, &origin, &flow_records));
    let commit = if unchanged {
        None
    } else {
        let seq = o.origin.seq();
        Some(StepCommit {
            account: account.to_string().into(),
            user_key: user.to_string().into(),
            state_json: serde_json::to_string(o.after)?,
            last_inbound_at: o.after.last_inbound_at,
            last_applied_seq: o.last_applied_seq.max(seq.unwrap_or(0)),
            inbox_done: seq,
            prev_seq: o.last_applied_seq,
            timer_fired: o.origin.timer(),
            contact: contact_change(o)?,
            outbox,
            timers,
            flow_records,
            bot_records,
            hook_events,
            now,
            batch: o.origin.batch(),
        })
    };
    Ok(Plan {
        commit,
        receipt,
        unheard_refusals,
    })
}

/// The webhook events of a step: `conversation.handoff` when a human took the conversation,
/// `conversation.released` when it went back to the bot. Keyed by the step, so a step that
/// runs again writes none twice.
fn handoff_events(o: &Outcome<'_>, origin: &str) -> Vec<NewHookEvent> {
    let (was, is) = (&o.before.handoff, &o.after.handoff);
    let (event_type, data) = match (was, is) {
        (None, Some(h)) => (
            EventType::ConversationHandoff,
            serde_json::to_value(h).unwrap_or_default(),
        ),
        (Some(_), None) => (EventType::ConversationReleased, serde_json::json!({})),
        _ => return Vec::new(),
    };
    let event = |event_type: EventType, data: serde_json::Value| NewHookEvent {
        account: o.account.to_string(),
        user_key: Some(o.user.to_string()),
        event_type,
        data,
        dedup_key: format!(
            "{}{}",
            step_key_prefix(o.account, o.user, origin),
            event_type.as_str()
        ),
        at: o.now,
    };
    let mut out = vec![event(event_type, data)];
    if let Some(h) = is {
        if let Some(super::HandoffBy::Bot { bot }) = &h.by {
            out.push(event(
                EventType::BotHandoff,
                serde_json::json!({ "bot": bot, "reason": h.reason, "since": h.since }),
            ));
        }
    }
    out
}

/// The webhook events of the flow sessions a step ended: `flow.completed`, `flow.failed`,
/// `flow.abandoned`.
fn flow_events(
    o: &Outcome<'_>,
    origin: &str,
    records: &[crate::domain::FlowRecord],
) -> Vec<NewHookEvent> {
    records
        .iter()
        .filter_map(|r| {
            let event_type = match r.status {
                crate::domain::FlowRunStatus::Completed => EventType::FlowCompleted,
                crate::domain::FlowRunStatus::Failed => EventType::FlowFailed,
                crate::domain::FlowRunStatus::Abandoned => EventType::FlowAbandoned,
                _ => return None,
            };
            Some(NewHookEvent {
                account: o.account.to_string(),
                user_key: Some(o.user.to_string()),
                event_type,
                data: serde_json::json!({
                    "flow_id": r.flow_id,
                    "version": r.version,
                    "started_at": r.started_at,
                    "error": r.error,
                }),
                dedup_key: format!(
                    "{}{}:{}:{}",
                    step_key_prefix(o.account, o.user, origin),
                    event_type.as_str(),
                    r.flow_id,
                    r.started_at
                ),
                at: o.now,
            })
        })
        .collect()
}

/// The idem keys of a step's sends, as [`plan`] keys their rows. Asked for only when the
/// step's commit is reported failed: it may have landed all the same, and the next load
/// looks for these rows.
pub fn send_keys(
    account: &str,
    user: &str,
    event: &ConversationEvent,
    effects: &[Effect],
    now: i64,
) -> Vec<String> {
    let origin = origin_key(event, now);
    effects
        .iter()
        .enumerate()
        .filter(|(_, effect)| matches!(effect, Effect::Send { .. }))
        .map(|(n, _)| outbox_idem_key(account, user, event, &origin, n))
        .collect()
}

/// A message sent while the customer-service window is open is a service reply; anything
/// else is business-initiated (counted against the messaging tier, and sent after the
/// account's service replies). A campaign's template is business-initiated even inside the
/// window (only its free-form messages to open windows are service replies).
fn send_class(event: &ConversationEvent, after: &ConversationState, now: i64) -> SendClass {
    let campaign_template = matches!(event, ConversationEvent::Outgoing { request_id, message, .. }
        if is_campaign_request(request_id) && !message.is_free_form());
    if after.window_open(now) && !campaign_template {
        SendClass::Service
    } else {
        SendClass::Business
    }
}

/// The contact's row, written when something in it changes (a first message, a new profile
/// name, tags, an opt-out), not on every message: when the contact last wrote is the
/// conversation's `last_inbound_at`, already in the commit. Campaigns select contacts by tag
/// and skip those who opted out: both are mirrored into `contacts` with the step.
fn contact_change(o: &Outcome<'_>) -> Result<Option<ContactUpsert>, serde_json::Error> {
    let (was, is) = (&o.before.contact, &o.after.contact);
    let tags_changed = is.tags != was.tags;
    let inbound = matches!(o.event, ConversationEvent::Inbound { .. });
    let opted_out_at = if inbound {
        o.opt_out.map(|out| if out { o.now } else { 0 })
    } else {
        None
    };
    let details_changed = o.before.last_inbound_at.is_none()
        || was.wa_id != is.wa_id
        || was.user_id != is.user_id
        || was.profile_name != is.profile_name;
    let profile_changed = ProfileField::ALL
        .iter()
        .any(|f| was.fields.get(f.name()) != is.fields.get(f.name()));
    if !(inbound && details_changed || tags_changed || opted_out_at.is_some() || profile_changed) {
        return Ok(None);
    }
    Ok(Some(ContactUpsert {
        wa_id: is.wa_id.clone(),
        user_id: is.user_id.clone(),
        profile_name: is.profile_name.clone(),
        tags: tags_changed
            .then(|| serde_json::to_string(&is.tags))
            .transpose()?,
        opted_out_at,
        profile: profile_changed
            .then(|| ProfileField::ALL.map(|f| is.fields.get(f.name()).cloned())),
    }))
}

/// What caused a step, as its rows' idem keys name it.
pub fn origin_key(event: &ConversationEvent, now: i64) -> String {
    match event {
        ConversationEvent::Inbound { seq, .. } => format!("in{seq}"),
        ConversationEvent::TimerFired { timer_id, .. } => format!("t{timer_id}"),
        ConversationEvent::Outgoing { request_id, .. }
        | ConversationEvent::AgentReply { request_id, .. } => format!("out{request_id}"),
        ConversationEvent::SendFailed { outbox_id, .. } => format!("f{outbox_id}"),
        ConversationEvent::Handoff { .. } | ConversationEvent::Release { .. } => {
            format!("c{now}")
        }
        ConversationEvent::ContactEdit { .. } => format!("e{now}"),
        ConversationEvent::Forget => format!("f{now}"),
        ConversationEvent::HttpResult(o) => format!("h{}", o.id),
        ConversationEvent::BotResult(a) => format!("b{}", a.id),
        ConversationEvent::MediaReady(r) => format!("m{}", r.media_id),
        ConversationEvent::CommerceResult(r) => format!("k{}", r.id),
        ConversationEvent::PaymentUpdate {
            payment_id, status, ..
        } => {
            format!("pay{payment_id}.{status}")
        }
    }
}

/// An outbox row's idempotency key (unique in the store: a step that runs again inserts
/// nothing new). A reply to an inbound message is keyed by that message's inbox seq alone,
/// `in{seq:020}:{n}`: seqs are unique and rise with arrival, so the replies a commit inserts
/// sit together at the end of the unique index instead of one page each at their contact's
/// place (~5 KB fewer written per message on the shop workload); the admin view finds them
/// along the conversation's inbound chain ([`crate::store::inbound_reply_key_range`]). Every
/// other origin keeps `{account}:{user}:{origin}:{n}`, read per conversation as a key range.
pub fn outbox_idem_key(
    account: &str,
    user: &str,
    event: &ConversationEvent,
    origin: &str,
    n: usize,
) -> String {
    match event {
        ConversationEvent::Inbound { seq, .. } => crate::store::inbound_reply_key(*seq, n),
        _ => format!("{}{n}", step_key_prefix(account, user, origin)),
    }
}

/// What the idem keys of a step's rows start with, for every origin but an inbound message:
/// `{account}:{user}:{origin}:` (the effect's place follows).
pub fn step_key_prefix(account: &str, user: &str, origin: &str) -> String {
    format!("{account}:{user}:{origin}:")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conversation::{step, StepContext, WindowPolicy};
    use crate::whatsapp::event::{InboundMessage, MessageContent};
    use crate::whatsapp::send::OutboundMessage;

    const NOW: i64 = 2_000_000;

    fn inbound(seq: i64, body: &str) -> ConversationEvent {
        ConversationEvent::Inbound {
            seq,
            message: Arc::new(InboundMessage {
                phone_number_id: "1".into(),
                display_phone_number: String::new(),
                from: Some("6281234567890".into()),
                user_id: None,
                profile_name: Some("Budi".into()),
                wamid: format!("wamid.{seq}"),
                timestamp: NOW / 1000,
                context: None,
                referral: None,
                errors: vec![],
                content: MessageContent::Text { body: body.into() },
            }),
        }
    }

    fn ctx() -> StepContext {
        StepContext {
            now_ms: NOW,
            mark_read: true,
            handoff_timeout_ms: 3_600_000,
            default_bot: None,
            fetch_media: false,
            transcribe: false,
            outside_window: WindowPolicy::Fail,
            hold_ms: 7 * 24 * 3_600_000,
        }
    }

    fn outgoing(request_id: &str, message: OutboundMessage) -> ConversationEvent {
        ConversationEvent::Outgoing {
            request_id: request_id.into(),
            message,
            reply_to: None,
            policy: None,
        }
    }

    fn text(body: &str) -> OutboundMessage {
        OutboundMessage::Text {
            body: body.into(),
            preview_url: false,
        }
    }

    /// Runs `step` and plans its outcome, as the actor does.
    fn run(
        before: &ConversationState,
        event: &ConversationEvent,
        origin: Origin,
        opt_out: Option<bool>,
    ) -> (ConversationState, Plan) {
        let (after, effects) = step(before.clone(), event, &ctx());
        let plan = plan(&Outcome {
            account: "acct",
            user: "6281234567890",
            before,
            after: &after,
            event,
            effects: &effects,
            origin,
            last_applied_seq: 4,
            now: NOW,
            opt_out,
        })
        .unwrap();
        (after, plan)
    }

    /// The keys the actor looks for when the step's commit is reported failed.
    fn keys(before: &ConversationState, event: &ConversationEvent) -> Vec<String> {
        let (_, effects) = step(before.clone(), event, &ctx());
        send_keys("acct", "6281234567890", event, &effects, NOW)
    }

    fn inbox(seq: i64) -> Origin {
        Origin::Inbox {
            seq,
            batch: Some(9),
            arrived: None,
        }
    }

    #[test]
    fn a_handoff_and_a_release_are_webhook_events_keyed_by_their_step() {
        let handoff = ConversationEvent::Handoff {
            reason: "vip".into(),
        };
        let (held, plan) = run(
            &ConversationState::default(),
            &handoff,
            Origin::Command,
            None,
        );
        let events = plan.commit.expect("the state changed").hook_events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::ConversationHandoff);
        assert_eq!(events[0].data["reason"], "vip");
        assert_eq!(events[0].user_key.as_deref(), Some("6281234567890"));
        // The same step again (a retry) makes the same key: one event.
        let (_, again) = run(
            &ConversationState::default(),
            &handoff,
            Origin::Command,
            None,
        );
        assert_eq!(
            again.commit.unwrap().hook_events[0].dedup_key,
            events[0].dedup_key
        );
        let release = ConversationEvent::Release {
            reason: "done".into(),
        };
        let (_, plan) = run(&held, &release, Origin::Command, None);
        let events = plan.commit.unwrap().hook_events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::ConversationReleased);
        // A message while nothing changes hands makes none.
        let (_, plan) = run(&held, &inbound(8, "hello?"), inbox(8), None);
        assert!(plan.commit.unwrap().hook_events.is_empty());
    }

    #[test]
    fn an_ended_flow_session_is_a_webhook_event_a_running_one_is_not() {
        use crate::domain::{FlowRecord, FlowRunStatus};
        let record = |status, error: Option<&str>| {
            Effect::FlowRecord(FlowRecord {
                flow_id: "shop".into(),
                version: "v1".into(),
                started_at: 5,
                status,
                node: None,
                error: error.map(str::to_string),
            })
        };
        let state = ConversationState::default();
        let event = inbound(7, "hi");
        let effects = [
            record(FlowRunStatus::Running, None),
            record(FlowRunStatus::Completed, None),
            record(FlowRunStatus::Failed, Some("runaway loop")),
            record(FlowRunStatus::Abandoned, None),
        ];
        let plan = plan(&Outcome {
            account: "acct",
            user: "6281234567890",
            before: &state,
            after: &state,
            event: &event,
            effects: &effects,
            origin: inbox(7),
            last_applied_seq: 4,
            now: NOW,
            opt_out: None,
        })
        .unwrap();
        let events = plan.commit.unwrap().hook_events;
        let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [
                EventType::FlowCompleted,
                EventType::FlowFailed,
                EventType::FlowAbandoned
            ]
        );
        assert_eq!(events[1].data["error"], "runaway loop");
        assert_eq!(events[1].data["flow_id"], "shop");
        assert_ne!(events[0].dedup_key, events[1].dedup_key);
    }

    #[test]
    fn an_inbound_message_commits_its_inbox_row_in_the_chain_and_its_contact_and_marks_read() {
        let (_, plan) = run(
            &ConversationState::default(),
            &inbound(7, "hi"),
            inbox(7),
            None,
        );
        let commit = plan.commit.expect("an inbox row is always committed");
        assert_eq!(commit.inbox_done, Some(7));
        assert_eq!((commit.prev_seq, commit.last_applied_seq), (4, 7));
        assert_eq!(commit.batch, Some(9));
        assert_eq!(commit.timer_fired, None);
        let contact = commit.contact.expect("a first message writes the contact");
        assert_eq!(contact.profile_name.as_deref(), Some("Budi"));
        assert_eq!(contact.opted_out_at, None);
        assert_eq!(plan.receipt.as_deref(), Some("wamid.7"));
    }

    #[test]
    fn a_known_contact_writing_again_does_not_rewrite_its_row() {
        let (known, _) = run(
            &ConversationState::default(),
            &inbound(7, "hi"),
            inbox(7),
            None,
        );
        let (_, plan) = run(&known, &inbound(8, "again"), inbox(8), None);
        assert!(plan.commit.unwrap().contact.is_none());
    }

    #[test]
    fn an_opt_out_is_mirrored_into_the_contact_with_its_time_and_an_opt_in_clears_it() {
        let (known, _) = run(
            &ConversationState::default(),
            &inbound(7, "hi"),
            inbox(7),
            None,
        );
        let (_, out) = run(&known, &inbound(8, "STOP"), inbox(8), Some(true));
        assert_eq!(out.commit.unwrap().contact.unwrap().opted_out_at, Some(NOW));
        let (_, back) = run(&known, &inbound(9, "START"), inbox(9), Some(false));
        assert_eq!(back.commit.unwrap().contact.unwrap().opted_out_at, Some(0));
    }

    #[test]
    fn a_reply_inside_the_window_is_a_service_send_keyed_by_the_commands_request() {
        let (open, _) = run(
            &ConversationState::default(),
            &inbound(7, "hi"),
            inbox(7),
            None,
        );
        let (_, plan) = run(
            &open,
            &outgoing("req-1", text("hello")),
            Origin::Command,
            None,
        );
        let commit = plan.commit.unwrap();
        assert_eq!(commit.outbox.len(), 1);
        let row = &commit.outbox[0];
        assert_eq!(row.class, SendClass::Service);
        assert_eq!(row.idem_key, "acct:6281234567890:outreq-1:0");
        assert_eq!(
            keys(&open, &outgoing("req-1", text("hello"))),
            vec![row.idem_key.clone()]
        );
        assert_eq!(row.source_seq, None);
        assert_eq!(commit.inbox_done, None);
        // A command is not an inbox row: the chain stays where it was.
        assert_eq!(commit.last_applied_seq, 4);
    }

    #[test]
    fn a_campaign_template_is_business_initiated_even_inside_the_window() {
        let (open, _) = run(
            &ConversationState::default(),
            &inbound(7, "hi"),
            inbox(7),
            None,
        );
        let template = OutboundMessage::Template {
            name: "promo".into(),
            language: "en_US".into(),
            components: vec![],
        };
        let request = crate::domain::request_id(3, 5, 0, false);
        let (_, plan) = run(&open, &outgoing(&request, template), Origin::Command, None);
        assert_eq!(plan.commit.unwrap().outbox[0].class, SendClass::Business);
    }

    #[test]
    fn a_refused_command_queues_nothing_and_its_refusal_is_answered_not_logged() {
        // Free-form outside the window with no policy: refused, and the business hears it
        // in its answer, not as an unheard refusal.
        let (_, plan) = run(
            &ConversationState::default(),
            &outgoing("req-2", text("hello")),
            Origin::Command,
            None,
        );
        assert!(plan.commit.is_none_or(|c| c.outbox.is_empty()));
        assert!(plan.unheard_refusals.is_empty());
        assert!(keys(
            &ConversationState::default(),
            &outgoing("req-2", text("hello"))
        )
        .is_empty());
    }

    #[test]
    fn a_step_that_changes_nothing_commits_nothing() {
        // Releasing a conversation no human holds.
        let release = ConversationEvent::Release {
            reason: "done".into(),
        };
        let (_, plan) = run(
            &ConversationState::default(),
            &release,
            Origin::Command,
            None,
        );
        assert!(plan.commit.is_none());
    }

    #[test]
    fn a_timer_step_consumes_its_timer_even_when_nothing_else_changes() {
        let event = ConversationEvent::TimerFired {
            timer_id: 12,
            name: "nobody:listens".into(),
            payload: serde_json::Value::Null,
        };
        let (_, plan) = run(
            &ConversationState::default(),
            &event,
            Origin::Timer { id: 12 },
            None,
        );
        let commit = plan.commit.expect("the timer is consumed");
        assert_eq!(commit.timer_fired, Some(12));
        assert_eq!(commit.inbox_done, None);
    }

    #[test]
    fn keys_name_what_caused_the_step() {
        assert_eq!(
            outbox_idem_key("a", "u", &inbound(42, "x"), "in42", 1),
            crate::store::inbound_reply_key(42, 1)
        );
        let release = ConversationEvent::Release {
            reason: "done".into(),
        };
        assert_eq!(origin_key(&release, 77), "c77");
        assert_eq!(
            outbox_idem_key("a", "u", &release, &origin_key(&release, 77), 0),
            "a:u:c77:0"
        );
    }
}
