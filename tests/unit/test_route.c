/* Unit tests of relay/core/route.c: topic name validation, topic resolution
 * (row topic > first matching route > pattern) and pattern checking. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "route.h"

/* Returns a string of n copies of c (static storage, up to 1023 chars). */
static const char *repeat(char c, size_t n) {
    static char buf[1024];
    ck_assert_uint_lt(n, sizeof buf);
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* ---- obx_route_topic_valid ------------------------------------------- */

static const char *const valid_topics[] = {
    "a", "orders", "outbox.payment", "a.b_c-D9", "...", ".a", "a.", "_", "-", "0", "ABC.xyz_09-",
};

static const char *const invalid_topics[] = {
    "",        ".",        "..",       " ",     "a b",    "a!",      "bad topic!", "a/b",
    "\xc3\xa9", "caf\xc3\xa9", "a\tb",  "a\nb",  "a:b",    "a+b",     "a@b",        "a#b",
    "a$b",     "${aggregate_type}",    "a*",    "a,b",    "a\\b",    "a\"b",       "\x7f",
};

START_TEST(test_topic_valid) {
    ck_assert_msg(obx_route_topic_valid(valid_topics[_i]) == 1, "\"%s\" should be valid",
                  valid_topics[_i]);
}
END_TEST

START_TEST(test_topic_invalid) {
    ck_assert_msg(obx_route_topic_valid(invalid_topics[_i]) == 0, "\"%s\" should be invalid",
                  invalid_topics[_i]);
}
END_TEST

START_TEST(test_topic_length) {
    ck_assert_int_eq(obx_route_topic_valid(repeat('a', 1)), 1);
    ck_assert_int_eq(obx_route_topic_valid(repeat('a', 248)), 1);
    ck_assert_int_eq(obx_route_topic_valid(repeat('a', 249)), 1);
    ck_assert_int_eq(obx_route_topic_valid(repeat('a', 250)), 0);
    ck_assert_int_eq(obx_route_topic_valid(repeat('.', 249)), 1);
    ck_assert_int_eq(obx_route_topic_valid(repeat('x', 1000)), 0);
}
END_TEST

/* ---- obx_route_resolve ------------------------------------------------ */

static obx_route_t routes[] = {
    {"payment", "payments"},
    {"order", "orders.v2"},
    {"payment", "payments-second"},
    {"broken", "not a topic"},
};
#define NROUTES (sizeof routes / sizeof routes[0])
#define PATTERN "outbox.${aggregate_type}"

/* Resolves and returns the result; out and err are filled. */
static int resolve(const char *pattern, const char *row_topic, const char *at, const char *et,
                   char *out, size_t outsize, char *err) {
    memset(out, '#', outsize);
    strcpy(err, "(unset)");
    return obx_route_resolve(routes, NROUTES, pattern, row_topic, at, et, out, outsize, err,
                             256);
}

START_TEST(test_resolve_row_topic_wins) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, "explicit.topic", "payment", "paid", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "explicit.topic");
    ck_assert_int_eq(resolve(PATTERN, "explicit.topic", "unrouted", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "explicit.topic");
}
END_TEST

START_TEST(test_resolve_first_route_wins) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, NULL, "payment", "paid", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "payments");
    ck_assert_int_eq(resolve(PATTERN, NULL, "order", "created", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "orders.v2");
}
END_TEST

