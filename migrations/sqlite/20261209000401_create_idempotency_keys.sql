-- The admin API's Idempotency-Key: a POST sent again with the same key by the same caller
-- gets the first answer back instead of doing it twice. Kept for a day.
CREATE TABLE idempotency_keys (
    caller TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    -- SHA-256 of the method, path, query and body: the same key on another request is refused.
    fingerprint TEXT NOT NULL,
    -- NULL while the first request runs.
    status INTEGER,
    content_type TEXT,
    body BLOB,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (caller, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
