/* Unit tests of relay/core/backoff.c: exponential backoff with jitter. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "backoff.h"
#include "harness.h"

/* The cap for attempt k: min(max, base * 2^k). */
static int64_t cap_for(int64_t base, int64_t max, int k) {
    int64_t cap = base;
    for (int i = 0; i < k && cap < max; i++)
        cap *= 2;
    return cap < max ? cap : max;
}

START_TEST(test_delays_within_cap_range) {
    static const struct {
        int64_t base, max;
    } cases[] = {{100, 30000}, {1, 1}, {1, 1000}, {250, 600000}, {1000, 1500}, {7, 7000}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (uint64_t seed = 1; seed <= 50; seed++) {
            obx_backoff_t b;
            obx_backoff_init(&b, cases[c].base, cases[c].max, seed * 0x1234567ULL);
            for (int k = 0; k < 40; k++) {
                int64_t cap = cap_for(cases[c].base, cases[c].max, k);
                int64_t d = obx_backoff_next(&b);
                ck_assert_msg(d >= cap / 2 && d <= cap,
                              "base=%lld max=%lld attempt %d: %lld not in [%lld, %lld]",
                              (long long)cases[c].base, (long long)cases[c].max, k,
                              (long long)d, (long long)(cap / 2), (long long)cap);
            }
            ck_assert_int_eq(b.attempt, 40);
        }
    }
}
END_TEST

/* Over many seeds the delays of each attempt cover their whole range: the
 * cap doubles (100, 200, 400, ...) and then stays at max. */
START_TEST(test_cap_doubles_then_stays_at_max) {
    enum { ATTEMPTS = 12, SEEDS = 2000 };
    const int64_t base = 100, max = 10000;
    int64_t lo[ATTEMPTS], hi[ATTEMPTS];
    for (int k = 0; k < ATTEMPTS; k++) {
        lo[k] = INT64_MAX;
        hi[k] = INT64_MIN;
    }
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        obx_backoff_t b;
        obx_backoff_init(&b, base, max, seed * 0x9e3779b97f4a7c15ULL);
        for (int k = 0; k < ATTEMPTS; k++) {
            int64_t d = obx_backoff_next(&b);
            lo[k] = d < lo[k] ? d : lo[k];
            hi[k] = d > hi[k] ? d : hi[k];
        }
    }
    static const int64_t caps[ATTEMPTS] = {100,   200,   400,   800,   1600,  3200,
                                           6400,  10000, 10000, 10000, 10000, 10000};
    for (int k = 0; k < ATTEMPTS; k++) {
        int64_t cap = caps[k], slack = cap / 20 + 1;
        ck_assert_int_eq(cap, cap_for(base, max, k));
        ck_assert_msg(lo[k] >= cap / 2 && lo[k] <= cap / 2 + slack,
                      "attempt %d: min %lld, want about %lld", k, (long long)lo[k],
                      (long long)(cap / 2));
        ck_assert_msg(hi[k] <= cap && hi[k] >= cap - slack, "attempt %d: max %lld, want about %lld",
                      k, (long long)hi[k], (long long)cap);
    }
}
END_TEST

START_TEST(test_many_attempts_stay_at_max) {
    obx_backoff_t b;
    obx_backoff_init(&b, 500, 30000, 42);
    for (int k = 0; k < 10000; k++) {
        int64_t d = obx_backoff_next(&b);
        ck_assert_int_le(d, 30000);
        if (k >= 6)
            ck_assert_int_ge(d, 15000);
    }
}
END_TEST