START_TEST(test_resolve_route_match_is_exact) {
    char out[256], err[256];
    /* Prefixes, suffixes and case variants of a routed type fall back to the pattern. */
    ck_assert_int_eq(resolve(PATTERN, NULL, "pay", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "outbox.pay");
    ck_assert_int_eq(resolve(PATTERN, NULL, "payments", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "outbox.payments");
    ck_assert_int_eq(resolve(PATTERN, NULL, "Payment", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "outbox.Payment");
}
END_TEST

START_TEST(test_resolve_pattern) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, NULL, "customer", "created", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "outbox.customer");
    ck_assert_int_eq(resolve("${aggregate_type}.${event_type}", NULL, "customer", "created", out,
                             sizeof out, err), 0);
    ck_assert_str_eq(out, "customer.created");
    ck_assert_int_eq(resolve("evt-${event_type}-v1", NULL, "customer", "deleted", out,
                             sizeof out, err), 0);
    ck_assert_str_eq(out, "evt-deleted-v1");
    ck_assert_int_eq(resolve("${aggregate_type}${aggregate_type}", NULL, "ab", "x", out,
                             sizeof out, err), 0);
    ck_assert_str_eq(out, "abab");
    ck_assert_int_eq(resolve("static.topic", NULL, "customer", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "static.topic");
}
END_TEST

START_TEST(test_resolve_no_routes) {
    char out[64], err[256];
    ck_assert_int_eq(obx_route_resolve(NULL, 0, PATTERN, NULL, "payment", "paid", out, sizeof out,
                                       err, sizeof err), 0);
    ck_assert_str_eq(out, "outbox.payment");
}
END_TEST

START_TEST(test_resolve_invalid_row_topic) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, "bad topic!", "payment", "paid", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "\"bad topic!\"") != NULL, "err=[%s]", err);
    ck_assert_msg(strstr(err, "row's topic column") != NULL, "err=[%s]", err);
    ck_assert_int_eq(resolve(PATTERN, "", "payment", "paid", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "row's topic column") != NULL, "err=[%s]", err);
    ck_assert_int_eq(resolve(PATTERN, repeat('t', 300), "payment", "paid", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "row's topic column") != NULL, "err=[%s]", err);
}
END_TEST

START_TEST(test_resolve_invalid_route_topic) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, NULL, "broken", "x", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "\"not a topic\"") != NULL, "err=[%s]", err);
    ck_assert_msg(strstr(err, "row's topic column") == NULL, "err=[%s]", err);
}
END_TEST

START_TEST(test_resolve_invalid_expansion) {
    char out[256], err[256];
    ck_assert_int_eq(resolve(PATTERN, NULL, "Order Items", "x", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "\"outbox.Order Items\"") != NULL, "err=[%s]", err);
    ck_assert_int_eq(resolve("${event_type}", NULL, "a", "", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "invalid topic name \"\"") != NULL, "err=[%s]", err);
    ck_assert_int_eq(resolve("${event_type}", NULL, "a", "..", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "\"..\"") != NULL, "err=[%s]", err);
    /* 7 + 243 = 250 chars: one over Kafka's limit. */
    ck_assert_int_eq(resolve(PATTERN, NULL, repeat('a', 243), "x", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "invalid topic name") != NULL, "err=[%s]", err);
    /* 7 + 242 = 249 is fine. */
    ck_assert_int_eq(resolve(PATTERN, NULL, repeat('a', 242), "x", out, sizeof out, err), 0);
    ck_assert_uint_eq(strlen(out), 249);
}
END_TEST

START_TEST(test_resolve_expansion_too_long_for_out) {
    char out[32], err[256];
    /* Does not fit in out: refused, and out is never overrun (ASan). */
    ck_assert_int_eq(resolve(PATTERN, NULL, repeat('a', 100), "x", out, sizeof out, err), -1);
    ck_assert_msg(strstr(err, "does not expand") != NULL, "err=[%s]", err);
    ck_assert_msg(strstr(err, "aaaa") != NULL, "err=[%s]", err);
}
END_TEST

