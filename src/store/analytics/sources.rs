//! What the folder reads: each source's rows after its position, in one batch, as
//! [`Row`]s. Sources by id stop at a hole in their ids that may still fill (a transaction
//! in flight on PostgreSQL); sources by time read up to [`GRACE_MS`] ago.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::super::exec::{exec_query, int, opt_int, text, text_col, Col, Values, WriterConn};
use super::super::sql::Val;
use super::super::{Store, StoreError};
use crate::analytics::{Event, MarkKey, MarkKind, Row, GAP_OLD_MS, GAP_WAIT_MS, GRACE_MS};
use crate::domain::RefundStatus;

/// Rows per source and pass.
pub const BATCH: i64 = 2_000;
/// Forgetting what periods long over needed runs this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// What the folder remembers between passes in memory: the holes it waits on, since when
/// (real time: a hole that stays is a transaction that will never commit), and when it last
/// pruned.
#[derive(Debug, Default)]
pub struct FoldMemory {
    holes: HashMap<&'static str, (i64, Instant)>,
    pruned: Option<Instant>,
    /// The folder's own connection for reading the sources (opened on first use).
    reader: Option<Reader>,
}

/// A connection of the folder's own, shared with the blocking thread that reads on it.
#[derive(Clone)]
struct Reader(Arc<Mutex<WriterConn>>);

