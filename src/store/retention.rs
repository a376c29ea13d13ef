//! What retention reads and deletes (the policy is `crate::retention`, the pass
//! ingress/retention.rs): walks of the big tables in id order from a kept cursor, erasing
//! and deleting by id in small statements through the pool (never the conversation
//! writer's group commit), the tables' sizes, and SQLite's incremental vacuum.

use serde::Serialize;
use sqlx::Row;

use super::contacts::ERASED;
use super::sql::{in_list, std_chunks, Val};
use super::*;

/// A table retention walks in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Inbox,
    Outbox,
    Search,
    FlowSteps,
    HookAttempts,
    HookDeliveries,
    DeadLetters,
}

impl Walk {
    /// The table it walks.
    pub fn table(self) -> &'static str {
        match self {
            Walk::Inbox => "inbox",
            Walk::Outbox => "outbox",
            Walk::Search => "search_docs",
            Walk::FlowSteps => "flow_execution_steps",
            Walk::HookAttempts => "hook_attempts",
            Walk::HookDeliveries => "hook_deliveries",
            Walk::DeadLetters => "dead_letters",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Walk::Inbox => "seq",
            _ => "id",
        }
    }

    /// id, at, account, kind, state, flag (inbox/outbox: the body is erased).
    fn select(self) -> String {
        let erased =
            |col: &str| format!("CAST(CASE WHEN {col} = '{ERASED}' THEN 1 ELSE 0 END AS BIGINT)");
        match self {
            Walk::Inbox => format!(
                "SELECT seq AS id, received_at AS at, account, kind, state, {} AS flag FROM inbox \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                erased("payload")
            ),
            Walk::Outbox => format!(
                "SELECT id, created_at AS at, account, kind, state, {} AS flag FROM outbox \
                 WHERE id > $1 ORDER BY id LIMIT $2",
                erased("message")
            ),
            Walk::Search => "SELECT id, at, account, direction AS kind, direction AS state, CAST(0 AS BIGINT) AS flag \
                 FROM search_docs WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),
            Walk::FlowSteps => "SELECT id, at, account, flow_id AS kind, status AS state, CAST(0 AS BIGINT) AS flag \
                 FROM flow_execution_steps WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),
            Walk::HookAttempts => "SELECT id, at, endpoint_id AS account, event_id AS kind, endpoint_id AS state, \
                 CAST(0 AS BIGINT) AS flag FROM hook_attempts WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),
            Walk::HookDeliveries => "SELECT id, updated_at AS at, endpoint_id AS account, event_id AS kind, state, \
                 CAST(0 AS BIGINT) AS flag FROM hook_deliveries WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),
            Walk::DeadLetters => "SELECT id, created_at AS at, COALESCE(account, '') AS account, kind, \
                 COALESCE(resolution, '') AS state, CAST(0 AS BIGINT) AS flag FROM dead_letters \
                 WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),
        }
    }
}

/// One row of a walk.
#[derive(Debug, Clone, PartialEq)]
pub struct WalkRow {
    pub id: i64,
    pub at: i64,
    pub account: String,
    pub kind: String,
    pub state: String,
    pub flag: bool,
}

/// A downloaded media file past its window.
#[derive(Debug, Clone)]
pub struct OldMedia {
    pub account: String,
    pub media_id: String,
    pub path: Option<String>,
}

/// One table's size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableSize {
    pub table: String,
    pub rows: i64,
    /// Bytes on disk, its indexes included (see [`StorageReport::bytes_method`]).
    pub bytes: i64,
    /// When its oldest row was written (ms), if it has rows and a time.
    pub oldest_at: Option<i64>,
}

/// Every table retention looks after, and the database as a whole.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StorageReport {
    pub dialect: &'static str,
    /// `dbstat` (SQLite, exact pages), `estimate` (SQLite without dbstat: the file's pages
    /// shared by row count) or `pg_total_relation_size` (PostgreSQL).
    pub bytes_method: &'static str,
    pub database_bytes: i64,
    /// SQLite: pages free in the file (reused before it grows).
    pub free_bytes: Option<i64>,
    /// SQLite: none | full | incremental.
    pub auto_vacuum: Option<&'static str>,
    pub tables: Vec<TableSize>,
}

