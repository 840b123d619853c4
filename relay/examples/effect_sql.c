#include "effect_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

obx_effect_rc_t obx_effect_sql(PGconn *conn, const char *sql, const obx_event_t *ev, char *out,
                               size_t outsize, char *reason, size_t reason_size) {
    char *payload = malloc(ev->payload_len + 1);
    const char *vals[1] = {payload};
    PGresult *res;
    obx_effect_rc_t rc = OBX_EFFECT_OK;

    memcpy(payload, ev->payload ? ev->payload : "", ev->payload_len);
    payload[ev->payload_len] = '\0';
    out[0] = '\0';
    if (strlen(payload) != ev->payload_len) {
        snprintf(reason, reason_size, "payload contains a NUL byte");
        free(payload);
        return OBX_EFFECT_POISON;
    }
    res = PQexecParams(conn, sql, 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (PQntuples(res) > 0)
            snprintf(out, outsize, "%s", PQgetvalue(res, 0, 0));
    } else {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(reason, reason_size, "%s", PQresultErrorMessage(res));
        reason[strcspn(reason, "\n")] = '\0';
        /* Class 22 (data exception) and 23 (integrity) will fail the same way every time. */
        rc = state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
                 ? OBX_EFFECT_POISON : OBX_EFFECT_RETRY;
    }
    PQclear(res);
    free(payload);
    return rc;
}
