#include "pgnotice.h"

#include <string.h>

#include "log.h"

static void on_notice(void *arg, const PGresult *res) {
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    (void)arg;
    OBX_LOG(sev && (strcmp(sev, "WARNING") == 0) ? OBX_LOG_WARN : OBX_LOG_DEBUG, "postgres notice",
            KS("severity", sev ? sev : ""), KS("detail", msg ? msg : ""));
}

void obx_pgnotice_route(PGconn *conn) { PQsetNoticeReceiver(conn, on_notice, NULL); }
