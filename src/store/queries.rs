//! Read queries (and the few start-up writes that run before the writer task exists).

use serde::Serialize;
use sqlx::Row;

use super::sql::{bind_all, typed_values_list, Val};
use super::writer::OutboxRecord;
use super::{Store, StoreError};
use crate::config::AccountSettings;

/// One row of `media_files`: a fetched (or refused) inbound media file, its transcript if
/// any (decimals as text, as the column holds them).
#[derive(Debug, Clone)]
pub struct MediaRow<'a> {
    pub account: &'a str,
    pub media_id: &'a str,
    pub user_key: &'a str,
    pub path: Option<String>,
    pub mime_type: Option<String>,
    pub bytes: u64,
    pub transcript: Option<String>,
    pub language: Option<String>,
    pub duration_secs: Option<String>,
    pub provider: Option<String>,
    pub cost: Option<String>,
    pub error: Option<String>,
}

/// A conversation as stored.
#[derive(Debug, Clone)]
pub struct StoredConversation {
    pub state_json: String,
    pub last_inbound_at: Option<i64>,
    pub last_applied_seq: i64,
}

/// An inbox row waiting to be applied.
#[derive(Debug, Clone)]
pub struct PendingInbox {
    pub seq: i64,
    pub payload: String,
}

/// A due timer.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub id: i64,
    pub account: String,
    pub user_key: String,
    pub name: String,
    pub payload: String,
    pub due_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub direction: String,
    pub id: i64,
    pub wamid: Option<String>,
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
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

