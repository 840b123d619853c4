/* obx-bench: the outbox-relay benchmark; BENCHMARKS.md says how to run it
 * and what each scenario measures. This file parses options, sets up the
 * servers, runs the scenarios and prints the report. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef OBX_BENCH_BUILD_ROOT
#define OBX_BENCH_BUILD_ROOT "."
#endif
#ifndef OBX_BENCH_SOURCE_ROOT
#define OBX_BENCH_SOURCE_ROOT "."
#endif

#define EXIT_USAGE 2
#define OWN_PG_PORT 54349
#define STRINGIFY(x) #x
#define XSTR(x) STRINGIFY(x)

typedef int (*scenario_fn)(bench_t *b);

/* In the order they run; footprint's figures come out of the drain. */
static const struct {
    const char *name;
    unsigned bit;
    scenario_fn fn;
} scenarios[] = {
    {"drain", SC_DRAIN, scenario_drain},       {"footprint", SC_FOOTPRINT, NULL},
    {"steady", SC_STEADY, scenario_steady},    {"idle", SC_IDLE, scenario_idle},
    {"writers", SC_WRITERS, scenario_writers}, {"consumer", SC_CONSUMER, scenario_consumer},
};

/* One option: a number at off within min..max (kind 'i' int, 'l' long), a
 * string or flag at off ('s', 'f'), or what parse makes of it ('c'). */
typedef struct {
    const char *name, *arg, *help;
    char kind;
    size_t off;
    long min, max;
    int (*parse)(bench_t *b, const char *arg);
} opt_t;

static int parse_num(const opt_t *o, const char *arg, long *out) {
    char *end;
    errno = 0;
    *out = strtol(arg, &end, 10);
    if (errno || end == arg || *end || *out < o->min || *out > o->max) {
        fprintf(stderr, "obx-bench: --%s must be an integer in %ld..%ld\n", o->name, o->min, o->max);
        return -1;
    }
    return 0;
}

static int parse_rates(bench_t *b, const char *arg) {
    static const opt_t rate = {"rates", "", "", 'i', 0, 1, 1000000, NULL};
    char buf[256], *save = NULL;
    long v;

    snprintf(buf, sizeof buf, "%s", arg);
    b->nrates = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (b->nrates == BENCH_MAX_RATES) {
            fprintf(stderr, "obx-bench: --rates takes at most %d rates\n", BENCH_MAX_RATES);
            return -1;
        }
        if (parse_num(&rate, t, &v) != 0)
            return -1;
        b->rates[b->nrates++] = (int)v;
    }
    return b->nrates > 0 ? 0 : -1;
}

static int parse_scenario(bench_t *b, const char *arg) {
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(arg, scenarios[i].name) == 0) {
            b->scenarios |= scenarios[i].bit;
            return 0;
        }
    }
    fprintf(stderr, "obx-bench: unknown scenario \"%s\"\n", arg);
    return -1;
}

static int parse_set(bench_t *b, const char *arg) {
    static const char *const groups[] = {"postgres.", "kafka.", "relay.", "retention.", "log."};
    const char *eq = strchr(arg, '=');
    int known = 0;

    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        known |= strncmp(arg, groups[i], strlen(groups[i])) == 0;
    if (!known || !eq || eq[1] == '\0' || eq == strchr(arg, '.') + 1 || b->nsets == BENCH_MAX_SETS) {
        fprintf(stderr, "obx-bench: --relay-set wants GROUP.KEY=VALUE with GROUP one of postgres, kafka,"
                        " relay, retention, log (at most %d)\n", BENCH_MAX_SETS);
        return -1;
    }
    b->sets[b->nsets++] = arg;
    return 0;
}

#define NUM(name, arg, field, min, max, help) {name, arg, help, 'i', offsetof(bench_t, field), min, max, NULL}
#define LONG(name, arg, field, min, max, help) {name, arg, help, 'l', offsetof(bench_t, field), min, max, NULL}
#define STR(name, arg, field, help) {name, arg, help, 's', offsetof(bench_t, field), 0, 0, NULL}
#define FLAG(name, field, help) {name, "", help, 'f', offsetof(bench_t, field), 0, 0, NULL}
#define CALL(name, arg, fn, help) {name, arg, help, 'c', 0, 0, 0, fn}

