-- A conversation's outbound rows are found through the unique idem_key index: every key
-- starts with `{account}:{user}:`, so a key range is the conversation. The separate
-- (account, user_key, id) index cost a page write per reply at a random place. Keys compare
-- byte by byte (as in SQLite), so that the range is exactly the prefix whatever the
-- database's default collation.
ALTER TABLE outbox ALTER COLUMN idem_key TYPE TEXT COLLATE "C";
DROP INDEX IF EXISTS outbox_conversation;
