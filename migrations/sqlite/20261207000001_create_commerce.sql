-- Commerce (SQLite dialect; keep in step with the other one): the catalog, carts, orders,
-- stock, payments, vouchers, subscriptions and custom orders of each account.
-- Money is exact decimal text ("50000", "12.5"; `domain::Money`), never a float; its
-- currency beside it. Times are ms since the epoch. Tables written through the pool, never by
-- a conversation's writer (store/writer/mod.rs: one writer per row).

-- kind: product | plan (a subscription of period_days, with its access link).
-- stock: units on hand not reserved by an unpaid order; NULL = not tracked (never sold out).
-- reserved: units held by orders awaiting payment (released on expiry or cancel).
CREATE TABLE products (
    account TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    price TEXT NOT NULL,
    currency TEXT NOT NULL,
    stock BIGINT,
    reserved BIGINT NOT NULL DEFAULT 0,
    image_url TEXT,
    category TEXT,
    active BIGINT NOT NULL DEFAULT 1,
    kind TEXT NOT NULL DEFAULT 'product',
    period_days BIGINT,
    access_link TEXT,
    position BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, sku)
) WITHOUT ROWID;
CREATE INDEX products_listing ON products (account, active, category, position, sku);

CREATE TABLE categories (
    account TEXT NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    position BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, slug)
) WITHOUT ROWID;

-- Materials a product consumes per unit sold (quantities are decimal text). `alerted`: the
-- stock is below min_stock and the alert for this crossing was given.
CREATE TABLE materials (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    stock TEXT NOT NULL,
    min_stock TEXT NOT NULL DEFAULT '0',
    alerted BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;

CREATE TABLE product_materials (
    account TEXT NOT NULL,
    sku TEXT NOT NULL,
    material TEXT NOT NULL,
    quantity TEXT NOT NULL,
    PRIMARY KEY (account, sku, material)
) WITHOUT ROWID;

-- One open cart per conversation. recovery: none | pending | sent | recovered | expired (the
-- abandoned-cart reminder).
CREATE TABLE carts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    voucher TEXT,
    order_id BIGINT,
    recovery TEXT NOT NULL DEFAULT 'none',
    reminded_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX carts_open ON carts (account, user_key) WHERE status = 'open';
CREATE INDEX carts_abandoned ON carts (status, recovery, updated_at);

CREATE TABLE cart_items (
    cart_id BIGINT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (cart_id, sku)
) WITHOUT ROWID;

-- status: pending | processing | completed | cancelled; payment_status: unpaid | paid;
-- source: whatsapp | catalog | manual | api. stock: reserved (held for payment) |
-- committed (sold) | released (returned on expiry or cancel) | none (nothing tracked).
-- idem_key: what created it (a flow's checkout call, a catalog order's wamid), so a retry
-- after a crash finds the order it made instead of making another.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    order_number TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    wa_id TEXT,
    customer_name TEXT,
    customer_address TEXT,
    subtotal TEXT NOT NULL,
    discount TEXT NOT NULL DEFAULT '0',
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    payment_status TEXT NOT NULL,
    voucher TEXT,
    source TEXT NOT NULL,
    notes TEXT,
    stock TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (account, user_key, id);
CREATE INDEX orders_by_account ON orders (account, id);

-- catalog_price: the price a catalog `order` message claimed, when it differed from ours.
CREATE TABLE order_items (
    order_id BIGINT NOT NULL,
    line BIGINT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price TEXT NOT NULL,
    subtotal TEXT NOT NULL,
    catalog_price TEXT,
    PRIMARY KEY (order_id, line)
) WITHOUT ROWID;

-- status: PENDING | PAID | EXPIRED | FAILED | CANCELLED | REFUNDED | PAID_LATE | MISMATCH,
-- moving forward only. The PENDING row (with its idem_key) is committed before the gateway
-- is called; provider_ref and the instructions (VA number, pay code, link) after it answers.
-- notified: the status its conversation was last told (a sweep tells it again until then).
CREATE TABLE payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    order_id BIGINT NOT NULL,
    user_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    provider_ref TEXT,
    bank TEXT,
    code TEXT,
    amount TEXT NOT NULL,
    fee TEXT NOT NULL DEFAULT '0',
    paid_amount TEXT,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    details TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    paid_at BIGINT,
    notified TEXT
);
CREATE INDEX payments_by_order ON payments (order_id);
CREATE INDEX payments_pending ON payments (status, expires_at);
CREATE UNIQUE INDEX payments_by_ref ON payments (provider, provider_ref);

-- Every callback as received, once per (provider, event_key); applied once the payment was
-- settled from it (confirmed with the gateway), so a crash in between leaves it for the
-- reconciliation pass.
CREATE TABLE payment_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    event_key TEXT NOT NULL,
    payment_id BIGINT,
    status TEXT NOT NULL,
    amount TEXT,
    raw TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    applied BIGINT NOT NULL DEFAULT 0,
    UNIQUE (provider, event_key)
);
CREATE INDEX payment_events_unapplied ON payment_events (applied, payment_id);

-- code: upper-case (matched case-insensitively). kind: percent | fixed. user_key: bound to
-- one customer, or NULL for anyone. used: claims so far, never above usage_limit.
CREATE TABLE vouchers (
    account TEXT NOT NULL,
    code TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    min_total TEXT,
    valid_from BIGINT,
    valid_to BIGINT,
    usage_limit BIGINT,
    used BIGINT NOT NULL DEFAULT 0,
    user_key TEXT,
    active BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, code)
) WITHOUT ROWID;

CREATE TABLE voucher_claims (
    account TEXT NOT NULL,
    code TEXT NOT NULL,
    user_key TEXT NOT NULL,
    order_id BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (account, code, user_key)
) WITHOUT ROWID;

-- status: active | expired | cancelled.
CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    sku TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    status TEXT NOT NULL,
    last_order_id BIGINT,
    reminded_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX subscriptions_by_plan ON subscriptions (account, user_key, sku);
CREATE INDEX subscriptions_due ON subscriptions (status, period_end);

-- status: new | quoted | accepted | rejected | done. media_id: the reference image
-- (media_files), if one was sent.
CREATE TABLE custom_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    user_key TEXT NOT NULL,
    description TEXT NOT NULL,
    media_id TEXT,
    status TEXT NOT NULL,
    notes TEXT,
    idem_key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX custom_orders_by_account ON custom_orders (account, id);

-- The outcome of each commerce call a conversation made (cart changes, checkouts), by the
-- call's id: a call made again after a crash gets the outcome of the first, not a second
-- effect.
CREATE TABLE commerce_calls (
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, call_id)
) WITHOUT ROWID;

-- Typed customer profile fields (validated where they are set).
ALTER TABLE contacts ADD COLUMN email TEXT;
ALTER TABLE contacts ADD COLUMN full_name TEXT;
ALTER TABLE contacts ADD COLUMN address TEXT;
ALTER TABLE contacts ADD COLUMN birth_date TEXT;
ALTER TABLE contacts ADD COLUMN identity_type TEXT;
ALTER TABLE contacts ADD COLUMN identity_number TEXT;
ALTER TABLE contacts ADD COLUMN gender TEXT;
