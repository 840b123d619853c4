/* The drain scenario (and the footprint figures it yields): a relay
 * started on a pre-filled outbox, against loop (a) in the same run. */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int wait_marked(PGconn *c, const bench_child_t *relay, double maxid, double timeout_s,
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

double drain_timeout(long rows) {
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
    if (relay_start(b, &relay, NULL) != 0 || wait_marked(c, &relay, maxid, drain_timeout(b->events), &done) != 0)
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
