//! Outbound webhooks' rows: endpoints (subscriptions), events (the transactional outbox),
//! deliveries (an event to an endpoint) and attempts (the delivery log).
//!
//! An event is written in the transaction of the change it reports — by the writer for a
//! conversation's changes (inbound messages, statuses, handoffs), in the commerce
//! transactions for orders and payments — and only when an active endpoint wants it: the
//! [`HookSubs`] view of the endpoints is read there, in memory, so the hot path pays nothing
//! while nobody subscribes. Its deliveries, one per endpoint that wanted it, are inserted with
//! it; the sender (`hooksend`) then updates them through the pool (the writer never does: it
//! only inserts rows no one else has seen).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use super::exec::{exec, exec_query, int, Col, SyncTx};
use super::sql::Val;
use super::*;
use crate::hooks::{new_message_id, EventFilter, EventType};

/// An event to write with the change that caused it.
#[derive(Debug, Clone)]
pub struct NewHookEvent {
    pub account: String,
    /// The conversation concerned, if any: the event gets the next `sequence` of it.
    pub user_key: Option<String>,
    pub event_type: EventType,
    /// The event's `data` (the account, the conversation and the sequence are added).
    pub data: serde_json::Value,
    /// The same change written again makes no second event.
    pub dedup_key: String,
    pub at: i64,
}

/// One active endpoint as the writers see it.
#[derive(Debug, Clone)]
struct SubView {
    id: String,
    account: Option<String>,
    filter: EventFilter,
}

/// The active endpoints, in memory: who wants which event of which account. Loaded from
/// `hook_endpoints` at start and after every change to them, so a reload of the config or
/// of flows leaves it as it is.
///
/// Reloads are numbered as they begin, and a list read by a reload is put in place only if no
/// reload begun after it has put its own: two reloads can overlap (the webhook sender's at its
/// start and an API change's), and the one that began first, read before the change was
/// committed, must not land last and hide the new endpoint.
#[derive(Debug, Default)]
pub struct HookSubs {
    any: AtomicBool,
    began: std::sync::atomic::AtomicU64,
    /// The list in place, and the number of the reload that read it.
    subs: RwLock<(u64, Vec<SubView>)>,
}

impl HookSubs {
    /// The endpoints that want `event` of `account`.
    pub fn endpoints_for(&self, account: &str, event: EventType) -> Vec<String> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        subs.1
            .iter()
            .filter(|s| s.account.as_deref().is_none_or(|a| a == account) && s.filter.wants(event))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Is any endpoint active?
    pub fn any_active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Does anyone want `event` of `account`? (Cheap: a flag while nobody subscribes.)
    pub fn wanted(&self, account: &str, event: EventType) -> bool {
        self.any.load(Ordering::Acquire) && !self.endpoints_for(account, event).is_empty()
    }

    /// Number a reload about to read the endpoints (before its read starts).
    fn begin(&self) -> u64 {
        self.began.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Put in place what reload `reload` read, unless a later-begun reload's list is there.
    fn set(&self, reload: u64, subs: Vec<SubView>) {
        let mut guard = self.subs.write().unwrap_or_else(|e| e.into_inner());
        if reload < guard.0 {
            return;
        }
        self.any.store(!subs.is_empty(), Ordering::Release);
        *guard = (reload, subs);
    }
}

/// The view of each store (by URL), shared by every handle on it and by its writers.
fn registry() -> &'static Mutex<HashMap<String, Arc<HookSubs>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<HookSubs>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

pub(crate) fn subs_for_url(url: &str) -> Arc<HookSubs> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(url.to_string())
        .or_default()
        .clone()
}

thread_local! {
    /// The view of the store this writer thread writes (set when the writer starts).
    static WRITER_SUBS: std::cell::RefCell<Option<Arc<HookSubs>>> = const { std::cell::RefCell::new(None) };
}

/// Bind this writer thread to its store's view.
pub(crate) fn bind_writer_thread(url: &str) {
    let subs = subs_for_url(url);
    WRITER_SUBS.with(|s| *s.borrow_mut() = Some(subs));
}

/// The view this writer thread writes by.
pub(crate) fn writer_subs() -> Option<Arc<HookSubs>> {
    WRITER_SUBS.with(|s| s.borrow().clone())
}

