-- Materials consumed on PAID, their low-stock alerts, and what the owner was told (SQLite
-- dialect; keep in step with the other one).

-- low_alert: none (stock at or above min_stock) | pending (it fell below; the alert is owed,
-- set in the transaction that crossed) | sent (the owner was told; cleared to none when a
-- restock brings it back to min_stock). low_crossings: how many times it fell below, which
-- names each crossing's alert (a retry of one never becomes a second message). It replaces
-- `alerted`, which could not tell an alert owed from one given.
ALTER TABLE materials ADD COLUMN low_alert TEXT NOT NULL DEFAULT 'none';
ALTER TABLE materials ADD COLUMN low_crossings BIGINT NOT NULL DEFAULT 0;
UPDATE materials SET low_alert = 'sent' WHERE alerted <> 0;
ALTER TABLE materials DROP COLUMN alerted;
CREATE INDEX materials_low_alert ON materials (low_alert);

-- materials_used: when the paid order's materials were taken from stock (NULL: not yet);
-- set once, by the compare-and-set that consumes them.
ALTER TABLE orders ADD COLUMN materials_used BIGINT;

-- owner_told: the status (PAID_LATE, MISMATCH) the account's owner was last told of.
ALTER TABLE payments ADD COLUMN owner_told TEXT;

-- Each message to an account's owner (owner_wa_id), by its request id, once handed to the
-- owner's conversation: a retry finds it and sends nothing.
CREATE TABLE owner_notices (
    account TEXT NOT NULL,
    request_id TEXT NOT NULL,
    told_at BIGINT NOT NULL,
    PRIMARY KEY (account, request_id)
) WITHOUT ROWID;
