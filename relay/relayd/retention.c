#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgconn.h"
#include "outbox.h"
#include "xalloc.h"

#define RECONNECT_MS 30000    /* after a failed connect */
#define BEHIND_LOG_MS 60000   /* a retention_behind line at most this often */
#define FAILED_LOG_MS 60000   /* the same retention_failed error at most this often */

#define MISSING_LOG_MS 60000  /* a partition_ahead_missing line at most this often */
#define NAMES_MAX 200         /* of the parked partitions' names in a line */

/* The query in flight; the partitions mode's go LIST, ADD (when short of
 * partitions ahead), DETACH and DROP per partition to go, then SIZE. */
typedef enum {
    PENDING_NONE, PENDING_BATCH, PENDING_SIZE, PENDING_LIST, PENDING_ADD, PENDING_DETACH, PENDING_DROP
} pending_t;

static const char *const step_names[] = {
    [PENDING_NONE] = "", [PENDING_BATCH] = "delete", [PENDING_SIZE] = "size", [PENDING_LIST] = "list",
    [PENDING_ADD] = "create", [PENDING_DETACH] = "detach", [PENDING_DROP] = "drop",
};

/* Partition list columns (obx_outbox_send_partitions). */
enum { PART_NAME, PART_LO, PART_HI, PART_STATE, PART_ROWS, PART_PARKED };

struct obx_retention {
    const obx_config_t *cfg;
    PGconn *conn;
    pending_t pending;
    int enabled;              /* the last step's leading, and retention on */
    int64_t next_at;          /* next batch (or pass) */
    int64_t connect_at;
    /* the pass under way */
    int in_pass;
    int64_t cursor;           /* last id scanned */
    int64_t pass_started;
    long long pass_deleted, pass_batches, pass_oldest_s;
    long long deleted;        /* rows deleted, or in dropped partitions */
    /* partitions mode */
    int locked;               /* this session holds the retention lock */
    PGresult *parts;          /* the pass's partition list */
    int part_i;               /* its next row to act on */
    int detach_pending;       /* the list has a detach to finish */
    int pass_dropped, pass_created, pass_partitions, pass_ahead, pass_parked;
    char parked_names[NAMES_MAX];
    long long dropped;
    int64_t missing_logged_at;
    int64_t behind_logged_at;
    int64_t failed_logged_at;
    char last_error[256];
};

obx_retention_t *obx_retention_new(const obx_config_t *cfg) {
    obx_retention_t *r = obx_xcalloc(1, sizeof *r);
    r->cfg = cfg;
    return r;
}

static void end_pass(obx_retention_t *r) {
    r->in_pass = 0;
    PQclear(r->parts);
    r->parts = NULL;
}

static void close_session(obx_retention_t *r) {
    if (r->conn)
        PQfinish(r->conn);
    r->conn = NULL;
    r->pending = PENDING_NONE;
    r->locked = 0;
    end_pass(r);
}

void obx_retention_free(obx_retention_t *r) {
    if (!r)
        return;
    close_session(r);
    free(r);
}

/* Logs an error once per FAILED_LOG_MS unless it changed; the next pass
 * comes after the usual interval. */
static void failed(obx_retention_t *r, const char *what, const char *err, int64_t now) {
    char e[256];
    obx_pgconn_error(e, sizeof e, err);
    if (strcmp(e, r->last_error) != 0 || now - r->failed_logged_at >= FAILED_LOG_MS) {
        OBX_LOG(OBX_LOG_WARN, "retention_failed", "retention failed; publishing goes on", KS("step", what),
                KS("error", e), KI("retry_in_s", r->cfg->retention_interval_s));
        snprintf(r->last_error, sizeof r->last_error, "%s", e);
        r->failed_logged_at = now;
    }
    end_pass(r);
    r->next_at = now + (int64_t)r->cfg->retention_interval_s * 1000;
}

/* Sends query (an obx_outbox_send_* that returned its status) as step p. */
static void sent(obx_retention_t *r, int status, pending_t p, int64_t now) {
    if (status != 0) {
        failed(r, step_names[p], PQerrorMessage(r->conn), now);
        close_session(r);
        return;
    }
    r->pending = p;
}

