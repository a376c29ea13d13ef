//! First-response times as a small log-spaced histogram, so that the median of a week or a
//! month is computable from the days' histograms (medians do not add up; bucket counts do).
//!
//! Bucket 0 holds times under 100 ms; bucket `b ≥ 1` holds `[100·2^((b-1)/4), 100·2^(b/4))`
//! ms: four buckets per doubling, up to bucket [`BUCKETS`]` - 1`, which holds everything from
//! about 46 days on. A median is reported as the geometric middle of its bucket, so it is
//! within 9 % of the true median (half a bucket: 2^(1/8) ≈ 1.09); under 100 ms it is 50 ms.
//! Stored sparse, as text: `bucket:count` pairs separated by `;`.

use std::collections::BTreeMap;

/// Buckets in all (the last one is open-ended).
pub const BUCKETS: u32 = 110;
const FLOOR_MS: f64 = 100.0;

/// Counts by bucket (only the buckets that have any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(BTreeMap<u32, i64>);

/// The bucket a time falls in.
pub fn bucket_of(ms: i64) -> u32 {
    if (ms as f64) < FLOOR_MS {
        return 0;
    }
    let b = ((ms as f64 / FLOOR_MS).log2() * 4.0).floor() as i64 + 1;
    b.clamp(1, BUCKETS as i64 - 1) as u32
}

/// The lower and upper bounds of bucket `b` (ms).
fn bounds(b: u32) -> (f64, f64) {
    if b == 0 {
        return (0.0, FLOOR_MS);
    }
    let at = |k: u32| FLOOR_MS * 2f64.powf(k as f64 / 4.0);
    (at(b - 1), at(b))
}

impl Histogram {
    pub fn add(&mut self, ms: i64) {
        *self.0.entry(bucket_of(ms.max(0))).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.0 {
            *self.0.entry(*b).or_insert(0) += n;
        }
    }

    pub fn count(&self) -> i64 {
        self.0.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The median (the lower one of an even count), as its bucket's geometric middle; None
    /// when empty.
    pub fn median_ms(&self) -> Option<i64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (n + 1) / 2;
        let mut seen = 0;
        for (b, c) in &self.0 {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(*b);
                let mid = if *b == 0 { hi / 2.0 } else { (lo * hi).sqrt() };
                return Some(mid.round() as i64);
            }
        }
        None
    }

    /// `bucket:count;…`
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|(b, n)| format!("{b}:{n}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Read [`Histogram::to_text`]'s form (parts that do not read are left out).
    pub fn from_text(text: &str) -> Histogram {
        let mut h = Histogram::default();
        for part in text.split(';').filter(|p| !p.is_empty()) {
            if let Some((b, n)) = part.split_once(':') {
                if let (Ok(b), Ok(n)) = (b.parse::<u32>(), n.parse::<i64>()) {
                    *h.0.entry(b.min(BUCKETS - 1)).or_insert(0) += n;
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_four_per_doubling() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(99), 0);
        assert_eq!(bucket_of(100), 1);
        assert_eq!(bucket_of(199), 4);
        assert_eq!(bucket_of(200), 5);
        assert_eq!(bucket_of(i64::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_median_is_within_nine_percent() {
        for ms in [150, 1_000, 3_700, 60_000, 90 * 60_000, 20 * 3_600_000] {
            let mut h = Histogram::default();
            h.add(ms);
            let m = h.median_ms().unwrap() as f64;
            assert!((m / ms as f64 - 1.0).abs() < 0.095, "{ms} → {m}");
        }
        let mut h = Histogram::default();
        for ms in [10, 2_000, 2_000, 50_000, 900_000] {
            h.add(ms);
        }
        let m = h.median_ms().unwrap();
        assert!((1_830..=2_180).contains(&m), "{m}");
        assert_eq!(Histogram::default().median_ms(), None);
    }

    #[test]
    fn weeks_merge_days_and_text_round_trips() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.add(1_000);
        a.add(50);
        b.add(1_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let back = Histogram::from_text(&a.to_text());
        assert_eq!(back, a);
        assert_eq!(a.to_text(), format!("0:1;{}:2", bucket_of(1_000)));
        assert!(Histogram::from_text("").is_empty());
    }
}
