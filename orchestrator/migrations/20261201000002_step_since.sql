-- When the awaited step (or compensation) was first sent: step latency is measured from here to
-- its reply, re-sends included.
ALTER TABLE sagas ADD COLUMN step_since TIMESTAMPTZ NOT NULL DEFAULT now();
