/* Unit tests of relay/core/pgbin.c (binary wire-format decoding) and
 * relay/relayd/headers.c (Kafka headers of an outbox row). */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "headers.h"
#include "pgbin.h"

#define TEXTOID 25

/* A growable byte buffer for hand-built wire-format arrays. */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void put_bytes(buf_t *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ck_assert_ptr_nonnull(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_i32(buf_t *b, int32_t v) {
    uint32_t u = (uint32_t)v;
    unsigned char be[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16),
                           (unsigned char)(u >> 8), (unsigned char)u};
    put_bytes(b, be, 4);
}

/* PostgreSQL's array_send for a one-dimensional text[]: ndim, has-null flag,
 * element type, (dim size, lower bound), then per element its int32 length
 * (-1 for NULL) and bytes. A NULL entry in elems is an SQL NULL. */
static buf_t text_array(const char *const *elems, int n) {
    buf_t b = {0};
    int hasnull = 0;
    for (int i = 0; i < n; i++)
        hasnull |= elems[i] == NULL;
    put_i32(&b, 1);
    put_i32(&b, hasnull);
    put_i32(&b, TEXTOID);
    put_i32(&b, n);
    put_i32(&b, 1);
    for (int i = 0; i < n; i++) {
        if (!elems[i]) {
            put_i32(&b, -1);
            continue;
        }
        put_i32(&b, (int32_t)strlen(elems[i]));
        put_bytes(&b, elems[i], strlen(elems[i]));
    }
    return b;
}

/* An empty array: ndim 0, no dimensions. */
static buf_t empty_array(void) {
    buf_t b = {0};
    put_i32(&b, 0);
    put_i32(&b, 0);
    put_i32(&b, TEXTOID);
    return b;
}

/* Copies exactly len bytes to a fresh allocation so ASan catches any read
 * beyond what the decoder was given. */
static char *exact_copy(const char *src, size_t len) {
    char *p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    if (len)
        memcpy(p, src, len);
    return p;
}

static void elem_eq(const obx_pgbin_elem_t *e, const char *want) {
    if (!want) {
        ck_assert_ptr_null(e->ptr);
        ck_assert_uint_eq(e->len, 0);
        return;
    }
    ck_assert_ptr_nonnull(e->ptr);
    ck_assert_uint_eq(e->len, strlen(want));
    ck_assert_int_eq(memcmp(e->ptr, want, e->len), 0);
}

/* ---- obx_pgbin_array ----------------------------------------------- */

START_TEST(test_decode_empty) {
    buf_t b = empty_array();
    obx_pgbin_elem_t out[4];
    char *p = exact_copy(b.p, b.len);
    ck_assert_int_eq(obx_pgbin_array(p, b.len, out, 4), 0);
    ck_assert_int_eq(obx_pgbin_array(p, b.len, out, 0), 0);
    /* Shorter than the 12-byte header. */
    for (size_t l = 0; l < 12; l++)
        ck_assert_int_eq(obx_pgbin_array(p, l, out, 4), -1);
    free(p);
    free(b.p);
}
END_TEST

START_TEST(test_decode_three) {
    const char *const elems[] = {"trace-id", "", "x"};
    buf_t b = text_array(elems, 3);
    obx_pgbin_elem_t out[3];
    char *p = exact_copy(b.p, b.len);

    ck_assert_uint_eq(b.len, 20 + 4 + 8 + 4 + 0 + 4 + 1);
    ck_assert_int_eq(obx_pgbin_array(p, b.len, out, 3), 3);
    elem_eq(&out[0], "trace-id");
    elem_eq(&out[1], "");
    elem_eq(&out[2], "x");
    /* The elements point into the buffer. */
    ck_assert_ptr_eq(out[0].ptr, p + 24);
    ck_assert_ptr_eq(out[2].ptr, p + 40);
    /* An empty string is not NULL. */
    ck_assert_ptr_nonnull(out[1].ptr);
    free(p);
    free(b.p);
}
END_TEST

START_TEST(test_decode_null_element) {
    const char *const elems[] = {"a", NULL, "c"};
    buf_t b = text_array(elems, 3);
    obx_pgbin_elem_t out[3];
    char *p = exact_copy(b.p, b.len);
    ck_assert_int_eq(obx_pgbin_array(p, b.len, out, 3), 3);
    elem_eq(&out[0], "a");
    elem_eq(&out[1], NULL);
    elem_eq(&out[2], "c");
    free(p);
    free(b.p);
}
END_TEST

/* Every strict prefix of a well-formed array is refused. */
START_TEST(test_decode_truncated) {
    const char *const elems[] = {"key-one", NULL, "v"};
    buf_t b = text_array(elems, 3);
    obx_pgbin_elem_t out[3];
    for (size_t l = 0; l < b.len; l++) {
        char *p = exact_copy(b.p, l);
        ck_assert_msg(obx_pgbin_array(p, l, out, 3) == -1, "prefix of %zu/%zu bytes accepted",
                      l, b.len);
        free(p);
    }
    char *p = exact_copy(b.p, b.len);
    ck_assert_int_eq(obx_pgbin_array(p, b.len, out, 3), 3);
    free(p);
    free(b.p);
}
END_TEST

START_TEST(test_decode_too_many) {
    const char *const elems[] = {"a", "b", "c"};
    buf_t b = text_array(elems, 3);
    obx_pgbin_elem_t out[3];
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 2), -1);
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 0), -1);
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 3), 3);
    free(b.p);
}
END_TEST

