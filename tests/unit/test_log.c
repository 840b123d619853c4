/* Unit tests of relay/core/log.c: logfmt and JSON line formatting, quoting,
 * event names, truncation, levels, emission, journald priorities and secret
 * scrubbing; and that every event the sources can log is documented. */
#include <check.h>
#include <ctype.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"

#define TS_LEN 24 /* 2024-05-01T12:00:00.123Z */

static size_t fmt(char *buf, size_t size, obx_log_level_t level, const char *msg,
                  const obx_kv_t *kvs) {
    memset(buf, '#', size);
    return obx_log_format_line(buf, size, level, msg, kvs);
}

/* Checks an ISO 8601 UTC timestamp with milliseconds at p. */
static void assert_ts(const char *p) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (int i = 0; i < TS_LEN; i++) {
        if (shape[i] == 'd')
            ck_assert_msg(isdigit((unsigned char)p[i]), "bad timestamp %.24s", p);
        else
            ck_assert_msg(p[i] == shape[i], "bad timestamp %.24s", p);
    }
}

/* logfmt: checks "ts=<timestamp> " and returns what follows. */
static const char *logfmt_rest(const char *line) {
    ck_assert_msg(strncmp(line, "ts=", 3) == 0, "line [%s]", line);
    assert_ts(line + 3);
    ck_assert_msg(line[3 + TS_LEN] == ' ', "line [%s]", line);
    return line + 3 + TS_LEN + 1;
}

/* JSON: checks {"ts":"<timestamp>", and returns what follows. */
static const char *json_rest(const char *line) {
    ck_assert_msg(strncmp(line, "{\"ts\":\"", 7) == 0, "line [%s]", line);
    assert_ts(line + 7);
    ck_assert_msg(strncmp(line + 7 + TS_LEN, "\",", 2) == 0, "line [%s]", line);
    return line + 7 + TS_LEN + 2;
}

/* ---- a minimal JSON checker for one flat object ------------------------ */

static const char *json_string(const char *p) {
    if (*p++ != '"')
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*p++;
        if (c == '"')
            return p;
        if (c < 0x20 || c == 0x7f) /* raw control characters are not allowed (DEL for safety) */
            return NULL;
        if (c == '\\') {
            c = (unsigned char)*p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++)
                    if (!isxdigit((unsigned char)*p++))
                        return NULL;
            } else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
                return NULL;
            }
        }
    }
}

static const char *json_number(const char *p) {
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (isdigit((unsigned char)*p))
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return NULL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return NULL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return p;
}

/* Returns the member count of the object that is the whole line, or -1. */
static int json_object_members(const char *line) {
    const char *p = line;
    int n = 0;
    if (*p++ != '{')
        return -1;
    if (*p == '}')
        return p[1] == '\0' ? 0 : -1;
    for (;;) {
        if (!(p = json_string(p)) || *p++ != ':')
            return -1;
        p = *p == '"' ? json_string(p) : json_number(p);
        if (!p)
            return -1;
        n++;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}')
            return -1;
        return *p == '\0' ? n : -1;
    }
}

/* Returns the field count of a logfmt line (key=value pairs, one space
 * apart, values bare or quoted with JSON's escapes), or -1. */
static int logfmt_fields(const char *p) {
    int n = 0;
    if (!*p)
        return 0;
    for (;;) {
        const char *k = p;
        while (*p && *p != '=' && *p != ' ' && *p != '"')
            p++;
        if (p == k || *p++ != '=')
            return -1;
        if (*p == '"') {
            if (!(p = json_string(p)))
                return -1;
        } else {
            const char *v = p;
            for (; *p && *p != ' '; p++)
                if (*p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20)
                    return -1;
            if (p == v)
                return -1;
        }
        n++;
        if (!*p)
            return n;
        if (*p++ != ' ')
            return -1;
    }
}

START_TEST(test_json_checker_self_test) {
    /* The checker must be able to fail. */
    ck_assert_int_eq(json_object_members("{\"a\":\"b\",\"n\":-1.5e3}"), 2);
    ck_assert_int_eq(json_object_members("{}"), 0);
    ck_assert_int_eq(json_object_members("{\"a\":\"b\"}x"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":\"b\""), -1);
    ck_assert_int_eq(json_object_members("{\"a\":\"b\"c\"}"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":\"b\nc\"}"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":\"\\x\"}"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":nan}"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":01}"), -1);
    ck_assert_int_eq(json_object_members("{\"a\":1,}"), -1);
    ck_assert_int_eq(logfmt_fields("a=b c=\"d e\" n=1"), 3);
    ck_assert_int_eq(logfmt_fields("a=b c=\"d"), -1);
    ck_assert_int_eq(logfmt_fields("a=b c"), -1);
    ck_assert_int_eq(logfmt_fields("a=b  c=d"), -1);
    ck_assert_int_eq(logfmt_fields("a=b\\"), -1);
}
END_TEST