static void send_batch(obx_retention_t *r, int64_t now) {
    if (!r->in_pass) {
        r->in_pass = 1;
        r->cursor = 0;
        r->pass_started = now;
        r->pass_deleted = r->pass_batches = r->pass_oldest_s = 0;
    }
    sent(r, obx_outbox_send_retain(r->conn, r->cursor, r->cfg->retention_batch_size, r->cfg->retention_keep_s),
         PENDING_BATCH, now);
}

static void send_list(obx_retention_t *r, int64_t now) {
    r->in_pass = 1;
    r->pass_started = now;
    r->pass_dropped = r->pass_created = r->pass_partitions = r->pass_ahead = r->pass_parked = 0;
    r->pass_deleted = 0;
    r->detach_pending = 0;
    r->parked_names[0] = '\0';
    sent(r, obx_outbox_send_partitions(r->conn, r->cfg), PENDING_LIST, now);
}

/* Acts on the next partition of the list that retention may finish or
 * drop; then asks the size (when the pass changed something) and ends.
 * PostgreSQL refuses DETACH ... CONCURRENTLY while another partition's
 * detach is pending, wherever that one is in the list: a pass that has one
 * finishes it and leaves the droppable partitions to the next pass. */
static void next_partition(obx_retention_t *r, int64_t now) {
    for (; r->part_i < PQntuples(r->parts); r->part_i++) {
        const char *name = PQgetvalue(r->parts, r->part_i, PART_NAME);
        const char *state = PQgetvalue(r->parts, r->part_i, PART_STATE);
        if (strcmp(state, "pending") == 0 || (strcmp(state, "droppable") == 0 && !r->detach_pending)) {
            sent(r, obx_outbox_send_detach(r->conn, r->cfg, name, state[0] == 'p'), PENDING_DETACH, now);
            return;
        }
        if (strcmp(state, "detached") == 0) {
            sent(r, obx_outbox_send_drop_partition(r->conn, r->cfg, name), PENDING_DROP, now);
            return;
        }
    }
    r->next_at = now + (int64_t)r->cfg->retention_interval_s * 1000;
    if (r->pass_dropped == 0 && r->pass_created == 0) {
        OBX_LOG(OBX_LOG_DEBUG, "retention_partitions", "retention pass", KI("dropped", 0), KI("created", 0),
                KI("partitions", r->pass_partitions), KI("ahead", r->pass_ahead),
                KI("parked_partitions", r->pass_parked), KS("parked_names", r->parked_names));
        end_pass(r);
        return;
    }
    sent(r, obx_outbox_send_retain_size(r->conn, r->cfg), PENDING_SIZE, now);
}

/* The list: counts what the line reports, warns when no partition is left
 * above the last id (the writers' next inserts may find none), and creates
 * partitions when short. Takes res. */
static void on_list(obx_retention_t *r, PGresult *res, int64_t now) {
    r->parts = res;
    r->part_i = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *state = PQgetvalue(res, i, PART_STATE);
        r->pass_partitions += strcmp(state, "detached") != 0;
        r->pass_ahead += strcmp(state, "ahead") == 0;
        r->detach_pending |= strcmp(state, "pending") == 0;
        if (strcmp(state, "parked") == 0) {
            size_t n = strlen(r->parked_names);
            r->pass_parked++;
            snprintf(r->parked_names + n, sizeof r->parked_names - n, "%s%s", n ? "," : "",
                     PQgetvalue(res, i, PART_NAME));
        }
    }
    if (r->pass_ahead == 0 && now - r->missing_logged_at >= MISSING_LOG_MS) {
        OBX_LOG(OBX_LOG_WARN, "partition_ahead_missing",
                "no partition ahead of the outbox's ids: inserts fail once the last one is full; retention "
                "creates them (raise retention.partition_rows or partitions_ahead)",
                KS("table", r->cfg->pg_table), KI("partitions", r->pass_partitions),
                KI("partitions_ahead", r->cfg->retention_partitions_ahead));
        r->missing_logged_at = now;
    }
    if (r->pass_ahead < r->cfg->retention_partitions_ahead)
        sent(r, obx_outbox_send_add_partitions(r->conn, r->cfg), PENDING_ADD, now);
    else
        next_partition(r, now);
}

