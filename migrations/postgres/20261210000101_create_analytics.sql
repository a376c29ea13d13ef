-- Analytics (postgres dialect; keep in step with the other one). What each figure means, how they
-- are kept and how fresh they are: src/analytics/mod.rs. Only the folder writes these tables,
-- but conversation_handoffs, which the conversation writer appends to with the step that made a
-- handoff or a release (rare: not every message).

-- One row per account and local day (YYYY-MM-DD in the account's timezone): the figures
-- folded so far. first_response_hist: the first-response times, "bucket:count;..."
-- (src/analytics/hist.rs).
CREATE TABLE analytics_days (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    messages_in BIGINT NOT NULL DEFAULT 0,
    messages_out BIGINT NOT NULL DEFAULT 0,
    unique_contacts BIGINT NOT NULL DEFAULT 0,
    new_contacts BIGINT NOT NULL DEFAULT 0,
    sent BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    read BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    first_responses BIGINT NOT NULL DEFAULT 0,
    handoffs BIGINT NOT NULL DEFAULT 0,
    releases BIGINT NOT NULL DEFAULT 0,
    agent_ms BIGINT NOT NULL DEFAULT 0,
    flows_started BIGINT NOT NULL DEFAULT 0,
    flows_completed BIGINT NOT NULL DEFAULT 0,
    flows_abandoned BIGINT NOT NULL DEFAULT 0,
    bot_turns BIGINT NOT NULL DEFAULT 0,
    bot_tokens_in BIGINT NOT NULL DEFAULT 0,
    bot_tokens_out BIGINT NOT NULL DEFAULT 0,
    bot_cost_micros BIGINT NOT NULL DEFAULT 0,
    campaign_queued BIGINT NOT NULL DEFAULT 0,
    campaign_sent BIGINT NOT NULL DEFAULT 0,
    campaign_delivered BIGINT NOT NULL DEFAULT 0,
    campaign_read BIGINT NOT NULL DEFAULT 0,
    campaign_failed BIGINT NOT NULL DEFAULT 0,
    campaign_replied BIGINT NOT NULL DEFAULT 0,
    orders BIGINT NOT NULL DEFAULT 0,
    payments_paid BIGINT NOT NULL DEFAULT 0,
    first_response_hist TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, day)
);

-- Money of a day by currency, exact decimal text: the orders' totals and the revenue (paid).
CREATE TABLE analytics_money (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    currency TEXT NOT NULL,
    ordered TEXT NOT NULL,
    revenue TEXT NOT NULL,
    PRIMARY KEY (account, day, currency)
);

-- Distinct contacts: each contact who wrote, once per period (day | week | month, by its first
-- day), so the count of a week is exact; analytics_uniques counts the weeks' and months' (a
-- day's is analytics_days.unique_contacts). Periods long over are pruned from analytics_seen.
CREATE TABLE analytics_seen (
    account TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    user_key TEXT NOT NULL,
    PRIMARY KEY (account, period, period_start, user_key)
);
CREATE TABLE analytics_uniques (
    account TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    contacts BIGINT NOT NULL,
    PRIMARY KEY (account, period, period_start)
);

-- What the folder carries from one pass to the next (src/analytics/fold.rs MarkKind): kind
-- wait | agent | campaign (key: the user; since: when it began), bot (key: the session; fig_*:
-- its turns, tokens in, tokens out, cost in micros counted so far; is_open: still active),
-- paid (key: the payment's id).
CREATE TABLE analytics_marks (
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    mark_key TEXT NOT NULL,
    since BIGINT NOT NULL,
    fig_a BIGINT NOT NULL DEFAULT 0,
    fig_b BIGINT NOT NULL DEFAULT 0,
    fig_c BIGINT NOT NULL DEFAULT 0,
    fig_d BIGINT NOT NULL DEFAULT 0,
    is_open BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (account, kind, mark_key)
);
CREATE INDEX analytics_marks_by_since ON analytics_marks (kind, since);

-- How far the folder read each source: an id (inbox, outbox, flow_steps, handoffs, orders) or
-- a time in ms (bots: chatbot_sessions.updated_at, payments: payments.paid_at).
CREATE TABLE analytics_cursor (
    source TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO analytics_cursor (source, position) VALUES
    ('inbox', 0), ('outbox', 0), ('flow_steps', 0), ('handoffs', 0), ('orders', 0),
    ('bots', 0), ('payments', 0);

-- Handoffs and releases (kind: handoff | released), appended by the conversation writer in the
-- transaction of the step that made them; dedup_key: the step's (a step written again after
-- its batch was reported failed, though it landed, adds none).
CREATE TABLE conversation_handoffs (
    id BIGSERIAL PRIMARY KEY,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    at BIGINT NOT NULL
);

-- The sources updated in place are read by the time they changed.
CREATE INDEX chatbot_sessions_by_updated ON chatbot_sessions (updated_at);
CREATE INDEX payments_by_paid ON payments (paid_at) WHERE paid_at IS NOT NULL;