impl Drop for FoldMemory {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            // A PostgreSQL connection holds a runtime of its own, which may not be dropped
            // on a thread that runs async tasks: drop it on a thread of its own.
            std::thread::spawn(move || drop(reader));
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl FoldMemory {
    /// Has the hole after `id` in `source` been waited on long enough?
    fn waited(&mut self, source: &'static str, after: i64) -> bool {
        let entry = self.holes.entry(source).or_insert((after, Instant::now()));
        if entry.0 != after {
            *entry = (after, Instant::now());
        }
        entry.1.elapsed() >= Duration::from_millis(GAP_WAIT_MS as u64)
    }

    pub(super) fn prune_due(&mut self, _now: i64) -> bool {
        let due = self.pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if due {
            self.pruned = Some(Instant::now());
        }
        due
    }
}

/// One pass's reading.
#[derive(Debug, Default)]
pub(super) struct Read {
    /// In time order.
    pub rows: Vec<Row>,
    /// Each source's new position.
    pub cursors: Vec<(&'static str, i64)>,
    /// A source had more.
    pub more: bool,
    /// The time of the last customer message or reply folded (how far the fold has come).
    pub folded_through: Option<i64>,
    /// A source by id moved on (its position is to be written even without rows to count).
    pub moved: bool,
}

impl Read {
    /// The marks the rows may need.
    pub fn mark_keys(&self) -> Vec<MarkKey> {
        let key = |r: &Row, kind, key: &str| MarkKey {
            account: r.account.clone(),
            kind,
            key: key.to_string(),
        };
        let mut out = Vec::new();
        for r in &self.rows {
            match &r.event {
                Event::Inbound { user, .. } => {
                    out.push(key(r, MarkKind::Wait, user));
                    out.push(key(r, MarkKind::Campaign, user));
                }
                Event::Outbound { user, .. } => {
                    out.push(key(r, MarkKind::Wait, user));
                    out.push(key(r, MarkKind::Campaign, user));
                }
                Event::Handoff { user } | Event::Released { user } => {
                    out.push(key(r, MarkKind::Agent, user))
                }
                Event::Bot { session, .. } => out.push(key(r, MarkKind::Bot, session)),
                Event::Paid { payment, .. } => {
                    out.push(key(r, MarkKind::Paid, &payment.to_string()))
                }
                Event::Refund { refund, .. } => {
                    out.push(key(r, MarkKind::Refund, &refund.to_string()))
                }
                Event::Status { .. } | Event::FlowStep { .. } | Event::Order { .. } => {}
            }
        }
        out
    }
}

/// A row of a source by id: its id, its time, and what it says (None: nothing to count).
struct Fetched {
    id: i64,
    at: i64,
    row: Option<Row>,
}

/// One source: what it reads, as which columns, and how its position moves (by id, or by
/// the time its rows changed).
struct Source {
    name: &'static str,
    sql: &'static str,
    cols: &'static [Col],
    by_time: bool,
}

const INBOX: Source = Source {
    name: "inbox",
    sql: "SELECT i.seq AS id, i.account, i.user_key, i.kind, i.status, i.state, i.received_at AS at, \
     c.first_seen_at, (SELECT MIN(o.idem_key) FROM outbox o WHERE i.kind = 'status' AND o.account = i.account AND o.wamid = i.wamid) AS idem_key \
     FROM inbox i LEFT JOIN contacts c ON i.kind = 'message' AND c.account = i.account AND c.user_key = i.user_key \
     WHERE i.seq > $1 ORDER BY i.seq LIMIT $2",
    cols: &[
        Col::Int,
        Col::Text,
        Col::OptText,
        Col::Text,
        Col::OptText,
        Col::Text,
        Col::Int,
        Col::OptInt,
        Col::OptText,
    ],
    by_time: false,
};
const OUTBOX: Source = Source {
    name: "outbox",
    sql: "SELECT id, account, user_key, kind, class, idem_key, created_at AS at FROM outbox \
     WHERE id > $1 ORDER BY id LIMIT $2",
    cols: &[
        Col::Int,
        Col::Text,
        Col::Text,
        Col::Text,
        Col::Text,
        Col::Text,
        Col::Int,
    ],
    by_time: false,
};
const FLOW_STEPS: Source = Source {
    name: "flow_steps",
    sql: "SELECT id, account, started_at, status, at FROM flow_execution_steps \
     WHERE id > $1 ORDER BY id LIMIT $2",
    cols: &[Col::Int, Col::Text, Col::Int, Col::Text, Col::Int],
    by_time: false,
};
const HANDOFFS: Source = Source {
    name: "handoffs",
    sql: "SELECT id, account, user_key, kind, at FROM conversation_handoffs \
     WHERE id > $1 ORDER BY id LIMIT $2",
    cols: &[Col::Int, Col::Text, Col::Text, Col::Text, Col::Int],
    by_time: false,
};
const ORDERS: Source = Source {
    name: "orders",
    sql: "SELECT id, account, total, currency, created_at AS at FROM orders \
     WHERE id > $1 ORDER BY id LIMIT $2",
    cols: &[Col::Int, Col::Text, Col::OptText, Col::Text, Col::Int],
    by_time: false,
};
const BOTS: Source = Source {
    name: "bots",
    sql: "SELECT account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost_micros, updated_at AS at \
     FROM chatbot_sessions WHERE updated_at > $1 AND updated_at <= $2 ORDER BY updated_at LIMIT $3",
    cols: &[
        Col::Text,
        Col::Text,
        Col::Text,
        Col::Int,
        Col::Text,
        Col::Int,
        Col::Int,
        Col::Int,
        Col::Int,
        Col::Int,
    ],
    by_time: true,
};
const PAYMENTS: Source = Source {
    name: "payments",
    sql: "SELECT id, account, currency, amount, paid_amount, paid_at AS at FROM payments \
     WHERE paid_at > $1 AND paid_at <= $2 AND status IN ('PAID', 'PAID_LATE', 'REFUNDED') ORDER BY paid_at LIMIT $3",
    cols: &[
        Col::Int,
        Col::Text,
        Col::Text,
        Col::OptText,
        Col::OptText,
        Col::Int,
    ],
    by_time: true,
};
const REFUNDS: Source = Source {
    name: "refunds",
    sql: "SELECT r.id, p.account, r.currency, r.amount, r.status, r.updated_at AS at \
     FROM refunds r JOIN payments p ON p.id = r.payment_id \
     WHERE r.updated_at > $1 AND r.updated_at <= $2 ORDER BY r.updated_at LIMIT $3",
    cols: &[
        Col::Int,
        Col::Text,
        Col::Text,
        Col::OptText,
        Col::Text,
        Col::Int,
    ],
    by_time: true,
};

const SOURCES: [&Source; 8] = [
    &INBOX,
    &OUTBOX,
    &FLOW_STEPS,
    &HANDOFFS,
    &ORDERS,
    &BOTS,
    &PAYMENTS,
    &REFUNDS,
];

fn decimal(text: Option<&str>) -> Decimal {
    text.and_then(|t| Decimal::from_str(t).ok())
        .unwrap_or_default()
}

fn owned(row: &Values, i: usize) -> String {
    text_col(row, i).to_string()
}

fn inbox_row(r: &Values) -> Result<Option<Row>, StoreError> {
    if text_col(r, 5) == "unrouted" {
        return Ok(None);
    }
    let event = match text_col(r, 3) {
        "message" => {
            let Some(user) = text(r, 2) else {
                return Ok(None);
            };
            Event::Inbound {
                user: user.to_string(),
                first_seen_at: opt_int(r, 7),
            }
        }
        "status" => Event::Status {
            status: owned(r, 4),
            campaign: text(r, 8)
                .and_then(crate::domain::campaign_of_idem_key)
                .is_some(),
        },
        _ => return Ok(None),
    };
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 6),
        event,
    }))
}

fn outbox_row(r: &Values) -> Result<Option<Row>, StoreError> {
    if text_col(r, 3) != "message" {
        return Ok(None);
    }
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 6),
        event: Event::Outbound {
            user: owned(r, 2),
            campaign: crate::domain::campaign_of_idem_key(text_col(r, 5)).is_some(),
            service: text_col(r, 4) == "service",
        },
    }))
}