START_TEST(test_decode_bad_ndim) {
    buf_t b = {0};
    obx_pgbin_elem_t out[8];
    /* A 2x2 text[][] with its two dimensions. */
    put_i32(&b, 2);
    put_i32(&b, 0);
    put_i32(&b, TEXTOID);
    put_i32(&b, 2);
    put_i32(&b, 1);
    put_i32(&b, 2);
    put_i32(&b, 1);
    for (int i = 0; i < 4; i++) {
        put_i32(&b, 1);
        put_bytes(&b, "z", 1);
    }
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 8), -1);
    /* A negative ndim. */
    b.p[0] = b.p[1] = b.p[2] = b.p[3] = (char)0xff;
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 8), -1);
    free(b.p);

    /* A 1x1 text[][]: read as one dimension it would look like one valid
     * element, so only the ndim check refuses it. */
    buf_t c = {0};
    put_i32(&c, 2);
    put_i32(&c, 0);
    put_i32(&c, TEXTOID);
    put_i32(&c, 1);
    put_i32(&c, 1);
    put_i32(&c, 1);
    put_i32(&c, 1);
    put_i32(&c, 1);
    put_bytes(&c, "z", 1);
    ck_assert_int_eq(obx_pgbin_array(c.p, c.len, out, 8), -1);
    c.p[3] = 3; /* ndim 3 */
    ck_assert_int_eq(obx_pgbin_array(c.p, c.len, out, 8), -1);
    free(c.p);
}
END_TEST

START_TEST(test_decode_bad_lengths) {
    obx_pgbin_elem_t out[4];
    /* Negative dimension size. */
    buf_t b = {0};
    put_i32(&b, 1);
    put_i32(&b, 0);
    put_i32(&b, TEXTOID);
    put_i32(&b, -1);
    put_i32(&b, 1);
    ck_assert_int_eq(obx_pgbin_array(b.p, b.len, out, 4), -1);
    free(b.p);

    /* Element lengths of -2 and INT32_MAX. */
    int32_t bad[] = {-2, INT32_MAX, 5};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_t c = {0};
        put_i32(&c, 1);
        put_i32(&c, 0);
        put_i32(&c, TEXTOID);
        put_i32(&c, 1);
        put_i32(&c, 1);
        put_i32(&c, bad[i]);
        put_bytes(&c, "abcd", 4); /* one byte short of the 5 case */
        char *p = exact_copy(c.p, c.len);
        ck_assert_msg(obx_pgbin_array(p, c.len, out, 4) == -1, "length %d accepted", bad[i]);
        free(p);
        free(c.p);
    }
}
END_TEST

/* ---- obx_pgbin_uuid, obx_pgbin_timestamptz ------------------------------ */

static void be64_put(char *p, int64_t v) {
    for (int i = 7; i >= 0; i--, v = (int64_t)((uint64_t)v >> 8))
        p[i] = (char)(v & 0xff);
}

