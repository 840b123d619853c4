/* The relay's scenarios: drain, steady latency, idle wake, writer cost and
 * the dedup consumer. Each starts from a freshly created database. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* pg_type oids of the writers' parameters. */
#define TEXTOID 25
#define BYTEAOID 17

/* Waits until every row up to maxid is marked. The newest row is polled
 * first (one primary-key lookup), then the exact count. *done_at is when the
 * query that saw none left was sent: at most one poll late. */
static int wait_marked(PGconn *c, const bench_child_t *relay, double maxid, double timeout_s,
                       double *done_at) {
    double deadline = bench_now() + timeout_s, v;
    char id[32];
    const char *p[1] = {id};
    int newest = 0;

    snprintf(id, sizeof id, "%.0f", maxid);
    while (!bench_stop && bench_now() < deadline) {
        double asked = bench_now();
        if (!newest) {
            if (db_num(c, "SELECT (sent_at IS NOT NULL)::int FROM outbox WHERE id = $1::bigint", 1, p,
                       &v) != 0)
                return -1;
            newest = v > 0;
        }
        if (newest) {
            if (db_num(c, "SELECT count(*) FROM outbox WHERE id <= $1::bigint"
                          " AND sent_at IS NULL AND parked_at IS NULL", 1, p, &v) != 0)
                return -1;
            if (v == 0) {
                *done_at = asked;
                return 0;
            }
        }
        if (relay && proc_exited(relay->pid)) {
            bench_log("the relay died");
            bench_log_tail(relay->log);
            return -1;
        }
        bench_sleep_ms(5);
    }
    if (!bench_stop)
        bench_log("rows up to id %s not all marked within %.0f s", id, timeout_s);
    return -1;
}

static double drain_timeout(long rows) {
    return 60.0 + (double)rows / 1000.0;
}

/* The first and last marks (sent_at, the database's clock, epoch seconds)
 * and how many rows the first one marked: the publishing rate leaves out
 * the start-up before the first mark. */
static int mark_span(PGconn *c, double *first, double *last, double *first_n) {
    if (db_num(c, "SELECT extract(epoch FROM min(sent_at)) FROM outbox", 0, NULL, first) != 0 ||
        db_num(c, "SELECT extract(epoch FROM max(sent_at)) FROM outbox", 0, NULL, last) != 0 ||
        db_num(c, "SELECT count(*) FROM outbox WHERE sent_at = (SELECT min(sent_at) FROM outbox)", 0, NULL,
               first_n) != 0)
        return -1;
    return 0;
}

/* One drain by a freshly started relay of a fresh --events backlog. */
typedef struct {
    double rate;           /* events/s, exec -> all marked */
    double publishing;     /* events/s, first mark -> last mark */
    double cpu, bcpu, mcpu; /* relay, its backends, the mock: CPU seconds */
    double hwm;            /* relay peak RSS, MB */
    double secs, cold_ms;  /* exec -> all marked; exec -> first mark */
} drain_t;

static int drain_once(bench_t *b, PGconn *c, drain_t *o) {
    bench_child_t relay = {.pid = -1};
    double maxid, t_db0, done, first, last, first_n;
    pid_t backends[4];
    int nb, rc = -1;

    bench_log("drain: pre-filling %ld rows", b->events);
    if (db_exec(c, "TRUNCATE outbox") != 0 || db_prefill(b, c, b->events, &maxid) != 0 ||
        db_num(c, "SELECT extract(epoch FROM clock_timestamp())", 0, NULL, &t_db0) != 0)
        goto out;
    bench_log("drain: relay draining");
    o->mcpu = b->mock_pid > 0 ? proc_cpu_s(b->mock_pid) : NAN;
    if (relay_start(b, &relay) != 0 || wait_marked(c, &relay, maxid, drain_timeout(b->events), &done) != 0)
        goto out;
    /* Read before stopping it: the figures are the drain's, not the shutdown's. */
    o->cpu = proc_cpu_s(relay.pid);
    o->hwm = proc_hwm_mb(relay.pid);
    nb = db_backend_pids(c, "outbox-relay", backends, 4); /* claims and marks */
    o->bcpu = db_backend_cpu_s(b, backends, nb);
    o->mcpu = b->mock_pid > 0 ? proc_cpu_s(b->mock_pid) - o->mcpu : NAN;
    if (relay_stop(&relay) != 0 || mark_span(c, &first, &last, &first_n) != 0)
        goto out;
    o->secs = done - relay.started;
    o->rate = (double)b->events / o->secs;
    o->publishing = last > first ? ((double)b->events - first_n) / (last - first) : NAN;
    o->cold_ms = (first - t_db0) * 1000;
    rc = 0;
out:
    if (relay.pid > 0)
        proc_reap(relay.pid, SIGKILL, 5000);
    return rc;
}

/* Pairs of loop (a) and a relay drain, one after the other: a drain lasts
 * under a second, and on a shared box one pair's ratio swung from 0.9x to
 * 1.7x between runs a minute apart. The figures are the medians; the
 * footprint is the median pair's. */
#define DRAIN_PAIRS 3

static int cmp_drain(const void *x, const void *y) {
    const drain_t *a = x, *c = y;
    return a->rate < c->rate ? -1 : a->rate > c->rate;
}

int scenario_drain(bench_t *b) {
    PGconn *c = db_reset(b);
    drain_t d[DRAIN_PAIRS], *m;
    double raw[DRAIN_PAIRS], ratio[DRAIN_PAIRS], raw_med;
    bench_row_t *r;
    int rc = -1;

    if (!c)
        return -1;
    for (int k = 0; k < DRAIN_PAIRS; k++) {
        bench_log("drain: pair %d of %d, loop (a) then the relay", k + 1, DRAIN_PAIRS);
        raw[k] = raw_pg_rate(b);
        if (isnan(raw[k]) || drain_once(b, c, &d[k]) != 0)
            goto out;
        ratio[k] = d[k].rate / raw[k];
    }
    qsort(d, DRAIN_PAIRS, sizeof d[0], cmp_drain);
    m = &d[DRAIN_PAIRS / 2];
    raw_med = bench_pick(raw, DRAIN_PAIRS, 0.5);

    r = bench_row(b, "drain", "events_per_s", "events/s, relay exec -> all marked (median)", m->rate, "ev/s");
    bench_row_ref(r, "rows/s (a) median, same pairs", raw_med);
    bench_row_target(r, '>', 1, 1.2);
    bench_row(b, "drain", "pair_ratio_min", "  lowest pair's ratio, relay / loop (a)",
              bench_pick(ratio, DRAIN_PAIRS, 0), "x");
    bench_row(b, "drain", "pair_ratio_max", "  highest pair's ratio", bench_pick(ratio, DRAIN_PAIRS, 1), "x");
    r = bench_row(b, "drain", "publishing_events_per_s", "events/s, first mark -> last mark", m->publishing,
                  "ev/s");
    bench_row_ref(r, "rows/s (a) median, same pairs", raw_med);
    r = bench_row(b, "drain", "publishing_vs_producer", "  the same against the bare producer", m->publishing,
                  "ev/s");
    bench_row_ref(r, "msg/s (b) bare producer", b->raw_kafka_rate);
    /* Loop (a) leaves Kafka out; the relay shares the cores with the broker. */
    r = bench_row(b, "drain", "busy_cores", "  CPU busy: relay + its backends + mock broker",
                  (m->cpu + m->bcpu + m->mcpu) / m->secs, "cores");
    bench_row_ref(r, "cores on this machine", (double)sysconf(_SC_NPROCESSORS_ONLN));
    bench_row(b, "drain", "mock_cpu_s_per_100k", "  the mock broker's CPU per 100k",
              m->mcpu / (double)b->events * 1e5, "s");

    /* Bounded by relay.max_inflight (rows produced, not yet acknowledged):
     * the target is the steady scenario's. */
    r = bench_row(b, "footprint", "relay_peak_rss_mb", "relay peak RSS (VmHWM) after the drain", m->hwm, "MB");
    bench_row_ref(r, "MB (b) connected producer", b->raw_producer_hwm_mb);
    r = bench_row(b, "footprint", "relay_cpu_s_per_100k", "relay CPU (utime+stime) per 100k events",
                  m->cpu / (double)b->events * 1e5, "s");
    bench_row_ref(r, "s (a)+(b) client CPU", b->raw_cpu_100k);
    r = bench_row(b, "footprint", "relay_backend_cpu_s_per_100k", "relay's PostgreSQL backends' CPU per 100k",
                  m->bcpu / (double)b->events * 1e5, "s");
    bench_row_ref(r, "s (a) loop's backend", b->raw_backend_cpu_100k);
    r = bench_row(b, "footprint", "cold_first_mark_ms", "cold start: relay exec -> first row marked", m->cold_ms,
                  "ms");
    bench_row_ref(r, "ms (b0) new -> first ack", b->raw_first_ack_ms);
    rc = 0;
out:
    PQfinish(c);
    return rc;
}

