#include "obx_dedup.h"
#include "dedup_internal.h"

#include <ctype.h>
#include <libpq-events.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgconn.h"

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

/* Per connection, the statements obx_dedup_exec prepared there: sql[i] is
 * "obx_dedup_<i>". Kept as libpq instance data so that it dies with the
 * connection and a reset (a new session) starts empty. */
typedef struct {
    char **sql;
    int n, cap;
} stmts_t;

static void stmts_clear(stmts_t *st) {
    for (int i = 0; i < st->n; i++)
        free(st->sql[i]);
    st->n = 0;
}

static int stmts_event(PGEventId id, void *info, void *pass) {
    stmts_t *st;
    (void)pass;
    if (id == PGEVT_CONNRESET && (st = PQinstanceData(((PGEventConnReset *)info)->conn, stmts_event)))
        stmts_clear(st);
    if (id == PGEVT_CONNDESTROY && (st = PQinstanceData(((PGEventConnDestroy *)info)->conn, stmts_event))) {
        stmts_clear(st);
        free(st->sql);
        free(st);
    }
    return 1;
}

/* The connection's statement list, created on first use; NULL when out of memory. */
static stmts_t *stmts_of(PGconn *conn) {
    stmts_t *st = PQinstanceData(conn, stmts_event);
    if (st)
        return st;
    st = calloc(1, sizeof *st);
    if (st && PQregisterEventProc(conn, stmts_event, "obx_dedup", NULL) && PQsetInstanceData(conn, stmts_event, st))
        return st;
    free(st);
    return NULL;
}

/* The index of sql in st; when new, st->n with a copy of sql reserved there
 * (counted once prepared). -1 when out of memory. */
