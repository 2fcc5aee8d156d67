-- Orders released before anything was reserved for them (the reserve command was late or lost).
-- A reserve arriving after its release is refused, so no stock stays held for a dead saga.
CREATE TABLE released_orders (
    order_id   UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