START_TEST(test_reset) {
    obx_backoff_t b;
    obx_backoff_init(&b, 100, 30000, 7);
    for (int k = 0; k < 10; k++)
        (void)obx_backoff_next(&b);
    ck_assert_int_gt(obx_backoff_next(&b), 15000 - 1);
    obx_backoff_reset(&b);
    ck_assert_int_eq(b.attempt, 0);
    for (int round = 0; round < 100; round++) {
        int64_t d0, d1;
        obx_backoff_reset(&b);
        d0 = obx_backoff_next(&b);
        d1 = obx_backoff_next(&b);
        ck_assert_msg(d0 >= 50 && d0 <= 100, "first delay after reset: %lld", (long long)d0);
        ck_assert_msg(d1 >= 100 && d1 <= 200, "second delay after reset: %lld", (long long)d1);
    }
    /* reset keeps base and max. */
    ck_assert_int_eq(b.base_ms, 100);
    ck_assert_int_eq(b.max_ms, 30000);
}
END_TEST

START_TEST(test_same_seed_same_sequence) {
    obx_backoff_t a, b;
    obx_backoff_init(&a, 100, 60000, 12345);
    obx_backoff_init(&b, 100, 60000, 12345);
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(obx_backoff_next(&a), obx_backoff_next(&b));
}
END_TEST

START_TEST(test_different_seeds_differ) {
    enum { N = 20 };
    static const uint64_t seeds[] = {1, 2, 3, 12345, 0xdeadbeefULL, 0x9e3779b97f4a7c15ULL};
    const size_t nseeds = sizeof seeds / sizeof seeds[0];
    int64_t seq[sizeof seeds / sizeof seeds[0]][N];
    for (size_t s = 0; s < nseeds; s++) {
        obx_backoff_t b;
        /* At max from the start so every value is drawn from the same range. */
        obx_backoff_init(&b, 60000, 60000, seeds[s]);
        for (int k = 0; k < N; k++)
            seq[s][k] = obx_backoff_next(&b);
    }
    for (size_t s = 0; s < nseeds; s++)
        for (size_t t = s + 1; t < nseeds; t++) {
            int same = 0;
            for (int k = 0; k < N; k++)
                same += seq[s][k] == seq[t][k];
            ck_assert_msg(same < N / 2, "seeds %llu and %llu give %d equal delays of %d",
                          (unsigned long long)seeds[s], (unsigned long long)seeds[t], same, N);
        }
}
END_TEST

/* Jitter: a single sequence is not constant. */
START_TEST(test_jitter_varies) {
    for (uint64_t seed = 0; seed < 4; seed++) {
        obx_backoff_t b;
        int64_t first, d;
        int varied = 0;
        obx_backoff_init(&b, 60000, 60000, seed);
        first = obx_backoff_next(&b);
        for (int k = 0; k < 20; k++) {
            d = obx_backoff_next(&b);
            varied |= d != first;
            ck_assert_int_ge(d, 30000);
            ck_assert_int_le(d, 60000);
        }
        ck_assert_msg(varied, "seed %llu: 21 equal delays of %lld", (unsigned long long)seed,
                      (long long)first);
    }
}
END_TEST

START_TEST(test_init_normalises) {
    obx_backoff_t b;
    /* base <= 0 becomes 1. */
    obx_backoff_init(&b, 0, 100, 1);
    ck_assert_int_eq(b.base_ms, 1);
    ck_assert_int_eq(b.max_ms, 100);
    ck_assert_int_eq(b.attempt, 0);
    obx_backoff_init(&b, -5, 100, 1);
    ck_assert_int_eq(b.base_ms, 1);
    /* max below base becomes base. */
    obx_backoff_init(&b, 500, 100, 1);
    ck_assert_int_eq(b.base_ms, 500);
    ck_assert_int_eq(b.max_ms, 500);
    for (int k = 0; k < 20; k++) {
        int64_t d = obx_backoff_next(&b);
        ck_assert_int_ge(d, 250);
        ck_assert_int_le(d, 500);
    }
    /* Seed 0 would freeze xorshift at 0; it is replaced by a constant. */
    obx_backoff_init(&b, 1, 2, 0);
    ck_assert_uint_ne(b.rng, 0);
}
END_TEST

TH_MAIN("backoff", 30, test_delays_within_cap_range, test_cap_doubles_then_stays_at_max, test_many_attempts_stay_at_max,
        test_reset, test_same_seed_same_sequence, test_different_seeds_differ, test_jitter_varies, test_init_normalises)
