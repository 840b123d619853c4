#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgbin.h"
#include "pgconn.h"
#include "xalloc.h"

enum {
    COL_ID, COL_EVENT_ID, COL_AGG_TYPE, COL_AGG_ID, COL_EVENT_TYPE, COL_TOPIC,
    COL_PAYLOAD, COL_CREATED, COL_ATTEMPTS, COL_HEADERS_OK, COL_HKEYS, COL_HVALS
};

/* Headers arrive as two aligned text[] (keys, values) so the C side needs no
 * JSON parser; headers_ok says whether the jsonb was an object of strings.
 * The casts pin the binary formats that obx_outbox_row decodes (no-ops on
 * the schema's own types). */
static const char claim_sql[] =
    "SELECT id::bigint, event_id::uuid, aggregate_type, aggregate_id, event_type, topic, payload,"
    " created_at::timestamptz, attempts::integer,"
    " CASE WHEN headers IS NULL THEN true"
    "      WHEN jsonb_typeof(headers) <> 'object' THEN false"
    "      ELSE NOT EXISTS (SELECT 1 FROM jsonb_each(headers) h"
    "                       WHERE jsonb_typeof(h.value) <> 'string') END,"
    " CASE WHEN jsonb_typeof(headers) = 'object' THEN"
    "   ARRAY(SELECT h.key FROM jsonb_each_text(headers) h ORDER BY h.key) END,"
    " CASE WHEN jsonb_typeof(headers) = 'object' THEN"
    "   ARRAY(SELECT h.value FROM jsonb_each_text(headers) h ORDER BY h.key) END"
    " FROM %s WHERE sent_at IS NULL AND parked_at IS NULL AND id > $1 AND id <= $3"
    " ORDER BY id LIMIT $2";

/* The id sequence's high-water mark, read before the transactions that hold
 * a write lock on the outbox: every id at or below it that is not final yet
 * belongs to one of them (ids come from the sequence after the table is
 * locked, in order: CACHE 1). The correlated reference to v makes PostgreSQL
 * read the sequence first. */
static const char horizon_sql[] =
    "SELECT v, ARRAY(SELECT DISTINCT l.virtualtransaction FROM pg_catalog.pg_locks l"
    "  WHERE l.locktype = 'relation' AND l.relation = $1::regclass AND v IS NOT NULL"
    "    AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    "    AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"
    "    AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid())::text"
    " FROM (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS v FROM %s) s";

static const char confirm_sql[] =
    "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'relation'"
    " AND relation = $1::regclass AND virtualtransaction = ANY($2::text[]))";

static const char mark_sql[] =
    "UPDATE %s SET sent_at = now() WHERE id = ANY($1::bigint[]) AND sent_at IS NULL";

static const char fail_sql[] =
    "UPDATE %s SET attempts = attempts + 1, last_error = $2,"
    " parked_at = CASE WHEN $3::bool THEN clock_timestamp() END WHERE id = $1";

/* The WHERE on o, not on c, is what decides: PostgreSQL re-evaluates it
 * on the row's newest version, so a row released (made unsent) after c
 * read it is kept. The ids go to the delete as an array: joined with c,
 * the generic plan hashed a sequential scan of the whole table for every
 * batch (81 ms per 1,000 rows of 100,000, against 7 ms on the primary key). */
static const char retain_sql[] =
    "WITH c AS (SELECT id, sent_at, parked_at FROM %1$s WHERE id > $1 ORDER BY id LIMIT $2),"
    " d AS (DELETE FROM %1$s o WHERE o.id = ANY (ARRAY(SELECT id FROM c)) AND o.parked_at IS NULL"
    "       AND o.sent_at < now() - make_interval(secs => $3) RETURNING o.sent_at)"
    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM c), (SELECT COALESCE(max(id), $1) FROM c),"
    " EXISTS (SELECT 1 FROM c WHERE c.parked_at IS NULL"
    "         AND (c.sent_at IS NULL OR c.sent_at >= now() - make_interval(secs => $3))),"
    " COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(sent_at) FROM d)), 0)::bigint";

