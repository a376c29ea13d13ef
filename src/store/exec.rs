//! The writer's synchronous transaction: one OS thread owns one connection and runs a whole
//! batch without a thread hop per statement. SQLite goes through rusqlite on that thread;
//! PostgreSQL through sqlx, driven by the thread's own small runtime. The SQL is the same.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sqlx::{Any, Connection, Row};

use super::sql::{bind_all, placeholders, std_chunks, Val};
use super::{Dialect, StoreError};

/// What a result column holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Int,
    OptInt,
    Text,
    OptText,
}

/// One row of a query result, columns in the order asked for.
pub(crate) type Values = Vec<Val>;

pub(crate) fn int(row: &Values, i: usize) -> i64 {
    match row.get(i) {
        Some(Val::I(v)) | Some(Val::OptI(Some(v))) => *v,
        _ => 0,
    }
}

pub(crate) fn opt_int(row: &Values, i: usize) -> Option<i64> {
    match row.get(i) {
        Some(Val::I(v)) | Some(Val::OptI(Some(v))) => Some(*v),
        _ => None,
    }
}

pub(crate) fn text(row: &Values, i: usize) -> Option<&str> {
    match row.get(i) {
        Some(Val::S(s)) | Some(Val::OptS(Some(s))) => Some(s),
        _ => None,
    }
}

/// Statements inside one transaction.
pub(crate) trait SyncTx {
    fn dialect(&self) -> Dialect;
    /// Run `sql`, in this connection's form ([`for_connection`]).
    fn exec(&mut self, sql: &str, vals: Vec<Val>) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, vals: Vec<Val>, cols: &[Col])
        -> Result<Vec<Values>, StoreError>;
}

/// The writer's own connection.
pub(crate) enum WriterConn {
    Sqlite(rusqlite::Connection),
    Postgres {
        rt: tokio::runtime::Runtime,
        url: String,
        conn: Option<sqlx::AnyConnection>,
    },
}

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

impl WriterConn {
    pub(crate) fn open(url: &str, dialect: Dialect) -> Result<WriterConn, StoreError> {
        match dialect {
            Dialect::Sqlite => {
                let path = super::sqlite_path(url).ok_or_else(|| {
                    StoreError::Unavailable(format!("{url}: not a SQLite file URL"))
                })?;
                let conn = rusqlite::Connection::open(&path).map_err(sqlite_err)?;
                conn.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
                     PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; \
                     PRAGMA wal_autocheckpoint = 16384;",
                )
                .map_err(sqlite_err)?;
                conn.set_prepared_statement_cache_capacity(256);
                Ok(WriterConn::Sqlite(conn))
            }
            Dialect::Postgres => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(WriterConn::Postgres {
                    rt,
                    url: url.to_string(),
                    conn: None,
                })
            }
        }
    }

    /// Run `f` in one transaction and commit; roll back on error.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut dyn SyncTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(rusqlite::TransactionBehavior::Immediate, f)
    }

    /// Run reads in one snapshot (SQLite: a deferred transaction, which takes no write
    /// lock; PostgreSQL: a transaction).
    pub(crate) fn snapshot<T>(
        &mut self,
        f: impl FnOnce(&mut dyn SyncTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(rusqlite::TransactionBehavior::Deferred, f)
    }

    fn run<T>(
        &mut self,
        behavior: rusqlite::TransactionBehavior,
        f: impl FnOnce(&mut dyn SyncTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // Only a writing transaction's commit is timed (`parley_commit_us`).
        let writes = !matches!(behavior, rusqlite::TransactionBehavior::Deferred);
        match self {
            WriterConn::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(behavior)
                    .map_err(sqlite_err)?;
                let mut stx = SqliteTx(&tx);
                let out = f(&mut stx)?;
                if writes {
                    timed_commit(|| tx.commit().map_err(sqlite_err))?;
                } else {
                    tx.commit().map_err(sqlite_err)?;
                }
                Ok(out)
            }
            WriterConn::Postgres { rt, url, conn } => {
                if conn.is_none() {
                    // Room for every statement shape of the writer (about 25 statements in
                    // up to four row counts): sqlx's default of 100 would evict and re-prepare.
                    let sep = if url.contains('?') { '&' } else { '?' };
                    let with_cache = format!("{url}{sep}statement-cache-capacity=512");
                    let mut c = rt
                        .block_on(sqlx::AnyConnection::connect(&with_cache))
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    // Every statement of the writer finds its rows by a key. Its statements
                    // are prepared once and their generic plans kept: a plan made while a
                    // table was still small (a new database) would otherwise scan the
                    // whole table for ever after, as it grows.
                    rt.block_on(sqlx::query("SET enable_seqscan = off").execute(&mut c))
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    *conn = Some(c);
                }
                let c = conn.as_mut().expect("connected above");
                let result = (|| {
                    let mut tx = rt
                        .block_on(c.begin())
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    let out = {
                        let mut ptx = PgTx { rt, tx: &mut tx };
                        f(&mut ptx)?
                    };
                    if writes {
                        timed_commit(|| rt.block_on(tx.commit()))?;
                    } else {
                        rt.block_on(tx.commit())?;
                    }
                    Ok(out)
                })();
                if let Err(StoreError::Unavailable(_))
                | Err(StoreError::Database(sqlx::Error::Io(_))) = &result
                {
                    // A broken connection is replaced on the next batch.
                    *conn = None;
                }
                result
            }
        }
    }
}

