/* obx-bench helpers: clocks, child processes, PostgreSQL, the relay and the
 * mock broker. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t bench_stop;

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_now(void) { return clock_s(CLOCK_MONOTONIC); }

double bench_wall(void) { return clock_s(CLOCK_REALTIME); }

void bench_sleep_until(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !bench_stop)
        continue;
}

void bench_sleep_ms(double ms) { bench_sleep_until(bench_now() + ms / 1000.0); }

void bench_log(const char *fmt, ...) {
    va_list ap;
    fputs("obx-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void bench_note(bench_t *b, const char *fmt, ...) {
    char line[sizeof b->notes[0]];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    bench_log("note: %s", line);
    if (b->nnotes < BENCH_MAX_NOTES)
        snprintf(b->notes[b->nnotes++], sizeof b->notes[0], "%s", line);
}

int bench_write(const char *path, const char *fmt, ...) {
    FILE *f = fopen(path, "w");
    va_list ap;

    if (!f) {
        bench_log("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    chmod(path, 0600);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f) == 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Same definition as PostgreSQL's percentile_disc: the first value whose
 * cumulative share reaches p. Sorts v. */
double bench_pick(double *v, size_t n, double p) {
    size_t i;
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    i = (size_t)ceil(p * (double)n);
    return v[i > 0 ? i - 1 : 0];
}

/* Busy (not idle, not iowait) and total jiffies of all CPUs. */
static int read_cpu_jiffies(unsigned long long *busy, unsigned long long *total) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (!f)
        return -1;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return -1;
    *total = 0;
    for (int i = 0; i < 8; i++)
        *total += v[i];
    *busy = *total - v[3] - v[4];
    return 0;
}

void bench_probe(bench_t *b, const char *what) {
    unsigned long long b0, t0, b1, t1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double cores;

    if (read_cpu_jiffies(&b0, &t0) != 0)
        return;
    bench_sleep_ms(300);
    if (read_cpu_jiffies(&b1, &t1) != 0 || t1 <= t0)
        return;
    cores = (double)(b1 - b0) / (double)(t1 - t0) * (double)(cpus > 0 ? cpus : 1);
    if (cores > b->busy_cores_max)
        b->busy_cores_max = cores;
    /* The bench's own servers idle at well under this. */
    if (cores > 0.2)
        bench_note(b, "before %s: the machine was busy while the bench idled (%.2f cores): other work, or"
                      " PostgreSQL still busy with the previous step", what, cores);
}

void bench_log_tail(const char *path) {
    char tail[4096];
    bench_log("last lines of %s:\n%s", path, proc_tail(path, 8, tail, sizeof tail));
}

/* Waits for needle in the child's log; 0 when seen (sets c->ready). */
static int bench_wait_log(bench_child_t *c, const char *needle, double timeout_s) {
    double deadline = bench_now() + timeout_s;

    while (!bench_stop && bench_now() < deadline) {
        char *text = proc_read_file(c->log);
        int seen = text && strstr(text, needle);

        free(text);
        if (seen) {
            c->ready = bench_now();
            return 0;
        }
        if (proc_exited(c->pid)) {
            bench_log("%s exited before logging \"%s\"", c->log, needle);
            bench_log_tail(c->log);
            return -1;
        }
        /* 1 ms: the start-up time is read off this loop. */
        bench_sleep_ms(1);
    }
    if (!bench_stop) {
        bench_log("no \"%s\" in %s after %.0f s", needle, c->log, timeout_s);
        bench_log_tail(c->log);
    }
    return -1;
}

int bench_reap(pid_t pid, int sig, double timeout_ms, const char *what, const char *log) {
    int st = proc_reap(pid, sig, timeout_ms);

    if (st != 0) {
        bench_log("%s exited with %d", what, st);
        bench_log_tail(log);
    }
    return st == 0 ? 0 : -1;
}

const char *bench_bin(const bench_t *b, const char *name) {
    static char buf[4][700];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", b->build_root, name);
    return p;
}

