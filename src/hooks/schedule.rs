//! When to try a delivery again, and what an answer means: the retry schedule's decisions,
//! without I/O or randomness of their own (the jitter is drawn by the caller).

use std::time::Duration;

/// The default schedule (as Svix's): the first attempt at once, then after 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h and 10 h: eight attempts over about 27 hours.
pub const DEFAULT_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `Retry-After` honoured (a longer one is read as this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one attempt brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status; 0 when none came (refused, timeout, network).
    pub status: u16,
    /// `Retry-After`, when the answer had one.
    pub retry_after: Option<Duration>,
    /// The URL was refused before any connection (SSRF guard, bad URL): no retry helps.
    pub refused: bool,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// Try again at this time (ms).
    RetryAt(i64),
    /// Every attempt of the schedule is used up.
    Exhausted,
    /// A final refusal; `disable`: the endpoint answered 410 Gone and is disabled.
    Failed {
        disable: bool,
    },
}

/// Is this status worth another attempt? 3xx (redirects are not followed), 5xx, and the 4xx
/// that mean "not now" (408 Request Timeout, 409 Conflict, 425 Too Early, 429 Too Many
/// Requests); every other 4xx is final.
pub fn retryable(status: u16) -> bool {
    matches!(status, 0 | 300..=399 | 408 | 409 | 425 | 429 | 500..=599)
}

/// Decide after attempt number `attempts` (1 for the first) answered `answer` at `now_ms`.
/// `schedule[i]` is the wait before attempt `i + 1`; `jitter` in [0, 1) moves each wait by
/// up to ±10 %. A `Retry-After` (up to a day) is waited at least.
pub fn decide(
    schedule: &[Duration],
    attempts: u32,
    answer: Answer,
    now_ms: i64,
    jitter: f64,
) -> Verdict {
    if (200..300).contains(&answer.status) {
        return Verdict::Succeeded;
    }
    if answer.status == 410 {
        return Verdict::Failed { disable: true };
    }
    if answer.refused || !retryable(answer.status) {
        return Verdict::Failed { disable: false };
    }
    let Some(wait) = schedule.get(attempts as usize) else {
        return Verdict::Exhausted;
    };
    let wait = jittered(*wait, jitter);
    let wait = match answer.retry_after {
        Some(ra) => wait.max(ra.min(MAX_RETRY_AFTER)),
        None => wait,
    };
    Verdict::RetryAt(now_ms.saturating_add(wait.as_millis() as i64))
}

/// `wait` moved by `jitter` in [0, 1) to 90–110 % of itself.
pub fn jittered(wait: Duration, jitter: f64) -> Duration {
    wait.mul_f64(0.9 + jitter.clamp(0.0, 1.0) * 0.2)
}

/// Has an endpoint failing since `failing_since` (ms) failed long enough to be disabled?
pub fn disable_now(failing_since: Option<i64>, now_ms: i64, disable_after: Duration) -> bool {
    failing_since
        .is_some_and(|since| now_ms.saturating_sub(since) >= disable_after.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            refused: false,
        }
    }

    #[test]
    fn the_default_schedule_is_the_standard_one_and_spans_about_27_hours() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(5 + 300 + 1800 + 7200 + 18000 + 72000)
        );
        assert_eq!(DEFAULT_SCHEDULE[0], Duration::ZERO);
    }

    #[test]
    fn each_failure_waits_the_next_step_of_the_schedule_with_jitter() {
        let s = DEFAULT_SCHEDULE;
        // After the first attempt: 5 s, ±10 %.
        assert_eq!(decide(&s, 1, answer(500), 0, 0.5), Verdict::RetryAt(5_000));
        assert_eq!(decide(&s, 1, answer(500), 0, 0.0), Verdict::RetryAt(4_500));
        assert_eq!(
            decide(&s, 1, answer(0), 0, 0.999_999),
            Verdict::RetryAt(5_499)
        );
        // After the second: 5 min.
        assert_eq!(
            decide(&s, 2, answer(503), 1_000, 0.5),
            Verdict::RetryAt(301_000)
        );
        // After the eighth: none left.
        assert_eq!(decide(&s, 8, answer(500), 0, 0.5), Verdict::Exhausted);
    }

    #[test]
    fn answers_are_read_as_the_standard_says() {
        let s = DEFAULT_SCHEDULE;
        assert_eq!(decide(&s, 1, answer(204), 0, 0.5), Verdict::Succeeded);
        assert_eq!(
            decide(&s, 1, answer(410), 0, 0.5),
            Verdict::Failed { disable: true }
        );
        assert_eq!(
            decide(&s, 1, answer(400), 0, 0.5),
            Verdict::Failed { disable: false }
        );
        assert_eq!(
            decide(&s, 1, answer(404), 0, 0.5),
            Verdict::Failed { disable: false }
        );
        assert!(
            matches!(decide(&s, 1, answer(302), 0, 0.5), Verdict::RetryAt(_)),
            "3xx: a failure, retried"
        );
        assert!(matches!(
            decide(&s, 1, answer(429), 0, 0.5),
            Verdict::RetryAt(_)
        ));
        let refused = Answer {
            refused: true,
            ..answer(0)
        };
        assert_eq!(
            decide(&s, 1, refused, 0, 0.5),
            Verdict::Failed { disable: false }
        );
    }

    #[test]
    fn retry_after_is_waited_at_least_up_to_a_day() {
        let s = DEFAULT_SCHEDULE;
        let ra = |secs| Answer {
            retry_after: Some(Duration::from_secs(secs)),
            ..answer(429)
        };
        assert_eq!(decide(&s, 1, ra(60), 0, 0.5), Verdict::RetryAt(60_000));
        assert_eq!(
            decide(&s, 1, ra(1), 0, 0.5),
            Verdict::RetryAt(5_000),
            "the schedule's wait is longer"
        );
        assert_eq!(
            decide(&s, 1, ra(10 * 86_400), 0, 0.5),
            Verdict::RetryAt(86_400_000)
        );
    }

    #[test]
    fn an_endpoint_is_disabled_once_it_has_failed_for_the_configured_time() {
        let day = Duration::from_secs(86_400);
        assert!(!disable_now(None, 10 * 86_400_000, day));
        assert!(!disable_now(Some(0), 86_399_999, day));
        assert!(disable_now(Some(0), 86_400_000, day));
    }
}
