/* outbox-relay: command line. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <librdkafka/rdkafka.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "config.h"
#include "health.h"
#include "log.h"
#include "migrate.h"
#include "outbox.h"
#include "producer.h"
#include "relay.h"
#include "rkmeta.h"
#include "route.h"
#include "xalloc.h"

#define EXIT_CONFIG 2

static void usage(FILE *f) {
    fprintf(f,
        "Usage: outbox-relay -c FILE [--check | migrate | health [--live | --ready]]\n"
        "\n"
        "Publishes the rows of a PostgreSQL outbox table to Kafka, at least once,\n"
        "in per-aggregate order, and marks each row sent once the broker acknowledged it.\n"
        "\n"
        "  -c, --config FILE   configuration file (libconfig syntax; see config/)\n"
        "      --check         validate the config, connect to PostgreSQL and Kafka,\n"
        "                      check the schema and privileges and that every routed\n"
        "                      topic exists and may be written, then exit 0 or 1\n"
        "  migrate             apply the schema (idempotent) and exit\n"
        "  health              judge the running relay by its health.file: exit 0 when\n"
        "                      its loop turned, PostgreSQL answered and, if it leads,\n"
        "                      a Kafka broker was up within health.max_age_s; else 1\n"
        "      --live          only that the loop turns (a liveness probe)\n"
        "      --ready         the loop and PostgreSQL, not Kafka (a readiness probe)\n"
        "  -h, --help          this help\n"
        "  -V, --version       print the version\n"
        "\n"
        "Signals: SIGTERM/SIGINT stop gracefully (a second one exits at once),\n"
        "SIGHUP reloads log level and intervals.\n"
        "Exit codes: 0 ok, 1 runtime error, 2 bad config or usage.\n");
}

static void dr_ignore(void *ctx, void *opaque, rd_kafka_resp_err_t err, int32_t p, int64_t o) {
    (void)ctx; (void)opaque; (void)err; (void)p; (void)o;
}

static void warn_permissions(const obx_config_t *cfg) {
    struct stat st;
    if (cfg->has_secret && stat(cfg->path, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH)))
        OBX_LOG(OBX_LOG_WARN, "config_file_readable",
                "config file holds a secret and is readable by other users; chmod 600 it",
                KS("file", cfg->path));
}

#define CHECK_TOPICS_MAX 100     /* topics --check asks the brokers about */
#define CHECK_SCAN_ROWS 100000   /* newest outbox rows it reads for their topics */
#define CHECK_META_TIMEOUT_MS 10000

typedef struct {
    char name[256];
    char from[192];
} check_topic_t;

typedef struct {
    check_topic_t t[CHECK_TOPICS_MAX];
    size_t n;
    int more; /* topics beyond CHECK_TOPICS_MAX were left out */
} check_topics_t;

static void topics_add(check_topics_t *ts, const char *name, const char *from) {
    for (size_t i = 0; i < ts->n; i++)
        if (strcmp(ts->t[i].name, name) == 0)
            return;
    if (ts->n == CHECK_TOPICS_MAX) {
        ts->more = 1;
        return;
    }
    snprintf(ts->t[ts->n].name, sizeof ts->t[ts->n].name, "%s", name);
    snprintf(ts->t[ts->n].from, sizeof ts->t[ts->n].from, "%s", from);
    ts->n++;
}

/* The topics the relay would publish to: every route's, then those the
 * newest rows resolve to (their own topic column, a route, or the pattern). */
static int topics_collect(const obx_config_t *cfg, PGconn *conn, check_topics_t *ts) {
    char err[512], topic[256], from[192];
    int bad = 0;
    PGresult *res;

    for (size_t i = 0; i < cfg->routes_n; i++) {
        snprintf(from, sizeof from, "route aggregate_type=%.100s", cfg->routes[i].aggregate_type);
        topics_add(ts, cfg->routes[i].topic, from);
    }
    res = obx_outbox_topic_sample(conn, cfg, CHECK_SCAN_ROWS, 10 * CHECK_TOPICS_MAX,
                                  strstr(cfg->topic_pattern, "${event_type}") != NULL, err, sizeof err);
    if (!res) {
        printf("topics: FAILED: cannot read the rows' topics: %s\n", err);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *row_topic = PQgetisnull(res, i, 0) ? NULL : PQgetvalue(res, i, 0);
        const char *agg = PQgetisnull(res, i, 1) ? "" : PQgetvalue(res, i, 1);
        const char *ev = PQgetisnull(res, i, 2) ? "" : PQgetvalue(res, i, 2);
        if (obx_route_resolve(cfg->routes, cfg->routes_n, cfg->topic_pattern, row_topic, agg, ev,
                              topic, sizeof topic, err, sizeof err) != 0) {
            printf("topics: rows with aggregate_type=%.100s cannot be routed: %s\n",
                   row_topic ? "(own topic)" : agg, err);
            bad = 1;
            continue;
        }
        if (row_topic)
            snprintf(from, sizeof from, "rows' topic column");
        else
            snprintf(from, sizeof from, "topic_pattern, aggregate_type=%.100s%s%.60s", agg,
                     *ev ? " event_type=" : "", ev);
        topics_add(ts, topic, from);
    }
    PQclear(res);
    return bad ? -1 : 0;
}

