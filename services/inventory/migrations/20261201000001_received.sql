-- Units ever received per SKU (the initial stock; there is no restocking): for every SKU,
-- on_hand + the committed quantities == received. The consistency auditor checks it through
-- GET /stock.
ALTER TABLE stock ADD COLUMN received BIGINT;
UPDATE stock SET received = on_hand + coalesce(
    (SELECT sum(quantity) FROM reservations r WHERE r.sku = stock.sku AND r.status = 'committed'), 0);
ALTER TABLE stock ALTER COLUMN received SET NOT NULL;