/* Drives both the usage text and the parsing. */
static const opt_t options[] = {
    LONG("events", "N", events, 1000, 100000000, "drain size and raw-limit size (default 100000)"),
    NUM("payload", "BYTES", payload, 1, 1000000, "payload per event (default 300)"),
    NUM("aggregates", "N", aggregates, 1, 100000000, "distinct aggregate ids = Kafka keys (default 1000)"),
    CALL("rates", "LIST", parse_rates, "steady insert rates, events/s (default 1000,10000)"),
    NUM("duration", "S", duration_s, 1, 3600, "length of each steady and pgbench run (default 10)"),
    NUM("writers", "N", writers, 1, 64, "concurrent writers, steady and pgbench (default 8)"),
    NUM("writers-rounds", "N", rounds, 1, BENCH_MAX_ROUNDS,
        "rounds of the writers scenario's relay variants (default 1)"),
    NUM("idle-samples", "N", idle_samples, 1, 100000, "single inserts of the idle scenario (default 200)"),
    LONG("consumer-events", "N", consumer_events, 1, 100000000, "orders for the consumer scenario (default 20000)"),
    CALL("scenario", "NAME", parse_scenario,
         "drain, footprint, steady, idle, writers, consumer; repeatable (default: all)"),
    CALL("relay-set", "G.KEY=V", parse_set,
         "extra relay config setting, V as libconfig text"),
    STR("pg-host", "HOST", pg_host_opt, "use this PostgreSQL instead of starting one (database " BENCH_DB ")"),
    NUM("pg-port", "PORT", pg_port, 1, 65535, "its port (default 5432; own server: " XSTR(OWN_PG_PORT) ")"),
    STR("bootstrap", "SERVERS", bootstrap_opt, "use this Kafka instead of starting obx-mock-kafka"),
    FLAG("keep", keep, "keep the temporary directory (logs, configs)"),
};
#define NOPTS (sizeof options / sizeof options[0])

static void usage(FILE *f) {
    char lead[40];

    fprintf(f, "Usage: obx-bench [options]\n\nBenchmarks outbox-relay against raw limits measured in the same run"
               " and prints one table.\nBENCHMARKS.md describes each scenario.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        snprintf(lead, sizeof lead, "--%s %s", options[i].name, options[i].arg);
        fprintf(f, "  %-22s %s\n", lead, options[i].help);
    }
    fprintf(f, "  %-22s %s\n\nExit codes: 0 every scenario ran, 1 a scenario failed, 2 usage, 130 interrupted.\n",
            "-h, --help", "this help");
}

static int set_option(bench_t *b, const opt_t *o, const char *arg) {
    void *field = (char *)b + o->off;
    long v;

    if (o->parse)
        return o->parse(b, arg);
    if (o->kind == 's')
        *(const char **)field = arg;
    else if (o->kind == 'f')
        *(int *)field = 1;
    else if (parse_num(o, arg, &v) != 0)
        return -1;
    else if (o->kind == 'l')
        *(long *)field = v;
    else
        *(int *)field = (int)v;
    return 0;
}

/* Returns -1 to run, or the exit code. */
static int parse_args(bench_t *b, int argc, char **argv) {
    struct option longopts[NOPTS + 2];
    int opt;

    for (size_t i = 0; i < NOPTS; i++)
        longopts[i] = (struct option){options[i].name, options[i].arg[0] ? required_argument : no_argument,
                                      NULL, 256 + (int)i};
    longopts[NOPTS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NOPTS + 1] = (struct option){NULL, 0, NULL, 0};
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 0;
        }
        if (opt < 256) {
            usage(stderr);
            return EXIT_USAGE;
        }
        if (set_option(b, &options[opt - 256], optarg) != 0)
            return EXIT_USAGE;
    }
    if (optind < argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!b->scenarios)
        b->scenarios = ~0u;
    /* The footprint figures come out of the drain. */
    if (b->scenarios & SC_FOOTPRINT)
        b->scenarios |= SC_DRAIN;
    if (!b->pg_port)
        b->pg_port = b->pg_host_opt ? 5432 : OWN_PG_PORT;
    return -1;
}