START_TEST(test_uuid_text) {
    const unsigned char raw[16] = {0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f,
                                   0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95, 0x0e};
    char out[OBX_PGBIN_UUID_SIZE];
    obx_pgbin_uuid((const char *)raw, out);
    ck_assert_str_eq(out, "0f8fad5b-d9cb-469f-a165-70867728950e");
}
END_TEST

/* Microseconds since 2000-01-01 UTC and what PostgreSQL's to_char printed
 * for them (psql 15, the claim query's former format). */
START_TEST(test_timestamptz_text) {
    static const struct {
        int64_t us;
        const char *text;
    } cases[] = {
        {0, "2000-01-01T00:00:00.000000Z"},
        {-1, "1999-12-31T23:59:59.999999Z"},
        {849433559123456LL, "2026-12-01T09:45:59.123456Z"},
        {762523200000001LL, "2024-02-29T12:00:00.000001Z"},
        {-946684800000000LL, "1970-01-01T00:00:00.000000Z"},
        {-3150572276500000LL, "1900-03-01T01:02:03.500000Z"},
        {252455615999999999LL, "9999-12-31T23:59:59.999999Z"},
        {3160857599000000LL, "2100-02-28T23:59:59.000000Z"},
        {5097600000000LL, "2000-02-29T00:00:00.000000Z"},
        {INT64_MAX, "infinity"},
        {INT64_MIN, "-infinity"},
        /* Beyond to_char's four digits and before year 1, PostgreSQL's
         * range ends (its psql text beside): astronomical years. */
        {-63082281600000001LL, "0000-12-31T23:59:59.999999Z"},     /* 0001-12-31 BC */
        {-63145440000000000LL, "-0001-01-01T00:00:00.000000Z"},    /* 0002-01-01 BC */
        {-211813488000000000LL, "-4713-11-24T00:00:00.000000Z"},   /* 4714-11-24 BC */
        {9223371331199999999LL, "294276-12-31T23:59:59.999999Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char raw[8], out[OBX_PGBIN_TS_SIZE];
        be64_put(raw, cases[i].us);
        obx_pgbin_timestamptz(raw, out);
        ck_assert_msg(strcmp(out, cases[i].text) == 0, "%lld: got %s, want %s",
                      (long long)cases[i].us, out, cases[i].text);
    }
}
END_TEST

/* Outside PostgreSQL's range the text is meaningless but fits, and (under
 * UBSan) nothing overflows. */
START_TEST(test_timestamptz_int64_ends) {
    const int64_t ends[] = {INT64_MIN + 1, INT64_MAX - 1, -86400000000LL * 106751991LL};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        char raw[8], out[OBX_PGBIN_TS_SIZE];
        be64_put(raw, ends[i]);
        obx_pgbin_timestamptz(raw, out);
        ck_assert_uint_lt(strlen(out), OBX_PGBIN_TS_SIZE);
        ck_assert_int_eq(out[strlen(out) - 1], 'Z');
    }
}
END_TEST

/* ---- obx_headers_build ------------------------------------------------ */

