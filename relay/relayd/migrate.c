#include "migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "pgconn.h"

extern const char obx_schema_sql[];

static int run(PGconn *conn, const char *sql, int nparams, const char *const *params,
               char *errstr, size_t errsize) {
    PGresult *res = nparams ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                            : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(errstr, errsize, "%s", PQresultErrorMessage(res));
        errstr[strcspn(errstr, "\n")] = '\0';
        rc = -1;
    }
    PQclear(res);
    return rc;
}

int obx_migrate_run(const obx_config_t *cfg, char *errstr, size_t errsize) {
    PGconn *conn = obx_pgconn_open(cfg->pg_conninfo, "outbox-relay-migrate");
    int rc = -1;

    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(errstr, errsize, "%s", PQerrorMessage(conn));
        errstr[strcspn(errstr, "\n")] = '\0';
        goto out;
    }
    /* Serializes concurrent migrations (two relays starting at once). */
    if (run(conn, "SET client_min_messages = warning", 0, NULL, errstr, errsize) ||
        run(conn, "SELECT pg_advisory_lock(hashtext('outbox-relay:migrate'))", 0, NULL, errstr, errsize) ||
        run(conn, obx_schema_sql, 0, NULL, errstr, errsize))
        goto out;
    if (strcmp(cfg->pg_table, "public.outbox") != 0 && strcmp(cfg->pg_table, "outbox") != 0) {
        const char *dot = strchr(cfg->pg_table, '.');
        char schema[256], table[256];
        const char *params[3] = {schema, table, cfg->pg_channel};
        if (dot) {
            snprintf(schema, sizeof schema, "%.*s", (int)(dot - cfg->pg_table), cfg->pg_table);
            snprintf(table, sizeof table, "%s", dot + 1);
        } else {
            snprintf(schema, sizeof schema, "public");
            snprintf(table, sizeof table, "%s", cfg->pg_table);
        }
        if (run(conn, "SELECT outbox_install($1, $2, $3)", 3, params, errstr, errsize))
            goto out;
    }
    OBX_LOG(OBX_LOG_INFO, "schema_applied",
            "schema applied", KS("table", cfg->pg_table), KS("db", PQdb(conn)));
    rc = 0;
out:
    PQfinish(conn);
    return rc;
}
