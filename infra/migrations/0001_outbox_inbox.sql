-- Outbox: messages written in the same transaction as the state change that produced them.
-- The relay publishes them with confirms and deletes them once the broker confirmed.
CREATE TABLE IF NOT EXISTS outbox (
    id               BIGSERIAL PRIMARY KEY,
    message_id       UUID        NOT NULL,
    saga_id          UUID        NOT NULL,
    exchange         TEXT        NOT NULL,
    routing_key      TEXT        NOT NULL,
    mandatory        BOOLEAN     NOT NULL,
    message_type     TEXT        NOT NULL,
    causation_id     UUID,
    idempotency_key  TEXT,
    attempt          INT         NOT NULL,
    traceparent      TEXT,
    schema_version   INT         NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    body             BYTEA       NOT NULL,
    publish_attempts INT         NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error       TEXT
);
-- Per-saga ordering: the relay only takes a saga's oldest row.
CREATE INDEX IF NOT EXISTS outbox_saga_order ON outbox (saga_id, id);

-- Inbox: one row per handled message, keyed by its dedupe key (a command's idempotency key, or a
-- message id). Written in the same transaction as the business change; a duplicate finds it and
-- re-sends the stored reply instead of acting again.
CREATE TABLE IF NOT EXISTS inbox (
    key              TEXT PRIMARY KEY,
    message_id       UUID        NOT NULL,
    message_type     TEXT        NOT NULL,
    saga_id          UUID        NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    reply_message_id UUID,
    reply_type       TEXT,
    reply_body       BYTEA
);
