/* The raw limits every relay figure is set against, measured in the same
 * run: (a) a bare SELECT + UPDATE loop, (b) a bare idempotent producer, and
 * their single-item round trips (BENCHMARKS.md, "raw"). */
#include "bench.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define RAW_BATCH 1000
#define RAW_SINGLES 200

typedef struct {
    int ok;
    long n;                 /* rows or messages in the bulk phase */
    double secs;            /* bulk phase */
    double cpu_s;           /* this process, bulk phase */
    double backend_cpu_s;   /* its PostgreSQL backend, bulk phase; NAN unknown */
    double single_p50_ms, single_p99_ms;
    double first_ms;        /* (b) only: rd_kafka_new -> first acknowledgement */
    double idle_hwm_mb;     /* (b) only: peak RSS before the bulk phase */
    char err[512];
} raw_result_t;

typedef void (*raw_fn)(bench_t *b, raw_result_t *r);

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static const char sel_sql[] =
    "SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at"
    " FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL AND id > $2::bigint"
    " ORDER BY id LIMIT $1::int";
static const char upd_sql[] = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])";

/* One SELECT + UPDATE round: claims up to limit unsent rows in id order past
 * *after (what a relay must fetch to publish them; the schema indexes only
 * the id, so a loop goes on from its last id) and marks them sent. Returns
 * the rows marked, or -1 (logged). ids is scratch space for limit ids. */
static int claim_mark(PGconn *c, int limit, long long *after, char *ids) {
    char lim[16], from[24];
    const char *p1[2] = {lim, from}, *p2[1] = {ids};
    PGresult *res;
    size_t len = 0;
    int n;

    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(from, sizeof from, "%lld", *after);
    res = PQexecParams(c, sel_sql, 2, NULL, p1, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_check(c, res, "select");
        return -1;
    }
    n = PQntuples(res);
    ids[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(ids + len, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
    ids[len++] = '}';
    ids[len] = '\0';
    if (n > 0)
        *after = atoll(PQgetvalue(res, n - 1, 0));
    PQclear(res);
    if (n == 0)
        return 0;
    return db_check(c, PQexecParams(c, upd_sql, 1, NULL, p2, NULL, NULL, 0), "update") == 0 ? n : -1;
}

static void raw_pg(bench_t *b, raw_result_t *r) {
    PGconn *c = db_open(b, BENCH_DB);
    char *ids = malloc((size_t)RAW_BATCH * 21 + 3);
    double lat[RAW_SINGLES], t0, cpu0, bcpu0;
    pid_t backend;
    long long after = 0;
    int n;

    if (!c || !ids) {
        snprintf(r->err, sizeof r->err, "no connection or no memory");
        goto out;
    }
    backend = PQbackendPID(c);
    /* The relay's session runs with synchronous_commit off: same here. */
    if (db_exec(c, "SET synchronous_commit = off") != 0)
        goto out;
    /* Single rows first: the floor of claiming and marking one event. */
    for (int i = 0; i < RAW_SINGLES; i++) {
        double s0 = bench_now();
        if (claim_mark(c, 1, &after, ids) != 1)
            goto out;
        lat[i] = (bench_now() - s0) * 1000.0;
    }
    t0 = bench_now();
    cpu0 = self_cpu_s();
    bcpu0 = db_backend_cpu_s(b, &backend, 1);
    while ((n = claim_mark(c, RAW_BATCH, &after, ids)) > 0 && !bench_stop)
        r->n += n;
    if (n != 0)
        goto out;
    r->secs = bench_now() - t0;
    r->cpu_s = self_cpu_s() - cpu0;
    r->backend_cpu_s = db_backend_cpu_s(b, &backend, 1) - bcpu0;
    r->single_p99_ms = bench_pick(lat, RAW_SINGLES, 0.99);
    r->single_p50_ms = bench_pick(lat, RAW_SINGLES, 0.50);
    r->ok = r->n > 0;
out:
    free(ids);
    PQfinish(c);
}

typedef struct {
    long ok, failed;
    char err[128];
} raw_dr_t;

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    raw_dr_t *d = opaque;
    (void)rk;
    if (m->err) {
        if (d->failed++ == 0)
            snprintf(d->err, sizeof d->err, "%s", rd_kafka_err2str(m->err));
    } else {
        d->ok++;
    }
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, raw_result_t *r) {
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK)
        return 0;
    snprintf(r->err, sizeof r->err, "%s: %s", k, err);
    return -1;
}

