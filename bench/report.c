/* The report: one table (or one JSON object) of every figure beside its raw
 * limit or reference, the ratio, and the target it is held to. */
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

static const char *met_word(const bench_row_t *r, const char *yes, const char *no, const char *none) {
    int met = row_met(r);
    return met < 0 ? none : met ? yes : no;
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

void bench_report_table(const bench_t *b) {
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
               met_word(r, "yes", "NO", ""));
    }
    if (b->nnotes > 0)
        printf("\nnotes:\n");
    for (int i = 0; i < b->nnotes; i++)
        printf("- %s\n", b->notes[i]);
}

/* A JSON string literal. */
static void json_esc(const char *s) {
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

/* "name":"s", led by a comma unless first. */
static void json_str(const char *name, const char *s, int first) {
    printf("%s\"%s\":", first ? "" : ",", name);
    json_esc(s);
}

static void json_num(const char *name, double v) {
    if (isnan(v) || isinf(v))
        printf(",\"%s\":null", name);
    else
        printf(",\"%s\":%.6g", name, v);
}

static void json_strs(const char *name, const char *const *s, int n) {
    printf(",\"%s\":[", name);
    for (int i = 0; i < n; i++) {
        printf("%s", i ? "," : "");
        json_esc(s[i]);
    }
    printf("]");
}

static void json_row(const bench_row_t *r, int first) {
    char tgt[48];
    printf("%s{", first ? "" : ",");
    json_str("scenario", r->scenario, 1);
    json_str("key", r->key, 0);
    json_str("figure", r->figure, 0);
    json_num("value", r->value);
    json_str("unit", r->unit, 0);
    if (r->ref_name[0]) {
        json_str("ref_name", r->ref_name, 0);
        json_num("ref", r->ref);
        json_num("ratio", row_ratio(r));
    }
    if (r->target_op) {
        fmt_target(tgt, sizeof tgt, r);
        json_str("target", tgt, 0);
        printf(",\"met\":%s", met_word(r, "true", "false", "null"));
    }
    printf("}");
}

void bench_report_json(const bench_t *b) {
    const char *notes[BENCH_MAX_NOTES];

    printf("{");
    json_str("version", OBX_VERSION, 1);
    printf(",\"settings\":{\"events\":%ld,\"payload\":%d,\"aggregates\":%d,\"duration_s\":%d,"
           "\"writers\":%d,\"writers_rounds\":%d,\"idle_samples\":%d,\"consumer_events\":%ld,\"rates\":[",
           b->events, b->payload, b->aggregates, b->duration_s, b->writers, b->rounds, b->idle_samples,
           b->consumer_events);
    for (int i = 0; i < b->nrates; i++)
        printf("%s%d", i ? "," : "", b->rates[i]);
    printf("]");
    json_strs("relay_set", b->sets, b->nsets);
    printf(",\"cores\":%ld", sysconf(_SC_NPROCESSORS_ONLN));
    json_str("postgres", b->server_version, 0);
    printf(",\"postgres_given\":%s", b->own_pg ? "false" : "true");
    json_str("fsync", b->fsync, 0);
    printf(",\"kafka_given\":%s,\"mock_nodelay\":%s", b->bootstrap_opt ? "true" : "false",
           b->mock_nodelay ? "true" : "false");
    json_str("librdkafka", rd_kafka_version_str(), 0);
    printf("},\"figures\":[");
    for (int i = 0; i < b->nrows; i++)
        json_row(&b->rows[i], i == 0);
    printf("]");
    for (int i = 0; i < b->nnotes; i++)
        notes[i] = b->notes[i];
    json_strs("notes", notes, b->nnotes);
    printf("}\n");
}