impl Store {
    pub(super) async fn fetch(
        &self,
        text: &str,
        vals: Vec<Val>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .fetch_all(self.pool())
            .await?)
    }

    pub(super) async fn run(&self, text: &str, vals: Vec<Val>) -> Result<u64, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Record the configured accounts (start-up).
    pub async fn upsert_accounts(&self, accounts: &[AccountSettings]) -> Result<(), StoreError> {
        let now = super::now_ms();
        for a in accounts {
            self.run(
                "INSERT INTO accounts (phone_number_id, display_phone_number, waba_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
                 display_phone_number = excluded.display_phone_number, waba_id = excluded.waba_id, updated_at = excluded.updated_at",
                vec![
                    a.phone_number_id.as_str().into(),
                    a.display_phone_number.as_str().into(),
                    a.waba_id.as_str().into(),
                    Val::I(now),
                ],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn load_conversation(
        &self,
        account: &str,
        user_key: &str,
    ) -> Result<Option<StoredConversation>, StoreError> {
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

    /// Unapplied messages of one conversation, in inbox order.
    pub async fn pending_inbox(
        &self,
        account: &str,
        user_key: &str,
        after_seq: i64,
    ) -> Result<Vec<PendingInbox>, StoreError> {
        let rows = self
            .fetch(
                "SELECT seq, payload FROM inbox WHERE account = $1 AND user_key = $2 AND seq > $3 AND state = 'pending' \
                 AND kind = 'message' ORDER BY seq",
                vec![account.into(), user_key.into(), Val::I(after_seq)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PendingInbox {
                    seq: r.try_get("seq")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }

    /// Conversations of `account` with unapplied messages, oldest first; optionally only rows
    /// received before `older_than` (the periodic sweep).
    /// Messages committed and not yet applied, and when the oldest of them arrived (ms).
    pub async fn inbox_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        let rows = self
            .fetch(
                "SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM inbox WHERE state = 'pending' AND kind = 'message'",
                vec![],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("COUNT returned no row".into()))?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    pub async fn conversations_with_pending(
        &self,
        account: &str,
        older_than: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, MIN(seq) AS first FROM inbox WHERE state = 'pending' AND account = $1 AND received_at <= $2 \
                 AND kind = 'message' AND user_key IS NOT NULL GROUP BY user_key ORDER BY first",
                vec![account.into(), Val::I(older_than.unwrap_or(i64::MAX))],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get("user_key")?))
            .collect()
    }

    /// The highest outbox id so far (0 for none).
    pub async fn outbox_high_water(&self) -> Result<i64, StoreError> {
        let rows = self
            .fetch("SELECT COALESCE(MAX(id), 0) AS high FROM outbox", vec![])
            .await?;
        Ok(match rows.first() {
            Some(r) => r.try_get("high")?,
            None => 0,
        })
    }

    /// The account's outbound requests not yet settled, up to id `through`, oldest first.
    pub async fn open_outbox(
        &self,
        account: &str,
        through: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {OUTBOX_RECORD} FROM outbox \
                     WHERE account = $1 AND state IN ('pending', 'sending') AND id <= $2 ORDER BY id"
                ),
                vec![account.into(), Val::I(through)],
            )
            .await?;
        rows.iter().map(outbox_record).collect()
    }

    /// The rows of commits reported failed that landed after all, oldest first: for each
    /// (step time, idem keys), the rows with those keys created at that time and still
    /// `pending` (see `WriterHandle::commit_step`).
    pub async fn unconfirmed_outbox(
        &self,
        commits: &[(i64, Vec<String>)],
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut records = Vec::new();
        for (created_at, keys) in commits {
            let mut vals = vec![Val::I(*created_at)];
            vals.extend(keys.iter().map(|k| Val::S(k.clone())));
            let rows = self
                .fetch(
                    &format!(
                        "SELECT {OUTBOX_RECORD} FROM outbox WHERE created_at = $1 AND state = 'pending' \
                         AND idem_key IN ({}) ORDER BY id",
                        super::sql::in_list(keys.len(), 2)
                    ),
                    vals,
                )
                .await?;
            for r in &rows {
                records.push(outbox_record(r)?);
            }
        }
        Ok(records)
    }

    /// The ids, in order, of the outbox rows whose idem key is `prefix` (ending in `:`) and
    /// a number: the rows of the step that `prefix` names, whichever of its effects they were.
    pub async fn outbox_ids_of_step(&self, prefix: String) -> Result<Vec<i64>, StoreError> {
        let (from, to) = idem_key_range(prefix);
        let rows = self
            .fetch(
                "SELECT id, idem_key FROM outbox WHERE idem_key >= $1 AND idem_key < $2 ORDER BY id",
                vec![from.clone().into(), to.into()],
            )
            .await?;
        let mut ids = Vec::new();
        // Not a longer key of another step (`…:outa:b:0` is not request `a`'s).
        for row in &rows {
            let key: String = row.try_get(1)?;
            let rest = key.strip_prefix(from.as_str()).unwrap_or_default();
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                ids.push(row.try_get(0)?);
            }
        }
        Ok(ids)
    }

    /// The message JSON of an outbox row.
    pub async fn outbox_message(&self, id: i64) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT message FROM outbox WHERE id = $1 AND kind = 'message'",
                vec![Val::I(id)],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok(r.try_get("message")?))
            .transpose()
    }

    pub async fn outbox_state(&self, id: i64) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch("SELECT state FROM outbox WHERE id = $1", vec![Val::I(id)])
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok(r.try_get("state")?))
            .transpose()
    }

    pub async fn due_timers(&self, now: i64, limit: i64) -> Result<Vec<DueTimer>, StoreError> {
        let rows = self
            .fetch(
                "SELECT id, account, user_key, name, payload, due_at FROM timers WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $2",
                vec![Val::I(now), Val::I(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DueTimer {
                    id: r.try_get("id")?,
                    account: r.try_get("account")?,
                    user_key: r.try_get("user_key")?,
                    name: r.try_get("name")?,
                    payload: r.try_get("payload")?,
                    due_at: r.try_get("due_at")?,
                })
            })
            .collect()
    }

    pub async fn contact(
        &self,
        account: &str,
        user_key: &str,
    ) -> Result<Option<ContactView>, StoreError> {
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
                    wa_id: r.try_get("wa_id")?,
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
        account: &str,
        user_key: &str,
        limit: i64,
    ) -> Result<Vec<MessageView>, StoreError> {
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
                wamid: r.try_get("wamid")?,
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
                wamid,
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

    /// Per bot: (bot, status, sessions, answers, response ms, cost in millionths).
    pub async fn bot_counters(
        &self,
    ) -> Result<Vec<(String, String, i64, i64, i64, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT bot, status, COUNT(*) AS n, CAST(SUM(turns) AS BIGINT) AS turns, CAST(SUM(response_ms) AS BIGINT) AS ms, \
                 CAST(SUM(cost_micros) AS BIGINT) AS micros \
                 FROM chatbot_sessions GROUP BY bot, status",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("bot")?,
                    r.try_get("status")?,
                    r.try_get("n")?,
                    r.try_get("turns")?,
                    r.try_get("ms")?,
                    r.try_get("micros")?,
                ))
            })
            .collect()
    }

    /// Record a fetched (or refused) inbound media file.
    pub async fn record_media(&self, m: &MediaRow<'_>) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO media_files (account, media_id, user_key, path, mime_type, bytes, transcript, language, duration_secs, provider, cost, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (account, media_id) DO UPDATE SET \
             path = excluded.path, mime_type = excluded.mime_type, bytes = excluded.bytes, transcript = excluded.transcript, \
             language = excluded.language, duration_secs = excluded.duration_secs, provider = excluded.provider, cost = excluded.cost, error = excluded.error",
            vec![
                m.account.into(),
                m.media_id.into(),
                m.user_key.into(),
                Val::OptS(m.path.clone()),
                Val::OptS(m.mime_type.clone()),
                Val::I(m.bytes as i64),
                Val::OptS(m.transcript.clone()),
                Val::OptS(m.language.clone()),
                Val::OptS(m.duration_secs.clone()),
                Val::OptS(m.provider.clone()),
                Val::OptS(m.cost.clone()),
                Val::OptS(m.error.clone()),
                Val::I(super::now_ms()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Keep the source of each flow version that goes live (once per version).
    pub async fn save_flow_versions(
        &self,
        versions: &[(String, String, std::sync::Arc<str>)],
    ) -> Result<(), StoreError> {
        let now = super::now_ms();
        for (id, version, source) in versions {
            self.run(
                "INSERT INTO flow_versions (flow_id, version, source, first_loaded_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (flow_id, version) DO NOTHING",
                vec![
                    id.as_str().into(),
                    version.as_str().into(),
                    source.as_ref().into(),
                    Val::I(now),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// (id, version, source) of the flow versions that unfinished sessions run.
    pub async fn flow_versions_in_use(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT v.flow_id, v.version, v.source FROM flow_versions v WHERE EXISTS \
                 (SELECT 1 FROM flow_executions e WHERE e.flow_id = v.flow_id AND e.version = v.version \
                  AND e.status IN ('running', 'paused'))",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("flow_id")?,
                    r.try_get("version")?,
                    r.try_get("source")?,
                ))
            })
            .collect()
    }

    /// Flow sessions per (flow, status), for the admin API's counters.
    pub async fn flow_execution_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT flow_id, status, COUNT(*) AS n FROM flow_executions GROUP BY flow_id, status",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("flow_id")?, r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Counts for the admin API: (conversations, contacts, open outbox rows) of an account.
    pub async fn account_counts(&self, account: &str) -> Result<(i64, i64, i64), StoreError> {
        let one = |text: &'static str| async move {
            let rows = self.fetch(text, vec![account.into()]).await?;
            Ok::<i64, StoreError>(
                rows.first()
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?
                    .unwrap_or(0),
            )
        };
        Ok((
            one("SELECT COUNT(*) FROM conversations WHERE account = $1").await?,
            one("SELECT COUNT(*) FROM contacts WHERE account = $1").await?,
            one("SELECT COUNT(*) FROM outbox WHERE account = $1 AND state IN ('pending', 'sending')").await?,
        ))
    }

    /// SendGate: what was reserved of `day` (`reserved`, `used`), if anything.
    pub async fn daily_usage(
        &self,
        account: &str,
        day: &str,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT reserved, used FROM send_daily_usage WHERE account = $1 AND day = $2",
                vec![account.into(), day.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok((r.try_get("reserved")?, r.try_get("used")?)))
            .transpose()
    }

    /// SendGate: users of `waba` reached since `since` (business-initiated), with the time.
    pub async fn tier_reach(
        &self,
        waba: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, reached_at FROM tier_reach WHERE waba = $1 AND reached_at > $2",
                vec![waba.into(), Val::I(since)],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("user_key")?, r.try_get("reached_at")?)))
            .collect()
    }

    /// SendGate: the stored control (JSON) of an account.
    pub async fn account_gate(&self, account: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT state FROM account_gate WHERE account = $1",
                vec![account.into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok(r.try_get("state")?))
            .transpose()
    }

    /// SendGate: contacts marked unreachable since `since`.
    pub async fn unreachable_contacts(
        &self,
        account: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT user_key, at FROM unreachable_contacts WHERE account = $1 AND at > $2",
                vec![account.into(), Val::I(since)],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("user_key")?, r.try_get("at")?)))
            .collect()
    }

    /// Templates of `waba` whose last state is not APPROVED: (name, language, status, reason).
    pub async fn template_problems(
        &self,
        waba: &str,
    ) -> Result<Vec<(String, String, String, Option<String>)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT name, language, status, reason FROM template_states WHERE waba = $1 AND status <> 'APPROVED' ORDER BY name, language",
                vec![waba.into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("language")?,
                    r.try_get("status")?,
                    r.try_get("reason")?,
                ))
            })
            .collect()
    }
}

