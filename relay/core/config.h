/* The configuration of outbox-relay and of the consumer runner: one libconfig
 * file, checked against a declarative key table (obx_config_keys) that says
 * which program reads each key. Errors are "FILE:LINE: reason".
 *
 * obx_config_load fills cfg with copies of every string (libconfig's strings
 * die with its config); the caller owns cfg and frees it with obx_config_free.
 * docs/configuration.md and the man pages are generated from the key table
 * (relay/tools/configdoc.c). */
#ifndef OBX_CONFIG_H
#define OBX_CONFIG_H

#include <stddef.h>

#include "log.h"
#include "route.h"

typedef enum { OBX_FAIL_PARK = 0, OBX_FAIL_BLOCK } obx_fail_policy_t;

/* consumer.from: where a partition without a stored offset starts. */
typedef enum { OBX_FROM_EARLIEST = 0, OBX_FROM_LATEST } obx_consumer_from_t;

/* retention.mode: what the leader does with rows sent long enough ago. */
typedef enum { OBX_RETENTION_OFF = 0, OBX_RETENTION_DELETE, OBX_RETENTION_PARTITIONS } obx_retention_mode_t;

/* The program that loads a config; bits of obx_config_key_t.programs. */
typedef enum { OBX_PROG_RELAY = 1, OBX_PROG_CONSUMER = 2 } obx_program_t;
#define OBX_PROG_BOTH (OBX_PROG_RELAY | OBX_PROG_CONSUMER)

typedef struct {
    char *key;   /* librdkafka property name, dots restored */
    char *value;
    int line;
} obx_kafka_prop_t;

typedef struct {
    char *path;
    int program;              /* obx_program_t it was loaded for (reload loads it the same way) */
    int has_secret;           /* a password or secret is written in the file */

    char *pg_conninfo;
    char *pg_table;           /* as written: schema.table or table */
    char *pg_table_sql;       /* quoted for SQL: "schema"."table" */
    char *pg_channel;

    obx_kafka_prop_t *kafka;
    size_t kafka_n;

    int batch_size;
    int max_inflight;
    int poll_interval_ms;
    int busy_poll_ms;     /* keep claiming this long after the last row before sleeping on LISTEN */
    int busy_poll_interval_ms; /* the pause between those claims: latency against CPU per event */
    int busy_poll_max_interval_ms; /* what it grows to while claims find many rows (relay/core/pace.h) */
    int partition_stall_ms;   /* no report this long with messages out: the partition is stalled (relay/relayd/gate.h) */
    int partition_cold_ms;    /* no acknowledgement this long: one message at a time again (gate.h) */
    char *topic_pattern;
    int on_failure;           /* obx_fail_policy_t */
    int max_attempts;
    int shutdown_timeout_ms;
    int reconnect_max_ms;

    char *health_file;        /* "" = none */
    int health_max_age_s;
    int health_stuck_timeout_s; /* 0 = no watchdog */

    int retention_mode;       /* obx_retention_mode_t */
    int retention_keep_s;
    int retention_interval_s;
    int retention_batch_size;
    int retention_max_rows_per_s;
    int retention_partition_rows; /* partitions mode */
    int retention_partitions_ahead;

    obx_route_t *routes;
    size_t routes_n;

    /* consumer programs (dedup runner) */
    char *consumer_name;
    char **consumer_topics;   /* NULL-terminated */
    size_t consumer_topics_n;
    int consumer_batch_size;
    int consumer_batch_timeout_ms;
    int consumer_from;        /* obx_consumer_from_t */
    int inbox_retention_s;
    int inbox_cleanup_interval_s;
    int inbox_cleanup_batch;
    int inbox_dead_letters_retention_s; /* 0 = kept */
    int inbox_gone_consumer_s;  /* 0 = never */

    int log_level;            /* obx_log_level_t */
    int log_format;           /* obx_log_format_t */
    int stats_interval_s;
} obx_config_t;

typedef enum {
    OBX_KEY_INT,    /* int field in [min, max] */
    OBX_KEY_STR,    /* char * field */
    OBX_KEY_ENUM,   /* a string read into an int field by parse */
    OBX_KEY_TOPICS, /* consumer.topics: a list of topic names */
    OBX_KEY_ROUTES, /* the top-level routes list (name is NULL) */
    OBX_KEY_KAFKA,  /* a librdkafka property of the kafka group, kept in cfg->kafka */
} obx_key_type_t;

/* One row of the key table: how a key is read, checked and documented. */
typedef struct obx_config_key {
    const char *group;
    const char *name;         /* NULL: the group is the setting (routes) */
    obx_key_type_t type;
    size_t offset;            /* of its field in obx_config_t (INT, STR, ENUM) */
    long long def_i, min, max;                 /* INT */
    const char *def_s;        /* STR, ENUM; KAFKA: what applies when it is not set */
    int (*parse)(const char *s, int *out);     /* ENUM: -1 on a value not in values */
    const char *values;       /* ENUM: the accepted strings */
    /* Runs after loading when the key's program loads: -1 with the reason in why. */
    int (*check)(obx_config_t *cfg, char *why, size_t whysize);
    unsigned programs;        /* OBX_PROG_* bits of the programs that read it */
    int reload;               /* applied on SIGHUP */
    int required;
    const char *doc;          /* one line for the reference */
} obx_config_key_t;

/* The key table, in documentation order; n receives its length. */
const obx_config_key_t *obx_config_keys(size_t *n);

/* Sets every key to its default (strings allocated). */
void obx_config_defaults(obx_config_t *cfg);
/* Loads path for program: keys that only the other program reads are refused
 * like unknown ones. Returns 0, or -1 with "FILE[:LINE]: reason" in errstr.
 * cfg is freed on error. */
int obx_config_load(const char *path, obx_program_t program, obx_config_t *cfg, char *errstr,
                    size_t errsize);
void obx_config_free(obx_config_t *cfg);
/* Copies the reloadable settings of fresh into cur; writes the names of
 * changed settings that need a restart into ignored (comma-separated). */
void obx_config_reload(obx_config_t *cur, const obx_config_t *fresh, char *ignored,
                       size_t ignored_size);
/* SIGHUP for a daemon: loads cfg->path again and applies its reloadable
 * settings, log level included; logs what happened ("config reloaded" with
 * the settings that need a restart, or why it kept the current ones).
 * Returns 0 when reloaded, -1 when cfg was kept. */
int obx_config_reload_file(obx_config_t *cfg);
/* Quotes one identifier the way PostgreSQL reads it; caller frees. */
char *obx_config_quote_ident(const char *ident, size_t len);

#endif
