-- A saga runs to its end on the definition version it started with. Rows written before versions
-- existed were started on version 1 of the order saga.
ALTER TABLE sagas ADD COLUMN definition_version INT NOT NULL DEFAULT 1;

-- When the saga's open incident (in `state`) was opened; NULL when it has none.
ALTER TABLE sagas ADD COLUMN incident_since TIMESTAMPTZ;
CREATE INDEX sagas_with_incident ON sagas (id) WHERE incident_since IS NOT NULL;

-- One audit trail for every operator action: dead letters (replay, discard) and saga verbs
-- (retry, compensate, resolve). Append-only.
ALTER TABLE dlq_audit RENAME TO operator_audit;
ALTER TABLE operator_audit DROP CONSTRAINT dlq_audit_action_check;
ALTER TABLE operator_audit
    ADD CONSTRAINT operator_audit_action_check
    CHECK (action IN ('replay', 'discard', 'retry', 'compensate', 'resolve'));
ALTER TABLE operator_audit ALTER COLUMN queue DROP NOT NULL;
ALTER INDEX dlq_audit_by_time RENAME TO operator_audit_by_time;
