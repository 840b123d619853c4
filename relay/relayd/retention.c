#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "outbox.h"

#define RECONNECT_MS 30000    /* after a failed connect */
#define BEHIND_LOG_MS 60000   /* a retention_behind line at most this often */
#define FAILED_LOG_MS 60000   /* the same retention_failed error at most this often */

typedef enum { PENDING_NONE, PENDING_BATCH, PENDING_SIZE } pending_t;

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
    long long deleted;
    int64_t behind_logged_at;
    int64_t failed_logged_at;
    char last_error[256];
};

obx_retention_t *obx_retention_new(const obx_config_t *cfg) {
    obx_retention_t *r = calloc(1, sizeof *r);
    if (r)
        r->cfg = cfg;
    return r;
}

static void close_session(obx_retention_t *r) {
    if (r->conn)
        PQfinish(r->conn);
    r->conn = NULL;
    r->pending = PENDING_NONE;
    r->in_pass = 0;
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
    snprintf(e, sizeof e, "%s", err);
    e[strcspn(e, "\n")] = '\0';
    if (strcmp(e, r->last_error) != 0 || now - r->failed_logged_at >= FAILED_LOG_MS) {
        OBX_LOG(OBX_LOG_WARN, "retention_failed", "retention failed; publishing goes on", KS("step", what),
                KS("error", e), KI("retry_in_s", r->cfg->retention_interval_s));
        snprintf(r->last_error, sizeof r->last_error, "%s", e);
        r->failed_logged_at = now;
    }
    r->in_pass = 0;
    r->next_at = now + (int64_t)r->cfg->retention_interval_s * 1000;
}

static void send_batch(obx_retention_t *r, int64_t now) {
    if (!r->in_pass) {
        r->in_pass = 1;
        r->cursor = 0;
        r->pass_started = now;
        r->pass_deleted = r->pass_batches = r->pass_oldest_s = 0;
    }
    if (obx_outbox_send_retain(r->conn, r->cursor, r->cfg->retention_batch_size, r->cfg->retention_keep_s) != 0) {
        failed(r, "delete", PQerrorMessage(r->conn), now);
        close_session(r);
        return;
    }
    r->pending = PENDING_BATCH;
}

void obx_retention_step(obx_retention_t *r, int leading, int64_t now) {
    char err[512];

    r->enabled = leading && r->cfg->retention_mode == OBX_RETENTION_DELETE;
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
    if (r->pending == PENDING_NONE && now >= r->next_at)
        send_batch(r, now);
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
    if (obx_outbox_send_retain_size(r->conn, r->cfg) != 0) {
        failed(r, "size", PQerrorMessage(r->conn), now);
        close_session(r);
        return;
    }
    r->pending = PENDING_SIZE;
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

    if (!r->conn || done == PENDING_NONE)
        return;
    if (!PQconsumeInput(r->conn)) {
        failed(r, "read", PQerrorMessage(r->conn), now);
        close_session(r);
        return;
    }
    if (PQisBusy(r->conn))
        return;
    res = PQgetResult(r->conn);
    while ((extra = PQgetResult(r->conn)) != NULL)
        PQclear(extra);
    r->pending = PENDING_NONE;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        failed(r, done == PENDING_BATCH ? "delete" : "size",
               res ? PQresultErrorMessage(res) : PQerrorMessage(r->conn), now);
    else if (done == PENDING_BATCH)
        on_batch(r, res, now);
    else
        on_size(r, res, now);
    PQclear(res);
}
