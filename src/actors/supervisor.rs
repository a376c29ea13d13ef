//! RootSupervisor: starts one AccountActor per configured number and restarts any that fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::account::{AccountActor, AccountArgs, AccountMsg};
use super::{AccountRouter, Engine};
use crate::config::AccountSettings;

pub struct RootSupervisor;

pub enum RootMsg {
    /// Restart an account that failed (sent to self after a short delay).
    Restart(String),
    /// Stop every account (each flushes its sender) and reply when done.
    Shutdown(Duration, RpcReplyPort<()>),
    /// Answer at once: the watchdog's proof that the supervisor handles messages.
    Ping(RpcReplyPort<()>),
}

pub struct RootArgs {
    pub engine: Arc<Engine>,
    pub router: AccountRouter,
}

pub struct RootState {
    engine: Arc<Engine>,
    router: AccountRouter,
    /// ActorId → phone_number_id of each live account.
    accounts: HashMap<ractor::ActorId, String>,
    restarts: HashMap<String, u32>,
    stopping: bool,
}

impl RootSupervisor {
    pub async fn start(
        engine: Arc<Engine>,
        router: AccountRouter,
    ) -> anyhow::Result<ActorRef<RootMsg>> {
        let (root, _) = Actor::spawn(None, RootSupervisor, RootArgs { engine, router }).await?;
        Ok(root)
    }
}

async fn spawn_account(
    myself: &ActorRef<RootMsg>,
    state: &mut RootState,
    settings: AccountSettings,
) -> Result<(), ActorProcessingErr> {
    let pnid = settings.phone_number_id.clone();
    let (actor, _) = Actor::spawn_linked(
        None,
        AccountActor,
        AccountArgs {
            engine: state.engine.clone(),
            account: Arc::new(settings),
        },
        myself.get_cell(),
    )
    .await?;
    state.accounts.insert(actor.get_id(), pnid.clone().into());
    state.router.set(&pnid, actor);
    Ok(())
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            engine: args.engine.clone(),
            router: args.router,
            accounts: HashMap::new(),
            restarts: HashMap::new(),
            stopping: false,
        };
        for account in args.engine.settings().accounts.clone() {
            spawn_account(&myself, &mut state, account).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Ping(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
            }
            RootMsg::Restart(pnid) => {
                if state.stopping {
                    return Ok(());
                }
                if let Some(settings) = state.engine.settings().account(&pnid).cloned() {
                    if let Err(e) = spawn_account(&myself, state, settings).await {
                        tracing::error!(error = %e, "Account actor failed to restart; trying again.");
                        drop(
                            myself
                                .send_after(Duration::from_secs(1), move || RootMsg::Restart(pnid)),
                        );
                    }
                }
            }
            RootMsg::Shutdown(timeout, reply) => {
                state.stopping = true;
                let accounts: Vec<ActorRef<AccountMsg>> =
                    state.router.all().into_iter().map(|(_, a)| a).collect();
                let ms = timeout.as_millis() as u64;
                let flushes = accounts
                    .iter()
                    .map(|a| async move { ractor::call_t!(a, AccountMsg::Shutdown, ms) });
                futures::future::join_all(flushes).await;
                // Bounded here: ractor's own timed wait panics when it expires.
                let _ =
                    tokio::time::timeout(timeout, myself.stop_children_and_wait(None, None)).await;
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
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(pnid) = state.accounts.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        state.router.remove(&pnid);
        let n = state.restarts.entry(pnid.clone()).or_default();
        *n += 1;
        let delay = Duration::from_millis(100 * u64::from((*n).min(50)));
        tracing::error!(account = %pnid, reason = ?failure, restarts = *n, "Account actor stopped; restarting it.");
        drop(myself.send_after(delay, move || RootMsg::Restart(pnid)));
        Ok(())
    }
}
