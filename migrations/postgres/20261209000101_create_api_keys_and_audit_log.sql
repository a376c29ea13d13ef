-- Admin API keys and the audit log (postgres dialect; keep in step with the other one).
-- api_keys: a key's text (pk_live_ + 64 hex digits of a random secret) is shown once, at its
-- creation; only its SHA-256 (hex) is kept, and its first 12 hex digits (`prefix`, not
-- secret) to find the row and to tell keys apart. role: owner | admin | manager | agent.
-- account: the one phone_number_id the key may reach (NULL: every account). Times are unix ms;
-- expires_at NULL: never; revoked_at NULL: in force. created_by: the key that made it ("admin.token"
-- or a key's id).
CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    account TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
-- audit_log: one row per mutating admin call (POST/PUT/PATCH/DELETE), append-only (the
-- triggers below refuse UPDATE and DELETE). key_id: "admin.token" or the key's id. action: the
-- method and route template ("POST /keys"); resource: the concrete path; account: the account
-- the call was about, when it names one; status: the answer's HTTP status; details: a small
-- JSON of ids (never a request body).
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    account TEXT,
    status BIGINT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_by_key ON audit_log (key_id, id);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
