#include "pgconn.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static void on_notice(void *arg, const PGresult *res) {
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    (void)arg;
    OBX_LOG(sev && (strcmp(sev, "WARNING") == 0) ? OBX_LOG_WARN : OBX_LOG_DEBUG, "postgres_notice",
            "postgres notice",
            KS("severity", sev ? sev : ""), KS("detail", msg ? msg : ""));
}

PGconn *obx_pgconn_open(const char *conninfo, const char *application_name) {
    /* The user's conninfo comes last so its settings win over these defaults. */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", application_name, conninfo, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) == CONNECTION_OK)
        PQsetNoticeReceiver(conn, on_notice, NULL);
    return conn;
}

const char *obx_pgconn_error(char *buf, size_t size, const char *msg) {
    size_t n;
    if (buf != msg) /* buf == msg: trim in place */
        snprintf(buf, size, "%s", msg ? msg : "");
    buf[strcspn(buf, "\n")] = '\0';
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return buf;
}
