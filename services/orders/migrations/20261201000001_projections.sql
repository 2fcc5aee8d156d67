-- The read side's projections of the orders' history, and what has been applied.

-- One row per order: the order as submitted and the saga's state after the last applied event.
-- customer_id, currency, total_cents and item_count are NULL for an order whose stream did not
-- start with `saga.started` (a saga from before the event store).
CREATE TABLE order_summaries (
    order_id       UUID        PRIMARY KEY,
    customer_id    TEXT,
    currency       TEXT,
    total_cents    BIGINT,
    item_count     BIGINT,
    status         TEXT        NOT NULL,
    step           TEXT,
    failure_reason TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    -- The stream version of the last applied event: the next one applied is version + 1.
    version        BIGINT      NOT NULL CHECK (version >= 1),
    last_position  BIGINT      NOT NULL
);
CREATE INDEX order_summaries_by_customer ON order_summaries (customer_id, order_id);
CREATE INDEX order_summaries_by_status ON order_summaries (status, order_id);

-- Per UTC day (of the event's recorded_at) and currency.
CREATE TABLE daily_sales (
    day              DATE   NOT NULL,
    currency         TEXT   NOT NULL,
    orders_started   BIGINT NOT NULL DEFAULT 0,
    orders_completed BIGINT NOT NULL DEFAULT 0,
    -- Sum of total_cents of the orders completed that day.
    revenue_cents    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);

-- Orders that ended COMPENSATED, per UTC day and reason (the saga's failure reason).
CREATE TABLE daily_compensations (
    day           DATE   NOT NULL,
    reason        TEXT   NOT NULL,
    compensations BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, reason)
);

-- Every global position applied (the dedupe record), written in the same transaction as the
-- projection rows it changed.
CREATE TABLE applied_events (
    position   BIGINT      PRIMARY KEY,
    order_id   UUID        NOT NULL,
    version    BIGINT      NOT NULL,
    event_type TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row: how far the projections are applied without a hole (every position up to `watermark`
-- is in applied_events), and the last rebuild.
CREATE TABLE projection_state (
    id                BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (id),
    watermark         BIGINT      NOT NULL DEFAULT 0,
    rebuilt_at        TIMESTAMPTZ,
    rebuilds          BIGINT      NOT NULL DEFAULT 0
);
INSERT INTO projection_state DEFAULT VALUES;