static int stmts_find(stmts_t *st, const char *sql) {
    int i = 0;
    while (i < st->n && strcmp(st->sql[i], sql) != 0)
        i++;
    if (i < st->n)
        return i;
    if (st->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 8;
        char **grown = realloc(st->sql, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        st->sql = grown;
        st->cap = cap;
    }
    return (st->sql[i] = strdup(sql)) ? i : -1;
}

PGresult *obx_dedup_exec(PGconn *conn, const char *sql, int nparams, const char *const *vals,
                         const int *lens, const int *fmts) {
    stmts_t *st = stmts_of(conn);
    int i = st ? stmts_find(st, sql) : -1;
    char name[32];

    if (i < 0) /* out of memory: unprepared still works */
        return PQexecParams(conn, sql, nparams, NULL, vals, lens, fmts, 0);
    snprintf(name, sizeof name, "obx_dedup_%d", i);
    if (i == st->n) {
        PGresult *res = PQprepare(conn, name, sql, nparams, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            free(st->sql[i]);
            return res;
        }
        PQclear(res);
        st->n++;
    }
    return PQexecPrepared(conn, name, nparams, vals, lens, fmts, 0);
}

/* The binary array header (dimensions, flags, element type text, size,
 * lower bound), then each element as its length and bytes, big-endian. */
#define ARRAY_HEADER 20
#define TEXTOID 25

static void put32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

int obx_dedup_array_add(obx_dedup_array_t *a, const char *s, int len) {
    int need;
    if (s && len < 0)
        len = (int)strlen(s);
    need = (a->len ? a->len : ARRAY_HEADER) + 4 + (s ? len : 0);
    if (need > a->cap) {
        int cap = need * 2;
        char *grown = realloc(a->data, (size_t)cap);
        if (!grown)
            return -1;
        a->data = grown;
        a->cap = cap;
    }
    if (!a->len) {
        put32(a->data, 1);
        put32(a->data + 4, 0);
        put32(a->data + 8, TEXTOID);
        put32(a->data + 16, 1);
        a->len = ARRAY_HEADER;
    }
    put32(a->data + a->len, s ? (uint32_t)len : UINT32_MAX); /* -1: NULL */
    if (s) {
        memcpy(a->data + a->len + 4, s, (size_t)len);
    } else {
        put32(a->data + 4, 1);
    }
    a->len = need;
    put32(a->data + 12, (uint32_t)++a->n);
    return 0;
}

void obx_dedup_array_free(obx_dedup_array_t *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* Keeps res when its status is ok, else clears it and returns NULL with the
 * server's message in errstr. */
static PGresult *checked(PGresult *res, char *errstr, size_t errsize) {
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    obx_pgconn_error(errstr, errsize, res ? PQresultErrorMessage(res) : "out of memory");
    PQclear(res);
    return NULL;
}

/* Runs one statement, prepared when it has parameters (see obx_dedup_exec). */
static PGresult *run(PGconn *conn, const char *sql, int n, const char *const *vals,
                     char *errstr, size_t errsize) {
    return checked(n ? obx_dedup_exec(conn, sql, n, vals, NULL, NULL) : PQexec(conn, sql), errstr, errsize);
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

/* One statement for a batch's inbox rows; it returns the position of each
 * new event: the first of its id in the batch, when the inbox lacks it.
 * Rows go in id order, so that two members inserting the same ids (a zombie
 * and a partition's new owner) wait for each other instead of deadlocking. */
static const char inbox_batch_sql[] =
    "WITH b AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
    "           WITH ORDINALITY AS b(event_id, event_type, topic, kafka_partition, kafka_offset, i)),"
    " ins AS (INSERT INTO processed_events (consumer, event_id, event_type, status, topic,"
    "         kafka_partition, kafka_offset)"
    "         SELECT $1, event_id::uuid, event_type, 'applied', topic, kafka_partition::int,"
    "         kafka_offset::bigint FROM b ORDER BY event_id::uuid, i"
    "         ON CONFLICT DO NOTHING RETURNING event_id)"
    " SELECT min(b.i) FROM b JOIN ins ON b.event_id::uuid = ins.event_id GROUP BY ins.event_id";

/* Inserts the inbox rows of evs; fresh[i] = 1 when evs[i] is new. */
static int inbox_insert_batch(PGconn *conn, const char *consumer, const obx_event_t *evs, int n,
                              char *fresh, char *errstr, size_t errsize) {
    obx_dedup_array_t arr[5];
    const char *vals[6] = {consumer};
    int lens[6] = {0}, fmts[6] = {0, 1, 1, 1, 1, 1};
    PGresult *res = NULL;
    int rc = -1;

    memset(arr, 0, sizeof arr);
    for (int i = 0; i < n; i++) {
        char part[16], off[24];
        snprintf(part, sizeof part, "%d", evs[i].partition);
        snprintf(off, sizeof off, "%lld", (long long)evs[i].offset);
        if (obx_dedup_array_add(&arr[0], evs[i].event_id, -1) != 0 ||
            obx_dedup_array_add(&arr[1], evs[i].event_type, -1) != 0 ||
            obx_dedup_array_add(&arr[2], evs[i].topic, -1) != 0 ||
            obx_dedup_array_add(&arr[3], part, -1) != 0 || obx_dedup_array_add(&arr[4], off, -1) != 0) {
            snprintf(errstr, errsize, "out of memory");
            goto out;
        }
    }
    for (int k = 0; k < 5; k++) {
        vals[k + 1] = arr[k].data;
        lens[k + 1] = arr[k].len;
    }
    res = checked(obx_dedup_exec(conn, inbox_batch_sql, 6, vals, lens, fmts), errstr, errsize);
    if (!res)
        goto out;
    memset(fresh, 0, (size_t)n);
    for (int row = 0; row < PQntuples(res); row++) {
        int i = atoi(PQgetvalue(res, row, 0));
        if (i >= 1 && i <= n)
            fresh[i - 1] = 1;
    }
    rc = 0;
out:
    PQclear(res);
    for (int k = 0; k < 5; k++)
        obx_dedup_array_free(&arr[k]);
    return rc;
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

    snprintf(part, sizeof part, "%d", ev->partition);
    snprintf(off, sizeof off, "%lld", (long long)ev->offset);
    /* key and payload go in as binary bytea: they may hold any bytes. */
    vals[6] = ev->key;
    lens[6] = ev->key ? (int)strlen(ev->key) : 0;
    fmts[6] = 1;
    vals[7] = ev->payload;
    lens[7] = (int)ev->payload_len;
    fmts[7] = 1;
    res = checked(obx_dedup_exec(conn,
        "INSERT INTO dead_letters (consumer, topic, kafka_partition, kafka_offset, event_id,"
        " event_type, msg_key, payload, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO NOTHING",
        9, vals, lens, fmts), errstr, errsize);
    if (!res)
        return -1;
    PQclear(res);
    OBX_LOG(OBX_LOG_ERROR, "message_parked", "message parked", KS("consumer", consumer),
                KS("event_id", ev->event_id ? ev->event_id : ""), KS("topic", ev->topic),
                KI("partition", ev->partition), KI("offset", ev->offset), KS("reason", reason));
    return 0;
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

static void log_duplicate(const char *consumer, const obx_event_t *ev) {
    OBX_LOG(OBX_LOG_DEBUG, "duplicate_skipped",
            "duplicate skipped", KS("consumer", consumer), KS("event_id", ev->event_id),
            KI("partition", ev->partition), KI("offset", ev->offset));
}

int obx_dedup_apply_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                       obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                       char *errstr, size_t errsize) {
    int fresh, rc;

    if (!obx_dedup_uuid_valid(ev->event_id)) {
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
        log_duplicate(consumer, ev);
        return 0;
    }
    rc = run_effect(conn, consumer, ev, fn, arg, 1, errstr, errsize);
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

/* The batch effect on the new events of evs, in order; REJECT outcomes go
 * into status. Returns 0, -1 or OBX_DEDUP_REDO. */
static int run_batch_effect(PGconn *conn, const obx_event_t *evs, int n, const char *fresh,
                            obx_batch_effect_fn batch_fn, void *arg, obx_apply_status_t *status,
                            char *errstr, size_t errsize) {
    obx_event_t *todo = malloc((size_t)n * sizeof *todo);
    obx_effect_rc_t *rcs = calloc((size_t)n, sizeof *rcs); /* an unset outcome reads as OK */
    char reason[512] = "";
    int k = 0, rc = -1;

    if (!todo || !rcs) {
        snprintf(errstr, errsize, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (fresh[i])
            todo[k++] = evs[i];
    switch (k ? batch_fn(conn, todo, k, arg, rcs, reason, sizeof reason) : OBX_EFFECT_OK) {
    case OBX_EFFECT_OK:
        for (int i = 0, j = 0; i < n; i++)
            if (fresh[i] && rcs[j++] == OBX_EFFECT_REJECT)
                status[i] = OBX_APPLY_REJECTED;
        rc = 0;
        break;
    case OBX_EFFECT_POISON:
        snprintf(errstr, errsize, "poison in a batch of %d: %s", k, reason[0] ? reason : "refused by the effect");
        rc = OBX_DEDUP_REDO;
        break;
    default:
        snprintf(errstr, errsize, "effect asked for a retry: %s", reason[0] ? reason : "no reason given");
        break;
    }
out:
    free(todo);
    free(rcs);
    return rc;
}

/* The effect function on each new event of evs, in order, without savepoints. */
static int run_each_effect(PGconn *conn, const char *consumer, const obx_event_t *evs, int n,
                           const char *fresh, obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                           char *errstr, size_t errsize) {
    for (int i = 0; i < n; i++) {
        int rc = fresh[i] ? run_effect(conn, consumer, &evs[i], fn, arg, 0, errstr, errsize) : 0;
        if (rc < 0)
            return rc;
        if (rc == OBX_EFFECT_REJECT)
            status[i] = OBX_APPLY_REJECTED;
    }
    return 0;
}

/* One UPDATE for the batch's rejected events (they stay final in the inbox). */
static int mark_rejected(PGconn *conn, const char *consumer, const obx_event_t *evs, int n,
                         const obx_apply_status_t *status, char *errstr, size_t errsize) {
    obx_dedup_array_t ids = {0};
    const char *vals[2] = {consumer};
    int lens[2] = {0}, fmts[2] = {0, 1};
    PGresult *res;

    for (int i = 0; i < n; i++)
        if (status[i] == OBX_APPLY_REJECTED && obx_dedup_array_add(&ids, evs[i].event_id, -1) != 0) {
            snprintf(errstr, errsize, "out of memory");
            obx_dedup_array_free(&ids);
            return -1;
        }
    if (!ids.n)
        return 0;
    vals[1] = ids.data;
    lens[1] = ids.len;
    res = checked(obx_dedup_exec(conn, "UPDATE processed_events SET status = 'rejected'"
                                       " WHERE consumer = $1 AND event_id = ANY ($2::text[]::uuid[])",
                                 2, vals, lens, fmts), errstr, errsize);
    obx_dedup_array_free(&ids);
    PQclear(res);
    return res ? 0 : -1;
}

int obx_dedup_apply_batch_tx(PGconn *conn, const char *consumer, const obx_event_t *evs, int n,
                             obx_effect_fn fn, obx_batch_effect_fn batch_fn, void *arg,
                             obx_apply_status_t *status, char *errstr, size_t errsize) {
    char *fresh;
    int rc = -1;

    if (n < 1)
        return 0;
    for (int i = 0; i < n; i++)
        if (!obx_dedup_uuid_valid(evs[i].event_id)) {
            /* Parked on the careful pass only, so it is done (and logged) once. */
            snprintf(errstr, errsize, "message without a valid event_id");
            return OBX_DEDUP_REDO;
        }
    if (!(fresh = malloc((size_t)n))) {
        snprintf(errstr, errsize, "out of memory");
        return -1;
    }
    if (inbox_insert_batch(conn, consumer, evs, n, fresh, errstr, errsize) != 0)
        goto out;
    for (int i = 0; i < n; i++) {
        status[i] = fresh[i] ? OBX_APPLY_APPLIED : OBX_APPLY_DUPLICATE;
        if (!fresh[i])
            log_duplicate(consumer, &evs[i]);
    }
    rc = batch_fn ? run_batch_effect(conn, evs, n, fresh, batch_fn, arg, status, errstr, errsize)
                  : run_each_effect(conn, consumer, evs, n, fresh, fn, arg, status, errstr, errsize);
    if (rc == 0)
        rc = mark_rejected(conn, consumer, evs, n, status, errstr, errsize);
out:
    free(fresh);
    return rc;
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
        OBX_LOG(OBX_LOG_INFO, "compensation_before_original",
                "compensation before its original: empty rollback, original will be skipped",
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

/* Runs a DELETE of at most batch rows ($1 consumer, $2 seconds, $3 batch)
 * until one deletes fewer: each its own transaction, no long lock on a hot
 * table. Returns the rows deleted or -1. */
static long delete_batches(PGconn *conn, const char *sql, const char *consumer, long secs_v, int batch,
                           char *errstr, size_t errsize) {
    char secs[24], lim[16];
    const char *vals[3] = {consumer, secs, lim};
    long total = 0;
    int n;

    snprintf(secs, sizeof secs, "%ld", secs_v);
    snprintf(lim, sizeof lim, "%d", batch);
    do {
        PGresult *res = run(conn, sql, 3, vals, errstr, errsize);
        if (!res)
            return -1;
        n = atoi(PQcmdTuples(res));
        PQclear(res);
        total += n;
    } while (n == batch);
    return total;
}

long obx_dedup_cleanup(PGconn *conn, const char *consumer, long retention_s, int batch,
                       char *errstr, size_t errsize) {
    return delete_batches(conn,
        "DELETE FROM processed_events WHERE ctid = ANY (ARRAY("
        " SELECT ctid FROM processed_events WHERE consumer = $1"
        " AND processed_at < now() - make_interval(secs => $2::bigint) LIMIT $3))",
        consumer, retention_s, batch, errstr, errsize);
}

long obx_dedup_cleanup_dead_letters(PGconn *conn, const char *consumer, long retention_s, int batch,
                                    char *errstr, size_t errsize) {
    return delete_batches(conn,
        "DELETE FROM dead_letters WHERE id = ANY (ARRAY("
        " SELECT id FROM dead_letters WHERE consumer = $1"
        " AND created_at < now() - make_interval(secs => $2::bigint) ORDER BY id LIMIT $3))",
        consumer, retention_s, batch, errstr, errsize);
}

long obx_dedup_forget_gone(PGconn *conn, const char *consumer, long gone_s, int batch, char *errstr,
                           size_t errsize) {
    /* The offsets of names not seen for gone_s first; then the inbox rows
     * and dead letters of names left without offsets, as old. */
    static const char *const sql[] = {
        "DELETE FROM consumer_offsets WHERE ctid = ANY (ARRAY("
        " SELECT ctid FROM consumer_offsets WHERE consumer <> $1"
        " AND updated_at < now() - make_interval(secs => $2::bigint) LIMIT $3))",
        "DELETE FROM processed_events WHERE ctid = ANY (ARRAY("
        " SELECT p.ctid FROM processed_events p WHERE p.consumer <> $1"
        " AND p.processed_at < now() - make_interval(secs => $2::bigint)"
        " AND NOT EXISTS (SELECT 1 FROM consumer_offsets o WHERE o.consumer = p.consumer) LIMIT $3))",
        "DELETE FROM dead_letters WHERE id = ANY (ARRAY("
        " SELECT d.id FROM dead_letters d WHERE d.consumer <> $1"
        " AND d.created_at < now() - make_interval(secs => $2::bigint)"
        " AND NOT EXISTS (SELECT 1 FROM consumer_offsets o WHERE o.consumer = d.consumer) ORDER BY d.id LIMIT $3))",
    };
    const char *vals[1] = {consumer};
    long total = 0;

    /* This consumer is alive, idle or not: its offsets must not look gone. */
    if (run_ok(conn, "UPDATE consumer_offsets SET updated_at = now() WHERE consumer = $1", 1, vals, errstr,
               errsize) != 0)
        return -1;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        long n = delete_batches(conn, sql[i], consumer, gone_s, batch, errstr, errsize);
        if (n < 0)
            return -1;
        total += n;
    }
    return total;
}
