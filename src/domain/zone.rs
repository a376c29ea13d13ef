//! Time zones of accounts: where their calendar days begin.

use std::str::FromStr;

use chrono::{DateTime, Days, FixedOffset, NaiveDate, TimeZone, Utc};

/// An account's time zone: UTC, a fixed offset (`+07:00`) or an IANA name (`Asia/Jakarta`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    pub fn parse(s: &str) -> Result<Zone, String> {
        if s.eq_ignore_ascii_case("UTC") || s == "Z" {
            return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")));
        }
        if let Some(secs) = parse_utc_offset(s) {
            return FixedOffset::east_opt(secs)
                .map(Zone::Fixed)
                .ok_or_else(|| format!("`{s}` is out of range"));
        }
        chrono_tz::Tz::from_str(s)
            .map(Zone::Named)
            .map_err(|_| format!("`{s}` is not a time zone (use UTC, an offset like +07:00, or a name like Asia/Jakarta)"))
    }

    /// The calendar day `at_ms` falls on, here.
    pub fn day(&self, at_ms: i64) -> NaiveDate {
        let utc = utc(at_ms);
        match self {
            Zone::Fixed(z) => utc.with_timezone(z).date_naive(),
            Zone::Named(z) => utc.with_timezone(z).date_naive(),
        }
    }

    /// When the day after the one `at_ms` falls on begins, here (unix ms).
    pub fn next_midnight_ms(&self, at_ms: i64) -> i64 {
        let next = self
            .day(at_ms)
            .checked_add_days(Days::new(1))
            .expect("a date in range");
        match self {
            Zone::Fixed(z) => midnight(z, next),
            Zone::Named(z) => midnight(z, next),
        }
        .unwrap_or(at_ms + 86_400_000)
    }
}

fn utc(at_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at_ms).unwrap_or_default()
}

/// The first instant of `date` in `zone` (a day that starts in a DST gap starts at its end).
fn midnight<Z: TimeZone>(zone: &Z, date: NaiveDate) -> Option<i64> {
    let mut local = date.and_hms_opt(0, 0, 0)?;
    for _ in 0..4 {
        if let Some(t) = zone.from_local_datetime(&local).earliest() {
            return Some(t.timestamp_millis());
        }
        local += chrono::Duration::minutes(30);
    }
    None
}

/// `+07:00` / `-03:30` → seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    // 2026-11-22T00:00:00Z
    const T0: i64 = 1_795_305_600_000;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_utc_offset("+07:00"), Some(25200));
        assert_eq!(parse_utc_offset("-03:30"), Some(-12600));
        assert_eq!(parse_utc_offset("07:00"), None);
    }

    #[test]
    fn zones_parse() {
        assert!(Zone::parse("UTC").is_ok());
        assert!(Zone::parse("+07:00").is_ok());
        assert!(Zone::parse("Asia/Jakarta").is_ok());
        assert!(Zone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn days_follow_the_zone() {
        let jakarta = Zone::parse("Asia/Jakarta").unwrap();
        let utc = Zone::parse("UTC").unwrap();
        // 18:00 UTC is already the next day in Jakarta (UTC+7).
        let at = T0 + 18 * 3_600_000;
        assert_eq!(utc.day(at).to_string(), "2026-11-22");
        assert_eq!(jakarta.day(at).to_string(), "2026-11-23");
        assert_eq!(utc.next_midnight_ms(at), T0 + DAY);
        assert_eq!(jakarta.next_midnight_ms(at), T0 + DAY + 17 * 3_600_000);
        let fixed = Zone::parse("-03:30").unwrap();
        assert_eq!(fixed.next_midnight_ms(T0), T0 + 3 * 3_600_000 + 1_800_000);
    }

    #[test]
    fn dst_days_begin_at_their_first_instant() {
        // America/Sao_Paulo had midnight DST starts (e.g. 2018-11-04 began at 01:00).
        let z = Zone::parse("America/Sao_Paulo").unwrap();
        let before = DateTime::parse_from_rfc3339("2018-11-03T12:00:00-03:00")
            .unwrap()
            .timestamp_millis();
        let start = z.next_midnight_ms(before);
        let expected = DateTime::parse_from_rfc3339("2018-11-04T01:00:00-02:00")
            .unwrap()
            .timestamp_millis();
        assert_eq!(start, expected);
    }
}
