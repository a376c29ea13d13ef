//! A campaign's moves and what the business's systems hear of them: `campaign.paused` and
//! `campaign.finished` are written in the transaction that moves the campaign (with its
//! counters as they stood), `campaign.progress` on its own while it runs.

use super::sql::{in_list, Val};
use super::*;
use crate::domain::CampaignStatus;
use crate::hooks::EventType;

impl Store {
    /// Move a campaign from one of `from` to `to`; false if it was in none of them.
    pub async fn set_campaign_status(
        &self,
        id: i64,
        from: &[CampaignStatus],
        to: CampaignStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut vals = vec![
            Val::S(to.as_str().to_string()),
            Val::OptS(reason.map(str::to_string)),
            Val::I(now),
            Val::I(id),
        ];
        vals.extend(from.iter().map(|s| Val::S(s.as_str().to_string())));
        let started = if to == CampaignStatus::Running {
            ", started_at = COALESCE(started_at, $3)"
        } else {
            ""
        };
        let finished = if to.is_finished() {
            ", finished_at = $3"
        } else {
            ""
        };
        let update = format!(
            "UPDATE campaigns SET status = $1, pause_reason = $2, updated_at = $3{started}{finished} \
             WHERE id = $4 AND status IN ({})",
            in_list(from.len(), 5)
        );
        let event_type = match to {
            CampaignStatus::Paused => Some(EventType::CampaignPaused),
            s if s.is_finished() => Some(EventType::CampaignFinished),
            _ => None,
        };
        // Told only when someone listens (a flag while nobody subscribes).
        let told = match event_type.filter(|_| self.hook_subs().any_active()) {
            Some(t) => self
                .campaign(id)
                .await?
                .filter(|c| self.hook_subs().wanted(&c.account, t))
                .map(|c| (t, c)),
            None => None,
        };
        let Some((event_type, campaign)) = told else {
            return Ok(self.run(&update, vals).await? > 0);
        };
        let (counters, _) = self.campaign_counters(id).await?;
        let mut tx = self.pool().begin().await?;
        let moved = self.tx_run(&mut tx, &update, vals).await? > 0;
        if moved {
            let e = NewHookEvent {
                account: campaign.account.to_string(),
                user_key: None,
                event_type,
                data: serde_json::json!({
                    "campaign_id": id,
                    "name": campaign.name,
                    "status": to.as_str(),
                    "reason": reason,
                    "counters": counters,
                }),
                dedup_key: format!("campaign:{id}:{}:{now}", to.as_str()),
                at: now,
            };
            self.tx_hook_event(&mut tx, &e).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// `campaign.progress` of a running campaign, its counters as they stand (if someone
    /// wants it). `tick` names the report: the same tick twice makes one event.
    pub async fn campaign_progress(
        &self,
        campaign: &CampaignRow,
        tick: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        if !self
            .hook_subs()
            .wanted(&campaign.account, EventType::CampaignProgress)
        {
            return Ok(());
        }
        let (mut counters, _) = self.campaign_counters(campaign.id).await?;
        counters.total = counters.total.max(campaign.total);
        self.hook_event(&NewHookEvent {
            account: campaign.account.to_string(),
            user_key: None,
            event_type: EventType::CampaignProgress,
            data: serde_json::json!({
                "campaign_id": campaign.id,
                "name": campaign.name,
                "status": CampaignStatus::Running.as_str(),
                "counters": counters,
            }),
            dedup_key: format!("campaign:{}:progress:{tick}", campaign.id),
            at: now,
        })
        .await
    }
}
