#include "config.h"

#include <libconfig.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* An enum key whose values are names[0..], NULL-terminated, in enum order. */
static int parse_named(const char *s, const char *const *names, int *out) {
    for (int i = 0; names[i]; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

static int parse_failure(const char *s, int *out) {
    static const char *const names[] = {[OBX_FAIL_PARK] = "park", [OBX_FAIL_BLOCK] = "block", NULL};
    return parse_named(s, names, out);
}

static int parse_from(const char *s, int *out) {
    static const char *const names[] = {[OBX_FROM_EARLIEST] = "earliest", [OBX_FROM_LATEST] = "latest", NULL};
    return parse_named(s, names, out);
}

static int parse_retention(const char *s, int *out) {
    static const char *const names[] = {[OBX_RETENTION_OFF] = "off", [OBX_RETENTION_DELETE] = "delete",
                                          [OBX_RETENTION_PARTITIONS] = "partitions", NULL};
    return parse_named(s, names, out);
}

static int parse_level(const char *s, int *out) {
    obx_log_level_t l;
    if (obx_log_level_parse(s, &l) != 0)
        return -1;
    *out = (int)l;
    return 0;
}

static int parse_format(const char *s, int *out) {
    obx_log_format_t f;
    if (obx_log_format_parse(s, &f) != 0)
        return -1;
    *out = (int)f;
    return 0;
}

static int check_conninfo(obx_config_t *cfg, char *why, size_t whysize);
static int check_table(obx_config_t *cfg, char *why, size_t whysize);
static int check_channel(obx_config_t *cfg, char *why, size_t whysize);
static int check_pattern(obx_config_t *cfg, char *why, size_t whysize);

/* Row shapes, used with designated fields: .group, .name, .programs, .doc
 * and the flags .reload and .required (PgBouncer's CF_ABS in spirit). */
#define OFF(f) offsetof(obx_config_t, f)
#define INT(f, def, lo, hi) .type = OBX_KEY_INT, .offset = OFF(f), .def_i = (def), .min = (lo), .max = (hi)
#define STR(f, def) .type = OBX_KEY_STR, .offset = OFF(f), .def_s = (def)
#define ENUM(f, def, fn, vals) .type = OBX_KEY_ENUM, .offset = OFF(f), .def_s = (def), .parse = (fn), .values = (vals)
#define RELAY .programs = OBX_PROG_RELAY
#define CONSUMER .programs = OBX_PROG_CONSUMER
#define BOTH .programs = OBX_PROG_BOTH

static const obx_config_key_t keys[] = {
    {.group = "postgres", .name = "conninfo", STR(pg_conninfo, ""), BOTH, .required = 1, .check = check_conninfo,
     .doc = "libpq connection string; leave the password out (PGPASSWORD or ~/.pgpass)"},
    {.group = "postgres", .name = "table", STR(pg_table, "public.outbox"), RELAY, .check = check_table,
     .doc = "the outbox table, as schema.table or table (each part quoted as an identifier)"},
    {.group = "postgres", .name = "channel", STR(pg_channel, "outbox"), RELAY, .check = check_channel,
     .doc = "the LISTEN/NOTIFY channel the outbox trigger notifies"},
    {.group = "kafka", .name = "bootstrap_servers", .type = OBX_KEY_KAFKA, BOTH, .required = 1,
     .doc = "the brokers, host:port,... (librdkafka bootstrap.servers)"},
    {.group = "kafka", .name = "group_id", .type = OBX_KEY_KAFKA, .def_s = "consumer.name", CONSUMER,
     .doc = "the consumer group (librdkafka group.id)"},
    {.group = "relay", .name = "batch_size", INT(batch_size, 500, 1, 100000), RELAY,
     .doc = "rows claimed per query"},
    {.group = "relay", .name = "max_inflight", INT(max_inflight, 5000, 1, 1000000), RELAY,
     .doc = "produced but unacknowledged rows before claiming pauses"},
    {.group = "relay", .name = "poll_interval_ms", INT(poll_interval_ms, 500, 10, 600000), RELAY, .reload = 1,
     .doc = "fallback poll while idle"},
    {.group = "relay", .name = "busy_poll_ms", INT(busy_poll_ms, 100, 0, 60000), RELAY, .reload = 1,
     .doc = "keep claiming this long after the last row before sleeping on LISTEN (0 = never)"},
    {.group = "relay", .name = "busy_poll_interval_ms", INT(busy_poll_interval_ms, 5, 1, 1000), RELAY, .reload = 1,
     .doc = "pause between claims while following writers: latency against CPU per event"},
    {.group = "relay", .name = "busy_poll_max_interval_ms", INT(busy_poll_max_interval_ms, 20, 1, 1000), RELAY,
     .reload = 1, .doc = "what that pause doubles up to while each claim finds 32 rows or more"},
    {.group = "relay", .name = "partition_stall_ms", INT(partition_stall_ms, 1000, 50, 600000), RELAY, .reload = 1,
     .doc = "a partition with messages out and no delivery report this long is stalled"},
    {.group = "relay", .name = "partition_cold_ms", INT(partition_cold_ms, 3600000, 1000, 86400000), RELAY,
     .reload = 1, .doc = "a partition without an acknowledgement this long gets one message at a time"},
    {.group = "relay", .name = "topic_pattern", STR(topic_pattern, "outbox.${aggregate_type}"), RELAY,
     .check = check_pattern,
     .doc = "topic when no route and no topic column match; ${aggregate_type} and ${event_type} expand"},
    {.group = "relay", .name = "on_failure", ENUM(on_failure, "park", parse_failure, "park, block"), RELAY,
     .doc = "after max_attempts: park the row and go on, or block at it"},
    {.group = "relay", .name = "max_attempts", INT(max_attempts, 10, 1, 1000), RELAY, .reload = 1,
     .doc = "failed publish attempts before on_failure applies"},
    {.group = "relay", .name = "shutdown_timeout_ms", INT(shutdown_timeout_ms, 30000, 0, 3600000), RELAY,
     .doc = "wait this long for in-flight acknowledgements on SIGTERM"},
    {.group = "relay", .name = "reconnect_max_ms", INT(reconnect_max_ms, 30000, 100, 600000), RELAY, .reload = 1,
     .doc = "cap of the PostgreSQL reconnect backoff"},
    {.group = "health", .name = "file", STR(health_file, ""), RELAY,
     .doc = "the relay rewrites this file about once a second for `outbox-relay health` (\"\" = none)"},
    {.group = "health", .name = "max_age_s", INT(health_max_age_s, 30, 1, 3600), RELAY,
     .doc = "`outbox-relay health` fails when the loop, PostgreSQL or (leader) every broker was silent this long"},
    {.group = "health", .name = "stuck_timeout_s", INT(health_stuck_timeout_s, 60, 0, 3600), RELAY,
     .doc = "a loop stuck this long exits the process (status 1); a query unanswered this long "
            "reconnects (0 = never)"},
    {.group = "retention", .name = "mode", ENUM(retention_mode, "delete", parse_retention, "off, delete, partitions"),
     RELAY, .doc = "delete: the leader deletes rows sent more than keep_s ago (never unsent or parked ones); "
                   "partitions: the outbox is partitioned by id and the leader drops whole partitions once "
                   "every row in each was sent more than keep_s ago (none parked), and creates partitions ahead "
                   "(migrate creates a partitioned outbox in this mode); off: rows stay until you delete them"},
    {.group = "retention", .name = "keep_s", INT(retention_keep_s, 3600, 0, 315360000), RELAY, .reload = 1,
     .doc = "how long sent rows are kept, in seconds (0 = delete once marked)"},
    {.group = "retention", .name = "interval_s", INT(retention_interval_s, 10, 1, 86400), RELAY, .reload = 1,
     .doc = "a retention pass starts this often (and after an error)"},
    {.group = "retention", .name = "batch_size", INT(retention_batch_size, 1000, 1, 100000), RELAY, .reload = 1,
     .doc = "rows scanned per delete, along the primary key"},
    {.group = "retention", .name = "max_rows_per_s", INT(retention_max_rows_per_s, 20000, 1, 10000000), RELAY,
     .reload = 1, .doc = "the pace of the deletes: a batch waits as long as its rows take at this rate"},
    {.group = "retention", .name = "partition_rows", INT(retention_partition_rows, 1000000, 10, 1000000000),
     RELAY, .reload = 1, .doc = "partitions mode: ids per partition created from now on"},
    {.group = "retention", .name = "partitions_ahead", INT(retention_partitions_ahead, 2, 1, 100), RELAY,
     .reload = 1, .doc = "partitions mode: empty partitions kept above the last id; writers fail once ids "
                         "outrun them, so keep partition_rows * partitions_ahead above the ids written per "
                         "interval_s, many times over"},
    {.group = "routes", .type = OBX_KEY_ROUTES, RELAY,
     .doc = "( { aggregate_type = \"...\"; topic = \"...\"; }, ... ): first match wins; a row's topic column wins over it"},
    {.group = "consumer", .name = "name", STR(consumer_name, ""), CONSUMER, .required = 1,
     .doc = "the inbox key, one per logical consumer; also the default group.id"},
    {.group = "consumer", .name = "topics", .type = OBX_KEY_TOPICS, CONSUMER, .required = 1,
     .doc = "the topics to subscribe to: [\"a\", \"b\"]"},
    {.group = "consumer", .name = "batch_size", INT(consumer_batch_size, 500, 1, 100000), CONSUMER,
     .doc = "messages applied per transaction"},
    {.group = "consumer", .name = "batch_timeout_ms", INT(consumer_batch_timeout_ms, 20, 0, 60000), CONSUMER,
     .reload = 1, .doc = "wait this long to fill a batch"},
    {.group = "consumer", .name = "from", ENUM(consumer_from, "earliest", parse_from, "earliest, latest"), CONSUMER,
     .doc = "a partition with no stored offset starts at its first message or at its end (latest: "
            "events published before the first start are never applied)"},
    {.group = "inbox", .name = "retention_s", INT(inbox_retention_s, 604800, 60, 315360000), CONSUMER, .reload = 1,
     .doc = "inbox rows older than this are deleted: longer than a duplicate can still arrive"},
    {.group = "inbox", .name = "cleanup_interval_s", INT(inbox_cleanup_interval_s, 3600, 0, 86400), CONSUMER,
     .reload = 1, .doc = "how often to delete old inbox rows (0 = never)"},
    {.group = "inbox", .name = "dead_letters_retention_s", INT(inbox_dead_letters_retention_s, 2592000, 0, 315360000),
     CONSUMER, .reload = 1,
     .doc = "this consumer's dead letters older than this are deleted, released or not (0 = kept)"},
    {.group = "inbox", .name = "gone_consumer_s", INT(inbox_gone_consumer_s, 0, 0, 315360000), CONSUMER, .reload = 1,
     .doc = "offsets, inbox rows and dead letters of other consumer names not running for this long are deleted "
            "(0 = never; one that comes back starts by consumer.from)"},
    {.group = "inbox", .name = "cleanup_batch", INT(inbox_cleanup_batch, 1000, 1, 100000), CONSUMER, .reload = 1,
     .doc = "inbox rows per delete transaction"},
    {.group = "log", .name = "level", ENUM(log_level, "info", parse_level, "debug, info, warn, error"), BOTH,
     .reload = 1, .doc = "the lowest level logged"},
    {.group = "log", .name = "format", ENUM(log_format, "logfmt", parse_format, "logfmt, json"), BOTH,
     .doc = "one logfmt or JSON object per line on stderr"},
    {.group = "log", .name = "stats_interval_s", INT(stats_interval_s, 10, 0, 86400), BOTH, .reload = 1,
     .doc = "a stats line every N seconds (0 = off)"},
};
#undef INT
#undef STR
#undef ENUM
#undef RELAY
#undef CONSUMER
#undef BOTH
#define NKEYS (sizeof keys / sizeof keys[0])

const obx_config_key_t *obx_config_keys(size_t *n) {
    *n = NKEYS;
    return keys;
}

#define FIELD_INT(cfg, k) ((int *)((char *)(cfg) + (k)->offset))
#define FIELD_STR(cfg, k) ((char **)((char *)(cfg) + (k)->offset))

void obx_config_defaults(obx_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NKEYS; i++) {
        const obx_config_key_t *k = &keys[i];
        if (k->type == OBX_KEY_STR)
            *FIELD_STR(cfg, k) = obx_xstrdup(k->def_s);
        else if (k->type == OBX_KEY_INT)
            *FIELD_INT(cfg, k) = (int)k->def_i;
        else if (k->type == OBX_KEY_ENUM && k->parse(k->def_s, FIELD_INT(cfg, k)) != 0)
            abort(); /* a default outside its own values: a bug in the table */
    }
}

void obx_config_free(obx_config_t *cfg) {
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].type == OBX_KEY_STR)
            free(*FIELD_STR(cfg, &keys[i]));
    for (size_t i = 0; i < cfg->kafka_n; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    for (size_t i = 0; i < cfg->routes_n; i++) {
        free(cfg->routes[i].aggregate_type);
        free(cfg->routes[i].topic);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->consumer_topics_n; i++)
        free(cfg->consumer_topics[i]);
    free(cfg->consumer_topics);
    free(cfg->pg_table_sql);
    free(cfg->path);
    memset(cfg, 0, sizeof *cfg);
}

