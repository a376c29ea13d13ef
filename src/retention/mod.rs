//! Retention's pure policy: given the `[retention]` windows, the accounts' `log_messages` and
//! the time, which stored rows are old enough to erase or delete, and which are still needed.
//! No I/O and no clock: the sweeper (ingress/retention.rs) reads rows through
//! store/retention.rs, asks here, and deletes in small batches.
//!
//! A table is walked in id order from a cursor the store keeps. Each row gets a [`Verdict`]:
//! acted on now, passed for good (nothing will ever be done to it under this policy), or left
//! for later (still needed, or not old enough yet). The cursor moves up to the first row left
//! for later, and the walk stops at the first row younger than every window that could apply
//! (ids grow with time, so every row after it is younger still).

use std::collections::BTreeSet;

use crate::config::{RetentionSettings, Settings, Window};

/// What retention does with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Erase it or delete it now.
    Act,
    /// Nothing to do, now or later, under this policy (kept for ever, or already erased).
    Pass,
    /// Not now: still needed, or not old enough for its window.
    Later,
}

/// An inbox or outbox row as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMeta {
    pub id: i64,
    /// When it arrived (inbox) or was queued (outbox), ms.
    pub at: i64,
    pub account: String,
    /// `message` or another kind.
    pub kind: String,
    /// inbox: pending | done | dead | unrouted; outbox: pending | sending | sent | failed | cancelled.
    pub state: String,
    /// Its body is already erased.
    pub erased: bool,
}

impl RowMeta {
    fn is_message(&self) -> bool {
        self.kind == "message"
    }
}

/// The retention policy at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub now: i64,
    pub windows: RetentionSettings,
    /// Accounts whose message bodies are not kept.
    pub quiet: BTreeSet<String>,
    /// Whether accounts not named in `quiet` keep bodies (`retention.log_messages`).
    pub log_messages: bool,
}

/// An inbox row is processed once it is not `pending` (applied, dead-lettered or unrouted).
fn inbox_processed(state: &str) -> bool {
    state != "pending"
}

/// An outbox row is settled once nothing more will be sent for it.
fn outbox_settled(state: &str) -> bool {
    matches!(state, "sent" | "failed" | "cancelled")
}

fn old(at: i64, cutoff: Option<i64>) -> bool {
    cutoff.is_some_and(|c| at < c)
}

/// The youngest of the cutoffs (rows from then on are left by every one); `None` when all
/// are for ever.
fn horizon(cutoffs: &[Option<i64>]) -> Option<i64> {
    cutoffs.iter().flatten().copied().max()
}

impl Policy {
    pub fn new(settings: &Settings, now: i64) -> Policy {
        let log = settings.retention.log_messages;
        Policy {
            now,
            windows: settings.retention.clone(),
            quiet: settings
                .accounts
                .iter()
                .filter(|a| !a.log_messages.unwrap_or(log))
                .map(|a| a.phone_number_id.to_string())
                .collect(),
            log_messages: log,
        }
    }

    /// Whether `account`'s message bodies are kept.
    pub fn logs_messages(&self, account: &str) -> bool {
        if self.quiet.contains(account) {
            return false;
        }
        // An account no longer configured follows the section's default.
        self.log_messages
    }

    pub fn cutoff(&self, w: Window) -> Option<i64> {
        w.cutoff(self.now)
    }

    /// When a body is erased: at once for an account that keeps none, else past its window.
    fn body_cutoff(&self, r: &RowMeta, window: Window) -> Option<i64> {
        if r.is_message() && !self.logs_messages(&r.account) {
            Some(i64::MAX)
        } else {
            self.cutoff(window)
        }
    }

    /// The inbox's payload: erased once processed and past its window (`messages` for a
    /// message, `inbox` for the rest), or at once for an account that keeps no bodies.
    pub fn inbox_erase(&self, r: &RowMeta) -> Verdict {
        let w = if r.is_message() {
            self.windows.messages
        } else {
            self.windows.inbox
        };
        let cutoff = self.body_cutoff(r, w);
        if r.erased || (cutoff.is_none()) {
            return Verdict::Pass;
        }
        if inbox_processed(&r.state) && old(r.at, cutoff) {
            Verdict::Act
        } else {
            Verdict::Later
        }
    }