static obx_row_t base_row(void) {
    obx_row_t r;
    memset(&r, 0, sizeof r);
    r.id = 42;
    strcpy(r.event_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    r.aggregate_type = "order";
    r.aggregate_id = "o-1";
    r.event_type = "order.created";
    strcpy(r.created_at, "2024-05-01T12:00:00.123456Z");
    r.headers_ok = 1;
    return r;
}

/* Asserts header i of h is name = value. */
static void header_eq(rd_kafka_headers_t *h, size_t i, const char *name, const char *value) {
    const char *n = NULL;
    const void *v = NULL;
    size_t vs = 0;
    ck_assert_msg(rd_kafka_header_get_all(h, i, &n, &v, &vs) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  "no header %zu", i);
    ck_assert_str_eq(n, name);
    ck_assert_uint_eq(vs, strlen(value));
    ck_assert_msg(memcmp(v, value, vs) == 0, "header %s = %.*s, want %s", name, (int)vs,
                  (const char *)v, value);
}

static void assert_count(rd_kafka_headers_t *h, size_t n) {
    const char *name;
    const void *v;
    size_t vs;
    ck_assert_uint_eq(rd_kafka_header_cnt(h), n);
    ck_assert_int_eq(rd_kafka_header_get_all(h, n, &name, &v, &vs), RD_KAFKA_RESP_ERR__NOENT);
}

static void fixed_headers_eq(rd_kafka_headers_t *h, const obx_row_t *r) {
    header_eq(h, 0, "event_id", r->event_id);
    header_eq(h, 1, "event_type", r->event_type);
    header_eq(h, 2, "aggregate_type", r->aggregate_type);
    header_eq(h, 3, "created_at", r->created_at);
}

START_TEST(test_headers_fixed_only) {
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";
    ck_assert_msg(obx_headers_build(&r, &h, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(h);
    fixed_headers_eq(h, &r);
    assert_count(h, 4);
    rd_kafka_headers_destroy(h);
}
END_TEST

START_TEST(test_headers_with_pairs) {
    const char *const keys[] = {"content-type", "trace_id", "empty"};
    const char *const vals[] = {"application/json", "abc123", ""};
    buf_t kb = text_array(keys, 3), vb = text_array(vals, 3);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";

    r.hkeys = exact_copy(kb.p, kb.len);
    r.hkeys_len = kb.len;
    r.hvals = exact_copy(vb.p, vb.len);
    r.hvals_len = vb.len;
    ck_assert_msg(obx_headers_build(&r, &h, err, sizeof err) == 0, "%s", err);
    fixed_headers_eq(h, &r);
    header_eq(h, 4, "content-type", "application/json");
    header_eq(h, 5, "trace_id", "abc123");
    header_eq(h, 6, "empty", "");
    assert_count(h, 7);
    /* The headers are copies: the row's buffers can go. */
    free((char *)r.hkeys);
    free((char *)r.hvals);
    header_eq(h, 5, "trace_id", "abc123");
    rd_kafka_headers_destroy(h);
    free(kb.p);
    free(vb.p);
}
END_TEST

START_TEST(test_headers_empty_arrays) {
    buf_t kb = empty_array(), vb = empty_array();
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";
    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_msg(obx_headers_build(&r, &h, err, sizeof err) == 0, "%s", err);
    fixed_headers_eq(h, &r);
    assert_count(h, 4);
    rd_kafka_headers_destroy(h);
    free(kb.p);
    free(vb.p);
}
END_TEST

/* A row header with a fixed header's name is added after the fixed ones. */
START_TEST(test_headers_row_cannot_replace_fixed) {
    const char *const keys[] = {"event_id"};
    const char *const vals[] = {"spoofed"};
    buf_t kb = text_array(keys, 1), vb = text_array(vals, 1);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";
    const void *v;
    size_t vs;

    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_msg(obx_headers_build(&r, &h, err, sizeof err) == 0, "%s", err);
    fixed_headers_eq(h, &r);
    header_eq(h, 4, "event_id", "spoofed");
    /* rd_kafka_header_get_last gives the row's; the first one is the relay's. */
    ck_assert_int_eq(rd_kafka_header_get(h, 0, "event_id", &v, &vs), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_uint_eq(vs, strlen(r.event_id));
    ck_assert_int_eq(memcmp(v, r.event_id, vs), 0);
    rd_kafka_headers_destroy(h);
    free(kb.p);
    free(vb.p);
}
END_TEST

START_TEST(test_headers_not_ok) {
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = (rd_kafka_headers_t *)&r; /* must be reset to NULL */
    char err[256] = "";
    r.headers_ok = 0;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_msg(strstr(err, "object") != NULL, "err=[%s]", err);
}
END_TEST

START_TEST(test_headers_count_mismatch) {
    const char *const keys[] = {"a", "b"};
    const char *const vals[] = {"1"};
    buf_t kb = text_array(keys, 2), vb = text_array(vals, 1);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = (rd_kafka_headers_t *)&r;
    char err[256] = "";

    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_str_ne(err, "");

    /* The other way round. */
    r.hkeys = vb.p;
    r.hkeys_len = vb.len;
    r.hvals = kb.p;
    r.hvals_len = kb.len;
    err[0] = '\0';
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_str_ne(err, "");

    /* Keys without values. */
    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = NULL;
    r.hvals_len = 0;
    err[0] = '\0';
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_str_ne(err, "");
    free(kb.p);
    free(vb.p);
}
END_TEST

START_TEST(test_headers_undecodable) {
    const char *const vals[] = {"1", "2"};
    buf_t vb = text_array(vals, 2);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";

    /* Keys cut short, values fine. */
    r.hkeys = vb.p;
    r.hkeys_len = vb.len - 1;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_msg(strstr(err, "undecodable") != NULL, "err=[%s]", err);
    free(vb.p);
}
END_TEST

START_TEST(test_headers_null_value) {
    const char *const keys[] = {"a", "b"};
    const char *const vals[] = {"1", NULL};
    buf_t kb = text_array(keys, 2), vb = text_array(vals, 2);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "";
    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_msg(strstr(err, "null") != NULL, "err=[%s]", err);
    /* A NULL key too. */
    r.hkeys = vb.p;
    r.hkeys_len = vb.len;
    r.hvals = kb.p;
    r.hvals_len = kb.len;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    free(kb.p);
    free(vb.p);
}
END_TEST

static buf_t numbered_array(const char *prefix, int n) {
    char **elems = calloc((size_t)n, sizeof *elems);
    buf_t b;
    ck_assert_ptr_nonnull(elems);
    for (int i = 0; i < n; i++) {
        elems[i] = malloc(32);
        ck_assert_ptr_nonnull(elems[i]);
        snprintf(elems[i], 32, "%s%02d", prefix, i);
    }
    b = text_array((const char *const *)elems, n);
    for (int i = 0; i < n; i++)
        free(elems[i]);
    free(elems);
    return b;
}

START_TEST(test_headers_max_entries) {
    buf_t kb = numbered_array("k", OBX_HEADERS_MAX), vb = numbered_array("v", OBX_HEADERS_MAX);
    obx_row_t r = base_row();
    rd_kafka_headers_t *h = NULL;
    char err[256] = "", name[16], val[16];

    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_msg(obx_headers_build(&r, &h, err, sizeof err) == 0, "%s", err);
    assert_count(h, 4 + OBX_HEADERS_MAX);
    for (int i = 0; i < OBX_HEADERS_MAX; i++) {
        snprintf(name, sizeof name, "k%02d", i);
        snprintf(val, sizeof val, "v%02d", i);
        header_eq(h, 4 + (size_t)i, name, val);
    }
    rd_kafka_headers_destroy(h);
    free(kb.p);
    free(vb.p);

    /* One more is refused. */
    kb = numbered_array("k", OBX_HEADERS_MAX + 1);
    vb = numbered_array("v", OBX_HEADERS_MAX + 1);
    r.hkeys = kb.p;
    r.hkeys_len = kb.len;
    r.hvals = vb.p;
    r.hvals_len = vb.len;
    ck_assert_int_eq(obx_headers_build(&r, &h, err, sizeof err), -1);
    ck_assert_ptr_null(h);
    ck_assert_msg(strstr(err, "64") != NULL, "err=[%s]", err);
    free(kb.p);
    free(vb.p);
}
END_TEST

static Suite *headers_suite(void) {
    Suite *s = suite_create("headers");
    TCase *tc = tcase_create("pgbin");
    tcase_add_test(tc, test_decode_empty);
    tcase_add_test(tc, test_decode_three);
    tcase_add_test(tc, test_decode_null_element);
    tcase_add_test(tc, test_decode_truncated);
    tcase_add_test(tc, test_decode_too_many);
    tcase_add_test(tc, test_decode_bad_ndim);
    tcase_add_test(tc, test_decode_bad_lengths);
    tcase_add_test(tc, test_uuid_text);
    tcase_add_test(tc, test_timestamptz_text);
    tcase_add_test(tc, test_timestamptz_int64_ends);
    suite_add_tcase(s, tc);

    tc = tcase_create("headers");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_headers_fixed_only);
    tcase_add_test(tc, test_headers_with_pairs);
    tcase_add_test(tc, test_headers_empty_arrays);
    tcase_add_test(tc, test_headers_row_cannot_replace_fixed);
    tcase_add_test(tc, test_headers_not_ok);
    tcase_add_test(tc, test_headers_count_mismatch);
    tcase_add_test(tc, test_headers_undecodable);
    tcase_add_test(tc, test_headers_null_value);
    tcase_add_test(tc, test_headers_max_entries);
    suite_add_tcase(s, tc);
    return s;
}

TH_SUITE_MAIN(headers_suite)