char *obx_config_quote_ident(const char *ident, size_t len) {
    char *q = obx_xmalloc(len * 2 + 3), *p = q;
    *p++ = '"';
    for (size_t i = 0; i < len; i++) {
        if (ident[i] == '"')
            *p++ = '"';
        *p++ = ident[i];
    }
    *p++ = '"';
    *p = '\0';
    return q;
}

static const char *type_name(int t) {
    switch (t) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "unknown";
    }
}

static const char *program_name(unsigned programs) {
    return programs == OBX_PROG_RELAY ? "outbox-relay" : "the consumer runner";
}

/* "group.name", or "group" for a row that is a whole group. */
static const char *key_name(const obx_config_key_t *k, char *buf, size_t size) {
    if (!k->name)
        return k->group;
    snprintf(buf, size, "%s.%s", k->group, k->name);
    return buf;
}

/* The row of group.name (name NULL: the first row of group), or NULL. */
static const obx_config_key_t *find_key(const char *group, const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].group, group) == 0 &&
            (!name || (keys[i].name && strcmp(keys[i].name, name) == 0)))
            return &keys[i];
    return NULL;
}

/* The programs that read anything of group. */
static unsigned group_programs(const char *group) {
    unsigned p = 0;
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].group, group) == 0)
            p |= keys[i].programs;
    return p;
}

