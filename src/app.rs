//! Application wiring: store → writer → actors → HTTP; and the ordered shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ractor::ActorRef;
use tokio::net::TcpListener;

use crate::actors::{
    AccountMsg, AccountRouter, Clock, Engine, RootMsg, RootSupervisor, SystemClock,
};
use crate::behaviour::{FlowLogic, FlowRegistry};
use crate::config::Settings;
use crate::conversation::ConversationLogic;
use crate::ingress::{self, AppState};
use crate::store::{Store, WriterHandle};
use crate::whatsapp::client::GraphClient;

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long requests in flight at the signal may take to finish.
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// What the actors get to stop in, `since_signal` after the signal: the rest of the
/// deadline less a second for closing the store, and never less than half a second.
fn actors_deadline(since_signal: Duration) -> Duration {
    SHUTDOWN_DEADLINE
        .saturating_sub(since_signal)
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500))
}

/// A built, listening application.
pub struct Application {
    listener: TcpListener,
    port: u16,
    /// `http.admin_listen`: the admin API and metrics on their own address.
    admin_listener: Option<TcpListener>,
    admin_port: Option<u16>,
    state: AppState,
    root: ActorRef<RootMsg>,
    campaigns: ActorRef<crate::campaign::SupervisorMsg>,
    engine: Arc<Engine>,
    timers: tokio::task::JoinHandle<()>,
}

