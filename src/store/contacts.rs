//! Contacts for the admin API: keyset pages with filters, upserts, tags, custom fields and
//! their definitions, blocking, the consent ledger, erasure, import jobs. Written through the
//! pool (never on the message path), each change in one transaction.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

use super::sql::{in_list, Val};
use super::*;
use crate::domain::profile::ProfileField;
use crate::domain::{AccountId, ConsentAction, ContactSource, UserKey};

/// A contact as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ContactRecord {
    /// The conversation's key (the list's order).
    #[serde(skip)]
    pub user_key: String,
    /// The name as the store lowercases it (the name order's key).
    #[serde(skip)]
    pub sort_name: String,
    pub wa_id: String,
    pub user_id: Option<String>,
    /// The WhatsApp profile name (or the one the business gave).
    #[serde(rename = "name")]
    pub profile_name: Option<String>,
    /// The profile fields that are set (`email`, `full_name`, ...).
    pub profile: Map<String, Value>,
    pub custom_fields: Map<String, Value>,
    pub tags: Vec<String>,
    pub source: ContactSource,
    pub blocked_at: Option<i64>,
    pub opted_out_at: Option<i64>,
    pub first_seen_at: i64,
    /// When the customer last wrote (None: never).
    pub last_message_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// Which contacts a page holds, and where it starts.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    pub tag: Option<String>,
    pub blocked: Option<bool>,
    pub opted_out: Option<bool>,
    pub source: Option<ContactSource>,
    /// Changed at or after (ms): the page is then in `updated_at` order.
    pub updated_since: Option<i64>,
    /// Digits (a leading `+` taken): a number prefix; else a name prefix (case-insensitive):
    /// the page is then in name order.
    pub search: Option<String>,
}

/// The order of a page of contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOrder {
    /// By number (user_key).
    Key,
    /// By (`updated_at`, number): with `updated_since`.
    Updated,
    /// By (lowercased name, number): with a name search.
    Name,
}

enum Search<'a> {
    Number(String),
    Name(&'a str),
}

/// `prefix` with its last character moved up by one: every text that starts with `prefix`
/// sorts below it.
fn bump(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    if let Some(last) = chars.pop() {
        let next = char::from_u32(last as u32 + 1).unwrap_or(char::MAX);
        chars.push(next);
    }
    chars.into_iter().collect()
}

impl ContactFilter {
    fn search(&self) -> Option<Search<'_>> {
        let q = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())?;
        let digits = q.trim_start_matches('+');
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Some(Search::Number(digits.to_string()))
        } else {
            Some(Search::Name(q))
        }
    }

    pub fn order(&self) -> ContactOrder {
        match (self.search(), self.updated_since) {
            (Some(Search::Name(_)), _) => ContactOrder::Name,
            (_, Some(_)) => ContactOrder::Updated,
            _ => ContactOrder::Key,
        }
    }
}

/// Where the next page starts: after this contact (with, in the other orders, its time or
/// name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactAfter {
    pub updated_at: i64,
    pub name: String,
    pub user_key: String,
}

/// A contact write from the admin API; None leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactWrite {
    pub profile_name: Option<String>,
    /// Checked values by field ("" clears).
    pub profile: Vec<(ProfileField, String)>,
    pub tags: Option<Vec<String>>,
    /// Checked values (null clears), merged into what is kept.
    pub custom: Map<String, Value>,
    pub source: Option<ContactSource>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentEntry {
    pub id: i64,
    pub action: ConsentAction,
    pub source: String,
    pub actor: String,
    pub note: Option<String>,
    pub at: i64,
}

/// An opt-out or opt-in as asked: where from and by whom.
#[derive(Debug, Clone, Copy)]
pub struct ConsentChange<'a> {
    pub action: ConsentAction,
    pub source: &'a str,
    pub actor: &'a str,
    pub note: Option<&'a str>,
}

