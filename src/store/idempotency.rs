//! The admin API's `Idempotency-Key` records: a key claimed by the first request, its answer
//! kept once given, for a day. Written through the pool.

use sqlx::Row;

use super::sql::Val;
use super::*;

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemRecord {
    /// Claimed now by this request: run it.
    Claimed,
    /// Another request with the same key: the first one's fingerprint differs.
    OtherRequest,
    /// The first request is still running.
    InFlight,
    /// The first answer.
    Answered {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

impl Store {
    /// Claim `key` for `caller`'s request `fingerprint`, or read what it holds. A claim older
    /// than `abandoned_before` with no answer (its process died) is taken over by the same
    /// request.
    pub async fn claim_idempotency_key(
        &self,
        caller: &str,
        key: &str,
        fingerprint: &str,
        now: i64,
        abandoned_before: i64,
    ) -> Result<IdemRecord, StoreError> {
        let inserted = self
            .run(
                "INSERT INTO idempotency_keys (caller, idem_key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (caller, idem_key) DO NOTHING",
                vec![caller.into(), key.into(), fingerprint.into(), Val::I(now)],
            )
            .await?;
        if inserted > 0 {
            return Ok(IdemRecord::Claimed);
        }
        let rows = self
            .fetch(
                "SELECT fingerprint, status, content_type, body, created_at FROM idempotency_keys WHERE caller = $1 AND idem_key = $2",
                vec![caller.into(), key.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            // Pruned between the two statements: claim again.
            return Box::pin(self.claim_idempotency_key(
                caller,
                key,
                fingerprint,
                now,
                abandoned_before,
            ))
            .await;
        };
        if r.try_get::<String, _>("fingerprint")? != fingerprint {
            return Ok(IdemRecord::OtherRequest);
        }
        match r.try_get::<Option<i64>, _>("status")? {
            Some(status) => Ok(IdemRecord::Answered {
                status: u16::try_from(status).unwrap_or(500),
                content_type: r.try_get("content_type")?,
                body: r.try_get::<Option<Vec<u8>>, _>("body")?.unwrap_or_default(),
            }),
            None => {
                let taken = self
                    .run(
                        "UPDATE idempotency_keys SET created_at = $1 WHERE caller = $2 AND idem_key = $3 \
                         AND status IS NULL AND created_at < $4",
                        vec![Val::I(now), caller.into(), key.into(), Val::I(abandoned_before)],
                    )
                    .await?;
                Ok(if taken > 0 {
                    IdemRecord::Claimed
                } else {
                    IdemRecord::InFlight
                })
            }
        }
    }

    /// The answer to the request that claimed `key`.
    pub async fn answer_idempotency_key(
        &self,
        caller: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 WHERE caller = $4 AND idem_key = $5",
            vec![
                Val::I(i64::from(status)),
                Val::OptS(content_type.map(str::to_string)),
                Val::Bytes(Some(body.to_vec())),
                caller.into(),
                key.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Let `key` go (its request failed in a way worth trying again).
    pub async fn release_idempotency_key(&self, caller: &str, key: &str) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM idempotency_keys WHERE caller = $1 AND idem_key = $2",
            vec![caller.into(), key.into()],
        )
        .await?;
        Ok(())
    }

    /// Forget keys claimed before `before`.
    pub async fn prune_idempotency_keys(&self, before: i64) -> Result<u64, StoreError> {
        self.run(
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            vec![Val::I(before)],
        )
        .await
    }
}
