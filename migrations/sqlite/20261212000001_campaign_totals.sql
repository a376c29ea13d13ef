-- A finished campaign's counters, frozen (SQLite; keep in step with postgres). Its counters
-- are counted from campaign_recipients and campaign_messages joined to the outbox, and
-- retention deletes those rows (the recipients and messages after
-- retention.campaign_recipients, the messages' outbox rows after retention.messages when it
-- is not forever). Before the first of them can go, the sweeper counts them once and keeps
-- the figures here; from then on the admin API answers from these rows, so a campaign reads
-- the same before and after its rows are gone. One row per campaign (read_n: its read
-- count), and one per A/B variant.
CREATE TABLE campaign_totals (
    campaign_id BIGINT PRIMARY KEY,
    total BIGINT NOT NULL,
    queued BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    read_n BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    stopped BIGINT NOT NULL,
    pending BIGINT NOT NULL,
    frozen_at BIGINT NOT NULL
);

CREATE TABLE campaign_variant_totals (
    campaign_id BIGINT NOT NULL,
    variant BIGINT NOT NULL,
    queued BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    read_n BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    replied BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, variant)
);
