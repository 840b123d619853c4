#include "config.h"

#include <libconfig.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_INT, K_STR } key_type_t;

/* Parses an enum-like string into an int field; returns -1 on a bad value. */
typedef int (*str_enum_fn)(const char *s, int *out);

typedef struct {
    const char *group;
    const char *name;
    key_type_t type;
    size_t offset;
    long long def_i, min, max;
    const char *def_s;
    str_enum_fn parse;    /* K_STR stored as an int through this parser */
    const char *values;   /* for the error message of parse */
    int reloadable;
} key_def_t;

static int parse_failure(const char *s, int *out) {
    if (strcmp(s, "park") == 0)
        *out = OBX_FAIL_PARK;
    else if (strcmp(s, "block") == 0)
        *out = OBX_FAIL_BLOCK;
    else
        return -1;
    return 0;
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

#define OFF(f) offsetof(obx_config_t, f)

static const key_def_t keys[] = {
    {"postgres", "conninfo", K_STR, OFF(pg_conninfo), 0, 0, 0, "", NULL, NULL, 0},
    {"postgres", "table", K_STR, OFF(pg_table), 0, 0, 0, "public.outbox", NULL, NULL, 0},
    {"postgres", "channel", K_STR, OFF(pg_channel), 0, 0, 0, "outbox", NULL, NULL, 0},
    {"relay", "batch_size", K_INT, OFF(batch_size), 500, 1, 100000, NULL, NULL, NULL, 0},
    {"relay", "max_inflight", K_INT, OFF(max_inflight), 5000, 1, 1000000, NULL, NULL, NULL, 0},
    {"relay", "poll_interval_ms", K_INT, OFF(poll_interval_ms), 500, 10, 600000, NULL, NULL, NULL, 1},
    {"relay", "busy_poll_ms", K_INT, OFF(busy_poll_ms), 100, 0, 60000, NULL, NULL, NULL, 1},
    {"relay", "busy_poll_interval_ms", K_INT, OFF(busy_poll_interval_ms), 5, 1, 1000, NULL, NULL, NULL, 1},
    {"relay", "busy_poll_max_interval_ms", K_INT, OFF(busy_poll_max_interval_ms), 20, 1, 1000, NULL, NULL, NULL, 1},
    {"relay", "partition_stall_ms", K_INT, OFF(partition_stall_ms), 1000, 50, 600000, NULL, NULL, NULL, 1},
    {"relay", "partition_cold_ms", K_INT, OFF(partition_cold_ms), 3600000, 1000, 86400000, NULL, NULL, NULL, 1},
    {"relay", "topic_pattern", K_STR, OFF(topic_pattern), 0, 0, 0, "outbox.${aggregate_type}", NULL, NULL, 0},
    {"relay", "on_failure", K_STR, OFF(on_failure), OBX_FAIL_PARK, 0, 0, NULL, parse_failure, "park, block", 0},
    {"relay", "max_attempts", K_INT, OFF(max_attempts), 10, 1, 1000, NULL, NULL, NULL, 1},
    {"relay", "shutdown_timeout_ms", K_INT, OFF(shutdown_timeout_ms), 30000, 0, 3600000, NULL, NULL, NULL, 0},
    {"relay", "reconnect_max_ms", K_INT, OFF(reconnect_max_ms), 30000, 100, 600000, NULL, NULL, NULL, 1},
    {"consumer", "name", K_STR, OFF(consumer_name), 0, 0, 0, "", NULL, NULL, 0},
    {"consumer", "batch_size", K_INT, OFF(consumer_batch_size), 500, 1, 100000, NULL, NULL, NULL, 0},
    {"consumer", "batch_timeout_ms", K_INT, OFF(consumer_batch_timeout_ms), 20, 0, 60000, NULL, NULL, NULL, 1},
    {"inbox", "retention_s", K_INT, OFF(inbox_retention_s), 604800, 60, 315360000, NULL, NULL, NULL, 1},
    {"inbox", "cleanup_interval_s", K_INT, OFF(inbox_cleanup_interval_s), 3600, 0, 86400, NULL, NULL, NULL, 1},
    {"inbox", "cleanup_batch", K_INT, OFF(inbox_cleanup_batch), 1000, 1, 100000, NULL, NULL, NULL, 1},
    {"log", "level", K_STR, OFF(log_level), OBX_LOG_INFO, 0, 0, NULL, parse_level, "debug, info, warn, error", 1},
    {"log", "format", K_STR, OFF(log_format), OBX_LOG_LOGFMT, 0, 0, NULL, parse_format, "logfmt, json", 0},
    {"log", "stats_interval_s", K_INT, OFF(stats_interval_s), 10, 0, 86400, NULL, NULL, NULL, 1},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const char *const groups[] = {"postgres", "kafka", "relay", "log", "consumer", "inbox"};

#define FIELD_INT(cfg, k) ((int *)((char *)(cfg) + (k)->offset))
#define FIELD_STR(cfg, k) ((char **)((char *)(cfg) + (k)->offset))

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) {
        fputs("outbox-relay: out of memory\n", stderr);
        abort();
    }
    return d;
}

