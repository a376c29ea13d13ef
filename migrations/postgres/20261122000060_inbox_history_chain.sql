-- A conversation's applied messages form a chain: `conversations.last_applied_seq` is the
-- newest, each row's `prev_seq` the one applied before it. The history is read along it
-- (and the few pending rows through a small partial index), so an arriving message no
-- longer writes an entry at its conversation's place in an index of every message ever
-- received: one random page written per message fewer.
ALTER TABLE inbox ADD COLUMN prev_seq BIGINT;
UPDATE inbox SET prev_seq = (
    SELECT MAX(p.seq) FROM inbox p
     WHERE p.account = inbox.account AND p.user_key = inbox.user_key AND p.kind = 'message'
       AND p.state <> 'pending' AND p.seq < inbox.seq
) WHERE kind = 'message' AND state <> 'pending';
DROP INDEX IF EXISTS inbox_conversation_messages;
CREATE INDEX inbox_conversation_pending ON inbox (account, user_key, seq)
    WHERE state = 'pending' AND kind = 'message';
-- Only messages are ever pending, and every read of pending rows names the account: the
-- index above serves them all, so the one by seq alone goes.
DROP INDEX IF EXISTS inbox_pending;
