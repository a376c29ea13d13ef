//! Analytics' rows: the per-day snapshots, the distinct contacts of each period, the marks
//! and the positions of the folder (src/analytics/mod.rs says how they are kept), and the
//! handoff log the conversation writer appends to. `sources` reads what was added since the
//! last pass; this module writes a pass in one transaction and answers queries.

mod sources;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::Row;

use super::exec::{exec, SyncTx};
use super::sql::{std_chunks, values_list, Val};
use super::*;
use crate::analytics::{
    fold, Folded, Histogram, Mark, MarkKey, MarkKind, Metric, Money, Period, Snapshot, Zones,
    REPLY_WINDOW_MS,
};
use crate::domain::AccountId;
use crate::hooks::EventType;

pub use sources::FoldMemory;

/// One pass at a time in this process (the daemon is the only writer of these tables).
static FOLDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DAY_MS: i64 = 86_400_000;

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldPass {
    /// Rows folded.
    pub rows: usize,
    /// A source had more than one batch: run again now.
    pub more: bool,
}

/// Append the handoffs and releases among a step's events (in the writer's transaction).
pub(crate) fn log_handoffs(tx: &mut dyn SyncTx, events: &[NewHookEvent]) -> Result<(), StoreError> {
    for e in events {
        let kind = match e.event_type {
            EventType::ConversationHandoff => "handoff",
            EventType::ConversationReleased => "released",
            _ => continue,
        };
        let Some(user) = &e.user_key else { continue };
        exec(
            tx,
            "INSERT INTO conversation_handoffs (account, user_key, kind, dedup_key, at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (dedup_key) DO NOTHING",
            vec![
                Val::S(e.account.clone()),
                Val::S(user.clone()),
                kind.into(),
                Val::S(e.dedup_key.clone()),
                Val::I(e.at),
            ],
        )?;
    }
    Ok(())
}

fn day_text(d: NaiveDate) -> String {
    d.to_string()
}

