/* The consumer scenario: orders published by the relay, applied by one
 * obx-stock-consumer into the inbox. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    bench_child_t relay = {.pid = -1}, gen;
    char orders[24], drop_emitted[64];
    /* Every order is deducted (stock 1,000,000): the apply path, not the rejection. */
    char *gen_argv[] = {(char *)bench_bin(b, "obx-order-gen"), "-d", b->conninfo, "-n", orders, "--skus", "50",
                        "--stock", "1000000", "--clients", "4", NULL};
    double n = (double)b->consumer_events, first_at, first_n, done_at, maxid;
    cons_run_t runs[CONSUMER_RUNS], *med;
    bench_row_t *r;
    int rc = -1, st;

    if (!c || db_apply_file(b, c, "schema/003_shop.sql") != 0)
        goto out;
    /* Orders and their OrderPlaced events, written the way a service would. */
    snprintf(orders, sizeof orders, "%ld", b->consumer_events);
    snprintf(gen.log, sizeof gen.log, "%s/order-gen.log", b->workdir);
    bench_log("consumer: writing %ld orders with obx-order-gen", b->consumer_events);
    st = proc_reap(proc_spawn(gen_argv, gen.log, -1), 0, 600000);
    if (st != 0) {
        bench_log("obx-order-gen exited with %d", st);
        bench_log_tail(gen.log);
        goto out;
    }
    bench_log("consumer: relay publishing them");
    if (relay_start(b, &relay, NULL) != 0 ||
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
    return scenario_end(&relay, c, rc);
}
