//! When to try again: the retry delays every caller of another system uses (the Graph API,
//! model providers).

use std::time::Duration;

/// Exponential backoff with jitter: base·2^attempt capped at max, then a random 50–100 %,
/// and never less than the server's Retry-After.
pub fn backoff(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    backoff_with(base, max, attempt, retry_after, fastrand::f64())
}

/// [`backoff`] with its jitter drawn by the caller (`jitter` in [0, 1): the delay is 50 % to
/// 100 % of the exponential step), for decisions that take no randomness of their own.
pub fn backoff_with(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    let jittered = exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) * 0.5);
    match retry_after {
        Some(ra) => jittered.max(ra),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..10 {
            let d = backoff(base, max, attempt, None);
            let full = base.saturating_mul(1 << attempt).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(base, max, 0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