/// What can be swapped in (tests plug their own conversation logic and clock).
pub struct Plugins {
    /// The behaviour of conversations; by default the flows of `flows.dir`.
    pub logic: Option<Arc<dyn ConversationLogic>>,
    pub clock: Arc<dyn Clock>,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            logic: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, Plugins::default()).await
    }

    pub async fn build_with(settings: Settings, plugins: Plugins) -> anyhow::Result<Application> {
        for w in settings.warnings() {
            tracing::warn!("{w}");
        }
        let settings = Arc::new(settings);
        let (logic, flows): (Arc<dyn ConversationLogic>, _) = match plugins.logic {
            Some(logic) => (logic, None),
            None => {
                let providers = settings.ai.names();
                let (set, bots) = crate::behaviour::load_all(&settings.flows.dir, Some(&providers))
                    .map_err(|errors| {
                        anyhow::anyhow!(
                            "invalid flows in {}:\n{}",
                            settings.flows.dir.display(),
                            errors.join("\n")
                        )
                    })?;
                tracing::info!(
                    flows = set.flows().len(),
                    bots = bots.bots().len(),
                    "Flows loaded."
                );
                for account in &settings.accounts {
                    if let Some(bot) = account.default_bot.as_deref() {
                        if bots.get(bot).is_none() {
                            anyhow::bail!(
                                "accounts.default_bot: `{bot}` (account {}) is not a bot in {}",
                                account.phone_number_id,
                                settings.flows.dir.join("bots").display()
                            );
                        }
                    }
                }
                let registry = FlowRegistry::with_bots(set, bots, Some(providers));
                let logic = Arc::new(FlowLogic {
                    flows: registry.clone(),
                });
                (logic as Arc<dyn ConversationLogic>, Some(registry))
            }
        };
        let store = Store::connect(&settings.store.url, settings.store.max_connections)
            .await
            .with_context(|| {
                format!(
                    "Failed to open the store at {}",
                    crate::config::redact_url(&settings.store.url)
                )
            })?;
        store
            .migrate()
            .await
            .context("Failed to apply migrations")?;
        store
            .upsert_accounts(&settings.accounts)
            .await
            .context("Failed to record the accounts")?;
        if let Some(registry) = &flows {
            pin_stored_versions(registry, &store)
                .await
                .context("Failed to record the flow versions")?;
        }
        let writer = WriterHandle::spawn(&store, settings.store.writers)
            .context("Failed to start the store writer")?;
        let graph = GraphClient::new(
            &settings.whatsapp.graph_base_url,
            &settings.whatsapp.api_version,
            settings.whatsapp.request_timeout,
        )?;
        let engine = Arc::new(Engine {
            settings: arc_swap::ArcSwap::new(settings.clone()),
            reload_lock: tokio::sync::Mutex::new(()),
            store: store.clone(),
            writer: writer.clone(),
            logic,
            flows,
            graph,
            outcall: arc_swap::ArcSwap::from_pointee(
                crate::outcall::OutCaller::new(settings.flows.http_allow())
                    .context("Failed to build the HTTP client for flows")?,
            ),
            bots: crate::chatbot::provider::Providers::new(&settings.ai)
                .context("Failed to build the HTTP client for chatbots")?,
            media: crate::media::MediaFetcher::new(&settings)
                .context("Failed to build the HTTP client for media")?,
            payments: crate::payments::Gateways::new(
                &settings.payments,
                reqwest::Client::builder()
                    .build()
                    .context("Failed to build the HTTP client for payments")?,
            ),
            clock: plugins.clock,
            gates: Arc::default(),
            webhooks: Default::default(),
            reconciling: Default::default(),
        });
        let router = AccountRouter::default();
        {
            let router = router.clone();
            // Committed messages go straight from the writer to their account's actor.
            writer.set_dispatcher(move |items| router.dispatch(items));
        }
        // The webhook endpoints (those of accounts' `webhook_url` as configured), before any
        // change that could owe them an event is written.
        let configured: Vec<_> = settings
            .accounts
            .iter()
            .filter_map(|a| {
                Some((
                    a.phone_number_id.to_string(),
                    a.webhook_url.clone()?,
                    a.webhook_secret.clone()?,
                ))
            })
            .collect();
        engine
            .store
            .sync_config_hook_endpoints(&configured, engine.clock.now_ms())
            .await
            .context("writing the configured webhook endpoints")?;
        // Contact imports a restart cut short end as failed (their file is gone with the
        // process): the caller polling the job sees it and imports again.
        let cut = engine
            .store
            .interrupt_import_jobs(engine.clock.now_ms())
            .await
            .context("ending the contact imports a restart cut short")?;
        if cut > 0 {
            tracing::warn!(
                jobs = cut,
                "Contact imports cut short by a restart are marked failed."
            );
        }
        let root = RootSupervisor::start(engine.clone(), router.clone()).await?;
        // Payments a lost callback or a crash left unsettled, now and every 30 s.
        crate::ingress::payments::spawn_reconciler(&engine, router.clone());
        crate::hooksend::spawn(engine.clone());
        // Retention: old rows and media deleted in small batches, every `retention.every`.
        crate::ingress::retention::spawn(&engine);
        // The analytics snapshots, kept current off the message path.
        crate::ingress::analytics_fold::spawn(engine.clone());
        // Freed memory back to the system every few minutes (see `metrics::GIVE_BACK_EVERY`).
        crate::metrics::spawn_give_back();
        // Due timers and the inbox lag gauge: background loops that stop with the server.
        let timers = tokio::spawn({
            let (engine, router) = (engine.clone(), router.clone());
            async move {
                tokio::join!(
                    run_timers(engine.clone(), router),
                    read_inbox_backlog(engine)
                );
            }
        });
        if let Some(flows) = engine.flows.clone() {
            tokio::spawn(reload_on_sighup(engine.clone()));
            if settings.flows.watch {
                tokio::spawn(watch_flows(
                    engine.clone(),
                    flows,
                    settings.flows.dir.clone(),
                ));
            }
        }
        let addr: SocketAddr = settings.http.listen.parse().context("http.listen")?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("Failed to bind http.listen {addr}"))?;
        let port = listener.local_addr()?.port();
        let admin_listener = match &settings.http.admin_listen {
            Some(admin) => {
                let addr: SocketAddr = admin.parse().context("http.admin_listen")?;
                Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("Failed to bind http.admin_listen {addr}"))?,
                )
            }
            None => None,
        };
        let admin_port = match &admin_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        let campaigns =
            crate::campaign::CampaignSupervisor::start(engine.clone(), router.clone()).await?;
        let state = AppState::new(engine.clone(), router);
        let _ = state.campaigns.set(campaigns.clone());
        Ok(Application {
            listener,
            port,
            admin_listener,
            admin_port,
            state,
            root,
            campaigns,
            engine,
            timers,
        })
    }

    /// The port really bound (tests ask for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `http.admin_listen` really bound, when it is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    /// Serve until `shutdown` completes, then drain: refuse new webhooks, finish the ones in
    /// flight (they are committed before they are answered), stop the actors, stop sending.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            root,
            campaigns,
            engine,
            timers,
            port,
            admin_listener,
            admin_port,
        } = self;
        tracing::info!(
            port,
            admin_port,
            accounts = engine.settings().accounts.len(),
            "Parley is listening."
        );
        let limits = ingress::listener::Limits::of(&engine.settings().http);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = {
            let (public, private) = match admin_listener {
                Some(admin) => {
                    let (public, private) = ingress::split_routers(state.clone());
                    (public, Some((admin, private)))
                }
                None => (ingress::router(state.clone()), None),
            };
            let stop = stop_rx.clone();
            async move {
                let private = async {
                    if let Some((admin, router)) = private {
                        ingress::listener::serve(admin, router, limits, stop.clone()).await;
                    }
                };
                tokio::join!(
                    ingress::listener::serve(listener, public, limits, stop_rx),
                    private
                );
            }
        };
        // When the signal came: the shutdown deadline counts from it.
        let (signalled_tx, signalled) = tokio::sync::watch::channel(None::<Instant>);
        let drain_state = state.clone();
        let supervision = crate::systemd::enabled().then(|| {
            tokio::spawn(crate::systemd::supervise(
                engine.clone(),
                root.clone(),
                state.router.clone(),
            ))
        });
        tokio::spawn(async move {
            shutdown.await;
            crate::systemd::stopping();
            if let Some(loop_) = supervision {
                loop_.abort();
            }
            let _ = signalled_tx.send(Some(Instant::now()));
            tracing::info!("Shutting down: refusing new webhooks, draining.");
            drain_state.start_draining();
            let _ = stop_tx.send(true);
        });
        // Migrated, actors running, listener bound (connections queue until `serve` polls).
        crate::systemd::ready(engine.flows.as_ref());
        // From here a status webhook can settle a send the previous process left ambiguous.
        engine.webhooks.open(engine.clock.now_ms());
        let mut watch = signalled.clone();
        let cut_off = async move {
            let at = watch.wait_for(Option::is_some).await.map(|at| *at);
            match at {
                Ok(Some(at)) => tokio::time::sleep_until((at + HTTP_DRAIN).into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = server => {}
            // Requests in flight get HTTP_DRAIN to finish; a client that holds its request
            // open (say a body that never ends) does not hold the shutdown past it.
            () = cut_off => {
                tracing::warn!("Requests still open {HTTP_DRAIN:?} after the signal were cut off.");
            }
        }
        let signalled_at = (*signalled.borrow()).unwrap_or_else(Instant::now);
        timers.abort();
        // Campaigns first: each finishes its page, so nothing is handed to a conversation
        // after the accounts stop.
        let _ = ractor::call_t!(campaigns, crate::campaign::SupervisorMsg::Shutdown, 3_000);
        campaigns.stop(None);
        let actors_deadline = actors_deadline(signalled_at.elapsed());
        let stopped = ractor::call_t!(
            root,
            |reply| RootMsg::Shutdown(actors_deadline, reply),
            actors_deadline.as_millis() as u64 + 500
        );
        if stopped.is_err() {
            tracing::warn!("Actors did not stop in time; what they had not committed is replayed on the next start.");
        }
        root.stop(None);
        engine.store.close().await;
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// Keep the inbox lag gauge true: read from the store, it counts what a restart left to
/// replay and what was dead-lettered, which counts of this process's hand-overs cannot.
async fn read_inbox_backlog(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        match engine.store.inbox_backlog().await {
            Ok((n, oldest)) => {
                let m = crate::metrics::metrics();
                m.inbox_pending
                    .store(n, std::sync::atomic::Ordering::Relaxed);
                let age = oldest.map_or(0, |at| (crate::store::now_ms() - at).max(0));
                m.inbox_oldest_pending_ms
                    .store(age, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "Inbox backlog read failed."),
        }
    }
}

/// Fire due timers: hand each to its conversation; one that is still pending after a while is
/// handed over again (the conversation commits "fired" with its step, so it acts once).
async fn run_timers(engine: Arc<Engine>, router: AccountRouter) {
    let mut handed: HashMap<i64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = engine.clock.now_ms();
        let due = match engine.store.due_timers(now, 1000).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "Timer scan failed.");
                continue;
            }
        };
        handed.retain(|_, at| at.elapsed() < Duration::from_secs(30));
        for t in due {
            if handed.contains_key(&t.id) {
                continue;
            }
            if let Some(account) = router.get(&t.account) {
                handed.insert(t.id, Instant::now());
                let _ = account.cast(AccountMsg::Timer(t));
            }
        }
    }
}

