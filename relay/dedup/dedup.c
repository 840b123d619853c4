#include "obx_dedup.h"
#include "dedup_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *const apply_names[] = {"applied", "rejected", "duplicate", "parked"};
static const char *const comp_names[] = {"undone", "empty_rollback", "nothing_to_undo", "duplicate"};

const char *obx_dedup_apply_status_name(obx_apply_status_t s) { return apply_names[s]; }
const char *obx_dedup_comp_status_name(obx_comp_status_t s) { return comp_names[s]; }

int obx_dedup_uuid_valid(const char *s) {
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* Runs one statement; returns the result when its status is ok, else NULL
 * with the server's message in errstr (the result is cleared). */
static PGresult *run(PGconn *conn, const char *sql, int n, const char *const *vals,
                     char *errstr, size_t errsize) {
    PGresult *res = n ? PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0) : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    snprintf(errstr, errsize, "%s", PQresultErrorMessage(res));
    errstr[strcspn(errstr, "\n")] = '\0';
    PQclear(res);
    return NULL;
}

static int run_ok(PGconn *conn, const char *sql, int n, const char *const *vals, char *errstr,
                  size_t errsize) {
    PGresult *res = run(conn, sql, n, vals, errstr, errsize);
    PQclear(res);
    return res ? 0 : -1;
}

/* Inserts an inbox row; returns 1 if it is new, 0 if it existed, -1 on error. */
static int inbox_insert(PGconn *conn, const char *consumer, const char *event_id,
                        const obx_event_t *ev, const char *status, char *errstr, size_t errsize) {
    char part[16], off[24];
    const char *vals[7] = {consumer, event_id, ev ? ev->event_type : NULL, status,
                           ev ? ev->topic : NULL, part, off};
    PGresult *res;
    int fresh;

    snprintf(part, sizeof part, "%d", ev ? ev->partition : -1);
    snprintf(off, sizeof off, "%lld", ev ? (long long)ev->offset : -1LL);
    res = run(conn,
              "INSERT INTO processed_events (consumer, event_id, event_type, status, topic,"
              " kafka_partition, kafka_offset) VALUES ($1, $2::uuid, $3, $4, $5, $6, $7)"
              " ON CONFLICT DO NOTHING",
              7, vals, errstr, errsize);
    if (!res)
        return -1;
    fresh = atoi(PQcmdTuples(res)) == 1;
    PQclear(res);
    return fresh;
}

static int set_status(PGconn *conn, const char *consumer, const char *event_id,
                      const char *status, char *errstr, size_t errsize) {
    const char *vals[3] = {consumer, event_id, status};
    return run_ok(conn, "UPDATE processed_events SET status = $3 WHERE consumer = $1 AND event_id = $2::uuid",
                  3, vals, errstr, errsize);
}

int obx_dedup_park_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                      const char *reason, char *errstr, size_t errsize) {
    char part[16], off[24];
    const char *vals[9] = {consumer, ev->topic, part, off, ev->event_id, ev->event_type,
                           ev->key, NULL, reason};
    int lens[9] = {0}, fmts[9] = {0};
    PGresult *res;
    int rc = 0;

    snprintf(part, sizeof part, "%d", ev->partition);
    snprintf(off, sizeof off, "%lld", (long long)ev->offset);
    /* key and payload go in as binary bytea: they may hold any bytes. */
    vals[6] = ev->key;
    lens[6] = ev->key ? (int)strlen(ev->key) : 0;
    fmts[6] = 1;
    vals[7] = ev->payload;
    lens[7] = (int)ev->payload_len;
    fmts[7] = 1;
    res = PQexecParams(conn,
        "INSERT INTO dead_letters (consumer, topic, kafka_partition, kafka_offset, event_id,"
        " event_type, msg_key, payload, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO NOTHING",
        9, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(errstr, errsize, "%s", PQresultErrorMessage(res));
        errstr[strcspn(errstr, "\n")] = '\0';
        rc = -1;
    }
    PQclear(res);
    if (rc == 0)
        OBX_LOG(OBX_LOG_ERROR, "message parked", KS("consumer", consumer),
                KS("event_id", ev->event_id ? ev->event_id : ""), KS("topic", ev->topic),
                KI("partition", ev->partition), KI("offset", ev->offset), KS("reason", reason));
    return rc;
}

/* Runs an effect between a savepoint and its release; a poison effect is
 * undone and the event parked. Returns the effect's code, or -1 on error.
 * Without careful there is no savepoint (half the round trips), so a poison
 * effect cannot be undone alone: OBX_DEDUP_REDO asks the caller to roll the
 * transaction back and apply it again carefully. */
