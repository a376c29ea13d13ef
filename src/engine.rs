//! What every actor and every sender shares: the settings in force, the store and its
//! writer, the behaviours, the Graph API client, the gates, the clock.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::conversation::ConversationLogic;
use crate::store::{Store, WriterHandle};
use crate::whatsapp::client::GraphClient;

/// Where time comes from (tests inject their own).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

/// What every actor shares.
pub struct Engine {
    /// The settings in force: those the daemon started with, plus the live keys a reload
    /// applied since ([`crate::reload`]). Read through [`Engine::settings`] where a value is
    /// used, so a reload reaches it: one atomic load, no lock.
    pub(crate) settings: ArcSwap<Settings>,
    /// One reload at a time (SIGHUP and the admin API may ask together).
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    pub store: Store,
    pub writer: WriterHandle,
    pub logic: Arc<dyn ConversationLogic>,
    /// The flows behind `logic`, for reloads (None when a test plugs its own logic).
    pub flows: Option<crate::behaviour::FlowRegistry>,
    pub graph: GraphClient,
    /// Flows' calls to the business's own systems (replaced whole when a reload changes
    /// `flows.http_allow`, so no pooled connection outlives the rule it was made under).
    pub outcall: ArcSwap<crate::outcall::OutCaller>,
    /// The model providers chatbots call.
    pub bots: crate::chatbot::provider::Providers,
    /// Inbound media downloads and voice transcription.
    pub media: crate::media::MediaFetcher,
    /// The payment gateways (`[payments.providers.*]`).
    pub payments: crate::payments::Gateways,
    pub clock: Arc<dyn Clock>,
    /// The SendGates of the running accounts.
    pub gates: Arc<crate::sendgate::GateRegistry>,
    /// When this process began answering webhooks.
    pub webhooks: WebhooksOpen,
    /// Held by the payments' reconciliation pass: one pass at a time.
    pub reconciling: tokio::sync::Mutex<()>,
}

/// When this process began answering webhooks (engine-clock ms), once it has.
///
/// A send in flight when the previous process died is settled by a status webhook echoing its
/// outbox id. That webhook cannot reach a process that is down or still starting (Meta holds
/// it and redelivers it later), so the wait before such a send is made again counts from here,
/// not from the send.
#[derive(Debug)]
pub struct WebhooksOpen(tokio::sync::watch::Sender<Option<i64>>);

impl Default for WebhooksOpen {
    fn default() -> Self {
        WebhooksOpen(tokio::sync::watch::Sender::new(None))
    }
}

impl WebhooksOpen {
    /// Webhooks are answered from `at` on (only the first call counts).
    pub fn open(&self, at: i64) {
        self.0.send_if_modified(|since| {
            let first = since.is_none();
            if first {
                *since = Some(at);
            }
            first
        });
    }

    /// When webhooks began to be answered; waits until they are.
    pub async fn since(&self) -> i64 {
        let mut rx = self.0.subscribe();
        if let Ok(since) = rx.wait_for(Option::is_some).await {
            if let Some(at) = *since {
                return at;
            }
        }
        // Not reached (`self` holds the sender): webhooks never open.
        std::future::pending().await
    }
}

impl Engine {
    /// The settings in force now. Keep the guard short (no `.await` while holding it); for
    /// longer, take [`Engine::settings_arc`].
    pub fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.settings.load()
    }

    pub fn settings_arc(&self) -> Arc<Settings> {
        self.settings.load_full()
    }
}