/// SIGHUP reloads the flows (all valid files, or nothing changes) and the configuration (the
/// live keys applied, the others named; see [`crate::reload`]).
async fn reload_on_sighup(engine: Arc<Engine>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = crate::reload::reload(&engine).await;
        }
    }
    #[cfg(not(unix))]
    let _ = engine;
}

/// How often the flows folder is looked at, and how long it must stay unchanged before a
/// reload (an editor's save, or a deploy copying many files, settles first).
const WATCH_PERIOD: Duration = Duration::from_millis(500);
const WATCH_QUIET: Duration = Duration::from_secs(1);

/// Reload when the flow files change (`flows.watch`): polls names, sizes and modification
/// times of the folder and its subfolders (`bots/`: a file edited in place changes neither
/// the folder's entry nor its listing), debounced, so it works on any filesystem and needs no
/// extra thread.
async fn watch_flows(
    engine: Arc<Engine>,
    flows: crate::behaviour::FlowRegistry,
    dir: std::path::PathBuf,
) {
    type Entry = (std::path::PathBuf, u64, Option<std::time::SystemTime>);
    fn walk(dir: &std::path::Path, depth: usize, out: &mut Vec<Entry>) {
        let Ok(it) = std::fs::read_dir(dir) else {
            return;
        };
        for e in it.filter_map(Result::ok) {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && depth < 4 {
                walk(&e.path(), depth + 1, out);
            }
            out.push((e.path(), meta.len(), meta.modified().ok()));
        }
    }
    let snapshot = |dir: &std::path::Path| -> Vec<Entry> {
        let mut v = Vec::new();
        walk(dir, 0, &mut v);
        v.sort();
        v
    };
    let mut seen = snapshot(&dir);
    let mut changed_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(WATCH_PERIOD).await;
        let now = snapshot(&dir);
        if now != seen {
            seen = now;
            changed_at = Some(Instant::now());
            continue;
        }
        if changed_at.is_some_and(|t| t.elapsed() >= WATCH_QUIET) {
            changed_at = None;
            let _ = crate::reload::reload_flows(&engine, &flows, &dir).await;
        }
    }
}

