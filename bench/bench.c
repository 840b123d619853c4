/* obx-bench: the outbox-relay benchmark. A program, not a test: it asserts
 * nothing, and prints one table (or JSON object) in which every figure
 * stands beside a raw limit or reference measured in the same run, as a
 * ratio, and beside its target. BENCHMARKS.md says how to run it and what
 * each scenario measures ("Method in detail"); bench.c parses options and
 * sets up the servers, raw.c measures the raw limits, drain.c, latency.c,
 * writers.c and consumer.c run the scenarios, report.c prints. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <glob.h>
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

static const struct {
    const char *name;
    unsigned bit;
} scenario_names[] = {
    {"drain", SC_DRAIN}, {"footprint", SC_FOOTPRINT}, {"steady", SC_STEADY},
    {"idle", SC_IDLE},   {"writers", SC_WRITERS},     {"consumer", SC_CONSUMER},
    {"retention", SC_RETENTION},
};

static void usage(FILE *f) {
    fprintf(f,
        "Usage: obx-bench [options]\n"
        "\n"
        "Benchmarks outbox-relay against raw limits measured in the same run and\n"
        "prints one table. BENCHMARKS.md describes each scenario.\n"
        "\n"
        "  --events N            drain size and raw-limit size (default 100000)\n"
        "  --payload BYTES       payload per event (default 300)\n"
        "  --aggregates N        distinct aggregate ids = Kafka keys (default 1000)\n"
        "  --rates LIST          steady insert rates, events/s (default 1000,10000)\n"
        "  --duration S          length of each steady and pgbench run (default 10)\n"
        "  --writers N           concurrent writers, steady and pgbench (default 8)\n"
        "  --writers-rounds N    rounds of the writers and retention scenarios' relay\n"
        "                        variants, each between two reference runs (default 1,\n"
        "                        at most 10)\n"
        "  --idle-samples N      single inserts of the idle scenario (default 200)\n"
        "  --consumer-events N   orders for the consumer scenario (default 20000)\n"
        "  --scenario NAME       drain, footprint, steady, idle, writers, retention,\n"
        "                        consumer; repeatable (default: all). The raw limits run\n"
        "                        with any but writers and retention.\n"
        "  --relay-set G.KEY=V   extra setting in group G of the relay's config, V as\n"
        "                        libconfig text (kafka.linger_ms=0, relay.batch_size=1000);\n"
        "                        kafka.* settings also apply to raw producer (b); they win\n"
        "                        over the retention scenario's (retention.keep_s=5)\n"
        "  --json                one JSON object instead of the table\n"
        "  --pg-host HOST        use this PostgreSQL (socket dir or host) instead of\n"
        "                        starting one; creates and drops database obx_bench\n"
        "  --pg-port PORT        its port (default 5432; own server: %d)\n"
        "  --bootstrap SERVERS   use this Kafka instead of starting obx-mock-kafka\n"
        "  --keep                keep the temporary directory (logs, configs)\n"
        "  -h, --help            this help\n"
        "\n"
        "Exit codes: 0 every scenario ran, 1 a scenario failed, 2 usage, 130 interrupted.\n",
        OWN_PG_PORT);
}

static int parse_long(const char *opt, const char *arg, long min, long max, long *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max) {
        fprintf(stderr, "obx-bench: --%s must be an integer in %ld..%ld\n", opt, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *opt, const char *arg, long min, long max, int *out) {
    long v;
    if (parse_long(opt, arg, min, max, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_rates(bench_t *b, const char *arg) {
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", arg);
    b->nrates = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (b->nrates == BENCH_MAX_RATES) {
            fprintf(stderr, "obx-bench: --rates takes at most %d rates\n", BENCH_MAX_RATES);
            return -1;
        }
        if (parse_int("rates", t, 1, 1000000, &b->rates[b->nrates++]) != 0)
            return -1;
    }
    return b->nrates > 0 ? 0 : -1;
}

static int parse_scenario(bench_t *b, const char *arg) {
    for (size_t i = 0; i < sizeof scenario_names / sizeof scenario_names[0]; i++) {
        if (strcmp(arg, scenario_names[i].name) == 0) {
            b->scenarios |= scenario_names[i].bit;
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

/* Returns -1 to run, or the exit code. */
static int parse_args(bench_t *b, int argc, char **argv) {
    enum { O_EVENTS = 256, O_PAYLOAD, O_AGGS, O_RATES, O_DURATION, O_WRITERS, O_ROUNDS, O_IDLE, O_CONS,
           O_SCENARIO, O_SET, O_JSON, O_PGHOST, O_PGPORT, O_BOOTSTRAP, O_KEEP };
    static const struct option opts[] = {
        {"events", required_argument, NULL, O_EVENTS},
        {"payload", required_argument, NULL, O_PAYLOAD},
        {"aggregates", required_argument, NULL, O_AGGS},
        {"rates", required_argument, NULL, O_RATES},
        {"duration", required_argument, NULL, O_DURATION},
        {"writers", required_argument, NULL, O_WRITERS},
        {"writers-rounds", required_argument, NULL, O_ROUNDS},
        {"idle-samples", required_argument, NULL, O_IDLE},
        {"consumer-events", required_argument, NULL, O_CONS},
        {"scenario", required_argument, NULL, O_SCENARIO},
        {"relay-set", required_argument, NULL, O_SET},
        {"json", no_argument, NULL, O_JSON},
        {"pg-host", required_argument, NULL, O_PGHOST},
        {"pg-port", required_argument, NULL, O_PGPORT},
        {"bootstrap", required_argument, NULL, O_BOOTSTRAP},
        {"keep", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt, bad = 0;

    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1 && !bad) {
        switch (opt) {
        case O_EVENTS: bad = parse_long("events", optarg, 1000, 100000000, &b->events); break;
        case O_PAYLOAD: bad = parse_int("payload", optarg, 1, 1000000, &b->payload); break;
        case O_AGGS: bad = parse_int("aggregates", optarg, 1, 100000000, &b->aggregates); break;
        case O_RATES: bad = parse_rates(b, optarg); break;
        case O_DURATION: bad = parse_int("duration", optarg, 1, 3600, &b->duration_s); break;
        case O_WRITERS: bad = parse_int("writers", optarg, 1, 64, &b->writers); break;
        case O_ROUNDS: bad = parse_int("writers-rounds", optarg, 1, BENCH_MAX_ROUNDS, &b->rounds); break;
        case O_IDLE: bad = parse_int("idle-samples", optarg, 1, 100000, &b->idle_samples); break;
        case O_CONS: bad = parse_long("consumer-events", optarg, 1, 100000000, &b->consumer_events); break;
        case O_SCENARIO: bad = parse_scenario(b, optarg); break;
        case O_SET: bad = parse_set(b, optarg); break;
        case O_JSON: b->json = 1; break;
        case O_PGHOST: b->pg_host_opt = optarg; break;
        case O_PGPORT: bad = parse_int("pg-port", optarg, 1, 65535, &b->pg_port); break;
        case O_BOOTSTRAP: b->bootstrap_opt = optarg; break;
        case O_KEEP: b->keep = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (bad)
        return EXIT_USAGE;
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

/* PG_BINDIR, else the newest /usr/lib/postgresql/N/bin (what tests/pg.sh uses). */
static void find_pg_bindir(bench_t *b) {
    glob_t g;
    const char *best = NULL;

    if (getenv("PG_BINDIR") && *getenv("PG_BINDIR")) {
        snprintf(b->pg_bindir, sizeof b->pg_bindir, "%s", getenv("PG_BINDIR"));
        return;
    }
    snprintf(b->pg_bindir, sizeof b->pg_bindir, "/usr/lib/postgresql/bin");
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (!best || strverscmp(g.gl_pathv[i], best) > 0)
            best = g.gl_pathv[i];
    if (best)
        snprintf(b->pg_bindir, sizeof b->pg_bindir, "%s", best);
    globfree(&g);
}

static int check_bin(const bench_t *b, const char *name) {
    if (access(bench_bin(b, name), X_OK) == 0)
        return 0;
    bench_log("%s not found: build the project first (or set OBX_BUILD_ROOT)", bench_bin(b, name));
    return -1;
}

static int check_bins(const bench_t *b) {
    int bad = 0;
    if (b->scenarios & (SC_DRAIN | SC_STEADY | SC_IDLE | SC_WRITERS | SC_RETENTION | SC_CONSUMER))
        bad |= check_bin(b, "outbox-relay");
    if (!b->bootstrap_opt)
        bad |= check_bin(b, "obx-mock-kafka");
    if (b->scenarios & SC_CONSUMER)
        bad |= check_bin(b, "obx-order-gen") | check_bin(b, "obx-stock-consumer");
    if (b->scenarios & (SC_WRITERS | SC_RETENTION)) {
        char path[600];
        snprintf(path, sizeof path, "%s/pgbench", b->pg_bindir);
        if (access(path, X_OK) != 0) {
            bench_log("%s not found (set PG_BINDIR)", path);
            bad = -1;
        }
    }
    return bad ? -1 : 0;
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
    double v[BENCH_MAX_STARTS];
    bench_row_t *r;
    char fig[72];

    if (b->nstarts == 0)
        return;
    memcpy(v, b->starts_ms, sizeof v);
    snprintf(fig, sizeof fig, "start-up: exec -> 'postgres connected', median of %d", b->nstarts);
    /* bench_pick sorts v: the slowest start is last afterwards. */
    r = bench_row(b, "footprint", "startup_ms_median", fig, bench_pick(v, (size_t)b->nstarts, 0.5), "ms");
    bench_row_ref(r, "ms bare connect+LISTEN", b->raw_connect_ms);
    bench_row_target(r, '<', 0, 100);
    r = bench_row(b, "footprint", "startup_ms_max", "start-up: the slowest start", v[b->nstarts - 1], "ms");
    bench_row_ref(r, "ms bare connect+LISTEN", b->raw_connect_ms);
}

typedef int (*scenario_fn)(bench_t *b);

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
    static const struct {
        const char *name;
        unsigned bits;
        scenario_fn fn;
    } order[] = {
        {"drain", SC_DRAIN, scenario_drain},       {"steady", SC_STEADY, scenario_steady},
        {"idle", SC_IDLE, scenario_idle},          {"writers", SC_WRITERS, scenario_writers},
        {"retention", SC_RETENTION, scenario_retention}, {"consumer", SC_CONSUMER, scenario_consumer},
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
    find_pg_bindir(b);
    if (check_bins(b) != 0)
        return 1;
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
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !bench_stop; i++)
        if ((b->scenarios & order[i].bits) && run_scenario(b, order[i].name, order[i].fn) != 0)
            failed = 1;
    if (bench_stop)
        goto out;
    startup_rows(b);
    bench_note(b, "load probes (before each scenario and pgbench run): at most %.2f cores busy and the disk"
                  " busy %.0f%% of the time, while the bench idled", b->busy_cores_max, b->busy_disk_max * 100);
    if (b->json)
        bench_report_json(b);
    else
        bench_report_table(b);
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
