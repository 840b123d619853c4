/* Writer cost: pgbench writers beside a relay against the same writers
 * alone; one method for the writers and retention scenarios (BENCHMARKS.md). */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One pgbench run. On the side, in every run so that all pay the same: the
 * waiting flag sampled every 50 ms, the WAL, the relay's CPU if it runs. */
typedef struct {
    double tps;
    double flag_share;      /* share of samples with the waiting flag set */
    double wal_per_txn;     /* bytes of WAL per writer transaction, everyone's */
    double relay_cores;     /* relay process CPU / run time; NAN without relay */
    double backend_cores;   /* its backends', likewise (the retention session's included) */
    double retention_cores; /* its retention session's backend's, likewise; NAN without one */
    double relay_sleeps;    /* times its threads went to sleep, likewise per second */
    double mock_cores;      /* the bench's mock broker's CPU / run time; NAN without */
} pgb_out_t;

/* The identity's last value: rows ever inserted into the outbox. */
#define OUTBOX_IDS_SQL "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')), 0)"

static int pgbench_spawn(const bench_t *b, const char *out, pid_t *pid) {
    char pgbench[600], script[600], clients[16], jobs[16], secs[16], port[16];
    char *argv[] = {pgbench, "-n", "-M", "prepared", "-c", clients, "-j", jobs, "-T", secs, "-f", script,
                    "-h", (char *)b->pghost, "-p", port, "-U", "postgres", BENCH_DB, NULL};

    snprintf(pgbench, sizeof pgbench, "%s/pgbench", b->pg_bindir);
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

/* CPU seconds so far of the relay, its backends, its retention session's
 * backend, and its threads' sleeps: NAN without a relay. */
static void relay_cpu(const bench_t *b, const bench_child_t *relay, const pid_t *pids, int n,
                      const pid_t *ret, int nr, double out[4]) {
    out[0] = relay ? proc_cpu_s(relay->pid) : NAN;
    out[1] = relay ? db_backend_cpu_s(b, pids, n) : NAN;
    out[2] = relay ? db_backend_cpu_s(b, ret, nr) : NAN;
    out[3] = relay ? proc_sleeps(relay->pid) : NAN;
}

/* relay: the relay running beside the writers (NULL: none). */
static int pgbench_run(bench_t *b, PGconn *mon, const bench_child_t *relay, const char *tag, pgb_out_t *o) {
    char out[600], lsn[64] = "", what[64];
    char *text;
    double deadline, v, t0, c0[4], c1[4], mcpu0, wal, txns, secs;
    pid_t backends[4], retention;
    int nb = relay ? db_backend_pids(mon, "outbox-relay", backends, 4) : 0;
    int nr = relay ? db_backend_pids(mon, BENCH_RETENTION_APP, &retention, 1) : 0;
    long samples = 0, set = 0;
    PGresult *res;
    int st;
    pid_t pid;

    /* Numbered: every round runs the same tags. */
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
    relay_cpu(b, relay, backends, nb, &retention, nr, c0);
    mcpu0 = b->mock_pid > 0 ? proc_cpu_s(b->mock_pid) : NAN;
    if (pgbench_spawn(b, out, &pid) != 0)
        return -1;
    deadline = t0 + b->duration_s + 60;
    while (!proc_exited(pid) && !bench_stop && bench_now() < deadline) {
        if (db_num(mon, BENCH_WAITING_SQL, NULL, &v) == 0) {
            samples++;
            set += v > 0;
        }
        bench_sleep_ms(50);
    }
    secs = bench_now() - t0;
    relay_cpu(b, relay, backends, nb, &retention, nr, c1);
    o->relay_cores = (c1[0] - c0[0]) / secs;
    o->backend_cores = (c1[1] - c0[1]) / secs;
    o->retention_cores = (c1[2] - c0[2]) / secs;
    o->relay_sleeps = (c1[3] - c0[3]) / secs;
    o->mock_cores = b->mock_pid > 0 ? (proc_cpu_s(b->mock_pid) - mcpu0) / secs : NAN;
    st = proc_reap(pid, proc_exited(pid) ? 0 : SIGINT, 5000);
    if (!*lsn || db_num(mon, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn, &wal) != 0)
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
    const char *tag, *key, *figure;
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

#define MAX_VARIANTS 3
#define ALONE_MAX (1 + MAX_VARIANTS * BENCH_MAX_ROUNDS)

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
        pgbench_run(b, c, relay, tag, &w->o[i]) != 0 || outbox_end(c, ids0, w->end[i]) != 0 ||
        (v->backlog && backlog_done_s(c, maxid, t_db0, &w->done_s[i]) != 0) || relay_stop(relay) != 0)
        return -1;
    return v->partitioned ? outbox_recreate(b, c, NULL) : 0;
}

/* Both scenarios' method: an unreported warm-up (a fresh cluster creates its
 * WAL segments then), the reference run alone[0], then --writers-rounds
 * rounds of the nv variants, each followed by a reference run. */
