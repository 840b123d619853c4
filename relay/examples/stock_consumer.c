/* obx-stock-consumer: on OrderPlaced deducts stock (never below zero) and
 * emits StockDeducted or StockRejected through its own outbox, all in the
 * dedup module's transaction, so each order is decided exactly once.
 * OrderCancelled, sent with a "compensates" header naming its OrderPlaced
 * event, puts deducted stock back; if it arrives first, the late OrderPlaced
 * is skipped (the runner's compensation path, obx_dedup_compensate_tx). */
#include <stdio.h>
#include <string.h>

#include "effect_sql.h"
#include "obx_runner.h"

/* One statement: the conditional UPDATE is what keeps stock >= 0 under any
 * concurrency; the move row and the outgoing event commit with it. */
static const char deduct_sql[] =
    "WITH p AS (SELECT j, (j->>'order_id')::bigint AS order_id, j->>'sku' AS sku,"
    "                  (j->>'qty')::int AS qty FROM (SELECT $1::jsonb AS j) s),"
    " v AS (SELECT * FROM p WHERE order_id IS NOT NULL AND sku IS NOT NULL AND qty > 0),"
    " d AS (UPDATE shop_stock s SET available = s.available - v.qty FROM v"
    "       WHERE s.sku = v.sku AND s.available >= v.qty RETURNING s.sku),"
    " m AS (INSERT INTO shop_stock_moves (order_id, sku, qty, outcome)"
    "       SELECT order_id, sku, qty, CASE WHEN EXISTS (SELECT 1 FROM d) THEN 'deducted' ELSE 'rejected' END"
    "       FROM v RETURNING order_id, outcome)"
    " SELECT m.outcome, outbox_enqueue('stock', m.order_id::text,"
    "   CASE m.outcome WHEN 'deducted' THEN 'StockDeducted' ELSE 'StockRejected' END,"
    "   (SELECT j FROM p) || jsonb_build_object('outcome', m.outcome)) FROM m";

static obx_effect_rc_t apply(PGconn *conn, const obx_event_t *ev, void *arg, char *reason,
                             size_t reason_size) {
    char outcome[32];
    obx_effect_rc_t rc;

    (void)arg;
    if (!ev->event_type || strcmp(ev->event_type, "OrderPlaced") != 0) {
        snprintf(reason, reason_size, "unknown event type \"%s\"", ev->event_type ? ev->event_type : "");
        return OBX_EFFECT_POISON;
    }
    rc = obx_effect_sql(conn, deduct_sql, ev, outcome, sizeof outcome, reason, reason_size);
    if (rc != OBX_EFFECT_OK)
        return rc;
    if (!*outcome) {
        snprintf(reason, reason_size, "invalid OrderPlaced payload: needs order_id, sku and qty > 0");
        return OBX_EFFECT_POISON;
    }
    if (strcmp(outcome, "rejected") == 0) {
        snprintf(reason, reason_size, "out of stock");
        return OBX_EFFECT_REJECT;
    }
    return OBX_EFFECT_OK;
}

/* The same decisions for a batch of OrderPlaced events in one statement, as
 * deduct_sql applied to each in turn would make them: per sku, in batch
 * order, an order is deducted when what is left covers it (the recursive
 * walk). The sku rows are locked first, in sku order, so consumers of one
 * group deducting the same hot skus wait for each other, never deadlock.
 * One INSERT emits all outgoing events: the outbox's statement trigger runs
 * once per batch (outbox_enqueue would run it once per row). One row per
 * event, in order: its outcome, NULL for an invalid payload. */