/* ---- logfmt ------------------------------------------------------------ */

START_TEST(test_logfmt_basic) {
    char line[512];
    size_t n;
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    n = fmt(line, sizeof line, OBX_LOG_INFO, "published",
            (obx_kv_t[]){KS("topic", "outbox.order"), KI("n", 42), KI("neg", -7), KD("rate", 1.5),
                         {0}});
    ck_assert_uint_eq(n, strlen(line));
    ck_assert_str_eq(logfmt_rest(line), "level=info msg=published topic=outbox.order n=42 neg=-7 rate=1.500");
}
END_TEST

START_TEST(test_logfmt_no_kvs_and_levels) {
    char line[256];
    static const char *const names[] = {"debug", "info", "warn", "error"};
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_LOGFMT);
    for (int l = OBX_LOG_DEBUG; l <= OBX_LOG_ERROR; l++) {
        char want[64];
        fmt(line, sizeof line, (obx_log_level_t)l, "x", NULL);
        snprintf(want, sizeof want, "level=%s msg=x", names[l]);
        ck_assert_str_eq(logfmt_rest(line), want);
    }
    fmt(line, sizeof line, OBX_LOG_INFO, "x", (obx_kv_t[]){{0}});
    ck_assert_str_eq(logfmt_rest(line), "level=info msg=x");
}
END_TEST

START_TEST(test_logfmt_component) {
    char line[256];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    obx_log_set_component("relay");
    fmt(line, sizeof line, OBX_LOG_WARN, "slow", (obx_kv_t[]){KI("ms", 1500), {0}});
    ck_assert_str_eq(logfmt_rest(line), "level=warn component=relay msg=slow ms=1500");
    obx_log_set_component(NULL);
    fmt(line, sizeof line, OBX_LOG_WARN, "slow", NULL);
    ck_assert_str_eq(logfmt_rest(line), "level=warn msg=slow");
}
END_TEST

static const struct {
    const char *value;
    const char *logfmt; /* the k=... field */
    const char *json;   /* the "k":... member */
} quoting[] = {
    {"plain", "k=plain", "\"k\":\"plain\""},
    {"path/x:y,z", "k=path/x:y,z", "\"k\":\"path/x:y,z\""},
    {"a b", "k=\"a b\"", "\"k\":\"a b\""},
    {"a\"b", "k=\"a\\\"b\"", "\"k\":\"a\\\"b\""},
    {"a\nb", "k=\"a\\nb\"", "\"k\":\"a\\nb\""},
    {"a\rb\tc", "k=\"a\\rb\\tc\"", "\"k\":\"a\\rb\\tc\""},
    {"a\\b", "k=\"a\\\\b\"", "\"k\":\"a\\\\b\""},
    {"a=b", "k=\"a=b\"", "\"k\":\"a=b\""},
    {"\x01", "k=\"\\u0001\"", "\"k\":\"\\u0001\""},
    {"x\x1fy", "k=\"x\\u001fy\"", "\"k\":\"x\\u001fy\""},
    {"\x7f", "k=\"\\u007f\"", "\"k\":\"\\u007f\""},
    {"\x1b[31mred", "k=\"\\u001b[31mred\"", "\"k\":\"\\u001b[31mred\""},
    {"", "k=\"\"", "\"k\":\"\""},
    {NULL, "k=\"\"", "\"k\":\"\""},
    {"end\"", "k=\"end\\\"\"", "\"k\":\"end\\\"\""},
    {"{\"x\":1}", "k=\"{\\\"x\\\":1}\"", "\"k\":\"{\\\"x\\\":1}\""},
};

START_TEST(test_logfmt_quoting) {
    char line[512], want[256];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("k", quoting[_i].value), KI("z", 1), {0}});
    snprintf(want, sizeof want, "level=info msg=m %s z=1", quoting[_i].logfmt);
    ck_assert_str_eq(logfmt_rest(line), want);
    /* No raw control characters ever reach the line. */
    for (const char *p = line; *p; p++)
        ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control char in [%s]", line);
}
END_TEST

START_TEST(test_logfmt_msg_quoting) {
    char line[256];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    fmt(line, sizeof line, OBX_LOG_ERROR, "claim failed: \"x\"\n", NULL);
    ck_assert_str_eq(logfmt_rest(line), "level=error msg=\"claim failed: \\\"x\\\"\\n\"");
}
END_TEST