static rd_kafka_resp_err_t raw_send(rd_kafka_t *rk, const char *topic, long i, const bench_t *b,
                                    const char *payload) {
    char key[32];
    int klen = snprintf(key, sizeof key, "agg-%ld", i % b->aggregates);
    return rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, (size_t)klen),
                             RD_KAFKA_V_VALUE((void *)payload, (size_t)b->payload),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
}

static void raw_kafka(bench_t *b, raw_result_t *r) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    raw_dr_t dr = {0, 0, ""};
    char topic[128], qmax[32], err[256];
    char *payload = malloc((size_t)b->payload);
    double lat[RAW_SINGLES], t0, cpu0;
    long sent = 0;

    snprintf(topic, sizeof topic, "%s.raw", b->topic_prefix);
    snprintf(qmax, sizeof qmax, "%ld", b->events + 1000);
    if (!payload)
        goto out;
    for (int i = 0; i < b->payload; i++)
        payload[i] = (char)('a' + i % 26);
    /* linger.ms 0 and no Nagle like the relay's defaults, so (b1) is the floor the relay works against. */
    if (conf_set(conf, "bootstrap.servers", b->bootstrap, r) || conf_set(conf, "log_level", "3", r) ||
        conf_set(conf, "linger.ms", "0", r) || conf_set(conf, "socket.nagle.disable", "true", r) ||
        conf_set(conf, "queue.buffering.max.messages", qmax, r) ||
        conf_set(conf, "enable.idempotence", "true", r))
        goto out;
    rd_kafka_conf_set_opaque(conf, &dr);
    rd_kafka_conf_set_dr_msg_cb(conf, raw_dr);
    t0 = bench_now();
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        snprintf(r->err, sizeof r->err, "rd_kafka_new: %s", err);
        goto out;
    }
    conf = NULL; /* owned by rk */
    /* One message first: connection, producer id and the new topic's
     * metadata are start-up, not throughput (timed on their own, as the
     * relay's exec -> first mark is). Then single messages, one at a time. */
    for (int i = 0; i <= RAW_SINGLES && !bench_stop; i++) {
        double s0 = bench_now();
        long want = dr.ok + 1;
        if (raw_send(rk, topic, i, b, payload) != RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        while (dr.ok < want && dr.failed == 0 && bench_now() - s0 < 30)
            rd_kafka_poll(rk, 100);
        if (dr.ok < want)
            break;
        if (i > 0)
            lat[i - 1] = (bench_now() - s0) * 1000.0;
        else
            r->first_ms = (bench_now() - t0) * 1000.0;
    }
    if (dr.ok != RAW_SINGLES + 1) {
        snprintf(r->err, sizeof r->err, "single messages not acknowledged: %s", dr.err);
        goto out;
    }
    /* The bulk phase queues every message at once: the footprint of a
     * connected producer is the one before it. */
    r->idle_hwm_mb = proc_hwm_mb(getpid());
    t0 = bench_now();
    cpu0 = self_cpu_s();
    while (sent < b->events && !bench_stop) {
        rd_kafka_resp_err_t e = raw_send(rk, topic, sent, b, payload);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);
            continue;
        }
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(r->err, sizeof r->err, "produce: %s", rd_kafka_err2str(e));
            goto out;
        }
        if (++sent % 1000 == 0)
            rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    r->secs = bench_now() - t0;
    r->cpu_s = self_cpu_s() - cpu0;
    r->backend_cpu_s = NAN;
    r->n = dr.ok - (RAW_SINGLES + 1);
    r->single_p99_ms = bench_pick(lat, RAW_SINGLES, 0.99);
    r->single_p50_ms = bench_pick(lat, RAW_SINGLES, 0.50);
    r->ok = r->n == b->events && dr.failed == 0;
    if (!r->ok)
        snprintf(r->err, sizeof r->err, "%ld of %ld acknowledged, %ld failed: %s", r->n, b->events,
                 dr.failed, dr.err);
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rk)
        rd_kafka_destroy(rk);
    free(payload);
}

/* Runs fn in a forked child, so that its CPU and peak RSS are its own; the
 * result comes back through shared memory. */
