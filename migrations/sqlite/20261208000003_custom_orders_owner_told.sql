-- When the account's owner was told of a custom order (NULL: not yet; the reconciliation
-- pass tells them, so a crash between the order's commit and the message loses nothing).
ALTER TABLE custom_orders ADD COLUMN owner_told_at BIGINT;
CREATE INDEX custom_orders_untold ON custom_orders (owner_told_at) WHERE owner_told_at IS NULL;
