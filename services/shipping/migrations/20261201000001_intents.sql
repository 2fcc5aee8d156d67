-- Outside calls are never made inside a transaction: the booking intent is committed first
-- (booking), the carrier is called, the result is recorded after (scheduled or rejected). An
-- operator may cancel a booking whose outcome the saga never learnt (cancelling, cancelled); a
-- cancel that finds nothing leaves a cancelled row, so a late schedule is refused.
ALTER TABLE shipments ALTER COLUMN tracking_number DROP NOT NULL;
ALTER TABLE shipments ADD COLUMN reason TEXT;
ALTER TABLE shipments ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE shipments ADD CONSTRAINT shipments_status_check
    CHECK (status IN ('booking', 'scheduled', 'rejected', 'cancelling', 'cancelled'));
