-- One row per chatbot session of a conversation, updated as it goes: per-bot counters
-- (sessions by outcome, answers, response time, cost) survive restarts.
-- status: active | completed | timeout | handed_off
CREATE TABLE chatbot_sessions (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    bot TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    turns BIGINT NOT NULL DEFAULT 0,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    -- Exact Decimal as text, and in millionths for sums.
    cost TEXT NOT NULL DEFAULT '0',
    cost_micros BIGINT NOT NULL DEFAULT 0,
    response_ms BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, user_key, bot, started_at)
);
CREATE INDEX chatbot_sessions_by_bot ON chatbot_sessions (bot, status);