void obx_config_defaults(obx_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &keys[i];
        if (k->type == K_STR && !k->parse)
            *FIELD_STR(cfg, k) = xstrdup(k->def_s);
        else
            *FIELD_INT(cfg, k) = (int)k->def_i;
    }
}

void obx_config_free(obx_config_t *cfg) {
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].type == K_STR && !keys[i].parse)
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
    char *q = malloc(len * 2 + 3), *p = q;
    if (!q)
        return NULL;
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

#define FAIL_AT(s, ...)                                                                      \
    do {                                                                                     \
        int n_ = snprintf(errstr, errsize, "%s:%d: ", path, config_setting_source_line(s)); \
        if (n_ > 0 && (size_t)n_ < errsize)                                                  \
            snprintf(errstr + n_, errsize - (size_t)n_, __VA_ARGS__);                        \
        goto fail;                                                                           \
    } while (0)

static int load_key(const key_def_t *k, config_setting_t *s, obx_config_t *cfg,
                    const char *path, char *errstr, size_t errsize) {
    int t = config_setting_type(s);
    if (k->type == K_INT) {
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
    if (k->parse) {
        if (k->parse(v, FIELD_INT(cfg, k)) != 0)
            FAIL_AT(s, "%s.%s = \"%s\" is not one of: %s", k->group, k->name, v, k->values);
        return 0;
    }
    free(*FIELD_STR(cfg, k));
    *FIELD_STR(cfg, k) = xstrdup(v);
    return 0;
fail:
    return -1;
}

static int is_secret_key(const char *key) {
    return strstr(key, "password") || strstr(key, "secret");
}

static int load_kafka(config_setting_t *grp, obx_config_t *cfg, const char *path,
                      char *errstr, size_t errsize) {
    int n = config_setting_length(grp);
    char val[64], rkerr[256];
    rd_kafka_conf_t *probe = rd_kafka_conf_new();

    cfg->kafka = calloc((size_t)n + 1, sizeof *cfg->kafka);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        const char *v = val;
        char *key = xstrdup(name);
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
        p->value = xstrdup(v);
        if (is_secret_key(key)) {
            cfg->has_secret = 1;
            obx_log_add_secret(p->value);
        }
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
        if (rd_kafka_conf_set(probe, key, v, rkerr, sizeof rkerr) != RD_KAFKA_CONF_OK)
            FAIL_AT(s, "kafka.%s: %s", name, rkerr);
    }
    rd_kafka_conf_destroy(probe);
    return 0;
fail:
    rd_kafka_conf_destroy(probe);
    return -1;
}