fn money_of(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

fn days_columns() -> String {
    Metric::ALL
        .iter()
        .map(|m| m.column())
        .collect::<Vec<_>>()
        .join(", ")
}

fn snapshot_of(r: &sqlx::any::AnyRow) -> Result<Snapshot, StoreError> {
    let mut s = Snapshot::default();
    for m in Metric::ALL {
        s.counters.set(*m, r.try_get::<i64, _>(m.column())?);
    }
    s.first_response = Histogram::from_text(&r.try_get::<String, _>("first_response_hist")?);
    Ok(s)
}

impl Store {
    /// One pass of the folder: what was added since the last one, folded and written with the
    /// new positions in one transaction.
    pub async fn fold_analytics(
        &self,
        zones: &Zones,
        now: i64,
        memory: &mut FoldMemory,
    ) -> Result<FoldPass, StoreError> {
        let _one = FOLDING.lock().await;
        let read = self.read_sources(now, memory).await?;
        if read.rows.is_empty() && !read.moved {
            // Nothing new: no transaction (an idle daemon writes nothing).
            return Ok(FoldPass::default());
        }
        let keys: Vec<MarkKey> = read.mark_keys();
        let marks = self.load_marks(&keys).await?;
        let mut folded = fold(&read.rows, zones, &marks);
        let mut tx = self.pool().begin().await?;
        // A write first: SQLite takes its write lock now, not after the reads below.
        self.tx_run(
            &mut tx,
            "UPDATE analytics_cursor SET position = position WHERE source = 'inbox'",
            vec![],
        )
        .await?;
        let uniques = self.record_visits(&mut tx, zones, &mut folded).await?;
        for ((account, day), delta) in &folded.days {
            self.add_day(&mut tx, account, *day, delta, now).await?;
        }
        for ((account, period, start), n) in uniques {
            self.tx_run(
                &mut tx,
                "INSERT INTO analytics_uniques (account, period, period_start, contacts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account, period, period_start) DO UPDATE SET contacts = analytics_uniques.contacts + excluded.contacts",
                vec![account.into(), period.as_str().into(), day_text(start).into(), Val::I(n)],
            )
            .await?;
        }
        for (k, m) in &folded.marks {
            self.write_mark(&mut tx, k, m.as_ref()).await?;
        }
        for (source, position) in &read.cursors {
            self.tx_run(
                &mut tx,
                "UPDATE analytics_cursor SET position = $2 WHERE source = $1",
                vec![(*source).into(), Val::I(*position)],
            )
            .await?;
        }
        if let Some(through) = read.folded_through {
            if memory.prune_due(now) {
                self.prune(&mut tx, through, &read.cursors).await?;
            }
        }
        tx.commit().await?;
        Ok(FoldPass {
            rows: read.rows.len(),
            more: read.more,
        })
    }

    async fn load_marks(&self, keys: &[MarkKey]) -> Result<HashMap<MarkKey, Mark>, StoreError> {
        let mut by: BTreeMap<(String, MarkKind), Vec<String>> = BTreeMap::new();
        for k in keys {
            by.entry((k.account.clone(), k.kind))
                .or_default()
                .push(k.key.clone());
        }
        let mut out = HashMap::new();
        for ((account, kind), mut names) in by {
            names.sort();
            names.dedup();
            for chunk in std_chunks(&names) {
                let sql = format!(
                    "SELECT mark_key, since, fig_a, fig_b, fig_c, fig_d, is_open FROM analytics_marks \
                     WHERE account = $1 AND kind = $2 AND mark_key IN ({})",
                    super::sql::in_list(chunk.len(), 3)
                );
                let mut vals = vec![Val::S(account.clone()), kind.as_str().into()];
                vals.extend(chunk.iter().map(|n| Val::S(n.clone())));
                for r in self.fetch(&sql, vals).await? {
                    let key = MarkKey {
                        account: account.clone(),
                        kind,
                        key: r.try_get("mark_key")?,
                    };
                    let m = Mark {
                        since: r.try_get("since")?,
                        figures: [
                            r.try_get("fig_a")?,
                            r.try_get("fig_b")?,
                            r.try_get("fig_c")?,
                            r.try_get("fig_d")?,
                        ],
                        open: r.try_get::<i64, _>("is_open")? != 0,
                    };
                    out.insert(key, m);
                }
            }
        }
        Ok(out)
    }

    async fn write_mark(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        k: &MarkKey,
        m: Option<&Mark>,
    ) -> Result<(), StoreError> {
        let who = vec![
            Val::S(k.account.clone()),
            k.kind.as_str().into(),
            Val::S(k.key.clone()),
        ];
        match m {
            None => {
                self.tx_run(
                    tx,
                    "DELETE FROM analytics_marks WHERE account = $1 AND kind = $2 AND mark_key = $3",
                    who,
                )
                .await?;
            }
            Some(m) => {
                let mut vals = who;
                vals.extend([
                    Val::I(m.since),
                    Val::I(m.figures[0]),
                    Val::I(m.figures[1]),
                    Val::I(m.figures[2]),
                    Val::I(m.figures[3]),
                    Val::I(m.open as i64),
                ]);
                self.tx_run(
                    tx,
                    "INSERT INTO analytics_marks (account, kind, mark_key, since, fig_a, fig_b, fig_c, fig_d, is_open) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (account, kind, mark_key) DO UPDATE SET \
                     since = excluded.since, fig_a = excluded.fig_a, fig_b = excluded.fig_b, fig_c = excluded.fig_c, \
                     fig_d = excluded.fig_d, is_open = excluded.is_open",
                    vals,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Insert each visit's (period, contact) once; count the day's distinct and new contacts
    /// into `folded.days`, and return the weeks' and months' to add.
    async fn record_visits(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        _zones: &Zones,
        folded: &mut Folded,
    ) -> Result<BTreeMap<(String, Period, NaiveDate), i64>, StoreError> {
        let mut wanted: Vec<[String; 4]> = Vec::new();
        let mut new: HashMap<(String, String, String), bool> = HashMap::new();
        for v in &folded.visits {
            for p in [Period::Day, Period::Week, Period::Month] {
                wanted.push([
                    v.account.clone(),
                    p.as_str().to_string(),
                    day_text(p.start(v.day)),
                    v.user.clone(),
                ]);
            }
            new.insert((v.account.clone(), day_text(v.day), v.user.clone()), v.new);
        }
        wanted.sort();
        wanted.dedup();
        let mut out = BTreeMap::new();
        for chunk in std_chunks(&wanted) {
            let sql = format!(
                "INSERT INTO analytics_seen (account, period, period_start, user_key) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING account, period, period_start, user_key",
                values_list(chunk.len(), 4, 1)
            );
            let vals = chunk
                .iter()
                .flat_map(|w| w.iter().map(|s| Val::S(s.clone())))
                .collect();
            for r in self.tx_fetch(tx, &sql, vals).await? {
                let account: String = r.try_get("account")?;
                let period: String = r.try_get("period")?;
                let start: String = r.try_get("period_start")?;
                let user: String = r.try_get("user_key")?;
                let Some(date) = crate::analytics::parse_date(&start) else {
                    continue;
                };
                match Period::parse(&period) {
                    Some(Period::Day) => {
                        let is_new = new
                            .get(&(account.clone(), start, user))
                            .copied()
                            .unwrap_or(false);
                        let day = folded.days.entry((account, date)).or_default();
                        day.counters.bump(Metric::UniqueContacts, 1);
                        if is_new {
                            day.counters.bump(Metric::NewContacts, 1);
                        }
                    }
                    Some(p) => *out.entry((account, p, date)).or_insert(0) += 1,
                    None => {}
                }
            }
        }
        Ok(out)
    }

    /// Add `delta` to the stored day (read, added, written: only the folder writes it).
    async fn add_day(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &str,
        day: NaiveDate,
        delta: &Snapshot,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = vec![Val::S(account.to_string()), day_text(day).into()];
        let mut total = Snapshot::default();
        let rows = self
            .tx_fetch(
                tx,
                &format!(
                    "SELECT {}, first_response_hist FROM analytics_days WHERE account = $1 AND day = $2",
                    days_columns()
                ),
                key.clone(),
            )
            .await?;
        if let Some(r) = rows.first() {
            total = snapshot_of(r)?;
        }
        for r in self
            .tx_fetch(
                tx,
                "SELECT currency, ordered, revenue, refunded FROM analytics_money WHERE account = $1 AND day = $2",
                key.clone(),
            )
            .await?
        {
            total.money.insert(
                r.try_get("currency")?,
                Money {
                    ordered: money_of(&r.try_get::<String, _>("ordered")?),
                    revenue: money_of(&r.try_get::<String, _>("revenue")?),
                    refunded: money_of(&r.try_get::<String, _>("refunded")?),
                },
            );
        }
        total.add(delta);
        self.put_day(tx, account, day, &total, now).await
    }

    /// Write a day's whole snapshot.
    async fn put_day(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &str,
        day: NaiveDate,
        s: &Snapshot,
        now: i64,
    ) -> Result<(), StoreError> {
        let n = Metric::ALL.len();
        let sets = Metric::ALL
            .iter()
            .map(|m| format!("{0} = excluded.{0}", m.column()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO analytics_days (account, day, {}, first_response_hist, updated_at) VALUES {} \
             ON CONFLICT (account, day) DO UPDATE SET {sets}, first_response_hist = excluded.first_response_hist, \
             updated_at = excluded.updated_at",
            days_columns(),
            values_list(1, n + 4, 1)
        );
        let mut vals = vec![Val::S(account.to_string()), day_text(day).into()];
        vals.extend(Metric::ALL.iter().map(|m| Val::I(s.counters.get(*m))));
        vals.push(s.first_response.to_text().into());
        vals.push(Val::I(now));
        self.tx_run(tx, &sql, vals).await?;
        for (currency, money) in &s.money {
            self.tx_run(
                tx,
                "INSERT INTO analytics_money (account, day, currency, ordered, revenue, refunded) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (account, day, currency) DO UPDATE SET ordered = excluded.ordered, revenue = excluded.revenue, \
                 refunded = excluded.refunded",
                vec![
                    Val::S(account.to_string()),
                    day_text(day).into(),
                    Val::S(currency.clone()),
                    money.ordered.normalize().to_string().into(),
                    money.revenue.normalize().to_string().into(),
                    money.refunded.normalize().to_string().into(),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Forget what no later row can need: contacts of periods long over (by the folder's own
    /// progress, so a first start folding old history prunes behind itself only), waits never
    /// answered after a week, campaign messages past their reply window, counted payments and
    /// ended chatbot sessions its time cursors have passed by a day.
    async fn prune(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        through: i64,
        cursors: &[(&'static str, i64)],
    ) -> Result<(), StoreError> {
        let utc_day = |at: i64| {
            day_text(
                chrono::DateTime::from_timestamp_millis(at)
                    .unwrap_or_default()
                    .date_naive(),
            )
        };
        for (period, keep_days) in [("day", 3), ("week", 10), ("month", 35)] {
            self.tx_run(
                tx,
                "DELETE FROM analytics_seen WHERE period = $1 AND period_start < $2",
                vec![period.into(), utc_day(through - keep_days * DAY_MS).into()],
            )
            .await?;
        }
        let cursor = |name: &str| cursors.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);
        let mut cuts = vec![
            ("wait", through - 7 * DAY_MS, false),
            ("campaign", through - REPLY_WINDOW_MS, false),
            ("agent", through - 90 * DAY_MS, false),
        ];
        if let Some(p) = cursor("payments") {
            cuts.push(("paid", p - DAY_MS, false));
        }
        if let Some(b) = cursor("bots") {
            cuts.push(("bot", b - DAY_MS, true));
        }
        if let Some(r) = cursor("refunds") {
            cuts.push(("refund", r - DAY_MS, true));
        }
        for (kind, before, closed_only) in cuts {
            let sql = if closed_only {
                "DELETE FROM analytics_marks WHERE kind = $1 AND since < $2 AND is_open = 0"
            } else {
                "DELETE FROM analytics_marks WHERE kind = $1 AND since < $2"
            };
            self.tx_run(tx, sql, vec![kind.into(), Val::I(before)])
                .await?;
        }
        Ok(())
    }

    /// The stored days of `account` from `from` to `to` (inclusive; days without any row are
    /// absent).
    pub async fn analytics_days(
        &self,
        account: &AccountId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Snapshot>, StoreError> {
        let range = vec![account.into(), day_text(from).into(), day_text(to).into()];
        let mut out = BTreeMap::new();
        let sql = format!(
            "SELECT day, {}, first_response_hist FROM analytics_days WHERE account = $1 AND day >= $2 AND day <= $3",
            days_columns()
        );
        for r in self.fetch(&sql, range.clone()).await? {
            if let Some(d) = crate::analytics::parse_date(&r.try_get::<String, _>("day")?) {
                out.insert(d, snapshot_of(&r)?);
            }
        }
        for r in self
            .fetch(
                "SELECT day, currency, ordered, revenue, refunded FROM analytics_money WHERE account = $1 AND day >= $2 AND day <= $3",
                range,
            )
            .await?
        {
            if let Some(d) = crate::analytics::parse_date(&r.try_get::<String, _>("day")?) {
                out.entry(d).or_insert_with(Snapshot::default).money.insert(
                    r.try_get("currency")?,
                    Money {
                        ordered: money_of(&r.try_get::<String, _>("ordered")?),
                        revenue: money_of(&r.try_get::<String, _>("revenue")?),
                        refunded: money_of(&r.try_get::<String, _>("refunded")?),
                    },
                );
            }
        }
        Ok(out)
    }

    /// The distinct contacts of each week or month of `account` starting from `from` to `to`.
    pub async fn analytics_uniques(
        &self,
        account: &AccountId,
        period: Period,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, i64>, StoreError> {
        let rows = self
            .fetch(
                "SELECT period_start, contacts FROM analytics_uniques \
                 WHERE account = $1 AND period = $2 AND period_start >= $3 AND period_start <= $4",
                vec![
                    account.into(),
                    period.as_str().into(),
                    day_text(from).into(),
                    day_text(to).into(),
                ],
            )
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            if let Some(d) = crate::analytics::parse_date(&r.try_get::<String, _>("period_start")?)
            {
                out.insert(d, r.try_get("contacts")?);
            }
        }
        Ok(out)
    }

    /// Write whole days and their periods' distinct contacts as given (benchmarks and tests
    /// seed a history with it; the folder never calls it).
    pub async fn seed_analytics(
        &self,
        account: &AccountId,
        days: &[(NaiveDate, Snapshot)],
        uniques: &[(Period, NaiveDate, i64)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for (day, s) in days {
            self.put_day(&mut tx, account.as_str(), *day, s, now)
                .await?;
        }
        for (period, start, n) in uniques {
            self.tx_run(
                &mut tx,
                "INSERT INTO analytics_uniques (account, period, period_start, contacts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account, period, period_start) DO UPDATE SET contacts = excluded.contacts",
                vec![account.into(), period.as_str().into(), day_text(*start).into(), Val::I(*n)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
