/* Unit tests of relay/core/config.c: obx_config_load, obx_config_reload and
 * the secrets a config registers with the logger. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "config.h"
#include "log.h"

#ifndef OBX_SOURCE_ROOT
#error "OBX_SOURCE_ROOT must be defined by the build"
#endif

#define ERRSZ 1024

/* Writes text to a new file under /tmp; path receives its name. */
static void write_conf(char *path, size_t size, const char *text) {
    int fd;
    size_t len = strlen(text), off = 0;

    ck_assert_uint_ge(size, sizeof "/tmp/obx-unit-config-XXXXXX");
    snprintf(path, size, "/tmp/obx-unit-config-XXXXXX");
    fd = mkstemp(path);
    ck_assert_msg(fd >= 0, "mkstemp: %s", strerror(errno));
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        ck_assert_msg(n > 0, "write: %s", strerror(errno));
        off += (size_t)n;
    }
    ck_assert_int_eq(close(fd), 0);
}

/* Loads text as a config file of program; returns obx_config_load's result. */
static int load_text_as(obx_program_t prog, const char *text, obx_config_t *cfg, char *path,
                        size_t pathsize, char *err) {
    int rc;
    write_conf(path, pathsize, text);
    err[0] = '\0';
    rc = obx_config_load(path, prog, cfg, err, ERRSZ);
    unlink(path);
    return rc;
}

static int load_text(const char *text, obx_config_t *cfg, char *path, size_t pathsize, char *err) {
    return load_text_as(OBX_PROG_RELAY, text, cfg, path, pathsize, err);
}

/* Loads text for program, which must succeed. */
static void load_ok_as(obx_program_t prog, const char *text, obx_config_t *cfg) {
    char path[64], err[ERRSZ];
    int rc = load_text_as(prog, text, cfg, path, sizeof path, err);
    ck_assert_msg(rc == 0, "load failed: %s\n--- config ---\n%s", err, text);
    ck_assert_str_eq(cfg->path, path);
    ck_assert_int_eq(cfg->program, prog);
}

static void load_ok(const char *text, obx_config_t *cfg) { load_ok_as(OBX_PROG_RELAY, text, cfg); }

/* Loads text for program, which must fail with "PATH:LINE: reason" (or
 * "PATH: reason" when line is 0), and leave the config freed. */
static void expect_error_as(obx_program_t prog, const char *text, int line, const char *reason) {
    char path[64], err[ERRSZ], want[ERRSZ + 128];
    obx_config_t cfg;
    int rc = load_text_as(prog, text, &cfg, path, sizeof path, err);

    if (line > 0)
        snprintf(want, sizeof want, "%s:%d: %s", path, line, reason);
    else
        snprintf(want, sizeof want, "%s: %s", path, reason);
    ck_assert_msg(rc == -1, "load succeeded, expected: %s\n--- config ---\n%s", want, text);
    ck_assert_msg(strcmp(err, want) == 0, "error\n  got:  [%s]\n  want: [%s]", err, want);
    /* cfg is freed (and zeroed) on error. */
    ck_assert_ptr_null(cfg.path);
    ck_assert_ptr_null(cfg.pg_conninfo);
    ck_assert_ptr_null(cfg.kafka);
    ck_assert_ptr_null(cfg.routes);
    ck_assert_uint_eq(cfg.kafka_n, 0);
    ck_assert_uint_eq(cfg.routes_n, 0);
}

static void expect_error(const char *text, int line, const char *reason) {
    expect_error_as(OBX_PROG_RELAY, text, line, reason);
}

/* One line each, so that line numbers in the tests count from 2. PG_LINE is
 * for tests that write their own kafka group. */
#define PG_LINE "postgres = { conninfo = \"dbname=shop\"; };\n"
#define MINIMAL "postgres = { conninfo = \"dbname=shop\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
#define CONSUMER_MINIMAL                                                                   \
    "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };" \
    " consumer = { name = \"stock\"; topics = [\"outbox.order\"]; };\n"
#define KAFKA_LINE "kafka = { bootstrap_servers = \"k:9092\"; };\n"
#define RELAY_KNOWN "(known: postgres, kafka, relay, health, retention, routes, log)"
#define CONSUMER_KNOWN "(known: postgres, kafka, consumer, inbox, log)"

/* ---- loading ---------------------------------------------------------- */

