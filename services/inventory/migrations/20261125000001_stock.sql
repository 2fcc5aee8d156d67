-- Stock per SKU: on_hand = physical units; reserved = held by running sagas.
-- available = on_hand - reserved, never negative.
CREATE TABLE stock (
    sku      TEXT PRIMARY KEY,
    on_hand  BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    CHECK (reserved <= on_hand)
);

-- One row per order and SKU held by a saga: held -> released (compensation) or committed.
CREATE TABLE reservations (
    order_id   UUID        NOT NULL,
    sku        TEXT        NOT NULL REFERENCES stock (sku),
    quantity   BIGINT      NOT NULL CHECK (quantity > 0),
    status     TEXT        NOT NULL CHECK (status IN ('held', 'released', 'committed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
