-- Campaigns (SQLite dialect; keep in step with the other one).

-- Contacts by tag (mirrored from the conversation state's contact.tags, a JSON array) and
-- opt-outs (the user wrote STOP / BERHENTI / a configured keyword): campaigns skip them.
ALTER TABLE contacts ADD COLUMN tags TEXT;
ALTER TABLE contacts ADD COLUMN opted_out_at BIGINT;
-- Set by an operator (no message of any campaign goes to a blocked contact).
ALTER TABLE contacts ADD COLUMN blocked_at BIGINT;

-- status: draft | scheduled | running | paused | completed | failed | cancelled.
-- spec: the JSON the campaign was created with (message, steps, variants, thresholds).
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    pause_reason TEXT,
    rate_per_minute BIGINT NOT NULL,
    scheduled_for BIGINT,
    total BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX campaigns_active ON campaigns (status);

-- One row per recipient; the campaign's progress. state: pending (its next step is due at
-- due_at) | done (every step handed to its conversation) | skipped (opted out, blocked,
-- outside the window, refused) | stopped (a drip recipient replied or opted out).
-- `step` is the next step to send; `variant` the sticky A/B variant (-1: not assigned yet).
CREATE TABLE campaign_recipients (
    campaign_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    user_key TEXT NOT NULL,
    vars TEXT,
    variant BIGINT NOT NULL DEFAULT -1,
    step BIGINT NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT,
    enrolled_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, id)
);
CREATE UNIQUE INDEX campaign_recipients_user ON campaign_recipients (campaign_id, user_key);
CREATE INDEX campaign_recipients_pending ON campaign_recipients (campaign_id, id) WHERE state = 'pending';

-- Every message a campaign handed to a conversation: (campaign, recipient, step) is the
-- idempotency key (the outbox row's idem_key is derived from it). Counters and the failure
-- rate join these with the outbox rows, whose status the status webhooks move.
CREATE TABLE campaign_messages (
    campaign_id BIGINT NOT NULL,
    recipient_id BIGINT NOT NULL,
    step BIGINT NOT NULL,
    variant BIGINT NOT NULL DEFAULT 0,
    outbox_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, recipient_id, step)
);
CREATE INDEX campaign_messages_outbox ON campaign_messages (campaign_id, outbox_id);