/* Over the partitions too: a partitioned table has no storage of its own. */
static const char retain_size_sql[] =
    "SELECT COALESCE(sum(pg_catalog.pg_total_relation_size(t.relid)), 0), COALESCE(sum(s.n_dead_tup), 0)"
    " FROM (SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass) UNION SELECT $1::regclass) t"
    " LEFT JOIN pg_catalog.pg_stat_user_tables s USING (relid)";

/* Partitions mode: the schema's functions (schema/001_outbox.sql) do the
 * work; a DETACH ... CONCURRENTLY cannot run in a function, so the relay
 * sends it itself (obx_outbox_send_detach). */
static const char partitions_sql[] =
    "SELECT part, lo, hi, state, rows, parked FROM outbox_partitions($1::regclass, $2::integer)";
static const char add_partitions_sql[] =
    "SELECT outbox_add_partitions($1::regclass, $2::bigint, $3::integer)";
static const char drop_partition_sql[] =
    "SELECT state, rows FROM outbox_drop_partition($1::regclass, $2, $3::integer, $4)";

static const char stats_sql[] =
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::bigint"
    " FROM %s WHERE sent_at IS NULL AND parked_at IS NULL AND id > $1";

/* The table's waiting flag is the sequence its outbox_notify trigger reads
 * (schema/001_outbox.sql). setval is not transactional: writers see it at
 * once. No flag (a trigger from an older schema, or none): no row. */
#define FLAG_SQL \
    "SELECT d.refobjid::regclass AS flag FROM pg_catalog.pg_trigger t" \
    " JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_trigger'::regclass AND d.objid = t.oid" \
    "  AND d.refclassid = 'pg_catalog.pg_class'::regclass" \
    " JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'" \
    " WHERE t.tgrelid = $1::regclass AND t.tgname = 'outbox_notify'"

static const char waiting_sql[] =
    "SELECT pg_catalog.setval(f.flag, $2::bigint, true) FROM (" FLAG_SQL ") f";

/* One statement of a session's set-up: prepared as name, or run when name is NULL. */
typedef struct {
    const char *name;
    const char *fmt;   /* with one %s: arg */
    const char *arg;
} setup_t;

/* Runs the set-up in one round trip (libpq pipeline mode): the relay
 * reconnects after every database restart, and start-up is on the path of
 * the first event. */
