/* Writer cost: pgbench writers beside a relay, following them with each
 * retention mode or draining a backlog, against the same writers alone
 * (BENCHMARKS.md, "writers"). */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One pgbench run: the writers' tps and WAL, and the relay's CPU if it runs. */
typedef struct {
    double tps;
    double wal_per_txn;     /* bytes of WAL per writer transaction, everyone's */
    double relay_cores;     /* relay process CPU / run time; NAN without relay */
    double backend_cores;   /* its backends', likewise (the retention session's included) */
} pgb_out_t;

/* The identity's last value: rows ever inserted into the outbox. */
#define OUTBOX_IDS_SQL "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')), 0)"

static int pgbench_spawn(const bench_t *b, const char *out, pid_t *pid) {
    const char *bindir = getenv("PG_BINDIR");
    char pgbench[600], script[600], clients[16], jobs[16], secs[16], port[16];
    char *argv[] = {pgbench, "-n", "-M", "prepared", "-c", clients, "-j", jobs, "-T", secs, "-f", script,
                    "-h", (char *)b->pghost, "-p", port, "-U", "postgres", BENCH_DB, NULL};

    /* /usr/bin/pgbench: Debian's wrapper, which runs an installed version's. */
    snprintf(pgbench, sizeof pgbench, "%s/pgbench", bindir && *bindir ? bindir : "/usr/bin");
    snprintf(script, sizeof script, "%s/writer.sql", b->workdir);
    snprintf(clients, sizeof clients, "%d", b->writers);
    snprintf(jobs, sizeof jobs, "%d", b->writers < 2 ? b->writers : 2);
    snprintf(secs, sizeof secs, "%d", b->duration_s);
    snprintf(port, sizeof port, "%d", b->pg_port);
    /* The own cluster's superuser; a given server's user is the caller's. */
    if (!b->own_pg) {
        argv[16] = BENCH_DB;
        argv[17] = NULL;
    }
    *pid = proc_spawn(argv, out, -1);
    return *pid < 0 ? -1 : 0;
}

static double pgbench_field(const char *text, const char *label) {
    const char *p = text ? strstr(text, label) : NULL;
    return p ? strtod(p + strlen(label), NULL) : NAN;
}

/* Bytes of WAL written since the cluster began. */
#define WAL_SQL "SELECT pg_current_wal_lsn() - '0/0'"

/* CPU seconds so far of the relay and of its backends: NAN without a relay. */
static void relay_cpu(const bench_t *b, const bench_child_t *relay, const pid_t *pids, int n, double out[2]) {
    out[0] = relay ? proc_cpu_s(relay->pid) : NAN;
    out[1] = relay ? db_backend_cpu_s(b, pids, n) : NAN;
}

/* relay: the relay running beside the writers (NULL: none). */
static int pgbench_run(bench_t *b, PGconn *mon, const bench_child_t *relay, const char *tag, pgb_out_t *o) {
    char out[600], what[64];
    char *text;
    double deadline, t0, c0[2], c1[2], wal0, wal, txns, secs;
    pid_t backends[4];
    int nb = relay ? db_backend_pids(mon, "outbox-relay", backends, 4) : 0;
    int st;
    pid_t pid;

    /* Numbered: every round runs the same tags. */
    snprintf(out, sizeof out, "%s/pgbench-%02d-%s.out", b->workdir, ++b->pgbench_seq, tag);
    if (db_num(mon, WAL_SQL, NULL, &wal0) != 0)
        wal0 = NAN;
    snprintf(what, sizeof what, "writers %s", tag);
    /* With a relay running, the caller probed before starting it. */
    if (!relay)
        bench_probe(b, what);
    bench_log("writers: %s (%d clients, %d s)", tag, b->writers, b->duration_s);
    t0 = bench_now();
    relay_cpu(b, relay, backends, nb, c0);
    if (pgbench_spawn(b, out, &pid) != 0)
        return -1;
    deadline = t0 + b->duration_s + 60;
    while (!proc_exited(pid) && !bench_stop && bench_now() < deadline)
        bench_sleep_ms(50);
    secs = bench_now() - t0;
    relay_cpu(b, relay, backends, nb, c1);
    o->relay_cores = (c1[0] - c0[0]) / secs;
    o->backend_cores = (c1[1] - c0[1]) / secs;
    st = proc_reap(pid, proc_exited(pid) ? 0 : SIGINT, 5000);
    if (db_num(mon, WAL_SQL, NULL, &wal) != 0)
        wal = NAN;
    text = proc_read_file(out);
    o->tps = pgbench_field(text, "\ntps = ");
    txns = pgbench_field(text, "number of transactions actually processed: ");
    free(text);
    o->wal_per_txn = txns > 0 ? (wal - wal0) / txns : NAN;
    if (st != 0 || isnan(o->tps)) {
        bench_log("pgbench %s failed (exit %d)", tag, st);
        bench_log_tail(out);
        return -1;
    }
    return 0;
}