static void on_signal(int sig) {
    (void)sig;
    bench_stop = 1;
}

static const char *env_or(const char *name, const char *def) {
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int start_pg(bench_t *b) {
    char cmd[2200];
    size_t len;
    FILE *p;
    int st;

    snprintf(cmd, sizeof cmd, "PGPORT=%d PG_FSYNC=on '%s/tests/pg.sh' start '%s/pg' 2>'%s/pg-start.log'",
             b->pg_port, b->source_root, b->workdir, b->workdir);
    bench_log("starting PostgreSQL (tests/pg.sh, fsync on, port %d)", b->pg_port);
    p = popen(cmd, "r");
    if (!p) {
        bench_log("popen: %s", strerror(errno));
        return -1;
    }
    len = fread(b->pghost, 1, sizeof b->pghost - 1, p);
    b->pghost[len] = '\0';
    b->pghost[strcspn(b->pghost, "\n")] = '\0';
    st = pclose(p);
    if (st != 0 || !*b->pghost) {
        snprintf(cmd, sizeof cmd, "%s/pg-start.log", b->workdir);
        bench_log("tests/pg.sh start failed (it needs root: it runs the cluster as postgres)");
        bench_log_tail(cmd);
        return -1;
    }
    b->own_pg = 1;
    return 0;
}

static void stop_pg(const bench_t *b) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s/tests/pg.sh' stop '%s/pg' >/dev/null 2>&1", b->source_root, b->workdir);
    if (system(cmd) != 0)
        bench_log("stopping PostgreSQL failed: %s", cmd);
}