static int setup_session(PGconn *conn, const setup_t *st, int n, char *errstr, size_t errsize) {
    char sql[2048];
    PGresult *res;
    int rc = 0, i;

    if (!PQenterPipelineMode(conn)) {
        snprintf(errstr, errsize, "pipeline mode: %s", PQerrorMessage(conn));
        return -1;
    }
    for (i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, st[i].fmt, st[i].arg);
        if (!(st[i].name ? PQsendPrepare(conn, st[i].name, sql, 0, NULL)
                         : PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0)))
            break;
    }
    if (i < n || !PQpipelineSync(conn)) {
        /* The connection is broken: the caller closes it, results and all. */
        snprintf(errstr, errsize, "%s", PQerrorMessage(conn));
        return -1;
    }
    /* Each statement yields its result then NULL; the sync ends the batch. */
    for (i = 0; i < n; i++) {
        while ((res = PQgetResult(conn)) != NULL) {
            ExecStatusType status = PQresultStatus(res);
            if (rc == 0 && status != PGRES_COMMAND_OK) {
                snprintf(errstr, errsize, "%s: %s", st[i].name ? st[i].name : "session set-up",
                         PQresultErrorMessage(res));
                rc = -1;
            }
            PQclear(res);
        }
    }
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC && rc == 0) {
        snprintf(errstr, errsize, "pipeline sync: %s", PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    if (!PQexitPipelineMode(conn) && rc == 0) {
        snprintf(errstr, errsize, "pipeline mode: %s", PQerrorMessage(conn));
        rc = -1;
    }
    return rc;
}

PGconn *obx_outbox_connect(const obx_config_t *cfg, const char *name, obx_session_t kind,
                           char *errstr, size_t errsize) {
    char *chan = NULL;
    PGconn *conn = obx_pgconn_open(cfg->pg_conninfo, name);
    int rc;

    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(errstr, errsize, "%s", PQerrorMessage(conn));
        goto fail;
    }
    chan = PQescapeIdentifier(conn, cfg->pg_channel, strlen(cfg->pg_channel));
    if (!chan) {
        snprintf(errstr, errsize, "LISTEN: %s", PQerrorMessage(conn));
        goto fail;
    }
    {
        /* A lost mark only causes a re-publish, so the relay's own commits
         * need not wait for fsync. Without statistics (a new or never
         * analyzed outbox holding a backlog) the planner took a bitmap scan
         * of the whole id range and a sort for every claim (115 ms per
         * 500-row claim on 100,000 rows, 0.5 ms on the primary key): a
         * claim must walk the primary key in order and stop at its limit. */
        const setup_t claiming[] = {
            {NULL, "SET synchronous_commit = %s", "off"},
            {NULL, "SET enable_bitmapscan = %s", "off"},
            {NULL, "LISTEN %s", chan},
            {"claim", claim_sql, cfg->pg_table_sql},
            {"stats", stats_sql, cfg->pg_table_sql},
            {"waiting", "%s", waiting_sql},
        };
        const setup_t marking[] = {
            {NULL, "SET synchronous_commit = %s", "off"},
            {"mark", mark_sql, cfg->pg_table_sql},
            {"fail", fail_sql, cfg->pg_table_sql},
        };
        /* Retention gives way: a delete that waits for a lock gives up
         * (and the next pass tries again) rather than queue up. */
        const setup_t retention[] = {
            {NULL, "SET synchronous_commit = %s", "off"},
            {NULL, "SET lock_timeout = %s", "'2s'"},
            {NULL, "SET statement_timeout = %s", "'60s'"},
            {"retain_size", retain_size_sql, cfg->pg_table_sql},
            {"retain", retain_sql, cfg->pg_table_sql},
        };
        const setup_t partitions[] = {
            {NULL, "SET synchronous_commit = %s", "off"},
            {NULL, "SET lock_timeout = %s", "'2s'"},
            {NULL, "SET statement_timeout = %s", "'60s'"},
            {"retain_size", retain_size_sql, cfg->pg_table_sql},
            {"partitions", "%s", partitions_sql},
            {"add_partitions", "%s", add_partitions_sql},
            {"drop_partition", "%s", drop_partition_sql},
        };
        if (kind == OBX_SESSION_CLAIM)
            rc = setup_session(conn, claiming, (int)(sizeof claiming / sizeof claiming[0]), errstr, errsize);
        else if (kind == OBX_SESSION_MARK)
            rc = setup_session(conn, marking, (int)(sizeof marking / sizeof marking[0]), errstr, errsize);
        else if (cfg->retention_mode == OBX_RETENTION_PARTITIONS)
            rc = setup_session(conn, partitions, (int)(sizeof partitions / sizeof partitions[0]), errstr, errsize);
        else
            rc = setup_session(conn, retention, (int)(sizeof retention / sizeof retention[0]), errstr, errsize);
    }
    PQfreemem(chan);
    if (rc != 0)
        goto fail;
    return conn;
fail:
    obx_pgconn_error(errstr, errsize, errstr);
    PQfinish(conn);
    return NULL;
}

