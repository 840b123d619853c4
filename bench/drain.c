/* The drain scenario (and the footprint figures it yields): a relay
 * started on a pre-filled outbox, against loop (a) in the same run. */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define DRAIN_PAIRS 3

int wait_marked(PGconn *c, const bench_child_t *relay, double maxid, double timeout_s, double *done_at) {
    char id[32];
    bench_wait_t w;

    snprintf(id, sizeof id, "%.0f", maxid);
    /* The newest row first (one primary-key lookup), then the exact count. */
    if (db_wait(c, "SELECT (sent_at IS NOT NULL)::int FROM outbox WHERE id = $1::bigint", id, 1, 5, timeout_s,
                relay, NULL) != 0 ||
        db_wait(c, "SELECT (count(*) = 0)::int FROM outbox WHERE id <= $1::bigint"
                   " AND sent_at IS NULL AND parked_at IS NULL", id, 1, 5, timeout_s, relay, &w) != 0)
        return -1;
    *done_at = w.done_at;
    return 0;
}

double drain_timeout(long rows) {
    return 60.0 + (double)rows / 1000.0;
}

/* One drain by a freshly started relay of a fresh --events backlog. */
typedef struct {
    double rate;           /* events/s, exec -> all marked */
    double publishing;     /* events/s, first mark -> last mark */
    double cpu, bcpu;      /* relay, its backends: CPU seconds */
    double hwm;            /* relay peak RSS, MB */
    double cold_ms;        /* exec -> first mark */
} drain_t;

static int drain_once(bench_t *b, PGconn *c, drain_t *o) {
    bench_child_t relay = {.pid = -1};
    double maxid, t_db0, done, span[3];
    pid_t backends[4];
    int nb;

    bench_log("drain: pre-filling %ld rows", b->events);
    if (db_exec(c, "TRUNCATE outbox") != 0 || db_prefill(b, c, b->events, &maxid) != 0 ||
        db_num(c, "SELECT extract(epoch FROM clock_timestamp())", NULL, &t_db0) != 0)
        return scenario_end(&relay, NULL, -1);
    bench_log("drain: relay draining");
    if (relay_start(b, &relay, NULL) != 0 || wait_marked(c, &relay, maxid, drain_timeout(b->events), &done) != 0)
        return scenario_end(&relay, NULL, -1);
    /* Read before stopping it: the figures are the drain's, not the shutdown's. */
    o->cpu = proc_cpu_s(relay.pid);
    o->hwm = proc_hwm_mb(relay.pid);
    nb = db_backend_pids(c, "outbox-relay", backends, 4);
    o->bcpu = db_backend_cpu_s(b, backends, nb);
    /* The first and last marks and the rows of the first: the publishing
     * rate leaves out the start-up before the first mark. */
    if (relay_stop(&relay) != 0 ||
        db_row(c, "SELECT extract(epoch FROM min(sent_at)), extract(epoch FROM max(sent_at)),"
                  " (SELECT count(*) FROM outbox WHERE sent_at = (SELECT min(sent_at) FROM outbox)) FROM outbox",
               0, NULL, span, 3) != 0)
        return -1;
    o->rate = (double)b->events / (done - relay.started);
    o->publishing = span[1] > span[0] ? ((double)b->events - span[2]) / (span[1] - span[0]) : NAN;
    o->cold_ms = (span[0] - t_db0) * 1000;
    return 0;
}

static int cmp_drain(const void *x, const void *y) {
    const drain_t *a = x, *c = y;
    return a->rate < c->rate ? -1 : a->rate > c->rate;
}

/* Pairs of loop (a) and a drain: medians against medians, the footprint the median drain's. */
int scenario_drain(bench_t *b) {
    PGconn *c = db_reset(b);
    drain_t d[DRAIN_PAIRS], *m;
    double raw[DRAIN_PAIRS], ratio[DRAIN_PAIRS], raw_med;

    if (!c)
        return -1;
    for (int k = 0; k < DRAIN_PAIRS; k++) {
        bench_log("drain: pair %d of %d, loop (a) then the relay", k + 1, DRAIN_PAIRS);
        raw[k] = raw_pg_rate(b);
        if (isnan(raw[k]) || drain_once(b, c, &d[k]) != 0) {
            PQfinish(c);
            return -1;
        }
        ratio[k] = d[k].rate / raw[k];
    }
    PQfinish(c);
    qsort(d, DRAIN_PAIRS, sizeof d[0], cmp_drain);
    m = &d[DRAIN_PAIRS / 2];
    raw_med = bench_pick(raw, DRAIN_PAIRS, 0.5);

    bench_row_t drain[] = {
        {.figure = "events/s, relay exec -> all marked (median)", .value = m->rate,
         .unit = "ev/s", .ref_name = "rows/s (a) median, same pairs", .ref = raw_med, .target_op = '>',
         .target_on_ratio = 1, .target = 1.2},
        {.figure = "  lowest pair's ratio, relay / loop (a)",
         .value = bench_pick(ratio, DRAIN_PAIRS, 0), .unit = "x"},
        {.figure = "  highest pair's ratio", .value = bench_pick(ratio, DRAIN_PAIRS, 1),
         .unit = "x"},
        {.figure = "events/s, first mark -> last mark", .value = m->publishing,
         .unit = "ev/s", .ref_name = "rows/s (a) median, same pairs", .ref = raw_med},
    };
    bench_row_t footprint[] = {
        {.figure = "relay peak RSS (VmHWM) after the drain", .value = m->hwm,
         .unit = "MB", .ref_name = "MB (b) connected producer", .ref = b->raw_producer_hwm_mb},
        {.figure = "relay CPU (utime+stime) per 100k events",
         .value = m->cpu / (double)b->events * 1e5, .unit = "s", .ref_name = "s (a)+(b) client CPU",
         .ref = b->raw_cpu_100k},
        {.figure = "relay's PostgreSQL backends' CPU per 100k",
         .value = m->bcpu / (double)b->events * 1e5, .unit = "s", .ref_name = "s (a) loop's backend",
         .ref = b->raw_backend_cpu_100k},
        {.figure = "cold start: relay exec -> first row marked", .value = m->cold_ms,
         .unit = "ms", .ref_name = "ms (b0) new -> first ack", .ref = b->raw_first_ack_ms},
    };
    BENCH_ROWS(b, "drain", drain);
    BENCH_ROWS(b, "footprint", footprint);
    return 0;
}