static void on_drop(obx_retention_t *r, PGresult *res, int64_t now) {
    const char *state = PQgetvalue(res, 0, 0);
    long long rows = atoll(PQgetvalue(res, 0, 1));
    /* on_list did not count a table found detached among the partitions */
    int counted = strcmp(PQgetvalue(r->parts, r->part_i, PART_STATE), "detached") != 0;

    if (strcmp(state, "dropped") == 0) {
        r->pass_partitions -= counted;
        r->pass_dropped++;
        r->pass_deleted += rows;
        r->dropped++;
        r->deleted += rows;
    } else if (strcmp(state, "reattached") == 0) {
        r->pass_partitions += !counted;
        OBX_LOG(OBX_LOG_WARN, "partition_reattached",
                "a detached partition held rows that must stay (committed during the detach): attached again",
                KS("partition", PQgetvalue(r->parts, r->part_i, PART_NAME)), KI("rows", rows));
    }
    r->part_i++;
    next_partition(r, now);
}

static void on_partitions_size(obx_retention_t *r, PGresult *res, int64_t now) {
    OBX_LOG(OBX_LOG_INFO, "retention_partitions", "retention pass", KI("dropped", r->pass_dropped),
            KI("rows_dropped", r->pass_deleted), KI("created", r->pass_created),
            KI("partitions", r->pass_partitions + r->pass_created),
            /* the creation tops up to partitions_ahead over the last id as it then is */
            KI("ahead", r->pass_created ? r->cfg->retention_partitions_ahead : r->pass_ahead),
            KI("parked_partitions", r->pass_parked),
            KS("parked_names", r->parked_names), KI("duration_ms", now - r->pass_started),
            KI("table_bytes", atoll(PQgetvalue(res, 0, 0))), KI("dead_tuples", atoll(PQgetvalue(res, 0, 1))),
            KI("keep_s", r->cfg->retention_keep_s), KI("dropped_total", r->dropped),
            KI("rows_dropped_total", r->deleted));
    end_pass(r);
}

void obx_retention_step(obx_retention_t *r, int leading, int64_t now) {
    char err[512];

    r->enabled = leading && r->cfg->retention_mode != OBX_RETENTION_OFF;
    if (!r->enabled) {
        close_session(r);
        return;
    }
    if (!r->conn) {
        if (now < r->connect_at)
            return;
        r->conn = obx_outbox_connect(r->cfg, "outbox-relay retention", OBX_SESSION_RETENTION, err, sizeof err);
        if (!r->conn) {
            failed(r, "connect", err, now);
            r->connect_at = now + RECONNECT_MS;
            return;
        }
    }
    if (r->pending != PENDING_NONE || now < r->next_at)
        return;
    if (r->cfg->retention_mode == OBX_RETENTION_DELETE) {
        send_batch(r, now);
        return;
    }
    /* Partitions: one relay's retention at a time (a leader that lost its
     * lock may still have its retention session for a while). */
    if (!r->locked) {
        int rc = obx_outbox_retention_lock(r->conn, r->cfg, err, sizeof err);
        if (rc < 0) {
            failed(r, "lock", err, now);
            close_session(r);
            return;
        }
        if (rc == 0) {
            failed(r, "lock", "another session holds this outbox's retention lock", now);
            return;
        }
        r->locked = 1;
    }
    send_list(r, now);
}

int obx_retention_fd(const obx_retention_t *r) {
    return r->conn && r->pending != PENDING_NONE ? PQsocket(r->conn) : -1;
}

int64_t obx_retention_due(const obx_retention_t *r) {
    if (!r->enabled || r->pending != PENDING_NONE)
        return INT64_MAX;
    return r->conn ? r->next_at : r->connect_at;
}

long long obx_retention_deleted(const obx_retention_t *r) { return r->deleted; }

static void pass_done(obx_retention_t *r, int64_t now) {
    r->in_pass = 0;
    r->next_at = now + (int64_t)r->cfg->retention_interval_s * 1000;
    if (r->pass_deleted == 0) {
        OBX_LOG(OBX_LOG_DEBUG, "retention_pass", "retention pass", KI("deleted", 0), KI("batches", r->pass_batches));
        return;
    }
    sent(r, obx_outbox_send_retain_size(r->conn, r->cfg), PENDING_SIZE, now);
}

