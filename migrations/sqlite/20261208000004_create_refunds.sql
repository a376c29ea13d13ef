-- Refunds of payments (sqlite dialect; keep in step with the other one).
-- A row is written (status 'requested') before its gateway is asked, under an idem_key that is
-- also the gateway's idempotency key (Stripe Idempotency-Key, Xendit idempotency-key, Midtrans
-- refund_key): a retry after a timeout asks again with the same key and the gateway gives
-- back the refund it made, never a second one. status: requested (asked, no answer yet) |
-- pending (accepted, completing at the gateway) | succeeded | failed. Pending and succeeded
-- count as refunded; a requested one holds its amount until it is settled.
-- amount: decimal text in the payment's currency. provider_ref: the gateway's id of the refund
-- (none for a manual provider: a refund the owner made by hand).
-- A refund that completes the payment makes it REFUNDED and its order's payment_status
-- 'refunded' (a value added to unpaid | paid) and status 'cancelled'.
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id BIGINT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    provider_ref TEXT,
    status TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, id);
