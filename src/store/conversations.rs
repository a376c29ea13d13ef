//! Conversations and contacts: each conversation's state and the head of its applied
//! history, the contact row steps mirror, and the admin view of a conversation's messages.

use serde::Serialize;
use sqlx::Row;

use super::exec::{exec_rows, SyncTx};
use super::sql::{typed_values_list, values_list, Val};
use super::*;
use crate::domain::{AccountId, ConversationKey, UserKey, WaId, Wamid};

/// A conversation as stored.
#[derive(Debug, Clone)]
pub struct StoredConversation {
    pub state_json: String,
    pub last_inbound_at: Option<i64>,
    pub last_applied_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub direction: String,
    pub id: i64,
    pub wamid: Option<Wamid>,
    pub kind: String,
    pub content: serde_json::Value,
    pub at: i64,
    /// Outbound only: pending | sending | sent | failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Outbound only: Meta's delivery status (sent < delivered < read, failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// Outbound only: every status webhook received, in arrival order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<StatusView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub status: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContactView {
    pub wa_id: Option<WaId>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone)]
pub struct ContactUpsert {
    pub wa_id: Option<WaId>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    /// The contact's tags as a JSON array (None: unchanged), so campaigns can select by tag.
    pub tags: Option<String>,
    /// Some(at): opted out of campaigns at `at`; Some(0): opted back in; None: unchanged.
    pub opted_out_at: Option<i64>,
    /// The profile fields (`domain::profile::ProfileField::ALL`'s order) when one changed:
    /// each as set ("" when cleared), None where never set; None: unchanged.
    pub profile: Option<[Option<String>; 7]>,
}

/// Everything one conversation step changes, committed atomically.
#[derive(Debug, Clone)]
pub struct StepCommit {
    pub account: AccountId,
    pub user_key: UserKey,
    pub state_json: String,
    pub last_inbound_at: Option<i64>,
    pub last_applied_seq: i64,
    /// The inbox row this step applied.
    pub inbox_done: Option<i64>,
    /// The conversation's message applied before it (0: none): the applied messages of a
    /// conversation form a chain from `conversations.last_applied_seq` back through
    /// `inbox.prev_seq`, its history, so the inbox needs no index at each conversation's
    /// place (a page written per message).
    pub prev_seq: i64,
    /// The timer this step consumed.
    pub timer_fired: Option<i64>,
    pub contact: Option<ContactUpsert>,
    pub outbox: Vec<NewOutboxRow>,
    pub timers: Vec<NewTimer>,
    /// Flow sessions this step moved.
    pub flow_records: Vec<crate::domain::FlowRecord>,
    pub bot_records: Vec<crate::domain::BotSummary>,
    /// Webhook events of this step (a handoff, a release), written if someone wants them.
    pub hook_events: Vec<super::NewHookEvent>,
    pub now: i64,
    /// The still-open batch whose inbox row this step applies (see [`InboxDispatch::batch`]).
    pub batch: Option<u64>,
}

impl Store {
    pub async fn load_conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<StoredConversation>, StoreError> {
        let (account, user_key) = (key.account.as_str(), key.user.as_str());
        let rows = self
            .fetch(
                "SELECT state, last_inbound_at, last_applied_seq FROM conversations WHERE account = $1 AND user_key = $2",
                vec![account.into(), user_key.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok(StoredConversation {
                    state_json: r.try_get("state")?,
                    last_inbound_at: r.try_get("last_inbound_at")?,
                    last_applied_seq: r.try_get("last_applied_seq")?,
                })
            })
            .transpose()
    }

