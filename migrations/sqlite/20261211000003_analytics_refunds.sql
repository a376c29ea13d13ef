-- Analytics: what refunds gave back, per account, day and currency (exact decimal text),
-- folded from refunds by the time they changed.
ALTER TABLE analytics_money ADD COLUMN refunded TEXT NOT NULL DEFAULT '0';
CREATE INDEX refunds_by_updated ON refunds (updated_at);
