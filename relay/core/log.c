#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xalloc.h"

#define OBX_LOG_LINE_MAX 8192
#define OBX_LOG_SECRETS_MAX 32

static obx_log_level_t log_level = OBX_LOG_INFO;
static obx_log_format_t log_format = OBX_LOG_LOGFMT;
static const char *log_component;
static char *log_secrets[OBX_LOG_SECRETS_MAX];
static int log_journal; /* stderr is the journal: prefix lines with their priority */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* systemd sets JOURNAL_STREAM to "device:inode" of the stream it connected;
 * stderr may since have been redirected elsewhere, so compare. */
static int stderr_is_journal(void) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char *end;
    struct stat st;

    if (!js || !*js)
        return 0;
    dev = strtoull(js, &end, 10);
    if (end == js || *end != ':')
        return 0;
    js = end + 1;
    ino = strtoull(js, &end, 10);
    if (end == js || *end)
        return 0;
    return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

void obx_log_configure(obx_log_level_t level, obx_log_format_t format) {
    log_level = level;
    log_format = format;
    log_journal = stderr_is_journal();
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
            log_secrets[i] = obx_xstrdup(secret); /* a secret that could not be kept would be logged */
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

/* A bounded string builder: writes past the end are dropped, len keeps
 * counting. A field that does not fit whole (with room for the closing brace
 * of a JSON line) is taken back, and so is every field after it, so that the
 * line stays well-formed. */
typedef struct {
    char *buf;
    size_t size;
    size_t len;
    size_t reserve; /* 1 for JSON's closing brace */
    int fields;
    int dropped;
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

/* Escapes for both formats: JSON string rules are a superset of what logfmt
 * needs. Puts the escaped form of the character at s into e (a UTF-8
 * sequence stays whole, so a cut never splits one) and returns how many
 * bytes of s it took. */
static size_t escape_unit(const char *s, char e[8], size_t *elen) {
    static const char hex[] = "0123456789abcdef";
    unsigned char c = (unsigned char)*s;
    size_t n = 1;
    switch (c) {
    case '"': memcpy(e, "\\\"", *elen = 2); break;
    case '\\': memcpy(e, "\\\\", *elen = 2); break;
    case '\n': memcpy(e, "\\n", *elen = 2); break;
    case '\r': memcpy(e, "\\r", *elen = 2); break;
    case '\t': memcpy(e, "\\t", *elen = 2); break;
    default:
        if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            *elen = 6;
            break;
        }
        if (c >= 0xc0)
            while (n < 4 && ((unsigned char)s[n] & 0xc0) == 0x80)
                n++;
        memcpy(e, s, n);
        *elen = n;
    }
    return n;
}

/* Writes s escaped. When that takes more than cap bytes, writes the longest
 * prefix that leaves room for OBX_LOG_TRUNCATED, then the marker. */
static void sb_put_escaped(sbuf_t *sb, const char *s, size_t cap) {
    static const size_t mlen = sizeof OBX_LOG_TRUNCATED - 1;
    char e[8];
    size_t elen, total = 0, used = 0, room;
    int cut;

    for (const char *p = s; *p;) {
        p += escape_unit(p, e, &elen);
        total += elen;
    }
    cut = total > cap;
    room = !cut ? cap : cap > mlen ? cap - mlen : 0;
    while (*s) {
        size_t n = escape_unit(s, e, &elen);
        if (used + elen > room)
            break;
        for (size_t i = 0; i < elen; i++)
            sb_putc(sb, e[i]);
        used += elen;
        s += n;
    }
    if (cut)
        sb_puts(sb, OBX_LOG_TRUNCATED);
}

static void sb_put_value(sbuf_t *sb, const char *v, int json, size_t cap) {
    if (json || logfmt_needs_quotes(v)) {
        sb_putc(sb, '"');
        sb_put_escaped(sb, v, cap);
        sb_putc(sb, '"');
    } else {
        sb_put_escaped(sb, v, cap); /* nothing to escape: only the cut applies */
    }
}

/* A string value is cut to cap bytes; numbers are never cut. */
static void sb_put_field(sbuf_t *sb, const char *key, const char *val, int number, size_t cap) {
    int json = log_format == OBX_LOG_JSON;
    size_t start = sb->len;

    if (sb->dropped)
        return;
    if (json) {
        if (sb->fields)
            sb_putc(sb, ',');
        sb_putc(sb, '"');
        sb_put_escaped(sb, key, SIZE_MAX);
        sb_puts(sb, "\":");
        if (number)
            sb_puts(sb, val);
        else
            sb_put_value(sb, val, 1, cap);
    } else {
        if (sb->fields)
            sb_putc(sb, ' ');
        sb_puts(sb, key);
        sb_putc(sb, '=');
        sb_put_value(sb, val, 0, cap);
    }
    if (sb->len + sb->reserve >= sb->size) {
        sb->len = start;
        sb->dropped = 1;
    } else {
        sb->fields++;
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

/* One try at the line with string values cut to cap bytes; *dropped tells
 * whether fields had to be left out. */
static size_t format_pass(char *buf, size_t size, const char *ts, obx_log_level_t level,
                          const char *event, const char *msg, const obx_kv_t *kvs, size_t cap,
                          int *dropped) {
    int json = log_format == OBX_LOG_JSON;
    sbuf_t sb = {buf, size, 0, json ? 1 : 0, 0, 0};
    char num[64], tmp[OBX_LOG_LINE_MAX];

    if (json)
        sb_putc(&sb, '{');
    sb_put_field(&sb, "ts", ts, 0, SIZE_MAX);
    sb_put_field(&sb, "level", level_names[level], 0, SIZE_MAX);
    if (log_component)
        sb_put_field(&sb, "component", log_component, 0, SIZE_MAX);
    if (event)
        sb_put_field(&sb, "event", event, 0, SIZE_MAX);
    sb_put_field(&sb, "msg", scrub(msg, tmp, sizeof tmp), 0, cap);
    for (; kvs && kvs->key; kvs++) {
        switch (kvs->type) {
        case OBX_KV_STR:
            sb_put_field(&sb, kvs->key, scrub(kvs->s ? kvs->s : "", tmp, sizeof tmp), 0, cap);
            break;
        case OBX_KV_INT:
            snprintf(num, sizeof num, "%lld", (long long)kvs->i);
            sb_put_field(&sb, kvs->key, num, 1, cap);
            break;
        case OBX_KV_DBL:
            snprintf(num, sizeof num, "%.3f", kvs->d);
            sb_put_field(&sb, kvs->key, num, 1, cap);
            break;
        case OBX_KV_END:
            break;
        }
    }
    if (json)
        sb_putc(&sb, '}');
    *dropped = sb.dropped;
    if (sb.len >= size) /* a JSON buffer too small even for "{}" */
        sb.len = 0;
    buf[sb.len] = '\0';
    return sb.len;
}

size_t obx_log_format_event(char *buf, size_t size, obx_log_level_t level, const char *event,
                            const char *msg, const obx_kv_t *kvs) {
    char ts[64];
    struct timespec now;
    struct tm tm;
    size_t n, lo = 0, hi = size;
    int dropped;

    if (size == 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             now.tv_nsec / 1000000);
    n = format_pass(buf, size, ts, level, event, msg, kvs, SIZE_MAX, &dropped);
    if (!dropped)
        return n;
    /* Too long: the largest cut of the string values that keeps every field
     * (a cut of size bytes cannot fit; lines this long are rare enough for a
     * binary search to cost nothing that matters). */
    n = format_pass(buf, size, ts, level, event, msg, kvs, 0, &dropped);
    if (dropped)
        return n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        format_pass(buf, size, ts, level, event, msg, kvs, mid, &dropped);
        if (dropped)
            hi = mid;
        else
            lo = mid;
    }
    return format_pass(buf, size, ts, level, event, msg, kvs, lo, &dropped);
}

size_t obx_log_format_line(char *buf, size_t size, obx_log_level_t level,
                           const char *msg, const obx_kv_t *kvs) {
    return obx_log_format_event(buf, size, level, NULL, msg, kvs);
}

void obx_log_emit(obx_log_level_t level, const char *event, const char *msg, const obx_kv_t *kvs) {
    /* sd-daemon priorities, by level: journald reads "<N>" as the line's priority. */
    static const char priority[] = {'7', '6', '4', '3'};
    char line[OBX_LOG_LINE_MAX + 1];
    size_t n = 0;

    if (level < log_level)
        return;
    if (log_journal) {
        line[n++] = '<';
        line[n++] = priority[level];
        line[n++] = '>';
    }
    n += obx_log_format_event(line + n, OBX_LOG_LINE_MAX - n, level, event, msg, kvs);
    line[n++] = '\n';
    /* One write per line so concurrent writers never interleave inside a line. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