PGconn *db_open(const bench_t *b, const char *dbname) {
    char ci[1400];
    PGconn *c;

    snprintf(ci, sizeof ci, "%s dbname=%s application_name=obx-bench", b->conn_base, dbname);
    c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        bench_log("connect to %s: %s", dbname, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int res_ok(PGconn *c, PGresult *res, const char *what) {
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 1;
    bench_log("%.200s: %s", what, res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    return 0;
}

int db_check(PGconn *c, PGresult *res, const char *what) {
    int ok = res_ok(c, res, what);
    PQclear(res);
    return ok ? 0 : -1;
}

int db_exec(PGconn *c, const char *sql) {
    return db_check(c, PQexec(c, sql), sql);
}

int db_row(PGconn *c, const char *sql, int nparams, const char *const *params, double *out, int n) {
    PGresult *res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    int ok = res_ok(c, res, sql) && PQntuples(res) == 1;

    if (ok) {
        for (int i = 0; i < n; i++)
            out[i] = PQgetisnull(res, 0, i) ? NAN : strtod(PQgetvalue(res, 0, i), NULL);
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        bench_log("%.200s: %d rows, not one", sql, PQntuples(res));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

int db_num(PGconn *c, const char *sql, const char *param, double *out) {
    return db_row(c, sql, param != NULL, &param, out, 1);
}

int db_wait(PGconn *c, const char *sql, const char *param, double want, double sleep_ms, double timeout_s,
            const bench_child_t *child, bench_wait_t *w) {
    double deadline = bench_now() + timeout_s, v;
    bench_wait_t own;

    if (!w)
        w = &own;
    w->first_at = NAN;
    while (!bench_stop && bench_now() < deadline) {
        double asked = bench_now();
        if (db_num(c, sql, param, &v) != 0)
            return -1;
        if (v > 0 && isnan(w->first_at)) {
            w->first_at = asked;
            w->first_n = v;
        }
        if (v >= want) {
            w->done_at = asked;
            return 0;
        }
        if (child && proc_exited(child->pid)) {
            bench_log("%s: the process died", child->log);
            bench_log_tail(child->log);
            return -1;
        }
        bench_sleep_ms(sleep_ms);
    }
    if (!bench_stop)
        bench_log("timed out waiting for %.0f: %.200s", want, sql);
    return -1;
}

int relay_waiting(PGconn *c) {
    /* The sequence is 1 while the relay says it is waiting (the trigger NOTIFYs). */
    return db_wait(c, "SELECT COALESCE(pg_sequence_last_value('outbox_relay_waiting'), 0)", NULL, 1, 1, 10, NULL,
                   NULL);
}

int db_checkpoint(bench_t *b, PGconn *c) {
    PGresult *res = PQexec(c, "CHECKPOINT");
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;

    /* A given server may refuse it (PostgreSQL 15 needs pg_checkpoint): the
     * runs are then less comparable, not wrong. */
    if (!ok && !b->checkpoint_warned) {
        b->checkpoint_warned = 1;
        bench_note(b, "CHECKPOINT refused (%s): a checkpoint may fall inside a timed run",
                   strtok(PQresultErrorMessage(res), "\n"));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

int db_apply_file(const bench_t *b, PGconn *c, const char *rel) {
    char path[700];
    char *sql;
    int rc;

    snprintf(path, sizeof path, "%s/%s", b->source_root, rel);
    sql = proc_read_file(path);
    if (!sql) {
        bench_log("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    rc = db_exec(c, sql);
    free(sql);
    return rc;
}

PGconn *db_reset(bench_t *b) {
    PGconn *admin = db_open(b, "postgres"), *c = NULL;

    if (!admin || db_exec(admin, "DROP DATABASE IF EXISTS " BENCH_DB " WITH (FORCE)") != 0 ||
        db_exec(admin, "CREATE DATABASE " BENCH_DB) != 0)
        goto out;
    c = db_open(b, BENCH_DB);
    if (c && (db_apply_file(b, c, "schema/001_outbox.sql") != 0 ||
              db_apply_file(b, c, "schema/002_inbox.sql") != 0)) {
        PQfinish(c);
        c = NULL;
    }
out:
    PQfinish(admin);
    return c;
}

int db_prefill(bench_t *b, PGconn *c, long n, double *maxid) {
    char payload[16], aggs[16], count[24];
    const char *params[3] = {payload, aggs, count};

    snprintf(payload, sizeof payload, "%d", b->payload);
    snprintf(aggs, sizeof aggs, "%d", b->aggregates);
    snprintf(count, sizeof count, "%ld", n);
    /* Payloads differ per row (the row number leads) and are plain ASCII. */
    if (db_check(c, PQexecParams(c,
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " SELECT 'bench', 'agg-' || (g % $2::int), 'BenchEvent',"
        "        convert_to(rpad(g::text || ':', $1::int, 'abcdefghijklmnopqrstuvwxyz'), 'UTF8')"
        " FROM generate_series(1, $3::bigint) g",
        3, NULL, params, NULL, NULL, 0), "prefill") != 0 || db_exec(c, "VACUUM ANALYZE outbox") != 0)
        return -1;
    db_checkpoint(b, c);
    return db_num(c, "SELECT max(id) FROM outbox", NULL, maxid);
}

/* Oldest first. */
int db_backend_pids(PGconn *c, const char *application_name, pid_t *pids, int max) {
    const char *params[1] = {application_name};
    PGresult *res = PQexecParams(c,
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1 || '%'"
        " AND datname = current_database() ORDER BY backend_start",
        1, NULL, params, NULL, NULL, 0);
    int n = 0;

    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        for (; n < PQntuples(res) && n < max; n++)
            pids[n] = (pid_t)atol(PQgetvalue(res, n, 0));
    PQclear(res);
    return n;
}

double db_backend_cpu_s(const bench_t *b, const pid_t *pids, int n) {
    double sum = 0;
    /* A remote backend's pid would name some unrelated local process. */
    if (b->pghost[0] != '/' || n <= 0)
        return NAN;
    for (int i = 0; i < n; i++)
        sum += proc_cpu_s(pids[i]);
    return sum;
}

/* The value of setting number i when it is in group, its key in key; else NULL. */
static const char *bench_set(const bench_t *b, int i, const char *group, char *key, size_t keysize) {
    const char *s = b->sets[i], *eq = strchr(s, '=');
    size_t glen = strlen(group);

    if (strncmp(s, group, glen) != 0 || s[glen] != '.')
        return NULL;
    snprintf(key, keysize, "%.*s", (int)(eq - s - (int)glen - 1), s + glen + 1);
    return eq + 1;
}

/* GROUP.KEY=VALUE settings for one group, as libconfig lines: the first of
 * a key wins (libconfig refuses a repeated one), so --relay-set overrides
 * what a scenario adds after it for one start (n sets in all). */
static void write_sets(const bench_t *b, FILE *f, const char *group, int n) {
    char key[128], earlier[128];
    for (int i = 0; i < n; i++) {
        const char *v = bench_set(b, i, group, key, sizeof key);
        int dup = 0;
        for (int j = 0; j < i && v && !dup; j++)
            dup = bench_set(b, j, group, earlier, sizeof earlier) && strcmp(key, earlier) == 0;
        if (v && !dup)
            fprintf(f, " %s = %s;", key, v);
    }
}

/* Writes the relay's config for one start, with the scenario's own
 * settings (NULL-terminated, --relay-set's win), and spawns the relay with
 * cmd as its last argument (NULL: run). */
static int relay_spawn(bench_t *b, bench_child_t *r, const char *const *sets, const char *cmd) {
    static const char *const groups[] = {"postgres", "kafka", "relay", "retention", "log"};
    char conf[600];
    char *argv[5] = {(char *)bench_bin(b, "outbox-relay"), "-c", conf, (char *)cmd, NULL};
    FILE *f;
    int seq = ++b->relay_seq, n = b->nsets;

    for (; sets && *sets && n < BENCH_MAX_SETS + BENCH_SCENARIO_SETS; sets++)
        b->sets[n++] = *sets;
    memset(r, 0, sizeof *r);
    r->pid = -1;
    snprintf(conf, sizeof conf, "%s/relay-%d.conf", b->workdir, seq);
    snprintf(r->log, sizeof r->log, "%s/relay-%d.log", b->workdir, seq);
    f = fopen(conf, "w");
    if (!f) {
        bench_log("cannot write %s: %s", conf, strerror(errno));
        return -1;
    }
    /* Everything not written here keeps the relay's defaults, which are the
     * values of config/outbox-relay.conf (batch 500, 5000 in flight,
     * linger 0, stats every 10 s, retention deleting rows sent an hour
     * ago), unless --relay-set or the scenario says otherwise. */
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        fprintf(f, "%s: {", groups[g]);
        if (g == 0)
            fprintf(f, " conninfo = \"%s\";", b->conninfo);
        else if (g == 1)
            fprintf(f, " bootstrap_servers = \"%s\";", b->bootstrap);
        else if (g == 2)
            fprintf(f, " topic_pattern = \"%s.${aggregate_type}\";", b->topic_prefix);
        write_sets(b, f, groups[g], n);
        fprintf(f, " };\n");
    }
    fclose(f);
    chmod(conf, 0600);
    r->started = bench_now();
    r->pid = proc_spawn(argv, r->log, -1);
    return r->pid < 0 ? -1 : 0;
}

int relay_start(bench_t *b, bench_child_t *r, const char *const *sets) {
    if (relay_spawn(b, r, sets, NULL) != 0)
        return -1;
    /* Logged once the session is up: connected, LISTEN issued, statements
     * prepared, leadership lock taken. */
    if (bench_wait_log(r, "msg=\"postgres connected\"", 15) != 0) {
        proc_reap(r->pid, SIGKILL, 5000);
        r->pid = -1;
        return -1;
    }
    if (b->nstarts < BENCH_MAX_STARTS)
        b->starts_ms[b->nstarts++] = (r->ready - r->started) * 1000.0;
    return 0;
}

int relay_migrate(bench_t *b, const char *const *sets) {
    bench_child_t m;

    if (relay_spawn(b, &m, sets, "migrate") != 0)
        return -1;
    return bench_reap(m.pid, 0, 60000, "outbox-relay migrate", m.log);
}

int relay_stop(bench_child_t *r) {
    pid_t pid = r->pid;

    r->pid = -1;
    return bench_reap(pid, SIGTERM, 30000, "the relay", r->log);
}

int scenario_end(bench_child_t *relay, PGconn *c, int rc) {
    if (relay->pid > 0)
        proc_reap(relay->pid, SIGKILL, 5000);
    PQfinish(c);
    return rc;
}

int mock_start(bench_t *b) {
    char log[600], shim[600], *argv[] = {(char *)bench_bin(b, "obx-mock-kafka"), NULL}, *text;
    /* Its first stdout line is the bootstrap list: stdout goes to out.log, stderr to log. */
    bench_child_t out = {.pid = -1};
    int fd;

    snprintf(log, sizeof log, "%s/mock-kafka.log", b->workdir);
    snprintf(out.log, sizeof out.log, "%s/mock-kafka.out", b->workdir);
    fd = open(out.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        bench_log("cannot write %s: %s", out.log, strerror(errno));
        return -1;
    }
    /* Only the mock gets the shim (see nodelay.c): set for this one spawn.
     * No other thread runs now, so the environment is ours to change. */
    snprintf(shim, sizeof shim, "%s/bench/obx-bench-nodelay.so", b->build_root);
    b->mock_nodelay = access(shim, R_OK) == 0;
    if (b->mock_nodelay)
        setenv("LD_PRELOAD", shim, 1);
    else
        bench_note(b, "%s missing: the mock keeps Nagle on and adds ~40 ms stalls to latencies", shim);
    out.pid = b->mock_pid = proc_spawn(argv, log, fd);
    unsetenv("LD_PRELOAD");
    close(fd);
    if (out.pid < 0 || bench_wait_log(&out, "\n", 15) != 0) {
        bench_log_tail(log);
        return -1;
    }
    text = proc_read_file(out.log);
    snprintf(b->bootstrap, sizeof b->bootstrap, "%.*s", text ? (int)strcspn(text, "\n") : 0, text ? text : "");
    free(text);
    return 0;
}