/// An event's row. `sequence` comes from [`NEXT_SEQUENCE`] for a conversation's event.
const INSERT_EVENT: &str = "INSERT INTO hook_events (id, account, user_key, sequence, event_type, payload, dedup_key, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (dedup_key) DO NOTHING";
/// The conversation's next event sequence, unless the event (by its dedup key) is written
/// already: no row then. The counter's row is locked until the transaction ends, so two
/// transactions writing events of one conversation take 1, 2, … in turn, and it outlives the
/// events that retention deletes (a sequence never goes back).
///
/// Lock order (PostgreSQL): a writer takes these rows after every other row of its batch, in
/// (account, user_key) order; a pool transaction (commerce) takes one conversation's, after
/// every row a writer may hold (what it changes afterwards — orders, carts, stock,
/// subscriptions — no writer touches). So whoever waits for a counter holds nothing its
/// holder will wait for: no deadlock.
const NEXT_SEQUENCE: &str = "INSERT INTO hook_sequences (account, user_key, last_sequence) \
     SELECT $1, $2, 1 WHERE NOT EXISTS (SELECT 1 FROM hook_events WHERE dedup_key = $3) \
     ON CONFLICT (account, user_key) DO UPDATE SET last_sequence = hook_sequences.last_sequence + 1 \
     RETURNING last_sequence";
const INSERT_DELIVERY: &str = "INSERT INTO hook_deliveries (event_id, endpoint_id, state, attempts, next_at, created_at, updated_at) \
     SELECT $1, $2, 'pending', 0, $3, $3, $3 WHERE EXISTS (SELECT 1 FROM hook_events WHERE id = $1) \
     ON CONFLICT (event_id, endpoint_id) DO NOTHING";

fn sequence_vals(e: &NewHookEvent, user_key: &str) -> Vec<Val> {
    vec![
        Val::S(e.account.clone()),
        Val::S(user_key.to_string()),
        Val::S(e.dedup_key.clone()),
    ]
}

fn event_vals(id: &str, e: &NewHookEvent, sequence: Option<i64>) -> Vec<Val> {
    vec![
        Val::S(id.to_string()),
        Val::S(e.account.clone()),
        Val::OptS(e.user_key.clone()),
        Val::OptI(sequence),
        Val::S(e.event_type.as_str().to_string()),
        Val::S(e.data.to_string()),
        Val::S(e.dedup_key.clone()),
        Val::I(e.at),
    ]
}

/// Write, in the writer's open transaction and after all its other rows, the events someone
/// wants, with their deliveries: in (account, conversation) order, each conversation's in the
/// order given (see [`NEXT_SEQUENCE`] on why).
pub(crate) fn write_hook_events<'a>(
    tx: &mut dyn SyncTx,
    events: impl IntoIterator<Item = &'a NewHookEvent>,
) -> Result<(), StoreError> {
    let Some(subs) = writer_subs() else {
        return Ok(());
    };
    if !subs.any_active() {
        return Ok(());
    }
    let mut wanted: Vec<(&NewHookEvent, Vec<String>)> = events
        .into_iter()
        .map(|e| (e, subs.endpoints_for(&e.account, e.event_type)))
        .filter(|(_, endpoints)| !endpoints.is_empty())
        .collect();
    wanted.sort_by(|(a, _), (b, _)| (&a.account, &a.user_key).cmp(&(&b.account, &b.user_key)));
    for (e, endpoints) in wanted {
        let sequence = match &e.user_key {
            Some(user_key) => {
                let rows = exec_query(tx, NEXT_SEQUENCE, sequence_vals(e, user_key), &[Col::Int])?;
                match rows.first() {
                    Some(row) => Some(int(row, 0)),
                    None => continue, // written before
                }
            }
            None => None,
        };
        let id = new_message_id();
        if exec(tx, INSERT_EVENT, event_vals(&id, e, sequence))? == 0 {
            continue;
        }
        for ep in endpoints {
            exec(
                tx,
                INSERT_DELIVERY,
                vec![Val::S(id.clone()), Val::S(ep), Val::I(e.at)],
            )?;
        }
    }
    Ok(())
}