static int writers_measure(bench_t *b, const variant_t *v, int nv, wvar_t *w, pgb_out_t *alone, int *na) {
    bench_child_t relay = {.pid = -1};
    PGconn *c = db_reset(b);
    int rc = -1;

    memset(w, 0, sizeof *w * (size_t)nv);
    *na = 1;
    if (!c || write_pgbench_script(b) != 0 || db_exec(c, "DROP TRIGGER outbox_notify ON outbox") != 0 ||
        pgbench_run(b, c, NULL, "warm-up", &alone[0]) != 0 || alone_run(b, c, 0, &alone[0]) != 0)
        goto out;
    for (int round = 0; round < b->rounds; round++) {
        for (int k = 0; k < nv; k++) {
            if (variant_run(b, c, &v[k], round, &relay, &w[k]) != 0 || alone_run(b, c, *na, &alone[*na]) != 0)
                goto out;
            w[k].ref[w[k].n++] = (alone[*na - 1].tps + alone[*na].tps) / 2;
            ++*na;
        }
    }
    rc = 0;
out:
    return scenario_end(&relay, c, rc);
}

/* The reference runs' rows: their mean, WAL and spread. */
static void alone_rows(bench_t *b, const char *sc, const pgb_out_t *alone, int na) {
    double sum = 0, lo = INFINITY, hi = 0;

    for (int i = 0; i < na; i++) {
        sum += alone[i].tps;
        lo = alone[i].tps < lo ? alone[i].tps : lo;
        hi = alone[i].tps > hi ? alone[i].tps : hi;
    }
    bench_row_t rows[] = {
        {.key = "alone_tps", .value = sum / na, .unit = "tps"},
        {.key = "alone_wal_per_txn", .figure = "  WAL per writer transaction (all sessions)",
         .value = alone[0].wal_per_txn, .unit = "B"},
        {.key = "alone_spread", .value = lo, .unit = "tps", .ref_name = "tps fastest", .ref = hi},
    };
    snprintf(rows[0].figure, sizeof rows[0].figure, "alone: no trigger, no relay (mean of %d runs)", na);
    snprintf(rows[2].figure, sizeof rows[2].figure, "  slowest of the %d runs (noise)", na);
    BENCH_ROWS(b, sc, rows);
}

/* The mean of a variant's rounds, field by field, and of its references. */
static pgb_out_t pgb_mean(const wvar_t *w, double *ref) {
    pgb_out_t m = {0};
    *ref = 0;
    for (int i = 0; i < w->n; i++) {
        m.tps += w->o[i].tps / w->n;
        m.flag_share += w->o[i].flag_share / w->n;
        m.wal_per_txn += w->o[i].wal_per_txn / w->n;
        m.relay_cores += w->o[i].relay_cores / w->n;
        m.backend_cores += w->o[i].backend_cores / w->n;
        m.retention_cores += w->o[i].retention_cores / w->n;
        m.relay_sleeps += w->o[i].relay_sleeps / w->n;
        m.mock_cores += w->o[i].mock_cores / w->n;
        *ref += w->ref[i] / w->n;
    }
    return m;
}

/* What publishing costs per writer event: the relay's and its backends' CPU. */
static double us_per_event(const pgb_out_t *o) {
    return (o->relay_cores + o->backend_cores) / o->tps * 1e6;
}

/* Adds rows keyed "<variant>_<their key>" (the first row: "<variant>"). */
static void variant_add(bench_t *b, const char *sc, const variant_t *v, bench_row_t *rows, int n) {
    char key[sizeof rows[0].key];

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%.20s%s%.26s", v->key, rows[i].key[0] ? "_" : "", rows[i].key);
        memcpy(rows[i].key, key, sizeof key);
    }
    bench_rows(b, sc, rows, (size_t)n);
}

/* A variant's rows: mean tps against the mean of its references, its
 * rounds' lowest and highest ratio when several, what the relay spent, the
 * slowest round's drain of a backlog, and with end_rows the outbox at the
 * run's end (means over the rounds). */
