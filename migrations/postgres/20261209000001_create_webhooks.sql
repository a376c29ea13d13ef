-- Outbound webhooks (postgres dialect; keep in step with the other one). Times in ms.
-- hook_endpoints: a subscription. account NULL: every account. events: the event types it
-- wants, comma-separated (empty: all). secret: the signing secret (whsec_…); prev_secret:
-- the one it replaced, still signing (a second signature) until prev_secret_until.
-- failing_since: when its deliveries began to fail (NULL while they succeed); a disabled
-- endpoint has active = 0 and disabled_reason.
CREATE TABLE hook_endpoints (
    id TEXT PRIMARY KEY,
    account TEXT,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    active BIGINT NOT NULL,
    secret TEXT NOT NULL,
    prev_secret TEXT,
    prev_secret_until BIGINT,
    description TEXT NOT NULL,
    failing_since BIGINT,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- hook_events: the transactional outbox, written in the transaction of the change it reports,
-- only when an endpoint wanted it. id (msg_…) is the webhook-id of every attempt. user_key and
-- sequence: the conversation concerned and the event's place in it (1, 2, …).
-- dedup_key: what makes the same change, written again, one event.
CREATE TABLE hook_events (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    user_key TEXT,
    sequence BIGINT,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX hook_events_by_conversation ON hook_events (account, user_key, sequence);
-- hook_deliveries: one event to one endpoint. state: pending | succeeded | failed | exhausted;
-- next_at: when a pending one is tried next.
CREATE TABLE hook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    last_status BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX hook_deliveries_due ON hook_deliveries (state, next_at);
CREATE INDEX hook_deliveries_by_endpoint ON hook_deliveries (endpoint_id, id);
-- hook_attempts: the delivery log. status 0: no answer (error says why); body: the first
-- 4 KB of the answer.
CREATE TABLE hook_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    error TEXT
);
CREATE INDEX hook_attempts_by_endpoint ON hook_attempts (endpoint_id, id);
