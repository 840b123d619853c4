/* Unit tests of relay/core/log.c: logfmt and JSON line formatting, quoting,
 * truncation, levels, emission and secret scrubbing. */
#include <check.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- truncation --------------------------------------------------------- */

static void check_truncation(obx_log_format_t format) {
    char full[1024];
    size_t full_len, ts_at = format == OBX_LOG_JSON ? 7 : 3;
    const obx_kv_t kvs[] = {KS("error", "connection refused \"x\"\n"), KI("n", 123456), {0}};

    obx_log_configure(OBX_LOG_INFO, format);
    full_len = fmt(full, sizeof full, OBX_LOG_ERROR, "produce failed", kvs);
    ck_assert_uint_eq(full_len, strlen(full));
    for (size_t size = 1; size <= full_len + 2; size++) {
        char *buf = malloc(size); /* exact size: ASan catches writes past it */
        size_t n, want = size - 1 < full_len ? size - 1 : full_len;
        ck_assert_ptr_nonnull(buf);
        memset(buf, '#', size);
        n = obx_log_format_line(buf, size, OBX_LOG_ERROR, "produce failed", kvs);
        ck_assert_msg(memchr(buf, '\0', size) != NULL, "size %zu: not NUL-terminated", size);
        ck_assert_uint_eq(n, strlen(buf));
        ck_assert_msg(n == want, "size %zu: length %zu, want %zu", size, n, want);
        /* A prefix of the full line (the timestamp may differ between calls). */
        for (size_t i = 0; i < n; i++)
            if (i < ts_at || i >= ts_at + TS_LEN)
                ck_assert_msg(buf[i] == full[i], "size %zu: byte %zu is %c, want %c", size, i,
                              buf[i], full[i]);
        free(buf);
    }
}

START_TEST(test_truncation_logfmt) { check_truncation(OBX_LOG_LOGFMT); }
END_TEST

START_TEST(test_truncation_json) { check_truncation(OBX_LOG_JSON); }
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
    obx_log_emit(OBX_LOG_INFO, "hidden-info", NULL);
    OBX_LOG(OBX_LOG_DEBUG, "hidden-debug", KI("n", 1));
    obx_log_emit(OBX_LOG_WARN, "shown-warn", (obx_kv_t[]){KI("n", 1), {0}});
    OBX_LOG(OBX_LOG_ERROR, "shown-error", KS("k", "v"), KI("n", 2));
    out = capture_end(saved, path, &len);

    ck_assert_msg(strstr(out, "hidden") == NULL, "[%s]", out);
    ck_assert_msg(strstr(out, "level=warn msg=shown-warn n=1\n") != NULL, "[%s]", out);
    ck_assert_msg(strstr(out, "level=error msg=shown-error k=v n=2\n") != NULL, "[%s]", out);
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
    obx_log_emit(OBX_LOG_INFO, msg, NULL);
    out = capture_end(saved, path, &len);
    /* At most 8191 characters and the newline, in one line. */
    ck_assert_uint_eq(len, 8192);
    ck_assert_int_eq(out[len - 1], '\n');
    ck_assert_ptr_eq(strchr(out, '\n'), out + len - 1);
    ck_assert_int_eq(strncmp(out, "{\"ts\":\"", 7), 0);
    free(out);
    free(msg);
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

int main(void) {
    SRunner *sr = srunner_create(log_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