START_TEST(test_resolve_unknown_variable) {
    char out[256], err[256];
    ck_assert_int_eq(resolve("outbox.${nope}", NULL, "customer", "x", out, sizeof out, err), -1);
    ck_assert_str_eq(err, "topic pattern does not expand for aggregate_type=\"customer\"");
    ck_assert_int_eq(resolve("outbox.${aggregate_type", NULL, "customer", "x", out, sizeof out, err), -1);
    ck_assert_str_eq(err, "topic pattern does not expand for aggregate_type=\"customer\"");
    /* A row topic or a route makes the pattern irrelevant. */
    ck_assert_int_eq(resolve("outbox.${nope}", "t", "customer", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "t");
    ck_assert_int_eq(resolve("outbox.${nope}", NULL, "order", "x", out, sizeof out, err), 0);
    ck_assert_str_eq(out, "orders.v2");
}
END_TEST

/* ---- obx_route_pattern_check ------------------------------------------ */

static const char *const good_patterns[] = {
    "outbox.${aggregate_type}", "${event_type}", "${aggregate_type}.${event_type}", "static",
    "a-${aggregate_type}_${event_type}.v1",
};

START_TEST(test_pattern_check_ok) {
    char err[256] = "untouched";
    ck_assert_msg(obx_route_pattern_check(good_patterns[_i], err, sizeof err) == 0,
                  "\"%s\": %s", good_patterns[_i], err);
}
END_TEST

START_TEST(test_pattern_check_unknown_variable) {
    char err[256];
    ck_assert_int_eq(obx_route_pattern_check("outbox.${nope}", err, sizeof err), -1);
    ck_assert_str_eq(err, "unknown variable at \"${nope}\" (known: ${aggregate_type}, ${event_type})");
    ck_assert_int_eq(obx_route_pattern_check("${aggregate_type}.${Event_type}", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "\"${Event_type}\"") != NULL, "err=[%s]", err);
    /* Unterminated. */
    ck_assert_int_eq(obx_route_pattern_check("outbox.${aggregate_type", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "unknown variable at \"${aggregate_type\"") != NULL, "err=[%s]", err);
    /* Names must match exactly, not by prefix. */
    ck_assert_int_eq(obx_route_pattern_check("${aggregate_types}", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "\"${aggregate_types}\"") != NULL, "err=[%s]", err);
    ck_assert_int_eq(obx_route_pattern_check("${event_type_x}", err, sizeof err), -1);
    ck_assert_int_eq(obx_route_pattern_check("${aggregate}", err, sizeof err), -1);
    ck_assert_int_eq(obx_route_pattern_check("${}", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "unknown variable") != NULL, "err=[%s]", err);
}
END_TEST

START_TEST(test_pattern_check_invalid_topic) {
    char err[2048];
    ck_assert_int_eq(obx_route_pattern_check("bad pattern.${aggregate_type}", err, sizeof err), -1);
    ck_assert_str_eq(err, "pattern \"bad pattern.${aggregate_type}\" does not give a valid Kafka topic name");
    ck_assert_int_eq(obx_route_pattern_check("", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not give a valid Kafka topic name") != NULL, "err=[%s]", err);
    ck_assert_int_eq(obx_route_pattern_check("$aggregate_type", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not give a valid Kafka topic name") != NULL, "err=[%s]", err);
    ck_assert_int_eq(obx_route_pattern_check(repeat('a', 250), err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not give a valid Kafka topic name") != NULL, "err=[%s]", err);
    /* Expands past the check's own 1 KiB buffer (1020 + 5 chars). */
    char longpat[1200];
    snprintf(longpat, sizeof longpat, "%s${event_type}${event_type}${event_type}${event_type}${event_type}",
             repeat('a', 1020));
    ck_assert_int_eq(obx_route_pattern_check(longpat, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not give a valid Kafka topic name") != NULL, "err=[%s]", err);
    /* The error is truncated to errsize, NUL-terminated. */
    char small[8];
    ck_assert_int_eq(obx_route_pattern_check("bad pattern", small, sizeof small), -1);
    ck_assert_str_eq(small, "pattern");
}
END_TEST

static Suite *route_suite(void) {
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("topic_valid");
    tcase_add_loop_test(tc, test_topic_valid, 0, (int)(sizeof valid_topics / sizeof valid_topics[0]));
    tcase_add_loop_test(tc, test_topic_invalid, 0,
                        (int)(sizeof invalid_topics / sizeof invalid_topics[0]));
    tcase_add_test(tc, test_topic_length);
    suite_add_tcase(s, tc);

    tc = tcase_create("resolve");
    tcase_add_test(tc, test_resolve_row_topic_wins);
    tcase_add_test(tc, test_resolve_first_route_wins);
    tcase_add_test(tc, test_resolve_route_match_is_exact);
    tcase_add_test(tc, test_resolve_pattern);
    tcase_add_test(tc, test_resolve_no_routes);
    tcase_add_test(tc, test_resolve_invalid_row_topic);
    tcase_add_test(tc, test_resolve_invalid_route_topic);
    tcase_add_test(tc, test_resolve_invalid_expansion);
    tcase_add_test(tc, test_resolve_expansion_too_long_for_out);
    tcase_add_test(tc, test_resolve_unknown_variable);
    suite_add_tcase(s, tc);

    tc = tcase_create("pattern_check");
    tcase_add_loop_test(tc, test_pattern_check_ok, 0,
                        (int)(sizeof good_patterns / sizeof good_patterns[0]));
    tcase_add_test(tc, test_pattern_check_unknown_variable);
    tcase_add_test(tc, test_pattern_check_invalid_topic);
    suite_add_tcase(s, tc);
    return s;
}

TH_SUITE_MAIN(route_suite)
