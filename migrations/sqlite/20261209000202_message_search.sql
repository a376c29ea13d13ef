-- Message search (SQLite: FTS5). Filled on read: a search first indexes the messages that
-- arrived since the last one (search_cursor), so the message path writes nothing for it.
-- One document per message with text: inbound (inbox seq) or outbound (outbox id).
CREATE TABLE search_docs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    direction TEXT NOT NULL,
    ref_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX search_docs_by_contact ON search_docs (account, user_key, at);
CREATE VIRTUAL TABLE search_fts USING fts5(body, content='search_docs', content_rowid='id');

-- How far the index has read: the inbox's seq and the outbox's id.
CREATE TABLE search_cursor (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO search_cursor (name, position) VALUES ('inbox', 0), ('outbox', 0);
