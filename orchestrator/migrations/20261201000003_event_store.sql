-- The event store: `saga_events` becomes each saga's stream, the source of truth its state is
-- folded from, and the `sagas` row keeps a snapshot of that state every N events.
--
-- Each event gets its stream version (1, 2, 3 ... per saga, unique: an append that expects a
-- version another append took fails), a type and schema version, the payload a fold replays, the
-- failure reason after it (for readers), and, once the sequencer has seen it commit, a global
-- position (1, 2, 3 ... in commit order).
ALTER TABLE saga_events
    ADD COLUMN version        BIGINT,
    ADD COLUMN type           TEXT,
    ADD COLUMN schema_version INT,
    ADD COLUMN payload        JSONB,
    ADD COLUMN failure_reason TEXT,
    ADD COLUMN position       BIGINT;

-- Entries written before the store: numbered in their order; a start records the order it
-- started with (schema 1 of `saga.started`, which had no total); the others are readable facts
-- only (`timeline.recorded`): such a saga's state at the migration is its snapshot.
UPDATE saga_events e
SET version = n.v,
    type = CASE WHEN e.kind = 'started' THEN 'saga.started' ELSE 'timeline.recorded' END,
    schema_version = 1,
    payload = CASE WHEN e.kind = 'started'
                   THEN jsonb_build_object('definition', s.definition, 'definition_version', s.definition_version,
                                           'order', s.data)
                   ELSE jsonb_build_object('kind', e.kind) END,
    failure_reason = CASE WHEN e.status IN ('COMPENSATED', 'FAILED') THEN s.failure_reason END
FROM (SELECT id, row_number() OVER (PARTITION BY saga_id ORDER BY id) AS v FROM saga_events) AS n, sagas s
WHERE n.id = e.id AND s.id = e.saga_id;

ALTER TABLE saga_events
    ALTER COLUMN version SET NOT NULL,
    ALTER COLUMN type SET NOT NULL,
    ALTER COLUMN schema_version SET NOT NULL,
    ALTER COLUMN payload SET NOT NULL,
    ADD CONSTRAINT saga_events_stream UNIQUE (saga_id, version);
DROP INDEX saga_events_by_saga;
CREATE UNIQUE INDEX saga_events_by_position ON saga_events (position);
-- What the sequencer has not numbered yet.
CREATE INDEX saga_events_unsequenced ON saga_events (id) WHERE position IS NULL;
-- Time travel and history by time.
CREATE INDEX saga_events_by_time ON saga_events (saga_id, at);

-- `version` is now the stream's version (its number of events); `state` is the snapshot taken at
-- `snapshot_version`. Every existing saga is snapshotted at its head.
UPDATE sagas s SET version = coalesce((SELECT max(version) FROM saga_events e WHERE e.saga_id = s.id), 0);
ALTER TABLE sagas ADD COLUMN snapshot_version BIGINT;
UPDATE sagas SET snapshot_version = version;
ALTER TABLE sagas ALTER COLUMN snapshot_version SET NOT NULL;
