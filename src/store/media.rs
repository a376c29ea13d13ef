//! Inbound media files fetched (or refused), with their transcripts.

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, UserKey};

/// One row of `media_files`: a fetched (or refused) inbound media file, its transcript if
/// any (decimals as text, as the column holds them).
#[derive(Debug, Clone)]
pub struct MediaRow<'a> {
    pub account: &'a AccountId,
    pub media_id: &'a str,
    pub user_key: &'a UserKey,
    pub path: Option<String>,
    pub mime_type: Option<String>,
    pub bytes: u64,
    pub transcript: Option<String>,
    pub language: Option<String>,
    pub duration_secs: Option<String>,
    pub provider: Option<String>,
    pub cost: Option<String>,
    pub error: Option<String>,
}

impl Store {
    /// Record a fetched (or refused) inbound media file.
    pub async fn record_media(&self, m: &MediaRow<'_>) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO media_files (account, media_id, user_key, path, mime_type, bytes, transcript, language, duration_secs, provider, cost, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (account, media_id) DO UPDATE SET \
             path = excluded.path, mime_type = excluded.mime_type, bytes = excluded.bytes, transcript = excluded.transcript, \
             language = excluded.language, duration_secs = excluded.duration_secs, provider = excluded.provider, cost = excluded.cost, error = excluded.error",
            vec![
                m.account.into(),
                m.media_id.into(),
                m.user_key.into(),
                Val::OptS(m.path.clone()),
                Val::OptS(m.mime_type.clone()),
                Val::I(m.bytes as i64),
                Val::OptS(m.transcript.clone()),
                Val::OptS(m.language.clone()),
                Val::OptS(m.duration_secs.clone()),
                Val::OptS(m.provider.clone()),
                Val::OptS(m.cost.clone()),
                Val::OptS(m.error.clone()),
                Val::I(super::now_ms()),
            ],
        )
        .await?;
        Ok(())
    }
}