    /// The inbox row itself: deleted once processed and past both its window and `dedup`
    /// (the row is what recognises a redelivered webhook).
    pub fn inbox_delete(&self, r: &RowMeta) -> Verdict {
        let w = if r.is_message() {
            self.windows.messages
        } else {
            self.windows.inbox
        };
        let cutoff = self.cutoff(w.max(self.windows.dedup));
        if cutoff.is_none() {
            return Verdict::Pass;
        }
        if inbox_processed(&r.state) && old(r.at, cutoff) {
            Verdict::Act
        } else {
            Verdict::Later
        }
    }

    /// Rows at or after this time are left by the inbox's erasing.
    pub fn inbox_erase_horizon(&self) -> Option<i64> {
        let quiet = (!self.quiet.is_empty() || !self.log_messages).then_some(i64::MAX);
        horizon(&[
            self.cutoff(self.windows.inbox),
            self.cutoff(self.windows.messages),
            quiet,
        ])
    }

    pub fn inbox_delete_horizon(&self) -> Option<i64> {
        let d = self.windows.dedup;
        horizon(&[
            self.cutoff(self.windows.inbox.max(d)),
            self.cutoff(self.windows.messages.max(d)),
        ])
    }

    /// An outbox message's body, once settled: erased at once for an account that keeps no
    /// bodies (the row goes with `messages`).
    pub fn outbox_erase(&self, r: &RowMeta) -> Verdict {
        if !r.is_message() || r.erased || self.logs_messages(&r.account) {
            return Verdict::Pass;
        }
        if outbox_settled(&r.state) {
            Verdict::Act
        } else {
            Verdict::Later
        }
    }

    pub fn outbox_erase_horizon(&self) -> Option<i64> {
        (!self.quiet.is_empty() || !self.log_messages).then_some(i64::MAX)
    }

    /// An outbox row, once settled and past its window (`messages` for a message, `outbox`
    /// for a read receipt). Never one not yet confirmed: pending, sending or in doubt.
    pub fn outbox_delete(&self, r: &RowMeta) -> Verdict {
        let w = if r.is_message() {
            self.windows.messages
        } else {
            self.windows.outbox
        };
        let cutoff = self.cutoff(w);
        if cutoff.is_none() {
            return Verdict::Pass;
        }
        if outbox_settled(&r.state) && old(r.at, cutoff) {
            Verdict::Act
        } else {
            Verdict::Later
        }
    }

    pub fn outbox_delete_horizon(&self) -> Option<i64> {
        horizon(&[
            self.cutoff(self.windows.outbox),
            self.cutoff(self.windows.messages),
        ])
    }

    /// A search document (a message's text): with its message's window, or at once for an
    /// account that keeps no bodies.
    pub fn search_delete(&self, account: &str, at: i64) -> Verdict {
        let cutoff = if self.logs_messages(account) {
            self.cutoff(self.windows.messages)
        } else {
            Some(i64::MAX)
        };
        match cutoff {
            None => Verdict::Pass,
            Some(c) if at < c => Verdict::Act,
            Some(_) => Verdict::Later,
        }
    }

    pub fn search_horizon(&self) -> Option<i64> {
        let quiet = (!self.quiet.is_empty() || !self.log_messages).then_some(i64::MAX);
        horizon(&[self.cutoff(self.windows.messages), quiet])
    }

    /// A flow step: past `flow_steps`, whatever its session's status. Steps are the trace;
    /// a session's state (its node, a wait's timer) lives in its conversation and its
    /// `flow_executions` row, which stay, so a session running for months keeps a bounded
    /// trace instead of all of it.
    pub fn step_delete(&self, at: i64) -> Verdict {
        self.aged(at, self.windows.flow_steps, false)
    }

    /// A row dated `at` under `window`: acted on once past it, unless still `needed`.
    pub fn aged(&self, at: i64, window: Window, needed: bool) -> Verdict {
        match self.cutoff(window) {
            None => Verdict::Pass,
            Some(c) if at < c && !needed => Verdict::Act,
            Some(_) => Verdict::Later,
        }
    }

