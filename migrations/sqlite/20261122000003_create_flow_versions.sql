-- The source of every flow version that went live, so a conversation pinned to a version
-- finishes on it even after a restart has loaded newer files.
CREATE TABLE flow_versions (
    flow_id TEXT NOT NULL,
    version TEXT NOT NULL,
    source TEXT NOT NULL,
    first_loaded_at BIGINT NOT NULL,
    PRIMARY KEY (flow_id, version)
);