static int run_effect(PGconn *conn, const char *consumer, const obx_event_t *ev,
                      obx_effect_fn fn, void *arg, int careful, char *errstr, size_t errsize) {
    char reason[512] = "";
    obx_effect_rc_t rc;

    if (careful && run_ok(conn, "SAVEPOINT obx_effect", 0, NULL, errstr, errsize) != 0)
        return -1;
    rc = fn(conn, ev, arg, reason, sizeof reason);
    if (!careful) {
        if (rc == OBX_EFFECT_OK || rc == OBX_EFFECT_REJECT)
            return (int)rc;
        if (rc == OBX_EFFECT_POISON) {
            snprintf(errstr, errsize, "poison event %s: %s", ev->event_id, reason);
            return OBX_DEDUP_REDO;
        }
        snprintf(errstr, errsize, "effect asked for a retry: %s", reason[0] ? reason : "no reason given");
        return -1;
    }
    switch (rc) {
    case OBX_EFFECT_OK:
    case OBX_EFFECT_REJECT:
        if (run_ok(conn, "RELEASE SAVEPOINT obx_effect", 0, NULL, errstr, errsize) != 0)
            return -1;
        return (int)rc;
    case OBX_EFFECT_POISON:
        if (run_ok(conn, "ROLLBACK TO SAVEPOINT obx_effect", 0, NULL, errstr, errsize) != 0 ||
            obx_dedup_park_tx(conn, consumer, ev, reason[0] ? reason : "refused by the effect",
                              errstr, errsize) != 0)
            return -1;
        return (int)rc;
    case OBX_EFFECT_RETRY:
        break;
    }
    snprintf(errstr, errsize, "effect asked for a retry: %s", reason[0] ? reason : "no reason given");
    return -1;
}

int obx_dedup_apply_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                       obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                       char *errstr, size_t errsize) {
    return obx_dedup_apply_mode_tx(conn, consumer, ev, fn, arg, 1, status, errstr, errsize);
}

int obx_dedup_apply_mode_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                            obx_effect_fn fn, void *arg, int careful, obx_apply_status_t *status,
                            char *errstr, size_t errsize) {
    int fresh, rc;

    if (!obx_dedup_uuid_valid(ev->event_id)) {
        /* Parking happens on the careful pass only, so it is done (and logged) once. */
        if (!careful) {
            snprintf(errstr, errsize, "message without a valid event_id");
            return OBX_DEDUP_REDO;
        }
        if (obx_dedup_park_tx(conn, consumer, ev, ev->event_id ? "invalid event_id header" : "missing event_id header",
                              errstr, errsize) != 0)
            return -1;
        *status = OBX_APPLY_PARKED;
        return 0;
    }
    fresh = inbox_insert(conn, consumer, ev->event_id, ev, "applied", errstr, errsize);
    if (fresh < 0)
        return -1;
    if (!fresh) {
        *status = OBX_APPLY_DUPLICATE;
        OBX_LOG(OBX_LOG_DEBUG, "duplicate skipped", KS("consumer", consumer),
                KS("event_id", ev->event_id), KI("partition", ev->partition), KI("offset", ev->offset));
        return 0;
    }
    rc = run_effect(conn, consumer, ev, fn, arg, careful, errstr, errsize);
    if (rc < 0)
        return rc;
    if (rc == OBX_EFFECT_OK) {
        *status = OBX_APPLY_APPLIED;
        return 0;
    }
    /* Rejected and parked events stay in the inbox so no replay applies them. */
    *status = rc == OBX_EFFECT_REJECT ? OBX_APPLY_REJECTED : OBX_APPLY_PARKED;
    return set_status(conn, consumer, ev->event_id, rc == OBX_EFFECT_REJECT ? "rejected" : "parked",
                      errstr, errsize);
}

int obx_dedup_store_offset_tx(PGconn *conn, const char *consumer, const char *topic,
                              int32_t partition, int64_t next_offset, char *errstr,
                              size_t errsize) {
    char part[16], off[24];
    const char *vals[4] = {consumer, topic, part, off};
    snprintf(part, sizeof part, "%d", partition);
    snprintf(off, sizeof off, "%lld", (long long)next_offset);
    /* GREATEST: a zombie member that lost the partition cannot move it back. */
    return run_ok(conn,
                  "INSERT INTO consumer_offsets (consumer, topic, kafka_partition, next_offset)"
                  " VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE"
                  " SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset),"
                  " updated_at = now()",
                  4, vals, errstr, errsize);
}

