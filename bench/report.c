/* The report: one table (or one JSON object) of every figure beside its raw
 * limit or reference, the ratio, and the target it is held to. */
#include "bench.h"

#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bench_row_t *bench_row(bench_t *b, const char *scenario, const char *key, const char *figure,
                       double value, const char *unit) {
    /* The last slot is reused rather than failing: the array is sized for
     * every row the scenarios add, so this only guards a future overflow. */
    bench_row_t *r = &b->rows[b->nrows < BENCH_MAX_ROWS ? b->nrows++ : BENCH_MAX_ROWS - 1];

    memset(r, 0, sizeof *r);
    snprintf(r->scenario, sizeof r->scenario, "%s", scenario);
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->figure, sizeof r->figure, "%s", figure);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    r->ref = NAN;
    return r;
}

void bench_row_ref(bench_row_t *r, const char *ref_name, double ref) {
    snprintf(r->ref_name, sizeof r->ref_name, "%s", ref_name);
    r->ref = ref;
}

void bench_row_target(bench_row_t *r, char op, int on_ratio, double target) {
    r->target_op = op;
    r->target_on_ratio = on_ratio;
    r->target = target;
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

static void fmt_num(char *buf, size_t size, double v) {
    double a = fabs(v);
    if (isnan(v))
        snprintf(buf, size, "-");
    else if (a >= 1000)
        snprintf(buf, size, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, size, "%.1f", v);
    else if (a >= 1)
        snprintf(buf, size, "%.2f", v);
    else
        snprintf(buf, size, "%.3f", v);
}

static void fmt_target(char *buf, size_t size, const bench_row_t *r) {
    char num[32];
    if (!r->target_op) {
        buf[0] = '\0';
        return;
    }
    fmt_num(num, sizeof num, r->target);
    snprintf(buf, size, "%s %s%s", r->target_op == '>' ? ">=" : "<=", num,
             r->target_on_ratio ? "x" : "");
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

void bench_report_table(const bench_t *b) {
    const char *last = "";

    print_settings(b);
    printf("%-9s %-50s %10s %-7s %-30s %7s %-9s %s\n", "scenario", "figure", "value", "unit",
           "raw limit / reference", "ratio", "target", "met");
    for (int i = 0; i < b->nrows; i++) {
        const bench_row_t *r = &b->rows[i];
        char val[32], ref[96], ratio[32], tgt[48], refnum[32];
        double q = row_ratio(r);
        int met = row_met(r);

        fmt_num(val, sizeof val, r->value);
        fmt_num(refnum, sizeof refnum, r->ref);
        if (r->ref_name[0] && !isnan(r->ref))
            snprintf(ref, sizeof ref, "%s %s", refnum, r->ref_name);
        else
            ref[0] = '\0';
        if (isnan(q))
            ratio[0] = '\0';
        else
            snprintf(ratio, sizeof ratio, "%.2fx", q);
        fmt_target(tgt, sizeof tgt, r);
        if (strcmp(last, r->scenario) != 0 && i > 0)
            printf("\n");
        printf("%-9s %-50s %10s %-7s %-30s %7s %-9s %s\n",
               strcmp(last, r->scenario) != 0 ? r->scenario : "", r->figure, val, r->unit, ref,
               ratio, tgt, met < 0 ? "" : met ? "yes" : "NO");
        last = r->scenario;
    }
    if (b->nnotes > 0)
        printf("\nnotes:\n");
    for (int i = 0; i < b->nnotes; i++)
        printf("- %s\n", b->notes[i]);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_num(double v) {
    if (isnan(v) || isinf(v))
        printf("null");
    else
        printf("%.6g", v);
}

void bench_report_json(const bench_t *b) {
    printf("{\"version\":");
    json_str(OBX_VERSION);
    printf(",\"settings\":{\"events\":%ld,\"payload\":%d,\"aggregates\":%d,\"duration_s\":%d,"
           "\"writers\":%d,\"writers_rounds\":%d,\"idle_samples\":%d,\"consumer_events\":%ld,\"rates\":[",
           b->events, b->payload, b->aggregates, b->duration_s, b->writers, b->rounds, b->idle_samples,
           b->consumer_events);
    for (int i = 0; i < b->nrates; i++)
        printf("%s%d", i ? "," : "", b->rates[i]);
    printf("],\"relay_set\":[");
    for (int i = 0; i < b->nsets; i++) {
        printf("%s", i ? "," : "");
        json_str(b->sets[i]);
    }
    printf("],\"cores\":%ld,\"postgres\":", sysconf(_SC_NPROCESSORS_ONLN));
    json_str(b->server_version);
    printf(",\"postgres_given\":%s,\"fsync\":", b->own_pg ? "false" : "true");
    json_str(b->fsync);
    printf(",\"kafka_given\":%s,\"mock_nodelay\":%s,\"librdkafka\":", b->bootstrap_opt ? "true" : "false",
           b->mock_nodelay ? "true" : "false");
    json_str(rd_kafka_version_str());
    printf("},\"figures\":[");
    for (int i = 0; i < b->nrows; i++) {
        const bench_row_t *r = &b->rows[i];
        char tgt[48];
        int met = row_met(r);
        printf("%s{\"scenario\":", i ? "," : "");
        json_str(r->scenario);
        printf(",\"key\":");
        json_str(r->key);
        printf(",\"figure\":");
        json_str(r->figure);
        printf(",\"value\":");
        json_num(r->value);
        printf(",\"unit\":");
        json_str(r->unit);
        if (r->ref_name[0]) {
            printf(",\"ref_name\":");
            json_str(r->ref_name);
            printf(",\"ref\":");
            json_num(r->ref);
            printf(",\"ratio\":");
            json_num(row_ratio(r));
        }
        if (r->target_op) {
            fmt_target(tgt, sizeof tgt, r);
            printf(",\"target\":");
            json_str(tgt);
            printf(",\"met\":%s", met < 0 ? "null" : met ? "true" : "false");
        }
        printf("}");
    }
    printf("],\"notes\":[");
    for (int i = 0; i < b->nnotes; i++) {
        printf("%s", i ? "," : "");
        json_str(b->notes[i]);
    }
    printf("]}\n");
}
