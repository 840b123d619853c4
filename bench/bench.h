/* obx-bench internals shared by its files. BENCHMARKS.md says what each
 * scenario measures and how. */
#ifndef OBX_BENCH_H
#define OBX_BENCH_H

#include <libpq-fe.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proc.h"

#define BENCH_DB "obx_bench"
/* application_name of the relay's retention session (relay/relayd/retention.c). */
#define BENCH_RETENTION_APP "outbox-relay retention"
#define BENCH_MAX_RATES 8
#define BENCH_MAX_SETS 32
#define BENCH_SCENARIO_SETS 6
#define BENCH_MAX_ROWS 200
#define BENCH_MAX_NOTES 48
#define BENCH_MAX_STARTS 64
#define BENCH_MAX_ROUNDS 10

enum {
    SC_DRAIN = 1 << 0,
    SC_STEADY = 1 << 1,
    SC_IDLE = 1 << 2,
    SC_WRITERS = 1 << 3,
    SC_CONSUMER = 1 << 4,
    SC_FOOTPRINT = 1 << 5,
};

/* One line of the report, written with designated initializers: a
 * reference is shown only with a ref_name, a target only with a target_op. */
typedef struct {
    char figure[72];
    double value;          /* NAN: not measured */
    char unit[12];
    char ref_name[48];
    double ref;
    char target_op;        /* '>' at least, '<' at most */
    int target_on_ratio;   /* the target applies to value/ref, not value */
    double target;
    char scenario[16];     /* set by bench_rows */
} bench_row_t;

typedef struct {
    pid_t pid;
    double started;        /* bench_now() just before fork */
    double ready;          /* bench_now() when bench_wait_log saw its line */
    char log[600];
} bench_child_t;

typedef struct {
    /* options */
    long events, consumer_events;
    int payload, aggregates, duration_s, writers, rounds, idle_samples;
    int rates[BENCH_MAX_RATES], nrates;
    unsigned scenarios;
    int keep;
    const char *pg_host_opt, *bootstrap_opt;
    int pg_port;
    /* GROUP.KEY=VALUE for the relay config: --relay-set's, then, past nsets
     * while a scenario starts a relay, those of the scenario */
    const char *sets[BENCH_MAX_SETS + BENCH_SCENARIO_SETS];
    int nsets;

    /* environment */
    char build_root[512], source_root[512], workdir[512];
    char pghost[512];
    int own_pg;
    char bootstrap[256];
    pid_t mock_pid;
    int mock_nodelay;      /* the mock runs with bench/nodelay.c preloaded */
    char conn_base[1024];  /* host, port, user: everything but dbname */
    char conninfo[1200];   /* conn_base plus the bench database */
    char topic_prefix[64];
    char server_version[32], fsync[16];
    int commit_ts;         /* track_commit_timestamp is on */
    int relay_seq, pgbench_seq; /* number the configs, logs and outputs */
    int checkpoint_warned;
    double busy_cores_max; /* of every load probe */

    /* raw limits: references for later scenarios, NAN until measured */
    double raw_pg_rate, raw_kafka_rate;   /* rows/s, msgs/s */
    double raw_cpu_100k;                  /* client CPU of (a) + (b) per 100k */
    double raw_backend_cpu_100k;          /* backend CPU of (a) per 100k */
    double raw_producer_hwm_mb;
    double raw_first_ack_ms;              /* (b0) */
    double raw_connect_ms;                /* bare connect + LISTEN */

    /* results */
    bench_row_t rows[BENCH_MAX_ROWS];
    int nrows;
    char notes[BENCH_MAX_NOTES][320];
    int nnotes;
    double starts_ms[BENCH_MAX_STARTS];
    int nstarts;
} bench_t;

/* db_wait's: when the value was first above 0, that value, and when the
 * query that reached the goal was sent. */
typedef struct {
    double first_at, first_n, done_at;
} bench_wait_t;