START_TEST(test_utf8_passes_through) {
    char line[256];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("k", "caf\xc3\xa9 \xe2\x82\xac"), {0}});
    ck_assert_msg(strstr(line, "caf\xc3\xa9 \xe2\x82\xac\"") != NULL, "[%s]", line);
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("k", "caf\xc3\xa9"), {0}});
    ck_assert_msg(strstr(line, "\"k\":\"caf\xc3\xa9\"") != NULL, "[%s]", line);
}
END_TEST

/* ---- JSON -------------------------------------------------------------- */

START_TEST(test_json_basic) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    obx_log_set_component("relay");
    fmt(line, sizeof line, OBX_LOG_INFO, "published",
        (obx_kv_t[]){KS("topic", "outbox.order"), KI("n", 42), KI("neg", -7), KD("rate", 1.5),
                     KD("zero", 0), {0}});
    ck_assert_str_eq(json_rest(line),
                     "\"level\":\"info\",\"component\":\"relay\",\"msg\":\"published\","
                     "\"topic\":\"outbox.order\",\"n\":42,\"neg\":-7,\"rate\":1.500,\"zero\":0.000}");
    ck_assert_int_eq(json_object_members(line), 9);
    obx_log_set_component(NULL);
}
END_TEST

START_TEST(test_json_int_extremes) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    fmt(line, sizeof line, OBX_LOG_INFO, "m",
        (obx_kv_t[]){KI("min", INT64_MIN), KI("max", INT64_MAX), KI("zero", 0), {0}});
    ck_assert_str_eq(json_rest(line), "\"level\":\"info\",\"msg\":\"m\",\"min\":-9223372036854775808,"
                                      "\"max\":9223372036854775807,\"zero\":0}");
    ck_assert_int_eq(json_object_members(line), 6);
}
END_TEST

START_TEST(test_json_quoting) {
    char line[512], want[256];
    const char *rest;
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("k", quoting[_i].value), KI("z", 1), {0}});
    rest = json_rest(line);
    snprintf(want, sizeof want, "\"level\":\"info\",\"msg\":\"m\",%s,\"z\":1}", quoting[_i].json);
    ck_assert_str_eq(rest, want);
    ck_assert_msg(json_object_members(line) == 5, "not one JSON object: [%s]", line);
}
END_TEST

START_TEST(test_json_escapes_keys_and_msg) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    fmt(line, sizeof line, OBX_LOG_WARN, "say \"hi\"\n",
        (obx_kv_t[]){KS("we\"ird\\key", "v"), {0}});
    ck_assert_str_eq(json_rest(line),
                     "\"level\":\"warn\",\"msg\":\"say \\\"hi\\\"\\n\",\"we\\\"ird\\\\key\":\"v\"}");
    ck_assert_int_eq(json_object_members(line), 4);
}
END_TEST

/* ---- event names ---------------------------------------------------------- */

START_TEST(test_event_field) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    obx_log_set_component("relay");
    obx_log_format_event(line, sizeof line, OBX_LOG_ERROR, "row_parked", "event parked",
                         (obx_kv_t[]){KI("id", 7), {0}});
    ck_assert_str_eq(logfmt_rest(line), "level=error component=relay event=row_parked msg=\"event parked\" id=7");
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    obx_log_format_event(line, sizeof line, OBX_LOG_INFO, "stats", "stats", NULL);
    ck_assert_str_eq(json_rest(line), "\"level\":\"info\",\"component\":\"relay\",\"event\":\"stats\","
                                      "\"msg\":\"stats\"}");
    ck_assert_int_eq(json_object_members(line), 5);
    obx_log_set_component(NULL);
}
END_TEST

/* ---- truncation --------------------------------------------------------- */

/* Checks that line is one well-formed line of the configured format and
 * returns its field count. */
static int fields_of(const char *line, obx_log_format_t format) {
    /* An empty line: a JSON buffer too small even for "{}". */
    int n = !*line ? 0 : format == OBX_LOG_JSON ? json_object_members(line) : logfmt_fields(line);
    ck_assert_msg(n >= 0, "not one %s line: [%s]", format == OBX_LOG_JSON ? "JSON" : "logfmt", line);
    return n;
}

/* At every buffer size the line stays well-formed; once it is long enough
 * for every field with its string values cut, every field is there, and
 * with room for all of it, it is the full line. */
