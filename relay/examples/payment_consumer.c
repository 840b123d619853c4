/* obx-payment-consumer: on StockDeducted captures the order's payment into
 * the ledger (one capture per order) and emits PaymentCaptured; on
 * StockRejected records the order as cancelled, with no capture. */
#include <stdio.h>
#include <string.h>

#include "effect_sql.h"
#include "obx_runner.h"

static const char capture_sql[] =
    "WITH p AS (SELECT j, (j->>'order_id')::bigint AS order_id, (j->>'amount_cents')::bigint AS amount"
    "           FROM (SELECT $1::jsonb AS j) s WHERE (j->>'amount_cents')::bigint > 0),"
    " l AS (INSERT INTO shop_ledger (order_id, kind, amount_cents)"
    "       SELECT order_id, 'capture', amount FROM p RETURNING order_id),"
    " o AS (INSERT INTO shop_order_outcomes (order_id, outcome) SELECT order_id, 'captured' FROM l"
    "       RETURNING order_id)"
    " SELECT outbox_enqueue('payment', o.order_id::text, 'PaymentCaptured', (SELECT j FROM p)) FROM o";

static const char cancel_sql[] =
    "INSERT INTO shop_order_outcomes (order_id, outcome)"
    " SELECT ($1::jsonb->>'order_id')::bigint, 'cancelled'"
    " WHERE ($1::jsonb->>'order_id') IS NOT NULL RETURNING order_id";

static obx_effect_rc_t apply(PGconn *conn, const obx_event_t *ev, void *arg, char *reason,
                             size_t reason_size) {
    char out[64];
    obx_effect_rc_t rc;
    const char *sql;

    (void)arg;
    if (ev->event_type && strcmp(ev->event_type, "StockDeducted") == 0)
        sql = capture_sql;
    else if (ev->event_type && strcmp(ev->event_type, "StockRejected") == 0)
        sql = cancel_sql;
    else {
        snprintf(reason, reason_size, "unknown event type \"%s\"", ev->event_type ? ev->event_type : "");
        return OBX_EFFECT_POISON;
    }
    rc = obx_effect_sql(conn, sql, ev, out, sizeof out, reason, reason_size);
    if (rc == OBX_EFFECT_OK && !*out) {
        snprintf(reason, reason_size, "invalid %s payload: needs order_id%s", ev->event_type,
                 sql == capture_sql ? " and amount_cents > 0" : "");
        return OBX_EFFECT_POISON;
    }
    return rc;
}

int main(int argc, char **argv) {
    static const obx_handler_t h = {.apply = apply};
    return obx_runner_main(argc, argv, "obx-payment-consumer", &h);
}