/// Keep the current flow versions in the store, and load back the earlier ones that
/// unfinished sessions still run, so they finish on the version they started on.
async fn pin_stored_versions(
    registry: &crate::behaviour::FlowRegistry,
    store: &Store,
) -> Result<(), crate::store::StoreError> {
    let current = registry.sources();
    store.save_flow_versions(&current).await?;
    let mut pinned = Vec::new();
    for (id, version, source) in store.flow_versions_in_use().await? {
        if current.iter().any(|(i, v, _)| *i == id && *v == version) {
            continue;
        }
        let name = format!("{id}@{version} (stored)");
        match crate::flow::FlowSet::load(&[(name, source)]) {
            Ok(set) if set.get(&id).is_some_and(|f| f.version == version) => pinned.push(set),
            Ok(_) => {
                tracing::warn!(flow = %id, %version, "A stored flow version did not load as itself; its sessions move to the current one.")
            }
            Err(errors) => {
                tracing::warn!(flow = %id, %version, ?errors, "A stored flow version no longer validates; its sessions move to the current one.")
            }
        }
    }
    if !pinned.is_empty() {
        tracing::info!(
            versions = pinned.len(),
            "Earlier flow versions loaded for the sessions pinned to them."
        );
    }
    registry.add_pinned(pinned);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_actors_deadline_counts_from_the_signal() {
        // However long the daemon ran before, a prompt signal leaves them 9 s.
        assert_eq!(
            super::actors_deadline(Duration::ZERO),
            Duration::from_secs(9)
        );
        assert_eq!(
            super::actors_deadline(Duration::from_secs(3)),
            Duration::from_secs(6)
        );
        assert_eq!(
            super::actors_deadline(Duration::from_secs(30)),
            Duration::from_millis(500)
        );
    }
}
