-- Core tables of the conversation engine (SQLite dialect; keep in step with migrations/postgres).
-- Times are unix milliseconds (BIGINT). Payloads are JSON text of Parley's own typed events.

CREATE TABLE accounts (
    phone_number_id TEXT PRIMARY KEY,
    display_phone_number TEXT NOT NULL DEFAULT '',
    waba_id TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE contacts (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    wa_id TEXT,
    user_id TEXT,
    profile_name TEXT,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    PRIMARY KEY (account, user_key)
) WITHOUT ROWID;

CREATE TABLE conversations (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    state TEXT NOT NULL,
    last_inbound_at BIGINT,
    last_applied_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, user_key)
) WITHOUT ROWID;

-- The durable inbox: every message and status Meta delivered, deduplicated.
-- state: pending (to apply) | done | dead (dead-lettered) | unrouted (unknown phone_number_id)
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT,
    kind TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    wamid TEXT,
    status TEXT,
    payload TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    UNIQUE (account, dedup_key)
);
CREATE INDEX inbox_conversation ON inbox (account, user_key, seq);
CREATE INDEX inbox_pending ON inbox (seq) WHERE state = 'pending';
CREATE INDEX inbox_status_wamid ON inbox (account, wamid) WHERE kind = 'status';

-- Every outbound request (messages and read receipts), queue state and Meta's delivery status.
-- state: pending | sending | sent | failed. status: sent < delivered < read, failed (forward only).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    reply_to TEXT,
    source_seq BIGINT,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    wamid TEXT,
    status TEXT,
    status_rank BIGINT NOT NULL DEFAULT 0,
    status_at BIGINT,
    error_code BIGINT,
    error_detail TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX outbox_open ON outbox (account, id) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_wamid ON outbox (account, wamid);
CREATE INDEX outbox_conversation ON outbox (account, user_key, id);

-- Durable timers (waits, reminders, expiries): fire at or after due_at, once in effect.
CREATE TABLE timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at) WHERE state = 'pending';

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    account TEXT,
    user_key TEXT,
    ref_id BIGINT,
    reason TEXT NOT NULL,
    raw BLOB,
    created_at BIGINT NOT NULL
);

-- Both directions of every conversation: inbound from the inbox, outbound from the outbox.
-- Status history of an outbound message: inbox rows of kind 'status' with its wamid.
CREATE VIEW messages AS
    SELECT 'in' AS direction, account, user_key, seq AS ref_id, wamid, payload AS content,
           NULL AS status, received_at AS at
      FROM inbox WHERE kind = 'message'
    UNION ALL
    SELECT 'out' AS direction, account, user_key, id AS ref_id, wamid, message AS content,
           status, created_at AS at
      FROM outbox WHERE kind = 'message';