static void check_truncation(obx_log_format_t format) {
    char full[1024];
    size_t full_len, ts_at = format == OBX_LOG_JSON ? 7 : 3;
    int all;
    const obx_kv_t kvs[] = {KS("error", "connection refused \"x\"\n caf\xc3\xa9"), KI("n", 123456),
                            KS("topic", "outbox.order"), {0}};

    obx_log_configure(OBX_LOG_INFO, format);
    full_len = fmt(full, sizeof full, OBX_LOG_ERROR, "produce failed", kvs);
    ck_assert_uint_eq(full_len, strlen(full));
    all = fields_of(full, format);
    ck_assert_int_eq(all, 6);
    for (size_t size = 1; size <= full_len + 2; size++) {
        char *buf = malloc(size); /* exact size: ASan catches writes past it */
        size_t n;
        int fields;
        ck_assert_ptr_nonnull(buf);
        memset(buf, '#', size);
        n = obx_log_format_event(buf, size, OBX_LOG_ERROR, NULL, "produce failed", kvs);
        ck_assert_msg(memchr(buf, '\0', size) != NULL, "size %zu: not NUL-terminated", size);
        ck_assert_uint_eq(n, strlen(buf));
        ck_assert_msg(n < size, "size %zu: length %zu", size, n);
        fields = fields_of(buf, format);
        if (size > full_len) {
            ck_assert_uint_eq(n, full_len);
            for (size_t i = 0; i < n; i++)
                if (i < ts_at || i >= ts_at + TS_LEN)
                    ck_assert_msg(buf[i] == full[i], "size %zu: byte %zu is %c, want %c", size, i,
                                  buf[i], full[i]);
        } else if (size > 200) {
            ck_assert_msg(fields == all, "size %zu: %d fields: [%s]", size, fields, buf);
            ck_assert_msg(strstr(buf, OBX_LOG_TRUNCATED) != NULL, "size %zu: [%s]", size, buf);
            ck_assert_msg(strstr(buf, "123456") != NULL, "size %zu: numbers are not cut [%s]", size, buf);
        }
        free(buf);
    }
}

START_TEST(test_truncation_logfmt) { check_truncation(OBX_LOG_LOGFMT); }
END_TEST

START_TEST(test_truncation_json) { check_truncation(OBX_LOG_JSON); }
END_TEST

/* A value far longer than the line is cut inside the value, on a character
 * boundary, and marked; the fields after it survive. */
START_TEST(test_long_value_cut_inside) {
    char line[1024], *big = malloc(20001);
    const char *key, *at, *end;
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < 20000; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* e-acute: a cut must not split it */
    big[20000] = '\0';
    for (int f = 0; f < 2; f++) {
        obx_log_format_t format = f ? OBX_LOG_JSON : OBX_LOG_LOGFMT;
        obx_log_configure(OBX_LOG_INFO, format);
        size_t n = obx_log_format_event(line, sizeof line, OBX_LOG_WARN, "kafka_error", "m",
                                        (obx_kv_t[]){KS("detail", big), KI("after", 5), {0}});
        ck_assert_int_eq(fields_of(line, format), 6);
        ck_assert_msg(n > sizeof line - 8, "the cut wastes room: %zu bytes", n);
        key = f ? "\"detail\":\"" : "detail=\"";
        at = strstr(line, key);
        ck_assert_ptr_nonnull(at);
        at += strlen(key);
        end = strstr(at, OBX_LOG_TRUNCATED "\"");
        ck_assert_ptr_nonnull(end);
        ck_assert_msg((end - at) % 2 == 0, "a UTF-8 sequence was split: [%.40s]", end - 10);
        ck_assert_msg(strstr(line, f ? "\"after\":5}" : " after=5") != NULL, "[%s]", line);
    }
    free(big);
}
END_TEST

/* ---- levels and formats -------------------------------------------------- */

START_TEST(test_level_round_trip) {
    for (int l = OBX_LOG_DEBUG; l <= OBX_LOG_ERROR; l++) {
        obx_log_level_t out = (obx_log_level_t)-1;
        const char *name = obx_log_level_name((obx_log_level_t)l);
        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(obx_log_level_parse(name, &out), 0);
        ck_assert_int_eq(out, l);
    }
    ck_assert_str_eq(obx_log_level_name(OBX_LOG_DEBUG), "debug");
    ck_assert_str_eq(obx_log_level_name(OBX_LOG_INFO), "info");
    ck_assert_str_eq(obx_log_level_name(OBX_LOG_WARN), "warn");
    ck_assert_str_eq(obx_log_level_name(OBX_LOG_ERROR), "error");
}
END_TEST