    /// The fingerprint of what a walk of `job` depends on: a cursor kept under another
    /// policy starts again from the beginning (a longer window passed rows a shorter one
    /// must see).
    pub fn fingerprint(&self, job: &str) -> String {
        let w = &self.windows;
        let quiet: Vec<&str> = self.quiet.iter().map(String::as_str).collect();
        match job {
            "inbox_erase" => format!(
                "{};{};{};{}",
                w.inbox,
                w.messages,
                self.log_messages,
                quiet.join(",")
            ),
            "inbox_delete" => format!("{};{};{}", w.inbox, w.messages, w.dedup),
            "outbox_erase" | "search" => {
                format!("{};{};{}", w.messages, self.log_messages, quiet.join(","))
            }
            "outbox_delete" => format!("{};{}", w.outbox, w.messages),
            "flow_steps" => format!("{}", w.flow_steps),
            "dead_letters" => format!("{}", w.dead_letters),
            "hook_attempts" | "hook_deliveries" => format!("{}", w.webhook_log),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY: i64 = 86_400_000;

    fn policy() -> Policy {
        let mut s = Settings::load(None).unwrap();
        s.retention = RetentionSettings::default();
        Policy::new(&s, 30 * DAY)
    }

    fn row(kind: &str, state: &str, age_days: i64) -> RowMeta {
        RowMeta {
            id: 1,
            at: 30 * DAY - age_days * DAY,
            account: "a".into(),
            kind: kind.into(),
            state: state.into(),
            erased: false,
        }
    }

    #[test]
    fn a_status_is_erased_after_inbox_and_deleted_after_dedup() {
        let p = policy();
        assert_eq!(p.inbox_erase(&row("status", "done", 2)), Verdict::Later);
        assert_eq!(p.inbox_erase(&row("status", "done", 4)), Verdict::Act);
        assert_eq!(p.inbox_delete(&row("status", "done", 4)), Verdict::Later);
        assert_eq!(p.inbox_delete(&row("status", "done", 9)), Verdict::Act);
    }

    #[test]
    fn what_is_still_needed_is_never_acted_on() {
        let p = policy();
        assert_eq!(
            p.inbox_delete(&row("status", "pending", 29)),
            Verdict::Later
        );
        assert_eq!(p.inbox_erase(&row("status", "pending", 29)), Verdict::Later);
        for state in ["pending", "sending"] {
            assert_eq!(
                p.outbox_delete(&row("mark_read", state, 29)),
                Verdict::Later
            );
        }
        assert_eq!(p.outbox_delete(&row("mark_read", "sent", 29)), Verdict::Act);
        assert_eq!(p.step_delete(-1), Verdict::Act);
        assert_eq!(p.step_delete(29 * DAY), Verdict::Later);
    }

    #[test]
    fn messages_are_kept_for_ever_by_default_but_not_for_a_quiet_account() {
        let mut p = policy();
        assert_eq!(p.inbox_erase(&row("message", "done", 29)), Verdict::Pass);
        assert_eq!(p.inbox_delete(&row("message", "done", 29)), Verdict::Pass);
        assert_eq!(p.outbox_delete(&row("message", "sent", 29)), Verdict::Pass);
        p.quiet.insert("a".into());
        assert_eq!(p.inbox_erase(&row("message", "done", 0)), Verdict::Act);
        assert_eq!(p.inbox_erase(&row("message", "pending", 0)), Verdict::Later);
        assert_eq!(p.outbox_erase(&row("message", "sent", 0)), Verdict::Act);
        assert_eq!(
            p.outbox_erase(&row("message", "sending", 0)),
            Verdict::Later
        );
        assert_eq!(p.search_delete("a", 30 * DAY), Verdict::Act);
        assert_eq!(p.search_delete("b", 0), Verdict::Pass);
        let mut erased = row("message", "done", 0);
        erased.erased = true;
        assert_eq!(p.inbox_erase(&erased), Verdict::Pass);
    }

    #[test]
    fn a_short_message_window_still_keeps_the_dedup_row() {
        let mut p = policy();
        p.windows.messages = Window::For(Duration::from_secs(86_400));
        assert_eq!(p.inbox_erase(&row("message", "done", 2)), Verdict::Act);
        assert_eq!(p.inbox_delete(&row("message", "done", 2)), Verdict::Later);
        assert_eq!(p.inbox_delete(&row("message", "done", 9)), Verdict::Act);
        assert_eq!(p.outbox_delete(&row("message", "sent", 2)), Verdict::Act);
    }
}