/// The events of freshly inserted inbox rows (`inserted`: their seqs by account and dedup
/// key) that someone wants: `message.received` for a message, `message.status` for a status.
pub(crate) fn inbox_events(
    appends: &[&Vec<NewInboxRow>],
    inserted: &HashMap<(&str, &str), i64>,
) -> Vec<NewHookEvent> {
    let Some(subs) = writer_subs() else {
        return Vec::new();
    };
    if !subs.any.load(Ordering::Acquire) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for r in appends.iter().flat_map(|rows| rows.iter()) {
        let Some(seq) = inserted.get(&(r.account.as_str(), r.dedup_key.as_str())) else {
            continue;
        };
        let event_type = match r.kind {
            crate::domain::InboxKind::Message => EventType::MessageReceived,
            crate::domain::InboxKind::Status => EventType::MessageStatus,
            _ => continue,
        };
        if !subs.wanted(&r.account, event_type) {
            continue;
        }
        let data = match (event_type, &r.dispatch, &r.status) {
            (EventType::MessageReceived, Some(m), _) => serde_json::json!({
                "wamid": m.wamid,
                "from": m.from,
                "user_id": m.user_id,
                "profile_name": m.profile_name,
                "timestamp": m.timestamp,
                "context": m.context,
                "content": m.content,
                "inbox_seq": seq,
            }),
            (EventType::MessageStatus, _, Some(s)) => serde_json::json!({
                "wamid": r.wamid.as_deref(),
                "status": s.status,
                "at_ms": s.at_ms,
                "outbox_id": s.outbox_id,
                "error_code": s.error_code,
                "error_detail": s.error_detail,
            }),
            _ => serde_json::json!({ "wamid": r.wamid.as_deref() }),
        };
        out.push(NewHookEvent {
            account: r.account.to_string(),
            user_key: r.user_key.as_deref().map(str::to_string),
            event_type,
            data,
            dedup_key: format!("inbox:{}:{}", r.account.as_str(), r.dedup_key),
            at: r.received_at,
        });
    }
    out
}

