//! What the folder reads: each source's rows after its position, in one batch, as
//! [`Row`]s. Sources by id stop at a hole in their ids that may still fill (a transaction
//! in flight on PostgreSQL); sources by time read up to [`GRACE_MS`] ago.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::Row as _;

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

const INBOX: &str = "SELECT i.seq AS id, i.account, i.user_key, i.kind, i.status, i.state, i.received_at AS at, \
     c.first_seen_at, (SELECT MIN(o.idem_key) FROM outbox o WHERE i.kind = 'status' AND o.account = i.account AND o.wamid = i.wamid) AS idem_key \
     FROM inbox i LEFT JOIN contacts c ON i.kind = 'message' AND c.account = i.account AND c.user_key = i.user_key \
     WHERE i.seq > $1 ORDER BY i.seq LIMIT $2";
const OUTBOX: &str =
    "SELECT id, account, user_key, kind, class, idem_key, created_at AS at FROM outbox \
     WHERE id > $1 ORDER BY id LIMIT $2";
const FLOW_STEPS: &str = "SELECT id, account, started_at, status, at FROM flow_execution_steps \
     WHERE id > $1 ORDER BY id LIMIT $2";
const HANDOFFS: &str = "SELECT id, account, user_key, kind, at FROM conversation_handoffs \
     WHERE id > $1 ORDER BY id LIMIT $2";
const ORDERS: &str = "SELECT id, account, total, currency, created_at AS at FROM orders \
     WHERE id > $1 ORDER BY id LIMIT $2";
const BOTS: &str = "SELECT account, user_key, bot, started_at, status, turns, tokens_in, tokens_out, cost_micros, updated_at AS at \
     FROM chatbot_sessions WHERE updated_at > $1 AND updated_at <= $2 ORDER BY updated_at LIMIT $3";
const PAYMENTS: &str = "SELECT id, account, currency, amount, paid_amount, paid_at AS at FROM payments \
     WHERE paid_at > $1 AND paid_at <= $2 AND status IN ('PAID', 'PAID_LATE', 'REFUNDED') ORDER BY paid_at LIMIT $3";

const REFUNDS: &str = "SELECT r.id, p.account, r.currency, r.amount, r.status, r.updated_at AS at \
     FROM refunds r JOIN payments p ON p.id = r.payment_id \
     WHERE r.updated_at > $1 AND r.updated_at <= $2 ORDER BY r.updated_at LIMIT $3";

fn decimal(text: Option<String>) -> Decimal {
    text.and_then(|t| Decimal::from_str(&t).ok())
        .unwrap_or_default()
}

fn inbox_row(r: &sqlx::any::AnyRow) -> Result<Option<Row>, StoreError> {
    let account: String = r.try_get("account")?;
    let at: i64 = r.try_get("at")?;
    let state: String = r.try_get("state")?;
    if state == "unrouted" {
        return Ok(None);
    }
    let event = match r.try_get::<String, _>("kind")?.as_str() {
        "message" => {
            let Some(user) = r.try_get::<Option<String>, _>("user_key")? else {
                return Ok(None);
            };
            Event::Inbound {
                user,
                first_seen_at: r.try_get("first_seen_at")?,
            }
        }
        "status" => {
            let idem: Option<String> = r.try_get("idem_key")?;
            Event::Status {
                status: r
                    .try_get::<Option<String>, _>("status")?
                    .unwrap_or_default(),
                campaign: idem
                    .as_deref()
                    .and_then(crate::domain::campaign_of_idem_key)
                    .is_some(),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Row { account, at, event }))
}

fn outbox_row(r: &sqlx::any::AnyRow) -> Result<Option<Row>, StoreError> {
    if r.try_get::<String, _>("kind")? != "message" {
        return Ok(None);
    }
    let idem: String = r.try_get("idem_key")?;
    Ok(Some(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::Outbound {
            user: r.try_get("user_key")?,
            campaign: crate::domain::campaign_of_idem_key(&idem).is_some(),
            service: r.try_get::<String, _>("class")? == "service",
        },
    }))
}

fn step_row(r: &sqlx::any::AnyRow) -> Result<Option<Row>, StoreError> {
    Ok(Some(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::FlowStep {
            started_at: r.try_get("started_at")?,
            status: r.try_get("status")?,
        },
    }))
}

fn handoff_row(r: &sqlx::any::AnyRow) -> Result<Option<Row>, StoreError> {
    let user: String = r.try_get("user_key")?;
    let event = match r.try_get::<String, _>("kind")?.as_str() {
        "handoff" => Event::Handoff { user },
        "released" => Event::Released { user },
        _ => return Ok(None),
    };
    Ok(Some(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event,
    }))
}

fn order_row(r: &sqlx::any::AnyRow) -> Result<Option<Row>, StoreError> {
    Ok(Some(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::Order {
            currency: r.try_get("currency")?,
            total: decimal(r.try_get("total")?),
        },
    }))
}

type Convert = fn(&sqlx::any::AnyRow) -> Result<Option<Row>, StoreError>;

