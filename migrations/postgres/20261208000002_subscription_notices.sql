-- The subscriptions' notices, once per period: renewal_notified_until is the period_end whose
-- renewal notice the customer was given, end_notified_until the period_end whose end they
-- were told (a renewal moves period_end, so the new period is told again). Keep in step with
-- the other dialect.
ALTER TABLE subscriptions ADD COLUMN renewal_notified_until BIGINT;
ALTER TABLE subscriptions ADD COLUMN end_notified_until BIGINT;
-- Periods that ended before these notices existed are not told now.
UPDATE subscriptions SET end_notified_until = period_end WHERE status <> 'active';
