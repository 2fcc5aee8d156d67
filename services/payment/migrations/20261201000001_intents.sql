-- Outside calls are never made inside a transaction: the intent is committed first
-- (authorizing, voiding, capturing), the gateway is called, the result is recorded after.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('authorizing', 'authorized', 'voiding', 'voided', 'capturing', 'captured', 'declined'));