/* The top-level names program reads, for the unknown-key error. */
static void known_groups(obx_program_t program, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NKEYS && len < size; i++) {
        const char *g = keys[i].group;
        if (find_key(g, NULL) != &keys[i] || !(group_programs(g) & program))
            continue;
        len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "", g);
    }
}

#define FAIL_AT(s, ...)                                                                      \
    do {                                                                                     \
        int n_ = snprintf(errstr, errsize, "%s:%d: ", path, config_setting_source_line(s)); \
        if (n_ > 0 && (size_t)n_ < errsize)                                                  \
            snprintf(errstr + n_, errsize - (size_t)n_, __VA_ARGS__);                        \
        goto fail;                                                                           \
    } while (0)

static int load_key(const obx_config_key_t *k, config_setting_t *s, obx_config_t *cfg,
                    const char *path, char *errstr, size_t errsize) {
    int t = config_setting_type(s);
    if (k->type == OBX_KEY_INT) {
        long long v;
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            FAIL_AT(s, "%s.%s must be an integer, not %s", k->group, k->name, type_name(t));
        v = config_setting_get_int64(s);
        if (v < k->min || v > k->max)
            FAIL_AT(s, "%s.%s = %lld is out of range [%lld, %lld]", k->group, k->name, v,
                    k->min, k->max);
        *FIELD_INT(cfg, k) = (int)v;
        return 0;
    }
    if (t != CONFIG_TYPE_STRING)
        FAIL_AT(s, "%s.%s must be a string, not %s", k->group, k->name, type_name(t));
    const char *v = config_setting_get_string(s);
    if (k->type == OBX_KEY_ENUM) {
        if (k->parse(v, FIELD_INT(cfg, k)) != 0)
            FAIL_AT(s, "%s.%s = \"%s\" is not one of: %s", k->group, k->name, v, k->values);
        return 0;
    }
    free(*FIELD_STR(cfg, k));
    *FIELD_STR(cfg, k) = obx_xstrdup(v);
    return 0;
fail:
    return -1;
}

