-- Saga instances: one row per saga, updated under a row lock (SELECT ... FOR UPDATE) with a
-- version counter. `state` is the kernel's whole state; the other columns are what queries,
-- the timeout scanner and the status API need indexed.
CREATE TABLE sagas (
    id              UUID PRIMARY KEY,            -- also the order id; UUID v7, so ordered by creation
    definition      TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    current_step    TEXT,
    state           JSONB       NOT NULL,
    data            JSONB       NOT NULL,
    version         BIGINT      NOT NULL DEFAULT 1,
    deadline        TIMESTAMPTZ,                 -- when the awaited command times out; NULL when terminal
    attempt         INT         NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    failure_reason  TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ
);
CREATE INDEX sagas_due ON sagas (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX sagas_by_status ON sagas (status, id);

-- Append-only history of every saga: the status endpoint's timeline.
CREATE TABLE saga_events (
    id               BIGSERIAL PRIMARY KEY,
    saga_id          UUID        NOT NULL REFERENCES sagas (id),
    at               TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    kind             TEXT        NOT NULL,       -- started | reply | timeout | ignored
    status           TEXT        NOT NULL,       -- saga status after this event
    step             TEXT,
    note             TEXT        NOT NULL,
    cause_message_id UUID,
    cause_type       TEXT,
    sent             JSONB       NOT NULL DEFAULT '[]'
);
CREATE INDEX saga_events_by_saga ON saga_events (saga_id, id);
