-- One row per flow session of a conversation, and one per event it handled.
-- status: running (waiting for the user) | paused (waiting on a timer) | completed | failed
CREATE TABLE flow_executions (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    node TEXT,
    steps BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    ended_at BIGINT,
    PRIMARY KEY (account, user_key, flow_id, started_at)
);
CREATE INDEX flow_executions_by_flow ON flow_executions (flow_id, status);

CREATE TABLE flow_execution_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    node TEXT,
    status TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX flow_execution_steps_by_execution ON flow_execution_steps (account, user_key, flow_id, started_at);