static int is_secret_key(const char *key) {
    return strstr(key, "password") || strstr(key, "secret");
}

/* librdkafka's table of its properties (rd_kafka_conf_properties_show);
 * caller frees. */
static char *kafka_properties(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f || (rd_kafka_conf_properties_show(f), fclose(f)) != 0) {
        OBX_LOG(OBX_LOG_ERROR, "out_of_memory", "out of memory");
        abort();
    }
    return buf;
}

/* The client a librdkafka property is for, as that table says: 'C'
 * consumer, 'P' producer, '*' both or not listed. */
static char kafka_scope(const char *props, const char *key) {
    size_t n = strlen(key);
    for (const char *l = props; l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        const char *c;
        if (strncmp(l, key, n) != 0 || l[n] != ' ' || !(c = strchr(l, '|')))
            continue;
        c += strspn(c + 1, " ") + 1;
        return (*c == 'C' || *c == 'P') && c[1] == ' ' ? *c : '*';
    }
    return '*';
}

/* Refuses what the relay's idempotent producer cannot work with. */
static int check_producer_prop(config_setting_t *s, const char *name, const char *key,
                               const char *v, const char *path, char *errstr, size_t errsize) {
    if (strcmp(key, "enable.idempotence") == 0 && strcmp(v, "true") != 0)
        FAIL_AT(s, "kafka.%s: the relay needs enable.idempotence=true (per-key order and no duplicates on retry)", name);
    if ((strcmp(key, "acks") == 0 || strcmp(key, "request.required.acks") == 0) &&
        strcmp(v, "all") != 0 && strcmp(v, "-1") != 0)
        FAIL_AT(s, "kafka.%s = %s breaks idempotence: only all (-1) is allowed", name, v);
    if ((strcmp(key, "max.in.flight.requests.per.connection") == 0 ||
         strcmp(key, "max.in.flight") == 0) && atoll(v) > 5)
        FAIL_AT(s, "kafka.%s = %s breaks idempotence: at most 5 is allowed", name, v);
    if (strcmp(key, "transactional.id") == 0)
        FAIL_AT(s, "kafka.%s: transactions are not used by the relay", name);
    return 0;
fail:
    return -1;
}

