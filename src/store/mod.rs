//! The system of record: SQLite (embedded default) or PostgreSQL, through sqlx's `Any` driver so
//! that both run the same code paths. All writes go through one group-commit writer task
//! ([`writer`]); reads run on the pool.
//!
//! One module per table (or close family of tables), each with its rows, its reads and its
//! batched writes: `inbox`, `conversations` (and contacts), `outbox`, `timers`, `gate`,
//! `dead_letters`, `flows` (versions, executions, chatbot sessions), `campaigns` (and
//! `campaign_totals`, a finished campaign's counters frozen for retention), `accounts`,
//! `media`; commerce's `products` (and categories), `materials` (and
//! what each product takes), `carts` (and each commerce call's
//! outcome), `orders`, `payments` (and their callbacks), `refunds`, `vouchers` (and their claims),
//! `subscription_list` (subscriptions as the admin API lists them), `owner_notices` (what
//! an account's owner was sent); `api_keys` and `audit` (the admin API's keys and log);
//! `hooks` (outbound webhooks: endpoints and events) and `hook_deliveries` (deliveries and
//! their attempts); `contacts` (and `contact_fields`, `contact_imports`); `order_updates` (an
//! operator's changes to an order); `retention` (retention's walks, batched deletes and
//! the tables' sizes); `analytics` (the snapshots and what keeps them). `exec`
//! runs the writer's statements (one helper, `exec_rows`, for the multi-row pattern), `sql`
//! builds dialect-neutral SQL.

mod accounts;
pub use accounts::AccountTraffic;
mod analytics;
pub use analytics::{FoldMemory, FoldPass};
mod api_keys;
mod audit;
mod campaign_news;
mod campaign_totals;
mod campaigns;
mod carts;
mod catalog_orders;
mod contact_fields;
mod contact_imports;
mod contacts;
mod conversation_list;
mod conversations;
mod custom_orders;
mod dead_letters;
mod exec;
mod flows;
mod gate;
mod hook_deliveries;
mod hooks;
mod idempotency;
mod inbox;
mod materials;
mod media;
mod order_updates;
mod orders;
mod outbox;
mod owner_notices;
mod payments;
mod products;
mod refunds;
mod retention;
mod search;
mod sql;
mod subscription_list;
mod sweeps;
mod timers;
mod vouchers;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use api_keys::*;
pub use audit::*;
pub use campaigns::*;
pub use carts::*;
pub use catalog_orders::*;
pub use contact_imports::ImportJob;
pub use contacts::*;
pub use conversation_list::*;
pub use conversations::*;
pub use custom_orders::*;
pub use dead_letters::*;
pub(crate) use flows::*;
pub use gate::*;
pub use hook_deliveries::*;
pub use hooks::*;
pub use idempotency::IdemRecord;
pub use inbox::*;
pub use materials::*;
pub use media::*;
pub use order_updates::*;
pub use orders::*;
pub use outbox::*;
pub use payments::*;
pub use products::*;
pub use refunds::*;
pub use retention::*;
pub use search::*;
use sql::bind_all;
pub use sql::Val;
pub use subscription_list::*;
pub use sweeps::*;
pub use timers::*;
pub use vouchers::*;
pub use writer::WriterHandle;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// PostgreSQL aborted the transaction to break a deadlock (SQLSTATE 40P01).
    pub fn is_deadlock(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40P01"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A cheap-to-clone handle on the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    pub(super) async fn fetch(
        &self,
        text: &str,
        vals: Vec<Val>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .fetch_all(self.pool())
            .await?)
    }

    pub(super) async fn run(&self, text: &str, vals: Vec<Val>) -> Result<u64, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// A statement inside a pool transaction; the rows it changed.
    pub(super) async fn tx_run(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        text: &str,
        vals: Vec<Val>,
    ) -> Result<u64, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .execute(&mut **tx)
            .await?
            .rows_affected())
    }

    /// A query inside a pool transaction.
    pub(super) async fn tx_fetch(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        text: &str,
        vals: Vec<Val>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let text = self.sql(text);
        Ok(bind_all(sqlx::query(&text), vals)
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Connect (creating the SQLite file and its folder on first start).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let mut url = url.to_string();
        if dialect == Dialect::Sqlite {
            if let Some(path) = sqlite_path(&url) {
                let create = !url.contains("mode=") || url.contains("mode=rwc");
                private_sqlite_files(Path::new(&path), create)?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options = AnyConnectOptions::from_str(&url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5));
        if dialect == Dialect::Sqlite {
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL for concurrent readers; FULL so that a commit survives power loss,
                    // not only a process crash. INCREMENTAL: a new database gives freed pages
                    // back in steps (retention); an existing one keeps its mode. The WAL is
                    // cut back to 64 MiB when a checkpoint has emptied it (it kept its high
                    // mark for ever).
                    conn.execute(
                        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_size_limit = 67108864; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Store {
            pool,
            dialect,
            url: url.clone(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL this store was opened with (secrets included: never log it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Apply every migration not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// True when the store answers and every migration this binary knows is applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied as usize >= self.migrator().iter().count())
    }

    /// Close the pool: every later query fails (used on shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Rewrite `$N` placeholders for the dialect (SQLite takes `?N`).
    pub(crate) fn sql<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        sql::placeholders(self.dialect, text)
    }
}

/// The SQLite file, its `-wal`/`-shm` and its folder are the owner's only, whatever the umask:
/// they hold every customer's number and messages. SQLite gives the `-wal`/`-shm` it creates
/// the database file's mode, so the file is made here, 0600, before SQLite opens it (when
/// `create`); existing files that are wider are tightened, and that is logged once.
///
/// The folder is made 0700 when Parley creates it. An existing folder is tightened only when it
/// is `data/` under the working directory, the default (`store.url`, `media.dir`) that earlier
/// versions created with the umask's mode. Any other existing folder was chosen by the
/// operator and may be shared (`/tmp`, a home directory): it is left as it is, with a warning
/// when other users can list it, unless it is sticky like `/tmp` (each file there keeps its
/// own owner-only mode).
#[cfg(unix)]
fn private_sqlite_files(path: &Path, create: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let mode_of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    };
    let unavailable = |p: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot create {}: {e}", p.display()))
    };
    let mut tightened = Vec::new();
    let mut tighten = |p: &Path, mode: u32| match std::fs::set_permissions(
        p,
        std::fs::Permissions::from_mode(mode),
    ) {
        Ok(()) => tightened.push(p.display().to_string()),
        Err(error) => tracing::warn!(
            path = %p.display(),
            %error,
            "Cannot make a database file owner-only; other local users may read it."
        ),
    };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        match mode_of(folder) {
            None => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(folder)
                    .map_err(|e| unavailable(folder, e))?;
                // The umask may have taken bits from the owner too.
                if mode_of(folder) != Some(0o700) {
                    tighten(folder, 0o700);
                }
            }
            Some(mode) if mode & 0o077 != 0 => {
                if is_the_default_data_folder(folder) {
                    tighten(folder, 0o700);
                } else if mode & 0o1000 == 0 {
                    tracing::warn!(
                        folder = %folder.display(),
                        mode = format!("{mode:o}"),
                        "Other local users can list the database's folder; it is left as it is \
                         (Parley did not create it): `chmod 700` it if it holds only Parley's data."
                    );
                }
            }
            Some(_) => {}
        }
    }
    if create && mode_of(path).is_none() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) if mode_of(path) != Some(0o600) => tighten(path, 0o600),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable(path, e)),
        }
    }
    let mut companions = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        companions.push(name.into());
    }
    for file in &companions {
        if mode_of(file).is_some_and(|mode| mode & 0o077 != 0) {
            tighten(file, 0o600);
        }
    }
    if !tightened.is_empty() {
        tracing::warn!(
            paths = ?tightened,
            "Other local users could read the database; made its files and folder owner-only."
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_sqlite_files(path: &Path, _create: bool) -> Result<(), StoreError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => std::fs::create_dir_all(folder).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", folder.display()))
        }),
        None => Ok(()),
    }
}

