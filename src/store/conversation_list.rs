//! An account's conversations, newest first, for an inbox: computed on read, so the message
//! path writes nothing more. The order is the customer's latest message (the inbox's own
//! `seq`, its primary key, read backwards a window at a time); unread counts walk the
//! conversation's applied chain (`inbox.prev_seq`) down to what an agent marked read; marks
//! and assignments live in `conversation_marks`, written by the admin API only.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::Row;

use super::sql::{in_list, Val};
use super::*;
use crate::domain::{AccountId, UserKey};

/// Inbox rows read per window while collecting a page of conversations.
const WINDOW: i64 = 2_000;
/// At most this many inbox rows read for one page: past it the page ends short (its
/// `next_cursor` goes on from there).
const MAX_SCAN: i64 = 100_000;
/// Unread counts stop here ("99+" is enough for an inbox).
pub const UNREAD_CAP: i64 = 100;

/// One conversation of a page: the user and the seq of its latest message.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentConversation {
    pub user_key: UserKey,
    pub latest_seq: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConversationMark {
    pub read_seq: i64,
    pub read_at: Option<i64>,
    pub assignee: Option<String>,
    pub assigned_at: Option<i64>,
}

impl Store {
    /// Up to `limit` conversations of `account` whose latest message is older than `before`
    /// (a seq; None: from the newest), newest first, and the seq the scan reached (the next
    /// page's start when the page is full or the scan stopped at its cap; None at the end).
    pub async fn recent_conversations(
        &self,
        account: &AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<RecentConversation>, Option<i64>), StoreError> {
        let mut out: Vec<RecentConversation> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut upper = match before {
            Some(b) => b,
            None => {
                let rows = self
                    .fetch("SELECT COALESCE(MAX(seq), 0) + 1 AS top FROM inbox", vec![])
                    .await?;
                rows.first()
                    .map(|r| r.try_get::<i64, _>("top"))
                    .transpose()?
                    .unwrap_or(1)
            }
        };
        let mut scanned = 0;
        while out.len() < limit && upper > 1 && scanned < MAX_SCAN {
            let lower = (upper - WINDOW).max(0);
            // A range of the primary key; each conversation with its newest message in it.
            let rows = self
                .fetch(
                    "SELECT user_key, MAX(seq) AS latest FROM inbox \
                     WHERE seq >= $1 AND seq < $2 AND account = $3 AND kind = 'message' AND user_key IS NOT NULL \
                     GROUP BY user_key ORDER BY latest DESC",
                    vec![Val::I(lower), Val::I(upper), account.into()],
                )
                .await?;
            scanned += upper - lower;
            let mut found: Vec<RecentConversation> = Vec::new();
            for r in rows {
                let user: String = r.try_get("user_key")?;
                let latest: i64 = r.try_get("latest")?;
                if !seen.contains(&user) {
                    found.push(RecentConversation {
                        user_key: UserKey::from(user.as_str()),
                        latest_seq: latest,
                    });
                }
            }
            // A conversation whose newest message is above `before` was on an earlier page.
            if !found.is_empty() {
                let keys: Vec<&str> = found.iter().map(|f| f.user_key.as_str()).collect();
                let mut vals: Vec<Val> = vec![account.into(), Val::I(upper)];
                vals.extend(keys.iter().map(|k| Val::S((*k).to_string())));
                let newer: HashSet<String> = self
                    .fetch(
                        &format!(
                            "SELECT user_key FROM conversations WHERE account = $1 AND last_applied_seq >= $2 AND user_key IN ({})",
                            in_list(keys.len(), 3)
                        ),
                        vals,
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>("user_key"))
                    .collect::<Result<_, _>>()?;
                for f in found {
                    seen.insert(f.user_key.as_str().to_string());
                    if !newer.contains(f.user_key.as_str()) {
                        out.push(f);
                    }
                }
            }
            upper = lower;
        }
        if out.len() > limit {
            out.truncate(limit);
        }
        let next = if out.len() == limit {
            out.last().map(|c| c.latest_seq)
        } else if upper > 1 && scanned >= MAX_SCAN {
            Some(upper)
        } else {
            None
        };
        Ok((out, next))
    }