/* Refuses a property that program does not read: a row of the key table
 * says so, or else librdkafka's scope (a producer's or a consumer's). */
static int check_prop_program(config_setting_t *s, const char *name, const char *key,
                              const char *props, obx_program_t program, const char *path,
                              char *errstr, size_t errsize) {
    const obx_config_key_t *k = find_key("kafka", name);
    char scope = kafka_scope(props, key);
    if (k && !(k->programs & program))
        FAIL_AT(s, "kafka.%s is only read by %s, not by %s", name, program_name(k->programs),
                program_name(program));
    if (scope == 'C' && program == OBX_PROG_RELAY)
        FAIL_AT(s, "kafka.%s is a librdkafka consumer property, not read by outbox-relay (a producer)", name);
    if (scope == 'P' && program == OBX_PROG_CONSUMER)
        FAIL_AT(s, "kafka.%s is a librdkafka producer property, not read by the consumer runner", name);
    return 0;
fail:
    return -1;
}

static int load_kafka(config_setting_t *grp, obx_program_t program, obx_config_t *cfg,
                      const char *path, char *errstr, size_t errsize) {
    int n = config_setting_length(grp);
    char val[64], rkerr[256];
    rd_kafka_conf_t *probe = rd_kafka_conf_new();
    char *props = kafka_properties();

    cfg->kafka = obx_xcalloc((size_t)n + 1, sizeof *cfg->kafka);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        const char *v = val;
        char *key = obx_xstrdup(name);
        obx_kafka_prop_t *p = &cfg->kafka[cfg->kafka_n++];

        for (char *c = key; *c; c++)
            if (*c == '_')
                *c = '.';
        p->key = key;
        p->line = config_setting_source_line(s);
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING: v = config_setting_get_string(s); break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64: snprintf(val, sizeof val, "%lld", config_setting_get_int64(s)); break;
        case CONFIG_TYPE_BOOL: snprintf(val, sizeof val, "%s", config_setting_get_bool(s) ? "true" : "false"); break;
        case CONFIG_TYPE_FLOAT: snprintf(val, sizeof val, "%g", config_setting_get_float(s)); break;
        default:
            FAIL_AT(s, "kafka.%s must be a string, number or boolean, not %s", name,
                    type_name(config_setting_type(s)));
        }
        p->value = obx_xstrdup(v);
        if (is_secret_key(key)) {
            cfg->has_secret = 1;
            obx_log_add_secret(p->value);
        }
        if (check_prop_program(s, name, key, props, program, path, errstr, errsize) != 0 ||
            (program == OBX_PROG_RELAY && check_producer_prop(s, name, key, v, path, errstr, errsize) != 0))
            goto fail;
        if (rd_kafka_conf_set(probe, key, v, rkerr, sizeof rkerr) != RD_KAFKA_CONF_OK)
            FAIL_AT(s, "kafka.%s: %s", name, rkerr);
    }
    free(props);
    rd_kafka_conf_destroy(probe);
    return 0;
fail:
    free(props);
    rd_kafka_conf_destroy(probe);
    return -1;
}