/* One event through a freshly started relay, so that what follows measures
 * steady state: the first message to a topic waits for librdkafka's periodic
 * (1 s) topic scan before its metadata is requested. */
static int warm_up(PGconn *c, const bench_child_t *relay) {
    double id, done;
    if (db_num(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                  " VALUES ('bench', 'warm-up', 'WarmUp', '') RETURNING id", 0, NULL, &id) != 0)
        return -1;
    return wait_marked(c, relay, id, 30, &done);
}

/* Latency samples as three array literals: ids, inserting xids, and the
 * wall-clock time at which each writer's commit had returned. */
typedef struct {
    char *ids, *xids, *done;
    size_t ids_len, xids_len, done_len, cap;
} samples_t;

/* Room for n samples: every id (up to 20 digits), xid (10) and time
 * (17), with commas and braces. */
static int samples_init(samples_t *a, size_t n) {
    a->cap = n * 24 + 8;
    a->ids = malloc(a->cap);
    a->xids = malloc(a->cap);
    a->done = malloc(a->cap);
    a->ids_len = a->xids_len = a->done_len = 1;
    if (!a->ids || !a->xids || !a->done)
        return -1;
    strcpy(a->ids, "{");
    strcpy(a->xids, "{");
    strcpy(a->done, "{");
    return 0;
}

static void samples_free(samples_t *a) {
    free(a->ids);
    free(a->xids);
    free(a->done);
}

/* Appends item to one list. */
static void list_add(char *list, size_t *len, const char *item) {
    *len += (size_t)sprintf(list + *len, "%s%s", *len > 1 ? "," : "", item);
}

/* Drops a sample that does not fit: the count read back shows it. */
static void samples_add(samples_t *a, const char *id, const char *xid, const char *done) {
    if (a->ids_len + strlen(id) + 3 > a->cap || a->xids_len + strlen(xid) + 3 > a->cap ||
        a->done_len + strlen(done) + 3 > a->cap)
        return;
    list_add(a->ids, &a->ids_len, id);
    list_add(a->xids, &a->xids_len, xid);
    list_add(a->done, &a->done_len, done);
}

/* One sample: the insert's result (id, xid) and the time its commit returned. */
static void samples_add_insert(samples_t *a, const PGresult *ins) {
    char done[32];
    snprintf(done, sizeof done, "%.6f", bench_wall());
    samples_add(a, PQgetvalue(ins, 0, 0), PQgetvalue(ins, 0, 1), done);
}

/* Steady writers: thread k writes events k, k+T, k+2T, ..., event i being
 * due at start + i/rate. A thread that fell behind catches up without
 * sleeping, so the offered rate holds on average. */
typedef struct {
    const bench_t *b;
    int index;
    double rate, start, end;
    double finished;       /* a writer that fell behind ends after end */
    long committed, failed;
    samples_t samples;     /* every committed event's id and xid */
    double *lat;           /* each committed insert's round trip, ms */
    long nlat, caplat;
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
    const Oid types[2] = {TEXTOID, BYTEAOID};
    PGconn *c = db_open(b, BENCH_DB);
    char *payload = malloc((size_t)b->payload);
    PGresult *res = NULL;

    if (!c || !payload)
        goto out;
    /* What outbox_enqueue does, returning what the latency needs. */
    res = PQprepare(c, "enqueue",
                    "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                    " VALUES ('bench', $1, 'BenchEvent', $2) RETURNING id, xmin",
                    2, types);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        bench_log("prepare: %s", PQresultErrorMessage(res));
        goto out;
    }
    for (int i = 0; i < b->payload; i++)
        payload[i] = (char)('a' + (i + w->index) % 26);
    for (long i = w->index;; i += b->writers) {
        double due = w->start + (double)i / w->rate;
        char agg[32];
        const char *vals[2] = {agg, payload};
        const int lens[2] = {0, b->payload}, fmts[2] = {0, 1};
        PGresult *ins;
        double sent;

        if (due >= w->end || bench_stop)
            break;
        bench_sleep_until(due);
        snprintf(agg, sizeof agg, "agg-%d", (int)(splitmix64((uint64_t)i) % (uint64_t)b->aggregates));
        sent = bench_now();
        ins = PQexecPrepared(c, "enqueue", 2, vals, lens, fmts, 0);
        if (PQresultStatus(ins) == PGRES_TUPLES_OK) {
            w->committed++;
            samples_add_insert(&w->samples, ins);
            if (w->nlat < w->caplat)
                w->lat[w->nlat++] = (bench_now() - sent) * 1000;
        } else if (w->failed++ == 0) {
            bench_log("writer %d: %s", w->index, PQresultErrorMessage(ins));
        }
        PQclear(ins);
        if (PQstatus(c) != CONNECTION_OK)
            break;
    }
    w->finished = bench_now();
out:
    PQclear(res);
    free(payload);
    PQfinish(c);
    return NULL;
}

/* Returns the rows committed, the seconds the writers took for them, their
 * samples (caller frees) and the p50, p99, p999 of their inserts' round
 * trips (insert and commit, fsync included: a row is visible to the relay
 * no sooner). */
static int run_writers(bench_t *b, double rate, long *committed, long *failed, double *secs,
                       samples_t *all, double wlat[3]) {
    writer_t *w = calloc((size_t)b->writers, sizeof *w);
    /* Half a second for every writer to connect before the first event is due. */
    double start = bench_now() + 0.5;
    size_t per = (size_t)(rate * b->duration_s) / (size_t)b->writers + 2;
    int started = 0;

    if (!w || samples_init(all, per * (size_t)b->writers) != 0)
        goto fail;
    *committed = *failed = 0;
    *secs = b->duration_s;
    for (; started < b->writers; started++) {
        w[started] = (writer_t){.b = b, .index = started, .rate = rate, .start = start,
                                .end = start + b->duration_s};
        w[started].caplat = (long)per;
        w[started].lat = malloc(per * sizeof *w[started].lat);
        if (!w[started].lat || samples_init(&w[started].samples, per) != 0 ||
            pthread_create(&w[started].thread, NULL, writer_main, &w[started]) != 0) {
            bench_log("pthread_create failed");
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        *committed += w[i].committed;
        *failed += w[i].failed;
        if (w[i].finished - start > *secs)
            *secs = w[i].finished - start;
        /* Each thread's list, without its brace, is one more item of the whole. */
        if (w[i].samples.ids_len > 1)
            samples_add(all, w[i].samples.ids + 1, w[i].samples.xids + 1, w[i].samples.done + 1);
    }
    {
        double *lat = malloc(per * (size_t)b->writers * sizeof *lat);
        long n = 0;
        for (int i = 0; lat && i < started; i++) {
            memcpy(lat + n, w[i].lat, (size_t)w[i].nlat * sizeof *lat);
            n += w[i].nlat;
        }
        wlat[0] = bench_pick(lat, (size_t)n, 0.5);
        wlat[1] = bench_pick(lat, (size_t)n, 0.99);
        wlat[2] = bench_pick(lat, (size_t)n, 0.999);
        free(lat);
    }
    for (int i = 0; i < b->writers; i++) {
        samples_free(&w[i].samples);
        free(w[i].lat);
    }
    free(w);
    return started == b->writers ? 0 : -1;
fail:
    free(w);
    return -1;
}

/* Reads the one row of res as n numbers (NULL: NAN) and clears it. */
static int read_row(PGresult *res, double *out, int n, const char *what) {
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        for (int i = 0; i < n; i++)
            out[i] = PQgetisnull(res, 0, i) ? NAN : strtod(PQgetvalue(res, 0, i), NULL);
        rc = 0;
    } else {
        bench_log("%s: %s", what, PQresultErrorMessage(res));
    }
    PQclear(res);
    return rc;
}