/* One outbox insert per transaction, through outbox_enqueue as a service would. */
static int write_pgbench_script(const bench_t *b) {
    char path[600];

    snprintf(path, sizeof path, "%s/writer.sql", b->workdir);
    return bench_write(path, "\\set aid random(0, %d)\n"
                             "SELECT outbox_enqueue('bench', 'agg-' || :aid, 'BenchEvent', repeat('x', %d)::bytea);\n",
                       b->aggregates - 1, b->payload);
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
    if (pgbench_run(b, c, NULL, tag, o) != 0)
        return -1;
    /* Back to the installed schema: the gated trigger, the flag off. */
    return db_exec(c, "SELECT outbox_install('public', 'outbox', 'outbox')") != 0 ||
                   db_exec(c, "TRUNCATE outbox") != 0 ? -1 : 0;
}

/* A relay beside the writers. */
typedef struct {
    const char *tag, *figure;
    const char *sets[BENCH_SCENARIO_SETS + 1]; /* its config, NULL-terminated */
    int backlog;     /* it drains --events pre-filled rows as the writers start */
    int retention;   /* its retention session must be up for its CPU to count */
    int partitioned; /* the outbox is made partitioned by migrate for its run */
    double target;   /* least share of the writers' tps alone; 0: none */
} variant_t;

/* The outbox at the end of a run (outbox_end). */
enum { END_WRITTEN, END_LEFT, END_BYTES, END_DEAD, END_N };

/* A variant's rounds. */
typedef struct {
    pgb_out_t o[BENCH_MAX_ROUNDS];
    double ref[BENCH_MAX_ROUNDS];    /* mean tps of the reference runs around it */
    double done_s[BENCH_MAX_ROUNDS]; /* backlog all marked after; NAN: not drained */
    double end[BENCH_MAX_ROUNDS][END_N];
    int n;
} wvar_t;

/* The outbox at a run's end: the rows written since the identity stood at
 * ids0, the rows left, its size and dead tuples (statistics, up to a second
 * late), summed over its partitions (none listed for a plain table). */
static int outbox_end(PGconn *c, double ids0, double out[END_N]) {
    char ids[32];
    const char *p[1] = {ids};

    snprintf(ids, sizeof ids, "%.0f", ids0);
    return db_row(c, "WITH t AS (SELECT 'outbox'::regclass AS relid UNION SELECT relid FROM pg_partition_tree('outbox'))"
                     " SELECT (" OUTBOX_IDS_SQL ") - $1::bigint, (SELECT count(*) FROM outbox),"
                     " (SELECT sum(pg_total_relation_size(relid)) FROM t),"
                     " (SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE relid IN (SELECT relid FROM t))",
                  1, p, out, END_N);
}

/* Seconds from t_db0 (PostgreSQL's clock) to the last mark of the rows up
 * to maxid; NAN while some are still unsent. */
static int backlog_done_s(PGconn *c, double maxid, double t_db0, double *secs) {
    char id[32];
    const char *p[1] = {id};
    double v[2];

    snprintf(id, sizeof id, "%.0f", maxid);
    if (db_row(c, "SELECT count(*) FILTER (WHERE sent_at IS NULL), extract(epoch FROM max(sent_at))"
                  " FROM outbox WHERE id <= $1::bigint", 1, p, v, 2) != 0)
        return -1;
    *secs = v[0] > 0 ? NAN : v[1] - t_db0;
    return 0;
}

/* The outbox made anew: partitioned, as migrate makes it when the config
 * asks (sets), or plain, from the schema file (sets NULL). */
static int outbox_recreate(bench_t *b, PGconn *c, const char *const *sets) {
    if (db_exec(c, "DROP TABLE outbox CASCADE") != 0)
        return -1;
    return sets ? relay_migrate(b, sets) : db_apply_file(b, c, "schema/001_outbox.sql");
}

/* Runs variant v once beside the writers. Without a backlog the relay is
 * idle (flag set) when they start: it wakes on the first NOTIFY and then
 * follows them, idling whenever it caught up. */