/// The tables reported, with the column that dates a row and the one that orders it.
pub const STORAGE_TABLES: [(&str, Option<(&str, &str)>); 16] = [
    ("inbox", Some(("received_at", "seq"))),
    ("outbox", Some(("created_at", "id"))),
    ("search_docs", Some(("at", "id"))),
    ("flow_execution_steps", Some(("at", "id"))),
    ("flow_executions", Some(("started_at", "started_at"))),
    (
        "campaign_recipients",
        Some(("enrolled_at", "campaign_id, id")),
    ),
    // The oldest campaign's first message, in key order (no index by time: the oldest
    // campaign's messages are about as old as any).
    (
        "campaign_messages",
        Some(("created_at", "campaign_id, recipient_id, step")),
    ),
    ("dead_letters", Some(("created_at", "id"))),
    ("media_files", None),
    ("hook_events", Some(("created_at", "created_at"))),
    ("hook_deliveries", Some(("created_at", "id"))),
    ("hook_attempts", Some(("at", "id"))),
    ("audit_log", Some(("at", "id"))),
    ("timers", Some(("created_at", "id"))),
    ("chatbot_sessions", Some(("updated_at", "updated_at"))),
    ("conversation_handoffs", Some(("at", "id"))),
];

impl Store {
    /// Where the walk `name` stopped under `policy` (0: from the start).
    pub async fn retention_cursor(&self, name: &str, policy: &str) -> Result<i64, StoreError> {
        let rows = self
            .fetch(
                "SELECT position, policy FROM retention_cursors WHERE name = $1",
                vec![name.into()],
            )
            .await?;
        Ok(match rows.first() {
            Some(r) if r.try_get::<String, _>("policy")? == policy => r.try_get("position")?,
            _ => 0,
        })
    }

