//! The actor tree: RootSupervisor → AccountActor (one per business number) →
//! ConversationActor (one per active customer). Actors are thin shells: the state lives in the
//! store, the logic in [`crate::conversation`].

mod account;
mod conversation;
mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use account::{AccountActor, AccountMsg};
pub use conversation::{CommandOutcome, ConversationActor, ConversationMsg};
pub use supervisor::{RootMsg, RootSupervisor};

pub use crate::engine::{Clock, Engine, SystemClock, WebhooksOpen};

/// phone_number_id → its AccountActor; read by the ingress and the writer's dispatcher.
#[derive(Clone, Default)]
pub struct AccountRouter(Arc<RwLock<HashMap<String, ractor::ActorRef<AccountMsg>>>>);

impl AccountRouter {
    pub fn get(&self, phone_number_id: &str) -> Option<ractor::ActorRef<AccountMsg>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(phone_number_id)
            .cloned()
    }

    /// Hand committed inbox messages to their accounts' actors (the writer calls this once
    /// their batch has committed). An account whose actor is restarting leaves its rows
    /// pending: its restart sweeps them up.
    pub fn dispatch(&self, items: Vec<crate::store::InboxDispatch>) {
        let accounts = self.0.read().unwrap_or_else(|e| e.into_inner());
        for item in items {
            match accounts.get(item.account.as_str()) {
                Some(account) => {
                    let _ = account.cast(AccountMsg::Dispatch(item));
                }
                None => {
                    tracing::debug!("No running account for a committed event; left for the sweep.")
                }
            }
        }
    }

    pub fn set(&self, phone_number_id: &str, actor: ractor::ActorRef<AccountMsg>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(phone_number_id.to_string(), actor);
    }

    pub fn remove(&self, phone_number_id: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(phone_number_id);
    }

    pub fn all(&self) -> Vec<(String, ractor::ActorRef<AccountMsg>)> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
