/* obx-bench internals shared by its files: the run context, process and
 * database helpers, the scenarios and the report. See bench.c for usage. */
#ifndef OBX_BENCH_H
#define OBX_BENCH_H

#include <libpq-fe.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proc.h"

#define BENCH_DB "obx_bench"
/* One row: 1 while the relay says it is waiting (the trigger NOTIFYs), else 0. */
#define BENCH_WAITING_SQL "SELECT COALESCE(pg_sequence_last_value('outbox_relay_waiting'), 0)"
/* application_name of the relay's retention session (relay/relayd/retention.c). */
#define BENCH_RETENTION_APP "outbox-relay retention"
#define BENCH_MAX_RATES 8
#define BENCH_MAX_SETS 32
#define BENCH_SCENARIO_SETS 6
#define BENCH_MAX_ROWS 200
#define BENCH_MAX_NOTES 48
#define BENCH_MAX_STARTS 32
#define BENCH_MAX_ROUNDS 10

enum {
    SC_DRAIN = 1 << 0,
    SC_STEADY = 1 << 1,
    SC_IDLE = 1 << 2,
    SC_WRITERS = 1 << 3,
    SC_CONSUMER = 1 << 4,
    SC_FOOTPRINT = 1 << 5,
    SC_RETENTION = 1 << 6,
};

/* One line of the report. value or ref is NAN when not measured. */
typedef struct {
    char scenario[16];
    char figure[72];
    char key[48];          /* JSON name, unique within the scenario */
    double value;
    char unit[12];
    char ref_name[48];     /* "" when the figure has no reference */
    double ref;
    char target_op;        /* '>' at least, '<' at most, 0 no target */
    int target_on_ratio;   /* the target applies to value/ref, not value */
    double target;
} bench_row_t;

/* A child process the bench started (relay, consumer, tools). */
typedef struct {
    pid_t pid;
    double started;        /* bench_now() just before fork */
    double ready;          /* bench_now() when its readiness line was seen */
    char log[600];
} bench_child_t;

typedef struct {
    /* options */
    long events;
    int payload, aggregates, duration_s, writers, rounds, idle_samples;
    long consumer_events;
    int rates[BENCH_MAX_RATES], nrates;
    unsigned scenarios;
    int json, keep;
    const char *pg_host_opt, *bootstrap_opt;
    int pg_port;
    /* GROUP.KEY=VALUE for the relay config: --relay-set's, then, past nsets
     * while a scenario starts a relay, those of the scenario */
    const char *sets[BENCH_MAX_SETS + BENCH_SCENARIO_SETS];
    int nsets;

    /* environment */
    char build_root[512], source_root[512], pg_bindir[512], workdir[512];
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
    int relay_seq;         /* numbers the relay configs and logs */
    int pgbench_seq;       /* numbers the pgbench outputs */
    int checkpoint_warned;
    double busy_cores_max, busy_disk_max; /* of every probe */

    /* raw limits, measured first, used as references by later scenarios;
     * NAN when not measured */
    double raw_pg_rate, raw_kafka_rate;   /* rows/s, msgs/s */
    double raw_cpu_100k;                  /* client CPU of (a) + (b) per 100k */
    double raw_backend_cpu_100k;          /* PostgreSQL backend CPU of (a) per 100k, NAN unknown */
    double raw_producer_hwm_mb;
    double raw_first_ack_ms;              /* (b0) rd_kafka_new -> first ack, new topic */
    double raw_connect_ms;                /* bare libpq connect + LISTEN */

    /* results */
    bench_row_t rows[BENCH_MAX_ROWS];
    int nrows;
    char notes[BENCH_MAX_NOTES][320];
    int nnotes;
    double starts_ms[BENCH_MAX_STARTS];
    int nstarts;
} bench_t;

/* Set by SIGINT/SIGTERM: every wait gives up and the bench cleans up. */
extern volatile sig_atomic_t bench_stop;

