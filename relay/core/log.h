/* Structured logging: one event per line on stderr, logfmt or JSON.
 *
 * OBX_LOG(OBX_LOG_INFO, "published", KS("topic", t), KI("n", n));
 * Values are copied into the line before obx_log_emit returns; the caller
 * keeps ownership of every string it passes. Registered secrets are replaced
 * by "***" wherever they appear in a line. */
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

#define OBX_LOG(lvl, msg, ...)                                               \
    do {                                                                       \
        if ((lvl) >= obx_log_level_get())                                      \
            obx_log_emit((lvl), (msg), (const obx_kv_t[]){__VA_ARGS__ __VA_OPT__(,) {0}});  \
    } while (0)

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
void obx_log_emit(obx_log_level_t level, const char *msg, const obx_kv_t *kvs);
/* Formats one line into buf (no newline, NUL-terminated, truncated to size);
 * returns its length. Used by obx_log_emit and by the tests. */
size_t obx_log_format_line(char *buf, size_t size, obx_log_level_t level,
                           const char *msg, const obx_kv_t *kvs);

#endif
