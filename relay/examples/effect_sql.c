#include "effect_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Turns a failed result into an effect code with the server's message. */
static obx_effect_rc_t failure(const PGresult *res, char *reason, size_t reason_size) {
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(reason, reason_size, "%s", res ? PQresultErrorMessage(res) : "out of memory");
    reason[strcspn(reason, "\n")] = '\0';
    /* Class 22 (data exception) and 23 (integrity) will fail the same way every time. */
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
               ? OBX_EFFECT_POISON : OBX_EFFECT_RETRY;
}

obx_effect_rc_t obx_effect_sql(PGconn *conn, const char *sql, const obx_event_t *ev, char *out,
                               size_t outsize, char *reason, size_t reason_size) {
    char *payload = malloc(ev->payload_len + 1);
    const char *vals[1] = {payload};
    PGresult *res;
    obx_effect_rc_t rc = OBX_EFFECT_OK;

    out[0] = '\0';
    if (!payload) {
        snprintf(reason, reason_size, "out of memory");
        return OBX_EFFECT_RETRY;
    }
    memcpy(payload, ev->payload ? ev->payload : "", ev->payload_len);
    payload[ev->payload_len] = '\0';
    if (strlen(payload) != ev->payload_len) {
        snprintf(reason, reason_size, "payload contains a NUL byte");
        free(payload);
        return OBX_EFFECT_POISON;
    }
    res = obx_dedup_exec(conn, sql, 1, vals, NULL, NULL);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (PQntuples(res) > 0)
            snprintf(out, outsize, "%s", PQgetvalue(res, 0, 0));
    } else {
        rc = failure(res, reason, reason_size);
    }
    PQclear(res);
    free(payload);
    return rc;
}

obx_effect_rc_t obx_effect_sql_batch(PGconn *conn, const char *sql, const obx_event_t *evs, int n,
                                     PGresult **res, char *reason, size_t reason_size) {
    obx_dedup_array_t payloads = {0};
    const char *vals[1];
    int lens[1], fmts[1] = {1};
    obx_effect_rc_t rc = OBX_EFFECT_OK;

    *res = NULL;
    for (int i = 0; i < n; i++) {
        const char *p = evs[i].payload ? evs[i].payload : "";
        if (memchr(p, '\0', evs[i].payload_len)) {
            snprintf(reason, reason_size, "payload contains a NUL byte");
            rc = OBX_EFFECT_POISON;
            goto out;
        }
        if (obx_dedup_array_add(&payloads, p, (int)evs[i].payload_len) != 0) {
            snprintf(reason, reason_size, "out of memory");
            rc = OBX_EFFECT_RETRY;
            goto out;
        }
    }
    vals[0] = payloads.data;
    lens[0] = payloads.len;
    *res = obx_dedup_exec(conn, sql, 1, vals, lens, fmts);
    if (PQresultStatus(*res) != PGRES_TUPLES_OK) {
        rc = failure(*res, reason, reason_size);
        PQclear(*res);
        *res = NULL;
    }
out:
    obx_dedup_array_free(&payloads);
    return rc;
}
