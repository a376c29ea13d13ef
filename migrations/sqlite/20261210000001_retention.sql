-- Retention (SQLite; keep in step with postgres). The sweeper walks each big table in id
-- order; where a walk stopped is kept here so that a restart does not read again rows it
-- already passed (the messages kept for ever, say). `policy` names the windows the walk ran
-- under: under other windows it starts again from the beginning.
CREATE TABLE retention_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    policy TEXT NOT NULL
);

-- Webhook events are deleted by age once none of their deliveries is left: found by age.
CREATE INDEX hook_events_by_age ON hook_events (created_at);

-- Space given back: a database created from here on is INCREMENTAL (set by the connection,
-- before the first table is made: see store/mod.rs), and the sweeper runs
-- `PRAGMA incremental_vacuum(N)` after a pass that deleted rows. An existing database keeps
-- its mode (changing it needs a full VACUUM, which rewrites the file under an exclusive lock
-- and needs as much free disk again): its freed pages are reused by new rows instead, so the
-- file stops growing once the windows are full. README "Retention" says how to convert one
-- offline.
