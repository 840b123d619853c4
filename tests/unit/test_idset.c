/* The set of row ids in flight: membership through growth and deletions,
 * checked against a plain array. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "idset.h"
#include "harness.h"

START_TEST(test_add_has_del) {
    obx_idset_t s = {0};
    ck_assert_int_eq(obx_idset_has(&s, 1), 0);
    obx_idset_del(&s, 1); /* on an empty set */
    obx_idset_add(&s, 7);
    obx_idset_add(&s, 7);
    ck_assert_uint_eq(s.n, 1);
    ck_assert_int_eq(obx_idset_has(&s, 7), 1);
    ck_assert_int_eq(obx_idset_has(&s, 8), 0);
    obx_idset_del(&s, 8);
    obx_idset_del(&s, 7);
    ck_assert_int_eq(obx_idset_has(&s, 7), 0);
    ck_assert_uint_eq(s.n, 0);
    obx_idset_free(&s);
}
END_TEST

START_TEST(test_random_against_an_array) {
    enum { N = 20000, RANGE = 30000 };
    obx_idset_t s = {0};
    static unsigned char in[RANGE + 1];
    uint64_t x = 88172645463325252ULL;
    size_t n = 0;

    for (int i = 0; i < 100000; i++) {
        int64_t id;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id = 1 + (int64_t)(x % RANGE);
        if ((x >> 32) % 3 == 0) {
            obx_idset_del(&s, id);
            n -= in[id];
            in[id] = 0;
        } else if (n < N) {
            obx_idset_add(&s, id);
            n += !in[id];
            in[id] = 1;
        }
        if (i % 10000 == 0)
            for (int64_t k = 1; k <= RANGE; k++)
                ck_assert_int_eq(obx_idset_has(&s, k), in[k]);
    }
    ck_assert_uint_eq(s.n, n);
    /* Consecutive ids, the relay's case, in and out again. */
    for (int64_t k = 1; k <= RANGE; k++)
        obx_idset_del(&s, k);
    ck_assert_uint_eq(s.n, 0);
    for (int64_t k = 100000; k < 110000; k++)
        obx_idset_add(&s, k);
    for (int64_t k = 100000; k < 110000; k += 2)
        obx_idset_del(&s, k);
    for (int64_t k = 100000; k < 110000; k++)
        ck_assert_int_eq(obx_idset_has(&s, k), (int)(k & 1));
    obx_idset_free(&s);
}
END_TEST

TH_MAIN("idset", 60, test_add_has_del, test_random_against_an_array)