static int load_routes(config_setting_t *list, obx_config_t *cfg, const char *path,
                       char *errstr, size_t errsize) {
    int n = config_setting_length(list);
    if (!config_setting_is_list(list) && !config_setting_is_array(list))
        FAIL_AT(list, "routes must be a list of groups: ( { aggregate_type = \"...\"; topic = \"...\"; } )");
    cfg->routes = calloc((size_t)n + 1, sizeof *cfg->routes);
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
        cfg->routes[i].aggregate_type = xstrdup(at);
        cfg->routes[i].topic = xstrdup(topic);
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
    cfg->consumer_topics = calloc((size_t)n + 1, sizeof *cfg->consumer_topics);
    for (int i = 0; i < n; i++) {
        config_setting_t *t = config_setting_get_elem(list, (unsigned)i);
        const char *v = config_setting_get_string(t);
        if (!v)
            FAIL_AT(t, "consumer.topics[%d] must be a string", i);
        if (!obx_route_topic_valid(v))
            FAIL_AT(t, "consumer.topics[%d] \"%s\" is not a valid Kafka topic name", i, v);
        cfg->consumer_topics[cfg->consumer_topics_n++] = xstrdup(v);
    }
    return 0;
fail:
    return -1;
}

static int check_postgres(config_setting_t *root, obx_config_t *cfg, const char *path,
                          char *errstr, size_t errsize) {
    config_setting_t *s = config_setting_lookup(root, "postgres");
    char *perr = NULL;
    PQconninfoOption *opts = NULL;
    const char *dot;

    if (!s) {
        snprintf(errstr, errsize, "%s: missing group postgres { conninfo = \"...\"; }", path);
        return -1;
    }
    if (!*cfg->pg_conninfo)
        FAIL_AT(s, "postgres.conninfo is required");
    opts = PQconninfoParse(cfg->pg_conninfo, &perr);
    if (!opts) {
        config_setting_t *c = config_setting_lookup(s, "conninfo");
        size_t l = perr ? strlen(perr) : 0;
        while (l > 0 && perr[l - 1] == '\n')
            perr[--l] = '\0';
        FAIL_AT(c, "postgres.conninfo: %s", perr ? perr : "cannot parse");
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) {
            cfg->has_secret = 1;
            obx_log_add_secret(o->val);
        }
    PQconninfoFree(opts);
    if (!*cfg->pg_table)
        FAIL_AT(s, "postgres.table must not be empty");
    dot = strchr(cfg->pg_table, '.');
    if (dot) {
        char *a = obx_config_quote_ident(cfg->pg_table, (size_t)(dot - cfg->pg_table));
        char *b = obx_config_quote_ident(dot + 1, strlen(dot + 1));
        size_t n = strlen(a) + strlen(b) + 2;
        if (dot == cfg->pg_table || !dot[1]) {
            free(a);
            free(b);
            FAIL_AT(s, "postgres.table \"%s\": expected schema.table", cfg->pg_table);
        }
        cfg->pg_table_sql = malloc(n);
        snprintf(cfg->pg_table_sql, n, "%s.%s", a, b);
        free(a);
        free(b);
    } else {
        cfg->pg_table_sql = obx_config_quote_ident(cfg->pg_table, strlen(cfg->pg_table));
    }
    if (!*cfg->pg_channel)
        FAIL_AT(s, "postgres.channel must not be empty");
    return 0;
fail:
    if (perr)
        PQfreemem(perr);
    return -1;
}

