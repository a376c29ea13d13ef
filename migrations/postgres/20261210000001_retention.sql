-- Retention (PostgreSQL; keep in step with sqlite). The sweeper walks each big table in id
-- order; where a walk stopped is kept here so that a restart does not read again rows it
-- already passed. `policy` names the windows the walk ran under: under other windows it
-- starts again from the beginning.
CREATE TABLE retention_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    policy TEXT NOT NULL
);

-- Webhook events are deleted by age once none of their deliveries is left: found by age.
CREATE INDEX hook_events_by_age ON hook_events (created_at);

-- Space given back: left to autovacuum. These tables lose rows in small batches all day, by
-- the sweeper, and gain them as fast. The default scale factor (0.2: vacuum once a fifth of
-- the table is dead) lets a 50-million-row inbox carry 10 million dead rows before a vacuum,
-- so the table and its indexes grow by that much before space is reused. At 0.02 (plus
-- 10,000 rows) a vacuum follows each few percent deleted, which is what the sweeper removes
-- in an hour or so at a million messages a day; each such vacuum is short and, with the
-- default cost limit, gentle on the writer. Analyze follows at 0.05, since the planner's
-- estimates of pending rows (small partial indexes) matter more than the totals. The
-- insert-triggered vacuum (PostgreSQL 13+) keeps the visibility map fresh for the
-- append-only log tables (index-only reads of statuses by wamid).
ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE flow_execution_steps SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE search_docs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000);
ALTER TABLE hook_attempts SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000);
ALTER TABLE hook_deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000);
ALTER TABLE hook_events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000);
ALTER TABLE campaign_recipients SET (autovacuum_vacuum_scale_factor = 0.05);
