-- Ended flow sessions (completed, failed) are deleted once past `retention.flow_steps`, as
-- their trace is: this index finds them oldest first without reading the running ones.
CREATE INDEX flow_executions_by_end ON flow_executions (ended_at) WHERE ended_at IS NOT NULL;