int obx_outbox_prepare_horizon(PGconn *conn, const obx_config_t *cfg, char *why, size_t whysize) {
    const char *params[1] = {cfg->pg_table_sql};
    PGresult *res = PQexecParams(conn,
        "SELECT s.seq, c.seqcache, s.seq IS NOT NULL AND has_sequence_privilege(s.seq, 'SELECT')"
        " FROM (SELECT pg_get_serial_sequence($1, 'id') AS seq) s"
        " LEFT JOIN pg_catalog.pg_sequence c ON c.seqrelid = s.seq::regclass",
        1, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        obx_pgconn_error(why, whysize, PQresultErrorMessage(res));
    } else if (PQgetisnull(res, 0, 0)) {
        snprintf(why, whysize, "the id column of %s takes no value from a sequence", cfg->pg_table);
        rc = 0;
    } else if (atoll(PQgetvalue(res, 0, 1)) != 1) {
        snprintf(why, whysize, "sequence %s has CACHE %s: ids are not in allocation order "
                 "(ALTER SEQUENCE %s CACHE 1)", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                 PQgetvalue(res, 0, 0));
        rc = 0;
    } else if (PQgetvalue(res, 0, 2)[0] != 't') {
        snprintf(why, whysize, "role %s lacks SELECT on sequence %s", PQuser(conn), PQgetvalue(res, 0, 0));
        rc = 0;
    } else {
        const setup_t st[] = {
            {"horizon", horizon_sql, PQgetvalue(res, 0, 0)},
            {"confirm", confirm_sql, cfg->pg_table_sql},
        };
        rc = setup_session(conn, st, 2, why, whysize) == 0 ? 1 : -1;
    }
    PQclear(res);
    return rc;
}

/* pg_try_advisory_lock on prefix and the table's oid: 1 taken, 0 not, -1 error. */
static int try_lock(PGconn *conn, const obx_config_t *cfg, const char *prefix, char *errstr, size_t errsize) {
    const char *params[2] = {cfg->pg_table_sql, prefix};
    PGresult *res = PQexecParams(conn,
        "SELECT pg_try_advisory_lock(hashtextextended($2 || $1::regclass::oid::text, 0))",
        2, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        obx_pgconn_error(errstr, errsize, PQresultErrorMessage(res));
    } else {
        rc = PQgetvalue(res, 0, 0)[0] == 't';
    }
    PQclear(res);
    return rc;
}

int obx_outbox_try_lead(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize) {
    return try_lock(conn, cfg, "outbox-relay:", errstr, errsize);
}

int obx_outbox_send_claim(PGconn *conn, int64_t after_id, int limit, int64_t upto_id) {
    /* Binary parameters, all int8 (PostgreSQL infers bigint for LIMIT), network byte order. */
    uint64_t a = __builtin_bswap64((uint64_t)after_id);
    uint64_t l = __builtin_bswap64((uint64_t)limit);
    uint64_t u = __builtin_bswap64((uint64_t)upto_id);
    const char *vals[3] = {(const char *)&a, (const char *)&l, (const char *)&u};
    const int lens[3] = {8, 8, 8}, fmts[3] = {1, 1, 1};
    return PQsendQueryPrepared(conn, "claim", 3, vals, lens, fmts, 1) ? 0 : -1;
}

