/* The consumer scenario: orders published by the relay, applied by one
 * obx-stock-consumer into the inbox (BENCHMARKS.md, "consumer"). */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CONSUMER_RUNS 3
#define APPLIED_SQL "SELECT count(*) FROM processed_events WHERE consumer = 'stock'"

/* Batching keeps config/consumer.conf's defaults; a group per run reads the
 * topic from its start and keeps a given broker's old groups away. */
static int write_consumer_conf(const bench_t *b, const char *path, int run) {
    return bench_write(path,
                       "postgres: { conninfo = \"%s\"; };\n"
                       "kafka: { bootstrap_servers = \"%s\"; group_id = \"%s-stock-%d\"; };\n"
                       "consumer: { name = \"stock\"; topics = [\"%s.order\"]; };\n",
                       b->conninfo, b->bootstrap, b->topic_prefix, run, b->topic_prefix);
}

/* What one consumer run measured. */
typedef struct {
    double rate, first_apply_ms, cpu, backend_cpu, hwm;
} cons_run_t;

/* One obx-stock-consumer applying the n published orders from the topic's
 * start, into an inbox and a stock that the caller emptied and refilled. */
static int consumer_run(bench_t *b, PGconn *c, int run, double n, cons_run_t *o) {
    bench_child_t cons = {.pid = -1};
    char conf[600], *argv[] = {(char *)bench_bin(b, "obx-stock-consumer"), "-c", conf, NULL};
    bench_wait_t w;
    double applied;
    pid_t backends[4];
    int nb;

    bench_log("consumer: obx-stock-consumer applying them (run %d of %d)", run + 1, CONSUMER_RUNS);
    /* Else an earlier scenario's WAL may be checkpointed inside this short run. */
    db_checkpoint(b, c);
    snprintf(conf, sizeof conf, "%s/stock-%d.conf", b->workdir, run);
    if (write_consumer_conf(b, conf, run) != 0)
        return -1;
    snprintf(cons.log, sizeof cons.log, "%s/stock-consumer-%d.log", b->workdir, run);
    cons.started = bench_now();
    cons.pid = proc_spawn(argv, cons.log, -1);
    if (cons.pid < 0 || db_wait(c, APPLIED_SQL, NULL, n, 20, drain_timeout((long)n), &cons, &w) != 0)
        return scenario_end(&cons, NULL, -1);
    o->cpu = proc_cpu_s(cons.pid);
    o->hwm = proc_hwm_mb(cons.pid);
    /* The runner names its session after the consumer. */
    nb = db_backend_pids(c, "stock", backends, 4);
    o->backend_cpu = db_backend_cpu_s(b, backends, nb);
    if (bench_reap(cons.pid, SIGTERM, 30000, "obx-stock-consumer", cons.log) != 0 ||
        db_num(c, APPLIED_SQL " AND status = 'applied'", NULL, &applied) != 0)
        return -1;
    /* The count waited for includes rejected and parked events: the apply path is what is measured. */
    if (applied != n)
        bench_note(b, "consumer run %d: %.0f of %.0f events applied (the rest rejected or parked)", run + 1,
                   applied, n);
    /* From the first batch seen to the last: without start-up and group join. */
    o->rate = w.done_at > w.first_at ? (n - w.first_n) / (w.done_at - w.first_at) : NAN;
    o->first_apply_ms = (w.first_at - cons.started) * 1000;
    bench_log("consumer: run %d applied %.0f events/s", run + 1, o->rate);
    return 0;
}

static int cmp_rate(const void *x, const void *y) {
    const cons_run_t *a = x, *b = y;
    return a->rate < b->rate ? -1 : a->rate > b->rate;
}

/* Between runs: an emptied inbox, a refilled stock, no events the last run emitted. */
static int consumer_reset(PGconn *c, double maxid) {
    char drop_emitted[64];

    snprintf(drop_emitted, sizeof drop_emitted, "DELETE FROM outbox WHERE id > %.0f", maxid);
    return db_exec(c, "TRUNCATE processed_events, consumer_offsets, dead_letters, shop_stock_moves") != 0 ||
                   db_exec(c, "UPDATE shop_stock SET available = initial") != 0 || db_exec(c, drop_emitted) != 0 ||
                   db_exec(c, "VACUUM ANALYZE processed_events, shop_stock, shop_stock_moves, outbox") != 0
               ? -1
               : 0;
}

int scenario_consumer(bench_t *b) {
    PGconn *c = db_reset(b);
    bench_child_t relay = {.pid = -1};
    char orders[24], gen_log[600];
    /* Every order is deducted (stock 1,000,000): the apply path, not the rejection. */
    char *gen_argv[] = {(char *)bench_bin(b, "obx-order-gen"), "-d", b->conninfo, "-n", orders, "--skus", "50",
                        "--stock", "1000000", "--clients", "4", NULL};
    double n = (double)b->consumer_events, maxid;
    cons_run_t runs[CONSUMER_RUNS], *med;

    if (!c || db_apply_file(b, c, "schema/003_shop.sql") != 0)
        return scenario_end(&relay, c, -1);
    snprintf(orders, sizeof orders, "%ld", b->consumer_events);
    snprintf(gen_log, sizeof gen_log, "%s/order-gen.log", b->workdir);
    bench_log("consumer: writing %ld orders with obx-order-gen", b->consumer_events);
    if (bench_reap(proc_spawn(gen_argv, gen_log, -1), 0, 600000, "obx-order-gen", gen_log) != 0)
        return scenario_end(&relay, c, -1);
    bench_log("consumer: relay publishing them");
    if (relay_start(b, &relay, NULL) != 0 ||
        db_wait(c, "SELECT count(*) FROM outbox WHERE aggregate_type = 'order' AND sent_at IS NOT NULL", NULL, n, 20,
                drain_timeout(b->consumer_events), &relay, NULL) != 0 ||
        relay_stop(&relay) != 0 || db_num(c, "SELECT max(id) FROM outbox", NULL, &maxid) != 0)
        return scenario_end(&relay, c, -1);
    /* Single runs swing widely: the median of three. */
    for (int i = 0; i < CONSUMER_RUNS; i++)
        if ((i > 0 && consumer_reset(c, maxid) != 0) || consumer_run(b, c, i, n, &runs[i]) != 0)
            return scenario_end(&relay, c, -1);
    qsort(runs, CONSUMER_RUNS, sizeof *runs, cmp_rate);
    med = &runs[CONSUMER_RUNS / 2];

    bench_row_t rows[] = {
        {.figure = "dedup apply events/s, obx-stock-consumer (median of 3)",
         .value = med->rate, .unit = "ev/s", .ref_name = "rows/s (a) bare loop", .ref = b->raw_pg_rate,
         .target_op = '>', .target = 20000},
        {.figure = "  the slowest run", .value = runs[0].rate, .unit = "ev/s"},
        {.figure = "  the fastest run", .value = runs[CONSUMER_RUNS - 1].rate,
         .unit = "ev/s"},
        {.figure = "  exec -> first batch applied (group join)",
         .value = med->first_apply_ms, .unit = "ms"},
        {.figure = "  consumer process CPU per 100k events", .value = med->cpu / n * 1e5,
         .unit = "s"},
        {.figure = "  its PostgreSQL backend CPU per 100k",
         .value = med->backend_cpu / n * 1e5, .unit = "s"},
        {.figure = "  consumer peak RSS (VmHWM)", .value = med->hwm, .unit = "MB"},
    };
    BENCH_ROWS(b, "consumer", rows);
    return scenario_end(&relay, c, 0);
}