static const char *const pct_names[3] = {"p50", "p99", "p999"};

/* p50, p99, p999 (ms) and count of sent_at minus each sample's commit: the
 * commit record's timestamp (track_commit_timestamp), taken from the xid
 * that inserted it since the mark replaced the row's xmin; without it,
 * created_at (the insert) is the best bound. Then p50, p99, p999 of sent_at
 * minus the moment the writer's commit had returned, by when the row was
 * visible to the relay: the relay's own share, without the commit's WAL
 * flush. Closes the arrays. */
static int sample_latencies(const bench_t *b, PGconn *c, samples_t *a, double out[7]) {
    const char *from = b->commit_ts ? "pg_xact_commit_timestamp(u.x)" : "o.created_at";
    const char *params[3] = {a->ids, a->xids, a->done};
    char sql[900];
    PGresult *res;

    strcpy(a->ids + a->ids_len, "}");
    strcpy(a->xids + a->xids_len, "}");
    strcpy(a->done + a->done_len, "}");
    snprintf(sql, sizeof sql,
             "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY d), percentile_disc(0.99) WITHIN GROUP (ORDER BY d),"
             " percentile_disc(0.999) WITHIN GROUP (ORDER BY d), count(d),"
             " percentile_disc(0.5) WITHIN GROUP (ORDER BY v), percentile_disc(0.99) WITHIN GROUP (ORDER BY v),"
             " percentile_disc(0.999) WITHIN GROUP (ORDER BY v)"
             " FROM (SELECT extract(epoch FROM o.sent_at - %s) * 1000 AS d,"
             "              (extract(epoch FROM o.sent_at) - u.t) * 1000 AS v"
             "       FROM unnest($1::bigint[], $2::xid[], $3::float8[]) AS u(id, x, t)"
             "       JOIN outbox o ON o.id = u.id) s",
             from);
    res = PQexecParams(c, sql, 3, NULL, params, NULL, NULL, 0);
    return read_row(res, out, 7, "latency query");
}

int scenario_steady(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1};
    int rc = -1;

    if (!c)
        return -1;
    if (relay_start(b, &relay) != 0 || warm_up(c, &relay) != 0 || db_wait_waiting(c, 10) != 0)
        goto out;
    for (int k = 0; k < b->nrates; k++) {
        double to, done, secs, pct[7], wlat[3];
        long committed, failed;
        char key[48], fig[72];
        bench_row_t *r;
        samples_t samples = {0};
        int rate = b->rates[k], bad;

        bench_log("steady: %d events/s for %d s", rate, b->duration_s);
        bad = run_writers(b, rate, &committed, &failed, &secs, &samples, wlat) != 0 ||
              db_num(c, "SELECT coalesce(max(id), 0) FROM outbox", 0, NULL, &to) != 0 ||
              wait_marked(c, &relay, to, 60, &done) != 0 || sample_latencies(b, c, &samples, pct) != 0;
        samples_free(&samples);
        if (bad)
            goto out;
        if (failed > 0)
            bench_note(b, "steady %d/s: %ld inserts failed", rate, failed);
        if ((double)committed / secs < 0.95 * rate)
            bench_note(b, "steady %d/s: the writers committed only %.0f/s, the most this machine did beside"
                          " the relay: the latencies at this rate are those of a saturated database",
                       rate, (double)committed / secs);
        if (pct[3] != (double)committed)
            bench_note(b, "steady %d/s: %.0f rows measured, %ld committed", rate, pct[3], committed);

        snprintf(key, sizeof key, "rate_%d_achieved", rate);
        snprintf(fig, sizeof fig, "%d/s: write rate achieved", rate);
        r = bench_row(b, "steady", key, fig, (double)committed / secs, "ev/s");
        bench_row_ref(r, "ev/s offered", rate);
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "rate_%d_commit_to_mark_ms_%s", rate, pct_names[i]);
            snprintf(fig, sizeof fig, "%d/s: %s-to-mark %s", rate, b->commit_ts ? "commit" : "insert",
                     pct_names[i]);
            r = bench_row(b, "steady", key, fig, pct[i], "ms");
            bench_row_ref(r, "ms writers' insert+commit", wlat[i]);
            /* The target is commit-to-ack p99 at 1000/s; this bounds it from above. */
            if (rate == 1000 && i == 1)
                bench_row_target(r, '<', 0, 10);
        }
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "rate_%d_visible_to_mark_ms_%s", rate, pct_names[i]);
            snprintf(fig, sizeof fig, "  %d/s: commit returned-to-mark %s", rate, pct_names[i]);
            r = bench_row(b, "steady", key, fig, pct[4 + i], "ms");
            bench_row_ref(r, "ms commit-to-mark", pct[i]);
        }
    }
    {
        /* The target's "steady" footprint: a drain's peak (footprint) is
         * bounded by relay.max_inflight instead. */
        bench_row_t *r = bench_row(b, "steady", "relay_peak_rss_mb", "relay peak RSS (VmHWM), all rates",
                                   proc_hwm_mb(relay.pid), "MB");
        bench_row_ref(r, "MB (b) connected producer", b->raw_producer_hwm_mb);
        bench_row_target(r, '<', 0, 20);
    }
    if (relay_stop(&relay) != 0)
        goto out;
    rc = 0;
out:
    if (relay.pid > 0)
        proc_reap(relay.pid, SIGKILL, 5000);
    PQfinish(c);
    return rc;
}

/* Polls one query until it returns a non-zero number. */
static int poll_true(PGconn *c, const char *sql, int nparams, const char *const *params,
                     double timeout_s) {
    double deadline = bench_now() + timeout_s, v;
    while (!bench_stop && bench_now() < deadline) {
        if (db_num(c, sql, nparams, params, &v) != 0)
            return -1;
        if (v > 0)
            return 0;
        bench_sleep_ms(1);
    }
    if (!bench_stop)
        bench_log("timed out: %s", sql);
    return -1;
}

int scenario_idle(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1};
    const Oid types[2] = {TEXTOID, BYTEAOID};
    samples_t a = {0};
    char *payload = malloc((size_t)b->payload);
    PGresult *res = NULL;
    double lat[7], *own = malloc((size_t)b->idle_samples * sizeof *own);
    long nown = 0;
    bench_row_t *r;
    int rc = -1;

    if (!c || samples_init(&a, (size_t)b->idle_samples) != 0 || !payload || !own)
        goto out;
    memset(payload, 'x', (size_t)b->payload);
    res = PQprepare(c, "insert",
                    "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                    " VALUES ('bench', $1, 'BenchEvent', $2) RETURNING id, xmin",
                    2, types);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        bench_log("prepare: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (relay_start(b, &relay) != 0 || warm_up(c, &relay) != 0)
        goto out;
    bench_log("idle: %d single inserts, each once the relay sleeps", b->idle_samples);
    for (int i = 0; i < b->idle_samples && !bench_stop; i++) {
        char agg[32], id[32];
        const char *vals[2] = {agg, payload}, *idp[1] = {id};
        const int lens[2] = {0, b->payload}, fmts[2] = {0, 1};
        PGresult *ins;
        double sent;

        if (db_wait_waiting(c, 10) != 0)
            goto out;
        /* The flag is set before the relay's last re-check: give it time to
         * finish that and sleep on LISTEN, so each insert wakes an idle relay. */
        bench_sleep_ms(20);
        snprintf(agg, sizeof agg, "agg-%d", i % b->aggregates);
        sent = bench_now();
        ins = PQexecPrepared(c, "insert", 2, vals, lens, fmts, 0);
        own[nown++] = (bench_now() - sent) * 1000;
        if (PQresultStatus(ins) != PGRES_TUPLES_OK) {
            bench_log("insert: %s", PQresultErrorMessage(ins));
            PQclear(ins);
            goto out;
        }
        snprintf(id, sizeof id, "%s", PQgetvalue(ins, 0, 0));
        samples_add_insert(&a, ins);
        PQclear(ins);
        if (poll_true(c, "SELECT (sent_at IS NOT NULL)::int FROM outbox WHERE id = $1::bigint", 1, idp,
                      10) != 0)
            goto out;
    }
    if (bench_stop || sample_latencies(b, c, &a, lat) != 0 || relay_stop(&relay) != 0)
        goto out;
    /* Beside each, the insert's own round trip (fsync included): the row is
     * visible to the relay no sooner. */
    r = bench_row(b, "idle", "wake_ms_p50",
                  b->commit_ts ? "commit-to-mark p50, relay asleep" : "insert-to-mark p50, relay asleep",
                  lat[0], "ms");
    bench_row_ref(r, "ms insert+commit", bench_pick(own, (size_t)nown, 0.5));
    r = bench_row(b, "idle", "wake_ms_p99",
                  b->commit_ts ? "commit-to-mark p99, relay asleep" : "insert-to-mark p99, relay asleep",
                  lat[1], "ms");
    bench_row_ref(r, "ms insert+commit", bench_pick(own, (size_t)nown, 0.99));
    bench_row_target(r, '<', 0, 5);
    for (int i = 0; i < 2; i++) {
        char key[32], fig[64];
        snprintf(key, sizeof key, "visible_to_mark_ms_%s", pct_names[i]);
        snprintf(fig, sizeof fig, "  commit returned-to-mark %s", pct_names[i]);
        r = bench_row(b, "idle", key, fig, lat[4 + i], "ms");
        bench_row_ref(r, "ms commit-to-mark", lat[i]);
    }
    rc = 0;
out:
    if (relay.pid > 0)
        proc_reap(relay.pid, SIGKILL, 5000);
    PQclear(res);
    samples_free(&a);
    free(own);
    free(payload);
    PQfinish(c);
    return rc;
}