static void variant_rows(bench_t *b, const char *sc, const variant_t *v, const wvar_t *w,
                         const pgb_out_t *alone, int end_rows) {
    double ref, lo = INFINITY, hi = 0, done = 0, end[END_N] = {0};
    pgb_out_t m = pgb_mean(w, &ref);
    bench_row_t r[16];
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
        r[n++] = (bench_row_t){.key = "ratio_lowest", .figure = "  lowest round's ratio to its alone runs",
                               .value = lo, .unit = "x"};
        r[n++] = (bench_row_t){.key = "ratio_highest", .figure = "  highest round's ratio", .value = hi, .unit = "x"};
    }
    r[n++] = (bench_row_t){.key = "wal_per_txn", .figure = "  WAL per writer transaction (all sessions)",
                           .value = m.wal_per_txn, .unit = "B", .ref_name = "B alone", .ref = alone->wal_per_txn};
    r[n++] = (bench_row_t){.key = "relay_cores", .figure = "  its process CPU during the run",
                           .value = m.relay_cores, .unit = "cores"};
    r[n++] = (bench_row_t){.key = "relay_sleeps", .figure = "  its threads' sleeps (wake-ups) per writer event",
                           .value = m.relay_sleeps / m.tps};
    r[n++] = (bench_row_t){.key = "backend_cores", .figure = "  its PostgreSQL backends' CPU during the run",
                           .value = m.backend_cores, .unit = "cores"};
    r[n++] = (bench_row_t){.key = "relay_us_per_event", .figure = "  it + backends CPU per writer event",
                           .value = us_per_event(&m), .unit = "us"};
    if (!isnan(m.retention_cores))
        r[n++] = (bench_row_t){.key = "retention_us_per_event", .figure = "  of which its retention session's backend",
                               .value = m.retention_cores / m.tps * 1e6, .unit = "us"};
    if (!isnan(m.mock_cores))
        r[n++] = (bench_row_t){.key = "mock_cores", .figure = "  mock broker CPU during the run (same box)",
                               .value = m.mock_cores, .unit = "cores"};
    r[n++] = (bench_row_t){.key = "flag_share", .figure = "  waiting flag set (share of samples)",
                           .value = m.flag_share * 100, .unit = "%"};
    if (v->backlog)
        r[n++] = (bench_row_t){.key = "backlog_s", .figure = "  backlog all marked after", .value = done, .unit = "s",
                               .ref_name = "s run length", .ref = b->duration_s};
    if (v->backlog && isnan(done))
        snprintf(r[n - 1].figure, sizeof r[0].figure, "  backlog NOT drained within the run");
    if (end_rows) {
        r[n++] = (bench_row_t){.key = "deleted", .figure = "  rows removed during the run",
                               .value = end[END_WRITTEN] - end[END_LEFT], .ref_name = "rows written",
                               .ref = end[END_WRITTEN]};
        r[n++] = (bench_row_t){.key = "outbox_mb", .figure = "  outbox at the end: total relation size",
                               .value = end[END_BYTES] / 1048576, .unit = "MB"};
        r[n++] = (bench_row_t){.key = "dead_tuples", .figure = "  outbox at the end: n_dead_tup",
                               .value = end[END_DEAD]};
    }
    variant_add(b, sc, v, r, n);
}

int scenario_writers(bench_t *b) {
    static const variant_t v[] = {
        {.tag = "relay-draining", .key = "relay_draining", .figure = "relay draining the --events backlog",
         .backlog = 1, .target = 0.9},
        {.tag = "relay-idle", .key = "relay_idle", .figure = "relay idle at start, then following",
         .target = 0.95},
    };
    enum { NV = sizeof v / sizeof v[0] };
    pgb_out_t alone[ALONE_MAX];
    wvar_t w[NV];
    int na;

    if (writers_measure(b, v, NV, w, alone, &na) != 0)
        return -1;
    alone_rows(b, "writers", alone, na);
    for (int k = 0; k < NV; k++)
        variant_rows(b, "writers", &v[k], &w[k], &alone[0], 0);
    return 0;
}

/* The relay following the writers with retention off, deleting, and
 * dropping partitions, against the writers alone and against off. keep_s 0
 * and a pass every second: retention keeps pace with the writers from the
 * run's first second (see BENCHMARKS.md). Partitions of 5,000 ids, 20
 * ahead: several fill and go in a run, and the writers never outrun them. */
int scenario_retention(bench_t *b) {
    static const variant_t v[] = {
        {.tag = "retention-off", .key = "off", .figure = "relay following, retention off",
         .sets = {"retention.mode=\"off\""}},
        {.tag = "retention-delete", .key = "delete", .figure = "relay following, retention delete",
         .sets = {"retention.mode=\"delete\"", "retention.keep_s=0", "retention.interval_s=1"}, .retention = 1},
        {.tag = "retention-partitions", .key = "partitions", .figure = "relay following, retention partitions",
         .sets = {"retention.mode=\"partitions\"", "retention.keep_s=0", "retention.interval_s=1",
                  "retention.partition_rows=5000", "retention.partitions_ahead=20"},
         .retention = 1, .partitioned = 1},
    };
    enum { NV = sizeof v / sizeof v[0] };
    pgb_out_t alone[ALONE_MAX], m[NV];
    wvar_t w[NV];
    double ref[NV];
    int na;

    if (writers_measure(b, v, NV, w, alone, &na) != 0)
        return -1;
    alone_rows(b, "retention", alone, na);
    for (int k = 0; k < NV; k++) {
        variant_rows(b, "retention", &v[k], &w[k], &alone[0], 1);
        m[k] = pgb_mean(&w[k], &ref[k]);
    }
    for (int k = 1; k < NV; k++) {
        bench_row_t r[] = {
            {.key = "vs_off", .value = m[k].tps / ref[k] * 100, .unit = "%", .ref_name = "% off's share",
             .ref = m[0].tps / ref[0] * 100},
            {.key = "extra_us_per_event", .figure = "  extra CPU per writer event (it + backends)",
             .value = us_per_event(&m[k]) - us_per_event(&m[0]), .unit = "us", .ref_name = "us retention off",
             .ref = us_per_event(&m[0])},
        };
        snprintf(r[0].figure, sizeof r[0].figure, "%s: its share of writers' tps, against off's", v[k].key);
        variant_add(b, "retention", &v[k], r, 2);
    }
    return 0;
}