/* Asks the brokers about every topic the relay would publish to, one at a
 * time; prints one line each. Returns 0 when all exist and are allowed. */
static int check_topics(const obx_config_t *cfg, PGconn *conn, rd_kafka_t *rk) {
    static check_topics_t ts;
    int failed = 0;

    memset(&ts, 0, sizeof ts);
    if (topics_collect(cfg, conn, &ts) != 0)
        failed = 1;
    if (ts.n == 0)
        printf("topics: none to check yet (no routes, no rows in %s)\n", cfg->pg_table);
    for (size_t i = 0; i < ts.n; i++) {
        const char *name = ts.t[i].name;
        int parts = 0;
        rd_kafka_resp_err_t err = obx_rkmeta_fetch_name(rk, name, CHECK_META_TIMEOUT_MS, &parts);
        switch (err) {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
            printf("topic %s: ok (partitions %d; %s)\n", name, parts, ts.t[i].from);
            break;
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
            printf("topic %s: FAILED: missing (UNKNOWN_TOPIC_OR_PART; %s): create it"
                   " (kafka-topics.sh --create --topic %s); a broker with"
                   " auto.create.topics.enable=true would create it on the first produce,"
                   " with its default partitions and replication\n", name, ts.t[i].from, name);
            failed = 1;
            break;
        case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
            printf("topic %s: FAILED: denied (TOPIC_AUTHORIZATION_FAILED; %s): grant the relay's"
                   " principal Write and Describe on it (kafka-acls.sh --add --allow-principal"
                   " User:NAME --operation Write --operation Describe --topic %s)\n",
                   name, ts.t[i].from, name);
            failed = 1;
            break;
        default:
            printf("topic %s: FAILED: %s (%s; %s)\n", name, rd_kafka_err2str(err),
                   rd_kafka_err2name(err), ts.t[i].from);
            failed = 1;
            break;
        }
    }
    if (ts.more)
        printf("topics: only the first %d were checked\n", CHECK_TOPICS_MAX);
    return failed ? -1 : 0;
}

/* The check's producer never creates a topic by asking for it: the
 * check must see a missing one, and leave nothing behind. */
static obx_producer_t *check_producer(const obx_config_t *cfg, char *errstr, size_t errsize) {
    static char key[] = "allow.auto.create.topics", value[] = "false";
    obx_config_t c = *cfg;
    obx_producer_t *p;

    c.kafka = obx_xcalloc(cfg->kafka_n + 1, sizeof *c.kafka);
    if (cfg->kafka_n)
        memcpy(c.kafka, cfg->kafka, cfg->kafka_n * sizeof *c.kafka);
    c.kafka[c.kafka_n].key = key;
    c.kafka[c.kafka_n].value = value;
    c.kafka_n++;
    p = obx_producer_new(&c, dr_ignore, NULL, errstr, errsize);
    free(c.kafka);
    return p;
}

/* outbox-relay health: one line on stdout, exit 0 healthy, 1 not. */
static int health(const obx_config_t *cfg, obx_health_mode_t mode) {
    obx_health_t h;
    char why[512];
    int rc;

    if (!*cfg->health_file) {
        fprintf(stderr, "outbox-relay: %s: health.file is not set; the relay keeps no health record\n",
                cfg->path);
        return EXIT_CONFIG;
    }
    if (obx_health_read(cfg->health_file, &h, why, sizeof why) != 0) {
        printf("health: FAILED: %s\n", why);
        return 1;
    }
    if (h.pid <= 0 || (kill((pid_t)h.pid, 0) != 0 && errno == ESRCH)) {
        printf("health: FAILED: the relay (pid %ld) is not running\n", h.pid);
        return 1;
    }
    rc = obx_health_judge(&h, obx_clock_ms(), (int64_t)cfg->health_max_age_s * 1000, mode, why,
                          sizeof why);
    printf("health: %s: %s\n", rc == 0 ? "ok" : "FAILED", why);
    return rc;
}