int obx_outbox_send_horizon(PGconn *conn, const obx_config_t *cfg) {
    const char *vals[1] = {cfg->pg_table_sql};
    return PQsendQueryPrepared(conn, "horizon", 1, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_confirm(PGconn *conn, const obx_config_t *cfg, const char *vxids) {
    const char *vals[2] = {cfg->pg_table_sql, vxids};
    return PQsendQueryPrepared(conn, "confirm", 2, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_mark(PGconn *conn, const int64_t *ids, size_t n) {
    size_t cap = n * 21 + 3, len = 0;
    char *buf = obx_xmalloc(cap);
    const char *vals[1];
    int rc;

    buf[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? "," : "", (long long)ids[i]);
    buf[len++] = '}';
    buf[len] = '\0';
    vals[0] = buf;
    rc = PQsendQueryPrepared(conn, "mark", 1, vals, NULL, NULL, 0) ? 0 : -1;
    free(buf);
    return rc;
}

int obx_outbox_send_retain(PGconn *conn, int64_t after_id, int limit, int keep_s) {
    char a[24], l[16], k[16];
    const char *vals[3] = {a, l, k};
    snprintf(a, sizeof a, "%lld", (long long)after_id);
    snprintf(l, sizeof l, "%d", limit);
    snprintf(k, sizeof k, "%d", keep_s);
    return PQsendQueryPrepared(conn, "retain", 3, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_retention_lock(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize) {
    return try_lock(conn, cfg, "outbox-relay:retention:", errstr, errsize);
}

int obx_outbox_send_partitions(PGconn *conn, const obx_config_t *cfg) {
    char k[16];
    const char *vals[2] = {cfg->pg_table_sql, k};
    snprintf(k, sizeof k, "%d", cfg->retention_keep_s);
    return PQsendQueryPrepared(conn, "partitions", 2, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_add_partitions(PGconn *conn, const obx_config_t *cfg) {
    char rows[24], ahead[16];
    const char *vals[3] = {cfg->pg_table_sql, rows, ahead};
    snprintf(rows, sizeof rows, "%d", cfg->retention_partition_rows);
    snprintf(ahead, sizeof ahead, "%d", cfg->retention_partitions_ahead);
    return PQsendQueryPrepared(conn, "add_partitions", 3, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_detach(PGconn *conn, const obx_config_t *cfg, const char *part, int finalize) {
    char sql[1024];
    /* part is a regclass as PostgreSQL prints it: quoted where it must be. */
    snprintf(sql, sizeof sql, "ALTER TABLE %s DETACH PARTITION %s %s", cfg->pg_table_sql, part,
             finalize ? "FINALIZE" : "CONCURRENTLY");
    return PQsendQuery(conn, sql) ? 0 : -1;
}

int obx_outbox_send_drop_partition(PGconn *conn, const obx_config_t *cfg, const char *part) {
    char k[16];
    const char *vals[4] = {cfg->pg_table_sql, part, k, cfg->pg_channel};
    snprintf(k, sizeof k, "%d", cfg->retention_keep_s);
    return PQsendQueryPrepared(conn, "drop_partition", 4, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_retain_size(PGconn *conn, const obx_config_t *cfg) {
    const char *vals[1] = {cfg->pg_table_sql};
    return PQsendQueryPrepared(conn, "retain_size", 1, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_fail(PGconn *conn, int64_t id, const char *error, int park) {
    char idbuf[24];
    const char *vals[3] = {idbuf, error, park ? "true" : "false"};
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)id);
    return PQsendQueryPrepared(conn, "fail", 3, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_waiting(PGconn *conn, const obx_config_t *cfg, int waiting) {
    const char *vals[2] = {cfg->pg_table_sql, waiting ? "1" : "0"};
    return PQsendQueryPrepared(conn, "waiting", 2, vals, NULL, NULL, 0) ? 0 : -1;
}

int obx_outbox_send_stats(PGconn *conn, int64_t after_id) {
    char buf[24];
    const char *vals[1] = {buf};
    snprintf(buf, sizeof buf, "%lld", (long long)after_id);
    return PQsendQueryPrepared(conn, "stats", 1, vals, NULL, NULL, 0) ? 0 : -1;
}

static const char *val_or_null(const PGresult *res, int i, int col) {
    return PQgetisnull(res, i, col) ? NULL : PQgetvalue(res, i, col);
}

int64_t obx_outbox_row_id(const PGresult *res, int i) {
    return obx_pgbin_int64(PQgetvalue(res, i, COL_ID));
}

void obx_outbox_row_event_id(const PGresult *res, int i, char out[OBX_PGBIN_UUID_SIZE]) {
    obx_pgbin_uuid(PQgetvalue(res, i, COL_EVENT_ID), out);
}

void obx_outbox_row(const PGresult *res, int i, obx_row_t *row) {
    memset(row, 0, sizeof *row);
    row->id = obx_outbox_row_id(res, i);
    obx_outbox_row_event_id(res, i, row->event_id);
    row->aggregate_type = PQgetvalue(res, i, COL_AGG_TYPE);
    row->aggregate_id = val_or_null(res, i, COL_AGG_ID);
    row->event_type = PQgetvalue(res, i, COL_EVENT_TYPE);
    row->topic = val_or_null(res, i, COL_TOPIC);
    row->payload = val_or_null(res, i, COL_PAYLOAD);
    row->payload_len = row->payload ? (size_t)PQgetlength(res, i, COL_PAYLOAD) : 0;
    obx_pgbin_timestamptz(PQgetvalue(res, i, COL_CREATED), row->created_at);
    row->attempts = obx_pgbin_int32(PQgetvalue(res, i, COL_ATTEMPTS));
    row->headers_ok = PQgetvalue(res, i, COL_HEADERS_OK)[0] != 0;
    row->hkeys = val_or_null(res, i, COL_HKEYS);
    row->hkeys_len = row->hkeys ? (size_t)PQgetlength(res, i, COL_HKEYS) : 0;
    row->hvals = val_or_null(res, i, COL_HVALS);
    row->hvals_len = row->hvals ? (size_t)PQgetlength(res, i, COL_HVALS) : 0;
}

static int check_query(PGconn *conn, const char *what, const char *sql, const char *param,
                       char *errstr, size_t errsize) {
    const char *params[1] = {param};
    PGresult *res = PQexecParams(conn, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char e[512];
        snprintf(errstr, errsize, "%s: %s", what, obx_pgconn_error(e, sizeof e, PQresultErrorMessage(res)));
        rc = -1;
    } else if (PQntuples(res) < 1 || PQgetvalue(res, 0, 0)[0] != 't') {
        snprintf(errstr, errsize, "%s", what);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* retention.mode = "partitions": the table is partitioned by range of id,
 * the schema's functions are there, and the role may create, attach,
 * detach and drop partitions (it owns the table and may create in its
 * schema). */
static int check_partitions(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize) {
    char msg[1024], schema[256];
    const char *dot = strchr(cfg->pg_table, '.');

    if (dot)
        snprintf(schema, sizeof schema, "%.*s", (int)(dot - cfg->pg_table), cfg->pg_table);
    else
        snprintf(schema, sizeof schema, "public");
    snprintf(msg, sizeof msg, "retention.mode = \"partitions\" needs %s partitioned by range of id, and it is"
             " not: convert it as its owner with SELECT outbox_convert_to_partitions('%s', '%s', %d)"
             " (docs/operations.md, Housekeeping), or set retention.mode = \"delete\"", cfg->pg_table, schema,
             dot ? dot + 1 : cfg->pg_table, cfg->retention_partition_rows);
    if (check_query(conn, msg,
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table p"
                    " JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
                    " WHERE p.partrelid = $1::regclass AND p.partstrat = 'r' AND p.partnatts = 1"
                    " AND a.attname = 'id')", cfg->pg_table_sql, errstr, errsize) != 0)
        return -1;
    if (check_query(conn, "the schema's partition functions are missing (run: outbox-relay -c FILE migrate)",
                    "SELECT to_regprocedure('outbox_partitions(regclass,integer)') IS NOT NULL"
                    " AND to_regprocedure('outbox_add_partitions(regclass,bigint,integer)') IS NOT NULL"
                    " AND to_regprocedure('outbox_drop_partition(regclass,text,integer,text)') IS NOT NULL",
                    NULL, errstr, errsize) != 0)
        return -1;
    snprintf(msg, sizeof msg, "role %s does not own %s, which retention.mode = \"partitions\" needs to create,"
             " attach, detach and drop its partitions (ALTER TABLE %s OWNER TO %s, or grant %s the owning role)",
             PQuser(conn), cfg->pg_table, cfg->pg_table, PQuser(conn), PQuser(conn));
    if (check_query(conn, msg,
                    "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c"
                    " WHERE c.oid = $1::regclass", cfg->pg_table_sql, errstr, errsize) != 0)
        return -1;
    snprintf(msg, sizeof msg, "role %s lacks CREATE on schema %s, where retention.mode = \"partitions\""
             " creates the partitions of %s (GRANT CREATE ON SCHEMA %s TO %s)", PQuser(conn), schema,
             cfg->pg_table, schema, PQuser(conn));
    return check_query(conn, msg,
                       "SELECT has_schema_privilege(c.relnamespace, 'CREATE') FROM pg_catalog.pg_class c"
                       " WHERE c.oid = $1::regclass", cfg->pg_table_sql, errstr, errsize);
}

int obx_outbox_check(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize) {
    char msg[512];
    if (check_query(conn, "outbox table does not exist (run: outbox-relay -c FILE migrate)",
                    "SELECT to_regclass($1) IS NOT NULL", cfg->pg_table_sql, errstr, errsize) != 0)
        return -1;
    snprintf(msg, sizeof msg, "role %s lacks SELECT and UPDATE on %s", PQuser(conn), cfg->pg_table);
    if (check_query(conn, msg,
                    "SELECT has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'UPDATE')",
                    cfg->pg_table_sql, errstr, errsize) != 0)
        return -1;
    snprintf(msg, sizeof msg, "role %s lacks UPDATE on the waiting flag of %s, the sequence its"
             " outbox_notify trigger reads", PQuser(conn), cfg->pg_table);
    if (check_query(conn, msg,
                    "SELECT COALESCE(bool_and(has_sequence_privilege(f.flag, 'UPDATE')), true)"
                    " FROM (" FLAG_SQL ") f", cfg->pg_table_sql, errstr, errsize) != 0)
        return -1;
    if (cfg->retention_mode == OBX_RETENTION_DELETE) {
        snprintf(msg, sizeof msg, "role %s lacks DELETE on %s, which retention.mode = \"delete\" needs"
                 " (GRANT DELETE ON %s TO %s, or set retention.mode = \"off\")", PQuser(conn), cfg->pg_table,
                 cfg->pg_table, PQuser(conn));
        if (check_query(conn, msg, "SELECT has_table_privilege($1, 'DELETE')", cfg->pg_table_sql, errstr,
                        errsize) != 0)
            return -1;
    }
    if (cfg->retention_mode == OBX_RETENTION_PARTITIONS && check_partitions(conn, cfg, errstr, errsize) != 0)
        return -1;
    if (check_query(conn, "the outbox table has no outbox_notify trigger: the relay will only poll",
                    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass"
                    " AND tgname = 'outbox_notify')", cfg->pg_table_sql, errstr, errsize) != 0)
        OBX_LOG(OBX_LOG_WARN, "check_warning", "check", KS("warning", errstr));
    else if (check_query(conn, "the outbox_notify trigger has no waiting flag (an older schema):"
                         " writers pay a NOTIFY on every insert (run migrate)",
                         "SELECT EXISTS (" FLAG_SQL ")", cfg->pg_table_sql, errstr, errsize) != 0)
        OBX_LOG(OBX_LOG_WARN, "check_warning", "check", KS("warning", errstr));
    if (obx_outbox_prepare_horizon(conn, cfg, msg, sizeof msg) == 0)
        OBX_LOG(OBX_LOG_WARN, "check_warning",
                "check", KS("warning", "claims will wait for their marks (no pipelining)"),
                KS("reason", msg));
    return 0;
}

PGresult *obx_outbox_topic_sample(PGconn *conn, const obx_config_t *cfg, int scan, int limit,
                                  int with_event_type, char *errstr, size_t errsize) {
    char sql[1024];
    PGresult *res;

    /* The newest rows by primary key: a backward index scan, however large the table. */
    snprintf(sql, sizeof sql,
             "SELECT DISTINCT topic, CASE WHEN topic IS NULL THEN aggregate_type END,"
             " CASE WHEN topic IS NULL AND %s THEN event_type END"
             " FROM (SELECT topic, aggregate_type, event_type FROM %s ORDER BY id DESC LIMIT %d) s"
             " LIMIT %d",
             with_event_type ? "true" : "false", cfg->pg_table_sql, scan, limit);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        obx_pgconn_error(errstr, errsize, PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    return res;
}
