/* Latency: steady writers at fixed rates, and single inserts that wake a
 * sleeping relay (idle). BENCHMARKS.md, "steady" and "idle". */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pg_type oids of the inserts' parameters. */
#define TEXTOID 25
#define BYTEAOID 17

/* One committed insert: its id and inserting xid, the wall-clock time its
 * commit had returned, and its round trip (insert and commit). */
typedef struct {
    char id[24], xid[16];
    double done, own_ms;
} sample_t;

/* One event through a fresh relay: the first message to a topic waits for
 * librdkafka's 1 s topic scan, which is not steady state. */
static int warm_up(PGconn *c, const bench_child_t *relay) {
    double id, done;
    if (db_num(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                  " VALUES ('bench', 'warm-up', 'WarmUp', '') RETURNING id", NULL, &id) != 0)
        return -1;
    return wait_marked(c, relay, id, 30, &done);
}

/* What outbox_enqueue does, returning what the latency needs. */
static int prepare_insert(PGconn *c) {
    const Oid types[2] = {TEXTOID, BYTEAOID};
    return db_check(c, PQprepare(c, "insert", "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                                 " VALUES ('bench', $1, 'BenchEvent', $2) RETURNING id, xmin", 2, types), "prepare");
}

/* One insert, its sample into s; the first failure counted in *failed is logged. */
static int insert_one(const bench_t *b, PGconn *c, const char *agg, const char *payload, sample_t *s,
                      long *failed) {
    const char *vals[2] = {agg, payload};
    const int lens[2] = {0, b->payload}, fmts[2] = {0, 1};
    double sent = bench_now();
    PGresult *ins = PQexecPrepared(c, "insert", 2, vals, lens, fmts, 0);
    int ok = PQresultStatus(ins) == PGRES_TUPLES_OK;

    if (ok) {
        s->own_ms = (bench_now() - sent) * 1000;
        s->done = bench_wall();
        snprintf(s->id, sizeof s->id, "%s", PQgetvalue(ins, 0, 0));
        snprintf(s->xid, sizeof s->xid, "%s", PQgetvalue(ins, 0, 1));
    } else if ((*failed)++ == 0) {
        bench_log("insert: %s", PQresultErrorMessage(ins));
    }
    PQclear(ins);
    return ok ? 0 : -1;
}

/* Steady writer k of T writes events k, k+T, ..., event i due at start +
 * i/rate; one that fell behind catches up without sleeping. */
typedef struct {
    const bench_t *b;
    int index;
    double rate, start, end;
    double finished;       /* a writer that fell behind ends after end */
    long failed, n, cap;
    sample_t *s;           /* every committed event's */
    pthread_t thread;
} writer_t;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void *writer_main(void *arg) {
    writer_t *w = arg;
    const bench_t *b = w->b;
    PGconn *c = db_open(b, BENCH_DB);
    char *payload = malloc((size_t)b->payload);

    if (!c || !payload || prepare_insert(c) != 0)
        goto out;
    for (int i = 0; i < b->payload; i++)
        payload[i] = (char)('a' + (i + w->index) % 26);
    for (long i = w->index; w->n < w->cap && PQstatus(c) == CONNECTION_OK; i += b->writers) {
        double due = w->start + (double)i / w->rate;
        char agg[32];

        if (due >= w->end || bench_stop)
            break;
        bench_sleep_until(due);
        snprintf(agg, sizeof agg, "agg-%d", (int)(splitmix64((uint64_t)i) % (uint64_t)b->aggregates));
        w->n += insert_one(b, c, agg, payload, &w->s[w->n], &w->failed) == 0;
    }
    w->finished = bench_now();
out:
    free(payload);
    PQfinish(c);
    return NULL;
}

/* Runs the writers at rate for --duration s: their *n samples in *s (to
 * free), the inserts that failed and the seconds they took. */
static int run_writers(bench_t *b, double rate, sample_t **s, long *n, long *failed, double *secs) {
    writer_t *w = calloc((size_t)b->writers, sizeof *w);
    /* Half a second for every writer to connect before the first event is due. */
    double start = bench_now() + 0.5;
    long per = (long)(rate * b->duration_s) / b->writers + 2;
    int started = 0;

    *s = malloc((size_t)(per * b->writers) * sizeof **s);
    *n = *failed = 0;
    *secs = b->duration_s;
    for (; w && *s && started < b->writers; started++) {
        w[started] = (writer_t){.b = b, .index = started, .rate = rate, .start = start,
                                .end = start + b->duration_s, .cap = per, .s = *s + started * per};
        if (pthread_create(&w[started].thread, NULL, writer_main, &w[started]) != 0) {
            bench_log("pthread_create failed");
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        *failed += w[i].failed;
        if (w[i].finished - start > *secs)
            *secs = w[i].finished - start;
        memmove(*s + *n, w[i].s, (size_t)w[i].n * sizeof **s);
        *n += w[i].n;
    }
    free(w);
    return started == b->writers ? 0 : -1;
}

/* An array literal of the n samples' field at off: a double when is_num, else a string. */
static char *literal(const sample_t *s, long n, size_t off, int is_num) {
    char *a = malloc((size_t)n * 24 + 3), *p = a;

    if (!a)
        return NULL;
    *p++ = '{';
    for (long i = 0; i < n; i++) {
        const char *f = (const char *)&s[i] + off;
        p += is_num ? sprintf(p, "%s%.6f", i ? "," : "", *(const double *)f) : sprintf(p, "%s%s", i ? "," : "", f);
    }
    strcpy(p, "}");
    return a;
}

static const char *const pct_names[2] = {"p50", "p99"};
static const double pcts[2] = {0.5, 0.99};

/* The sample latencies, by percentile (p50, p99): commit-to-mark (sent_at
 * minus the commit timestamp of the inserting xid, else created_at), the
 * count measured, visible-to-mark (sent_at minus when the writer's commit
 * had returned), and the inserts' own round trips. */
typedef struct {
    double commit[2], n, visible[2], own[2];
} lat_t;

static int sample_latencies(const bench_t *b, PGconn *c, const sample_t *s, long n, lat_t *lat) {
    char *ids = literal(s, n, offsetof(sample_t, id), 0), *xids = literal(s, n, offsetof(sample_t, xid), 0);
    char *done = literal(s, n, offsetof(sample_t, done), 1), sql[700];
    const char *params[3] = {ids, xids, done};
    double *own = malloc((size_t)n * sizeof *own + 1), row[5];
    int rc = -1;

    snprintf(sql, sizeof sql,
             "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY d), percentile_disc(0.99) WITHIN GROUP (ORDER BY d),"
             " count(d),"
             " percentile_disc(0.5) WITHIN GROUP (ORDER BY v), percentile_disc(0.99) WITHIN GROUP (ORDER BY v)"
             " FROM (SELECT extract(epoch FROM o.sent_at - %s) * 1000 AS d,"
             "              (extract(epoch FROM o.sent_at) - u.t) * 1000 AS v"
             "       FROM unnest($1::bigint[], $2::xid[], $3::float8[]) AS u(id, x, t)"
             "       JOIN outbox o ON o.id = u.id) s",
             b->commit_ts ? "pg_xact_commit_timestamp(u.x)" : "o.created_at");
    if (ids && xids && done && own && db_row(c, sql, 3, params, row, 5) == 0) {
        *lat = (lat_t){.commit = {row[0], row[1]}, .n = row[2], .visible = {row[3], row[4]}};
        for (long i = 0; i < n; i++)
            own[i] = s[i].own_ms;
        for (int i = 0; i < 2; i++)
            lat->own[i] = bench_pick(own, (size_t)n, pcts[i]);
        rc = 0;
    }
    free(own);
    free(ids);
    free(xids);
    free(done);
    return rc;
}

/* Commit-to-mark rows beside the inserts' own round trips (the p99 held to
 * target ms unless 0), then visible-to-mark rows; figures start with pre,
 * end with post. */
static void latency_rows(bench_t *b, const char *sc, const char *pre, const char *post, const lat_t *lat,
                         double target) {
    bench_row_t r[4];

    for (int i = 0; i < 2; i++) {
        r[i] = (bench_row_t){.value = lat->commit[i], .unit = "ms", .ref_name = "ms writers' insert+commit",
                             .ref = lat->own[i], .target_op = i == 1 && target > 0 ? '<' : 0, .target = target};
        snprintf(r[i].figure, sizeof r[i].figure, "%s%s-to-mark %s%s", pre, b->commit_ts ? "commit" : "insert",
                 pct_names[i], post);
        r[2 + i] = (bench_row_t){.value = lat->visible[i], .unit = "ms", .ref_name = "ms commit-to-mark",
                                 .ref = lat->commit[i]};
        snprintf(r[2 + i].figure, sizeof r[2 + i].figure, "  %scommit returned-to-mark %s", pre, pct_names[i]);
    }
    bench_rows(b, sc, r, 4);
}

/* One steady rate: the writers, then every row marked, then its rows. */
static int steady_rate(bench_t *b, PGconn *c, const bench_child_t *relay, int rate) {
    double to, done, secs;
    long n, failed;
    char pre[40];
    sample_t *s;
    lat_t lat;
    int bad;

    bench_log("steady: %d events/s for %d s", rate, b->duration_s);
    bad = run_writers(b, rate, &s, &n, &failed, &secs) != 0 ||
          db_num(c, "SELECT coalesce(max(id), 0) FROM outbox", NULL, &to) != 0 ||
          wait_marked(c, relay, to, 60, &done) != 0 || sample_latencies(b, c, s, n, &lat) != 0;
    free(s);
    if (bad)
        return -1;
    if (failed > 0)
        bench_note(b, "steady %d/s: %ld inserts failed", rate, failed);
    if (lat.n != (double)n)
        bench_note(b, "steady %d/s: %.0f rows measured, %ld committed", rate, lat.n, n);
    bench_row_t achieved = {.value = (double)n / secs, .unit = "ev/s", .ref_name = "ev/s offered", .ref = rate};
    snprintf(achieved.figure, sizeof achieved.figure, "%d/s: write rate achieved", rate);
    bench_rows(b, "steady", &achieved, 1);
    snprintf(pre, sizeof pre, "%d/s: ", rate);
    latency_rows(b, "steady", pre, "", &lat, rate == 1000 ? 10 : 0);
    return 0;
}

int scenario_steady(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1};

    if (!c || relay_start(b, &relay, NULL) != 0 || warm_up(c, &relay) != 0 || relay_waiting(c) != 0)
        return scenario_end(&relay, c, -1);
    for (int k = 0; k < b->nrates; k++)
        if (steady_rate(b, c, &relay, b->rates[k]) != 0)
            return scenario_end(&relay, c, -1);
    /* The target's steady footprint; a drain's peak is bounded by relay.max_inflight instead. */
    bench_row_t rss = {.figure = "relay peak RSS (VmHWM), all rates",
                       .value = proc_hwm_mb(relay.pid), .unit = "MB", .ref_name = "MB (b) connected producer",
                       .ref = b->raw_producer_hwm_mb, .target_op = '<', .target = 20};
    bench_rows(b, "steady", &rss, 1);
    return scenario_end(&relay, c, relay_stop(&relay));
}

int scenario_idle(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1};
    sample_t *s = malloc((size_t)b->idle_samples * sizeof *s);
    char *payload = malloc((size_t)b->payload);
    lat_t lat;
    long n = 0, failed = 0;
    int rc = -1;

    if (!c || !s || !payload || prepare_insert(c) != 0 || relay_start(b, &relay, NULL) != 0 ||
        warm_up(c, &relay) != 0)
        goto out;
    memset(payload, 'x', (size_t)b->payload);
    bench_log("idle: %d single inserts, each once the relay sleeps", b->idle_samples);
    for (; n < b->idle_samples && !bench_stop; n++) {
        char agg[32];

        if (relay_waiting(c) != 0)
            goto out;
        /* The flag is set before the relay's last re-check: give it time to
         * finish that and sleep on LISTEN, so each insert wakes an idle relay. */
        bench_sleep_ms(20);
        snprintf(agg, sizeof agg, "agg-%ld", n % b->aggregates);
        if (insert_one(b, c, agg, payload, &s[n], &failed) != 0 ||
            db_wait(c, "SELECT (sent_at IS NOT NULL)::int FROM outbox WHERE id = $1::bigint", s[n].id, 1, 1, 10,
                    NULL, NULL) != 0)
            goto out;
    }
    if (bench_stop || sample_latencies(b, c, s, n, &lat) != 0 || relay_stop(&relay) != 0)
        goto out;
    latency_rows(b, "idle", "", ", relay asleep", &lat, 5);
    rc = 0;
out:
    free(s);
    free(payload);
    return scenario_end(&relay, c, rc);
}