int obx_dedup_load_offset(PGconn *conn, const char *consumer, const char *topic,
                          int32_t partition, int64_t *next_offset, char *errstr, size_t errsize) {
    char part[16];
    const char *vals[3] = {consumer, topic, part};
    PGresult *res;
    snprintf(part, sizeof part, "%d", partition);
    res = run(conn, "SELECT next_offset FROM consumer_offsets WHERE consumer = $1 AND topic = $2"
                    " AND kafka_partition = $3", 3, vals, errstr, errsize);
    if (!res)
        return -1;
    *next_offset = PQntuples(res) ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return 0;
}

int obx_dedup_apply(PGconn *conn, const char *consumer, const obx_event_t *ev,
                    obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                    char *errstr, size_t errsize) {
    char ignored[64];
    if (run_ok(conn, "BEGIN", 0, NULL, errstr, errsize) != 0)
        return -1;
    if (obx_dedup_apply_tx(conn, consumer, ev, fn, arg, status, errstr, errsize) != 0 ||
        (ev->topic && obx_dedup_store_offset_tx(conn, consumer, ev->topic, ev->partition,
                                                ev->offset + 1, errstr, errsize) != 0) ||
        run_ok(conn, "COMMIT", 0, NULL, errstr, errsize) != 0) {
        run_ok(conn, "ROLLBACK", 0, NULL, ignored, sizeof ignored);
        return -1;
    }
    return 0;
}

int obx_dedup_compensate_tx(PGconn *conn, const char *consumer, const obx_event_t *comp,
                            const char *original_event_id, obx_effect_fn undo, void *arg,
                            obx_comp_status_t *status, char *errstr, size_t errsize) {
    const char *vals[2] = {consumer, original_event_id};
    PGresult *res;
    char st[32];
    int fresh, rc;

    if (!obx_dedup_uuid_valid(comp->event_id) || !obx_dedup_uuid_valid(original_event_id)) {
        snprintf(errstr, errsize, "compensation needs valid event ids (got \"%.40s\" for \"%.40s\")",
                 comp->event_id ? comp->event_id : "", original_event_id ? original_event_id : "");
        return -1;
    }
    fresh = inbox_insert(conn, consumer, comp->event_id, comp, "applied", errstr, errsize);
    if (fresh <= 0) {
        *status = OBX_COMP_DUPLICATE;
        return fresh;
    }
    /* The original's inbox key decides: whoever inserts it first wins, and
     * the primary key makes a concurrent original wait for this transaction. */
    fresh = inbox_insert(conn, consumer, original_event_id, NULL, "preempted", errstr, errsize);
    if (fresh < 0)
        return -1;
    if (fresh) {
        *status = OBX_COMP_EMPTY;
        OBX_LOG(OBX_LOG_INFO, "compensation before its original: empty rollback, original will be skipped",
                KS("consumer", consumer), KS("event_id", comp->event_id),
                KS("original_event_id", original_event_id));
        return 0;
    }
    res = run(conn, "SELECT status FROM processed_events WHERE consumer = $1 AND event_id = $2::uuid FOR UPDATE",
              2, vals, errstr, errsize);
    if (!res)
        return -1;
    snprintf(st, sizeof st, "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    if (strcmp(st, "applied") != 0) {
        *status = OBX_COMP_NOTHING;
        return 0;
    }
    rc = run_effect(conn, consumer, comp, undo, arg, 1, errstr, errsize);
    if (rc < 0)
        return -1;
    if (rc != OBX_EFFECT_OK) {
        *status = OBX_COMP_NOTHING;
        return set_status(conn, consumer, comp->event_id, rc == OBX_EFFECT_REJECT ? "rejected" : "parked",
                          errstr, errsize);
    }
    *status = OBX_COMP_UNDONE;
    return set_status(conn, consumer, original_event_id, "compensated", errstr, errsize);
}

long obx_dedup_cleanup(PGconn *conn, const char *consumer, long retention_s, int batch,
                       char *errstr, size_t errsize) {
    char secs[24], lim[16];
    const char *vals[3] = {consumer, secs, lim};
    long total = 0;
    int n;

    snprintf(secs, sizeof secs, "%ld", retention_s);
    snprintf(lim, sizeof lim, "%d", batch);
    /* Small batches, each its own transaction: no long lock on a hot table. */
    do {
        PGresult *res = run(conn,
            "DELETE FROM processed_events WHERE ctid = ANY (ARRAY("
            " SELECT ctid FROM processed_events WHERE consumer = $1"
            " AND processed_at < now() - make_interval(secs => $2::bigint) LIMIT $3))",
            3, vals, errstr, errsize);
        if (!res)
            return -1;
        n = atoi(PQcmdTuples(res));
        PQclear(res);
        total += n;
    } while (n == batch);
    return total;
}