/* Server facts for the report; the connection also proves the server is up. */
static int read_server(bench_t *b) {
    PGconn *c;
    PGresult *res;
    int rc = -1;

    snprintf(b->conn_base, sizeof b->conn_base, "host=%s port=%d%s", b->pghost, b->pg_port,
             b->own_pg ? " user=postgres" : "");
    snprintf(b->conninfo, sizeof b->conninfo, "%s dbname=%s", b->conn_base, BENCH_DB);
    c = db_open(b, "postgres");
    if (!c)
        return -1;
    res = PQexec(c, "SELECT current_setting('server_version'), current_setting('fsync'),"
                    " current_setting('track_commit_timestamp')");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        snprintf(b->server_version, sizeof b->server_version, "%s", PQgetvalue(res, 0, 0));
        b->server_version[strcspn(b->server_version, " ")] = '\0';
        snprintf(b->fsync, sizeof b->fsync, "%s", PQgetvalue(res, 0, 1));
        b->commit_ts = strcmp(PQgetvalue(res, 0, 2), "on") == 0;
        rc = 0;
    } else {
        bench_log("server settings: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
    PQfinish(c);
    return rc;
}

static void remove_workdir(const bench_t *b) {
    char cmd[sizeof b->workdir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b->workdir);
    if (system(cmd) != 0)
        bench_log("could not remove %s", b->workdir);
}

static void drop_bench_db(const bench_t *b) {
    PGconn *c = db_open(b, "postgres");
    if (c)
        db_exec(c, "DROP DATABASE IF EXISTS " BENCH_DB " WITH (FORCE)");
    PQfinish(c);
}

static void startup_rows(bench_t *b) {
    if (b->nstarts == 0)
        return;
    bench_row_t row = {.value = bench_pick(b->starts_ms, (size_t)b->nstarts, 0.5), .unit = "ms",
                       .ref_name = "ms bare connect+LISTEN", .ref = b->raw_connect_ms, .target_op = '<', .target = 100};
    snprintf(row.figure, sizeof row.figure, "start-up: exec -> 'postgres connected', median of %d", b->nstarts);
    bench_rows(b, "footprint", &row, 1);
}

static int run_scenario(bench_t *b, const char *name, scenario_fn fn) {
    int rc;

    /* Other work on the machine skews every figure: probe it while idle. */
    bench_probe(b, name);
    bench_log("=== %s", name);
    rc = fn(b);
    if (rc != 0 && !bench_stop)
        bench_note(b, "scenario %s FAILED: its figures are missing (logs in %s)", name, b->workdir);
    return rc;
}

int main(int argc, char **argv) {
    static bench_t bench = {
        .events = 100000, .payload = 300, .aggregates = 1000, .duration_s = 10, .writers = 8, .rounds = 1,
        .idle_samples = 200, .consumer_events = 20000, .rates = {1000, 10000}, .nrates = 2,
        .mock_pid = -1,
        /* Until scenario_raw measures them: no reference, no ratio. */
        .raw_pg_rate = NAN, .raw_kafka_rate = NAN, .raw_cpu_100k = NAN,
        .raw_backend_cpu_100k = NAN, .raw_producer_hwm_mb = NAN, .raw_first_ack_ms = NAN,
        .raw_connect_ms = NAN,
    };
    bench_t *b = &bench;
    struct sigaction sa;
    int rc, failed = 0;

    if ((rc = parse_args(b, argc, argv)) >= 0)
        return rc;
    rc = 1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    snprintf(b->build_root, sizeof b->build_root, "%s", env_or("OBX_BUILD_ROOT", OBX_BENCH_BUILD_ROOT));
    snprintf(b->source_root, sizeof b->source_root, "%s", env_or("OBX_SOURCE_ROOT", OBX_BENCH_SOURCE_ROOT));
    snprintf(b->topic_prefix, sizeof b->topic_prefix, "obxbench-%d", (int)getpid());
    snprintf(b->workdir, sizeof b->workdir, "/tmp/obx-bench.XXXXXX");
    /* 0755: the postgres user must reach the cluster directory inside. */
    if (!mkdtemp(b->workdir) || chmod(b->workdir, 0755) != 0) {
        bench_log("cannot create %s: %s", b->workdir, strerror(errno));
        return 1;
    }
    if (b->pg_host_opt)
        snprintf(b->pghost, sizeof b->pghost, "%s", b->pg_host_opt);
    else if (start_pg(b) != 0)
        goto out;
    if (read_server(b) != 0)
        goto out;
    if (b->bootstrap_opt)
        snprintf(b->bootstrap, sizeof b->bootstrap, "%s", b->bootstrap_opt);
    else if (mock_start(b) != 0)
        goto out;
    bench_log("PostgreSQL %s on %s:%d, Kafka on %s, scratch in %s", b->server_version, b->pghost,
              b->pg_port, b->bootstrap, b->workdir);

    /* Without the raw limits the other scenarios still run: their ratios stay empty. */
    if ((b->scenarios & (SC_DRAIN | SC_STEADY | SC_IDLE | SC_CONSUMER)) &&
        run_scenario(b, "raw", scenario_raw) != 0)
        failed = 1;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0] && !bench_stop; i++)
        if (scenarios[i].fn && (b->scenarios & scenarios[i].bit) &&
            run_scenario(b, scenarios[i].name, scenarios[i].fn) != 0)
            failed = 1;
    if (bench_stop)
        goto out;
    startup_rows(b);
    bench_note(b, "load probes (before each scenario and pgbench run): at most %.2f cores busy while the"
                  " bench idled", b->busy_cores_max);
    bench_report(b);
    rc = failed;
out:
    if (b->mock_pid > 0)
        proc_reap(b->mock_pid, SIGTERM, 10000);
    if (b->own_pg)
        stop_pg(b);
    else if (*b->server_version)
        drop_bench_db(b); /* the server was reached: the database may exist */
    /* A failure keeps its logs; an interrupt, like success, cleans up. */
    if (b->keep || (rc != 0 && !bench_stop))
        bench_log("logs kept in %s", b->workdir);
    else
        remove_workdir(b);
    return bench_stop ? 130 : rc;
}
