-- pgbench script for deploy/quickstart.sh: one transaction = one order placed.
-- The order row and its OrderPlaced event commit together or not at all;
-- that single local transaction is the whole point of the outbox.
--   pgbench -n -c 4 -j 2 -t 500 -f deploy/demo-orders.sql shop
-- Needs the demo_orders table that quickstart.sh creates, and the outbox
-- schema (outbox-relay migrate).
\set sku random(1, 500)
\set qty random(1, 5)
BEGIN;
INSERT INTO demo_orders (sku, qty) VALUES ('SKU-' || :sku, :qty) RETURNING id AS order_id \gset
SELECT outbox_enqueue('order', CAST(:order_id AS text), 'OrderPlaced',
       jsonb_build_object('order_id', :order_id, 'sku', 'SKU-' || :sku, 'qty', :qty));
COMMIT;