static int check(const obx_config_t *cfg) {
    char err[1024];
    PGconn *conn;
    obx_producer_t *p;
    const rd_kafka_metadata_t *md = NULL;
    int rc = 1;

    printf("config: %s ok (table %s, channel %s, %zu route(s), %zu kafka setting(s))\n",
           cfg->path, cfg->pg_table, cfg->pg_channel, cfg->routes_n, cfg->kafka_n);
    conn = obx_outbox_connect(cfg, "outbox-relay", OBX_SESSION_CLAIM, err, sizeof err);
    if (!conn) {
        printf("postgres: FAILED: %s\n", err);
        return 1;
    }
    printf("postgres: connected to %s as %s (server %d)\n", PQdb(conn), PQuser(conn),
           PQserverVersion(conn));
    if (obx_outbox_check(conn, cfg, err, sizeof err) != 0) {
        printf("schema: FAILED: %s\n", err);
        goto out;
    }
    printf("schema: table %s ok, %s\n", cfg->pg_table,
           cfg->retention_mode == OBX_RETENTION_DELETE       ? "SELECT, UPDATE and DELETE (retention) granted"
           : cfg->retention_mode == OBX_RETENTION_PARTITIONS ? "partitioned by id, owned (retention), SELECT and UPDATE granted"
                                                             : "SELECT and UPDATE granted");
    p = check_producer(cfg, err, sizeof err);
    if (!p) {
        printf("kafka: FAILED: %s\n", err);
        goto out;
    }
    {
        /* A metadata request proves the brokers answer. */
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(obx_producer_handle(p), 0, NULL, &md, 10000);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            printf("kafka: FAILED: cannot reach the brokers: %s\n", rd_kafka_err2str(kerr));
        } else {
            printf("kafka: %d broker(s) reachable, idempotent producer ok\n", md->broker_cnt);
            rd_kafka_metadata_destroy(md);
            rc = check_topics(cfg, conn, obx_producer_handle(p)) == 0 ? 0 : 1;
        }
    }
    obx_producer_destroy(p);
out:
    PQfinish(conn);
    printf("%s\n", rc == 0 ? "check: ok" : "check: FAILED");
    return rc;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"live", no_argument, NULL, 'L'},
        {"ready", no_argument, NULL, 'R'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *cmd;
    int do_check = 0, opt, rc;
    obx_health_mode_t mode = OBX_HEALTH_FULL;
    int mode_set = 0;
    obx_config_t cfg;
    char err[1024];

#ifdef M_ARENA_MAX
    /* One malloc arena for all threads, set before librdkafka starts its
     * own, so that what one thread frees another can reuse. The peak RSS
     * of a 100k-row drain was 14-21 MB with glibc's arena per thread and
     * 12-15 MB with MALLOC_ARENA_MAX=1 (bench, 5-6 runs each; this call
     * gave 14-19 MB: within the noise, and relay.max_inflight bounds it). */
    mallopt(M_ARENA_MAX, 1);
#endif
    obx_log_set_component("relay");
    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'k': do_check = 1; break;
        case 'L': mode = OBX_HEALTH_LIVE; mode_set++; break;
        case 'R': mode = OBX_HEALTH_READY; mode_set++; break;
        case 'h': usage(stdout); return 0;
        case 'V':
            printf("outbox-relay %s (librdkafka %s, libpq %d)\n", OBX_VERSION, rd_kafka_version_str(),
                   PQlibVersion());
            return 0;
        default: usage(stderr); return EXIT_CONFIG;
        }
    }
    cmd = optind < argc ? argv[optind] : NULL;
    if (!path || optind + 1 < argc || (cmd && strcmp(cmd, "migrate") != 0 && strcmp(cmd, "health") != 0) ||
        (cmd && do_check) || mode_set > 1 || (mode_set && (!cmd || strcmp(cmd, "health") != 0))) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    if (obx_config_load(path, OBX_PROG_RELAY, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "outbox-relay: %s\n", err);
        return EXIT_CONFIG;
    }
    obx_log_configure((obx_log_level_t)cfg.log_level, (obx_log_format_t)cfg.log_format);
    warn_permissions(&cfg);
    if (do_check) {
        rc = check(&cfg);
    } else if (cmd && strcmp(cmd, "health") == 0) {
        rc = health(&cfg, mode);
    } else if (cmd) {
        rc = obx_migrate_run(&cfg, err, sizeof err);
        if (rc != 0)
            OBX_LOG(OBX_LOG_ERROR, "migrate_failed", "migrate failed", KS("error", err));
        rc = rc ? 1 : 0;
    } else {
        rc = obx_relay_run(&cfg);
    }
    obx_config_free(&cfg);
    obx_log_clear_secrets();
    return rc;
}