fn step_row(r: &Values) -> Result<Option<Row>, StoreError> {
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 4),
        event: Event::FlowStep {
            started_at: int(r, 2),
            status: owned(r, 3),
        },
    }))
}

fn handoff_row(r: &Values) -> Result<Option<Row>, StoreError> {
    let user = owned(r, 2);
    let event = match text_col(r, 3) {
        "handoff" => Event::Handoff { user },
        "released" => Event::Released { user },
        _ => return Ok(None),
    };
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 4),
        event,
    }))
}

fn order_row(r: &Values) -> Result<Option<Row>, StoreError> {
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 4),
        event: Event::Order {
            currency: owned(r, 3),
            total: decimal(text(r, 2)),
        },
    }))
}

/// A chatbot session, as its figures so far.
fn bot_row(r: &Values) -> Result<Option<Row>, StoreError> {
    let (user, bot, started) = (text_col(r, 1), text_col(r, 2), int(r, 3));
    Ok(Some(Row {
        account: owned(r, 0),
        at: int(r, 9),
        event: Event::Bot {
            session: format!("{user}|{bot}|{started}"),
            turns: int(r, 5),
            tokens_in: int(r, 6),
            tokens_out: int(r, 7),
            cost_micros: int(r, 8),
            open: text_col(r, 4) == "active",
        },
    }))
}

/// A payment paid: what it brought in (the amount paid, else the amount asked).
fn paid_row(r: &Values) -> Result<Option<Row>, StoreError> {
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 5),
        event: Event::Paid {
            payment: int(r, 0),
            currency: owned(r, 2),
            amount: decimal(text(r, 4).or(text(r, 3))),
        },
    }))
}

/// A refund as it stands.
fn refund_row(r: &Values) -> Result<Option<Row>, StoreError> {
    let status: RefundStatus = text_col(r, 4)
        .parse()
        .map_err(|e: crate::domain::UnknownValue| StoreError::Corrupt(e.to_string()))?;
    Ok(Some(Row {
        account: owned(r, 1),
        at: int(r, 5),
        event: Event::Refund {
            refund: int(r, 0),
            currency: owned(r, 2),
            amount: decimal(text(r, 3)),
            counts: status.counts(),
            open: matches!(status, RefundStatus::Requested | RefundStatus::Pending),
        },
    }))
}

type Convert = fn(&Values) -> Result<Option<Row>, StoreError>;

/// What one pass read, in one snapshot: each source's position and its rows.
struct Fetch {
    positions: HashMap<String, i64>,
    rows: HashMap<&'static str, Vec<Values>>,
}

/// Read every source after its position, in one read transaction on the folder's own
/// connection (SQLite: rusqlite, no write lock; rows come back as plain values, not through
/// the pool's row conversion, which cost the shop benchmark ~15 % of its CPU).
fn fetch_all(conn: &mut WriterConn, now: i64) -> Result<Fetch, StoreError> {
    conn.snapshot(|tx| {
        let positions: HashMap<String, i64> = exec_query(
            tx,
            "SELECT source, position FROM analytics_cursor",
            vec![],
            &[Col::Text, Col::Int],
        )?
        .iter()
        .map(|r| (owned(r, 0), int(r, 1)))
        .collect();
        let mut rows = HashMap::new();
        for source in SOURCES {
            let position = positions.get(source.name).copied().unwrap_or(0);
            let vals = if source.by_time {
                vec![Val::I(position), Val::I(now - GRACE_MS), Val::I(BATCH)]
            } else {
                vec![Val::I(position), Val::I(BATCH)]
            };
            rows.insert(source.name, exec_query(tx, source.sql, vals, source.cols)?);
        }
        Ok(Fetch { positions, rows })
    })
}