/* util.c: time, logging, processes */
double bench_now(void);
/* Wall-clock seconds since the epoch: the clock of PostgreSQL's timestamps. */
double bench_wall(void);
void bench_sleep_until(double t);
void bench_sleep_ms(double ms);
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_note(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double bench_pick(double *v, size_t n, double p);
/* Load of the whole machine over ms: CPU busy in cores, and the busiest
 * disk's share of time doing I/O (0..1). NAN when unreadable. */
void bench_machine_busy(int ms, double *cores, double *disk);
/* Probes the machine for 300 ms while the bench is idle and adds a note
 * naming what when something else was busy. */
void bench_probe(bench_t *b, const char *what);
/* Waits for needle in the child's log; 0 when seen (sets c->ready). */
int bench_wait_log(bench_child_t *c, const char *needle, double timeout_s);
void bench_log_tail(const char *path);
/* The value of --relay-set number i when it is in group ("kafka",
 * "relay", ...), its key (without the group) in key; else NULL. parse_set
 * checked the form GROUP.KEY=VALUE. */
const char *bench_set(const bench_t *b, int i, const char *group, char *key, size_t keysize);
const char *bench_bin(const bench_t *b, const char *name);

/* util.c: PostgreSQL */
PGconn *db_open(const bench_t *b, const char *dbname);
int db_exec(PGconn *c, const char *sql);
/* First column of the first row as a number (NAN for NULL); 0 or -1. */
int db_num(PGconn *c, const char *sql, int nparams, const char *const *params, double *out);
int db_checkpoint(bench_t *b, PGconn *c);
/* Recreates the bench database with the outbox and inbox schema. */
PGconn *db_reset(bench_t *b);
int db_apply_file(const bench_t *b, PGconn *c, const char *rel);
/* Inserts n rows of --payload bytes over --aggregates keys, then VACUUM
 * ANALYZE and CHECKPOINT so every run starts from the same table state. */
int db_prefill(bench_t *b, PGconn *c, long n, double *maxid);
/* Reads the one row of res as n numbers (NULL: NAN) and clears it. */
int db_row(PGresult *res, double *out, int n, const char *what);
/* Polls one query until it returns a non-zero number. */
int db_poll(PGconn *c, const char *sql, int nparams, const char *const *params, double timeout_s);
int db_backend_pids(PGconn *c, const char *application_name, pid_t *pids, int max);
/* CPU seconds of a backend process, when PostgreSQL runs on this machine
 * (a unix socket); NAN otherwise. */
double db_backend_cpu_s(const bench_t *b, const pid_t *pids, int n);

/* util.c: the relay and the mock broker */
/* Starts the relay with the scenario's GROUP.KEY=VALUE settings, NULL or
 * NULL-terminated (at most BENCH_SCENARIO_SETS; --relay-set's win). */
int relay_start(bench_t *b, bench_child_t *r, const char *const *sets);
/* Runs `outbox-relay migrate` with the config relay_start would write. */
int relay_migrate(bench_t *b, const char *const *sets);
int relay_stop(bench_child_t *r);
/* A scenario's way out: kills the relay if still running, closes c, returns rc. */
int scenario_end(bench_child_t *relay, PGconn *c, int rc);
int mock_start(bench_t *b);

/* raw.c */
int scenario_raw(bench_t *b);
/* Loop (a) again on a fresh --events backlog: rows/s, NAN on failure. */
double raw_pg_rate(bench_t *b);
/* drain.c: waits until every row up to maxid is marked. The newest row is
 * polled first (one primary-key lookup), then the exact count. *done_at is
 * when the query that saw none left was sent: at most one poll late. */
int wait_marked(PGconn *c, const bench_child_t *relay, double maxid, double timeout_s, double *done_at);
double drain_timeout(long rows);
int scenario_drain(bench_t *b);
/* latency.c */
int scenario_steady(bench_t *b);
int scenario_idle(bench_t *b);
/* writers.c */
int scenario_writers(bench_t *b);
int scenario_retention(bench_t *b);
/* consumer.c */
int scenario_consumer(bench_t *b);

/* report.c */
bench_row_t *bench_row(bench_t *b, const char *scenario, const char *key, const char *figure,
                       double value, const char *unit);
void bench_row_ref(bench_row_t *r, const char *ref_name, double ref);
void bench_row_target(bench_row_t *r, char op, int on_ratio, double target);
void bench_report_table(const bench_t *b);
void bench_report_json(const bench_t *b);

#endif