static int variant_run(bench_t *b, PGconn *c, const variant_t *v, int round, bench_child_t *relay, wvar_t *w) {
    double maxid = 0, t_db0, ids0;
    int i = w->n;
    char tag[48];

    snprintf(tag, sizeof tag, "%s-r%d", v->tag, round);
    w->done_s[i] = NAN;
    if (v->partitioned && outbox_recreate(b, c, v->sets) != 0)
        return -1;
    if (v->backlog && db_prefill(b, c, b->events, &maxid) != 0)
        return -1;
    if (!v->backlog)
        db_checkpoint(b, c);
    bench_probe(b, tag);
    if (db_num(c, "SELECT extract(epoch FROM clock_timestamp())", NULL, &t_db0) != 0 ||
        db_num(c, OUTBOX_IDS_SQL, NULL, &ids0) != 0 || relay_start(b, relay, v->sets) != 0 ||
        (!v->backlog && relay_waiting(c) != 0) ||
        (v->retention && db_wait(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"
                                    BENCH_RETENTION_APP "'", NULL, 1, 1, 10, NULL, NULL) != 0) ||
        pgbench_run(b, c, relay, tag, &w->o[i]) != 0 || (!v->backlog && outbox_end(c, ids0, w->end[i]) != 0) ||
        (v->backlog && backlog_done_s(c, maxid, t_db0, &w->done_s[i]) != 0) || relay_stop(relay) != 0)
        return -1;
    return v->partitioned ? outbox_recreate(b, c, NULL) : 0;
}

/* The reference runs' rows: their mean, WAL and spread. */
static void alone_rows(bench_t *b, const pgb_out_t *alone, int na) {
    double sum = 0, lo = INFINITY, hi = 0;

    for (int i = 0; i < na; i++) {
        sum += alone[i].tps;
        lo = alone[i].tps < lo ? alone[i].tps : lo;
        hi = alone[i].tps > hi ? alone[i].tps : hi;
    }
    bench_row_t rows[] = {
        {.value = sum / na, .unit = "tps"},
        {.figure = "  WAL per writer transaction (all sessions)", .value = alone[0].wal_per_txn, .unit = "B"},
        {.value = lo, .unit = "tps", .ref_name = "tps fastest", .ref = hi},
    };
    snprintf(rows[0].figure, sizeof rows[0].figure, "alone: no trigger, no relay (mean of %d runs)", na);
    snprintf(rows[2].figure, sizeof rows[2].figure, "  slowest of the %d runs (noise)", na);
    BENCH_ROWS(b, "writers", rows);
}

/* The mean of a variant's rounds, field by field, and of its references. */
static pgb_out_t pgb_mean(const wvar_t *w, double *ref) {
    pgb_out_t m = {0};
    *ref = 0;
    for (int i = 0; i < w->n; i++) {
        m.tps += w->o[i].tps / w->n;
        m.wal_per_txn += w->o[i].wal_per_txn / w->n;
        m.relay_cores += w->o[i].relay_cores / w->n;
        m.backend_cores += w->o[i].backend_cores / w->n;
        *ref += w->ref[i] / w->n;
    }
    return m;
}

/* What publishing costs per writer event: the relay's and its backends' CPU. */
static double us_per_event(const pgb_out_t *o) {
    return (o->relay_cores + o->backend_cores) / o->tps * 1e6;
}

/* A variant's rows: mean tps against the mean of its references, its
 * rounds' lowest and highest ratio when several, what the relay spent, and
 * the slowest round's drain of its backlog, or else the outbox at the run's
 * end (means over the rounds). */
static void variant_rows(bench_t *b, const variant_t *v, const wvar_t *w, const pgb_out_t *alone) {
    double ref, lo = INFINITY, hi = 0, done = 0, end[END_N] = {0};
    pgb_out_t m = pgb_mean(w, &ref);
    bench_row_t r[12];
    int n = 0;

    for (int i = 0; i < w->n; i++) {
        double x = w->o[i].tps / w->ref[i];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        done = isnan(w->done_s[i]) || isnan(done) ? NAN : w->done_s[i] > done ? w->done_s[i] : done;
        for (int j = 0; j < END_N; j++)
            end[j] += w->end[i][j] / w->n;
    }
    r[n] = (bench_row_t){.value = m.tps, .unit = "tps", .ref_name = "tps alone (runs around it)", .ref = ref,
                         .target_op = v->target > 0 ? '>' : 0, .target_on_ratio = 1, .target = v->target};
    snprintf(r[n++].figure, sizeof r[0].figure, "%s", v->figure);
    if (w->n > 1) {
        r[n++] = (bench_row_t){.figure = "  lowest round's ratio to its alone runs", .value = lo, .unit = "x"};
        r[n++] = (bench_row_t){.figure = "  highest round's ratio", .value = hi, .unit = "x"};
    }
    r[n++] = (bench_row_t){.figure = "  WAL per writer transaction (all sessions)", .value = m.wal_per_txn,
                           .unit = "B", .ref_name = "B alone", .ref = alone->wal_per_txn};
    r[n++] = (bench_row_t){.figure = "  its process CPU during the run", .value = m.relay_cores, .unit = "cores"};
    r[n++] = (bench_row_t){.figure = "  its PostgreSQL backends' CPU during the run", .value = m.backend_cores,
                           .unit = "cores"};
    r[n++] = (bench_row_t){.figure = "  it + backends CPU per writer event", .value = us_per_event(&m), .unit = "us"};
    if (v->backlog) {
        r[n++] = (bench_row_t){.figure = "  backlog all marked after", .value = done, .unit = "s",
                               .ref_name = "s run length", .ref = b->duration_s};
        if (isnan(done))
            snprintf(r[n - 1].figure, sizeof r[0].figure, "  backlog NOT drained within the run");
    } else {
        r[n++] = (bench_row_t){.figure = "  rows removed during the run", .value = end[END_WRITTEN] - end[END_LEFT],
                               .ref_name = "rows written", .ref = end[END_WRITTEN]};
        r[n++] = (bench_row_t){.figure = "  outbox at the end: total relation size", .value = end[END_BYTES] / 1048576,
                               .unit = "MB"};
        r[n++] = (bench_row_t){.figure = "  outbox at the end: n_dead_tup", .value = end[END_DEAD]};
    }
    bench_rows(b, "writers", r, (size_t)n);
}

