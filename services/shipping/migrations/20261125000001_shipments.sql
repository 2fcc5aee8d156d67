-- Shipments booked with the carrier: the pivot of the order saga, never undone.
CREATE TABLE shipments (
    order_id        UUID PRIMARY KEY,
    shipment_id     UUID        NOT NULL,
    tracking_number TEXT        NOT NULL,
    country         TEXT        NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'scheduled',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
