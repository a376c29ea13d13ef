-- A conversation's outbound rows are found through the unique idem_key index: every key
-- starts with `{account}:{user}:`, so a key range is the conversation. The separate
-- (account, user_key, id) index cost a page write per reply at a random place in the file.
DROP INDEX IF EXISTS outbox_conversation;
