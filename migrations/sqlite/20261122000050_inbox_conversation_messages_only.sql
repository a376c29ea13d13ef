-- A conversation's inbox rows are read for its messages only (replay, the admin history):
-- status rows (two or three per message sent, found by wamid) no longer write an entry at
-- the conversation's place in this index.
DROP INDEX IF EXISTS inbox_conversation;
CREATE INDEX inbox_conversation_messages ON inbox (account, user_key, seq) WHERE kind = 'message';
