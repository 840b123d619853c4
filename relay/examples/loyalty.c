/* loyalty.c: awards loyalty points for each OrderPlaced event, exactly once,
 * and takes them back when an event compensates the order. */
#include <obx_runner.h>
#include <stdio.h>
#include <string.h>

/* Runs sql with the event's payload as $1 (bytea) on the connection the
 * module passes in, inside its transaction: never COMMIT or ROLLBACK here. */
static obx_effect_rc_t run_sql(PGconn *conn, const char *sql, const obx_event_t *ev,
                               char *reason, size_t reason_size) {
    const char *vals[1] = {ev->payload};
    int lens[1] = {(int)ev->payload_len}, fmts[1] = {1}; /* binary: the bytes as they are */
    PGresult *res = PQexecParams(conn, sql, 1, NULL, vals, lens, fmts, 0);
    ExecStatusType st = PQresultStatus(res);
    obx_effect_rc_t rc = OBX_EFFECT_OK;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(reason, reason_size, "%s", PQresultErrorMessage(res));
        reason[strcspn(reason, "\n")] = '\0';
        /* Bad data (SQLSTATE 22xxx) or a broken constraint (23xxx) fails the
         * same way every time: park it. Anything else may pass on a retry. */
        rc = state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2)) ? OBX_EFFECT_POISON
                                                                            : OBX_EFFECT_RETRY;
    }
    PQclear(res);
    return rc;
}

static obx_effect_rc_t award(PGconn *conn, const obx_event_t *ev, void *arg, char *reason,
                             size_t reason_size) {
    (void)arg;
    if (!ev->event_type || strcmp(ev->event_type, "OrderPlaced") != 0)
        return OBX_EFFECT_OK; /* not for us: recorded in the inbox, nothing to do */
    return run_sql(conn,
        "INSERT INTO loyalty_points (order_id, customer, points)"
        " SELECT (j->>'order_id')::bigint, j->>'customer', (j->>'amount_cents')::bigint / 100"
        " FROM (SELECT convert_from($1, 'UTF8')::jsonb AS j) p",
        ev, reason, reason_size);
}

/* Runs for an event with a "compensates" header whose original was applied. */
static obx_effect_rc_t take_back(PGconn *conn, const obx_event_t *ev, void *arg, char *reason,
                                 size_t reason_size) {
    (void)arg;
    return run_sql(conn,
        "DELETE FROM loyalty_points"
        " WHERE order_id = (convert_from($1, 'UTF8')::jsonb->>'order_id')::bigint",
        ev, reason, reason_size);
}

int main(int argc, char **argv) {
    static const obx_handler_t h = {.apply = award, .undo = take_back};
    return obx_runner_main(argc, argv, "loyalty", &h);
}
