-- SendGate: what must survive a restart so that no limit is ever exceeded.

-- How a queued message counts: service (a reply inside the 24 h window) or business
-- (business-initiated: counts against the messaging tier, waits behind service traffic).
ALTER TABLE outbox ADD COLUMN class TEXT NOT NULL DEFAULT 'service';

-- The daily cap, reserved in blocks before sending. `reserved` bounds what was sent that
-- day (a crash may waste part of a block, never exceed the cap); `used` is the count at the
-- last write. `day` is the calendar day in the account's time zone (YYYY-MM-DD).
CREATE TABLE send_daily_usage (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    reserved BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, day)
);

-- Messaging tier: the users reached with business-initiated messages, per business
-- portfolio, written before the send (refreshed at most hourly while the user is reached again).
CREATE TABLE tier_reach (
    waba TEXT NOT NULL,
    user_key TEXT NOT NULL,
    account TEXT NOT NULL,
    reached_at BIGINT NOT NULL,
    PRIMARY KEY (waba, user_key)
);
CREATE INDEX tier_reach_recent ON tier_reach (waba, reached_at);

-- Health, halts and pauses of an account (JSON of sendgate::Control).
CREATE TABLE account_gate (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Contacts Meta called unreachable (131026): no business-initiated message for a while.
CREATE TABLE unreachable_contacts (
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    code BIGINT,
    at BIGINT NOT NULL,
    PRIMARY KEY (account, user_key)
);

-- The latest review/quality state of each template, from message_template_* webhooks.
CREATE TABLE template_states (
    waba TEXT NOT NULL,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (waba, name, language)
);