/// The idem key of outbox row `n` of the step that applied inbox row `seq`: the seq alone
/// leads (zero-padded, so that key order is arrival order), see the conversation actor.
pub fn inbound_reply_key(seq: i64, n: usize) -> String {
    format!("in{seq:020}:{n}")
}

/// The idem keys of every outbox row the step of inbox row `seq` inserted: [from, to).
pub fn inbound_reply_key_range(seq: i64) -> (String, String) {
    idem_key_range(format!("in{seq:020}:"))
}

/// The outbox idem keys (`{account}:{user}:{origin}:{n}`, see the conversation actor) that
/// start with `prefix` (which ends in `:`): from `prefix` (inclusive) to the same text ending
/// in `;` (exclusive; `;` follows `:` in byte order). Both stores compare idem keys byte by
/// byte, so this is exactly the keys with the prefix, read through the unique index. (The
/// queries also check account and user, as `account || ''` so that SQLite's planner, which
/// has no statistics, does not take an index on the account alone instead.)
pub(crate) fn idem_key_range(prefix: String) -> (String, String) {
    debug_assert!(prefix.ends_with(':'));
    let upper = format!("{};", &prefix[..prefix.len() - 1]);
    (prefix, upper)
}

/// The columns [`outbox_record`] reads.
const OUTBOX_RECORD: &str =
    "id, account, user_key, kind, message, reply_to, state, updated_at, class, idem_key";

fn outbox_record(r: &sqlx::any::AnyRow) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        user_key: r.try_get("user_key")?,
        kind: r.try_get("kind")?,
        message_json: r.try_get("message")?,
        reply_to: r.try_get("reply_to")?,
        state: r.try_get("state")?,
        updated_at: r.try_get("updated_at")?,
        class: crate::domain::SendClass::parse(r.try_get("class")?),
        turn: None,
        campaign: crate::domain::campaign_of_idem_key(&r.try_get::<String, _>("idem_key")?),
    })
}