static int run_child(bench_t *b, raw_fn fn, raw_result_t *out) {
    raw_result_t *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid;
    int st = -1;

    if (r == MAP_FAILED) {
        bench_log("mmap: %s", strerror(errno));
        return -1;
    }
    memset(r, 0, sizeof *r);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        fn(b, r);
        _exit(0);
    }
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
        continue;
    *out = *r;
    munmap(r, sizeof *r);
    if (st != 0 || !out->ok) {
        bench_log("raw limit failed: %s", st != 0 ? "the child died" : out->err[0] ? out->err : "(logged above)");
        return -1;
    }
    return 0;
}

/* Bare connect + LISTEN, the floor of the relay's start-up: median of 5. */
static double connect_floor_ms(const bench_t *b) {
    double v[5];
    size_t n = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = bench_now();
        PGconn *c = db_open(b, BENCH_DB);
        if (c && db_exec(c, "LISTEN outbox") == 0)
            v[n++] = (bench_now() - t0) * 1000.0;
        PQfinish(c);
    }
    return bench_pick(v, n, 0.5);
}

/* Loop (a) on a fresh backlog. No connection may cross the fork: the
 * child opens its own, and c is closed first. */
static int pg_loop(bench_t *b, PGconn *c, raw_result_t *pg) {
    double maxid;
    int ok = c && db_exec(c, "TRUNCATE outbox") == 0 && db_prefill(b, c, b->events + RAW_SINGLES, &maxid) == 0;

    PQfinish(c);
    return ok ? run_child(b, raw_pg, pg) : -1;
}

double raw_pg_rate(bench_t *b) {
    raw_result_t pg;
    return pg_loop(b, db_open(b, BENCH_DB), &pg) == 0 ? (double)pg.n / pg.secs : NAN;
}

int scenario_raw(bench_t *b) {
    raw_result_t pg, kafka;

    bench_log("raw: (a) bare SELECT %d + UPDATE loop on %ld rows", RAW_BATCH, b->events + RAW_SINGLES);
    if (pg_loop(b, db_reset(b), &pg) != 0)
        return -1;
    bench_log("raw: (b) bare idempotent producer, %ld messages", b->events);
    if (run_child(b, raw_kafka, &kafka) != 0)
        return -1;
    b->raw_pg_rate = (double)pg.n / pg.secs;
    b->raw_kafka_rate = (double)kafka.n / kafka.secs;
    b->raw_cpu_100k = (pg.cpu_s / (double)pg.n + kafka.cpu_s / (double)kafka.n) * 1e5;
    b->raw_backend_cpu_100k = pg.backend_cpu_s / (double)pg.n * 1e5;
    b->raw_producer_hwm_mb = kafka.idle_hwm_mb;
    b->raw_first_ack_ms = kafka.first_ms;
    b->raw_connect_ms = connect_floor_ms(b);

    bench_row_t rows[] = {
        {.figure = "(a) bare SELECT 1000 + UPDATE loop", .value = b->raw_pg_rate,
         .unit = "rows/s"},
        {.figure = "(a) its PostgreSQL backend CPU per 100k",
         .value = b->raw_backend_cpu_100k, .unit = "s"},
        {.figure = "(a1) 1 row: SELECT + UPDATE round trip p50",
         .value = pg.single_p50_ms, .unit = "ms"},
        {.figure = "(b) bare idempotent producer, keyed", .value = b->raw_kafka_rate,
         .unit = "msgs/s"},
        {.figure = "(b) producer process CPU per 100k",
         .value = kafka.cpu_s / (double)kafka.n * 1e5, .unit = "s"},
        {.figure = "(b) producer peak RSS, connected, before its bulk",
         .value = kafka.idle_hwm_mb, .unit = "MB"},
        {.figure = "(b0) rd_kafka_new -> first ack, new topic",
         .value = kafka.first_ms, .unit = "ms"},
        {.figure = "(b1) 1 message: produce -> ack p50",
         .value = kafka.single_p50_ms, .unit = "ms"},
        {.figure = "(b1) 1 message: produce -> ack p99",
         .value = kafka.single_p99_ms, .unit = "ms"},
        {.figure = "bare libpq connect + LISTEN (median of 5)",
         .value = b->raw_connect_ms, .unit = "ms"},
    };
    BENCH_ROWS(b, "raw", rows);
    return 0;
}