START_TEST(test_level_parse_rejects) {
    static const char *const bad[] = {"", "INFO", "Info", "warning", "err", "debug ", "fatal", "trace"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        obx_log_level_t out = OBX_LOG_WARN;
        ck_assert_msg(obx_log_level_parse(bad[i], &out) == -1, "\"%s\" accepted", bad[i]);
        ck_assert_int_eq(out, OBX_LOG_WARN); /* untouched */
    }
}
END_TEST

START_TEST(test_format_parse) {
    obx_log_format_t f = OBX_LOG_JSON;
    ck_assert_int_eq(obx_log_format_parse("logfmt", &f), 0);
    ck_assert_int_eq(f, OBX_LOG_LOGFMT);
    ck_assert_int_eq(obx_log_format_parse("json", &f), 0);
    ck_assert_int_eq(f, OBX_LOG_JSON);
    ck_assert_int_eq(obx_log_format_parse("JSON", &f), -1);
    ck_assert_int_eq(obx_log_format_parse("text", &f), -1);
    ck_assert_int_eq(obx_log_format_parse("", &f), -1);
    ck_assert_int_eq(f, OBX_LOG_JSON);
}
END_TEST

START_TEST(test_configure_level_get) {
    obx_log_configure(OBX_LOG_WARN, OBX_LOG_LOGFMT);
    ck_assert_int_eq(obx_log_level_get(), OBX_LOG_WARN);
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_JSON);
    ck_assert_int_eq(obx_log_level_get(), OBX_LOG_DEBUG);
}
END_TEST

/* ---- emission ------------------------------------------------------------ */

/* Sends stderr to a new temp file (path) until capture_end, which returns
 * what was written. */
static void capture_begin(int *saved, char *path, size_t pathsize) {
    int fd;
    snprintf(path, pathsize, "/tmp/obx-unit-log-XXXXXX");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    *saved = dup(STDERR_FILENO);
    ck_assert_int_ge(*saved, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
}

static char *capture_end(int saved, const char *path, size_t *len) {
    FILE *f;
    char *data = malloc(65536);
    ck_assert_ptr_nonnull(data);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    *len = fread(data, 1, 65535, f);
    data[*len] = '\0';
    fclose(f);
    unlink(path);
    return data;
}

START_TEST(test_emit_filters_and_terminates) {
    char path[64];
    int saved;
    size_t len;
    char *out;

    obx_log_configure(OBX_LOG_WARN, OBX_LOG_LOGFMT);
    capture_begin(&saved, path, sizeof path);
    obx_log_emit(OBX_LOG_INFO, "hidden_info", "hidden-info", NULL);
    OBX_LOG(OBX_LOG_DEBUG, "hidden_debug", "hidden-debug", KI("n", 1));
    obx_log_emit(OBX_LOG_WARN, "shown_warn", "shown-warn", (obx_kv_t[]){KI("n", 1), {0}});
    OBX_LOG(OBX_LOG_ERROR, "shown_error", "shown-error", KS("k", "v"), KI("n", 2));
    out = capture_end(saved, path, &len);

    ck_assert_msg(strstr(out, "hidden") == NULL, "[%s]", out);
    ck_assert_msg(strstr(out, "level=warn event=shown_warn msg=shown-warn n=1\n") != NULL, "[%s]", out);
    ck_assert_msg(strstr(out, "level=error event=shown_error msg=shown-error k=v n=2\n") != NULL, "[%s]", out);
    /* Two lines, each newline-terminated. */
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += out[i] == '\n';
    ck_assert_int_eq(lines, 2);
    ck_assert_int_eq(out[len - 1], '\n');
    free(out);
}
END_TEST

START_TEST(test_emit_long_line_truncated) {
    char path[64];
    int saved;
    size_t len;
    char *out, *msg = malloc(20001);

    ck_assert_ptr_nonnull(msg);
    memset(msg, 'm', 20000);
    msg[20000] = '\0';
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    capture_begin(&saved, path, sizeof path);
    obx_log_emit(OBX_LOG_INFO, "long_line", msg, (obx_kv_t[]){KI("n", 1), {0}});
    out = capture_end(saved, path, &len);
    /* At most 8191 characters and the newline, in one line, still JSON. */
    ck_assert_uint_eq(len, 8192);
    ck_assert_int_eq(out[len - 1], '\n');
    ck_assert_ptr_eq(strchr(out, '\n'), out + len - 1);
    out[len - 1] = '\0';
    ck_assert_int_eq(json_object_members(out), 5);
    ck_assert_msg(strstr(out, OBX_LOG_TRUNCATED "\",\"n\":1}") != NULL, "[%.60s...]", out + len - 60);
    free(out);
    free(msg);
}
END_TEST

/* Under journald (JOURNAL_STREAM names stderr's device and inode) each line
 * starts with its sd-daemon priority; when stderr is something else, no. */
START_TEST(test_journald_priority) {
    static const char *const want[] = {"<7>ts=", "<6>ts=", "<4>ts=", "<3>ts=", "<6>{\"ts\":", "ts=", "ts="};
    char path[64], js[64];
    int saved, i = 0;
    size_t len;
    struct stat st;
    char *out, *line, *save;

    capture_begin(&saved, path, sizeof path);
    ck_assert_int_eq(fstat(STDERR_FILENO, &st), 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_LOGFMT);
    for (int l = OBX_LOG_DEBUG; l <= OBX_LOG_ERROR; l++)
        obx_log_emit((obx_log_level_t)l, "level_line", "m", NULL);
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_JSON);
    obx_log_emit(OBX_LOG_INFO, "json_line", "m", NULL);
    /* Another stream (stderr redirected after systemd started us). */
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_LOGFMT);
    obx_log_emit(OBX_LOG_ERROR, "other_stream", "m", NULL);
    unsetenv("JOURNAL_STREAM");
    obx_log_configure(OBX_LOG_DEBUG, OBX_LOG_LOGFMT);
    obx_log_emit(OBX_LOG_ERROR, "no_journal", "m", NULL);
    out = capture_end(saved, path, &len);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
        ck_assert_int_lt(i, 7);
        ck_assert_msg(strncmp(line, want[i], strlen(want[i])) == 0, "line %d: [%s], want %s...", i, line, want[i]);
    }
    ck_assert_int_eq(i, 7);
    free(out);
}
END_TEST

