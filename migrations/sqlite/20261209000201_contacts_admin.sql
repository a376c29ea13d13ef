-- Contacts, conversations and consent for the admin API (SQLite; keep in step with postgres).

-- Where a contact came from (manual | import | api | whatsapp; NULL: whatsapp, rows older
-- than this column), when it last changed (written with every contact write, which is not
-- every message: see conversation::plan::contact_change), and its custom field values (a
-- JSON object checked against contact_field_defs).
ALTER TABLE contacts ADD COLUMN source TEXT;
ALTER TABLE contacts ADD COLUMN updated_at BIGINT;
ALTER TABLE contacts ADD COLUMN custom_fields TEXT;

-- Keyset pages of an account's contacts read (account, user_key) — the primary key — and
-- each filter has an index in that order, or one it pages by (updated_at).
CREATE INDEX contacts_by_updated ON contacts (account, updated_at, user_key);
CREATE INDEX contacts_by_source ON contacts (account, source, user_key);
-- A name search is a prefix of the lowercased name: a range of this index, in its order.
CREATE INDEX contacts_by_name ON contacts (account, LOWER(profile_name), user_key);
CREATE INDEX contacts_blocked ON contacts (account, user_key) WHERE blocked_at IS NOT NULL;
CREATE INDEX contacts_opted_out ON contacts (account, user_key) WHERE opted_out_at > 0;

-- One row per (contact, tag), kept with contacts.tags whenever tags are written.
CREATE TABLE contact_tags (
    account TEXT NOT NULL,
    tag TEXT NOT NULL,
    user_key TEXT NOT NULL,
    PRIMARY KEY (account, tag, user_key)
) WITHOUT ROWID;

-- Custom field definitions. kind: text | number | date | list | boolean; options: the
-- list's allowed values (JSON array).
CREATE TABLE contact_field_defs (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    options TEXT,
    label TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;

-- The consent ledger: append-only. action: opt_out | opt_in; source: admin | api | import |
-- whatsapp (a keyword the customer wrote); actor: who (an admin key or "customer").
CREATE TABLE contact_consent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX contact_consent_by_contact ON contact_consent (account, user_key, id);

-- What an agent has read and who has the conversation. Written by the admin API only, never
-- on the message path: unread = inbound messages along the conversation's chain after read_seq.
CREATE TABLE conversation_marks (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    read_seq BIGINT NOT NULL DEFAULT 0,
    read_at BIGINT,
    assignee TEXT,
    assigned_at BIGINT,
    PRIMARY KEY (account, user_key)
) WITHOUT ROWID;

-- CSV import jobs. state: running | done | failed. errors: JSON array of {line, error}.
CREATE TABLE contact_imports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    state TEXT NOT NULL,
    total BIGINT NOT NULL DEFAULT 0,
    valid BIGINT NOT NULL DEFAULT 0,
    applied BIGINT NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);

-- The tags contacts already have.
INSERT INTO contact_tags (account, tag, user_key)
SELECT c.account, j.value, c.user_key FROM contacts c, json_each(c.tags) j
 WHERE c.tags IS NOT NULL AND json_valid(c.tags)
ON CONFLICT DO NOTHING;
