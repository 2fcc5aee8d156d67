-- One payment per order: authorized, then captured or voided; or declined.
CREATE TABLE payments (
    order_id         UUID PRIMARY KEY,
    customer_id      TEXT        NOT NULL,
    amount_cents     BIGINT      NOT NULL,
    currency         TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('authorized', 'voided', 'captured', 'declined')),
    authorization_id TEXT,
    decline_code     TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