    pub async fn set_retention_cursor(
        &self,
        name: &str,
        position: i64,
        policy: &str,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO retention_cursors (name, position, policy) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, policy = excluded.policy",
            vec![name.into(), Val::I(position), policy.into()],
        )
        .await?;
        Ok(())
    }

    /// Up to `limit` rows of `walk` after id `after`, in id order.
    pub async fn walk(
        &self,
        walk: Walk,
        after: i64,
        limit: i64,
    ) -> Result<Vec<WalkRow>, StoreError> {
        let rows = self
            .fetch(&walk.select(), vec![Val::I(after), Val::I(limit)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WalkRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    account: r.try_get("account")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    flag: r.try_get::<i64, _>("flag")? != 0,
                })
            })
            .collect()
    }

    /// Delete these rows of `walk` (search documents leave the text index too). Rows still
    /// needed are guarded again here, in the statement, against a change since the walk
    /// read them: an inbox row must be processed, an outbox row settled.
    pub async fn retention_delete(&self, walk: Walk, ids: &[i64]) -> Result<u64, StoreError> {
        let guard = match walk {
            Walk::Inbox => " AND state <> 'pending'",
            Walk::Outbox => " AND state IN ('sent', 'failed', 'cancelled')",
            Walk::HookDeliveries => " AND state <> 'pending'",
            _ => "",
        };
        let mut gone = 0;
        for chunk in std_chunks(ids) {
            let vals: Vec<Val> = chunk.iter().map(|i| Val::I(*i)).collect();
            let list = in_list(chunk.len(), 1);
            if walk == Walk::Search {
                gone += self.forget_search_docs(chunk).await?;
                continue;
            }
            gone += self
                .run(
                    &format!(
                        "DELETE FROM {} WHERE {} IN ({list}){guard}",
                        walk.table(),
                        walk.id()
                    ),
                    vals,
                )
                .await?;
        }
        Ok(gone)
    }

    /// Search documents out of the text index and the table, in one transaction.
    async fn forget_search_docs(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let _index = super::search::CATCH_UP.lock().await;
        let vals: Vec<Val> = ids.iter().map(|i| Val::I(*i)).collect();
        let list = in_list(ids.len(), 1);
        let mut tx = self.pool().begin().await?;
        if self.dialect() == Dialect::Sqlite {
            // A write first: the transaction takes SQLite's write lock before it reads.
            self.tx_run(
                &mut tx,
                &format!(
                    "INSERT INTO search_fts (search_fts, rowid, body) \
                     SELECT 'delete', id, body FROM search_docs WHERE id IN ({list})"
                ),
                vals.clone(),
            )
            .await?;
        }
        let gone = self
            .tx_run(
                &mut tx,
                &format!("DELETE FROM search_docs WHERE id IN ({list})"),
                vals,
            )
            .await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// Erase the bodies of these inbox (payload) or outbox (message) rows: ids, times and
    /// statuses stay. Guarded like [`Store::retention_delete`].
    pub async fn retention_erase(&self, walk: Walk, ids: &[i64]) -> Result<u64, StoreError> {
        let (table, id, col, guard) = match walk {
            Walk::Inbox => ("inbox", "seq", "payload", "state <> 'pending'"),
            Walk::Outbox => (
                "outbox",
                "id",
                "message",
                "state IN ('sent', 'failed', 'cancelled')",
            ),
            _ => return Ok(0),
        };
        let mut erased = 0;
        for chunk in std_chunks(ids) {
            let mut vals: Vec<Val> = vec![ERASED.into()];
            vals.extend(chunk.iter().map(|i| Val::I(*i)));
            erased += self
                .run(
                    &format!(
                        "UPDATE {table} SET {col} = $1 WHERE {id} IN ({}) AND {guard}",
                        in_list(chunk.len(), 2)
                    ),
                    vals,
                )
                .await?;
        }
        Ok(erased)
    }

    /// Webhook events from before `before` none of whose deliveries is left, at most `limit`.
    pub async fn delete_old_hook_events(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM hook_events WHERE id IN (SELECT e.id FROM hook_events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM hook_deliveries d WHERE d.event_id = e.id) \
             ORDER BY e.created_at LIMIT $2)",
            vec![Val::I(before), Val::I(limit)],
        )
        .await
    }

    /// Flow sessions that ended (completed, failed or abandoned) before `before`, at most `limit`: their
    /// trace went with `flow_steps`; a running or paused session stays, however old.
    pub async fn delete_old_flow_executions(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM flow_executions WHERE (account, user_key, flow_id, started_at) IN \
             (SELECT account, user_key, flow_id, started_at FROM flow_executions \
              WHERE ended_at IS NOT NULL AND ended_at < $1 AND status IN ('completed', 'failed', 'abandoned') \
              ORDER BY ended_at LIMIT $2)",
            vec![Val::I(before), Val::I(limit)],
        )
        .await
    }

    /// Chatbot sessions that ended before `before` (last changed then), at most `limit`.
    pub async fn delete_old_bot_sessions(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM chatbot_sessions WHERE (account, user_key, bot, started_at) IN \
             (SELECT account, user_key, bot, started_at FROM chatbot_sessions \
              WHERE updated_at < $1 AND status <> 'active' ORDER BY updated_at LIMIT $2)",
            vec![Val::I(before), Val::I(limit)],
        )
        .await
    }

    /// Handoff log rows from before `before`, at most `limit` (the analytics folder read
    /// them within seconds of their writing).
    pub async fn delete_old_handoffs(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM conversation_handoffs WHERE id IN \
             (SELECT id FROM conversation_handoffs WHERE at < $1 ORDER BY id LIMIT $2)",
            vec![Val::I(before), Val::I(limit)],
        )
        .await
    }

    /// Timers due before `before` that are no longer pending (fired, cancelled, dead), at
    /// most `limit`. A pending timer stays, however old or far out.
    pub async fn delete_old_timers(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM timers WHERE id IN \
             (SELECT id FROM timers WHERE due_at < $1 AND state <> 'pending' ORDER BY id LIMIT $2)",
            vec![Val::I(before), Val::I(limit)],
        )
        .await
    }

    /// Campaigns that finished before `before`, whose counters are frozen, and that still
    /// have recipient or message rows. Frozen first: the counters are counted from these
    /// rows (see store/campaign_totals.rs). A frozen campaign has every message settled
    /// (settled is for good) and, finished, sends no more: nothing of it is still needed.
    pub async fn finished_campaigns_with_rows(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = self
            .fetch(
                "SELECT c.id FROM campaigns c WHERE c.status IN ('completed', 'failed', 'cancelled') \
                 AND c.finished_at < $1 AND EXISTS (SELECT 1 FROM campaign_totals t WHERE t.campaign_id = c.id) \
                 AND (EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = c.id) \
                   OR EXISTS (SELECT 1 FROM campaign_messages m WHERE m.campaign_id = c.id)) \
                 ORDER BY c.id LIMIT $2",
                vec![Val::I(before), Val::I(limit)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// At most `limit` recipients of finished campaign `campaign`.
    pub async fn delete_campaign_recipients(
        &self,
        campaign: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM campaign_recipients WHERE campaign_id = $1 AND id IN \
             (SELECT id FROM campaign_recipients WHERE campaign_id = $1 ORDER BY id LIMIT $2)",
            vec![Val::I(campaign), Val::I(limit)],
        )
        .await
    }

    /// At most `limit` messages of finished campaign `campaign` (their outbox rows are the
    /// conversations', and go with `retention.messages`).
    pub async fn delete_campaign_messages(
        &self,
        campaign: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM campaign_messages WHERE campaign_id = $1 AND (recipient_id, step) IN \
             (SELECT recipient_id, step FROM campaign_messages WHERE campaign_id = $1 \
              ORDER BY recipient_id, step LIMIT $2)",
            vec![Val::I(campaign), Val::I(limit)],
        )
        .await
    }

    /// Media rows recorded before `before` that no custom order names (a business record).
    pub async fn old_media(&self, before: i64, limit: i64) -> Result<Vec<OldMedia>, StoreError> {
        let rows = self
            .fetch(
                "SELECT m.account, m.media_id, m.path FROM media_files m WHERE m.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM custom_orders o WHERE o.account = m.account AND o.media_id = m.media_id) \
                 ORDER BY m.created_at LIMIT $2",
                vec![Val::I(before), Val::I(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OldMedia {
                    account: r.try_get("account")?,
                    media_id: r.try_get("media_id")?,
                    path: r.try_get("path")?,
                })
            })
            .collect()
    }

    pub async fn delete_media_row(&self, account: &str, media_id: &str) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM media_files WHERE account = $1 AND media_id = $2",
            vec![account.into(), media_id.into()],
        )
        .await
    }

    /// SQLite in INCREMENTAL mode: give back up to `pages` free pages to the file system
    /// (a no-op in any other mode, and on PostgreSQL).
    pub async fn incremental_vacuum(&self, pages: u32) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Sqlite && pages > 0 {
            sqlx::query(&format!("PRAGMA incremental_vacuum({pages})"))
                .fetch_all(self.pool())
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Rows, bytes and the oldest row of every table retention looks after. Counting reads
    /// every row and `dbstat` every page: for the admin endpoint and a metrics sample every
    /// few minutes, not for a hot path.
    pub async fn storage(&self) -> Result<StorageReport, StoreError> {
        let one = |sql: String| async move {
            let rows = self.fetch(&sql, vec![]).await?;
            Ok::<Option<i64>, StoreError>(match rows.first() {
                Some(r) => r.try_get::<Option<i64>, _>(0)?,
                None => None,
            })
        };
        let mut tables = Vec::with_capacity(STORAGE_TABLES.len());
        for (table, dated) in STORAGE_TABLES {
            let rows = one(format!("SELECT COUNT(*) FROM {table}"))
                .await?
                .unwrap_or(0);
            let oldest_at = match dated {
                Some((at, order)) => {
                    one(format!("SELECT {at} FROM {table} ORDER BY {order} LIMIT 1")).await?
                }
                None => one(format!("SELECT MIN(created_at) FROM {table}")).await?,
            };
            tables.push(TableSize {
                table: table.to_string(),
                rows,
                bytes: 0,
                oldest_at,
            });
        }
        match self.dialect() {
            Dialect::Postgres => {
                for t in &mut tables {
                    t.bytes = self
                        .fetch(
                            "SELECT CAST(pg_total_relation_size(CAST($1 AS regclass)) AS BIGINT) AS b",
                            vec![t.table.as_str().into()],
                        )
                        .await?
                        .first()
                        .map(|r| r.try_get("b"))
                        .transpose()?
                        .unwrap_or(0);
                }
                let database_bytes =
                    one("SELECT CAST(pg_database_size(current_database()) AS BIGINT)".into())
                        .await?
                        .unwrap_or(0);
                Ok(StorageReport {
                    dialect: "postgres",
                    bytes_method: "pg_total_relation_size",
                    database_bytes,
                    free_bytes: None,
                    auto_vacuum: None,
                    tables,
                })
            }
            Dialect::Sqlite => {
                let pragma = |name: &str| one(format!("PRAGMA {name}"));
                let page = pragma("page_size").await?.unwrap_or(4096);
                let pages = pragma("page_count").await?.unwrap_or(0);
                let free = pragma("freelist_count").await?.unwrap_or(0);
                let auto_vacuum = match pragma("auto_vacuum").await?.unwrap_or(0) {
                    1 => "full",
                    2 => "incremental",
                    _ => "none",
                };
                // dbstat is compiled into the bundled SQLite, but a system one may lack it.
                let exact = self
                    .fetch(
                        "SELECT m.tbl_name AS t, CAST(SUM(d.pgsize) AS BIGINT) AS b FROM dbstat d \
                         JOIN sqlite_master m ON m.name = d.name GROUP BY m.tbl_name",
                        vec![],
                    )
                    .await;
                let method = match exact {
                    Ok(rows) => {
                        for r in rows {
                            let name: String = r.try_get("t")?;
                            if let Some(t) = tables.iter_mut().find(|t| t.table == name) {
                                t.bytes = r.try_get("b")?;
                            }
                        }
                        "dbstat"
                    }
                    Err(_) => {
                        // The used pages shared by row count: an estimate, labelled so.
                        let used = (pages - free).max(0) * page;
                        let all: i64 = tables.iter().map(|t| t.rows).sum::<i64>().max(1);
                        for t in &mut tables {
                            t.bytes = used * t.rows / all;
                        }
                        "estimate"
                    }
                };
                Ok(StorageReport {
                    dialect: "sqlite",
                    bytes_method: method,
                    database_bytes: pages * page,
                    free_bytes: Some(free * page),
                    auto_vacuum: Some(auto_vacuum),
                    tables,
                })
            }
        }
    }
}