/// Run a COMMIT, timing it for `parley_commit_us`.
fn timed_commit<T>(commit: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = commit();
    crate::metrics::metrics()
        .commit_us
        .observe(started.elapsed().as_micros() as u64);
    out
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Start SQLite's checkpointer: a thread with its own connection that runs a PASSIVE
/// checkpoint every [`CHECKPOINT_EVERY`] (it never blocks the writer nor readers). The writer
/// keeps its automatic checkpoint as a backstop, which then finds little left to copy and
/// lets the WAL start over. The thread stops when the returned handle is dropped.
pub(crate) fn spawn_checkpointer(url: &str) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let path = super::sqlite_path(url)
        .ok_or_else(|| StoreError::Unavailable(format!("{url}: not a SQLite file URL")))?;
    let conn = rusqlite::Connection::open(&path).map_err(sqlite_err)?;
    conn.execute_batch("PRAGMA busy_timeout = 1000; PRAGMA synchronous = FULL;")
        .map_err(sqlite_err)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("parley-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                });
                if let Err(e) = done {
                    tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries.");
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
    Ok(stop)
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

/// SQLite reads the values where they are: no copy of a string per bound parameter.
impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Val::I(i) | Val::OptI(Some(i)) => ValueRef::Integer(*i),
            Val::S(s) | Val::OptS(Some(s)) => ValueRef::Text(s.as_bytes()),
            Val::Bytes(Some(b)) => ValueRef::Blob(b),
            Val::OptI(None) | Val::OptS(None) | Val::Bytes(None) => ValueRef::Null,
        }))
    }
}

/// The writer's SQL for SQLite: numbered placeholders as SQLite binds them fastest, and `OR
/// FAIL` on every INSERT and UPDATE.
///
/// Any statement that fails makes the writer roll its whole transaction back, so a failing
/// statement need not undo its own partial changes first. By default (`ABORT`) it must, and so
/// SQLite copies every page a multi-row INSERT or UPDATE touches into a statement journal
/// before changing it: measured as ~10 % of the writer thread's time in the shop benchmark.
/// With `OR FAIL` there is nothing to undo and no journal. (An upsert's own `ON CONFLICT`
/// clause still decides what its conflict does.)
fn writer_sql(sql: &str) -> String {
    let mut sql = placeholders(Dialect::Sqlite, sql).into_owned();
    for verb in ["INSERT ", "UPDATE "] {
        if sql.starts_with(verb) && !sql[verb.len()..].starts_with("OR ") {
            sql.insert_str(verb.len(), "OR FAIL ");
            break;
        }
    }
    sql
}

/// `sql`, written with `$N` parameters, as the writer's connection runs it.
pub(crate) fn for_connection(dialect: Dialect, sql: &str) -> String {
    match dialect {
        Dialect::Sqlite => writer_sql(sql),
        Dialect::Postgres => sql.to_string(),
    }
}