/// An endpoint as stored (its secrets kept secret).
#[derive(Debug, Clone)]
pub struct HookEndpoint {
    pub id: String,
    pub account: Option<String>,
    pub url: String,
    pub events: EventFilter,
    pub active: bool,
    pub secret: SecretString,
    pub prev_secret: Option<SecretString>,
    pub prev_secret_until: Option<i64>,
    pub description: String,
    pub failing_since: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl HookEndpoint {
    /// The secrets that sign at `now`: the current one, and the previous one while it lasts.
    pub fn signing_secrets(&self, now: i64) -> Vec<&SecretString> {
        let mut out = vec![&self.secret];
        if let (Some(prev), Some(until)) = (&self.prev_secret, self.prev_secret_until) {
            if now < until {
                out.push(prev);
            }
        }
        out
    }
}

const ENDPOINT_COLUMNS: &str = "id, account, url, events, active, secret, prev_secret, prev_secret_until, description, failing_since, disabled_reason, created_at, updated_at";

fn endpoint_of(r: &sqlx::any::AnyRow) -> Result<HookEndpoint, StoreError> {
    let events: String = r.try_get("events")?;
    Ok(HookEndpoint {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        url: r.try_get("url")?,
        events: EventFilter::parse_stored(&events)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        active: r.try_get::<i64, _>("active")? != 0,
        secret: SecretString::from(r.try_get::<String, _>("secret")?),
        prev_secret: r
            .try_get::<Option<String>, _>("prev_secret")?
            .map(SecretString::from),
        prev_secret_until: r.try_get("prev_secret_until")?,
        description: r.try_get("description")?,
        failing_since: r.try_get("failing_since")?,
        disabled_reason: r.try_get("disabled_reason")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A new endpoint.
pub struct NewEndpoint<'a> {
    pub id: &'a str,
    pub account: Option<&'a str>,
    pub url: &'a str,
    pub events: &'a EventFilter,
    pub secret: &'a SecretString,
    pub description: &'a str,
    pub now: i64,
}

/// What an update changes (None: kept).
#[derive(Debug, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub events: Option<EventFilter>,
    pub active: Option<bool>,
    pub description: Option<String>,
}

impl Store {
    /// The in-memory view of the active endpoints (shared by every handle on this store).
    pub fn hook_subs(&self) -> Arc<HookSubs> {
        subs_for_url(self.url())
    }

    /// Read the active endpoints again into [`HookSubs`].
    pub async fn reload_hook_subs(&self) -> Result<(), StoreError> {
        let reload = self.hook_subs().begin();
        let rows = self
            .fetch(
                "SELECT id, account, events FROM hook_endpoints WHERE active = 1",
                vec![],
            )
            .await?;
        let mut subs = Vec::with_capacity(rows.len());
        for r in &rows {
            let events: String = r.try_get("events")?;
            subs.push(SubView {
                id: r.try_get("id")?,
                account: r.try_get("account")?,
                filter: EventFilter::parse_stored(&events)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            });
        }
        self.hook_subs().set(reload, subs);
        Ok(())
    }

    /// Write an event (and its deliveries) in a pool transaction, if someone wants it.
    pub(super) async fn tx_hook_event(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        e: &NewHookEvent,
    ) -> Result<(), StoreError> {
        let endpoints = self.hook_subs().endpoints_for(&e.account, e.event_type);
        self.tx_hook_event_to(tx, e, &endpoints).await
    }

    pub(super) async fn tx_hook_event_to(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        e: &NewHookEvent,
        endpoints: &[String],
    ) -> Result<(), StoreError> {
        if endpoints.is_empty() {
            return Ok(());
        }
        let sequence = match &e.user_key {
            Some(user_key) => {
                let rows = self
                    .tx_fetch(tx, NEXT_SEQUENCE, sequence_vals(e, user_key))
                    .await?;
                match rows.first() {
                    Some(row) => Some(row.try_get::<i64, _>(0)?),
                    None => return Ok(()), // written before
                }
            }
            None => None,
        };
        let id = new_message_id();
        if self
            .tx_run(tx, INSERT_EVENT, event_vals(&id, e, sequence))
            .await?
            == 0
        {
            return Ok(());
        }
        for ep in endpoints {
            self.tx_run(
                tx,
                INSERT_DELIVERY,
                vec![Val::S(id.clone()), Val::S(ep.clone()), Val::I(e.at)],
            )
            .await?;
        }
        Ok(())
    }

    /// Write an event on its own (nothing else changes with it), if someone wants it.
    pub async fn hook_event(&self, e: &NewHookEvent) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        self.tx_hook_event(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A test event for one endpoint only.
    pub async fn hook_test_event(
        &self,
        endpoint: &str,
        e: &NewHookEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        self.tx_hook_event_to(&mut tx, e, &[endpoint.to_string()])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_hook_endpoint(&self, n: &NewEndpoint<'_>) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO hook_endpoints (id, account, url, events, active, secret, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $7)",
            vec![
                n.id.into(),
                Val::OptS(n.account.map(str::to_string)),
                n.url.into(),
                Val::S(n.events.stored()),
                Val::S(n.secret.expose_secret().to_string()),
                n.description.into(),
                Val::I(n.now),
            ],
        )
        .await?;
        self.reload_hook_subs().await
    }

    pub async fn hook_endpoint(&self, id: &str) -> Result<Option<HookEndpoint>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM hook_endpoints WHERE id = $1"),
                vec![id.into()],
            )
            .await?;
        rows.first().map(endpoint_of).transpose()
    }

    /// Endpoints by id, after `after`, `limit` of them; of one account (and those of all
    /// accounts) when given.
    pub async fn hook_endpoints(
        &self,
        account: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<HookEndpoint>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM hook_endpoints \
                     WHERE ($1 IS NULL OR account IS NULL OR account = $1) AND id > $2 ORDER BY id LIMIT $3"
                ),
                vec![
                    Val::OptS(account.map(str::to_string)),
                    after.unwrap_or("").into(),
                    Val::I(limit),
                ],
            )
            .await?;
        rows.iter().map(endpoint_of).collect()
    }

    /// Change an endpoint; whether it exists. Turning it active clears its failure record.
    pub async fn update_hook_endpoint(
        &self,
        id: &str,
        c: &EndpointChange,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .run(
                "UPDATE hook_endpoints SET url = COALESCE($1, url), events = COALESCE($2, events), \
                 active = COALESCE($3, active), description = COALESCE($4, description), \
                 failing_since = CASE WHEN $3 = 1 THEN NULL ELSE failing_since END, \
                 disabled_reason = CASE WHEN $3 = 1 THEN NULL ELSE disabled_reason END, \
                 updated_at = $5 WHERE id = $6",
                vec![
                    Val::OptS(c.url.clone()),
                    Val::OptS(c.events.as_ref().map(EventFilter::stored)),
                    Val::OptI(c.active.map(i64::from)),
                    Val::OptS(c.description.clone()),
                    Val::I(now),
                    id.into(),
                ],
            )
            .await?;
        self.reload_hook_subs().await?;
        Ok(n > 0)
    }

    /// Delete an endpoint with its deliveries and their log; whether it existed.
    pub async fn delete_hook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        self.tx_run(
            &mut tx,
            "DELETE FROM hook_attempts WHERE endpoint_id = $1",
            vec![id.into()],
        )
        .await?;
        self.tx_run(
            &mut tx,
            "DELETE FROM hook_deliveries WHERE endpoint_id = $1",
            vec![id.into()],
        )
        .await?;
        let n = self
            .tx_run(
                &mut tx,
                "DELETE FROM hook_endpoints WHERE id = $1",
                vec![id.into()],
            )
            .await?;
        tx.commit().await?;
        self.reload_hook_subs().await?;
        Ok(n > 0)
    }

    /// A new secret; the old one keeps signing (a second signature) until `prev_until`.
    pub async fn rotate_hook_secret(
        &self,
        id: &str,
        secret: &SecretString,
        prev_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .run(
                "UPDATE hook_endpoints SET prev_secret = secret, prev_secret_until = $1, secret = $2, updated_at = $3 WHERE id = $4",
                vec![
                    Val::I(prev_until),
                    Val::S(secret.expose_secret().to_string()),
                    Val::I(now),
                    id.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// Make the endpoints of accounts' `webhook_url` (ids `ep_config_{account}`) what the
    /// configuration says: created or changed (url, secret; every event; active), and those
    /// of accounts that no longer have one deleted.
    pub async fn sync_config_hook_endpoints(
        &self,
        wanted: &[(String, String, SecretString)],
        now: i64,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = wanted
            .iter()
            .map(|(account, _, _)| format!("ep_config_{account}"))
            .collect();
        let existing = self
            .fetch(
                "SELECT id FROM hook_endpoints WHERE substr(id, 1, 10) = 'ep_config_'",
                vec![],
            )
            .await?;
        for r in &existing {
            let id: String = r.try_get("id")?;
            if !ids.contains(&id) {
                self.delete_hook_endpoint(&id).await?;
            }
        }
        for ((account, url, secret), id) in wanted.iter().zip(&ids) {
            let changed = self
                .run(
                    "UPDATE hook_endpoints SET url = $1, secret = $2, events = '', active = 1, \
                     failing_since = NULL, disabled_reason = NULL, updated_at = $3 \
                     WHERE id = $4 AND (url <> $1 OR secret <> $2 OR active = 0 OR events <> '')",
                    vec![
                        url.as_str().into(),
                        Val::S(secret.expose_secret().to_string()),
                        Val::I(now),
                        id.as_str().into(),
                    ],
                )
                .await?;
            if changed == 0 && self.hook_endpoint(id).await?.is_none() {
                self.create_hook_endpoint(&NewEndpoint {
                    id,
                    account: Some(account),
                    url,
                    events: &EventFilter::default(),
                    secret,
                    description: "accounts[].webhook_url in the configuration",
                    now,
                })
                .await?;
            }
        }
        self.reload_hook_subs().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str) -> SubView {
        SubView {
            id: id.into(),
            account: None,
            filter: EventFilter::parse_stored("campaign.progress").unwrap(),
        }
    }

    #[test]
    fn a_reload_that_began_first_and_landed_last_does_not_hide_a_new_endpoint() {
        let subs = HookSubs::default();
        // The sender's reload starts before the endpoint is committed …
        let early = subs.begin();
        // … an API change commits it and reloads …
        let late = subs.begin();
        subs.set(late, vec![sub("ep-1")]);
        // … and the early read (no endpoint) arrives last.
        subs.set(early, vec![]);
        assert!(subs.any_active());
        assert_eq!(
            subs.endpoints_for("100", EventType::CampaignProgress),
            vec!["ep-1".to_string()]
        );
        // A reload begun later still applies (an endpoint removed).
        let again = subs.begin();
        subs.set(again, vec![]);
        assert!(!subs.any_active());
    }
}