int obx_config_load(const char *path, obx_config_t *cfg, char *errstr, size_t errsize) {
    config_t lc;
    config_setting_t *root;
    FILE *f;
    int rc = -1;

    obx_config_defaults(cfg);
    cfg->path = xstrdup(path);
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
    for (int i = 0; i < config_setting_length(root); i++) {
        config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = strcmp(name, "routes") == 0;
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            known |= strcmp(name, groups[g]) == 0;
        if (!known)
            FAIL_AT(s, "unknown key \"%s\" (known: postgres, kafka, relay, routes, log, consumer, inbox)", name);
        if (strcmp(name, "routes") != 0 && !config_setting_is_group(s))
            FAIL_AT(s, "%s must be a group { ... }, not %s", name, type_name(config_setting_type(s)));
        if (strcmp(name, "kafka") == 0) {
            if (load_kafka(s, cfg, path, errstr, errsize) != 0)
                goto out;
            continue;
        }
        if (strcmp(name, "routes") == 0) {
            if (load_routes(s, cfg, path, errstr, errsize) != 0)
                goto out;
            continue;
        }
        for (int j = 0; j < config_setting_length(s); j++) {
            config_setting_t *ks = config_setting_get_elem(s, (unsigned)j);
            const char *kn = config_setting_name(ks);
            const key_def_t *k = NULL;
            if (strcmp(name, "consumer") == 0 && strcmp(kn, "topics") == 0) {
                if (load_topics(ks, cfg, path, errstr, errsize) != 0)
                    goto out;
                continue;
            }
            for (size_t x = 0; x < NKEYS && !k; x++)
                if (strcmp(keys[x].group, name) == 0 && strcmp(keys[x].name, kn) == 0)
                    k = &keys[x];
            if (!k)
                FAIL_AT(ks, "unknown key \"%s.%s\"", name, kn);
            if (load_key(k, ks, cfg, path, errstr, errsize) != 0)
                goto out;
        }
    }
    if (check_postgres(root, cfg, path, errstr, errsize) != 0)
        goto out;
    {
        char perr[256];
        config_setting_t *rs = config_lookup(&lc, "relay.topic_pattern");
        if (obx_route_pattern_check(cfg->topic_pattern, perr, sizeof perr) != 0) {
            if (rs)
                FAIL_AT(rs, "relay.topic_pattern: %s", perr);
            snprintf(errstr, errsize, "%s: relay.topic_pattern: %s", path, perr);
            goto out;
        }
    }
    rc = 0;
    goto out;
fail:
    rc = -1;
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

void obx_config_reload(obx_config_t *cur, const obx_config_t *fresh, char *ignored,
                       size_t ignored_size) {
    size_t len = 0;
    ignored[0] = '\0';
    if (kafka_changed(cur, fresh))
        len += (size_t)snprintf(ignored + len, ignored_size - len, "kafka");
    if (routes_changed(cur, fresh) && len + 8 < ignored_size)
        len += (size_t)snprintf(ignored + len, ignored_size - len, "%sroutes", len ? "," : "");
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &keys[i];
        int changed;
        if (k->type == K_STR && !k->parse)
            changed = strcmp(*FIELD_STR(cur, k), *FIELD_STR(fresh, k)) != 0;
        else
            changed = *FIELD_INT(cur, k) != *FIELD_INT(fresh, k);
        if (!changed)
            continue;
        if (k->reloadable) {
            *FIELD_INT(cur, k) = *FIELD_INT(fresh, k);
        } else if (len + 64 < ignored_size) {
            len += (size_t)snprintf(ignored + len, ignored_size - len, "%s%s.%s",
                                    len ? "," : "", k->group, k->name);
        }
    }
}

int obx_config_reload_file(obx_config_t *cfg) {
    obx_config_t fresh;
    char err[1024], ignored[512];

    if (obx_config_load(cfg->path, &fresh, err, sizeof err) != 0) {
        OBX_LOG(OBX_LOG_ERROR, "reload failed, keeping the current config", KS("error", err));
        return -1;
    }
    obx_config_reload(cfg, &fresh, ignored, sizeof ignored);
    obx_config_free(&fresh);
    obx_log_configure((obx_log_level_t)cfg->log_level, (obx_log_format_t)cfg->log_format);
    OBX_LOG(OBX_LOG_INFO, "config reloaded", KS("restart_needed_for", ignored));
    return 0;
}