    pub async fn contact(&self, key: &ConversationKey) -> Result<Option<ContactView>, StoreError> {
        let (account, user_key) = (key.account.as_str(), key.user.as_str());
        let rows = self
            .fetch(
                // The contact row changes with its details only; when they last wrote is
                // the conversation's last inbound time (the message's own timestamp).
                "SELECT c.wa_id, c.user_id, c.profile_name, c.first_seen_at, \
                 COALESCE(v.last_inbound_at, c.last_seen_at) AS last_seen_at \
                 FROM contacts c LEFT JOIN conversations v ON v.account = c.account AND v.user_key = c.user_key \
                 WHERE c.account = $1 AND c.user_key = $2",
                vec![account.into(), user_key.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok(ContactView {
                    wa_id: r.try_get::<Option<String>, _>("wa_id")?.map(Into::into),
                    user_id: r.try_get("user_id")?,
                    profile_name: r.try_get("profile_name")?,
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .transpose()
    }

    /// The last `limit` messages of a conversation, both directions, oldest first, each
    /// outbound one with its status timeline.
    pub async fn conversation_messages(
        &self,
        key: &ConversationKey,
        limit: i64,
    ) -> Result<Vec<MessageView>, StoreError> {
        let (account, user_key) = (key.account.as_str(), key.user.as_str());
        let inbound = self
            .fetch(
                // Applied messages along the conversation's chain (newest first, from the
                // conversation row), then those not applied yet.
                "WITH RECURSIVE chain(seq, n) AS ( \
                   SELECT last_applied_seq, 1 FROM conversations \
                    WHERE account = $1 AND user_key = $2 AND last_applied_seq > 0 \
                   UNION ALL \
                   SELECT i.prev_seq, chain.n + 1 FROM chain JOIN inbox i ON i.seq = chain.seq \
                    WHERE i.prev_seq > 0 AND chain.n < $3 \
                 ) \
                 SELECT i.seq, i.wamid, i.payload, i.received_at FROM chain JOIN inbox i ON i.seq = chain.seq \
                  WHERE i.account = $1 AND i.user_key = $2 AND i.kind = 'message' \
                 UNION ALL \
                 SELECT seq, wamid, payload, received_at FROM inbox \
                  WHERE account = $1 AND user_key = $2 AND state = 'pending' AND kind = 'message' \
                 ORDER BY seq DESC LIMIT $3",
                vec![account.into(), user_key.into(), Val::I(limit)],
            )
            .await?;
        let outbound = self
            .fetch(
                "SELECT id, kind, wamid, message, state, status, error_code, error_detail, created_at FROM outbox \
                 WHERE idem_key >= $1 AND idem_key < $2 AND account || '' = $3 AND user_key || '' = $4 ORDER BY id DESC LIMIT $5",
                {
                    let (from, to) = idem_key_range(format!("{account}:{user_key}:"));
                    vec![from.into(), to.into(), account.into(), user_key.into(), Val::I(limit)]
                },
            )
            .await?;
        // Replies to inbound messages are keyed by the message's seq (not by conversation):
        // those of the inbound rows above, through the same unique index.
        let seqs = inbound
            .iter()
            .map(|r| r.try_get::<i64, _>("seq"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut outbound = outbound;
        if !seqs.is_empty() {
            let mut vals: Vec<Val> = Vec::with_capacity(seqs.len() * 2 + 2);
            for seq in &seqs {
                let (from, to) = inbound_reply_key_range(*seq);
                vals.extend([from.into(), to.into()]);
            }
            let n = vals.len();
            vals.extend([account.into(), user_key.into()]);
            let replies = self
                .fetch(
                    &format!(
                        "SELECT o.id, o.kind, o.wamid, o.message, o.state, o.status, o.error_code, o.error_detail, o.created_at \
                         FROM (VALUES {}) AS v JOIN outbox o ON o.idem_key >= v.column1 AND o.idem_key < v.column2 \
                         WHERE o.account || '' = ${} AND o.user_key || '' = ${}",
                        typed_values_list(seqs.len(), &["TEXT", "TEXT"]),
                        n + 1,
                        n + 2
                    ),
                    vals,
                )
                .await?;
            outbound.extend(replies);
        }
        let mut out = Vec::with_capacity(inbound.len() + outbound.len());
        for r in inbound {
            let payload: String = r.try_get("payload")?;
            let content: serde_json::Value =
                serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
            out.push(MessageView {
                direction: "in".into(),
                id: r.try_get("seq")?,
                wamid: r.try_get::<Option<String>, _>("wamid")?.map(Into::into),
                kind: content
                    .pointer("/content/type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("message")
                    .to_string(),
                content,
                at: r.try_get("received_at")?,
                state: None,
                status: None,
                error_code: None,
                error_detail: None,
                timeline: Vec::new(),
            });
        }
        for r in outbound {
            let wamid: Option<String> = r.try_get("wamid")?;
            let mut timeline = Vec::new();
            if let Some(w) = &wamid {
                for s in self
                    .fetch(
                        "SELECT status, received_at FROM inbox WHERE account = $1 AND kind = 'status' AND wamid = $2 ORDER BY seq",
                        vec![account.into(), w.as_str().into()],
                    )
                    .await?
                {
                    timeline.push(StatusView {
                        status: s.try_get::<Option<String>, _>("status")?.unwrap_or_default(),
                        received_at: s.try_get("received_at")?,
                    });
                }
            }
            let message: String = r.try_get("message")?;
            out.push(MessageView {
                direction: "out".into(),
                id: r.try_get("id")?,
                wamid: wamid.map(Into::into),
                kind: r.try_get("kind")?,
                content: serde_json::from_str(&message).unwrap_or(serde_json::Value::Null),
                at: r.try_get("created_at")?,
                state: Some(r.try_get("state")?),
                status: r.try_get("status")?,
                error_code: r.try_get("error_code")?,
                error_detail: r.try_get("error_detail")?,
                timeline,
            });
        }
        // Inbound rows come newest first; within a millisecond, by id.
        out.sort_by_key(|m| (m.at, m.id));
        let skip = out.len().saturating_sub(limit as usize);
        Ok(out.split_off(skip))
    }
}

/// Steps' conversation rows: the state and the head of the applied history, never moved back
/// (a step replayed after a later one committed writes nothing).
pub(crate) fn upsert_conversations(
    tx: &mut dyn SyncTx,
    steps: &[&StepCommit],
) -> Result<(), StoreError> {
    exec_rows(
        tx,
        steps,
        |n| {
            format!(
                "INSERT INTO conversations (account, user_key, state, last_inbound_at, last_applied_seq, created_at, updated_at) VALUES {} \
                 ON CONFLICT (account, user_key) DO UPDATE SET state = excluded.state, last_inbound_at = excluded.last_inbound_at, \
                 last_applied_seq = excluded.last_applied_seq, updated_at = excluded.updated_at \
                 WHERE conversations.last_applied_seq <= excluded.last_applied_seq",
                values_list(n, 7, 1)
            )
        },
        |s| {
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
                Val::S(s.state_json.clone()),
                Val::OptI(s.last_inbound_at),
                Val::I(s.last_applied_seq),
                Val::I(s.now),
                Val::I(s.now),
            ]
        },
    )
}

/// Steps' contact changes (see [`ContactUpsert`]): what a step did not learn is kept.
pub(crate) fn upsert_contacts(
    tx: &mut dyn SyncTx,
    contacts: &[(&StepCommit, &ContactUpsert)],
) -> Result<(), StoreError> {
    exec_rows(
        tx,
        contacts,
        |n| {
            format!(
                "INSERT INTO contacts (account, user_key, wa_id, user_id, profile_name, first_seen_at, last_seen_at, tags, opted_out_at, \
                 email, full_name, address, birth_date, identity_type, identity_number, gender, updated_at, source) VALUES {} \
                 ON CONFLICT (account, user_key) DO UPDATE SET wa_id = COALESCE(excluded.wa_id, contacts.wa_id), \
                 updated_at = excluded.updated_at, \
                 email = COALESCE(excluded.email, contacts.email), full_name = COALESCE(excluded.full_name, contacts.full_name), \
                 address = COALESCE(excluded.address, contacts.address), birth_date = COALESCE(excluded.birth_date, contacts.birth_date), \
                 identity_type = COALESCE(excluded.identity_type, contacts.identity_type), \
                 identity_number = COALESCE(excluded.identity_number, contacts.identity_number), \
                 gender = COALESCE(excluded.gender, contacts.gender), \
                 user_id = COALESCE(excluded.user_id, contacts.user_id), \
                 profile_name = COALESCE(excluded.profile_name, contacts.profile_name), last_seen_at = excluded.last_seen_at, \
                 tags = COALESCE(excluded.tags, contacts.tags), \
                 opted_out_at = CASE WHEN excluded.opted_out_at IS NULL THEN contacts.opted_out_at \
                 WHEN excluded.opted_out_at = 0 THEN NULL ELSE excluded.opted_out_at END",
                values_list(n, 18, 1)
            )
        },
        |(s, c)| {
            let p = |i: usize| Val::OptS(c.profile.as_ref().and_then(|p| p[i].clone()));
            [
                Val::from(&s.account),
                Val::from(&s.user_key),
                Val::OptS(c.wa_id.as_deref().map(str::to_string)),
                Val::OptS(c.user_id.clone()),
                Val::OptS(c.profile_name.clone()),
                Val::I(s.now),
                Val::I(s.now),
                Val::OptS(c.tags.clone()),
                // A first row never records an opt-in (0): NULL is the same.
                Val::OptI(c.opted_out_at),
                p(0),
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                Val::I(s.now),
                Val::S(crate::domain::ContactSource::Whatsapp.as_str().into()),
            ]
        },
    )?;
    // The tag rows the admin API filters by, kept with the tags (a step writes tags only
    // when they changed, not per message).
    let tagged: Vec<&(&StepCommit, &ContactUpsert)> =
        contacts.iter().filter(|(_, c)| c.tags.is_some()).collect();
    for (s, c) in tagged {
        let tags: Vec<String> = c
            .tags
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        super::exec::exec(
            tx,
            "DELETE FROM contact_tags WHERE account = $1 AND user_key = $2",
            vec![Val::from(&s.account), Val::from(&s.user_key)],
        )?;
        for tag in tags {
            super::exec::exec(
                tx,
                "INSERT INTO contact_tags (account, tag, user_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                vec![Val::from(&s.account), Val::S(tag), Val::from(&s.user_key)],
            )?;
        }
    }
    // An opt-out or opt-in the customer wrote goes into the consent ledger with it.
    for (s, c) in contacts {
        if let Some(at) = c.opted_out_at {
            let action = if at > 0 { "opt_out" } else { "opt_in" };
            super::exec::exec(
                tx,
                "INSERT INTO contact_consent (account, user_key, action, source, actor, at) VALUES ($1, $2, $3, 'whatsapp', 'customer', $4)",
                vec![Val::from(&s.account), Val::from(&s.user_key), Val::S(action.into()), Val::I(s.now)],
            )?;
        }
    }
    Ok(())
}
