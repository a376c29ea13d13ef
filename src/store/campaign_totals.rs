//! A finished campaign's counters, frozen. They are counted live from `campaign_recipients`
//! and `campaign_messages` joined to the outbox (see campaigns.rs), and retention deletes
//! those rows: the recipients and messages `retention.campaign_recipients` after the
//! campaign finished, the messages' outbox rows after `retention.messages` when that is not
//! forever. So before the first of them can go, the sweeper counts them once and keeps the
//! figures in `campaign_totals` and `campaign_variant_totals`; from then on every reader of
//! [`Store::campaign_counters`] gets those, and a campaign reads the same before and after
//! its rows are deleted.
//!
//! Frozen at retention time, not when the campaign finishes: until its window ends, status
//! webhooks that come late (a `read` days after the send) and replies still move its counters,
//! as they always did.

use sqlx::Row;

use super::sql::{values_list, Val};
use super::{CampaignCounters, Store, StoreError, VariantCounters};

impl Store {
    /// The counters frozen for `campaign`, if they were.
    pub async fn frozen_campaign_counters(
        &self,
        campaign: i64,
    ) -> Result<Option<(CampaignCounters, Vec<VariantCounters>)>, StoreError> {
        let rows = self
            .fetch(
                "SELECT total, queued, sent, delivered, read_n, failed, skipped, stopped, pending \
                 FROM campaign_totals WHERE campaign_id = $1",
                vec![Val::I(campaign)],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let counters = CampaignCounters {
            total: r.try_get("total")?,
            queued: r.try_get("queued")?,
            sent: r.try_get("sent")?,
            delivered: r.try_get("delivered")?,
            read: r.try_get("read_n")?,
            failed: r.try_get("failed")?,
            skipped: r.try_get("skipped")?,
            stopped: r.try_get("stopped")?,
            pending: r.try_get("pending")?,
        };
        let rows = self
            .fetch(
                "SELECT variant, queued, sent, delivered, read_n, failed, replied \
                 FROM campaign_variant_totals WHERE campaign_id = $1 ORDER BY variant",
                vec![Val::I(campaign)],
            )
            .await?;
        let variants = rows
            .iter()
            .map(|r| {
                Ok(VariantCounters {
                    variant: r.try_get("variant")?,
                    queued: r.try_get("queued")?,
                    sent: r.try_get("sent")?,
                    delivered: r.try_get("delivered")?,
                    read: r.try_get("read_n")?,
                    failed: r.try_get("failed")?,
                    replied: r.try_get("replied")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((counters, variants)))
    }

    /// Finished campaigns not frozen yet whose rows retention may delete from now on: those
    /// that finished before `recipients_before` (their recipients and messages go), and those
    /// created before `messages_before` (some of their messages' outbox rows may go; created,
    /// not finished: a campaign's first sends are as old as it). `None`: that window is
    /// forever. A campaign with a message not settled yet (a cancelled one whose withheld
    /// messages the sender has not settled) waits: its counters would still move, and the
    /// send gate reads its messages to withhold them.
    pub async fn campaigns_to_freeze(
        &self,
        recipients_before: Option<i64>,
        messages_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if recipients_before.is_none() && messages_before.is_none() {
            return Ok(Vec::new());
        }
        let rows = self
            .fetch(
                "SELECT c.id FROM campaigns c WHERE c.status IN ('completed', 'failed', 'cancelled') \
                 AND (c.finished_at < $1 OR c.created_at < $2) \
                 AND NOT EXISTS (SELECT 1 FROM campaign_totals t WHERE t.campaign_id = c.id) \
                 AND NOT EXISTS (SELECT 1 FROM campaign_messages m JOIN outbox o ON o.id = m.outbox_id \
                   WHERE m.campaign_id = c.id AND o.state IN ('pending', 'sending')) \
                 ORDER BY c.id LIMIT $3",
                vec![
                    Val::I(recipients_before.unwrap_or(i64::MIN)),
                    Val::I(messages_before.unwrap_or(i64::MIN)),
                    Val::I(limit),
                ],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Count `campaign`'s counters as they stand and keep them (once: a campaign frozen
    /// already keeps its first figures). The campaign row and its variants in one
    /// transaction, so a reader sees all of them or none. False if it was frozen already.
    pub async fn freeze_campaign_counters(
        &self,
        campaign: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (c, variants) = self.live_campaign_counters(campaign).await?;
        let mut tx = self.pool().begin().await?;
        let fresh = self
            .tx_run(
                &mut tx,
                "INSERT INTO campaign_totals (campaign_id, total, queued, sent, delivered, read_n, failed, \
                 skipped, stopped, pending, frozen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (campaign_id) DO NOTHING",
                vec![
                    Val::I(campaign),
                    Val::I(c.total),
                    Val::I(c.queued),
                    Val::I(c.sent),
                    Val::I(c.delivered),
                    Val::I(c.read),
                    Val::I(c.failed),
                    Val::I(c.skipped),
                    Val::I(c.stopped),
                    Val::I(c.pending),
                    Val::I(now),
                ],
            )
            .await?
            > 0;
        // A campaign has a handful of variants: one statement.
        if fresh && !variants.is_empty() {
            let text = format!(
                "INSERT INTO campaign_variant_totals (campaign_id, variant, queued, sent, delivered, read_n, \
                 failed, replied) VALUES {}",
                values_list(variants.len(), 8, 1)
            );
            let mut vals = Vec::with_capacity(variants.len() * 8);
            for v in &variants {
                vals.extend([
                    Val::I(campaign),
                    Val::I(v.variant),
                    Val::I(v.queued),
                    Val::I(v.sent),
                    Val::I(v.delivered),
                    Val::I(v.read),
                    Val::I(v.failed),
                    Val::I(v.replied),
                ]);
            }
            self.tx_run(&mut tx, &text, vals).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }
}