    /// Inbound messages after `read_seq`, up to [`UNREAD_CAP`]: along the applied chain from
    /// the newest, then the few not applied yet.
    pub async fn unread_count(
        &self,
        account: &AccountId,
        user: &UserKey,
        read_seq: i64,
    ) -> Result<i64, StoreError> {
        let rows = self
            .fetch(
                "WITH RECURSIVE chain(seq, n) AS ( \
                   SELECT last_applied_seq, 1 FROM conversations \
                    WHERE account = $1 AND user_key = $2 AND last_applied_seq > $3 \
                   UNION ALL \
                   SELECT i.prev_seq, chain.n + 1 FROM chain JOIN inbox i ON i.seq = chain.seq \
                    WHERE i.prev_seq > $3 AND chain.n < $4 \
                 ) \
                 SELECT (SELECT COUNT(*) FROM chain) + \
                        (SELECT COUNT(*) FROM inbox WHERE account = $1 AND user_key = $2 AND state = 'pending' \
                          AND kind = 'message' AND seq > $3) AS n",
                vec![account.into(), user.into(), Val::I(read_seq), Val::I(UNREAD_CAP)],
            )
            .await?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(n.min(UNREAD_CAP))
    }

    pub async fn conversation_mark(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<ConversationMark, StoreError> {
        let rows = self
            .fetch(
                "SELECT read_seq, read_at, assignee, assigned_at FROM conversation_marks WHERE account = $1 AND user_key = $2",
                vec![account.into(), user.into()],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(ConversationMark {
                    read_seq: r.try_get("read_seq")?,
                    read_at: r.try_get("read_at")?,
                    assignee: r.try_get("assignee")?,
                    assigned_at: r.try_get("assigned_at")?,
                })
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The newest inbound message's seq (applied or not); 0 when there is none.
    pub async fn latest_inbound_seq(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<i64, StoreError> {
        let rows = self
            .fetch(
                "SELECT a, b FROM (SELECT COALESCE((SELECT last_applied_seq FROM conversations WHERE account = $1 AND user_key = $2), 0) AS a, \
                 COALESCE((SELECT MAX(seq) FROM inbox WHERE account = $1 AND user_key = $2 AND state = 'pending' AND kind = 'message'), 0) AS b) x",
                vec![account.into(), user.into()],
            )
            .await?;
        let r = rows.first();
        let a: i64 = r.map(|r| r.try_get("a")).transpose()?.unwrap_or(0);
        let b: i64 = r.map(|r| r.try_get("b")).transpose()?.unwrap_or(0);
        Ok(a.max(b))
    }

    /// Everything up to `seq` is read.
    pub async fn mark_conversation_read(
        &self,
        account: &AccountId,
        user: &UserKey,
        seq: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO conversation_marks (account, user_key, read_seq, read_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, user_key) DO UPDATE SET read_seq = CASE WHEN excluded.read_seq > conversation_marks.read_seq \
             THEN excluded.read_seq ELSE conversation_marks.read_seq END, read_at = excluded.read_at",
            vec![account.into(), user.into(), Val::I(seq), Val::I(now)],
        )
        .await?;
        Ok(())
    }

    /// Assign the conversation (None: unassign).
    pub async fn assign_conversation(
        &self,
        account: &AccountId,
        user: &UserKey,
        assignee: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO conversation_marks (account, user_key, assignee, assigned_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, user_key) DO UPDATE SET assignee = excluded.assignee, assigned_at = excluded.assigned_at",
            vec![
                account.into(),
                user.into(),
                Val::OptS(assignee.map(str::to_string)),
                Val::I(now),
            ],
        )
        .await?;
        Ok(())
    }
}