/* An unreported warm-up (a fresh cluster creates its WAL segments then),
 * the reference run alone[0], then --writers-rounds rounds of the
 * variants, each run followed by a reference run; then the rows. The
 * retention variants are set against the relay following with the default
 * retention, which removes nothing within a run (keep_s 3600). keep_s 0
 * and a pass every second: retention keeps pace with the writers from the
 * run's first second. Partitions of 5,000 ids, 20 ahead: several fill and
 * go in a run, and the writers never outrun them. */
int scenario_writers(bench_t *b) {
    static const variant_t v[] = {
        {.tag = "relay-draining", .figure = "relay draining the --events backlog", .backlog = 1, .target = 0.9},
        {.tag = "relay-following", .figure = "relay idle at start, then following", .retention = 1, .target = 0.95},
        {.tag = "retention-delete", .figure = "relay following, retention delete",
         .sets = {"retention.mode=\"delete\"", "retention.keep_s=0", "retention.interval_s=1"}, .retention = 1},
        {.tag = "retention-partitions", .figure = "relay following, retention partitions",
         .sets = {"retention.mode=\"partitions\"", "retention.keep_s=0", "retention.interval_s=1",
                  "retention.partition_rows=5000", "retention.partitions_ahead=20"},
         .retention = 1, .partitioned = 1},
    };
    enum { NV = sizeof v / sizeof v[0], FOLLOWING = 1 };
    bench_child_t relay = {.pid = -1};
    PGconn *c = db_reset(b);
    pgb_out_t alone[1 + NV * BENCH_MAX_ROUNDS], m[NV];
    wvar_t w[NV];
    double ref[NV];
    int na = 1;

    memset(w, 0, sizeof w);
    if (!c || write_pgbench_script(b) != 0 || db_exec(c, "DROP TRIGGER outbox_notify ON outbox") != 0 ||
        pgbench_run(b, c, NULL, "warm-up", &alone[0]) != 0 || alone_run(b, c, 0, &alone[0]) != 0)
        return scenario_end(&relay, c, -1);
    for (int round = 0; round < b->rounds; round++) {
        for (int k = 0; k < NV; k++, na++) {
            if (variant_run(b, c, &v[k], round, &relay, &w[k]) != 0 || alone_run(b, c, na, &alone[na]) != 0)
                return scenario_end(&relay, c, -1);
            w[k].ref[w[k].n++] = (alone[na - 1].tps + alone[na].tps) / 2;
        }
    }
    alone_rows(b, alone, na);
    for (int k = 0; k < NV; k++) {
        variant_rows(b, &v[k], &w[k], &alone[0]);
        m[k] = pgb_mean(&w[k], &ref[k]);
    }
    for (int k = FOLLOWING + 1; k < NV; k++) {
        bench_row_t r[] = {
            {.value = m[k].tps / ref[k] * 100, .unit = "%", .ref_name = "% following's share",
             .ref = m[FOLLOWING].tps / ref[FOLLOWING] * 100},
            {.figure = "  extra CPU per writer event (it + backends)",
             .value = us_per_event(&m[k]) - us_per_event(&m[FOLLOWING]), .unit = "us",
             .ref_name = "us following", .ref = us_per_event(&m[FOLLOWING])},
        };
        snprintf(r[0].figure, sizeof r[0].figure, "%s vs following: writers' share", v[k].tag);
        BENCH_ROWS(b, "writers", r);
    }
    return scenario_end(&relay, c, 0);
}
