/* The report: one table of every figure beside its raw limit or reference,
 * the ratio, and the target it is held to. */
#include "bench.h"

#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void bench_rows(bench_t *b, const char *scenario, const bench_row_t *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* The last slot is reused rather than failing: the array is sized
         * for every row the scenarios add. */
        bench_row_t *r = &b->rows[b->nrows < BENCH_MAX_ROWS ? b->nrows++ : BENCH_MAX_ROWS - 1];
        *r = rows[i];
        snprintf(r->scenario, sizeof r->scenario, "%s", scenario);
    }
}

static double row_ratio(const bench_row_t *r) {
    return r->ref_name[0] && !isnan(r->ref) && r->ref != 0 ? r->value / r->ref : NAN;
}

/* 1 met, 0 missed, -1 no target or nothing measured. */
static int row_met(const bench_row_t *r) {
    double v = r->target_on_ratio ? row_ratio(r) : r->value;
    if (!r->target_op || isnan(v))
        return -1;
    return r->target_op == '>' ? v >= r->target : v <= r->target;
}

/* Fewer decimals as the number grows: 12345, 123.4, 12.34, 0.123. */
static void fmt_num(char *buf, size_t size, double v) {
    double a = fabs(v);
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.*f", a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3, v);
}

static void fmt_target(char *buf, size_t size, const bench_row_t *r) {
    char num[32];
    fmt_num(num, sizeof num, r->target);
    snprintf(buf, size, "%s %s%s", r->target_op == '>' ? ">=" : "<=", num, r->target_on_ratio ? "x" : "");
}

static void print_settings(const bench_t *b) {
    printf("outbox-relay %s benchmark: %ld events of %d B over %d aggregates; %d s runs; rates",
           OBX_VERSION, b->events, b->payload, b->aggregates, b->duration_s);
    for (int i = 0; i < b->nrates; i++)
        printf("%s%d", i ? "," : " ", b->rates[i]);
    printf("/s; %d writers, %d writers round%s\n", b->writers, b->rounds, b->rounds == 1 ? "" : "s");
    printf("machine: %ld cores; PostgreSQL %s (%s, fsync=%s) on %s; Kafka: %s (%s); librdkafka %s\n",
           sysconf(_SC_NPROCESSORS_ONLN), b->server_version, b->own_pg ? "throwaway" : "given",
           b->fsync, b->pghost, b->bootstrap,
           b->bootstrap_opt ? "given" : b->mock_nodelay ? "obx-mock-kafka, TCP_NODELAY shim" : "obx-mock-kafka",
           rd_kafka_version_str());
    printf("relay: the outbox-relay binary with its default settings");
    for (int i = 0; i < b->nsets; i++)
        printf("%s%s", i ? ", " : "; --relay-set ", b->sets[i]);
    printf("\n\n");
}

#define TABLE_LINE "%-9s %-50s %10s %-7s %-30s %7s %-9s %s\n"

void bench_report(const bench_t *b) {
    print_settings(b);
    printf(TABLE_LINE, "scenario", "figure", "value", "unit", "raw limit / reference", "ratio", "target", "met");
    for (int i = 0; i < b->nrows; i++) {
        const bench_row_t *r = &b->rows[i];
        char val[32], ref[96] = "", ratio[32] = "", tgt[48] = "", refnum[32];
        int first = i == 0 || strcmp(b->rows[i - 1].scenario, r->scenario) != 0;

        fmt_num(val, sizeof val, r->value);
        fmt_num(refnum, sizeof refnum, r->ref);
        if (r->ref_name[0] && !isnan(r->ref))
            snprintf(ref, sizeof ref, "%s %s", refnum, r->ref_name);
        if (!isnan(row_ratio(r)))
            snprintf(ratio, sizeof ratio, "%.2fx", row_ratio(r));
        if (r->target_op)
            fmt_target(tgt, sizeof tgt, r);
        if (first && i > 0)
            printf("\n");
        printf(TABLE_LINE, first ? r->scenario : "", r->figure, val, r->unit, ref, ratio, tgt,
               row_met(r) < 0 ? "" : row_met(r) ? "yes" : "NO");
    }
    if (b->nnotes > 0)
        printf("\nnotes:\n");
    for (int i = 0; i < b->nnotes; i++)
        printf("- %s\n", b->notes[i]);
}