impl SyncTx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, vals: Vec<Val>) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(vals.iter()))
            .map_err(sqlite_err)?;
        Ok(n as u64)
    }

    fn query(
        &mut self,
        sql: &str,
        vals: Vec<Val>,
        cols: &[Col],
    ) -> Result<Vec<Values>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(vals.iter()))
            .map_err(sqlite_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_err)? {
            let mut values = Vec::with_capacity(cols.len());
            for (i, col) in cols.iter().enumerate() {
                let v = row.get_ref(i).map_err(sqlite_err)?;
                values.push(match (col, v) {
                    (Col::Int, ValueRef::Integer(n)) => Val::I(n),
                    (Col::OptInt, ValueRef::Integer(n)) => Val::OptI(Some(n)),
                    (Col::OptInt, ValueRef::Null) => Val::OptI(None),
                    (Col::Text | Col::OptText, ValueRef::Text(t)) => {
                        Val::S(String::from_utf8_lossy(t).into_owned())
                    }
                    // A number where text was asked for (a column without TEXT affinity).
                    (Col::Text | Col::OptText, ValueRef::Integer(n)) => Val::S(n.to_string()),
                    (Col::OptText, ValueRef::Null) => Val::OptS(None),
                    (col, other) => {
                        return Err(StoreError::Corrupt(format!(
                            "column {i}: expected {col:?}, found {:?}",
                            other.data_type()
                        )))
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }
}

struct PgTx<'a, 'c> {
    rt: &'a tokio::runtime::Runtime,
    tx: &'a mut sqlx::Transaction<'c, Any>,
}

impl SyncTx for PgTx<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, vals: Vec<Val>) -> Result<u64, StoreError> {
        let q = bind_all(sqlx::query(sql), vals);
        Ok(self.rt.block_on(q.execute(&mut **self.tx))?.rows_affected())
    }

    fn query(
        &mut self,
        sql: &str,
        vals: Vec<Val>,
        cols: &[Col],
    ) -> Result<Vec<Values>, StoreError> {
        let q = bind_all(sqlx::query(sql), vals);
        let rows = self.rt.block_on(q.fetch_all(&mut **self.tx))?;
        rows.iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        Ok(match c {
                            Col::Int => Val::I(r.try_get(i)?),
                            Col::OptInt => Val::OptI(r.try_get(i)?),
                            Col::Text => Val::S(r.try_get(i)?),
                            Col::OptText => Val::OptS(r.try_get(i)?),
                        })
                    })
                    .collect::<Result<Values, StoreError>>()
            })
            .collect()
    }
}

/// Run a fixed statement (written with `$N` parameters).
pub(crate) fn exec(
    tx: &mut dyn SyncTx,
    sql: &'static str,
    vals: Vec<Val>,
) -> Result<u64, StoreError> {
    let text = kept_text(tx, (sql.as_ptr() as usize, sql.len()), || sql.to_string());
    tx.exec(&text, vals)
}

/// [`exec`] for a statement that returns rows (`RETURNING ...`, read as `cols`).
pub(crate) fn exec_query(
    tx: &mut dyn SyncTx,
    sql: &'static str,
    vals: Vec<Val>,
    cols: &[Col],
) -> Result<Vec<Values>, StoreError> {
    let text = kept_text(tx, (sql.as_ptr() as usize, sql.len()), || sql.to_string());
    tx.query(&text, vals, cols)
}

/// The text of a multi-row statement for `rows` rows, `build(rows)`, as the connection runs it.
/// `build` is a plain function (a closure that captures nothing), so one function always makes
/// one text, and the text is kept per function and row count.
pub(crate) fn shaped(tx: &dyn SyncTx, rows: usize, build: fn(usize) -> String) -> Rc<str> {
    kept_text(tx, (build as usize, rows), || build(rows))
}

thread_local! {
    /// Statement texts in the writer's connection's form, made once per writer thread: a batch
    /// looks a text up instead of formatting kilobytes of SQL and rewriting its parameters for
    /// every statement (~9 % of the writer thread in the shop benchmark).
    static TEXTS: RefCell<HashMap<(Dialect, usize, usize), Rc<str>>> = RefCell::new(HashMap::new());
}

pub(crate) fn kept_text(
    tx: &dyn SyncTx,
    key: (usize, usize),
    build: impl FnOnce() -> String,
) -> Rc<str> {
    let key = (tx.dialect(), key.0, key.1);
    TEXTS.with(|texts| {
        if let Some(text) = texts.borrow().get(&key) {
            return text.clone();
        }
        let text: Rc<str> = for_connection(key.0, &build()).into();
        texts.borrow_mut().insert(key, text.clone());
        text
    })
}

pub(crate) fn text_col(row: &Values, i: usize) -> &str {
    text(row, i).unwrap_or("")
}

/// The writer's multi-row pattern: `items` in runs of a few fixed sizes ([`std_chunks`]), one
/// statement each (`build(n)`: its text for `n` rows, made once per shape, see [`shaped`]),
/// each item's values in column order from `row`.
pub(crate) fn exec_rows<T, const C: usize>(
    tx: &mut dyn SyncTx,
    items: &[T],
    build: fn(usize) -> String,
    row: impl Fn(&T) -> [Val; C],
) -> Result<(), StoreError> {
    for chunk in std_chunks(items) {
        let text = shaped(tx, chunk.len(), build);
        tx.exec(&text, chunk_values(chunk, &row))?;
    }
    Ok(())
}