/* ---- every event the sources can log is documented ------------------------ */

#define MAX_EVENTS 512

static struct {
    char names[MAX_EVENTS][64];
    int n, calls;
} found;

static char *slurp(const char *path) {
    struct stat st;
    char *data;
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL && fstat(fileno(f), &st) == 0, "cannot read %s", path);
    data = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(data);
    data[fread(data, 1, (size_t)st.st_size, f)] = '\0';
    fclose(f);
    return data;
}

static void add_event(const char *path, int line, const char *name, size_t len) {
    ck_assert_msg(len > 0 && len < sizeof found.names[0] && islower((unsigned char)name[0]),
                  "%s:%d: event \"%.*s\" is not a snake_case name", path, line, (int)len, name);
    for (size_t i = 0; i < len; i++)
        ck_assert_msg(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '_',
                      "%s:%d: event \"%.*s\" is not a snake_case name", path, line, (int)len, name);
    for (int i = 0; i < found.n; i++)
        if (strlen(found.names[i]) == len && memcmp(found.names[i], name, len) == 0)
            return;
    ck_assert_int_lt(found.n, MAX_EVENTS);
    memcpy(found.names[found.n], name, len);
    found.names[found.n++][len] = '\0';
}

/* Collects the string literals of the event argument (the second) of every
 * OBX_LOG call in a source: the event must be one literal, or a choice
 * between literals. */
static void scan_source(const char *path, const char *src) {
    for (const char *p = src; (p = strstr(p, "OBX_LOG(")) != NULL;) {
        int depth = 1, arg = 0, literals = 0, line = 1;
        if (p > src && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) {
            p++;
            continue;
        }
        for (const char *q = src; q < p; q++)
            line += *q == '\n';
        found.calls++;
        for (p += strlen("OBX_LOG("); *p && depth > 0; p++) {
            if (*p == '"') {
                const char *lit = ++p;
                while (*p && *p != '"')
                    p += *p == '\\' && p[1] ? 2 : 1;
                if (arg == 1) {
                    add_event(path, line, lit, (size_t)(p - lit));
                    literals++;
                }
            } else if (*p == '\'') {
                p += p[1] == '\\' ? 3 : 2; /* to the closing quote */
            } else if (*p == '(') {
                depth++;
            } else if (*p == ')') {
                depth--;
            } else if (*p == ',' && depth == 1) {
                arg++;
            }
        }
        ck_assert_msg(literals > 0, "%s:%d: OBX_LOG without a literal event name", path, line);
    }
}

static int scan_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    size_t len = strlen(path);
    (void)st;
    (void)ftw;
    if (type == FTW_F && len > 2 && strcmp(path + len - 2, ".c") == 0) {
        char *src = slurp(path);
        scan_source(path, src);
        free(src);
    }
    return 0;
}

static const char *source_root(void) {
    const char *root = getenv("OBX_SOURCE_ROOT");
    return root && *root ? root : OBX_SOURCE_ROOT;
}

