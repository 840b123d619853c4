/* The claim pause: grows while claims find many rows, resets when they find few. */
#include <check.h>
#include <stdlib.h>

#include "pace.h"
#include "harness.h"

START_TEST(test_few_rows_keep_the_minimum) {
    ck_assert_int_eq(obx_pace_next(5, 0, 5, 20), 5);
    ck_assert_int_eq(obx_pace_next(5, OBX_PACE_GROW_ROWS - 1, 5, 20), 5);
    /* From a grown pause, one claim with few rows is enough to go back. */
    ck_assert_int_eq(obx_pace_next(20, 3, 5, 20), 5);
}
END_TEST

START_TEST(test_many_rows_double_up_to_the_maximum) {
    ck_assert_int_eq(obx_pace_next(5, OBX_PACE_GROW_ROWS, 5, 20), 10);
    ck_assert_int_eq(obx_pace_next(10, 500, 5, 20), 20);
    ck_assert_int_eq(obx_pace_next(20, 500, 5, 20), 20);
    ck_assert_int_eq(obx_pace_next(7, 100, 5, 12), 12);
}
END_TEST

START_TEST(test_settings_changed_by_reload) {
    /* A pause from before a reload that lowered the maximum is capped. */
    ck_assert_int_eq(obx_pace_next(200, 100, 5, 20), 20);
    /* One below the new minimum starts from it. */
    ck_assert_int_eq(obx_pace_next(1, 100, 8, 100), 16);
    /* A maximum below the minimum means no growth. */
    ck_assert_int_eq(obx_pace_next(5, 100, 5, 2), 5);
    ck_assert_int_eq(obx_pace_next(5, 100, 5, 5), 5);
    /* The configured range ends: 1 and 1000 ms. */
    ck_assert_int_eq(obx_pace_next(1, 100, 1, 1000), 2);
    ck_assert_int_eq(obx_pace_next(999, 100, 1, 1000), 1000);
}
END_TEST

TH_MAIN("pace", 60, test_few_rows_keep_the_minimum, test_many_rows_double_up_to_the_maximum, test_settings_changed_by_reload)