/* Set by SIGINT/SIGTERM: every wait gives up and the bench cleans up. */
extern volatile sig_atomic_t bench_stop;

double bench_now(void);
double bench_wall(void); /* epoch seconds: the clock of PostgreSQL's timestamps */
void bench_sleep_until(double t);
void bench_sleep_ms(double ms);
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_note(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes a file only this user may read (configs hold the conninfo). */
int bench_write(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* percentile_disc's definition; sorts v. */
double bench_pick(double *v, size_t n, double p);
/* Notes other work on the machine (CPU busy over 300 ms while the bench idles). */
void bench_probe(bench_t *b, const char *what);
void bench_log_tail(const char *path);
/* Reaps pid after sig (0: waits for it to exit); logs a failure with log's tail. */
int bench_reap(pid_t pid, int sig, double timeout_ms, const char *what, const char *log);
const char *bench_bin(const bench_t *b, const char *name);

PGconn *db_open(const bench_t *b, const char *dbname);
/* Checks (logging a failure as what's) and clears res: 0 or -1. */
int db_check(PGconn *c, PGresult *res, const char *what);
int db_exec(PGconn *c, const char *sql);
/* The one row of sql as n numbers, NULL as NAN; db_num: its first, with
 * param as $1 unless NULL. */
int db_row(PGconn *c, const char *sql, int nparams, const char *const *params, double *out, int n);
int db_num(PGconn *c, const char *sql, const char *param, double *out);
/* Polls sql every sleep_ms until its number reaches want, failing when
 * child (may be NULL) exits. */
int db_wait(PGconn *c, const char *sql, const char *param, double want, double sleep_ms, double timeout_s,
            const bench_child_t *child, bench_wait_t *w);
/* Waits (10 s at most) until the relay says it is waiting. */
int relay_waiting(PGconn *c);
int db_checkpoint(bench_t *b, PGconn *c);
PGconn *db_reset(bench_t *b); /* a new bench database, outbox and inbox schema */
int db_apply_file(const bench_t *b, PGconn *c, const char *rel);
/* n rows of --payload bytes over --aggregates keys, then VACUUM ANALYZE
 * and CHECKPOINT so that every run starts from the same table state. */
int db_prefill(bench_t *b, PGconn *c, long n, double *maxid);
int db_backend_pids(PGconn *c, const char *application_name, pid_t *pids, int max);
/* CPU seconds of backends when PostgreSQL runs on this machine; else NAN. */
double db_backend_cpu_s(const bench_t *b, const pid_t *pids, int n);

/* Starts the relay with the scenario's settings (NULL-terminated, at most
 * BENCH_SCENARIO_SETS; --relay-set's win) and waits until it is connected. */
int relay_start(bench_t *b, bench_child_t *r, const char *const *sets);
int relay_migrate(bench_t *b, const char *const *sets);
int relay_stop(bench_child_t *r);
/* A scenario's way out: kills the child if still running, closes c, returns rc. */
int scenario_end(bench_child_t *relay, PGconn *c, int rc);
int mock_start(bench_t *b);

int scenario_raw(bench_t *b);
/* Loop (a) again on a fresh --events backlog: rows/s, NAN on failure. */
double raw_pg_rate(bench_t *b);
/* Waits until every row up to maxid is marked; *done_at as bench_wait_t's. */
int wait_marked(PGconn *c, const bench_child_t *relay, double maxid, double timeout_s, double *done_at);
double drain_timeout(long rows);
int scenario_drain(bench_t *b);
int scenario_steady(bench_t *b);
int scenario_idle(bench_t *b);
int scenario_writers(bench_t *b);
int scenario_consumer(bench_t *b);

void bench_rows(bench_t *b, const char *scenario, const bench_row_t *rows, size_t n);
#define BENCH_ROWS(b, scenario, rows) bench_rows(b, scenario, rows, sizeof rows / sizeof rows[0])
void bench_report(const bench_t *b);

#endif
