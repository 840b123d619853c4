/* Structured logging: one event per line on stderr, logfmt or JSON.
 *
 * OBX_LOG(OBX_LOG_INFO, "row_published", "published", KS("topic", t), KI("n", n));
 * The second argument is the line's event name: snake_case string literals,
 * stable across releases and documented in docs/monitoring.md (a unit test
 * scans the sources for them); msg stays free text. Values are copied into
 * the line before obx_log_emit returns; the caller keeps ownership of every
 * string it passes. Registered secrets are replaced by "***" wherever they
 * appear in a line. A line longer than its buffer keeps every field: long
 * string values are cut and end in OBX_LOG_TRUNCATED. Under journald (stderr
 * is the stream named by JOURNAL_STREAM) each line starts with its sd-daemon
 * priority, <3> to <7>. */
#ifndef OBX_LOG_H
#define OBX_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    OBX_LOG_DEBUG = 0,
    OBX_LOG_INFO,
    OBX_LOG_WARN,
    OBX_LOG_ERROR
} obx_log_level_t;

typedef enum { OBX_LOG_LOGFMT = 0, OBX_LOG_JSON } obx_log_format_t;

typedef enum { OBX_KV_END = 0, OBX_KV_STR, OBX_KV_INT, OBX_KV_DBL } obx_kv_type_t;

typedef struct {
    const char *key;
    obx_kv_type_t type;
    const char *s;
    int64_t i;
    double d;
} obx_kv_t;

#define KS(k, v) {.key = (k), .type = OBX_KV_STR, .s = (v)}
#define KI(k, v) {.key = (k), .type = OBX_KV_INT, .i = (int64_t)(v)}
#define KD(k, v) {.key = (k), .type = OBX_KV_DBL, .d = (double)(v)}
/* No field: the place of one that a line carries only sometimes. */
#define KNONE {.key = "", .type = OBX_KV_END}

#define OBX_LOG_TRUNCATED "...[truncated]"

#define OBX_LOG(lvl, event, msg, ...)                                        \
    do {                                                                       \
        if ((lvl) >= obx_log_level_get())                                      \
            obx_log_emit((lvl), (event), (msg),                                \
                         (const obx_kv_t[]){__VA_ARGS__ __VA_OPT__(,) {0}});   \
    } while (0)

/* Also looks again whether stderr is the journal (JOURNAL_STREAM). */
void obx_log_configure(obx_log_level_t level, obx_log_format_t format);
obx_log_level_t obx_log_level_get(void);
/* The component name added to every line (e.g. "relay"); not copied: pass a literal. */
void obx_log_set_component(const char *component);
/* Registers a secret to scrub from every line; copied. Empty strings are ignored. */
void obx_log_add_secret(const char *secret);
void obx_log_clear_secrets(void);
int obx_log_level_parse(const char *s, obx_log_level_t *out);
int obx_log_format_parse(const char *s, obx_log_format_t *out);
const char *obx_log_level_name(obx_log_level_t level);
void obx_log_emit(obx_log_level_t level, const char *event, const char *msg, const obx_kv_t *kvs);
/* Formats one line into buf (no newline, no journald prefix, NUL-terminated,
 * at most size - 1 characters); returns its length. The line stays valid
 * logfmt or JSON: string values are cut first, and only when even the cut
 * values do not fit are the last fields left out. event may be NULL (no
 * event field). Used by obx_log_emit and by the tests. */
size_t obx_log_format_event(char *buf, size_t size, obx_log_level_t level, const char *event,
                            const char *msg, const obx_kv_t *kvs);
/* obx_log_format_event without an event. */
size_t obx_log_format_line(char *buf, size_t size, obx_log_level_t level,
                           const char *msg, const obx_kv_t *kvs);

#endif