/// What erasing a contact's messages came to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Erased {
    pub inbound_messages: i64,
    pub outbound_messages: i64,
    /// Media files of the contact's (their rows gone; the caller removes the files).
    pub media_files: i64,
    /// Where those files are on disk.
    #[serde(skip)]
    pub media_paths: Vec<String>,
}

/// What an erased message body becomes.
pub const ERASED: &str = r#"{"erased":true}"#;

const COLUMNS: &str = "SELECT LOWER(c.profile_name) AS sort_name, c.user_key, c.wa_id, c.user_id, c.profile_name, c.email, c.full_name, c.address, \
     c.birth_date, c.identity_type, c.identity_number, c.gender, c.custom_fields, c.tags, c.source, c.blocked_at, \
     c.opted_out_at, c.first_seen_at, c.updated_at, v.last_inbound_at";

const SELECT: &str = "SELECT LOWER(c.profile_name) AS sort_name, c.user_key, c.wa_id, c.user_id, c.profile_name, c.email, \
     c.full_name, c.address, c.birth_date, c.identity_type, c.identity_number, c.gender, c.custom_fields, c.tags, c.source, \
     c.blocked_at, c.opted_out_at, c.first_seen_at, c.updated_at, v.last_inbound_at \
     FROM contacts c LEFT JOIN conversations v ON v.account = c.account AND v.user_key = c.user_key";

