-- Analytics: flow sessions stopped by an error, counted apart from those the customer left
-- (`flows_abandoned`, which until now counted the errors).
ALTER TABLE analytics_days ADD COLUMN flows_failed BIGINT NOT NULL DEFAULT 0;