static const char deduct_batch_sql[] =
    "WITH RECURSIVE p AS (SELECT i, j, (j->>'order_id')::bigint AS order_id, j->>'sku' AS sku,"
    "                  (j->>'qty')::int AS qty"
    "           FROM (SELECT t::jsonb AS j, i FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i)) s),"
    " v AS (SELECT p.*, row_number() OVER (PARTITION BY sku ORDER BY i) AS rn FROM p"
    "       WHERE order_id IS NOT NULL AND sku IS NOT NULL AND qty > 0),"
    " s AS MATERIALIZED (SELECT sku, available FROM shop_stock WHERE sku IN (SELECT sku FROM v)"
    "       ORDER BY sku FOR UPDATE),"
    " w (i, sku, rn, ok, left_) AS ("
    "   SELECT v.i, v.sku, v.rn, v.qty <= s.available, s.available - CASE WHEN v.qty <= s.available"
    "          THEN v.qty ELSE 0 END FROM v JOIN s USING (sku) WHERE v.rn = 1"
    "   UNION ALL"
    "   SELECT v.i, v.sku, v.rn, v.qty <= w.left_, w.left_ - CASE WHEN v.qty <= w.left_"
    "          THEN v.qty ELSE 0 END FROM w JOIN v ON v.sku = w.sku AND v.rn = w.rn + 1),"
    " d AS (UPDATE shop_stock st SET available = f.left_"
    "       FROM (SELECT DISTINCT ON (sku) sku, left_ FROM w ORDER BY sku, rn DESC) f"
    "       WHERE st.sku = f.sku),"
    " m AS (INSERT INTO shop_stock_moves (order_id, sku, qty, outcome)"
    "       SELECT v.order_id, v.sku, v.qty, CASE WHEN w.ok THEN 'deducted' ELSE 'rejected' END"
    "       FROM v LEFT JOIN w USING (i) RETURNING order_id, outcome),"
    " o AS (INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
    "       SELECT 'stock', m.order_id::text,"
    "         CASE m.outcome WHEN 'deducted' THEN 'StockDeducted' ELSE 'StockRejected' END,"
    "         convert_to((v.j || jsonb_build_object('outcome', m.outcome))::text, 'UTF8')"
    "       FROM m JOIN v USING (order_id) ORDER BY v.i)"
    " SELECT m.outcome FROM p LEFT JOIN v ON v.i = p.i LEFT JOIN m ON m.order_id = v.order_id ORDER BY p.i";

static obx_effect_rc_t apply_batch(PGconn *conn, const obx_event_t *evs, int n, void *arg,
                                   obx_effect_rc_t *rcs, char *reason, size_t reason_size) {
    PGresult *res;
    obx_effect_rc_t rc;

    (void)arg;
    for (int i = 0; i < n; i++)
        if (!evs[i].event_type || strcmp(evs[i].event_type, "OrderPlaced") != 0) {
            snprintf(reason, reason_size, "unknown event type \"%s\"", evs[i].event_type ? evs[i].event_type : "");
            return OBX_EFFECT_POISON;
        }
    rc = obx_effect_sql_batch(conn, deduct_batch_sql, evs, n, &res, reason, reason_size);
    if (rc != OBX_EFFECT_OK)
        return rc;
    for (int i = 0; i < n && rc == OBX_EFFECT_OK; i++) {
        if (i >= PQntuples(res) || PQgetisnull(res, i, 0)) {
            snprintf(reason, reason_size, "invalid OrderPlaced payload: needs order_id, sku and qty > 0");
            rc = OBX_EFFECT_POISON;
        } else {
            rcs[i] = strcmp(PQgetvalue(res, i, 0), "rejected") == 0 ? OBX_EFFECT_REJECT : OBX_EFFECT_OK;
        }
    }
    PQclear(res);
    return rc;
}

/* Runs only when the original OrderPlaced was applied (the inbox says so). */
static const char release_sql[] =
    "WITH m AS (UPDATE shop_stock_moves SET outcome = 'released'"
    "           WHERE order_id = ($1::jsonb->>'order_id')::bigint AND outcome = 'deducted'"
    "           RETURNING sku, qty),"
    " s AS (UPDATE shop_stock st SET available = st.available + m.qty FROM m WHERE st.sku = m.sku"
    "       RETURNING st.sku)"
    " SELECT count(*) FROM s";

static obx_effect_rc_t undo(PGconn *conn, const obx_event_t *ev, void *arg, char *reason,
                            size_t reason_size) {
    char released[16];
    obx_effect_rc_t rc;

    (void)arg;
    if (!ev->event_type || strcmp(ev->event_type, "OrderCancelled") != 0) {
        snprintf(reason, reason_size, "unknown compensating event type \"%s\"",
                 ev->event_type ? ev->event_type : "");
        return OBX_EFFECT_POISON;
    }
    rc = obx_effect_sql(conn, release_sql, ev, released, sizeof released, reason, reason_size);
    if (rc == OBX_EFFECT_OK && strcmp(released, "0") == 0) {
        snprintf(reason, reason_size, "order was not deducted: nothing to release");
        return OBX_EFFECT_REJECT;
    }
    return rc;
}

int main(int argc, char **argv) {
    static const obx_handler_t h = {.apply = apply, .undo = undo, .apply_batch = apply_batch};
    return obx_runner_main(argc, argv, "obx-stock-consumer", &h);
}