fn record_of(r: &sqlx::any::AnyRow) -> Result<ContactRecord, StoreError> {
    let user_key: String = r.try_get("user_key")?;
    let mut profile = Map::new();
    for f in ProfileField::ALL {
        if let Some(v) = r
            .try_get::<Option<String>, _>(f.name())?
            .filter(|v| !v.is_empty())
        {
            profile.insert(f.name().into(), Value::String(v));
        }
    }
    let custom: Option<String> = r.try_get("custom_fields")?;
    let tags: Option<String> = r.try_get("tags")?;
    let source: Option<String> = r.try_get("source")?;
    Ok(ContactRecord {
        user_key: user_key.clone(),
        sort_name: r
            .try_get::<Option<String>, _>("sort_name")?
            .unwrap_or_default(),
        wa_id: r
            .try_get::<Option<String>, _>("wa_id")?
            .unwrap_or_else(|| user_key.clone()),
        user_id: r.try_get("user_id")?,
        profile_name: r.try_get("profile_name")?,
        profile,
        custom_fields: custom
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default(),
        tags: tags
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        source: match source {
            Some(s) => s
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("contacts.source: {e}")))?,
            None => ContactSource::Whatsapp,
        },
        blocked_at: r.try_get("blocked_at")?,
        opted_out_at: r
            .try_get::<Option<i64>, _>("opted_out_at")?
            .filter(|t| *t > 0),
        first_seen_at: r.try_get("first_seen_at")?,
        last_message_at: r.try_get("last_inbound_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// A page of `account`'s contacts, in [`ContactFilter::order`]; each filter reads an index
    /// in that order (the primary key, `contact_tags`, `contacts_by_source`,
    /// `contacts_blocked`, `contacts_opted_out`, `contacts_by_updated`, `contacts_by_name`),
    /// never an OFFSET.
    pub async fn contacts_page(
        &self,
        account: &AccountId,
        f: &ContactFilter,
        after: Option<&ContactAfter>,
        limit: i64,
    ) -> Result<Vec<ContactRecord>, StoreError> {
        let mut vals: Vec<Val> = vec![account.into()];
        let arg = |v: Val, vals: &mut Vec<Val>| {
            vals.push(v);
            format!("${}", vals.len())
        };
        let mut conds = Vec::new();
        // With a tag the page is read from its rows, in user_key order (a rare tag does not
        // walk every contact).
        let (from, key) = match &f.tag {
            Some(tag) => {
                let p = arg(Val::S(tag.clone()), &mut vals);
                conds.push(format!("t.account = $1 AND t.tag = {p}"));
                (
                    "FROM contact_tags t JOIN contacts c ON c.account = t.account AND c.user_key = t.user_key",
                    "t.user_key",
                )
            }
            None => {
                conds.push("c.account = $1".to_string());
                ("FROM contacts c", "c.user_key")
            }
        };
        match f.blocked {
            Some(true) => conds.push("c.blocked_at IS NOT NULL".into()),
            Some(false) => conds.push("c.blocked_at IS NULL".into()),
            None => {}
        }
        match f.opted_out {
            Some(true) => conds.push("c.opted_out_at > 0".into()),
            Some(false) => conds.push("(c.opted_out_at IS NULL OR c.opted_out_at <= 0)".into()),
            None => {}
        }
        if let Some(source) = f.source {
            if source == ContactSource::Whatsapp {
                conds.push("(c.source = 'whatsapp' OR c.source IS NULL)".into());
            } else {
                let p = arg(Val::S(source.as_str().into()), &mut vals);
                conds.push(format!("c.source = {p}"));
            }
        }
        if let Some(since) = f.updated_since {
            let p = arg(Val::I(since), &mut vals);
            conds.push(format!("c.updated_at >= {p}"));
        }
        let (lo, hi) = match f.search() {
            Some(Search::Number(n)) => (bump(&n), n),
            // As the store lowercases: SQLite's LOWER is ASCII only.
            Some(Search::Name(n)) => {
                let n = match self.dialect() {
                    Dialect::Sqlite => n.to_ascii_lowercase(),
                    Dialect::Postgres => n.to_lowercase(),
                };
                (bump(&n), n)
            }
            None => (String::new(), String::new()),
        };
        let (hi, lo) = (lo, hi);
        match f.search() {
            // A number prefix: a range of the primary key.
            Some(Search::Number(_)) => {
                let (lo, hi) = (arg(Val::S(lo), &mut vals), arg(Val::S(hi), &mut vals));
                conds.push(format!("{key} >= {lo} AND {key} < {hi}"));
            }
            // A name prefix: a range of `contacts_by_name`.
            Some(Search::Name(_)) => {
                let (lo, hi) = (arg(Val::S(lo), &mut vals), arg(Val::S(hi), &mut vals));
                conds.push(format!(
                    "LOWER(c.profile_name) >= {lo} AND LOWER(c.profile_name) < {hi}"
                ));
            }
            None => {}
        }
        let order = match f.order() {
            ContactOrder::Name => {
                if let Some(a) = after {
                    let n = arg(Val::S(a.name.clone()), &mut vals);
                    let k = arg(Val::S(a.user_key.clone()), &mut vals);
                    conds.push(format!(
                        "(LOWER(c.profile_name) > {n} OR (LOWER(c.profile_name) = {n} AND c.user_key > {k}))"
                    ));
                }
                "LOWER(c.profile_name), c.user_key".to_string()
            }
            ContactOrder::Updated => {
                if let Some(a) = after {
                    let t = arg(Val::I(a.updated_at), &mut vals);
                    let k = arg(Val::S(a.user_key.clone()), &mut vals);
                    conds.push(format!(
                        "(c.updated_at > {t} OR (c.updated_at = {t} AND c.user_key > {k}))"
                    ));
                }
                "c.updated_at, c.user_key".to_string()
            }
            ContactOrder::Key => {
                if let Some(a) = after {
                    let k = arg(Val::S(a.user_key.clone()), &mut vals);
                    conds.push(format!("{key} > {k}"));
                    if f.tag.is_some() {
                        // Bounds the contacts' side too, should the planner merge the two.
                        conds.push(format!("c.user_key > {k}"));
                    }
                }
                key.to_string()
            }
        };
        let l = arg(Val::I(limit), &mut vals);
        let sql = format!(
            "{COLUMNS} {from} LEFT JOIN conversations v ON v.account = c.account AND v.user_key = c.user_key \
             WHERE {} ORDER BY {order} LIMIT {l}",
            conds.join(" AND ")
        );
        let rows = self.fetch(&sql, vals).await?;
        rows.iter().map(record_of).collect()
    }

    pub async fn contact_record(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<Option<ContactRecord>, StoreError> {
        let rows = self
            .fetch(
                &format!("{SELECT} WHERE c.account = $1 AND c.user_key = $2"),
                vec![account.into(), user.into()],
            )
            .await?;
        rows.first().map(record_of).transpose()
    }

    /// Create or change a contact; true when it was created.
    pub async fn upsert_contact(
        &self,
        account: &AccountId,
        user: &UserKey,
        w: &ContactWrite,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // A write first: SQLite takes its write lock now (waiting its turn), not after the
        // read below, where another connection's commit would make it fail at once (BUSY).
        self.tx_run(
            &mut tx,
            "UPDATE contacts SET updated_at = updated_at WHERE account = $1 AND user_key = $2",
            vec![account.into(), user.into()],
        )
        .await?;
        let existing = self
            .tx_fetch(
                &mut tx,
                "SELECT custom_fields FROM contacts WHERE account = $1 AND user_key = $2",
                vec![account.into(), user.into()],
            )
            .await?;
        let created = existing.is_empty();
        let mut custom: Map<String, Value> = match existing.first() {
            Some(r) => r
                .try_get::<Option<String>, _>("custom_fields")?
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
            None => Map::new(),
        };
        for (k, v) in &w.custom {
            if v.is_null() {
                custom.remove(k);
            } else {
                custom.insert(k.clone(), v.clone());
            }
        }
        let mut profile: [Option<String>; 7] = Default::default();
        for (f, v) in &w.profile {
            if let Some(i) = ProfileField::ALL.iter().position(|x| x == f) {
                profile[i] = Some(v.clone());
            }
        }
        let tags = w
            .tags
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let custom_text =
            (!custom.is_empty() || !created).then(|| Value::Object(custom).to_string());
        let mut vals: Vec<Val> = vec![
            account.into(),
            user.into(),
            Val::S(user.as_str().into()),
            Val::OptS(w.profile_name.clone()),
            Val::I(now),
            Val::OptS(tags.clone()),
            Val::OptS(custom_text),
            Val::S(w.source.unwrap_or(ContactSource::Manual).as_str().into()),
        ];
        vals.extend(profile.iter().map(|p| Val::OptS(p.clone())));
        let set_profile: String = ProfileField::ALL
            .iter()
            .map(|f| {
                format!(
                    ", {n} = CASE WHEN excluded.{n} IS NULL THEN contacts.{n} WHEN excluded.{n} = '' THEN NULL ELSE excluded.{n} END",
                    n = f.name()
                )
            })
            .collect();
        let cols: Vec<&str> = ProfileField::ALL.iter().map(|f| f.name()).collect();
        self.tx_run(
            &mut tx,
            &format!(
                "INSERT INTO contacts (account, user_key, wa_id, profile_name, first_seen_at, last_seen_at, updated_at, tags, custom_fields, source, {}) \
                 VALUES ($1, $2, $3, $4, $5, $5, $5, $6, $7, $8, {}) \
                 ON CONFLICT (account, user_key) DO UPDATE SET profile_name = COALESCE(excluded.profile_name, contacts.profile_name), \
                 updated_at = excluded.updated_at, tags = COALESCE(excluded.tags, contacts.tags), \
                 custom_fields = COALESCE(excluded.custom_fields, contacts.custom_fields){set_profile}",
                cols.join(", "),
                (9..16).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            ),
            vals,
        )
        .await?;
        if let Some(t) = &w.tags {
            self.tx_set_tag_rows(&mut tx, account, user, t).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn tx_set_tag_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        user: &UserKey,
        tags: &[String],
    ) -> Result<(), StoreError> {
        self.tx_run(
            tx,
            "DELETE FROM contact_tags WHERE account = $1 AND user_key = $2",
            vec![account.into(), user.into()],
        )
        .await?;
        for t in tags {
            self.tx_run(
                tx,
                "INSERT INTO contact_tags (account, tag, user_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                vec![account.into(), t.as_str().into(), user.into()],
            )
            .await?;
        }
        Ok(())
    }

    /// Block (or unblock) a contact; false when there is none.
    pub async fn set_contact_blocked(
        &self,
        account: &AccountId,
        user: &UserKey,
        blocked: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = if blocked {
            "UPDATE contacts SET blocked_at = COALESCE(blocked_at, $3), updated_at = $3 WHERE account = $1 AND user_key = $2"
        } else {
            "UPDATE contacts SET blocked_at = NULL, updated_at = $3 WHERE account = $1 AND user_key = $2"
        };
        Ok(self
            .run(sql, vec![account.into(), user.into(), Val::I(now)])
            .await?
            > 0)
    }

    /// An opt-out or opt-in: the contact's `opted_out_at` (what campaigns skip by) and an
    /// entry in the append-only ledger, together. False when there is no such contact.
    pub async fn record_consent(
        &self,
        account: &AccountId,
        user: &UserKey,
        change: &ConsentChange<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let ConsentChange {
            action,
            source,
            actor,
            note,
        } = *change;
        let mut tx = self.pool().begin().await?;
        let out = match action {
            ConsentAction::OptOut => Val::I(now),
            ConsentAction::OptIn => Val::OptI(None),
        };
        let changed = self
            .tx_run(
                &mut tx,
                "UPDATE contacts SET opted_out_at = $3, updated_at = $4 WHERE account = $1 AND user_key = $2",
                vec![account.into(), user.into(), out, Val::I(now)],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        self.tx_run(
            &mut tx,
            "INSERT INTO contact_consent (account, user_key, action, source, actor, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                account.into(),
                user.into(),
                action.as_str().into(),
                source.into(),
                actor.into(),
                Val::OptS(note.map(str::to_string)),
                Val::I(now),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A contact's consent ledger, oldest first.
    pub async fn consent_ledger(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        let rows = self
            .fetch(
                "SELECT id, action, source, actor, note, at FROM contact_consent WHERE account = $1 AND user_key = $2 ORDER BY id",
                vec![account.into(), user.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentEntry {
                    id: r.try_get("id")?,
                    action: stored(r, "action")?,
                    source: r.try_get("source")?,
                    actor: r.try_get("actor")?,
                    note: r.try_get("note")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Delete a contact: its row, tags, read marks, and every message body of its
    /// conversation (inbound payloads and outbound messages become `{"erased":true}`; the
    /// rows stay, so counts and delivery statuses do). Messages not applied or not sent yet
    /// keep their bodies until they are. The consent ledger is kept (the proof of consent).
    /// None when there is no such contact.
    pub async fn delete_contact(
        &self,
        account: &AccountId,
        user: &UserKey,
    ) -> Result<Option<Erased>, StoreError> {
        // Not while the search index reads these messages.
        let _index = super::search::CATCH_UP.lock().await;
        let mut tx = self.pool().begin().await?;
        let gone = self
            .tx_run(
                &mut tx,
                "DELETE FROM contacts WHERE account = $1 AND user_key = $2",
                vec![account.into(), user.into()],
            )
            .await?;
        if gone == 0 {
            return Ok(None);
        }
        for table in ["contact_tags", "conversation_marks"] {
            self.tx_run(
                &mut tx,
                &format!("DELETE FROM {table} WHERE account = $1 AND user_key = $2"),
                vec![account.into(), user.into()],
            )
            .await?;
        }
        // The applied messages: the conversation's chain.
        let seqs: Vec<i64> = self
            .tx_fetch(
                &mut tx,
                "WITH RECURSIVE chain(seq) AS ( \
                   SELECT last_applied_seq FROM conversations WHERE account = $1 AND user_key = $2 AND last_applied_seq > 0 \
                   UNION ALL \
                   SELECT i.prev_seq FROM chain JOIN inbox i ON i.seq = chain.seq WHERE i.prev_seq > 0 \
                 ) SELECT seq FROM chain",
                vec![account.into(), user.into()],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("seq"))
            .collect::<Result<_, _>>()?;
        let mut erased = Erased::default();
        for chunk in seqs.chunks(200) {
            let mut vals: Vec<Val> = vec![ERASED.into(), account.into(), user.into()];
            vals.extend(chunk.iter().map(|s| Val::I(*s)));
            erased.inbound_messages += self
                .tx_run(
                    &mut tx,
                    &format!(
                        "UPDATE inbox SET payload = $1 WHERE account = $2 AND user_key = $3 AND kind = 'message' AND seq IN ({})",
                        in_list(chunk.len(), 4)
                    ),
                    vals,
                )
                .await? as i64;
            // Replies to those messages are keyed by their seq.
            for seq in chunk {
                let (from, to) = inbound_reply_key_range(*seq);
                erased.outbound_messages += self
                    .tx_run(
                        &mut tx,
                        "UPDATE outbox SET message = $1 WHERE idem_key >= $2 AND idem_key < $3 AND kind = 'message' \
                         AND state IN ('sent', 'failed') AND account = $4 AND user_key = $5",
                        vec![ERASED.into(), from.into(), to.into(), account.into(), user.into()],
                    )
                    .await? as i64;
            }
        }
        let (from, to) = idem_key_range(format!("{account}:{user}:"));
        erased.outbound_messages += self
            .tx_run(
                &mut tx,
                "UPDATE outbox SET message = $1 WHERE idem_key >= $2 AND idem_key < $3 AND kind = 'message' \
                 AND state IN ('sent', 'failed') AND account = $4 AND user_key = $5",
                vec![ERASED.into(), from.into(), to.into(), account.into(), user.into()],
            )
            .await? as i64;
        // Media: the rows (with any transcript) now, the files once this commits.
        erased.media_paths = self
            .tx_fetch(
                &mut tx,
                "SELECT path FROM media_files WHERE account = $1 AND user_key = $2 AND path IS NOT NULL",
                vec![account.into(), user.into()],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("path"))
            .collect::<Result<_, _>>()?;
        erased.media_files = self
            .tx_run(
                &mut tx,
                "DELETE FROM media_files WHERE account = $1 AND user_key = $2",
                vec![account.into(), user.into()],
            )
            .await? as i64;
        self.tx_forget_search(&mut tx, account, user).await?;
        tx.commit().await?;
        Ok(Some(erased))
    }
}

/// What a conversation starting now takes from its contact row (made by the admin API or an
/// import before the customer first wrote).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactSeed {
    pub tags: std::collections::BTreeSet<String>,
    pub profile: std::collections::BTreeMap<String, String>,
    pub blocked: bool,
}

impl Store {
    /// The seed of a conversation that has no row yet: one primary-key read, at its first
    /// event only.
    pub async fn contact_seed(
        &self,
        key: &crate::domain::ConversationKey,
    ) -> Result<Option<ContactSeed>, StoreError> {
        let rows = self
            .fetch(
                &format!("{SELECT} WHERE c.account = $1 AND c.user_key = $2"),
                vec![key.account.as_str().into(), key.user.as_str().into()],
            )
            .await?;
        Ok(rows
            .first()
            .map(record_of)
            .transpose()?
            .map(|c| ContactSeed {
                tags: c.tags.into_iter().collect(),
                profile: c
                    .profile
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                    .collect(),
                blocked: c.blocked_at.is_some(),
            }))
    }
}