/// What [`Store::compact`] did to a SQLite file.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    /// The file's `auto_vacuum` mode before: `none`, `full` or `incremental`.
    pub was: &'static str,
    pub bytes_before: i64,
    pub bytes_after: i64,
}

fn vacuum_mode(n: i64) -> &'static str {
    match n {
        1 => "full",
        2 => "incremental",
        _ => "none",
    }
}

impl Store {
    /// SQLite: rewrite the file with `auto_vacuum = INCREMENTAL` and every free page given
    /// back (a full `VACUUM`: a database made before Parley set that mode keeps `none` until
    /// then, and retention can only reuse its freed pages, never return them). It takes the
    /// whole database for as long as it runs and needs as much free disk again as the file:
    /// for `parleyd compact`, with the daemon stopped. PostgreSQL: None (autovacuum's work).
    pub async fn compact(&self) -> Result<Option<Compacted>, StoreError> {
        if self.dialect() != Dialect::Sqlite {
            return Ok(None);
        }
        let pragma = |name: &'static str| async move {
            let rows = self.fetch(&format!("PRAGMA {name}"), vec![]).await?;
            let v: i64 = match rows.first() {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            Ok::<i64, StoreError>(v)
        };
        let size = || async {
            Ok::<i64, StoreError>(pragma("page_size").await? * pragma("page_count").await?)
        };
        let was = vacuum_mode(pragma("auto_vacuum").await?);
        let bytes_before = size().await?;
        self.run("PRAGMA auto_vacuum = INCREMENTAL", vec![]).await?;
        self.run("VACUUM", vec![]).await?;
        self.run("PRAGMA wal_checkpoint(TRUNCATE)", vec![]).await?;
        let now = vacuum_mode(pragma("auto_vacuum").await?);
        if now != "incremental" {
            return Err(StoreError::Unavailable(format!(
                "VACUUM left auto_vacuum = {now}"
            )));
        }
        Ok(Some(Compacted {
            was,
            bytes_before,
            bytes_after: size().await?,
        }))
    }
}
