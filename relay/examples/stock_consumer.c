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
    static const obx_handler_t h = {.apply = apply, .undo = undo};
    return obx_runner_main(argc, argv, "obx-stock-consumer", &h);
}