/* One pgbench run of the writers' script. On the side, in every run so that
 * all pay the same: the relay's waiting flag sampled every 50 ms, the WAL
 * written, and, when a relay runs, its CPU and its PostgreSQL backend's. */
typedef struct {
    double tps;
    double flag_share;     /* share of samples with the waiting flag set */
    double wal_per_txn;    /* bytes of WAL per writer transaction, everyone's */
    double relay_cores;    /* relay process CPU / run time; NAN without relay */
    double backend_cores;  /* its backends', likewise (the retention session's included) */
    double retention_cores; /* the relay's retention session's backend's, likewise; NAN without one */
    double relay_sleeps;   /* times its threads went to sleep, likewise per second */
    double mock_cores;     /* the bench's mock broker's CPU / run time; NAN without */
} pgb_out_t;

static int pgproc_spawn(const bench_t *b, const char *out, pid_t *pid) {
    char pgbench[600], script[600], clients[16], jobs[16], secs[16], port[16];
    char *argv[24];
    int n = 0;

    snprintf(pgbench, sizeof pgbench, "%s/pgbench", b->pg_bindir);
    snprintf(script, sizeof script, "%s/writer.sql", b->workdir);
    snprintf(clients, sizeof clients, "%d", b->writers);
    snprintf(jobs, sizeof jobs, "%d", b->writers < 2 ? b->writers : 2);
    snprintf(secs, sizeof secs, "%d", b->duration_s);
    snprintf(port, sizeof port, "%d", b->pg_port);
    argv[n++] = pgbench;
    argv[n++] = "-n";
    argv[n++] = "-M";
    argv[n++] = "prepared";
    argv[n++] = "-c";
    argv[n++] = clients;
    argv[n++] = "-j";
    argv[n++] = jobs;
    argv[n++] = "-T";
    argv[n++] = secs;
    argv[n++] = "-f";
    argv[n++] = script;
    argv[n++] = "-h";
    argv[n++] = (char *)b->pghost;
    argv[n++] = "-p";
    argv[n++] = port;
    if (b->own_pg) {
        argv[n++] = "-U";
        argv[n++] = "postgres";
    }
    argv[n++] = BENCH_DB;
    argv[n] = NULL;
    *pid = proc_spawn(argv, out, -1);
    return *pid < 0 ? -1 : 0;
}

static double pgbench_field(const char *text, const char *label) {
    const char *p = text ? strstr(text, label) : NULL;
    return p ? strtod(p + strlen(label), NULL) : NAN;
}

/* relay: the publisher running beside the writers (NULL: none), whose
 * sessions carry application_name app. */
