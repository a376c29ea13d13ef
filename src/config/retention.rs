//! `[retention]`: how long each kind of stored data is kept (every key live on reload). The
//! policy that reads these windows is `crate::retention`; the pass that applies them is
//! `ingress/retention.rs`.

use super::*;

/// How long one kind of data is kept: a duration (`"2s"`, `"7d"`) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    For(Duration),
    Forever,
}

impl Window {
    /// Rows from before this instant (ms) are past the window; `None`: kept for ever.
    pub fn cutoff(self, now_ms: i64) -> Option<i64> {
        match self {
            Window::For(d) => Some(now_ms.saturating_sub(d.as_millis() as i64)),
            Window::Forever => None,
        }
    }

    /// The longer of the two (for ever is longest).
    pub fn max(self, other: Window) -> Window {
        match (self, other) {
            (Window::For(a), Window::For(b)) => Window::For(a.max(b)),
            _ => Window::Forever,
        }
    }

    fn days(d: u64) -> Window {
        Window::For(Duration::from_secs(d * 86_400))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Forever => f.write_str("forever"),
            Window::For(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

impl std::str::FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Window, String> {
        if s.trim().eq_ignore_ascii_case("forever") {
            return Ok(Window::Forever);
        }
        let d = parse_duration(s).map_err(|e| {
            format!("{e}; a retention window is a duration like 2s, 12h, 7d or \"forever\"")
        })?;
        if d.is_zero() {
            return Err(format!(
                "`{s}`: a retention window must be more than 0 (or \"forever\")"
            ));
        }
        Ok(Window::For(d))
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Window, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Secs(0) => Err(serde::de::Error::custom(
                "a retention window must be more than 0 (or \"forever\")",
            )),
            Raw::Secs(n) => Ok(Window::For(Duration::from_secs(n))),
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Processed inbox rows other than messages (statuses, account events): their payload.
    pub inbox: Window,
    /// Settled outbox rows other than messages (read receipts).
    pub outbox: Window,
    /// Message bodies and rows, both directions (and their search documents).
    pub messages: Window,
    /// Flow execution steps (the trace; a session's state lives in its conversation).
    pub flow_steps: Window,
    /// Recipients and `campaign_messages` of a finished campaign, counted from its end (its
    /// counters are frozen first: store/campaign_totals.rs). One window for both: they are
    /// the campaign's per-recipient record, read together, and neither is needed once the
    /// counters are kept.
    pub campaign_recipients: Window,
    pub dead_letters: Window,
    /// Downloaded media: the file and its row.
    pub media: Window,
    /// How long a webhook's ids stay known to its dedup (the inbox row, payload erased).
    pub dedup: Window,
    /// Outbound webhooks' delivery log: settled deliveries, their attempts and events.
    pub webhook_log: Window,
    /// Conversations' history beside the analytics snapshots: ended chatbot sessions, the
    /// handoff log, timers that fired (or were cancelled).
    pub sessions: Window,
    /// Store message bodies at all (an account's `log_messages` overrides it).
    pub log_messages: bool,
    /// How often a retention pass runs.
    #[serde(deserialize_with = "de_duration")]
    pub every: Duration,
    /// Rows per statement, and statements per table and pass.
    pub batch: u32,
    pub batches_per_pass: u32,
    /// Between two statements of a pass.
    #[serde(deserialize_with = "de_duration")]
    pub pause: Duration,
    /// SQLite: pages given back to the file system after each pass that deleted rows.
    pub vacuum_pages: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            inbox: Window::days(3),
            outbox: Window::days(7),
            messages: Window::Forever,
            flow_steps: Window::days(30),
            campaign_recipients: Window::days(90),
            dead_letters: Window::days(30),
            media: Window::days(90),
            dedup: Window::days(8),
            webhook_log: Window::days(30),
            sessions: Window::days(30),
            log_messages: true,
            every: Duration::from_secs(60),
            batch: 500,
            batches_per_pass: 20,
            pause: Duration::from_millis(20),
            vacuum_pages: 2_000,
        }
    }
}

impl RetentionSettings {
    /// Meta redelivers an unanswered webhook for up to 7 days.
    pub const META_REDELIVERY: Duration = Duration::from_secs(7 * 86_400);

    pub(super) fn check(&self, errors: &mut Vec<String>) {
        if self.every.is_zero() {
            errors.push("retention.every: must be more than 0".into());
        }
        if self.batch == 0 || self.batch > 10_000 {
            errors.push("retention.batch: must be from 1 to 10000".into());
        }
        if self.batches_per_pass == 0 {
            errors.push("retention.batches_per_pass: must be at least 1".into());
        }
    }

    pub(super) fn warnings(&self, w: &mut Vec<String>) {
        if let Window::For(d) = self.dedup {
            if d < Self::META_REDELIVERY {
                w.push(format!(
                    "retention.dedup is {}: shorter than Meta's 7-day redelivery, a webhook redelivered later is applied twice.",
                    self.dedup
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_a_duration_or_forever() {
        assert_eq!("forever".parse::<Window>(), Ok(Window::Forever));
        assert_eq!(
            "2s".parse::<Window>(),
            Ok(Window::For(Duration::from_secs(2)))
        );
        assert_eq!(
            "7d".parse::<Window>(),
            Ok(Window::For(Duration::from_secs(7 * 86_400)))
        );
        assert!("0s".parse::<Window>().unwrap_err().contains("more than 0"));
        assert!("7x".parse::<Window>().unwrap_err().contains("forever"));
        assert_eq!(Window::days(2).max(Window::Forever), Window::Forever);
        assert_eq!(
            Window::days(2).cutoff(10 * 86_400_000),
            Some(8 * 86_400_000)
        );
        assert_eq!(Window::Forever.cutoff(1), None);
    }

    #[test]
    fn a_bad_window_names_its_key_and_a_short_dedup_is_warned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[retention]\nmedia = \"ninety days\"\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("retention.media"), "{err}");
        std::fs::write(&file, "[retention]\ndedup = \"1d\"\nmedia = \"forever\"\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.retention.media, Window::Forever);
        assert!(
            s.warnings().iter().any(|w| w.contains("retention.dedup")),
            "{:?}",
            s.warnings()
        );
    }
}
