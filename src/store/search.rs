//! Message search: FTS5 on SQLite, a tsvector with a GIN index on PostgreSQL, over one
//! document per message with text (`search_docs`). The index is filled on read: a search
//! first indexes what arrived since the last one (`search_cursor`: the inbox seq and outbox id
//! read so far), in batches, so the message path writes nothing for it. Erasing a contact
//! removes its documents.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, UserKey};

const BATCH: i64 = 2_000;

/// One catch-up at a time in this process (the daemon is the only writer of the index).
pub(super) static CATCH_UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A message's text: its body, caption or title, wherever its kind keeps it.
pub fn message_text(content: &Value) -> Option<&str> {
    [
        "/content/body",
        "/content/text",
        "/content/caption",
        "/content/title",
        "/body",
        "/text/body",
        "/text",
        "/caption",
        "/interactive/body/text",
        "/template/name",
    ]
    .iter()
    .find_map(|p| content.pointer(p).and_then(Value::as_str))
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// The hit's place (the next page's cursor is the last one's).
    pub id: i64,
    pub user: String,
    /// in | out.
    pub direction: String,
    /// The inbox seq (in) or outbox id (out).
    pub message_id: i64,
    pub at: i64,
    pub text: String,
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: String,
    pub user: Option<UserKey>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Hits older than this one (a cursor: its `at` and `id`).
    pub before: Option<(i64, i64)>,
    pub limit: i64,
}

/// FTS5's query for the words of `text`: each a quoted phrase, all of them required.
fn fts5_query(text: &str) -> String {
    text.split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Store {
    /// Index every message that arrived since the last call.
    pub async fn catch_up_search(&self) -> Result<(), StoreError> {
        let _one = CATCH_UP.lock().await;
        for (name, sql) in [
            (
                "inbox",
                "SELECT seq AS id, account, user_key, payload AS body, received_at AS at FROM inbox \
                 WHERE seq > $1 AND kind = 'message' ORDER BY seq LIMIT $2",
            ),
            (
                "outbox",
                "SELECT id, account, user_key, message AS body, created_at AS at FROM outbox \
                 WHERE id > $1 AND kind = 'message' ORDER BY id LIMIT $2",
            ),
        ] {
            loop {
                let mut tx = self.pool().begin().await?;
                // A write first: SQLite takes its write lock now, not after the reads below,
                // where the writer's commits would make it fail at once (BUSY).
                self.tx_run(
                    &mut tx,
                    "UPDATE search_cursor SET position = position WHERE name = $1",
                    vec![name.into()],
                )
                .await?;
                let position: i64 = self
                    .tx_fetch(
                        &mut tx,
                        "SELECT position FROM search_cursor WHERE name = $1",
                        vec![name.into()],
                    )
                    .await?
                    .first()
                    .map(|r| r.try_get("position"))
                    .transpose()?
                    .unwrap_or(0);
                let rows = self
                    .tx_fetch(&mut tx, sql, vec![Val::I(position), Val::I(BATCH)])
                    .await?;
                let Some(last) = rows.last() else {
                    break;
                };
                let last: i64 = last.try_get("id")?;
                let direction = if name == "inbox" { "in" } else { "out" };
                for r in &rows {
                    let Some(user) = r.try_get::<Option<String>, _>("user_key")? else {
                        continue;
                    };
                    let body: String = r.try_get("body")?;
                    let content: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let Some(text) = message_text(&content).filter(|t| !t.trim().is_empty())
                    else {
                        continue;
                    };
                    let vals = vec![
                        Val::S(r.try_get("account")?),
                        Val::S(user),
                        direction.into(),
                        Val::I(r.try_get("id")?),
                        Val::I(r.try_get("at")?),
                        text.into(),
                    ];
                    let inserted = self
                        .tx_fetch(
                            &mut tx,
                            "INSERT INTO search_docs (account, user_key, direction, ref_id, at, body) \
                             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                            vals,
                        )
                        .await?;
                    if self.dialect() == Dialect::Sqlite {
                        let id: i64 = inserted
                            .first()
                            .map(|r| r.try_get("id"))
                            .transpose()?
                            .unwrap_or(0);
                        self.tx_run(
                            &mut tx,
                            "INSERT INTO search_fts (rowid, body) VALUES ($1, $2)",
                            vec![Val::I(id), text.into()],
                        )
                        .await?;
                    }
                }
                self.tx_run(
                    &mut tx,
                    "UPDATE search_cursor SET position = $2 WHERE name = $1",
                    vec![name.into(), Val::I(last)],
                )
                .await?;
                tx.commit().await?;
                if (rows.len() as i64) < BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Messages of `account` with every word of the query, newest first (the matches are
    /// found through the text index, then sorted by time).
    pub async fn search_messages(
        &self,
        account: &AccountId,
        q: &SearchQuery,
    ) -> Result<Vec<SearchHit>, StoreError> {
        self.catch_up_search().await?;
        let (from, matches, query) = match self.dialect() {
            Dialect::Sqlite => (
                "search_fts f JOIN search_docs d ON d.id = f.rowid",
                "search_fts MATCH $2",
                fts5_query(&q.text),
            ),
            Dialect::Postgres => (
                "search_docs d",
                "d.tsv @@ plainto_tsquery('simple', $2)",
                q.text.clone(),
            ),
        };
        let mut vals: Vec<Val> = vec![account.into(), query.into()];
        let mut conds = vec!["d.account = $1".to_string(), matches.to_string()];
        let mut push = |cond: &str, v: Val, vals: &mut Vec<Val>| {
            vals.push(v);
            conds.push(cond.replace('?', &format!("${}", vals.len())));
        };
        if let Some(u) = &q.user {
            push("d.user_key = ?", u.into(), &mut vals);
        }
        if let Some(t) = q.from {
            push("d.at >= ?", Val::I(t), &mut vals);
        }
        if let Some(t) = q.to {
            push("d.at < ?", Val::I(t), &mut vals);
        }
        if let Some((at, id)) = q.before {
            vals.push(Val::I(at));
            let a = vals.len();
            vals.push(Val::I(id));
            conds.push(format!(
                "(d.at < ${a} OR (d.at = ${a} AND d.id < ${}))",
                a + 1
            ));
        }
        vals.push(Val::I(q.limit));
        let sql = format!(
            "SELECT d.id, d.user_key, d.direction, d.ref_id, d.at, d.body FROM {from} WHERE {} ORDER BY d.at DESC, d.id DESC LIMIT ${}",
            conds.join(" AND "),
            vals.len()
        );
        let rows = self.fetch(&sql, vals).await?;
        rows.iter()
            .map(|r| {
                Ok(SearchHit {
                    id: r.try_get("id")?,
                    user: r.try_get("user_key")?,
                    direction: r.try_get("direction")?,
                    message_id: r.try_get("ref_id")?,
                    at: r.try_get("at")?,
                    text: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Remove a contact's documents (its messages were erased).
    pub(super) async fn tx_forget_search(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Sqlite {
            let docs = self
                .tx_fetch(
                    tx,
                    "SELECT id, body FROM search_docs WHERE account = $1 AND user_key = $2",
                    vec![account.into(), user.into()],
                )
                .await?;
            for d in docs {
                self.tx_run(
                    tx,
                    "INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', $1, $2)",
                    vec![Val::I(d.try_get("id")?), Val::S(d.try_get("body")?)],
                )
                .await?;
            }
        }
        self.tx_run(
            tx,
            "DELETE FROM search_docs WHERE account = $1 AND user_key = $2",
            vec![account.into(), user.into()],
        )
        .await?;
        Ok(())
    }
}