/* Loads config/name of the source tree for prog, which must succeed. */
static void load_example(const char *name, obx_program_t prog, obx_config_t *cfg) {
    char path[512], err[ERRSZ] = "";
    snprintf(path, sizeof path, "%s/config/%s", OBX_SOURCE_ROOT, name);
    ck_assert_msg(obx_config_load(path, prog, cfg, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(cfg->path, path);
    ck_assert_int_eq(cfg->program, prog);
    ck_assert_int_eq(cfg->has_secret, 0);
}

/* The relay's loop and log settings at their defaults. */
static void assert_relay_defaults(const obx_config_t *c) {
    ck_assert_int_eq(c->batch_size, 500);
    ck_assert_int_eq(c->max_inflight, 5000);
    ck_assert_int_eq(c->poll_interval_ms, 500);
    ck_assert_int_eq(c->busy_poll_ms, 100);
    ck_assert_int_eq(c->busy_poll_interval_ms, 5);
    ck_assert_int_eq(c->busy_poll_max_interval_ms, 20);
    ck_assert_int_eq(c->partition_stall_ms, 1000);
    ck_assert_int_eq(c->partition_cold_ms, 3600000);
    ck_assert_str_eq(c->topic_pattern, "outbox.${aggregate_type}");
    ck_assert_int_eq(c->on_failure, OBX_FAIL_PARK);
    ck_assert_int_eq(c->max_attempts, 10);
    ck_assert_int_eq(c->shutdown_timeout_ms, 30000);
    ck_assert_int_eq(c->reconnect_max_ms, 30000);
    ck_assert_int_eq(c->log_level, OBX_LOG_INFO);
    ck_assert_int_eq(c->log_format, OBX_LOG_LOGFMT);
    ck_assert_int_eq(c->stats_interval_s, 10);
}

START_TEST(test_example_config) {
    obx_config_t cfg;

    load_example("outbox-relay.conf", OBX_PROG_RELAY, &cfg);
    ck_assert_str_eq(cfg.pg_conninfo, "host=/var/run/postgresql dbname=shop");
    ck_assert_str_eq(cfg.pg_table, "public.outbox");
    ck_assert_str_eq(cfg.pg_table_sql, "\"public\".\"outbox\"");
    ck_assert_str_eq(cfg.pg_channel, "outbox");

    ck_assert_uint_eq(cfg.kafka_n, 2);
    ck_assert_str_eq(cfg.kafka[0].key, "bootstrap.servers");
    ck_assert_str_eq(cfg.kafka[0].value, "127.0.0.1:9092");
    ck_assert_int_eq(cfg.kafka[0].line, 32);
    ck_assert_str_eq(cfg.kafka[1].key, "linger.ms");
    ck_assert_str_eq(cfg.kafka[1].value, "0");
    ck_assert_int_eq(cfg.kafka[1].line, 33);

    assert_relay_defaults(&cfg);
    /* It claims to list the defaults: no route (issue 14). */
    ck_assert_uint_eq(cfg.routes_n, 0);
    obx_config_free(&cfg);
    ck_assert_ptr_null(cfg.path);
}
END_TEST

START_TEST(test_example_consumer_config) {
    obx_config_t cfg;

    load_example("consumer.conf", OBX_PROG_CONSUMER, &cfg);
    ck_assert_str_eq(cfg.pg_conninfo, "host=/var/run/postgresql dbname=stock");
    ck_assert_ptr_null(cfg.pg_table_sql); /* the relay's table: not read */
    ck_assert_uint_eq(cfg.kafka_n, 2);
    ck_assert_str_eq(cfg.kafka[1].key, "group.id");
    ck_assert_str_eq(cfg.consumer_name, "stock");
    ck_assert_uint_eq(cfg.consumer_topics_n, 1);
    ck_assert_str_eq(cfg.consumer_topics[0], "outbox.order");
    ck_assert_int_eq(cfg.consumer_batch_size, 500);
    ck_assert_int_eq(cfg.consumer_batch_timeout_ms, 20);
    ck_assert_int_eq(cfg.inbox_retention_s, 604800);
    ck_assert_int_eq(cfg.inbox_cleanup_interval_s, 3600);
    ck_assert_int_eq(cfg.inbox_cleanup_batch, 1000);
    ck_assert_int_eq(cfg.stats_interval_s, 10);
    obx_config_free(&cfg);
}
END_TEST

/* Each example is refused by the other program, at the first line it does not read. */
START_TEST(test_examples_cross_refused) {
    const char *rpath = OBX_SOURCE_ROOT "/config/outbox-relay.conf";
    const char *cpath = OBX_SOURCE_ROOT "/config/consumer.conf";
    obx_config_t cfg;
    char err[ERRSZ] = "", want[ERRSZ];

    ck_assert_int_eq(obx_config_load(cpath, OBX_PROG_RELAY, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:24: kafka.group_id is only read by the consumer runner, not by outbox-relay",
             cpath);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(obx_config_load(rpath, OBX_PROG_CONSUMER, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:15: postgres.table is only read by outbox-relay, not by the consumer runner",
             rpath);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_minimal_defaults) {
    obx_config_t cfg;
    load_ok(MINIMAL, &cfg);
    ck_assert_int_eq(cfg.has_secret, 0);
    ck_assert_str_eq(cfg.pg_conninfo, "dbname=shop");
    ck_assert_str_eq(cfg.pg_table, "public.outbox");
    ck_assert_str_eq(cfg.pg_table_sql, "\"public\".\"outbox\"");
    ck_assert_str_eq(cfg.pg_channel, "outbox");
    ck_assert_uint_eq(cfg.kafka_n, 1);
    ck_assert_str_eq(cfg.kafka[0].key, "bootstrap.servers");
    ck_assert_uint_eq(cfg.routes_n, 0);
    assert_relay_defaults(&cfg);
    obx_config_free(&cfg);
}
END_TEST

/* obx_config_defaults alone gives the same values. */
START_TEST(test_defaults_function) {
    obx_config_t cfg;
    obx_config_defaults(&cfg);
    ck_assert_str_eq(cfg.pg_conninfo, "");
    ck_assert_str_eq(cfg.pg_table, "public.outbox");
    ck_assert_str_eq(cfg.pg_channel, "outbox");
    ck_assert_str_eq(cfg.topic_pattern, "outbox.${aggregate_type}");
    ck_assert_int_eq(cfg.batch_size, 500);
    ck_assert_int_eq(cfg.poll_interval_ms, 500);
    ck_assert_int_eq(cfg.on_failure, OBX_FAIL_PARK);
    ck_assert_int_eq(cfg.max_attempts, 10);
    ck_assert_int_eq(cfg.log_level, OBX_LOG_INFO);
    ck_assert_int_eq(cfg.log_format, OBX_LOG_LOGFMT);
    ck_assert_int_eq(cfg.stats_interval_s, 10);
    ck_assert_ptr_null(cfg.pg_table_sql);
    ck_assert_ptr_null(cfg.path);
    obx_config_free(&cfg);
}
END_TEST

/* Every key set to a value other than its default lands in its own field. */
START_TEST(test_all_keys_non_default) {
    obx_config_t cfg;
    load_ok(KAFKA_LINE
            "postgres:\n"
            "{\n"
            "  conninfo = \"host=db.example port=5433 dbname=orders user=relay\";\n"
            "  table = \"sales.events\";\n"
            "  channel = \"sales_outbox\";\n"
            "};\n"
            "relay:\n"
            "{\n"
            "  batch_size = 250;\n"
            "  max_inflight = 1000;\n"
            "  poll_interval_ms = 20;\n"
            "  busy_poll_ms = 0;\n"
            "  busy_poll_interval_ms = 10;\n"
            "  busy_poll_max_interval_ms = 40;\n"
            "  topic_pattern = \"evt.${aggregate_type}.${event_type}\";\n"
            "  on_failure = \"block\";\n"
            "  max_attempts = 3;\n"
            "  shutdown_timeout_ms = 0;\n"
            "  reconnect_max_ms = 100;\n"
            "};\n"
            "log:\n"
            "{\n"
            "  level = \"debug\";\n"
            "  format = \"json\";\n"
            "  stats_interval_s = 0;\n"
            "};\n",
            &cfg);
    ck_assert_str_eq(cfg.pg_conninfo, "host=db.example port=5433 dbname=orders user=relay");
    ck_assert_str_eq(cfg.pg_table, "sales.events");
    ck_assert_str_eq(cfg.pg_table_sql, "\"sales\".\"events\"");
    ck_assert_str_eq(cfg.pg_channel, "sales_outbox");
    ck_assert_int_eq(cfg.batch_size, 250);
    ck_assert_int_eq(cfg.max_inflight, 1000);
    ck_assert_int_eq(cfg.poll_interval_ms, 20);
    ck_assert_int_eq(cfg.busy_poll_ms, 0);
    ck_assert_int_eq(cfg.busy_poll_interval_ms, 10);
    ck_assert_int_eq(cfg.busy_poll_max_interval_ms, 40);
    ck_assert_str_eq(cfg.topic_pattern, "evt.${aggregate_type}.${event_type}");
    ck_assert_int_eq(cfg.on_failure, OBX_FAIL_BLOCK);
    ck_assert_int_eq(cfg.max_attempts, 3);
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 0);
    ck_assert_int_eq(cfg.reconnect_max_ms, 100);
    ck_assert_int_eq(cfg.log_level, OBX_LOG_DEBUG);
    ck_assert_int_eq(cfg.log_format, OBX_LOG_JSON);
    ck_assert_int_eq(cfg.stats_interval_s, 0);
    ck_assert_int_eq(cfg.has_secret, 0);
    obx_config_free(&cfg);
}
END_TEST

static const struct {
    const char *name;
    int value;
} level_names[] = {
    {"debug", OBX_LOG_DEBUG}, {"info", OBX_LOG_INFO}, {"warn", OBX_LOG_WARN}, {"error", OBX_LOG_ERROR}};

START_TEST(test_log_levels) {
    char text[256];
    obx_config_t cfg;
    snprintf(text, sizeof text, MINIMAL "log = { level = \"%s\"; format = \"%s\"; };\n",
             level_names[_i].name, _i % 2 ? "json" : "logfmt");
    load_ok(text, &cfg);
    ck_assert_int_eq(cfg.log_level, level_names[_i].value);
    ck_assert_int_eq(cfg.log_format, _i % 2 ? OBX_LOG_JSON : OBX_LOG_LOGFMT);
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_kafka_mapping) {
    obx_config_t cfg;
    load_ok(PG_LINE                                               /* 1 */
            "kafka:\n"                                            /* 2 */
            "{\n"                                                 /* 3 */
            "  bootstrap_servers = \"b1:9092,b2:9092\";\n"        /* 4 */
            "  linger_ms = 5;\n"                                  /* 5 */
            "  enable_idempotence = true;\n"                      /* 6 */
            "  socket_keepalive_enable = false;\n"                /* 7 */
            "  batch_num_messages = 10000L;\n"                    /* 8 */
            "  acks = \"all\";\n"                                 /* 9 */
            "  max_in_flight_requests_per_connection = 5;\n"      /* 10 */
            "  client_id = \"relay-1\";\n"                        /* 11 */
            "};\n",
            &cfg);
    static const struct {
        const char *key, *value;
        int line;
    } want[] = {
        {"bootstrap.servers", "b1:9092,b2:9092", 4},
        {"linger.ms", "5", 5},
        {"enable.idempotence", "true", 6},
        {"socket.keepalive.enable", "false", 7},
        {"batch.num.messages", "10000", 8},
        {"acks", "all", 9},
        {"max.in.flight.requests.per.connection", "5", 10},
        {"client.id", "relay-1", 11},
    };
    ck_assert_uint_eq(cfg.kafka_n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < cfg.kafka_n; i++) {
        ck_assert_str_eq(cfg.kafka[i].key, want[i].key);
        ck_assert_str_eq(cfg.kafka[i].value, want[i].value);
        ck_assert_int_eq(cfg.kafka[i].line, want[i].line);
    }
    ck_assert_int_eq(cfg.has_secret, 0);
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_kafka_float_and_acks_minus_one) {
    obx_config_t cfg;
    load_ok(PG_LINE "kafka = { linger_ms = 0.5; acks = -1; enable_idempotence = \"true\";"
                    " bootstrap_servers = \"k:9092\"; };\n", &cfg);
    ck_assert_uint_eq(cfg.kafka_n, 4);
    ck_assert_str_eq(cfg.kafka[0].key, "linger.ms");
    ck_assert_str_eq(cfg.kafka[0].value, "0.5");
    ck_assert_str_eq(cfg.kafka[1].key, "acks");
    ck_assert_str_eq(cfg.kafka[1].value, "-1");
    ck_assert_str_eq(cfg.kafka[2].value, "true");
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_routes_in_order) {
    obx_config_t cfg;
    load_ok(MINIMAL
            "routes = (\n"
            "  { aggregate_type = \"payment\"; topic = \"payments\"; },\n"
            "  { topic = \"orders.v2\"; aggregate_type = \"order\"; },\n"
            "  { aggregate_type = \"payment\"; topic = \"payments-dup\"; }\n"
            ");\n",
            &cfg);
    ck_assert_uint_eq(cfg.routes_n, 3);
    ck_assert_str_eq(cfg.routes[0].aggregate_type, "payment");
    ck_assert_str_eq(cfg.routes[0].topic, "payments");
    ck_assert_str_eq(cfg.routes[1].aggregate_type, "order");
    ck_assert_str_eq(cfg.routes[1].topic, "orders.v2");
    ck_assert_str_eq(cfg.routes[2].aggregate_type, "payment");
    ck_assert_str_eq(cfg.routes[2].topic, "payments-dup");
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_routes_empty_list) {
    obx_config_t cfg;
    load_ok(MINIMAL "routes = ();\n", &cfg);
    ck_assert_uint_eq(cfg.routes_n, 0);
    obx_config_free(&cfg);
}
END_TEST

static const struct {
    const char *table; /* as a libconfig string literal body */
    const char *as_written;
    const char *sql;
} tables[] = {
    {"public.outbox", "public.outbox", "\"public\".\"outbox\""},
    {"outbox", "outbox", "\"outbox\""},
    {"Sales.OrderEvents", "Sales.OrderEvents", "\"Sales\".\"OrderEvents\""},
    {"shop.Order \\\"X\\\"", "shop.Order \"X\"", "\"shop\".\"Order \"\"X\"\"\""},
    {"sales.Order Events", "sales.Order Events", "\"sales\".\"Order Events\""},
    {"My Schema.t", "My Schema.t", "\"My Schema\".\"t\""},
};

START_TEST(test_table_quoting) {
    char text[256];
    obx_config_t cfg;
    snprintf(text, sizeof text, KAFKA_LINE "postgres = { conninfo = \"dbname=a\"; table = \"%s\"; };\n",
             tables[_i].table);
    load_ok(text, &cfg);
    ck_assert_str_eq(cfg.pg_table, tables[_i].as_written);
    ck_assert_str_eq(cfg.pg_table_sql, tables[_i].sql);
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_quote_ident) {
    char *q = obx_config_quote_ident("a\"b\"\"c", 6);
    ck_assert_str_eq(q, "\"a\"\"b\"\"\"\"c\"");
    free(q);
    q = obx_config_quote_ident("outbox.extra", 6); /* only len bytes */
    ck_assert_str_eq(q, "\"outbox\"");
    free(q);
    q = obx_config_quote_ident("", 0);
    ck_assert_str_eq(q, "\"\"");
    free(q);
}
END_TEST

/* ---- errors ----------------------------------------------------------- */

START_TEST(test_err_missing_file) {
    char path[64], err[ERRSZ], want[ERRSZ];
    obx_config_t cfg;
    int fd;

    snprintf(path, sizeof path, "/tmp/obx-unit-missing-XXXXXX");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    unlink(path);
    ck_assert_int_eq(obx_config_load(path, OBX_PROG_RELAY, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: cannot open: %s", path, strerror(ENOENT));
    ck_assert_str_eq(err, want);
    ck_assert_ptr_null(cfg.path);
}
END_TEST

START_TEST(test_err_syntax) {
    expect_error(MINIMAL "relay:\n{\n  max_attempts = 3;\n  batch_size = = 5;\n};\n", 5,
                 "syntax error");
    expect_error(MINIMAL "relay = { batch_size = ; };\n", 2, "syntax error");
}
END_TEST

START_TEST(test_err_duplicate) {
    expect_error(MINIMAL "postgres = { conninfo = \"dbname=b\"; };\n", 2, "duplicate setting name");
}
END_TEST

START_TEST(test_err_unknown_top_level) {
    expect_error(MINIMAL "\n\nrelayy = { batch_size = 5; };\n", 4,
                 "unknown key \"relayy\" " RELAY_KNOWN);
    expect_error("batch_size = 5;\n" MINIMAL, 1,
                 "unknown key \"batch_size\" " RELAY_KNOWN);
}
END_TEST

START_TEST(test_err_top_level_not_group) {
    expect_error(MINIMAL "relay = 5;\n", 2, "relay must be a group { ... }, not an integer");
    expect_error("postgres = \"dbname=a\";\n", 1, "postgres must be a group { ... }, not a string");
}
END_TEST

START_TEST(test_err_unknown_key_in_group) {
    expect_error(MINIMAL "relay:\n{\n  batch_size = 5;\n  batchsize = 5;\n};\n", 5,
                 "unknown key \"relay.batchsize\"");
    expect_error("postgres:\n{\n  conninfo = \"dbname=a\";\n  password = \"x\";\n};\n", 4,
                 "unknown key \"postgres.password\"");
    /* A key that exists, but in another group. */
    expect_error(MINIMAL "log = { batch_size = 5; };\n", 2, "unknown key \"log.batch_size\"");
}
END_TEST

START_TEST(test_err_wrong_type) {
    expect_error(MINIMAL "relay:\n{\n  batch_size = \"500\";\n};\n", 4,
                 "relay.batch_size must be an integer, not a string");
    expect_error(MINIMAL "relay = { max_attempts = 1.0; };\n", 2,
                 "relay.max_attempts must be an integer, not a float");
    expect_error(MINIMAL "relay = { poll_interval_ms = true; };\n", 2,
                 "relay.poll_interval_ms must be an integer, not a boolean");
    expect_error("postgres = { conninfo = \"dbname=a\"; channel = 5; };\n", 1,
                 "postgres.channel must be a string, not an integer");
    expect_error(MINIMAL "log = { level = 1; };\n", 2, "log.level must be a string, not an integer");
    expect_error(MINIMAL "relay = { topic_pattern = [\"a\"]; };\n", 2,
                 "relay.topic_pattern must be a string, not an array");
}
END_TEST

/* Every integer key's bounds: min and max load, min-1 and max+1 are refused. */
static const struct {
    const char *group, *name;
    long long min, max;
    int offset_check; /* index into the getter below */
} int_keys[] = {
    {"relay", "batch_size", 1, 100000, 0},
    {"relay", "max_inflight", 1, 1000000, 1},
    {"relay", "poll_interval_ms", 10, 600000, 2},
    {"relay", "max_attempts", 1, 1000, 3},
    {"relay", "shutdown_timeout_ms", 0, 3600000, 4},
    {"relay", "reconnect_max_ms", 100, 600000, 5},
    {"log", "stats_interval_s", 0, 86400, 6},
    {"relay", "busy_poll_ms", 0, 60000, 7},
    {"relay", "busy_poll_interval_ms", 1, 1000, 8},
    {"relay", "busy_poll_max_interval_ms", 1, 1000, 9},
    {"relay", "partition_stall_ms", 50, 600000, 10},
    {"relay", "partition_cold_ms", 1000, 86400000, 11},
};

static int int_field(const obx_config_t *cfg, int which) {
    switch (which) {
    case 0: return cfg->batch_size;
    case 1: return cfg->max_inflight;
    case 2: return cfg->poll_interval_ms;
    case 3: return cfg->max_attempts;
    case 4: return cfg->shutdown_timeout_ms;
    case 5: return cfg->reconnect_max_ms;
    case 6: return cfg->stats_interval_s;
    case 7: return cfg->busy_poll_ms;
    case 8: return cfg->busy_poll_interval_ms;
    case 9: return cfg->busy_poll_max_interval_ms;
    case 10: return cfg->partition_stall_ms;
    default: return cfg->partition_cold_ms;
    }
}

START_TEST(test_int_bounds) {
    char text[256], reason[256];
    obx_config_t cfg;
    long long ok[2] = {int_keys[_i].min, int_keys[_i].max};
    long long bad[2] = {int_keys[_i].min - 1, int_keys[_i].max + 1};

    for (int j = 0; j < 2; j++) {
        snprintf(text, sizeof text, MINIMAL "%s:\n{\n  %s = %lld;\n};\n", int_keys[_i].group,
                 int_keys[_i].name, ok[j]);
        load_ok(text, &cfg);
        ck_assert_int_eq(int_field(&cfg, int_keys[_i].offset_check), ok[j]);
        obx_config_free(&cfg);

        snprintf(text, sizeof text, MINIMAL "%s:\n{\n  %s = %lld;\n};\n", int_keys[_i].group,
                 int_keys[_i].name, bad[j]);
        snprintf(reason, sizeof reason, "%s.%s = %lld is out of range [%lld, %lld]",
                 int_keys[_i].group, int_keys[_i].name, bad[j], int_keys[_i].min,
                 int_keys[_i].max);
        expect_error(text, 4, reason);
    }
}
END_TEST

START_TEST(test_err_out_of_range) {
    expect_error(MINIMAL "relay:\n{\n  batch_size = 0;\n};\n", 4,
                 "relay.batch_size = 0 is out of range [1, 100000]");
    /* A 64-bit value is range-checked before any narrowing to int. */
    expect_error(MINIMAL "relay = { batch_size = 4294967796L; };\n", 2,
                 "relay.batch_size = 4294967796 is out of range [1, 100000]");
    expect_error(MINIMAL "relay = { max_attempts = -1; };\n", 2,
                 "relay.max_attempts = -1 is out of range [1, 1000]");
}
END_TEST

START_TEST(test_err_bad_enum) {
    expect_error(MINIMAL "relay:\n{\n  on_failure = \"drop\";\n};\n", 4,
                 "relay.on_failure = \"drop\" is not one of: park, block");
    expect_error(MINIMAL "relay = { on_failure = \"Park\"; };\n", 2,
                 "relay.on_failure = \"Park\" is not one of: park, block");
}
END_TEST

/* consumer.from: earliest by default, latest on request, anything else
 * refused at its line; the relay does not read it. */
START_TEST(test_consumer_from) {
    obx_config_t cfg;
    load_ok_as(OBX_PROG_CONSUMER, CONSUMER_MINIMAL, &cfg);
    ck_assert_int_eq(cfg.consumer_from, OBX_FROM_EARLIEST);
    obx_config_free(&cfg);
    load_ok_as(OBX_PROG_CONSUMER,
               "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
               "consumer = { name = \"stock\"; topics = [\"t\"]; from = \"latest\"; };\n",
               &cfg);
    ck_assert_int_eq(cfg.consumer_from, OBX_FROM_LATEST);
    obx_config_free(&cfg);
    expect_error_as(OBX_PROG_CONSUMER,
                    "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
                    "consumer = {\n  name = \"stock\"; topics = [\"t\"];\n  from = \"newest\";\n};\n",
                    4, "consumer.from = \"newest\" is not one of: earliest, latest");
    expect_error_as(OBX_PROG_CONSUMER,
                    "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
                    "consumer = { name = \"stock\"; topics = [\"t\"];\n  from = 0; };\n",
                    3, "consumer.from must be a string, not an integer");
    expect_error_as(OBX_PROG_CONSUMER,
                    "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
                    "consumer = { name = \"stock\"; topics = [\"t\"];\n  from = \"Latest\"; };\n",
                    3, "consumer.from = \"Latest\" is not one of: earliest, latest");
}
END_TEST

START_TEST(test_err_bad_log_level) {
    expect_error(MINIMAL "log:\n{\n  level = \"verbose\";\n};\n", 4,
                 "log.level = \"verbose\" is not one of: debug, info, warn, error");
    expect_error(MINIMAL "log = { level = \"INFO\"; };\n", 2,
                 "log.level = \"INFO\" is not one of: debug, info, warn, error");
    expect_error(MINIMAL "log = { format = \"text\"; };\n", 2,
                 "log.format = \"text\" is not one of: logfmt, json");
}
END_TEST

START_TEST(test_err_bad_conninfo) {
    char path[64], err[ERRSZ], prefix[128];
    obx_config_t cfg;
    int rc = load_text("postgres:\n{\n  conninfo = \"host=/tmp port\";\n};\n", &cfg, path,
                       sizeof path, err);
    ck_assert_int_eq(rc, -1);
    snprintf(prefix, sizeof prefix, "%s:3: postgres.conninfo: ", path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "got [%s]", err);
    /* libpq's reason names the key that lacks its "=", without a trailing newline. */
    ck_assert_msg(strstr(err, "\"port\"") != NULL, "got [%s]", err);
    ck_assert_int_ne(err[strlen(err) - 1], '\n');
    ck_assert_ptr_null(cfg.path);

    rc = load_text("postgres = {\n  conninfo = \"nosuchoption=1\"; };\n", &cfg, path,
                   sizeof path, err);
    ck_assert_int_eq(rc, -1);
    snprintf(prefix, sizeof prefix, "%s:2: postgres.conninfo: ", path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "got [%s]", err);
    ck_assert_msg(strstr(err, "nosuchoption") != NULL, "got [%s]", err);
}
END_TEST

START_TEST(test_err_missing_conninfo) {
    expect_error("\npostgres:\n{\n  table = \"public.outbox\";\n};\n", 2,
                 "postgres.conninfo is required");
    expect_error("postgres = { conninfo = \"\"; };\n", 1, "postgres.conninfo is required");
    expect_error("relay = { batch_size = 5; };\n", 0,
                 "missing group postgres { conninfo = \"...\"; }");
    expect_error("", 0, "missing group postgres { conninfo = \"...\"; }");
}
END_TEST

START_TEST(test_err_bad_table_and_channel) {
    expect_error("postgres = { conninfo = \"dbname=a\"; table = \".outbox\"; };\n", 1,
                 "postgres.table \".outbox\": expected schema.table");
    expect_error("postgres = { conninfo = \"dbname=a\"; table = \"public.\"; };\n", 1,
                 "postgres.table \"public.\": expected schema.table");
    expect_error("postgres = { conninfo = \"dbname=a\"; table = \"\"; };\n", 1,
                 "postgres.table must not be empty");
    expect_error("postgres = { conninfo = \"dbname=a\"; channel = \"\"; };\n", 1,
                 "postgres.channel must not be empty");
}
END_TEST

START_TEST(test_err_kafka_idempotence) {
    expect_error(PG_LINE "kafka:\n{\n  bootstrap_servers = \"k:9092\";\n  enable_idempotence = false;\n};\n",
                 5,
                 "kafka.enable_idempotence: the relay needs enable.idempotence=true "
                 "(per-key order and no duplicates on retry)");
    expect_error(PG_LINE "kafka = { enable_idempotence = \"false\"; };\n", 2,
                 "kafka.enable_idempotence: the relay needs enable.idempotence=true "
                 "(per-key order and no duplicates on retry)");
}
END_TEST

START_TEST(test_err_kafka_acks) {
    expect_error(PG_LINE "kafka:\n{\n  acks = 1;\n};\n", 4,
                 "kafka.acks = 1 breaks idempotence: only all (-1) is allowed");
    expect_error(PG_LINE "kafka = { acks = \"0\"; };\n", 2,
                 "kafka.acks = 0 breaks idempotence: only all (-1) is allowed");
}
END_TEST

START_TEST(test_err_kafka_max_in_flight) {
    expect_error(PG_LINE "kafka:\n{\n  max_in_flight_requests_per_connection = 6;\n};\n", 4,
                 "kafka.max_in_flight_requests_per_connection = 6 breaks idempotence: "
                 "at most 5 is allowed");
    expect_error(PG_LINE "kafka = { max_in_flight = \"100\"; };\n", 2,
                 "kafka.max_in_flight = 100 breaks idempotence: at most 5 is allowed");
}
END_TEST

START_TEST(test_err_kafka_transactional) {
    expect_error(PG_LINE "kafka = { transactional_id = \"relay\"; };\n", 2,
                 "kafka.transactional_id: transactions are not used by the relay");
}
END_TEST

START_TEST(test_err_kafka_unknown_property) {
    expect_error(PG_LINE "kafka:\n{\n  linger_ms = 5;\n  foo_bar = 1;\n};\n", 5,
                 "kafka.foo_bar: No such configuration property: \"foo.bar\"");
}
END_TEST

START_TEST(test_err_kafka_bad_value) {
    char path[64], err[ERRSZ], prefix[128];
    obx_config_t cfg;
    int rc = load_text(PG_LINE "kafka = {\n  linger_ms = \"soon\"; };\n", &cfg, path, sizeof path, err);
    ck_assert_int_eq(rc, -1);
    snprintf(prefix, sizeof prefix, "%s:3: kafka.linger_ms: ", path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "got [%s]", err);
    ck_assert_ptr_null(cfg.kafka);
}
END_TEST

START_TEST(test_err_kafka_wrong_type) {
    expect_error(PG_LINE "kafka = {\n  bootstrap_servers = [\"a\", \"b\"]; };\n", 3,
                 "kafka.bootstrap_servers must be a string, number or boolean, not an array");
    expect_error(PG_LINE "kafka = {\n  sasl = { mechanism = \"PLAIN\"; }; };\n", 3,
                 "kafka.sasl must be a string, number or boolean, not a group");
}
END_TEST

START_TEST(test_err_route_bad_topic) {
    expect_error(MINIMAL
                 "routes = (\n"
                 "  { aggregate_type = \"order\"; topic = \"orders\"; },\n"
                 "  { aggregate_type = \"payment\";\n"
                 "    topic = \"bad topic!\"; }\n"
                 ");\n",
                 5,
                 "routes[1].topic \"bad topic!\" is not a valid Kafka topic name "
                 "(1-249 of [A-Za-z0-9._-])");
    expect_error(MINIMAL "routes = ( { aggregate_type = \"a\"; topic = \"..\"; } );\n", 2,
                 "routes[0].topic \"..\" is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])");
    expect_error(MINIMAL "routes = ( { aggregate_type = \"a\"; topic = \"\"; } );\n", 2,
                 "routes[0].topic \"\" is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])");
}
END_TEST

START_TEST(test_err_route_missing_topic) {
    expect_error(MINIMAL "routes = (\n  { aggregate_type = \"order\";\n  }\n);\n", 3,
                 "routes[0] needs both aggregate_type and topic");
    expect_error(MINIMAL "routes = (\n  { topic = \"orders\"; }\n);\n", 3,
                 "routes[0] needs both aggregate_type and topic");
}
END_TEST

START_TEST(test_err_route_shape) {
    expect_error(MINIMAL "routes = 5;\n", 2,
                 "routes must be a list of groups: ( { aggregate_type = \"...\"; topic = \"...\"; } )");
    expect_error(MINIMAL "routes = { aggregate_type = \"a\"; topic = \"b\"; };\n", 2,
                 "routes must be a list of groups: ( { aggregate_type = \"...\"; topic = \"...\"; } )");
    /* libconfig dates a scalar list element at the token after it: keep both on one line. */
    expect_error(MINIMAL "routes = (\n  \"orders\" );\n", 3,
                 "routes[0] must be a group { aggregate_type = ...; topic = ...; }");
    expect_error(MINIMAL "routes = ( { aggregate_type = \"a\"; topic = \"b\";\n  key = \"c\"; } );\n", 3,
                 "routes[0]: unknown key \"key\" (known: aggregate_type, topic)");
    expect_error(MINIMAL "routes = ( { aggregate_type = 5; topic = \"b\"; } );\n", 2,
                 "routes[0].aggregate_type must be a string, not an integer");
}
END_TEST

START_TEST(test_err_topic_pattern) {
    expect_error(MINIMAL "relay:\n{\n  topic_pattern = \"outbox.${nope}\";\n};\n", 4,
                 "relay.topic_pattern: unknown variable at \"${nope}\" "
                 "(known: ${aggregate_type}, ${event_type})");
    expect_error(MINIMAL "relay = { topic_pattern = \"bad pattern.${event_type}\"; };\n", 2,
                 "relay.topic_pattern: pattern \"bad pattern.${event_type}\" does not give a "
                 "valid Kafka topic name");
}
END_TEST

/* ---- one key set per program ----------------------------------------- */

START_TEST(test_err_consumer_keys_in_relay) {
    expect_error(MINIMAL "consumer = { name = \"stock\"; };\n", 2,
                 "consumer is only read by the consumer runner, not by outbox-relay " RELAY_KNOWN);
    expect_error(MINIMAL "\ninbox:\n{\n  retention_s = 60;\n};\n", 3,
                 "inbox is only read by the consumer runner, not by outbox-relay " RELAY_KNOWN);
    expect_error(PG_LINE "kafka = {\n  bootstrap_servers = \"k:9092\";\n  group_id = \"g\"; };\n", 4,
                 "kafka.group_id is only read by the consumer runner, not by outbox-relay");
    /* Any property librdkafka documents as a consumer's. */
    expect_error(PG_LINE "kafka = { bootstrap_servers = \"k:9092\";\n  session_timeout_ms = 6000; };\n", 3,
                 "kafka.session_timeout_ms is a librdkafka consumer property, not read by outbox-relay "
                 "(a producer)");
}
END_TEST

START_TEST(test_err_relay_keys_in_consumer) {
    expect_error_as(OBX_PROG_CONSUMER, CONSUMER_MINIMAL "relay = { batch_size = 5; };\n", 2,
                    "relay is only read by outbox-relay, not by the consumer runner " CONSUMER_KNOWN);
    expect_error_as(OBX_PROG_CONSUMER,
                    CONSUMER_MINIMAL "\nroutes = ( { aggregate_type = \"a\"; topic = \"b\"; } );\n", 3,
                    "routes is only read by outbox-relay, not by the consumer runner " CONSUMER_KNOWN);
    expect_error_as(OBX_PROG_CONSUMER,
                    "postgres = {\n  conninfo = \"dbname=stock\";\n  table = \"public.outbox\"; };\n", 3,
                    "postgres.table is only read by outbox-relay, not by the consumer runner");
    expect_error_as(OBX_PROG_CONSUMER, "postgres = { conninfo = \"dbname=stock\"; channel = \"outbox\"; };\n", 1,
                    "postgres.channel is only read by outbox-relay, not by the consumer runner");
    expect_error_as(OBX_PROG_CONSUMER, "kafka = { bootstrap_servers = \"k:9092\";\n  linger_ms = 0; };\n", 2,
                    "kafka.linger_ms is a librdkafka producer property, not read by the consumer runner");
    expect_error_as(OBX_PROG_CONSUMER, "kafka = { enable_idempotence = true; };\n", 1,
                    "kafka.enable_idempotence is a librdkafka producer property, not read by the consumer runner");
    expect_error_as(OBX_PROG_CONSUMER, CONSUMER_MINIMAL "foo = 1;\n", 2, "unknown key \"foo\" " CONSUMER_KNOWN);
    expect_error_as(OBX_PROG_CONSUMER, CONSUMER_MINIMAL "inbox = { retention = 60; };\n", 2,
                    "unknown key \"inbox.retention\"");
}
END_TEST

/* Properties both clients read, and the consumer's own, load for the consumer. */
START_TEST(test_consumer_kafka_properties) {
    obx_config_t cfg;
    load_ok_as(OBX_PROG_CONSUMER,
               "postgres = { conninfo = \"dbname=stock\"; };\n"
               "kafka = { bootstrap_servers = \"k:9092\"; group_id = \"g\"; session_timeout_ms = 6000;"
               " client_id = \"c\"; max_in_flight = 100; };\n"
               "consumer = { name = \"stock\"; topics = [\"a\", \"b.c\"]; batch_size = 7; };\n"
               "inbox = { retention_s = 60; };\n",
               &cfg);
    ck_assert_uint_eq(cfg.kafka_n, 5);
    ck_assert_str_eq(cfg.kafka[2].key, "session.timeout.ms");
    ck_assert_uint_eq(cfg.consumer_topics_n, 2);
    ck_assert_str_eq(cfg.consumer_topics[1], "b.c");
    ck_assert_int_eq(cfg.consumer_batch_size, 7);
    ck_assert_int_eq(cfg.inbox_retention_s, 60);
    obx_config_free(&cfg);
}
END_TEST

START_TEST(test_err_missing_bootstrap) {
    expect_error(PG_LINE, 0, "missing group kafka { bootstrap_servers = \"...\"; }");
    expect_error(PG_LINE "relay = { batch_size = 5; };\n\nkafka:\n{\n  linger_ms = 0;\n};\n", 4,
                 "kafka.bootstrap_servers is required");
    expect_error_as(OBX_PROG_CONSUMER, "postgres = { conninfo = \"dbname=stock\"; };\n", 0,
                    "missing group kafka { bootstrap_servers = \"...\"; }");
    expect_error_as(OBX_PROG_CONSUMER, "postgres = { conninfo = \"dbname=stock\"; };\nkafka = { group_id = \"g\"; };\n",
                    2, "kafka.bootstrap_servers is required");
    /* postgres comes first in the table, so its errors come first. */
    expect_error("kafka = { linger_ms = 0; };\n", 0, "missing group postgres { conninfo = \"...\"; }");
}
END_TEST

START_TEST(test_err_consumer_required) {
    expect_error_as(OBX_PROG_CONSUMER, MINIMAL, 0, "missing group consumer { name = \"...\"; }");
    expect_error_as(OBX_PROG_CONSUMER, MINIMAL "consumer = {\n  name = \"\"; };\n", 3,
                    "consumer.name is required");
    expect_error_as(OBX_PROG_CONSUMER, MINIMAL "consumer = { name = \"stock\"; };\n", 2,
                    "consumer.topics is required");
    expect_error_as(OBX_PROG_CONSUMER, MINIMAL "consumer = { name = \"stock\";\n  topics = []; };\n", 3,
                    "consumer.topics is required");
    expect_error_as(OBX_PROG_CONSUMER, MINIMAL "consumer = { name = \"stock\";\n  topics = [\"a b\"]; };\n", 3,
                    "consumer.topics[0] \"a b\" is not a valid Kafka topic name");
}
END_TEST

/* Every row is documented, read by some program, and of a type the reload can copy if reloadable. */
START_TEST(test_key_table) {
    size_t n;
    const obx_config_key_t *k = obx_config_keys(&n);
    ck_assert_uint_gt(n, 20);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(k[i].doc && *k[i].doc, "%s.%s: no doc", k[i].group, k[i].name);
        ck_assert_msg(k[i].programs != 0 && (k[i].programs & ~(unsigned)OBX_PROG_BOTH) == 0,
                      "%s.%s: programs %u", k[i].group, k[i].name, k[i].programs);
        ck_assert_msg(!k[i].reload || k[i].type == OBX_KEY_INT || k[i].type == OBX_KEY_ENUM ||
                          k[i].type == OBX_KEY_STR,
                      "%s.%s: a reloadable list", k[i].group, k[i].name);
    }
}
END_TEST

/* ---- reload ----------------------------------------------------------- */

START_TEST(test_reload_copies_reloadable) {
    obx_config_t cur, fresh;
    char ignored[512];

    load_ok(MINIMAL, &cur);
    load_ok(KAFKA_LINE "postgres = { conninfo = \"dbname=shop\"; channel = \"other\"; };\n"
            "relay = { batch_size = 100; poll_interval_ms = 1000; max_attempts = 3;\n"
            "  reconnect_max_ms = 1000; topic_pattern = \"t.${event_type}\";\n"
            "  on_failure = \"block\"; };\n"
            "log = { level = \"debug\"; format = \"json\"; stats_interval_s = 0; };\n",
            &fresh);
    memset(ignored, 'x', sizeof ignored);
    obx_config_reload(&cur, &fresh, ignored, sizeof ignored);

    /* Reloadable: copied. */
    ck_assert_int_eq(cur.log_level, OBX_LOG_DEBUG);
    ck_assert_int_eq(cur.poll_interval_ms, 1000);
    ck_assert_int_eq(cur.max_attempts, 3);
    ck_assert_int_eq(cur.stats_interval_s, 0);
    ck_assert_int_eq(cur.reconnect_max_ms, 1000);
    /* Not reloadable: kept, and listed in key-table order. */
    ck_assert_int_eq(cur.batch_size, 500);
    ck_assert_str_eq(cur.pg_channel, "outbox");
    ck_assert_str_eq(cur.topic_pattern, "outbox.${aggregate_type}");
    ck_assert_int_eq(cur.on_failure, OBX_FAIL_PARK);
    ck_assert_int_eq(cur.log_format, OBX_LOG_LOGFMT);
    ck_assert_str_eq(ignored, "postgres.channel,relay.batch_size,relay.topic_pattern,"
                              "relay.on_failure,log.format");
    obx_config_free(&fresh);
    obx_config_free(&cur);
}
END_TEST

START_TEST(test_reload_unchanged) {
    obx_config_t cur, fresh;
    char ignored[512];

    load_ok(MINIMAL "relay = { batch_size = 7; };\n", &cur);
    load_ok(MINIMAL "relay = { batch_size = 7; };\n", &fresh);
    memset(ignored, 'x', sizeof ignored);
    obx_config_reload(&cur, &fresh, ignored, sizeof ignored);
    ck_assert_str_eq(ignored, "");
    ck_assert_int_eq(cur.batch_size, 7);
    obx_config_free(&fresh);
    obx_config_free(&cur);
}
END_TEST

START_TEST(test_reload_small_ignored_buffer) {
    obx_config_t cur, fresh;
    char *ignored;
    const size_t size = 70;

    load_ok(MINIMAL, &cur);
    load_ok(KAFKA_LINE "postgres = { conninfo = \"dbname=other\"; table = \"a.b\"; channel = \"c\"; };\n"
            "relay = { batch_size = 1; max_inflight = 1; };\n",
            &fresh);
    ignored = malloc(size); /* exact size so ASan sees any overflow */
    ck_assert_ptr_nonnull(ignored);
    obx_config_reload(&cur, &fresh, ignored, size);
    ck_assert_uint_lt(strlen(ignored), size);
    /* What fits is a prefix of the full list, cut between names. */
    const char *full = "postgres.conninfo,postgres.table,postgres.channel,relay.batch_size,"
                       "relay.max_inflight";
    ck_assert_uint_gt(strlen(ignored), 0);
    ck_assert_msg(strncmp(full, ignored, strlen(ignored)) == 0, "got [%s]", ignored);
    ck_assert_msg(full[strlen(ignored)] == ',', "cut inside a name: [%s]", ignored);
    free(ignored);

    char big[512];
    obx_config_reload(&cur, &fresh, big, sizeof big);
    ck_assert_str_eq(big, full);
    obx_config_free(&fresh);
    obx_config_free(&cur);
}
END_TEST

/* Routes and kafka properties are only read at start-up, so a reload that
 * changes them must say that a restart is needed (config.h: "writes the
 * names of changed settings that need a restart into ignored"). */
START_TEST(test_reload_reports_routes_and_kafka) {
    obx_config_t cur, fresh;
    char ignored[512];

    load_ok(PG_LINE "kafka = { bootstrap_servers = \"a:9092\"; };\n"
                    "routes = ( { aggregate_type = \"p\"; topic = \"payments\"; } );\n",
            &cur);
    load_ok(PG_LINE "kafka = { bootstrap_servers = \"b:9092\"; };\n"
                    "routes = ( { aggregate_type = \"p\"; topic = \"payments.v2\"; } );\n",
            &fresh);
    obx_config_reload(&cur, &fresh, ignored, sizeof ignored);
    ck_assert_msg(strstr(ignored, "kafka") != NULL,
                  "changed kafka.bootstrap_servers not reported: ignored=\"%s\"", ignored);
    ck_assert_msg(strstr(ignored, "routes") != NULL,
                  "changed routes not reported: ignored=\"%s\"", ignored);
    obx_config_free(&fresh);
    obx_config_free(&cur);
}
END_TEST

/* A consumer's reload copies its reloadable keys and names the rest. */
START_TEST(test_reload_consumer) {
    obx_config_t cur, fresh;
    char ignored[512];

    load_ok_as(OBX_PROG_CONSUMER, CONSUMER_MINIMAL, &cur);
    load_ok_as(OBX_PROG_CONSUMER,
               "postgres = { conninfo = \"dbname=stock\"; }; kafka = { bootstrap_servers = \"k:9092\"; };\n"
               "consumer = { name = \"stock2\"; topics = [\"outbox.order\", \"outbox.x\"]; batch_timeout_ms = 5; };\n"
               "inbox = { retention_s = 120; };\n",
               &fresh);
    obx_config_reload(&cur, &fresh, ignored, sizeof ignored);
    ck_assert_int_eq(cur.consumer_batch_timeout_ms, 5);
    ck_assert_int_eq(cur.inbox_retention_s, 120);
    ck_assert_str_eq(cur.consumer_name, "stock");
    ck_assert_uint_eq(cur.consumer_topics_n, 1);
    ck_assert_str_eq(ignored, "consumer.name,consumer.topics");
    obx_config_free(&fresh);
    obx_config_free(&cur);
}
END_TEST

/* ---- secrets ---------------------------------------------------------- */

START_TEST(test_secret_conninfo) {
    obx_config_t cfg;
    char line[1024];
    obx_kv_t kvs[] = {KS("conninfo", NULL), KS("note", "pw hunter2xyz!"), {0}};

    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    load_ok(KAFKA_LINE "postgres = { conninfo = \"host=db user=relay password=hunter2xyz\"; };\n", &cfg);
    ck_assert_int_eq(cfg.has_secret, 1);
    kvs[0].s = cfg.pg_conninfo;
    obx_log_format_line(line, sizeof line, OBX_LOG_ERROR, "connect failed hunter2xyz", kvs);
    ck_assert_msg(strstr(line, "hunter2xyz") == NULL, "secret in [%s]", line);
    ck_assert_msg(strstr(line, "password=***") != NULL, "[%s]", line);
    ck_assert_msg(strstr(line, "msg=\"connect failed ***\"") != NULL, "[%s]", line);
    ck_assert_msg(strstr(line, "note=\"pw ***!\"") != NULL, "[%s]", line);
    obx_config_free(&cfg);

    /* The secret stays registered after the config is freed, until cleared. */
    obx_log_format_line(line, sizeof line, OBX_LOG_INFO, "x", (obx_kv_t[]){KS("p", "hunter2xyz"), {0}});
    ck_assert_msg(strstr(line, "hunter2xyz") == NULL, "[%s]", line);
    obx_log_clear_secrets();
    obx_log_format_line(line, sizeof line, OBX_LOG_INFO, "x", (obx_kv_t[]){KS("p", "hunter2xyz"), {0}});
    ck_assert_msg(strstr(line, "p=hunter2xyz") != NULL, "[%s]", line);
}
END_TEST

START_TEST(test_secret_kafka) {
    obx_config_t cfg;
    char line[1024];

    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    load_ok(PG_LINE "kafka = { sasl_username = \"relay\"; sasl_password = \"s3cr3t-pass\";"
                    " bootstrap_servers = \"k:9092\"; };\n", &cfg);
    ck_assert_int_eq(cfg.has_secret, 1);
    ck_assert_str_eq(cfg.kafka[1].key, "sasl.password");
    ck_assert_str_eq(cfg.kafka[1].value, "s3cr3t-pass");
    obx_log_format_line(line, sizeof line, OBX_LOG_WARN, "auth",
                        (obx_kv_t[]){KS("detail", "password s3cr3t-pass rejected"), {0}});
    ck_assert_msg(strstr(line, "s3cr3t-pass") == NULL, "secret in [%s]", line);
    ck_assert_msg(strstr(line, "\"detail\":\"password *** rejected\"") != NULL, "[%s]", line);
    /* The user name is not a secret. */
    obx_log_format_line(line, sizeof line, OBX_LOG_WARN, "auth", (obx_kv_t[]){KS("u", "relay"), {0}});
    ck_assert_msg(strstr(line, "\"u\":\"relay\"") != NULL, "[%s]", line);
    obx_config_free(&cfg);
    obx_log_clear_secrets();
}
END_TEST

START_TEST(test_no_secret) {
    obx_config_t cfg;
    char line[256];
    load_ok(KAFKA_LINE "postgres = { conninfo = \"host=db user=relay password=\"; };\n", &cfg);
    ck_assert_int_eq(cfg.has_secret, 0);
    obx_config_free(&cfg);
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    obx_log_format_line(line, sizeof line, OBX_LOG_INFO, "x", (obx_kv_t[]){KS("u", "relay"), {0}});
    ck_assert_msg(strstr(line, "u=relay") != NULL, "[%s]", line);
    obx_log_clear_secrets();
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_example_config);
    tcase_add_test(tc, test_example_consumer_config);
    tcase_add_test(tc, test_examples_cross_refused);
    tcase_add_test(tc, test_consumer_kafka_properties);
    tcase_add_test(tc, test_key_table);
    tcase_add_test(tc, test_minimal_defaults);
    tcase_add_test(tc, test_defaults_function);
    tcase_add_test(tc, test_all_keys_non_default);
    tcase_add_loop_test(tc, test_log_levels, 0, (int)(sizeof level_names / sizeof level_names[0]));
    tcase_add_test(tc, test_kafka_mapping);
    tcase_add_test(tc, test_kafka_float_and_acks_minus_one);
    tcase_add_test(tc, test_routes_in_order);
    tcase_add_test(tc, test_routes_empty_list);
    tcase_add_loop_test(tc, test_table_quoting, 0, (int)(sizeof tables / sizeof tables[0]));
    tcase_add_test(tc, test_quote_ident);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_err_missing_file);
    tcase_add_test(tc, test_err_syntax);
    tcase_add_test(tc, test_err_duplicate);
    tcase_add_test(tc, test_err_unknown_top_level);
    tcase_add_test(tc, test_err_top_level_not_group);
    tcase_add_test(tc, test_err_unknown_key_in_group);
    tcase_add_test(tc, test_err_wrong_type);
    tcase_add_loop_test(tc, test_int_bounds, 0, (int)(sizeof int_keys / sizeof int_keys[0]));
    tcase_add_test(tc, test_err_out_of_range);
    tcase_add_test(tc, test_err_bad_enum);
    tcase_add_test(tc, test_consumer_from);
    tcase_add_test(tc, test_err_bad_log_level);
    tcase_add_test(tc, test_err_bad_conninfo);
    tcase_add_test(tc, test_err_missing_conninfo);
    tcase_add_test(tc, test_err_bad_table_and_channel);
    tcase_add_test(tc, test_err_kafka_idempotence);
    tcase_add_test(tc, test_err_kafka_acks);
    tcase_add_test(tc, test_err_kafka_max_in_flight);
    tcase_add_test(tc, test_err_kafka_transactional);
    tcase_add_test(tc, test_err_kafka_unknown_property);
    tcase_add_test(tc, test_err_kafka_bad_value);
    tcase_add_test(tc, test_err_kafka_wrong_type);
    tcase_add_test(tc, test_err_route_bad_topic);
    tcase_add_test(tc, test_err_route_missing_topic);
    tcase_add_test(tc, test_err_route_shape);
    tcase_add_test(tc, test_err_topic_pattern);
    tcase_add_test(tc, test_err_consumer_keys_in_relay);
    tcase_add_test(tc, test_err_relay_keys_in_consumer);
    tcase_add_test(tc, test_err_missing_bootstrap);
    tcase_add_test(tc, test_err_consumer_required);
    suite_add_tcase(s, tc);

    tc = tcase_create("reload");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_reload_copies_reloadable);
    tcase_add_test(tc, test_reload_unchanged);
    tcase_add_test(tc, test_reload_small_ignored_buffer);
    tcase_add_test(tc, test_reload_reports_routes_and_kafka);
    tcase_add_test(tc, test_reload_consumer);
    suite_add_tcase(s, tc);

    tc = tcase_create("secrets");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_secret_conninfo);
    tcase_add_test(tc, test_secret_kafka);
    tcase_add_test(tc, test_no_secret);
    suite_add_tcase(s, tc);
    return s;
}

TH_SUITE_MAIN(config_suite)
