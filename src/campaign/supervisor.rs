//! CampaignSupervisor: one CampaignActor per running (or scheduled) campaign; starts the
//! stored ones at start-up, restarts one that fails, stops one that is paused or cancelled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::actor::{CampaignActor, CampaignArgs, CampaignMsg};
use crate::actors::{AccountRouter, Engine};
use crate::domain::CampaignStatus;

/// How long shutdown waits for campaign actors (each finishes its page).
const STOP_WAIT: Duration = Duration::from_secs(3);

pub struct CampaignSupervisor;

pub enum SupervisorMsg {
    /// Run campaign `id` if it is running or scheduled in the store (and not already).
    Start(i64),
    /// Stop the actor of campaign `id` (its status was changed in the store) and reply once
    /// it has finished its page.
    Stop(i64, RpcReplyPort<()>),
    /// Stop every campaign actor and reply.
    Shutdown(RpcReplyPort<()>),
}

pub struct SupervisorArgs {
    pub engine: Arc<Engine>,
    pub router: AccountRouter,
}

pub struct SupervisorState {
    engine: Arc<Engine>,
    router: AccountRouter,
    running: HashMap<i64, ActorRef<CampaignMsg>>,
    by_actor: HashMap<ractor::ActorId, i64>,
    stopping: bool,
}

impl CampaignSupervisor {
    pub async fn start(
        engine: Arc<Engine>,
        router: AccountRouter,
    ) -> anyhow::Result<ActorRef<SupervisorMsg>> {
        let (sup, _) =
            Actor::spawn(None, CampaignSupervisor, SupervisorArgs { engine, router }).await?;
        Ok(sup)
    }
}

impl SupervisorState {
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, id: i64) {
        if self.stopping {
            return;
        }
        if let Some(actor) = self.running.get(&id) {
            if matches!(
                actor.get_status(),
                ractor::ActorStatus::Running
                    | ractor::ActorStatus::Starting
                    | ractor::ActorStatus::Upgrading
            ) {
                return;
            }
            // It stopped itself (paused) and is on its way out: a new one takes over.
            self.by_actor.remove(&actor.get_id());
            self.running.remove(&id);
        }
        let row = match self.engine.store.campaign(id).await {
            Ok(Some(row))
                if matches!(
                    row.status,
                    CampaignStatus::Running | CampaignStatus::Scheduled
                ) =>
            {
                row
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(campaign = id, error = %e, "Loading a campaign failed; retrying.");
                drop(myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Start(id)));
                return;
            }
        };
        if self.engine.settings().account(&row.account).is_none() {
            self.fail(id, "the account is not configured").await;
            return;
        }
        let args = CampaignArgs {
            engine: self.engine.clone(),
            router: self.router.clone(),
            campaign: row,
        };
        match Actor::spawn_linked(None, CampaignActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), id);
                self.running.insert(id, actor);
            }
            Err(e) => {
                // A spec that does not decode: the campaign cannot run.
                tracing::error!(campaign = id, error = %e, "Campaign cannot start.");
                self.fail(id, &format!("cannot start: {e}")).await;
            }
        }
    }

    /// A running or scheduled campaign that cannot run: failed, with why.
    async fn fail(&self, id: i64, why: &str) {
        let now = self.engine.clock.now_ms();
        let _ = self
            .engine
            .store
            .set_campaign_status(
                id,
                &[CampaignStatus::Running, CampaignStatus::Scheduled],
                CampaignStatus::Failed,
                Some(why),
                now,
            )
            .await;
    }
}

impl Actor for CampaignSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            engine: args.engine,
            router: args.router,
            running: HashMap::new(),
            by_actor: HashMap::new(),
            stopping: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Campaigns that were running when the last process stopped resume from the store.
        match state.engine.store.active_campaigns().await {
            Ok(rows) => {
                for row in rows {
                    let _ = myself.cast(SupervisorMsg::Start(row.id));
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not load the running campaigns."),
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(id) => state.start(&myself, id).await,
            SupervisorMsg::Stop(id, reply) => {
                if let Some(actor) = state.running.remove(&id) {
                    state.by_actor.remove(&actor.get_id());
                    // Waits for the page in progress (bounded: ractor's own timed wait panics).
                    let _ = tokio::time::timeout(STOP_WAIT, actor.stop_and_wait(None, None)).await;
                }
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                state.running.clear();
                let _ = tokio::time::timeout(STOP_WAIT, myself.stop_children_and_wait(None, None))
                    .await;
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    state.running.remove(&id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    state.running.remove(&id);
                    tracing::error!(campaign = id, error = %err, "Campaign actor failed; restarting it from the store.");
                    if !state.stopping {
                        drop(
                            myself.send_after(Duration::from_secs(1), move || {
                                SupervisorMsg::Start(id)
                            }),
                        );
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
