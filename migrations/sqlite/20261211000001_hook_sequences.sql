-- hook_sequences: each conversation's last event sequence. The next is taken by upsert in the
-- transaction that writes the event (its row lock orders concurrent writers on PostgreSQL,
-- where MAX(sequence) + 1 gave two events one number), and it outlives the events that
-- retention deletes, so a conversation's sequence never goes back.
CREATE TABLE hook_sequences (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (account, user_key)
);
INSERT INTO hook_sequences (account, user_key, last_sequence)
SELECT account, user_key, MAX(sequence) FROM hook_events
WHERE user_key IS NOT NULL AND sequence IS NOT NULL
GROUP BY account, user_key;