impl Store {
    pub(super) async fn read_sources(
        &self,
        now: i64,
        memory: &mut FoldMemory,
    ) -> Result<Read, StoreError> {
        let positions: HashMap<String, i64> = self
            .fetch("SELECT source, position FROM analytics_cursor", vec![])
            .await?
            .iter()
            .map(|r| Ok((r.try_get("source")?, r.try_get("position")?)))
            .collect::<Result<_, StoreError>>()?;
        let at = |name: &str| positions.get(name).copied().unwrap_or(0);
        let mut read = Read::default();
        // Customers' messages and the replies to them are folded in time order together: the
        // one that stopped short (a full batch, a hole) bounds how far the other goes.
        let mut inbox = self
            .by_id(
                "inbox",
                INBOX,
                inbox_row,
                at("inbox"),
                now,
                memory,
                &mut read,
            )
            .await?;
        let mut outbox = self
            .by_id(
                "outbox",
                OUTBOX,
                outbox_row,
                at("outbox"),
                now,
                memory,
                &mut read,
            )
            .await?;
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
        for (name, sql, convert) in [
            ("flow_steps", FLOW_STEPS, step_row as Convert),
            ("handoffs", HANDOFFS, handoff_row as Convert),
            ("orders", ORDERS, order_row as Convert),
        ] {
            let (found, _) = self
                .by_id(name, sql, convert, at(name), now, memory, &mut read)
                .await?;
            if let Some(last) = found.last() {
                read.cursors.push((name, last.id));
                read.moved = true;
            }
            rows.extend(found.into_iter().filter_map(|f| f.row));
        }
        for (name, sql, convert) in [
            (
                "bots",
                BOTS,
                bot_row as fn(&sqlx::any::AnyRow) -> Result<Row, StoreError>,
            ),
            ("payments", PAYMENTS, paid_row),
            ("refunds", REFUNDS, refund_row),
        ] {
            rows.extend(
                self.by_time(name, sql, convert, at(name), now, &mut read)
                    .await?,
            );
        }
        // Stable: rows of one time keep their source's order (a message before its reply).
        rows.sort_by_key(|r| r.at);
        read.rows = rows;
        Ok(read)
    }

    /// A source by id: the rows after `position` up to the first hole that may still fill;
    /// and whether it stopped short (a full batch or a hole).
    #[allow(clippy::too_many_arguments)]
    async fn by_id(
        &self,
        name: &'static str,
        sql: &str,
        convert: Convert,
        position: i64,
        now: i64,
        memory: &mut FoldMemory,
        read: &mut Read,
    ) -> Result<(Vec<Fetched>, bool), StoreError> {
        let found = self
            .fetch(sql, vec![Val::I(position), Val::I(BATCH)])
            .await?;
        let full = found.len() as i64 == BATCH;
        let mut out = Vec::with_capacity(found.len());
        let mut prev = position;
        let mut short = full;
        for r in &found {
            let id: i64 = r.try_get("id")?;
            let at: i64 = r.try_get("at")?;
            if id != prev + 1 && now - at < GAP_OLD_MS && !memory.waited(name, prev) {
                short = true;
                break;
            }
            out.push(Fetched {
                id,
                at,
                row: convert(r)?,
            });
            prev = id;
        }
        if full {
            read.more = true;
        }
        Ok((out, short))
    }

    /// A source by time: its rows changed after `position` and up to [`GRACE_MS`] ago.
    async fn by_time(
        &self,
        name: &'static str,
        sql: &str,
        convert: fn(&sqlx::any::AnyRow) -> Result<Row, StoreError>,
        position: i64,
        now: i64,
        read: &mut Read,
    ) -> Result<Vec<Row>, StoreError> {
        let until = now - GRACE_MS;
        let found = self
            .fetch(sql, vec![Val::I(position), Val::I(until), Val::I(BATCH)])
            .await?;
        let rows = found.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
        let next = time_cursor(&rows, position, until, read);
        read.cursors.push((name, next));
        Ok(rows)
    }
}

/// A chatbot session, as its figures so far.
fn bot_row(r: &sqlx::any::AnyRow) -> Result<Row, StoreError> {
    let user: String = r.try_get("user_key")?;
    let bot: String = r.try_get("bot")?;
    let started: i64 = r.try_get("started_at")?;
    Ok(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::Bot {
            session: format!("{user}|{bot}|{started}"),
            turns: r.try_get("turns")?,
            tokens_in: r.try_get("tokens_in")?,
            tokens_out: r.try_get("tokens_out")?,
            cost_micros: r.try_get("cost_micros")?,
            open: r.try_get::<String, _>("status")? == "active",
        },
    })
}

/// A payment paid: what it brought in (the amount paid, else the amount asked).
fn paid_row(r: &sqlx::any::AnyRow) -> Result<Row, StoreError> {
    let paid: Option<String> = r.try_get("paid_amount")?;
    let amount = match paid {
        Some(p) => decimal(Some(p)),
        None => decimal(r.try_get("amount")?),
    };
    Ok(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::Paid {
            payment: r.try_get("id")?,
            currency: r.try_get("currency")?,
            amount,
        },
    })
}

/// A refund as it stands.
fn refund_row(r: &sqlx::any::AnyRow) -> Result<Row, StoreError> {
    let status: RefundStatus = r
        .try_get::<String, _>("status")?
        .parse()
        .map_err(|e: crate::domain::UnknownValue| StoreError::Corrupt(e.to_string()))?;
    Ok(Row {
        account: r.try_get("account")?,
        at: r.try_get("at")?,
        event: Event::Refund {
            refund: r.try_get("id")?,
            currency: r.try_get("currency")?,
            amount: decimal(r.try_get("amount")?),
            counts: status.counts(),
            open: matches!(status, RefundStatus::Requested | RefundStatus::Pending),
        },
    })
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
