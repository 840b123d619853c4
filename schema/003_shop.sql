-- Reference e-commerce tables for the example services (obx-order-gen and the
-- stock and payment consumers of README, "The consumer side") and their tests. They are not
-- part of the relay: the relay never reads them and `outbox-relay migrate`
-- does not apply them. Idempotent: apply with `psql -f` after 001_outbox.sql
-- (orders are written with outbox_enqueue) and 002_inbox.sql (the consumers).
-- PostgreSQL 15.
--
-- Every invariant the example flows promise is a constraint here, so a test
-- that breaks one fails at the statement, not in a later count.

-- Order ids. obx-order-gen reserves an id before an order's first try and
-- reuses it on retries, so a retry after an unknown commit outcome cannot
-- write the order twice.
CREATE SEQUENCE IF NOT EXISTS shop_order_id_seq AS bigint;

-- Written by obx-order-gen, in the same transaction as the order's
-- OrderPlaced event. No status column: each service records its own outcome
-- in its own table, as separate services with separate databases would.
CREATE TABLE IF NOT EXISTS shop_orders (
    order_id     bigint PRIMARY KEY,
    sku          text NOT NULL,
    qty          int NOT NULL,
    amount_cents bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The stock service's stock. The CHECK makes negative stock impossible at any
-- moment, whatever the interleaving of concurrent deductions.
CREATE TABLE IF NOT EXISTS shop_stock (
    sku       text PRIMARY KEY,
    available int NOT NULL CHECK (available >= 0),
    initial   int NOT NULL
);

-- The stock service's decision for each order: the primary key makes a second
-- decision for the same order impossible, so a redelivered OrderPlaced cannot
-- deduct twice.
CREATE TABLE IF NOT EXISTS shop_stock_moves (
    order_id   bigint PRIMARY KEY,
    sku        text NOT NULL,
    qty        int NOT NULL,
    -- released: the order was cancelled after its stock was deducted and
    -- the stock went back (a compensation, see obx_dedup_compensate_tx).
    outcome    text NOT NULL CHECK (outcome IN ('deducted', 'rejected', 'released')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The payment service's ledger: at most one capture and one refund per order.
CREATE TABLE IF NOT EXISTS shop_ledger (
    order_id     bigint NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('capture', 'refund')),
    amount_cents bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (order_id, kind)
);

-- The payment service's view of each order's final outcome: one per order.
CREATE TABLE IF NOT EXISTS shop_order_outcomes (
    order_id   bigint PRIMARY KEY,
    outcome    text NOT NULL CHECK (outcome IN ('captured', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
