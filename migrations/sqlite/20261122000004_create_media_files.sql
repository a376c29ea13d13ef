-- Inbound media as downloaded: where the file is, its type and size, the voice transcript,
-- or why it was refused (e.g. a sha256 mismatch).
CREATE TABLE media_files (
    account TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_key TEXT NOT NULL,
    path TEXT,
    mime_type TEXT,
    bytes BIGINT NOT NULL DEFAULT 0,
    transcript TEXT,
    language TEXT,
    duration_secs TEXT,
    provider TEXT,
    cost TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, media_id)
);