static int load_routes(config_setting_t *list, obx_config_t *cfg, const char *path,
                       char *errstr, size_t errsize) {
    int n = config_setting_length(list);
    if (!config_setting_is_list(list) && !config_setting_is_array(list))
        FAIL_AT(list, "routes must be a list of groups: ( { aggregate_type = \"...\"; topic = \"...\"; } )");
    cfg->routes = obx_xcalloc((size_t)n + 1, sizeof *cfg->routes);
    for (int i = 0; i < n; i++) {
        config_setting_t *r = config_setting_get_elem(list, (unsigned)i);
        const char *at = NULL, *topic = NULL;
        if (!config_setting_is_group(r))
            FAIL_AT(r, "routes[%d] must be a group { aggregate_type = ...; topic = ...; }", i);
        for (int j = 0; j < config_setting_length(r); j++) {
            config_setting_t *f = config_setting_get_elem(r, (unsigned)j);
            const char *fn = config_setting_name(f);
            if (strcmp(fn, "aggregate_type") != 0 && strcmp(fn, "topic") != 0)
                FAIL_AT(f, "routes[%d]: unknown key \"%s\" (known: aggregate_type, topic)", i, fn);
            if (config_setting_type(f) != CONFIG_TYPE_STRING)
                FAIL_AT(f, "routes[%d].%s must be a string, not %s", i, fn,
                        type_name(config_setting_type(f)));
            if (strcmp(fn, "topic") == 0) {
                topic = config_setting_get_string(f);
                if (!obx_route_topic_valid(topic))
                    FAIL_AT(f, "routes[%d].topic \"%s\" is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])", i, topic);
            } else {
                at = config_setting_get_string(f);
            }
        }
        if (!at || !topic)
            FAIL_AT(r, "routes[%d] needs both aggregate_type and topic", i);
        cfg->routes[i].aggregate_type = obx_xstrdup(at);
        cfg->routes[i].topic = obx_xstrdup(topic);
        cfg->routes_n++;
    }
    return 0;
fail:
    return -1;
}

static int load_topics(config_setting_t *list, obx_config_t *cfg, const char *path,
                       char *errstr, size_t errsize) {
    int n = config_setting_length(list);
    if (!config_setting_is_array(list) && !config_setting_is_list(list))
        FAIL_AT(list, "consumer.topics must be a list of topic names: [\"a\", \"b\"]");
    cfg->consumer_topics = obx_xcalloc((size_t)n + 1, sizeof *cfg->consumer_topics);
    for (int i = 0; i < n; i++) {
        config_setting_t *t = config_setting_get_elem(list, (unsigned)i);
        const char *v = config_setting_get_string(t);
        if (!v)
            FAIL_AT(t, "consumer.topics[%d] must be a string", i);
        if (!obx_route_topic_valid(v))
            FAIL_AT(t, "consumer.topics[%d] \"%s\" is not a valid Kafka topic name", i, v);
        cfg->consumer_topics[cfg->consumer_topics_n++] = obx_xstrdup(v);
    }
    return 0;
fail:
    return -1;
}

/* Loads the members of one group (not kafka, not routes). */
static int load_group(config_setting_t *grp, obx_program_t program, obx_config_t *cfg,
                      const char *path, char *errstr, size_t errsize) {
    const char *name = config_setting_name(grp);
    for (int j = 0; j < config_setting_length(grp); j++) {
        config_setting_t *ks = config_setting_get_elem(grp, (unsigned)j);
        const char *kn = config_setting_name(ks);
        const obx_config_key_t *k = find_key(name, kn);
        if (!k)
            FAIL_AT(ks, "unknown key \"%s.%s\"", name, kn);
        if (!(k->programs & program))
            FAIL_AT(ks, "%s.%s is only read by %s, not by %s", name, kn, program_name(k->programs),
                    program_name(program));
        if (k->type == OBX_KEY_TOPICS ? load_topics(ks, cfg, path, errstr, errsize)
                                      : load_key(k, ks, cfg, path, errstr, errsize))
            return -1;
    }
    return 0;
fail:
    return -1;
}

static int load_top(config_setting_t *s, obx_program_t program, obx_config_t *cfg,
                    const char *path, char *errstr, size_t errsize) {
    const char *name = config_setting_name(s);
    const obx_config_key_t *k = find_key(name, NULL);
    char known[128];

    known_groups(program, known, sizeof known);
    if (!k)
        FAIL_AT(s, "unknown key \"%s\" (known: %s)", name, known);
    if (!(group_programs(name) & program))
        FAIL_AT(s, "%s is only read by %s, not by %s (known: %s)", name,
                program_name(group_programs(name)), program_name(program), known);
    if (k->type == OBX_KEY_ROUTES)
        return load_routes(s, cfg, path, errstr, errsize);
    if (!config_setting_is_group(s))
        FAIL_AT(s, "%s must be a group { ... }, not %s", name, type_name(config_setting_type(s)));
    if (k->type == OBX_KEY_KAFKA)
        return load_kafka(s, program, cfg, path, errstr, errsize);
    return load_group(s, program, cfg, path, errstr, errsize);
fail:
    return -1;
}

static int check_conninfo(obx_config_t *cfg, char *why, size_t whysize) {
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->pg_conninfo, &perr);
    if (!opts) {
        size_t l = perr ? strlen(perr) : 0;
        while (l > 0 && perr[l - 1] == '\n')
            perr[--l] = '\0';
        snprintf(why, whysize, "postgres.conninfo: %s", perr ? perr : "cannot parse");
        PQfreemem(perr);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) {
            cfg->has_secret = 1;
            obx_log_add_secret(o->val);
        }
    PQconninfoFree(opts);
    return 0;
}