/// A chunk's values, row after row.
fn chunk_values<T, const C: usize>(chunk: &[T], row: impl Fn(&T) -> [Val; C]) -> Vec<Val> {
    let mut vals = Vec::with_capacity(chunk.len() * C);
    for item in chunk {
        vals.extend(row(item));
    }
    vals
}

/// [`exec_rows`] for a statement that returns rows (`RETURNING ...`, read as `cols`): every
/// chunk's rows, in one list.
pub(crate) fn query_rows<T, const C: usize>(
    tx: &mut dyn SyncTx,
    items: &[T],
    build: fn(usize) -> String,
    cols: &[Col],
    row: impl Fn(&T) -> [Val; C],
) -> Result<Vec<Values>, StoreError> {
    let mut out = Vec::new();
    for chunk in std_chunks(items) {
        let text = shaped(tx, chunk.len(), build);
        out.extend(tx.query(&text, chunk_values(chunk, &row), cols)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::sql::values_list;
    use super::*;

    fn insert_t(rows: usize) -> String {
        format!("INSERT INTO t (a) VALUES {}", values_list(rows, 1, 1))
    }

    #[test]
    fn a_statement_text_is_made_once_per_function_and_row_count() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db", dir.path().display());
        let mut conn = WriterConn::open(&url, Dialect::Sqlite).unwrap();
        conn.transaction(|tx| {
            let two = shaped(tx, 2, insert_t);
            assert_eq!(&*two, "INSERT OR FAIL INTO t (a) VALUES (?),(?)");
            assert!(
                Rc::ptr_eq(&two, &shaped(tx, 2, insert_t)),
                "kept, not made again"
            );
            assert_eq!(
                &*shaped(tx, 1, insert_t),
                "INSERT OR FAIL INTO t (a) VALUES (?)"
            );
            exec(tx, "CREATE TABLE t (a INTEGER PRIMARY KEY)", vec![])?;
            tx.exec(&two, vec![Val::I(1), Val::I(2)])
        })
        .unwrap();
    }

    #[test]
    fn the_writers_inserts_and_updates_fail_without_a_statement_journal() {
        assert_eq!(
            writer_sql("INSERT INTO t (a, b) VALUES ($1,$2),($3,$4) ON CONFLICT (a) DO NOTHING"),
            "INSERT OR FAIL INTO t (a, b) VALUES (?,?),(?,?) ON CONFLICT (a) DO NOTHING"
        );
        assert_eq!(
            writer_sql("UPDATE t SET b = $1 WHERE a = $2"),
            "UPDATE OR FAIL t SET b = ? WHERE a = ?"
        );
        assert_eq!(
            writer_sql("INSERT OR IGNORE INTO t (a) VALUES ($1)"),
            "INSERT OR IGNORE INTO t (a) VALUES (?)"
        );
        assert_eq!(
            writer_sql("DELETE FROM t WHERE a = $1"),
            "DELETE FROM t WHERE a = ?"
        );
    }

    /// What makes `OR FAIL` safe: a statement that fails half-way leaves its first rows in the
    /// transaction, and the writer's transaction then rolls back as a whole.
    #[test]
    fn a_statement_failing_half_way_rolls_back_its_whole_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let mut conn = WriterConn::open(&url, Dialect::Sqlite).unwrap();
        conn.transaction(|tx| {
            tx.exec(
                &for_connection(
                    Dialect::Sqlite,
                    "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL UNIQUE)",
                ),
                vec![],
            )?;
            tx.exec(
                &for_connection(Dialect::Sqlite, "INSERT INTO t (a, b) VALUES ($1,$2)"),
                vec![Val::I(1), "x".into()],
            )
        })
        .unwrap();
        let failed = conn.transaction(|tx| {
            tx.exec(
                &for_connection(Dialect::Sqlite, "UPDATE t SET b = $1 WHERE a = $2"),
                vec!["y".into(), Val::I(1)],
            )?;
            // Row 2 goes in, row 3 repeats b = 'y': the statement fails after one row.
            tx.exec(
                &for_connection(
                    Dialect::Sqlite,
                    "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)",
                ),
                vec![Val::I(2), "z".into(), Val::I(3), "y".into()],
            )
        });
        assert!(failed.is_err());
        let rows = conn
            .transaction(|tx| tx.query("SELECT b FROM t ORDER BY a", vec![], &[Col::Text]))
            .unwrap();
        let texts: Vec<String> = rows
            .into_iter()
            .flatten()
            .map(|v| match v {
                Val::S(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["x"], "neither the update nor row 2 is kept");
    }
}
