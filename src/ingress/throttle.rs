//! Guessing is not free: wrong admin and verify tokens are counted per client address, and a
//! client past its allowance is answered 429 until enough of its failures are forgiven;
//! refusals are logged at a bounded rate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Client addresses tracked at most; past it, those with nothing left to forgive go first.
const MAX_TRACKED: usize = 100_000;

/// Per client address, a leaky bucket of failures: each failure adds one, one leaks out per
/// `interval`; a client whose bucket holds `burst` is refused until one has leaked out.
pub struct AuthThrottle {
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures not yet forgiven, as of `at`.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn level_at(&self, now: Instant, interval: Duration) -> f64 {
        let leaked = now.saturating_duration_since(self.at).as_secs_f64() / interval.as_secs_f64();
        (self.level - leaked).max(0.0)
    }
}

/// The allowance in force (`[http]` `auth_failures_burst`, `auth_failures_interval`).
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub burst: u32,
    pub interval: Duration,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            clients: Mutex::new(HashMap::new()),
        }
    }
}

/// IPv6 clients are counted per /64: one host usually holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthThrottle {
    /// `Some(retry_after)` while `ip` must wait before its token is even looked at.
    pub fn blocked(&self, ip: IpAddr, allowance: Allowance, now: Instant) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = clients.get(&client_key(ip))?;
        let level = bucket.level_at(now, allowance.interval);
        let full = f64::from(allowance.burst);
        (level > full - 1.0).then(|| {
            let wait = (level - (full - 1.0)) * allowance.interval.as_secs_f64();
            Duration::from_secs_f64(wait.max(0.001))
        })
    }

    /// Count a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, allowance: Allowance, now: Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_TRACKED {
            clients.retain(|_, b| b.level_at(now, allowance.interval) > 0.0);
            if clients.len() >= MAX_TRACKED {
                // Spread over more addresses than we keep: forget the calmest half.
                let mut levels: Vec<f64> = clients
                    .values()
                    .map(|b| b.level_at(now, allowance.interval))
                    .collect();
                levels.sort_by(f64::total_cmp);
                let median = levels[levels.len() / 2];
                clients.retain(|_, b| b.level_at(now, allowance.interval) > median);
            }
        }
        let bucket = clients.entry(client_key(ip)).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        let level = bucket.level_at(now, allowance.interval);
        *bucket = Bucket {
            level: (level + 1.0).min(f64::from(allowance.burst) + 1.0),
            at: now,
        };
    }
}

/// At most one log line a period; the lines it held back are counted into the next one.
pub struct LogBudget {
    period_ms: u64,
    next_ms: AtomicU64,
    held_back: AtomicU64,
    base: Instant,
}

impl LogBudget {
    pub fn per(period: Duration) -> LogBudget {
        LogBudget {
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn take(&self) -> Option<u64> {
        let now = self.base.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.period_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A request path for logs: segments that look like a phone number or WhatsApp id masked.
pub fn masked_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let digits = seg.trim_start_matches('+');
            if digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
                crate::telemetry::mask(seg)
            } else if seg.len() > 64 {
                format!("{}…", seg.chars().take(64).collect::<String>())
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: Allowance = Allowance {
        burst: 3,
        interval: Duration::from_secs(10),
    };

    #[test]
    fn a_client_is_refused_after_its_burst_and_let_in_again_as_failures_leak_out() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let now = Instant::now();
        for _ in 0..2 {
            t.failed(ip, ALLOW, now);
            assert_eq!(t.blocked(ip, ALLOW, now), None);
        }
        t.failed(ip, ALLOW, now);
        let wait = t
            .blocked(ip, ALLOW, now)
            .expect("blocked after the third failure");
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
        assert!(t.blocked(ip, ALLOW, now + wait).is_none());
        // Another client is not affected.
        assert!(t
            .blocked("203.0.113.8".parse().unwrap(), ALLOW, now)
            .is_none());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..3u16 {
            t.failed(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i + 1)),
                ALLOW,
                now,
            );
        }
        assert!(t
            .blocked("2001:db8:1:2::ffff".parse().unwrap(), ALLOW, now)
            .is_some());
        assert!(t
            .blocked("2001:db8:1:3::1".parse().unwrap(), ALLOW, now)
            .is_none());
        for _ in 0..3 {
            t.failed("::ffff:198.51.100.1".parse().unwrap(), ALLOW, now);
        }
        assert!(t
            .blocked("198.51.100.1".parse().unwrap(), ALLOW, now)
            .is_some());
    }

    #[test]
    fn the_log_budget_writes_one_line_a_period_and_counts_the_rest() {
        let budget = LogBudget::per(Duration::from_secs(3600));
        assert_eq!(budget.take(), Some(0));
        assert_eq!(budget.take(), None);
        assert_eq!(budget.take(), None);
        assert_eq!(budget.held_back.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn numbers_in_paths_are_masked() {
        assert_eq!(
            masked_path("/admin/v1/conversations/106540352242922/6281234567890/reply"),
            "/admin/v1/conversations/***********2922/*********7890/reply"
        );
        assert_eq!(masked_path("/admin/v1/flows"), "/admin/v1/flows");
    }
}
