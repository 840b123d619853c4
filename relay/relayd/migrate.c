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
        obx_pgconn_error(errstr, errsize, PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

int obx_migrate_run(const obx_config_t *cfg, char *errstr, size_t errsize) {
    PGconn *conn = obx_pgconn_open(cfg->pg_conninfo, "outbox-relay-migrate");
    int partitioned = cfg->retention_mode == OBX_RETENTION_PARTITIONS;
    int other = strcmp(cfg->pg_table, "public.outbox") != 0 && strcmp(cfg->pg_table, "outbox") != 0;
    char rows[24], ahead[16], set_rows[64];
    int rc = -1;

    snprintf(rows, sizeof rows, "%d", cfg->retention_partition_rows);
    snprintf(ahead, sizeof ahead, "%d", cfg->retention_partitions_ahead);
    /* The schema creates public.outbox partitioned when this is set. */
    snprintf(set_rows, sizeof set_rows, "SET outbox.partition_rows = '%s'", partitioned && !other ? rows : "");
    if (PQstatus(conn) != CONNECTION_OK) {
        obx_pgconn_error(errstr, errsize, PQerrorMessage(conn));
        goto out;
    }
    /* Serializes concurrent migrations (two relays starting at once). */
    if (run(conn, "SET client_min_messages = warning", 0, NULL, errstr, errsize) ||
        run(conn, set_rows, 0, NULL, errstr, errsize) ||
        run(conn, "SELECT pg_advisory_lock(hashtext('outbox-relay:migrate'))", 0, NULL, errstr, errsize) ||
        run(conn, obx_schema_sql, 0, NULL, errstr, errsize))
        goto out;
    if (other) {
        const char *dot = strchr(cfg->pg_table, '.');
        char schema[256], table[256];
        const char *params[4] = {schema, table, cfg->pg_channel, partitioned ? rows : NULL};
        if (dot) {
            snprintf(schema, sizeof schema, "%.*s", (int)(dot - cfg->pg_table), cfg->pg_table);
            snprintf(table, sizeof table, "%s", dot + 1);
        } else {
            snprintf(schema, sizeof schema, "public");
            snprintf(table, sizeof table, "%s", cfg->pg_table);
        }
        if (run(conn, "SELECT outbox_install($1, $2, $3, $4)", 4, params, errstr, errsize))
            goto out;
    }
    if (partitioned) {
        /* The partitions ahead the relay would keep, so that writers can
         * start before it does; an unpartitioned table is left alone. */
        const char *params[3] = {cfg->pg_table_sql, rows, ahead};
        PGresult *res = PQexecParams(conn,
            "SELECT CASE WHEN relkind = 'p' THEN outbox_add_partitions(oid, $2::bigint, $3::integer) END"
            " FROM pg_catalog.pg_class WHERE oid = $1::regclass", 3, NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        if (!ok) {
            obx_pgconn_error(errstr, errsize, PQresultErrorMessage(res));
        } else if (PQgetisnull(res, 0, 0)) {
            OBX_LOG(OBX_LOG_WARN, "schema_not_partitioned",
                    "retention.mode is partitions but the outbox table is not partitioned: convert it "
                    "(docs/operations.md, Housekeeping); --check refuses it until then",
                    KS("table", cfg->pg_table));
        }
        PQclear(res);
        if (!ok)
            goto out;
    }
    OBX_LOG(OBX_LOG_INFO, "schema_applied",
            "schema applied", KS("table", cfg->pg_table), KS("db", PQdb(conn)));
    rc = 0;
out:
    PQfinish(conn);
    return rc;
}