impl Store {
    pub(super) async fn read_sources(
        &self,
        now: i64,
        memory: &mut FoldMemory,
    ) -> Result<Read, StoreError> {
        let conn = match &memory.reader {
            Some(c) => c.clone(),
            None => {
                let mut conn = WriterConn::open(self.url(), self.dialect())?;
                if let WriterConn::Sqlite(c) = &mut conn {
                    // It reads recent rows once each: the writer's 16 MiB page cache would
                    // only add to the process's memory.
                    c.execute_batch("PRAGMA cache_size = -2048; PRAGMA query_only = 1;")
                        .map_err(|e| StoreError::Unavailable(format!("sqlite: {e}")))?;
                }
                let c = Reader(Arc::new(Mutex::new(conn)));
                memory.reader = Some(c.clone());
                c
            }
        };
        let fetched = tokio::task::spawn_blocking(move || {
            let mut conn = conn.0.lock().unwrap_or_else(|e| e.into_inner());
            fetch_all(&mut conn, now)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("analytics reader: {e}")))?;
        let mut fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                // A broken connection is opened again on the next pass.
                memory.reader = None;
                return Err(e);
            }
        };
        let positions = std::mem::take(&mut fetched.positions);
        let at = |name: &str| positions.get(name).copied().unwrap_or(0);
        let mut take = |name: &str| fetched.rows.remove(name).unwrap_or_default();
        let mut read = Read::default();
        // Customers' messages and the replies to them are folded in time order together: the
        // one that stopped short (a full batch, a hole) bounds how far the other goes.
        let mut inbox = by_id(
            INBOX.name,
            take(INBOX.name),
            inbox_row,
            at(INBOX.name),
            now,
            memory,
            &mut read,
        )?;
        let mut outbox = by_id(
            OUTBOX.name,
            take(OUTBOX.name),
            outbox_row,
            at(OUTBOX.name),
            now,
            memory,
            &mut read,
        )?;
        let bound = [&inbox, &outbox]
            .iter()
            .filter(|(_, short)| *short)
            .map(|(rows, _)| rows.last().map_or(i64::MIN, |f| f.at))
            .min();
        for (name, (rows, _)) in [("inbox", &mut inbox), ("outbox", &mut outbox)] {
            if let Some(bound) = bound {
                // The rest waits: for the next batch (a full one asks for it at once) or
                // for the hole to fill (the next pass).
                let keep = rows.iter().take_while(|f| f.at <= bound).count();
                rows.truncate(keep);
            }
            if let Some(last) = rows.last() {
                read.cursors.push((name, last.id));
                read.moved = true;
                read.folded_through = Some(read.folded_through.unwrap_or(0).max(last.at));
            }
        }
        let mut rows: Vec<Row> = inbox
            .0
            .into_iter()
            .chain(outbox.0)
            .filter_map(|f| f.row)
            .collect();
        for (source, convert) in [
            (&FLOW_STEPS, step_row as Convert),
            (&HANDOFFS, handoff_row),
            (&ORDERS, order_row),
        ] {
            let (found, _) = by_id(
                source.name,
                take(source.name),
                convert,
                at(source.name),
                now,
                memory,
                &mut read,
            )?;
            if let Some(last) = found.last() {
                read.cursors.push((source.name, last.id));
                read.moved = true;
            }
            rows.extend(found.into_iter().filter_map(|f| f.row));
        }
        for (source, convert) in [
            (&BOTS, bot_row as Convert),
            (&PAYMENTS, paid_row),
            (&REFUNDS, refund_row),
        ] {
            let found = take(source.name)
                .iter()
                .map(convert)
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>, _>>()?;
            let position = at(source.name);
            let next = time_cursor(&found, position, now - GRACE_MS, &mut read);
            read.cursors.push((source.name, next));
            rows.extend(found);
        }
        // Stable: rows of one time keep their source's order (a message before its reply).
        rows.sort_by_key(|r| r.at);
        read.rows = rows;
        Ok(read)
    }
}

/// A source by id: the rows after `position` up to the first hole that may still fill;
/// and whether it stopped short (a full batch or a hole).
fn by_id(
    name: &'static str,
    found: Vec<Values>,
    convert: Convert,
    position: i64,
    now: i64,
    memory: &mut FoldMemory,
    read: &mut Read,
) -> Result<(Vec<Fetched>, bool), StoreError> {
    let full = found.len() as i64 == BATCH;
    let mut out = Vec::with_capacity(found.len());
    let mut prev = position;
    let mut short = full;
    // Every by-id source's columns start with its id; its time is named `at`, last but for
    // the inbox's two lookups.
    for r in &found {
        let id = int(r, 0);
        let row = convert(r)?;
        let at = match &row {
            Some(row) => row.at,
            None => at_of(name, r),
        };
        if id != prev + 1 && now - at < GAP_OLD_MS && !memory.waited(name, prev) {
            short = true;
            break;
        }
        out.push(Fetched { id, at, row });
        prev = id;
    }
    if full {
        read.more = true;
    }
    Ok((out, short))
}

/// The time of a by-id source's row (for a row that counts for nothing).
fn at_of(name: &str, r: &Values) -> i64 {
    match name {
        "inbox" => int(r, 6),
        "outbox" => int(r, 6),
        _ => int(r, 4),
    }
}

/// A source by time's next position: all read up to `until`, or (a full batch) up to just
/// before its last time, read again next pass (its marks make a row read twice count once).
fn time_cursor(rows: &[Row], position: i64, until: i64, read: &mut Read) -> i64 {
    if (rows.len() as i64) < BATCH {
        return until.max(position);
    }
    read.more = true;
    match (rows.first(), rows.last()) {
        (Some(first), Some(last)) if first.at < last.at => last.at - 1,
        (_, Some(last)) => last.at,
        _ => position,
    }
}