/* Quotes postgres.table into pg_table_sql: "schema"."table" or "table". */
static int check_table(obx_config_t *cfg, char *why, size_t whysize) {
    const char *t = cfg->pg_table, *dot = strchr(t, '.');
    char *a, *b;
    size_t n;

    if (!*t) {
        snprintf(why, whysize, "postgres.table must not be empty");
        return -1;
    }
    if (!dot) {
        cfg->pg_table_sql = obx_config_quote_ident(t, strlen(t));
        return 0;
    }
    if (dot == t || !dot[1]) {
        snprintf(why, whysize, "postgres.table \"%s\": expected schema.table", t);
        return -1;
    }
    a = obx_config_quote_ident(t, (size_t)(dot - t));
    b = obx_config_quote_ident(dot + 1, strlen(dot + 1));
    n = strlen(a) + strlen(b) + 2;
    cfg->pg_table_sql = obx_xmalloc(n);
    snprintf(cfg->pg_table_sql, n, "%s.%s", a, b);
    free(a);
    free(b);
    return 0;
}

static int check_channel(obx_config_t *cfg, char *why, size_t whysize) {
    if (*cfg->pg_channel)
        return 0;
    snprintf(why, whysize, "postgres.channel must not be empty");
    return -1;
}

static int check_pattern(obx_config_t *cfg, char *why, size_t whysize) {
    char perr[256];
    if (obx_route_pattern_check(cfg->topic_pattern, perr, sizeof perr) == 0)
        return 0;
    snprintf(why, whysize, "relay.topic_pattern: %s", perr);
    return -1;
}

static int key_is_set(const obx_config_key_t *k, const obx_config_t *cfg) {
    switch (k->type) {
    case OBX_KEY_STR: return **FIELD_STR(cfg, k) != '\0';
    case OBX_KEY_TOPICS: return cfg->consumer_topics_n > 0;
    case OBX_KEY_KAFKA:
        for (size_t i = 0; i < cfg->kafka_n; i++) {
            const char *a = cfg->kafka[i].key, *b = k->name;
            while (*a && (*a == *b || (*a == '.' && *b == '_')))
                a++, b++;
            if (!*a && !*b)
                return 1;
        }
        return 0;
    default: return 1;
    }
}

/* Writes "PATH[:LINE]: " for the key: its own line, else its group's, else none. */
static size_t locate(config_t *lc, const obx_config_key_t *k, const char *path, char *errstr,
                     size_t errsize) {
    char name[128];
    config_setting_t *s = config_lookup(lc, key_name(k, name, sizeof name));
    int n;
    if (!s)
        s = config_lookup(lc, k->group);
    n = s ? snprintf(errstr, errsize, "%s:%d: ", path, config_setting_source_line(s))
          : snprintf(errstr, errsize, "%s: ", path);
    return n > 0 && (size_t)n < errsize ? (size_t)n : errsize - 1;
}

/* Required keys and each key's own check, in table order, for program's keys. */
static int check_keys(config_t *lc, obx_program_t program, obx_config_t *cfg, const char *path,
                      char *errstr, size_t errsize) {
    for (size_t i = 0; i < NKEYS; i++) {
        const obx_config_key_t *k = &keys[i];
        char name[128];
        size_t at;
        if (!(k->programs & program))
            continue;
        if (k->required && !key_is_set(k, cfg)) {
            if (!config_lookup(lc, k->group)) {
                snprintf(errstr, errsize, "%s: missing group %s { %s = %s; }", path, k->group, k->name,
                         k->type == OBX_KEY_TOPICS ? "[\"...\"]" : "\"...\"");
                return -1;
            }
            at = locate(lc, k, path, errstr, errsize);
            snprintf(errstr + at, errsize - at, "%s is required", key_name(k, name, sizeof name));
            return -1;
        }
        if (k->check) {
            char why[512];
            if (k->check(cfg, why, sizeof why) != 0) {
                at = locate(lc, k, path, errstr, errsize);
                snprintf(errstr + at, errsize - at, "%s", why);
                return -1;
            }
        }
    }
    return 0;
}

