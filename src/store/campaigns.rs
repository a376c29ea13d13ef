//! Campaigns in the store: the campaign rows, their recipients (the progress, streamed in
//! pages, never loaded whole) and the messages handed to conversations (joined with the outbox
//! rows, whose status the status webhooks move, for the counters). A finished campaign's
//! counters are frozen before retention deletes those rows (campaign_totals.rs).
//!
//! These writes run on the pool in their own transactions, a page of recipients at a time,
//! not through the conversation writer: they touch only campaign tables.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::sql::{bind_all, in_list, std_chunks, values_list, Val};
use super::{Store, StoreError};
use crate::domain::{AccountId, CampaignStatus, RecipientState, UserKey};

/// A campaign as stored.
#[derive(Debug, Clone)]
pub struct CampaignRow {
    pub id: i64,
    pub account: AccountId,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub status: CampaignStatus,
    pub pause_reason: Option<String>,
    pub rate_per_minute: i64,
    pub scheduled_for: Option<i64>,
    pub total: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub account: AccountId,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub status: CampaignStatus,
    pub rate_per_minute: i64,
    pub scheduled_for: Option<i64>,
    /// When its recipients are enrolled (drip offsets count from here).
    pub enrolled_at: i64,
    /// Offset of the first step from enrollment (ms).
    pub first_offset_ms: i64,
    pub now: i64,
}

/// Who a campaign goes to.
#[derive(Debug, Clone)]
pub enum NewRecipients {
    /// (user key, variables as a JSON object)
    List(Vec<(String, Option<String>)>),
    /// Every contact of the account with this tag.
    Tag(String),
}

/// A recipient whose next step is due, with what decides whether it is sent.
#[derive(Debug, Clone)]
pub struct DueRecipient {
    pub id: i64,
    pub user_key: UserKey,
    pub vars: Option<String>,
    pub variant: i64,
    pub step: i64,
    pub enrolled_at: i64,
    pub profile_name: Option<String>,
    pub opted_out_at: Option<i64>,
    pub blocked_at: Option<i64>,
    pub unreachable_at: Option<i64>,
    pub last_inbound_at: Option<i64>,
}

/// What became of one recipient's due step.
#[derive(Debug, Clone)]
pub struct RecipientUpdate {
    pub id: i64,
    pub state: RecipientState,
    /// The next step to send.
    pub step: i64,
    /// The next step is due this long after enrollment (ms).
    pub due_offset: i64,
    pub variant: i64,
    pub reason: Option<String>,
    /// The message handed to the conversation: (step, outbox id).
    pub sent: Option<(i64, i64)>,
}

/// Counters of a campaign (messages: from their outbox rows and status webhooks).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CampaignCounters {
    /// Recipients.
    pub total: i64,
    /// Messages handed to conversations (queued for sending).
    pub queued: i64,
    /// Accepted by the Graph API.
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    /// Recipients skipped (opted out, blocked, unreachable, refused).
    pub skipped: i64,
    /// Drip recipients stopped by a reply or an opt-out.
    pub stopped: i64,
    /// Recipients with a step still to send.
    pub pending: i64,
}

/// Per A/B variant: sent, delivered, read, replied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VariantCounters {
    pub variant: i64,
    pub queued: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub replied: i64,
}

/// One recipient's status, with the failure reason.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientView {
    pub id: i64,
    pub user_key: UserKey,
    pub state: String,
    pub step: i64,
    pub variant: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The latest message's outbox state and Meta status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
}

const CAMPAIGN_COLS: &str = "id, account, name, kind, spec, status, pause_reason, rate_per_minute, scheduled_for, total, created_at, started_at, finished_at";