/* docs/monitoring.md has a row "| `name` | ..." in a table headed
 * "| event |" for every event of every OBX_LOG call under relay/, and no
 * row for an event that no call logs. */
START_TEST(test_every_event_documented) {
    char path[1024], row[96], missing[4096] = "";
    char *doc, *line, *save;
    int in_events = 0;

    snprintf(path, sizeof path, "%s/relay", source_root());
    ck_assert_int_eq(nftw(path, scan_entry, 16, FTW_PHYS), 0);
    ck_assert_msg(found.calls >= 50 && found.n >= 40, "found only %d calls, %d events under %s",
                  found.calls, found.n, path);
    snprintf(path, sizeof path, "%s/docs/monitoring.md", source_root());
    doc = slurp(path);
    for (int i = 0; i < found.n; i++) {
        snprintf(row, sizeof row, "\n| `%s` |", found.names[i]);
        if (!strstr(doc, row) && strlen(missing) + strlen(found.names[i]) + 2 < sizeof missing) {
            strcat(missing, " ");
            strcat(missing, found.names[i]);
        }
    }
    ck_assert_msg(!missing[0], "events not documented in docs/monitoring.md:%s", missing);
    for (line = strtok_r(doc, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "| event |", 9) == 0) {
            in_events = 1;
        } else if (line[0] != '|') {
            in_events = 0;
        } else if (in_events && strncmp(line, "| `", 3) == 0) {
            size_t len = strcspn(line + 3, "`");
            int known = 0;
            for (int i = 0; i < found.n && !known; i++)
                known = strlen(found.names[i]) == len && memcmp(found.names[i], line + 3, len) == 0;
            ck_assert_msg(known, "docs/monitoring.md documents \"%.*s\", which no OBX_LOG call logs",
                          (int)len, line + 3);
        }
    }
    free(doc);
}
END_TEST

/* ---- secrets --------------------------------------------------------------- */

START_TEST(test_secret_scrubbed) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    obx_log_add_secret("hunter2xyz");
    fmt(line, sizeof line, OBX_LOG_ERROR, "auth hunter2xyz failed",
        (obx_kv_t[]){KS("conninfo", "user=a password=hunter2xyz"), KS("again", "hunter2xyzhunter2xyz"), {0}});
    ck_assert_msg(strstr(line, "hunter2xyz") == NULL, "[%s]", line);
    ck_assert_str_eq(logfmt_rest(line), "level=error msg=\"auth *** failed\" "
                                        "conninfo=\"user=a password=***\" again=******");
    obx_log_clear_secrets();
    fmt(line, sizeof line, OBX_LOG_ERROR, "m", (obx_kv_t[]){KS("p", "hunter2xyz"), {0}});
    ck_assert_str_eq(logfmt_rest(line), "level=error msg=m p=hunter2xyz");
}
END_TEST

START_TEST(test_secret_json) {
    char line[512];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_JSON);
    obx_log_add_secret("s3cr3t-pass");
    fmt(line, sizeof line, OBX_LOG_ERROR, "m", (obx_kv_t[]){KS("p", "pw=s3cr3t-pass;"), {0}});
    ck_assert_msg(strstr(line, "s3cr3t-pass") == NULL, "[%s]", line);
    ck_assert_str_eq(json_rest(line), "\"level\":\"error\",\"msg\":\"m\",\"p\":\"pw=***;\"}");
    ck_assert_int_eq(json_object_members(line), 4);
    obx_log_clear_secrets();
}
END_TEST

START_TEST(test_secret_short_and_empty) {
    char line[256];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    obx_log_add_secret("");
    obx_log_add_secret(NULL);
    obx_log_add_secret("q7");
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("p", "xq7x"), {0}});
    /* Always three stars: the mask does not reveal a secret's length. */
    ck_assert_str_eq(logfmt_rest(line), "level=info msg=m p=x***x");
    obx_log_clear_secrets();
}
END_TEST

/* Adding the same secret again does not use another of the 8 slots. */
START_TEST(test_secret_dedup) {
    char line[512], name[16];
    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    for (int i = 0; i < 10; i++)
        obx_log_add_secret("repeated-secret");
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof name, "other-%d-pw", i);
        obx_log_add_secret(name);
    }
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof name, "other-%d-pw", i);
        fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("p", name), {0}});
        ck_assert_msg(strstr(line, name) == NULL, "%s not scrubbed: [%s]", name, line);
    }
    fmt(line, sizeof line, OBX_LOG_INFO, "m", (obx_kv_t[]){KS("p", "repeated-secret"), {0}});
    ck_assert_str_eq(logfmt_rest(line), "level=info msg=m p=***");
    obx_log_clear_secrets();
}
END_TEST