static void on_batch(obx_retention_t *r, PGresult *res, int64_t now) {
    long long deleted = atoll(PQgetvalue(res, 0, 0)), scanned = atoll(PQgetvalue(res, 0, 1));
    long long oldest_s = atoll(PQgetvalue(res, 0, 4));
    int must_stay = PQgetvalue(res, 0, 3)[0] == 't';

    r->cursor = atoll(PQgetvalue(res, 0, 2));
    r->pass_batches++;
    r->pass_deleted += deleted;
    r->deleted += deleted;
    if (oldest_s > r->pass_oldest_s)
        r->pass_oldest_s = oldest_s;
    /* A full batch goes on: past parked rows (none must stay), or while it
     * still deletes; otherwise the rows from here on are unsent or young. */
    if (scanned == r->cfg->retention_batch_size && (deleted > 0 || !must_stay))
        r->next_at = now + deleted * 1000 / r->cfg->retention_max_rows_per_s;
    else
        pass_done(r, now);
}

static void on_size(obx_retention_t *r, PGresult *res, int64_t now) {
    /* Rows deleted long after keep_s: retention does not keep up with the
     * writers (or is catching up with an old table). */
    long long behind_s = (long long)r->cfg->retention_keep_s * 2 + 60;

    OBX_LOG(OBX_LOG_INFO, "retention_pass", "retention pass", KI("deleted", r->pass_deleted),
            KI("batches", r->pass_batches), KI("duration_ms", now - r->pass_started),
            KI("oldest_deleted_age_s", r->pass_oldest_s), KI("table_bytes", atoll(PQgetvalue(res, 0, 0))),
            KI("dead_tuples", atoll(PQgetvalue(res, 0, 1))), KI("keep_s", r->cfg->retention_keep_s),
            KI("deleted_total", r->deleted));
    if (r->pass_oldest_s > behind_s && now - r->behind_logged_at >= BEHIND_LOG_MS) {
        OBX_LOG(OBX_LOG_WARN, "retention_behind",
                "retention deletes rows long after keep_s: raise retention.max_rows_per_s or batch_size",
                KI("oldest_deleted_age_s", r->pass_oldest_s), KI("keep_s", r->cfg->retention_keep_s),
                KI("max_rows_per_s", r->cfg->retention_max_rows_per_s));
        r->behind_logged_at = now;
    }
}

void obx_retention_input(obx_retention_t *r, int64_t now) {
    PGresult *res, *extra;
    pending_t done = r->pending;
    ExecStatusType st;

    if (!r->conn || done == PENDING_NONE)
        return;
    if (!PQconsumeInput(r->conn)) {
        failed(r, step_names[done], PQerrorMessage(r->conn), now);
        close_session(r);
        return;
    }
    if (PQisBusy(r->conn))
        return;
    res = PQgetResult(r->conn);
    while ((extra = PQgetResult(r->conn)) != NULL)
        PQclear(extra);
    r->pending = PENDING_NONE;
    st = PQresultStatus(res);
    if (done == PENDING_DETACH ? st != PGRES_COMMAND_OK
        : done == PENDING_LIST ? st != PGRES_TUPLES_OK
                               : st != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        failed(r, step_names[done], res ? PQresultErrorMessage(res) : PQerrorMessage(r->conn), now);
    } else if (done == PENDING_LIST) {
        on_list(r, res, now);
        return; /* r->parts took res */
    } else if (done == PENDING_ADD) {
        r->pass_created = atoi(PQgetvalue(res, 0, 0));
        next_partition(r, now);
    } else if (done == PENDING_DETACH) {
        sent(r, obx_outbox_send_drop_partition(r->conn, r->cfg, PQgetvalue(r->parts, r->part_i, PART_NAME)),
             PENDING_DROP, now);
    } else if (done == PENDING_DROP) {
        on_drop(r, res, now);
    } else if (done == PENDING_BATCH) {
        on_batch(r, res, now);
    } else if (r->cfg->retention_mode == OBX_RETENTION_PARTITIONS) {
        on_partitions_size(r, res, now);
    } else {
        on_size(r, res, now);
    }
    PQclear(res);
}