fn campaign_row(r: &sqlx::any::AnyRow) -> Result<CampaignRow, StoreError> {
    Ok(CampaignRow {
        id: r.try_get("id")?,
        account: r.try_get::<String, _>("account")?.into(),
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        spec: r.try_get("spec")?,
        status: super::stored(r, "status")?,
        pause_reason: r.try_get("pause_reason")?,
        rate_per_minute: r.try_get("rate_per_minute")?,
        scheduled_for: r.try_get("scheduled_for")?,
        total: r.try_get("total")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Store {
    /// Insert a campaign and its recipients in one transaction; its id.
    pub async fn create_campaign(
        &self,
        c: &NewCampaign,
        recipients: &NewRecipients,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let text = self.sql(
            "INSERT INTO campaigns (account, name, kind, spec, status, rate_per_minute, scheduled_for, total, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) RETURNING id",
        );
        let row = bind_all(
            sqlx::query(&text),
            vec![
                c.account.as_str().into(),
                c.name.as_str().into(),
                c.kind.as_str().into(),
                c.spec.as_str().into(),
                c.status.as_str().into(),
                Val::I(c.rate_per_minute),
                Val::OptI(c.scheduled_for),
                Val::I(c.now),
            ],
        )
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let due = c.enrolled_at + c.first_offset_ms;
        match recipients {
            NewRecipients::List(list) => {
                let numbered: Vec<(i64, &(String, Option<String>))> = list
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as i64 + 1, r))
                    .collect();
                for chunk in std_chunks(&numbered) {
                    let text = format!(
                        "INSERT INTO campaign_recipients (campaign_id, id, user_key, vars, state, due_at, enrolled_at, updated_at) VALUES {} \
                         ON CONFLICT (campaign_id, user_key) DO NOTHING",
                        values_list(chunk.len(), 8, 1)
                    );
                    let mut vals = Vec::with_capacity(chunk.len() * 8);
                    for (n, (user, vars)) in chunk {
                        vals.extend([
                            Val::I(id),
                            Val::I(*n),
                            Val::S(user.clone()),
                            Val::OptS(vars.clone()),
                            Val::S("pending".into()),
                            Val::I(due),
                            Val::I(c.enrolled_at),
                            Val::I(c.now),
                        ]);
                    }
                    self.tx_run(&mut tx, &text, vals).await?;
                }
            }
            NewRecipients::Tag(tag) => {
                // In the database: the contacts are never loaded here.
                self.tx_run(
                    &mut tx,
                    "INSERT INTO campaign_recipients (campaign_id, id, user_key, vars, state, due_at, enrolled_at, updated_at) \
                     SELECT $1, ROW_NUMBER() OVER (ORDER BY user_key), user_key, NULL, 'pending', $2, $3, $4 \
                     FROM contacts WHERE account = $5 AND tags LIKE $6",
                    vec![
                        Val::I(id),
                        Val::I(due),
                        Val::I(c.enrolled_at),
                        Val::I(c.now),
                        c.account.as_str().into(),
                        Val::S(format!("%\"{tag}\"%")),
                    ],
                )
                .await?;
            }
        }
        self.tx_run(
            &mut tx,
            "UPDATE campaigns SET total = (SELECT COUNT(*) FROM campaign_recipients WHERE campaign_id = $1) WHERE id = $1",
            vec![Val::I(id)],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn campaign(&self, id: i64) -> Result<Option<CampaignRow>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {CAMPAIGN_COLS} FROM campaigns WHERE id = $1"),
                vec![Val::I(id)],
            )
            .await?;
        rows.first().map(campaign_row).transpose()
    }

    /// Campaigns a (re)started daemon must run: running or scheduled.
    pub async fn active_campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {CAMPAIGN_COLS} FROM campaigns WHERE status IN ('running', 'scheduled') ORDER BY id"),
                vec![],
            )
            .await?;
        rows.iter().map(campaign_row).collect()
    }

    /// `account`'s campaigns whose queued messages are withheld: the paused ones, and the
    /// cancelled ones that still have messages not settled (the sender settles those as
    /// `cancelled`). Each as (id, cancelled).
    pub async fn withheld_campaigns(&self, account: &str) -> Result<Vec<(i64, bool)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT c.id, c.status FROM campaigns c WHERE c.account = $1 AND (c.status = 'paused' \
                 OR (c.status = 'cancelled' AND EXISTS (SELECT 1 FROM campaign_messages m \
                 JOIN outbox o ON o.id = m.outbox_id WHERE m.campaign_id = c.id \
                 AND o.state IN ('pending', 'sending')))) ORDER BY c.id",
                vec![account.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let cancelled = r.try_get::<String, _>("status")? == "cancelled";
                Ok((r.try_get::<i64, _>("id")?, cancelled))
            })
            .collect()
    }

    /// A draft starts now: its recipients' first step counts from now.
    pub async fn enroll_campaign(
        &self,
        id: i64,
        at: i64,
        first_offset_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE campaign_recipients SET enrolled_at = $1, due_at = $2 WHERE campaign_id = $3 AND state = 'pending' AND step = 0",
            vec![Val::I(at), Val::I(at + first_offset_ms), Val::I(id)],
        )
        .await?;
        Ok(())
    }

    /// The next page of recipients with a step due, after recipient `after` (a keyset page:
    /// recipients are streamed, never all loaded).
    pub async fn due_recipients(
        &self,
        campaign: i64,
        account: &str,
        after: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<DueRecipient>, StoreError> {
        let rows = self
            .fetch(
                "SELECT r.id, r.user_key, r.vars, r.variant, r.step, r.enrolled_at, c.profile_name, c.opted_out_at, \
                        c.blocked_at, u.at AS unreachable_at, v.last_inbound_at \
                 FROM campaign_recipients r \
                 LEFT JOIN contacts c ON c.account = $1 AND c.user_key = r.user_key \
                 LEFT JOIN unreachable_contacts u ON u.account = $1 AND u.user_key = r.user_key \
                 LEFT JOIN conversations v ON v.account = $1 AND v.user_key = r.user_key \
                 WHERE r.campaign_id = $2 AND r.state = 'pending' AND r.id > $3 AND r.due_at <= $4 \
                 ORDER BY r.id LIMIT $5",
                vec![
                    account.into(),
                    Val::I(campaign),
                    Val::I(after),
                    Val::I(now),
                    Val::I(limit),
                ],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DueRecipient {
                    id: r.try_get("id")?,
                    user_key: r.try_get::<String, _>("user_key")?.into(),
                    vars: r.try_get("vars")?,
                    variant: r.try_get("variant")?,
                    step: r.try_get("step")?,
                    enrolled_at: r.try_get("enrolled_at")?,
                    profile_name: r.try_get("profile_name")?,
                    opted_out_at: r.try_get("opted_out_at")?,
                    blocked_at: r.try_get("blocked_at")?,
                    unreachable_at: r.try_get("unreachable_at")?,
                    last_inbound_at: r.try_get("last_inbound_at")?,
                })
            })
            .collect()
    }

    /// Record a page of outcomes in one transaction: the messages handed over and where
    /// each recipient now stands.
    pub async fn record_campaign_page(
        &self,
        campaign: i64,
        updates: &[RecipientUpdate],
        now: i64,
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        let sent: Vec<(&RecipientUpdate, (i64, i64))> = updates
            .iter()
            .filter_map(|u| u.sent.map(|s| (u, s)))
            .collect();
        for chunk in std_chunks(&sent) {
            let text = format!(
                "INSERT INTO campaign_messages (campaign_id, recipient_id, step, variant, outbox_id, created_at) VALUES {} \
                 ON CONFLICT (campaign_id, recipient_id, step) DO NOTHING",
                values_list(chunk.len(), 6, 1)
            );
            let mut vals = Vec::with_capacity(chunk.len() * 6);
            for (u, (step, outbox_id)) in chunk {
                vals.extend([
                    Val::I(campaign),
                    Val::I(u.id),
                    Val::I(*step),
                    Val::I(u.variant.max(0)),
                    Val::I(*outbox_id),
                    Val::I(now),
                ]);
            }
            self.tx_run(&mut tx, &text, vals).await?;
        }
        // Recipients that end up alike are updated by one statement.
        type Key<'a> = (RecipientState, i64, i64, i64, Option<&'a str>);
        let mut groups: BTreeMap<Key<'_>, Vec<i64>> = BTreeMap::new();
        for u in updates {
            groups
                .entry((
                    u.state,
                    u.step,
                    u.due_offset,
                    u.variant,
                    u.reason.as_deref(),
                ))
                .or_default()
                .push(u.id);
        }
        for ((state, step, offset, variant, reason), ids) in groups {
            for chunk in ids.chunks(256) {
                let mut vals = vec![
                    Val::S(state.as_str().to_string()),
                    Val::I(step),
                    Val::I(offset),
                    Val::I(variant),
                    Val::OptS(reason.map(str::to_string)),
                    Val::I(now),
                    Val::I(campaign),
                ];
                vals.extend(chunk.iter().map(|id| Val::I(*id)));
                let text = format!(
                    "UPDATE campaign_recipients SET state = $1, step = $2, due_at = enrolled_at + $3, variant = $4, \
                     reason = $5, updated_at = $6 WHERE campaign_id = $7 AND id IN ({})",
                    in_list(chunk.len(), 8)
                );
                self.tx_run(&mut tx, &text, vals).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Business-initiated messages of `account` not yet settled (queued or in flight): the
    /// campaign waits while the gate holds back this many. A paused campaign's messages are
    /// not counted: they are withheld until it is resumed, not a backlog the sender works
    /// through, and would hold back every other campaign of the number meanwhile.
    pub async fn unsettled_business(&self, account: &str) -> Result<i64, StoreError> {
        let count = |rows: Vec<sqlx::any::AnyRow>| -> Result<i64, StoreError> {
            Ok(rows
                .first()
                .map(|r| r.try_get("n"))
                .transpose()?
                .unwrap_or(0))
        };
        let open = count(
            self.fetch(
                "SELECT COUNT(*) AS n FROM outbox WHERE account = $1 AND state IN ('pending', 'sending') AND class = 'business'",
                vec![account.into()],
            )
            .await?,
        )?;
        if open == 0 {
            return Ok(0);
        }
        // Read through each paused campaign's own messages (few campaigns are paused).
        let withheld = count(
            self.fetch(
                "SELECT COUNT(*) AS n FROM campaigns c JOIN campaign_messages m ON m.campaign_id = c.id \
                 JOIN outbox o ON o.id = m.outbox_id WHERE c.account = $1 AND c.status = $2 \
                 AND o.state IN ('pending', 'sending') AND o.class = 'business'",
                vec![account.into(), CampaignStatus::Paused.as_str().into()],
            )
            .await?,
        )?;
        Ok((open - withheld).max(0))
    }

    /// Recipients with a step still to send, and the campaign's messages not yet settled.
    pub async fn campaign_remaining(&self, campaign: i64) -> Result<(i64, i64), StoreError> {
        let pending = self
            .fetch(
                "SELECT COUNT(*) AS n FROM campaign_recipients WHERE campaign_id = $1 AND state = 'pending'",
                vec![Val::I(campaign)],
            )
            .await?;
        let unsettled = self
            .fetch(
                "SELECT COUNT(*) AS n FROM campaign_messages m JOIN outbox o ON o.id = m.outbox_id \
                 WHERE m.campaign_id = $1 AND o.state IN ('pending', 'sending')",
                vec![Val::I(campaign)],
            )
            .await?;
        let n = |rows: &[sqlx::any::AnyRow]| -> Result<i64, StoreError> {
            Ok(rows
                .first()
                .map(|r| r.try_get("n"))
                .transpose()?
                .unwrap_or(0))
        };
        Ok((n(&pending)?, n(&unsettled)?))
    }

    /// The error codes of the campaign's last `window` messages, newest first (None: no
    /// error so far).
    pub async fn campaign_recent_codes(
        &self,
        campaign: i64,
        window: i64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let rows = self
            .fetch(
                "SELECT o.error_code FROM campaign_messages m JOIN outbox o ON o.id = m.outbox_id \
                 WHERE m.campaign_id = $1 ORDER BY m.outbox_id DESC LIMIT $2",
                vec![Val::I(campaign), Val::I(window)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<Option<i64>, _>("error_code")?))
            .collect()
    }

    /// The outbox row a campaign's request created in `user`'s conversation (its idem key is
    /// `{account}:{user}:out{request_id}:{n}`).
    pub async fn campaign_outbox_id(
        &self,
        account: &str,
        user: &str,
        request_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let rows = self
            .fetch(
                "SELECT id FROM outbox WHERE idem_key >= $1 AND idem_key < $2 AND account || '' = $3 AND user_key || '' = $4 \
                 ORDER BY id LIMIT 1",
                {
                    let (from, to) =
                        super::idem_key_range(format!("{account}:{user}:out{request_id}:"));
                    vec![from.into(), to.into(), account.into(), user.into()]
                },
            )
            .await?;
        rows.first()
            .map(|r| Ok(r.try_get::<i64, _>("id")?))
            .transpose()
    }

    /// The state of a template in `waba` as Meta last told us (APPROVED, PAUSED, DISABLED…).
    pub async fn template_state(
        &self,
        waba: &str,
        name: &str,
        language: &str,
    ) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch(
                "SELECT status FROM template_states WHERE waba = $1 AND name = $2 AND language = $3",
                vec![waba.into(), name.into(), language.into()],
            )
            .await?;
        rows.first()
            .map(|r| Ok(r.try_get::<String, _>("status")?))
            .transpose()
    }

    /// A campaign's counters and its variants': the figures frozen before retention deleted
    /// its rows (campaign_totals.rs), else counted from its rows as they stand.
    pub async fn campaign_counters(
        &self,
        campaign: i64,
    ) -> Result<(CampaignCounters, Vec<VariantCounters>), StoreError> {
        if let Some(frozen) = self.frozen_campaign_counters(campaign).await? {
            return Ok(frozen);
        }
        self.live_campaign_counters(campaign).await
    }

    /// The counters counted from the campaign's recipients and its messages' outbox rows
    /// (and its recipients' conversations, for the replies).
    pub(super) async fn live_campaign_counters(
        &self,
        campaign: i64,
    ) -> Result<(CampaignCounters, Vec<VariantCounters>), StoreError> {
        let mut c = CampaignCounters::default();
        let rows = self
            .fetch(
                "SELECT state, COUNT(*) AS n FROM campaign_recipients WHERE campaign_id = $1 GROUP BY state",
                vec![Val::I(campaign)],
            )
            .await?;
        for r in &rows {
            let state: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            c.total += n;
            match state.as_str() {
                "skipped" => c.skipped += n,
                "stopped" => c.stopped += n,
                "pending" => c.pending += n,
                _ => {}
            }
        }
        let rows = self
            .fetch(
                "SELECT m.variant, COUNT(*) AS queued, \
                 SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END) AS sent, \
                 SUM(CASE WHEN o.status_rank IN (2, 3) THEN 1 ELSE 0 END) AS delivered, \
                 SUM(CASE WHEN o.status_rank = 3 THEN 1 ELSE 0 END) AS read_n, \
                 SUM(CASE WHEN o.state = 'failed' OR o.status_rank = 4 THEN 1 ELSE 0 END) AS failed \
                 FROM campaign_messages m JOIN outbox o ON o.id = m.outbox_id \
                 WHERE m.campaign_id = $1 GROUP BY m.variant ORDER BY m.variant",
                vec![Val::I(campaign)],
            )
            .await?;
        let mut variants = Vec::new();
        for r in &rows {
            // SUM over no rows is NULL in both dialects; a group has at least one row.
            let get = |col: &str| -> Result<i64, StoreError> {
                Ok(r.try_get::<Option<i64>, _>(col)?.unwrap_or(0))
            };
            let v = VariantCounters {
                variant: r.try_get("variant")?,
                queued: get("queued")?,
                sent: get("sent")?,
                delivered: get("delivered")?,
                read: get("read_n")?,
                failed: get("failed")?,
                replied: 0,
            };
            c.queued += v.queued;
            c.sent += v.sent;
            c.delivered += v.delivered;
            c.read += v.read;
            c.failed += v.failed;
            variants.push(v);
        }
        let rows = self
            .fetch(
                "SELECT m.variant, COUNT(DISTINCT m.recipient_id) AS n FROM campaign_messages m \
                 JOIN campaign_recipients r ON r.campaign_id = m.campaign_id AND r.id = m.recipient_id \
                 JOIN campaigns k ON k.id = m.campaign_id \
                 JOIN conversations v ON v.account = k.account AND v.user_key = r.user_key \
                 WHERE m.campaign_id = $1 AND v.last_inbound_at > m.created_at GROUP BY m.variant",
                vec![Val::I(campaign)],
            )
            .await?;
        for r in &rows {
            let variant: i64 = r.try_get("variant")?;
            let n: i64 = r.try_get("n")?;
            if let Some(v) = variants.iter_mut().find(|v| v.variant == variant) {
                v.replied = n;
            }
        }
        Ok((c, variants))
    }

    /// A page of recipients with their latest message's status and failure reason.
    pub async fn campaign_recipients(
        &self,
        campaign: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecipientView>, StoreError> {
        let rows = self
            .fetch(
                "SELECT r.id, r.user_key, r.state, r.step, r.variant, r.reason, o.id AS outbox_id, o.state AS send_state, \
                        o.status, o.error_code, o.error_detail \
                 FROM campaign_recipients r \
                 LEFT JOIN campaign_messages m ON m.campaign_id = r.campaign_id AND m.recipient_id = r.id \
                   AND m.step = (SELECT MAX(m2.step) FROM campaign_messages m2 WHERE m2.campaign_id = r.campaign_id AND m2.recipient_id = r.id) \
                 LEFT JOIN outbox o ON o.id = m.outbox_id \
                 WHERE r.campaign_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3",
                vec![Val::I(campaign), Val::I(after), Val::I(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RecipientView {
                    id: r.try_get("id")?,
                    user_key: (r.try_get::<String, _>("user_key")?).into(),
                    state: r.try_get("state")?,
                    step: r.try_get("step")?,
                    variant: r.try_get("variant")?,
                    reason: r.try_get("reason")?,
                    outbox_id: r.try_get("outbox_id")?,
                    send_state: r.try_get("send_state")?,
                    status: r.try_get("status")?,
                    error_code: r.try_get("error_code")?,
                    error_detail: r.try_get("error_detail")?,
                })
            })
            .collect()
    }
}