/* A secret containing characters that the formatter escapes must not leak in
 * its escaped form (log.h: "Registered secrets are replaced by "***"
 * wherever they appear in a line"). */
START_TEST(test_secret_with_escaped_chars) {
    char line[512];
    static const char *const secrets[] = {"pa\"ss-word1", "pa\\ss-word1", "pa\tss-word1"};
    for (int f = 0; f < 2; f++) {
        obx_log_configure(OBX_LOG_INFO, f ? OBX_LOG_JSON : OBX_LOG_LOGFMT);
        for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
            obx_log_add_secret(secrets[i]);
            fmt(line, sizeof line, OBX_LOG_ERROR, "m", (obx_kv_t[]){KS("conninfo", secrets[i]), {0}});
            ck_assert_msg(strstr(line, "ss-word1") == NULL, "secret %zu leaked (%s): [%s]", i,
                          f ? "json" : "logfmt", line);
            obx_log_clear_secrets();
        }
    }
}
END_TEST

/* A line cut inside a secret must not keep the secret's first characters. */
START_TEST(test_secret_cut_by_truncation) {
    char full[512], *buf;
    const char *at;
    size_t size;
    const obx_kv_t kvs[] = {KS("conninfo", "password=hunter2xyz"), {0}};

    obx_log_configure(OBX_LOG_INFO, OBX_LOG_LOGFMT);
    fmt(full, sizeof full, OBX_LOG_ERROR, "m", kvs); /* no secret registered yet */
    at = strstr(full, "hunter2xyz");
    ck_assert_ptr_nonnull(at);
    size = (size_t)(at - full) + 8; /* room for "hunter2" and the NUL */
    obx_log_add_secret("hunter2xyz");
    buf = malloc(size);
    ck_assert_ptr_nonnull(buf);
    obx_log_format_line(buf, size, OBX_LOG_ERROR, "m", kvs);
    ck_assert_msg(strstr(buf, "hunter2") == NULL, "secret prefix leaked: [%s]", buf);
    free(buf);
    obx_log_clear_secrets();
}
END_TEST

static Suite *log_suite(void) {
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("logfmt");
    tcase_add_test(tc, test_json_checker_self_test);
    tcase_add_test(tc, test_logfmt_basic);
    tcase_add_test(tc, test_logfmt_no_kvs_and_levels);
    tcase_add_test(tc, test_logfmt_component);
    tcase_add_loop_test(tc, test_logfmt_quoting, 0, (int)(sizeof quoting / sizeof quoting[0]));
    tcase_add_test(tc, test_logfmt_msg_quoting);
    tcase_add_test(tc, test_utf8_passes_through);
    tcase_add_test(tc, test_event_field);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_add_test(tc, test_json_basic);
    tcase_add_test(tc, test_json_int_extremes);
    tcase_add_loop_test(tc, test_json_quoting, 0, (int)(sizeof quoting / sizeof quoting[0]));
    tcase_add_test(tc, test_json_escapes_keys_and_msg);
    suite_add_tcase(s, tc);

    tc = tcase_create("truncation");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_truncation_logfmt);
    tcase_add_test(tc, test_truncation_json);
    tcase_add_test(tc, test_long_value_cut_inside);
    suite_add_tcase(s, tc);

    tc = tcase_create("levels");
    tcase_add_test(tc, test_level_round_trip);
    tcase_add_test(tc, test_level_parse_rejects);
    tcase_add_test(tc, test_format_parse);
    tcase_add_test(tc, test_configure_level_get);
    suite_add_tcase(s, tc);

    tc = tcase_create("emit");
    tcase_add_test(tc, test_emit_filters_and_terminates);
    tcase_add_test(tc, test_emit_long_line_truncated);
    tcase_add_test(tc, test_journald_priority);
    suite_add_tcase(s, tc);

    tc = tcase_create("events");
    tcase_add_test(tc, test_every_event_documented);
    suite_add_tcase(s, tc);

    tc = tcase_create("secrets");
    tcase_add_test(tc, test_secret_scrubbed);
    tcase_add_test(tc, test_secret_json);
    tcase_add_test(tc, test_secret_short_and_empty);
    tcase_add_test(tc, test_secret_dedup);
    tcase_add_test(tc, test_secret_with_escaped_chars);
    tcase_add_test(tc, test_secret_cut_by_truncation);
    suite_add_tcase(s, tc);
    return s;
}

TH_SUITE_MAIN(log_suite)