/// `data/` under the working directory: Parley's own folder by default.
#[cfg(unix)]
fn is_the_default_data_folder(folder: &Path) -> bool {
    let default = std::env::current_dir().map(|d| d.join("data"));
    match (
        default.and_then(std::fs::canonicalize),
        std::fs::canonicalize(folder),
    ) {
        (Ok(default), Ok(folder)) => default == folder,
        _ => false,
    }
}

pub(crate) fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path.to_string())
    }
}

/// Milliseconds since the Unix epoch (the clock is read at the edges, never in `step`).
/// A column the store keeps as the text of one of [`crate::domain`]'s states or kinds.
pub(crate) fn stored<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = crate::domain::UnknownValue>,
{
    use sqlx::Row;
    row.try_get::<String, _>(column)?
        .parse()
        .map_err(|e: crate::domain::UnknownValue| StoreError::Corrupt(format!("{column}: {e}")))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn a_new_sqlite_store_is_owner_only_with_its_wal_and_shm() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new/parley.db");
        let store = Store::connect(&format!("sqlite://{}", db.display()), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(mode(&dir.path().join("new")), 0o700, "the folder it made");
        for name in ["parley.db", "parley.db-wal", "parley.db-shm"] {
            assert_eq!(mode(&dir.path().join("new").join(name)), 0o600, "{name}");
        }
        store.close().await;
    }

    #[test]
    fn wide_database_files_are_tightened_but_a_folder_parley_did_not_make_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = shared.join("p.db");
        for name in ["p.db", "p.db-wal", "p.db-shm"] {
            let file = shared.join(name);
            std::fs::write(&file, "").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_sqlite_files(&db, true).unwrap();
        for name in ["p.db", "p.db-wal", "p.db-shm"] {
            assert_eq!(mode(&shared.join(name)), 0o600, "{name}");
        }
        assert_eq!(mode(&shared), 0o755, "a folder it did not make is left");
    }
}
