//! Periods (day, ISO week from Monday, calendar month) of local dates, the range a query may
//! ask, and the roll-up of daily snapshots into periods.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, Months, NaiveDate};

use super::Snapshot;

/// The longest range one query may ask (inclusive days).
pub const MAX_RANGE_DAYS: i64 = 3 * 366;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The first day of the period `day` is in.
    pub fn start(self, day: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => day,
            Period::Week => day - Days::new(day.weekday().num_days_from_monday() as u64),
            Period::Month => day.with_day(1).expect("the first of a month"),
        }
    }

    /// The first day of the next period.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => start + Days::new(1),
            Period::Week => start + Days::new(7),
            Period::Month => start + Months::new(1),
        }
    }

    /// The last day of the period starting at `start`.
    pub fn end(self, start: NaiveDate) -> NaiveDate {
        self.next(start) - Days::new(1)
    }
}

/// A date as the API writes it.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The days to read for `from..=to` by `period`: widened to whole periods. Err: why the
/// range is refused.
pub fn widen(
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), String> {
    if to < from {
        return Err("`to` is before `from`".into());
    }
    if (to - from).num_days() + 1 > MAX_RANGE_DAYS {
        return Err(format!(
            "the range is longer than {MAX_RANGE_DAYS} days: ask for less"
        ));
    }
    Ok((period.start(from), period.end(period.start(to))))
}

/// One period of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodRow {
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub totals: Snapshot,
}

/// Every period from `from`'s to `to`'s (already widened), each the sum of its days (absent
/// days count as zero). `uniques`: the distinct contacts of each week or month by its start
/// (not a sum of the days'); a day's are its own.
pub fn roll_up(
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
    days: &BTreeMap<NaiveDate, Snapshot>,
    uniques: &BTreeMap<NaiveDate, i64>,
) -> Vec<PeriodRow> {
    let mut out = Vec::new();
    let mut start = period.start(from);
    while start <= to {
        let end = period.end(start);
        let mut totals = Snapshot::default();
        for (_, day) in days.range(start..=end) {
            totals.add(day);
        }
        if period != Period::Day {
            totals.counters.set(
                super::Metric::UniqueContacts,
                uniques.get(&start).copied().unwrap_or(0),
            );
        }
        out.push(PeriodRow { start, end, totals });
        start = period.next(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Metric;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn periods_start_on_monday_and_the_first() {
        // 2026-12-03 is a Thursday.
        assert_eq!(Period::Week.start(d("2026-12-03")), d("2026-11-30"));
        assert_eq!(Period::Week.end(d("2026-11-30")), d("2026-12-06"));
        assert_eq!(Period::Month.start(d("2026-12-31")), d("2026-12-01"));
        assert_eq!(Period::Month.end(d("2027-02-01")), d("2027-02-28"));
        assert_eq!(Period::parse("year"), None);
    }

    #[test]
    fn ranges_are_bounded_and_widened() {
        assert!(widen(Period::Day, d("2026-12-02"), d("2026-12-01")).is_err());
        assert!(widen(Period::Day, d("2020-01-01"), d("2026-01-01")).is_err());
        assert_eq!(
            widen(Period::Month, d("2026-11-15"), d("2026-12-03")).unwrap(),
            (d("2026-11-01"), d("2026-12-31"))
        );
    }

    #[test]
    fn weeks_sum_their_days_but_count_contacts_once() {
        let mut days = BTreeMap::new();
        for (day, n) in [("2026-11-30", 2), ("2026-12-01", 3), ("2026-12-08", 5)] {
            let mut s = Snapshot::default();
            s.counters.set(Metric::MessagesIn, n);
            s.counters.set(Metric::UniqueContacts, 1);
            days.insert(d(day), s);
        }
        let uniques = BTreeMap::from([(d("2026-11-30"), 1)]);
        let (from, to) = widen(Period::Week, d("2026-12-01"), d("2026-12-08")).unwrap();
        let rows = roll_up(Period::Week, from, to, &days, &uniques);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].totals.counters.get(Metric::MessagesIn), 5);
        assert_eq!(rows[0].totals.counters.get(Metric::UniqueContacts), 1);
        assert_eq!(rows[1].start, d("2026-12-07"));
        assert_eq!(rows[1].totals.counters.get(Metric::MessagesIn), 5);
        assert_eq!(rows[1].totals.counters.get(Metric::UniqueContacts), 0);
        let daily = roll_up(
            Period::Day,
            d("2026-11-30"),
            d("2026-12-02"),
            &days,
            &uniques,
        );
        assert_eq!(daily.len(), 3);
        assert_eq!(daily[2].totals.counters.get(Metric::MessagesIn), 0);
        assert_eq!(daily[1].totals.counters.get(Metric::UniqueContacts), 1);
    }
}