static int pgbench_run(bench_t *b, PGconn *mon, const bench_child_t *relay, const char *app, const char *tag,
                       pgb_out_t *o) {
    char out[600], lsn[64] = "", what[64];
    const char *lsnp[1] = {lsn};
    char *text;
    double deadline, v, t0, cpu0 = NAN, bcpu0 = NAN, rcpu0 = NAN, sl0 = NAN, mcpu0, wal, txns, secs;
    pid_t backends[4], retention;
    int nb = relay ? db_backend_pids(mon, app, backends, 4) : 0;
    int nr = relay ? db_backend_pids(mon, BENCH_RETENTION_APP, &retention, 1) : 0;
    long samples = 0, set = 0;
    PGresult *res;
    int st;
    pid_t pid;

    /* Numbered: the writers and retention scenarios use the same tags. */
    snprintf(out, sizeof out, "%s/pgbench-%02d-%s.out", b->workdir, ++b->pgbench_seq, tag);
    res = PQexec(mon, "SELECT pg_current_wal_lsn()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        snprintf(lsn, sizeof lsn, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(what, sizeof what, "writers %s", tag);
    /* With a relay running, the caller probed before starting it. */
    if (!relay)
        bench_probe(b, what);
    bench_log("writers: %s (%d clients, %d s)", tag, b->writers, b->duration_s);
    t0 = bench_now();
    if (relay) {
        cpu0 = proc_cpu_s(relay->pid);
        bcpu0 = db_backend_cpu_s(b, backends, nb);
        rcpu0 = db_backend_cpu_s(b, &retention, nr);
        sl0 = proc_sleeps(relay->pid);
    }
    mcpu0 = b->mock_pid > 0 ? proc_cpu_s(b->mock_pid) : NAN;
    if (pgproc_spawn(b, out, &pid) != 0)
        return -1;
    deadline = t0 + b->duration_s + 60;
    while (!proc_exited(pid) && !bench_stop && bench_now() < deadline) {
        if (db_num(mon, BENCH_WAITING_SQL, 0, NULL, &v) == 0) {
            samples++;
            set += v > 0;
        }
        bench_sleep_ms(50);
    }
    secs = bench_now() - t0;
    o->relay_cores = relay ? (proc_cpu_s(relay->pid) - cpu0) / secs : NAN;
    o->backend_cores = relay ? (db_backend_cpu_s(b, backends, nb) - bcpu0) / secs : NAN;
    o->retention_cores = (db_backend_cpu_s(b, &retention, nr) - rcpu0) / secs;
    o->relay_sleeps = relay ? (proc_sleeps(relay->pid) - sl0) / secs : NAN;
    o->mock_cores = b->mock_pid > 0 ? (proc_cpu_s(b->mock_pid) - mcpu0) / secs : NAN;
    st = proc_reap(pid, proc_exited(pid) ? 0 : SIGINT, 5000);
    if (!*lsn || db_num(mon, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", 1, lsnp, &wal) != 0)
        wal = NAN;
    text = proc_read_file(out);
    o->tps = pgbench_field(text, "\ntps = ");
    txns = pgbench_field(text, "number of transactions actually processed: ");
    free(text);
    o->flag_share = samples > 0 ? (double)set / (double)samples : NAN;
    o->wal_per_txn = txns > 0 ? wal / txns : NAN;
    if (st != 0 || isnan(o->tps)) {
        bench_log("pgbench %s failed (exit %d)", tag, st);
        bench_log_tail(out);
        return -1;
    }
    return 0;
}

static int write_pgbench_script(const bench_t *b) {
    char path[600];
    FILE *f;

    snprintf(path, sizeof path, "%s/writer.sql", b->workdir);
    f = fopen(path, "w");
    if (!f) {
        bench_log("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    /* One outbox insert per transaction, through outbox_enqueue as a service would. */
    fprintf(f, "\\set aid random(0, %d)\n"
               "SELECT outbox_enqueue('bench', 'agg-' || :aid, 'BenchEvent', repeat('x', %d)::bytea);\n",
            b->aggregates - 1, b->payload);
    fclose(f);
    return 0;
}

/* What publishing costs per writer event: the relay's and its backends' CPU. */
static double us_per_event(const pgb_out_t *o) {
    return (o->relay_cores + o->backend_cores) / o->tps * 1e6;
}

/* The rows of one pgbench run measured against the no-trigger reference. */
static bench_row_t *writers_rows(bench_t *b, const char *sc, const char *key, const char *figure,
                                 const pgb_out_t *o, const pgb_out_t *alone, double ref_tps) {
    char k[48];
    bench_row_t *r = bench_row(b, sc, key, figure, o->tps, "tps"), *w;

    bench_row_ref(r, "tps alone (runs around it)", ref_tps);
    snprintf(k, sizeof k, "%s_wal_per_txn", key);
    w = bench_row(b, sc, k, "  WAL per writer transaction (all sessions)", o->wal_per_txn, "B");
    bench_row_ref(w, "B alone", alone->wal_per_txn);
    if (!isnan(o->relay_cores)) {
        snprintf(k, sizeof k, "%s_relay_cores", key);
        bench_row(b, sc, k, "  its process CPU during the run", o->relay_cores, "cores");
        if (!isnan(o->relay_sleeps)) {
            snprintf(k, sizeof k, "%s_relay_sleeps", key);
            bench_row(b, sc, k, "  its threads' sleeps (wake-ups) per writer event", o->relay_sleeps / o->tps,
                      "");
        }
        snprintf(k, sizeof k, "%s_backend_cores", key);
        bench_row(b, sc, k, "  its PostgreSQL backends' CPU during the run", o->backend_cores, "cores");
        /* What publishing costs per event beside busy writers, and the share
         * of the machine it takes from them. */
        snprintf(k, sizeof k, "%s_relay_us_per_event", key);
        bench_row(b, sc, k, "  it + backends CPU per writer event", us_per_event(o), "us");
        if (!isnan(o->retention_cores)) {
            snprintf(k, sizeof k, "%s_retention_us_per_event", key);
            bench_row(b, sc, k, "  of which its retention session's backend", o->retention_cores / o->tps * 1e6,
                      "us");
        }
        snprintf(k, sizeof k, "%s_relay_share", key);
        bench_row(b, sc, k, "  it + backends share of the machine's CPU",
                  (o->relay_cores + o->backend_cores) / (double)sysconf(_SC_NPROCESSORS_ONLN) * 100, "%");
        if (!isnan(o->mock_cores)) {
            snprintf(k, sizeof k, "%s_mock_cores", key);
            bench_row(b, sc, k, "  mock broker CPU during the run (same box)", o->mock_cores, "cores");
        }
        snprintf(k, sizeof k, "%s_flag_share", key);
        bench_row(b, sc, k, "  waiting flag set (share of samples)", o->flag_share * 100, "%");
    }
    return r;
}

/* The reference: no trigger, no relay. It runs before and after every
 * variant, whose ratio uses the mean of its two neighbours: on a shared box
 * writer throughput drifts by a third between runs a minute apart. */
static int alone_run(bench_t *b, PGconn *c, int i, pgb_out_t *o) {
    char tag[16];

    snprintf(tag, sizeof tag, "alone-%d", i);
    if (db_exec(c, "DROP TRIGGER IF EXISTS outbox_notify ON outbox") != 0 || db_exec(c, "TRUNCATE outbox") != 0)
        return -1;
    db_checkpoint(b, c);
    if (pgbench_run(b, c, NULL, NULL, tag, o) != 0)
        return -1;
    /* Back to the installed schema: the gated trigger, the flag off. */
    return db_exec(c, "SELECT outbox_install('public', 'outbox', 'outbox')") != 0 ||
                   db_exec(c, "TRUNCATE outbox") != 0 ? -1 : 0;
}

/* A variant's share of the writers' throughput beside that of another
 * (than: its floor, or retention off). */
static void share_row(bench_t *b, const char *sc, const char *key, const char *than, double share,
                      double than_share) {
    char fig[72], ref[48];
    bench_row_t *r;

    snprintf(fig, sizeof fig, "  its share of writers' tps, against %s's", than);
    snprintf(ref, sizeof ref, "%% %s's share", than);
    r = bench_row(b, sc, key, fig, share * 100, "%");
    bench_row_ref(r, ref, than_share * 100);
}

/* Seconds from t_db0 (PostgreSQL's clock) to the last mark of the rows up
 * to maxid; NAN while some are still unsent. */
static int backlog_done_s(PGconn *c, double maxid, double t_db0, double *secs) {
    char maxid_s[32];
    const char *p[1] = {maxid_s};
    double left, last;

    snprintf(maxid_s, sizeof maxid_s, "%.0f", maxid);
    if (db_num(c, "SELECT count(*) FROM outbox WHERE id <= $1::bigint AND sent_at IS NULL", 1, p, &left) != 0 ||
        db_num(c, "SELECT extract(epoch FROM max(sent_at)) FROM outbox WHERE id <= $1::bigint", 1, p, &last) != 0)
        return -1;
    *secs = left > 0 ? NAN : last - t_db0;
    return 0;
}

static void backlog_row(bench_t *b, const char *key, double done_s) {
    bench_row_t *r = bench_row(b, "writers", key,
                               isnan(done_s) ? "  backlog NOT drained within the run" : "  backlog all marked after",
                               done_s, "s");
    bench_row_ref(r, "s run length", b->duration_s);
}

/* The floor of publishing beside the writers: loop (a) claiming and marking
 * whatever they commit, after a backlog of --events rows when backlog is
 * set, at the relay's pace and without Kafka. The flag stays off (a relay
 * may have left it set): no NOTIFY. *left: the rows it left unsent below
 * the last one it marked, once it stopped (0 unless it passed some over). */
static int bare_run(bench_t *b, PGconn *c, int backlog, const char *tag, pgb_out_t *o, double *done_s,
                    double *left) {
    bench_child_t follower = {.pid = -1};
    double maxid = 0, t_db0;
    int st, rc = -1;

    *done_s = NAN;
    if (db_exec(c, "SELECT setval('outbox_relay_waiting', 0)") != 0 ||
        (backlog && db_prefill(b, c, b->events, &maxid) != 0))
        return -1;
    if (!backlog)
        db_checkpoint(b, c);
    bench_probe(b, backlog ? "writers bare-draining" : "writers bare-following");
    if (db_num(c, "SELECT extract(epoch FROM clock_timestamp())", 0, NULL, &t_db0) != 0 ||
        raw_follow_start(b, c, &follower) != 0 || pgbench_run(b, c, &follower, BENCH_FOLLOWER, tag, o) != 0)
        goto out;
    if (backlog && backlog_done_s(c, maxid, t_db0, done_s) != 0)
        goto out;
    st = proc_reap(follower.pid, SIGTERM, 5000);
    follower.pid = -1;
    if (st != 0) {
        bench_log("the bare follower failed (exit %d)", st);
        goto out;
    }
    if (db_num(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
                  " AND id < (SELECT max(id) FROM outbox WHERE sent_at IS NOT NULL)", 0, NULL, left) != 0)
        goto out;
    rc = 0;
out:
    if (follower.pid > 0)
        proc_reap(follower.pid, SIGKILL, 5000);
    return rc;
}

/* The variants of the writers scenario, in the order of a round. Gate and
 * ungated cost nothing of the relay's and run in the first round only.
 * Then the retention scenario's: the relay following as in W_IDLE, with
 * retention off, or deleting every row once marked. */
enum { W_GATE, W_DRAIN, W_IDLE, W_BARE_FOLLOW, W_BARE_DRAIN, W_UNGATED, W_N,
       W_RET_OFF = W_N, W_RET_DELETE, W_ALL };
#define ALONE_MAX (1 + W_N * BENCH_MAX_ROUNDS)

/* The outbox at the end of a retention variant's run (outbox_end). */
enum { END_WRITTEN, END_LEFT, END_BYTES, END_DEAD, END_N };

typedef struct {
    pgb_out_t o[BENCH_MAX_ROUNDS];
    double ref[BENCH_MAX_ROUNDS];  /* mean tps of the reference runs around it */
    double done_s[BENCH_MAX_ROUNDS]; /* backlog all marked after; NAN: not drained */
    double left[BENCH_MAX_ROUNDS]; /* floors: rows left unsent below the last mark */
    double end[BENCH_MAX_ROUNDS][END_N]; /* retention variants */
    int n;                         /* rounds run */
} wvar_t;

/* The identity's last value: rows ever inserted into the outbox. */
#define OUTBOX_IDS_SQL "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')), 0)"

/* The outbox, emptied before the run, at its end: the rows written since
 * the identity stood at ids0, the rows left (the rest were deleted), its
 * size with indexes and TOAST, and its dead tuples (from the statistics,
 * which backends report up to a second late). */
static int outbox_end(PGconn *c, double ids0, double out[END_N]) {
    char ids[32];
    const char *p[1] = {ids};

    snprintf(ids, sizeof ids, "%.0f", ids0);
    return read_row(PQexecParams(c, "SELECT (" OUTBOX_IDS_SQL ") - $1::bigint, (SELECT count(*) FROM outbox),"
                                    " pg_total_relation_size('outbox'), (SELECT n_dead_tup FROM pg_stat_user_tables"
                                    " WHERE relid = 'outbox'::regclass)",
                                 1, NULL, p, NULL, NULL, 0),
                    out, END_N, "the outbox at the end");
}

/* Runs variant v once, beside the writers; the alone run follows. */
static int variant_run(bench_t *b, PGconn *c, int v, int round, bench_child_t *relay, wvar_t *w) {
    static const char *const tags[W_ALL] = {"gate-only",      "relay-draining", "relay-idle",
                                            "bare-following", "bare-draining",  "ungated",
                                            "retention-off",  "retention-delete"};
    /* keep_s 0 and a pass every second: deletes keep pace with the writers
     * from the run's first second (see bench.c). */
    static const char *const ret_sets[W_ALL][3] = {
        [W_RET_OFF] = {"retention.mode=\"off\""},
        [W_RET_DELETE] = {"retention.mode=\"delete\"", "retention.keep_s=0", "retention.interval_s=1"},
    };
    static const int ret_nsets[W_ALL] = {[W_RET_OFF] = 1, [W_RET_DELETE] = 3};
    int i = w->n;
    double maxid, t_db0, unused, ids0 = 0;
    char tag[48];

    snprintf(tag, sizeof tag, "%s-r%d", tags[v], round);
    w->done_s[i] = NAN;
    w->left[i] = NAN;
    switch (v) {
    case W_GATE:
        /* The gated trigger alone: the flag (off) is read on every insert. */
        db_checkpoint(b, c);
        return pgbench_run(b, c, NULL, NULL, tag, &w->o[i]);
    case W_DRAIN:
        if (db_prefill(b, c, b->events, &maxid) != 0)
            return -1;
        bench_probe(b, "writers relay-draining");
        if (db_num(c, "SELECT extract(epoch FROM clock_timestamp())", 0, NULL, &t_db0) != 0 ||
            relay_start(b, relay) != 0 || pgbench_run(b, c, relay, "outbox-relay", tag, &w->o[i]) != 0 ||
            backlog_done_s(c, maxid, t_db0, &w->done_s[i]) != 0)
            return -1;
        return relay_stop(relay);
    case W_IDLE:
    case W_RET_OFF:
    case W_RET_DELETE:
        /* The relay idle (flag set) when the writers start: it wakes on the
         * first NOTIFY and then follows them, idling whenever it caught up.
         * Its retention session must be up for its CPU to be counted. */
        db_checkpoint(b, c);
        bench_probe(b, tag);
        if (relay_start_with(b, relay, ret_sets[v], ret_nsets[v]) != 0 || db_wait_waiting(c, 10) != 0 ||
            (v == W_RET_DELETE && poll_true(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"
                                               BENCH_RETENTION_APP "'", 0, NULL, 10) != 0) ||
            (v != W_IDLE && db_num(c, OUTBOX_IDS_SQL, 0, NULL, &ids0) != 0) ||
            pgbench_run(b, c, relay, "outbox-relay", tag, &w->o[i]) != 0 ||
            (v != W_IDLE && outbox_end(c, ids0, w->end[i]) != 0))
            return -1;
        return relay_stop(relay);
    case W_BARE_FOLLOW:
        return bare_run(b, c, 0, tag, &w->o[i], &unused, &w->left[i]);
    case W_BARE_DRAIN:
        return bare_run(b, c, 1, tag, &w->o[i], &w->done_s[i], &w->left[i]);
    default:
        /* Ungated: the flag forced on, no relay: every commit NOTIFYs. */
        if (db_exec(c, "SELECT setval('outbox_relay_waiting', 1)") != 0)
            return -1;
        db_checkpoint(b, c);
        if (pgbench_run(b, c, NULL, NULL, tag, &w->o[i]) != 0)
            return -1;
        return db_exec(c, "SELECT setval('outbox_relay_waiting', 0)");
    }
}

/* The mean of a variant's rounds, field by field. */
static pgb_out_t pgb_mean(const wvar_t *w) {
    pgb_out_t m = {0};
    for (int i = 0; i < w->n; i++) {
        m.tps += w->o[i].tps / w->n;
        m.flag_share += w->o[i].flag_share / w->n;
        m.wal_per_txn += w->o[i].wal_per_txn / w->n;
        m.relay_cores += w->o[i].relay_cores / w->n;
        m.backend_cores += w->o[i].backend_cores / w->n;
        m.retention_cores += w->o[i].retention_cores / w->n;
        m.relay_sleeps += w->o[i].relay_sleeps / w->n;
        m.mock_cores += w->o[i].mock_cores / w->n;
    }
    return m;
}

static double ref_mean(const wvar_t *w) {
    double sum = 0;
    for (int i = 0; i < w->n; i++)
        sum += w->ref[i];
    return sum / w->n;
}

/* A variant's rows over its rounds: the mean tps against the mean of its
 * references, and with more than one round its rounds' lowest and highest
 * ratio (the noise the mean averages out). Then, for a variant that drains,
 * the slowest round's drain, for a floor the rows it passed over, and for
 * a retention variant the outbox at the end (means over the rounds). */
static bench_row_t *variant_rows(bench_t *b, const char *sc, const char *key, const char *figure,
                                 const wvar_t *w, int v, const pgb_out_t *alone) {
    pgb_out_t m = pgb_mean(w);
    bench_row_t *r = writers_rows(b, sc, key, figure, &m, alone, ref_mean(w)), *d;
    double lo = INFINITY, hi = 0, done = 0, left = 0, end[END_N] = {0};
    char k[48];

    for (int i = 0; i < w->n; i++) {
        double x = w->o[i].tps / w->ref[i];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        done = isnan(w->done_s[i]) || isnan(done) ? NAN : w->done_s[i] > done ? w->done_s[i] : done;
        left += w->left[i];
        for (int j = 0; j < END_N; j++)
            end[j] += w->end[i][j] / w->n;
    }
    if (w->n > 1) {
        snprintf(k, sizeof k, "%s_ratio_lowest", key);
        bench_row(b, sc, k, "  lowest round's ratio to its alone runs", lo, "x");
        snprintf(k, sizeof k, "%s_ratio_highest", key);
        bench_row(b, sc, k, "  highest round's ratio", hi, "x");
    }
    if (v == W_DRAIN || v == W_BARE_DRAIN) {
        snprintf(k, sizeof k, "%s_backlog_s", key);
        backlog_row(b, k, done);
    }
    if (v == W_BARE_FOLLOW || v == W_BARE_DRAIN) {
        snprintf(k, sizeof k, "%s_left", key);
        bench_row(b, sc, k, "  rows it left unsent below its last mark", left, "");
    }
    if (v >= W_N) {
        snprintf(k, sizeof k, "%s_deleted", key);
        d = bench_row(b, sc, k, "  rows deleted during the run", end[END_WRITTEN] - end[END_LEFT], "");
        bench_row_ref(d, "rows written", end[END_WRITTEN]);
        snprintf(k, sizeof k, "%s_outbox_mb", key);
        bench_row(b, sc, k, "  outbox at the end: pg_total_relation_size", end[END_BYTES] / 1048576, "MB");
        snprintf(k, sizeof k, "%s_dead_tuples", key);
        bench_row(b, sc, k, "  outbox at the end: n_dead_tup", end[END_DEAD], "");
    }
    return r;
}

/* Runs variants first..end-1 into w[0..], --writers-rounds times (gate and
 * ungated once), each followed by a reference run, alone[1..*na-1], whose
 * mean with the one before is the variant's reference. Before: a fresh
 * database, the writers' script, an unreported warm-up (a fresh cluster
 * creates, zero-fills and fsyncs its WAL segments during its first run,
 * which later runs recycle) and the first reference run, alone[0]. */
static int writers_variants(bench_t *b, int first, int end, wvar_t *w, pgb_out_t *alone, int *na) {
    bench_child_t relay = {.pid = -1};
    PGconn *c = db_reset(b);
    int rc = -1;

    memset(w, 0, sizeof *w * (size_t)(end - first));
    *na = 1;
    if (!c || write_pgbench_script(b) != 0 || db_exec(c, "DROP TRIGGER outbox_notify ON outbox") != 0 ||
        pgbench_run(b, c, NULL, NULL, "warm-up", &alone[0]) != 0 || alone_run(b, c, 0, &alone[0]) != 0)
        goto out;
    for (int round = 0; round < b->rounds; round++) {
        for (int v = first; v < end; v++) {
            wvar_t *x = &w[v - first];
            if ((v == W_GATE || v == W_UNGATED) && round > 0)
                continue;
            if (variant_run(b, c, v, round, &relay, x) != 0 || alone_run(b, c, *na, &alone[*na]) != 0)
                goto out;
            x->ref[x->n++] = (alone[*na - 1].tps + alone[*na].tps) / 2;
            ++*na;
        }
    }
    rc = 0;
out:
    if (relay.pid > 0)
        proc_reap(relay.pid, SIGKILL, 5000);
    PQfinish(c);
    return rc;
}

/* The reference runs' rows: their mean, WAL and spread. */
static void alone_rows(bench_t *b, const char *sc, const pgb_out_t *alone, int na) {
    double sum = 0, lo = INFINITY, hi = 0;
    char fig[72];
    bench_row_t *r;

    for (int i = 0; i < na; i++) {
        sum += alone[i].tps;
        lo = alone[i].tps < lo ? alone[i].tps : lo;
        hi = alone[i].tps > hi ? alone[i].tps : hi;
    }
    snprintf(fig, sizeof fig, "alone: no trigger, no relay (mean of %d runs)", na);
    bench_row(b, sc, "alone_tps", fig, sum / na, "tps");
    bench_row(b, sc, "alone_wal_per_txn", "  WAL per writer transaction (all sessions)", alone[0].wal_per_txn, "B");
    snprintf(fig, sizeof fig, "  slowest of the %d runs (noise)", na);
    r = bench_row(b, sc, "alone_spread", fig, lo, "tps");
    bench_row_ref(r, "tps fastest", hi);
}

int scenario_writers(bench_t *b) {
    pgb_out_t alone[ALONE_MAX];
    wvar_t w[W_N];
    double share[W_N];
    int na;
    char fig[72];
    bench_row_t *r;

    if (writers_variants(b, 0, W_N, w, alone, &na) != 0)
        return -1;
    for (int v = 0; v < W_N; v++)
        share[v] = pgb_mean(&w[v]).tps / ref_mean(&w[v]);
    alone_rows(b, "writers", alone, na);
    r = bench_row(b, "writers", "gate_only_tps", "gate only: trigger, flag off, no relay", w[W_GATE].o[0].tps, "tps");
    bench_row_ref(r, "tps alone (runs around it)", w[W_GATE].ref[0]);
    snprintf(fig, sizeof fig, "relay draining a %ld-row backlog", b->events);
    r = variant_rows(b, "writers", "relay_draining", fig, &w[W_DRAIN], W_DRAIN, &alone[0]);
    bench_row_target(r, '>', 1, 0.9);
    share_row(b, "writers", "relay_draining_vs_floor", "its floor", share[W_DRAIN], share[W_BARE_DRAIN]);
    r = variant_rows(b, "writers", "relay_idle", "relay idle at start, then following", &w[W_IDLE], W_IDLE,
                     &alone[0]);
    bench_row_target(r, '>', 1, 0.95);
    share_row(b, "writers", "relay_idle_vs_floor", "its floor", share[W_IDLE], share[W_BARE_FOLLOW]);
    variant_rows(b, "writers", "bare_following", "floor: loop (a) following, no Kafka", &w[W_BARE_FOLLOW],
                 W_BARE_FOLLOW, &alone[0]);
    variant_rows(b, "writers", "bare_draining", "floor: loop (a) draining the backlog, no Kafka",
                 &w[W_BARE_DRAIN], W_BARE_DRAIN, &alone[0]);
    variant_rows(b, "writers", "ungated", "ungated: NOTIFY on every commit, no relay", &w[W_UNGATED], W_UNGATED,
                 &alone[0]);
    return 0;
}

/* The relay following the writers (the writers scenario's relay-idle
 * variant) with retention off and with retention deleting, against the
 * writers alone and against each other. */
int scenario_retention(bench_t *b) {
    pgb_out_t alone[ALONE_MAX], off, del;
    wvar_t w[W_ALL - W_N];
    const char *keep = "0";
    char key[16], fig[72];
    int na;
    bench_row_t *r;

    if (writers_variants(b, W_RET_OFF, W_ALL, w, alone, &na) != 0)
        return -1;
    /* The keep_s it ran with: variant_run's 0 unless --relay-set's (the first wins). */
    for (int i = 0; i < b->nsets; i++) {
        const char *v = bench_set(b, i, "retention", key, sizeof key);
        if (v && strcmp(key, "keep_s") == 0) {
            keep = v;
            break;
        }
    }
    off = pgb_mean(&w[0]);
    del = pgb_mean(&w[1]);
    alone_rows(b, "retention", alone, na);
    variant_rows(b, "retention", "off", "relay following, retention off", &w[0], W_RET_OFF, &alone[0]);
    snprintf(fig, sizeof fig, "relay following, retention delete (keep_s %s)", keep);
    variant_rows(b, "retention", "delete", fig, &w[1], W_RET_DELETE, &alone[0]);
    share_row(b, "retention", "delete_vs_off", "retention off", del.tps / ref_mean(&w[1]), off.tps / ref_mean(&w[0]));
    r = bench_row(b, "retention", "delete_extra_us_per_event", "  extra CPU per writer event (it + backends)",
                  us_per_event(&del) - us_per_event(&off), "us");
    bench_row_ref(r, "us retention off", us_per_event(&off));
    return 0;
}

static int wait_count(PGconn *c, const char *sql, double want, double timeout_s, const bench_child_t *child,
                      double *first_at, double *first_n, double *done_at) {
    double deadline = bench_now() + timeout_s, v;

    *first_at = NAN;
    while (!bench_stop && bench_now() < deadline) {
        double sent = bench_now();
        if (db_num(c, sql, 0, NULL, &v) != 0)
            return -1;
        if (v > 0 && isnan(*first_at)) {
            *first_at = sent;
            *first_n = v;
        }
        if (v >= want) {
            *done_at = sent;
            return 0;
        }
        if (child && proc_exited(child->pid)) {
            bench_log("%s: the process died", child->log);
            bench_log_tail(child->log);
            return -1;
        }
        bench_sleep_ms(20);
    }
    if (!bench_stop)
        bench_log("timed out waiting for %.0f: %s", want, sql);
    return -1;
}

static int write_consumer_conf(const bench_t *b, const char *path, int run) {
    FILE *f = fopen(path, "w");
    if (!f) {
        bench_log("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    /* batch_size and batch_timeout_ms keep their defaults (those of
     * config/consumer.conf); a group per run reads the topic from its start,
     * and keeps a given broker's old groups out of the way. */
    fprintf(f,
            "postgres: { conninfo = \"%s\"; };\n"
            "kafka: { bootstrap_servers = \"%s\"; group_id = \"%s-stock-%d\"; };\n"
            "consumer: { name = \"stock\"; topics = [\"%s.order\"]; };\n",
            b->conninfo, b->bootstrap, b->topic_prefix, run, b->topic_prefix);
    fclose(f);
    chmod(path, 0600);
    return 0;
}

#define CONSUMER_RUNS 3

/* What one consumer run measured. */
typedef struct {
    double rate, first_apply_ms, cpu, backend_cpu, hwm, batches, gap_ms;
} cons_run_t;

/* One obx-stock-consumer applying the n published orders from the topic's
 * start, into an inbox and a stock that the caller emptied and refilled. */
static int consumer_run(bench_t *b, PGconn *c, int run, double n, cons_run_t *o) {
    bench_child_t cons = {.pid = -1};
    char conf[600];
    char *argv[4];
    double first_at, first_n, done_at, applied;
    pid_t backends[4];
    int nb, st, rc = -1;

    bench_log("consumer: obx-stock-consumer applying them (run %d of %d)", run + 1, CONSUMER_RUNS);
    /* As before every timed run: the writers scenario's WAL, or the orders',
     * may otherwise be checkpointed inside this short one (13.7k events/s
     * once after the writers, 30-38k in runs of this scenario alone). */
    db_checkpoint(b, c);
    snprintf(conf, sizeof conf, "%s/stock-%d.conf", b->workdir, run);
    if (write_consumer_conf(b, conf, run) != 0)
        return -1;
    snprintf(cons.log, sizeof cons.log, "%s/stock-consumer-%d.log", b->workdir, run);
    argv[0] = (char *)bench_bin(b, "obx-stock-consumer");
    argv[1] = "-c";
    argv[2] = conf;
    argv[3] = NULL;
    cons.started = bench_now();
    cons.pid = proc_spawn(argv, cons.log, -1);
    if (cons.pid < 0 ||
        wait_count(c, "SELECT count(*) FROM processed_events WHERE consumer = 'stock'", n,
                   drain_timeout((long)n), &cons, &first_at, &first_n, &done_at) != 0)
        goto out;
    o->cpu = proc_cpu_s(cons.pid);
    o->hwm = proc_hwm_mb(cons.pid);
    /* The runner names its session after the consumer. */
    nb = db_backend_pids(c, "stock", backends, 4);
    o->backend_cpu = db_backend_cpu_s(b, backends, nb);
    st = proc_reap(cons.pid, SIGTERM, 30000);
    cons.pid = -1;
    if (st != 0) {
        bench_log("obx-stock-consumer exited with %d", st);
        bench_log_tail(cons.log);
        goto out;
    }
    if (db_num(c, "SELECT count(*) FROM processed_events WHERE consumer = 'stock' AND status = 'applied'", 0,
               NULL, &applied) != 0)
        goto out;
    if (applied != n)
        bench_note(b, "consumer run %d: %.0f of %.0f events applied (the rest rejected or parked)", run + 1,
                   applied, n);
    /* Each batch is one transaction, and processed_at is its start: the
     * batches and the longest pause between two show where a slow run
     * lost its time. */
    if (db_num(c, "SELECT count(DISTINCT processed_at) FROM processed_events WHERE consumer = 'stock'", 0, NULL,
               &o->batches) != 0 ||
        db_num(c, "SELECT extract(epoch FROM max(gap)) * 1000 FROM (SELECT t - lag(t) OVER (ORDER BY t) AS gap"
                  " FROM (SELECT DISTINCT processed_at AS t FROM processed_events WHERE consumer = 'stock') d) g",
               0, NULL, &o->gap_ms) != 0)
        goto out;
    /* From the first batch seen to the last: the apply rate, without the
     * consumer's start-up and group join (reported on their own). */
    o->rate = done_at > first_at ? (n - first_n) / (done_at - first_at) : NAN;
    o->first_apply_ms = (first_at - cons.started) * 1000;
    bench_log("consumer: run %d applied %.0f events/s", run + 1, o->rate);
    rc = 0;
out:
    if (cons.pid > 0)
        proc_reap(cons.pid, SIGKILL, 5000);
    return rc;
}

static int cmp_rate(const void *x, const void *y) {
    const cons_run_t *a = x, *b = y;
    return a->rate < b->rate ? -1 : a->rate > b->rate;
}

int scenario_consumer(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1}, gen = {.pid = -1};
    char orders[24], drop_emitted[64];
    char *gen_argv[14];
    double n = (double)b->consumer_events, first_at, first_n, done_at, maxid;
    cons_run_t runs[CONSUMER_RUNS], *med;
    bench_row_t *r;
    int rc = -1, st;

    if (!c || db_apply_file(b, c, "schema/003_shop.sql") != 0)
        goto out;
    /* Orders and their OrderPlaced events, written the way a service would. */
    snprintf(orders, sizeof orders, "%ld", b->consumer_events);
    snprintf(gen.log, sizeof gen.log, "%s/order-gen.log", b->workdir);
    gen_argv[0] = (char *)bench_bin(b, "obx-order-gen");
    gen_argv[1] = "-d";
    gen_argv[2] = b->conninfo;
    gen_argv[3] = "-n";
    gen_argv[4] = orders;
    gen_argv[5] = "--skus";
    gen_argv[6] = "50";
    gen_argv[7] = "--stock";
    gen_argv[8] = "1000000"; /* every order is deducted: the apply path, not the rejection */
    gen_argv[9] = "--clients";
    gen_argv[10] = "4";
    gen_argv[11] = NULL;
    bench_log("consumer: writing %ld orders with obx-order-gen", b->consumer_events);
    gen.pid = proc_spawn(gen_argv, gen.log, -1);
    st = proc_reap(gen.pid, 0, 600000);
    gen.pid = -1;
    if (st != 0) {
        bench_log("obx-order-gen exited with %d", st);
        bench_log_tail(gen.log);
        goto out;
    }
    bench_log("consumer: relay publishing them");
    if (relay_start(b, &relay) != 0 ||
        wait_count(c, "SELECT count(*) FROM outbox WHERE aggregate_type = 'order' AND sent_at IS NOT NULL", n,
                   drain_timeout(b->consumer_events), &relay, &first_at, &first_n, &done_at) != 0 ||
        relay_stop(&relay) != 0 || db_num(c, "SELECT max(id) FROM outbox", 0, NULL, &maxid) != 0)
        goto out;
    snprintf(drop_emitted, sizeof drop_emitted, "DELETE FROM outbox WHERE id > %.0f", maxid);

    /* A run lasts about a second, and single runs swung from 12.5k to 31k
     * events/s: the median of three, each from the topic's start into an
     * emptied inbox and a refilled stock (and without the events the last
     * run emitted). */
    for (int i = 0; i < CONSUMER_RUNS; i++) {
        if (i > 0 && (db_exec(c, "TRUNCATE processed_events, consumer_offsets, dead_letters, shop_stock_moves") != 0 ||
                      db_exec(c, "UPDATE shop_stock SET available = initial") != 0 ||
                      db_exec(c, drop_emitted) != 0 ||
                      db_exec(c, "VACUUM ANALYZE processed_events, shop_stock, shop_stock_moves, outbox") != 0))
            goto out;
        if (consumer_run(b, c, i, n, &runs[i]) != 0)
            goto out;
    }
    qsort(runs, CONSUMER_RUNS, sizeof *runs, cmp_rate);
    med = &runs[CONSUMER_RUNS / 2];

    r = bench_row(b, "consumer", "apply_events_per_s", "dedup apply events/s, obx-stock-consumer (median of 3)",
                  med->rate, "ev/s");
    bench_row_ref(r, "rows/s (a) bare loop", b->raw_pg_rate);
    bench_row_target(r, '>', 0, 20000);
    bench_row(b, "consumer", "apply_events_per_s_lowest", "  the slowest run", runs[0].rate, "ev/s");
    bench_row(b, "consumer", "apply_events_per_s_highest", "  the fastest run", runs[CONSUMER_RUNS - 1].rate,
              "ev/s");
    bench_row(b, "consumer", "first_apply_ms", "  exec -> first batch applied (group join)", med->first_apply_ms,
              "ms");
    bench_row(b, "consumer", "cpu_s_per_100k", "  consumer process CPU per 100k events", med->cpu / n * 1e5, "s");
    bench_row(b, "consumer", "backend_cpu_s_per_100k", "  its PostgreSQL backend CPU per 100k",
              med->backend_cpu / n * 1e5, "s");
    bench_row(b, "consumer", "peak_rss_mb", "  consumer peak RSS (VmHWM)", med->hwm, "MB");
    bench_row(b, "consumer", "batches", "  batches (transactions)", med->batches, "");
    bench_row(b, "consumer", "longest_gap_ms", "  longest pause between two batches' starts", med->gap_ms, "ms");
    bench_row(b, "consumer", "longest_gap_ms_slowest", "  the same in the slowest run", runs[0].gap_ms, "ms");
    rc = 0;
out:
    if (relay.pid > 0)
        proc_reap(relay.pid, SIGKILL, 5000);
    PQfinish(c);
    return rc;
}
