-- What the customer (or an operator) was told about an order.
CREATE TABLE notifications (
    id          BIGSERIAL PRIMARY KEY,
    order_id    UUID        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('confirmation', 'cancellation', 'failure')),
    customer_id TEXT        NOT NULL,
    message     TEXT        NOT NULL,
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_by_order ON notifications (order_id, id);
