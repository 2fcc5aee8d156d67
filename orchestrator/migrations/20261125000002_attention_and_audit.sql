-- Why a saga is stuck, if it is: a command waiting on an unavailable dependency, or sitting in a
-- dead-letter queue. Cleared by the saga's next transition.
ALTER TABLE sagas ADD COLUMN attention TEXT;

-- Who did what to a dead-lettered message, and when. Append-only.
CREATE TABLE dlq_audit (
    id           BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor        TEXT        NOT NULL,
    action       TEXT        NOT NULL CHECK (action IN ('replay', 'discard')),
    queue        TEXT        NOT NULL,
    message_id   TEXT,
    message_type TEXT,
    saga_id      UUID,
    reason       TEXT,
    detail       JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX dlq_audit_by_time ON dlq_audit (id);