int obx_config_load(const char *path, obx_program_t program, obx_config_t *cfg, char *errstr,
                    size_t errsize) {
    config_t lc;
    config_setting_t *root;
    FILE *f;
    int rc = -1;

    obx_config_defaults(cfg);
    cfg->path = obx_xstrdup(path);
    cfg->program = (int)program;
    config_init(&lc);
    f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errsize, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (config_read(&lc, f) != CONFIG_TRUE) {
        snprintf(errstr, errsize, "%s:%d: %s", path, config_error_line(&lc),
                 config_error_text(&lc));
        fclose(f);
        goto out;
    }
    fclose(f);
    root = config_root_setting(&lc);
    for (int i = 0; i < config_setting_length(root); i++)
        if (load_top(config_setting_get_elem(root, (unsigned)i), program, cfg, path, errstr, errsize) != 0)
            goto out;
    rc = check_keys(&lc, program, cfg, path, errstr, errsize);
out:
    config_destroy(&lc);
    if (rc != 0)
        obx_config_free(cfg);
    return rc;
}

static int kafka_changed(const obx_config_t *a, const obx_config_t *b) {
    if (a->kafka_n != b->kafka_n)
        return 1;
    for (size_t i = 0; i < a->kafka_n; i++)
        if (strcmp(a->kafka[i].key, b->kafka[i].key) || strcmp(a->kafka[i].value, b->kafka[i].value))
            return 1;
    return 0;
}

static int routes_changed(const obx_config_t *a, const obx_config_t *b) {
    if (a->routes_n != b->routes_n)
        return 1;
    for (size_t i = 0; i < a->routes_n; i++)
        if (strcmp(a->routes[i].aggregate_type, b->routes[i].aggregate_type) ||
            strcmp(a->routes[i].topic, b->routes[i].topic))
            return 1;
    return 0;
}

static int topics_changed(const obx_config_t *a, const obx_config_t *b) {
    if (a->consumer_topics_n != b->consumer_topics_n)
        return 1;
    for (size_t i = 0; i < a->consumer_topics_n; i++)
        if (strcmp(a->consumer_topics[i], b->consumer_topics[i]))
            return 1;
    return 0;
}

/* Whether the key differs; the kafka group is compared as a whole elsewhere. */
static int key_changed(const obx_config_key_t *k, const obx_config_t *a, const obx_config_t *b) {
    switch (k->type) {
    case OBX_KEY_INT:
    case OBX_KEY_ENUM: return *FIELD_INT(a, k) != *FIELD_INT(b, k);
    case OBX_KEY_STR: return strcmp(*FIELD_STR(a, k), *FIELD_STR(b, k)) != 0;
    case OBX_KEY_TOPICS: return topics_changed(a, b);
    case OBX_KEY_ROUTES: return routes_changed(a, b);
    default: return 0;
    }
}

/* Copies a reloadable key by its type; lists stay as loaded (restart). */
static int key_copy(const obx_config_key_t *k, obx_config_t *cur, const obx_config_t *fresh) {
    switch (k->type) {
    case OBX_KEY_INT:
    case OBX_KEY_ENUM: *FIELD_INT(cur, k) = *FIELD_INT(fresh, k); return 0;
    case OBX_KEY_STR:
        free(*FIELD_STR(cur, k));
        *FIELD_STR(cur, k) = obx_xstrdup(*FIELD_STR(fresh, k));
        return 0;
    default: return -1;
    }
}

void obx_config_reload(obx_config_t *cur, const obx_config_t *fresh, char *ignored,
                       size_t ignored_size) {
    size_t len = 0;
    int full = 0; /* the list stops at the first name that does not fit */
    ignored[0] = '\0';
    if (kafka_changed(cur, fresh))
        len += (size_t)snprintf(ignored + len, ignored_size - len, "kafka");
    for (size_t i = 0; i < NKEYS; i++) {
        const obx_config_key_t *k = &keys[i];
        char buf[128];
        const char *name;
        if (!key_changed(k, cur, fresh) || (k->reload && key_copy(k, cur, fresh) == 0))
            continue;
        name = key_name(k, buf, sizeof buf);
        full |= len + strlen(name) + 2 > ignored_size;
        if (!full)
            len += (size_t)snprintf(ignored + len, ignored_size - len, "%s%s", len ? "," : "", name);
    }
}

int obx_config_reload_file(obx_config_t *cfg) {
    obx_config_t fresh;
    char err[1024], ignored[512];

    if (obx_config_load(cfg->path, (obx_program_t)cfg->program, &fresh, err, sizeof err) != 0) {
        OBX_LOG(OBX_LOG_ERROR, "config_reload_failed",
                "reload failed, keeping the current config", KS("error", err));
        return -1;
    }
    obx_config_reload(cfg, &fresh, ignored, sizeof ignored);
    obx_config_free(&fresh);
    obx_log_configure((obx_log_level_t)cfg->log_level, (obx_log_format_t)cfg->log_format);
    OBX_LOG(OBX_LOG_INFO, "config_reloaded", "config reloaded", KS("restart_needed_for", ignored));
    return 0;
}
