#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OBX_LOG_LINE_MAX 8192
#define OBX_LOG_SECRETS_MAX 32

static obx_log_level_t log_level = OBX_LOG_INFO;
static obx_log_format_t log_format = OBX_LOG_LOGFMT;
static const char *log_component;
static char *log_secrets[OBX_LOG_SECRETS_MAX];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void obx_log_configure(obx_log_level_t level, obx_log_format_t format) {
    log_level = level;
    log_format = format;
}

obx_log_level_t obx_log_level_get(void) { return log_level; }

void obx_log_set_component(const char *component) { log_component = component; }

void obx_log_add_secret(const char *secret) {
    if (!secret || !*secret)
        return;
    for (int i = 0; i < OBX_LOG_SECRETS_MAX; i++) {
        if (log_secrets[i] && strcmp(log_secrets[i], secret) == 0)
            return;
        if (!log_secrets[i]) {
            log_secrets[i] = strdup(secret);
            return;
        }
    }
}

void obx_log_clear_secrets(void) {
    for (int i = 0; i < OBX_LOG_SECRETS_MAX; i++) {
        free(log_secrets[i]);
        log_secrets[i] = NULL;
    }
}

int obx_log_level_parse(const char *s, obx_log_level_t *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (obx_log_level_t)i;
            return 0;
        }
    return -1;
}

int obx_log_format_parse(const char *s, obx_log_format_t *out) {
    if (strcmp(s, "logfmt") == 0)
        *out = OBX_LOG_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = OBX_LOG_JSON;
    else
        return -1;
    return 0;
}

const char *obx_log_level_name(obx_log_level_t level) { return level_names[level]; }

/* A bounded string builder: writes past the end are dropped, len keeps counting. */
typedef struct {
    char *buf;
    size_t size;
    size_t len;
} sbuf_t;

static void sb_putc(sbuf_t *sb, char c) {
    if (sb->len + 1 < sb->size)
        sb->buf[sb->len] = c;
    sb->len++;
}

static void sb_puts(sbuf_t *sb, const char *s) {
    while (*s)
        sb_putc(sb, *s++);
}

static int logfmt_needs_quotes(const char *s) {
    if (!*s)
        return 1;
    for (; *s; s++)
        if (*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || (unsigned char)*s == 0x7f)
            return 1;
    return 0;
}

/* Escapes for both formats: JSON string rules are a superset of what logfmt needs. */
static void sb_put_escaped(sbuf_t *sb, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': sb_puts(sb, "\\\""); break;
        case '\\': sb_puts(sb, "\\\\"); break;
        case '\n': sb_puts(sb, "\\n"); break;
        case '\r': sb_puts(sb, "\\r"); break;
        case '\t': sb_puts(sb, "\\t"); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                sb_puts(sb, "\\u00");
                sb_putc(sb, hex[c >> 4]);
                sb_putc(sb, hex[c & 15]);
            } else {
                sb_putc(sb, (char)c);
            }
        }
    }
}

static void sb_put_value(sbuf_t *sb, const char *v, int json) {
    if (json || logfmt_needs_quotes(v)) {
        sb_putc(sb, '"');
        sb_put_escaped(sb, v);
        sb_putc(sb, '"');
    } else {
        sb_puts(sb, v);
    }
}

static void sb_put_field(sbuf_t *sb, const char *key, const char *val, int quoted_num, int first) {
    int json = log_format == OBX_LOG_JSON;
    if (json) {
        if (!first)
            sb_putc(sb, ',');
        sb_putc(sb, '"');
        sb_put_escaped(sb, key);
        sb_puts(sb, "\":");
        if (quoted_num)
            sb_puts(sb, val);
        else
            sb_put_value(sb, val, 1);
    } else {
        if (!first)
            sb_putc(sb, ' ');
        sb_puts(sb, key);
        sb_putc(sb, '=');
        sb_put_value(sb, val, 0);
    }
}

/* Returns s, or a copy in tmp with every registered secret replaced by "***".
 * Scrubbing happens before escaping and truncation, so neither can leave a
 * secret (or a prefix of one) in the line. */
static const char *scrub(const char *s, char *tmp, size_t tmpsize) {
    size_t out = 0;
    int found = 0;
    for (int i = 0; i < OBX_LOG_SECRETS_MAX && log_secrets[i] && !found; i++)
        found = strstr(s, log_secrets[i]) != NULL;
    if (!found)
        return s;
    while (*s && out + 1 < tmpsize) {
        size_t n = 0;
        for (int i = 0; i < OBX_LOG_SECRETS_MAX && log_secrets[i] && !n; i++)
            if (strncmp(s, log_secrets[i], strlen(log_secrets[i])) == 0)
                n = strlen(log_secrets[i]);
        if (n) {
            for (int k = 0; k < 3 && out + 1 < tmpsize; k++)
                tmp[out++] = '*';
            s += n;
        } else {
            tmp[out++] = *s++;
        }
    }
    tmp[out] = '\0';
    return tmp;
}

size_t obx_log_format_line(char *buf, size_t size, obx_log_level_t level,
                           const char *msg, const obx_kv_t *kvs) {
    sbuf_t sb = {buf, size, 0};
    char ts[64], num[64], tmp[OBX_LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    int json = log_format == OBX_LOG_JSON;

    if (size == 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             now.tv_nsec / 1000000);
    if (json)
        sb_putc(&sb, '{');
    sb_put_field(&sb, "ts", ts, 0, 1);
    sb_put_field(&sb, "level", level_names[level], 0, 0);
    if (log_component)
        sb_put_field(&sb, "component", log_component, 0, 0);
    sb_put_field(&sb, "msg", scrub(msg, tmp, sizeof tmp), 0, 0);
    for (; kvs && kvs->key; kvs++) {
        switch (kvs->type) {
        case OBX_KV_STR:
            sb_put_field(&sb, kvs->key, scrub(kvs->s ? kvs->s : "", tmp, sizeof tmp), 0, 0);
            break;
        case OBX_KV_INT:
            snprintf(num, sizeof num, "%lld", (long long)kvs->i);
            sb_put_field(&sb, kvs->key, num, 1, 0);
            break;
        case OBX_KV_DBL:
            snprintf(num, sizeof num, "%.3f", kvs->d);
            sb_put_field(&sb, kvs->key, num, 1, 0);
            break;
        case OBX_KV_END:
            break;
        }
    }
    if (json)
        sb_putc(&sb, '}');
    buf[sb.len < size ? sb.len : size - 1] = '\0';
    return strlen(buf);
}

void obx_log_emit(obx_log_level_t level, const char *msg, const obx_kv_t *kvs) {
    char line[OBX_LOG_LINE_MAX + 1];
    size_t n;

    if (level < log_level)
        return;
    n = obx_log_format_line(line, OBX_LOG_LINE_MAX, level, msg, kvs);
    line[n++] = '\n';
    /* One write per line so concurrent writers never interleave inside a line. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
