/* The partition gate: one unacknowledged message per cold partition (the
 * implicit-ack window), stalled partitions skipped until the next scan, order. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "gate.h"
#include "harness.h"

static int m[64]; /* messages: their addresses are all the gate sees */

START_TEST(test_cold_partition_lets_one_message_through) {
    obx_gate_t *g = obx_gate_new(100000, 60000);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[0], 1000), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[1], 1000), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[2], 1000), OBX_GATE_HOLD);
    /* Another partition, also cold, has its own one. */
    ck_assert_int_eq(obx_gate_offer(g, "t", 1, &m[3], 1000), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "u", 0, &m[4], 1000), OBX_GATE_SEND);
    ck_assert_ptr_null(obx_gate_release(g, 0)); /* nothing acknowledged yet */
    /* The first acknowledgement warms the partition: the held ones go, in order. */
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 1001), 0);
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[1]);
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[2]);
    ck_assert_ptr_null(obx_gate_release(g, 0));
    /* Warm: pipelined from now on. */
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[5], 1002), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[6], 1002), OBX_GATE_SEND);
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_failed_first_message_keeps_the_partition_cold) {
    obx_gate_t *g = obx_gate_new(100000, 60000);
    obx_gate_stats_t st;
    ck_assert_int_eq(obx_gate_offer(g, "t", 2, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 2, &m[1], 0), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_offer(g, "t", 2, &m[2], 0), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_report(g, "t", 2, 0, 5), 0); /* failed, not acknowledged */
    /* Still cold: the next goes alone. */
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[1]);
    ck_assert_ptr_null(obx_gate_release(g, 0));
    obx_gate_stats(g, 5, &st);
    ck_assert_int_eq(st.cold, 1);
    ck_assert_int_eq(st.unacked, 1);
    ck_assert_int_eq(st.held, 1);
    ck_assert_int_eq(obx_gate_report(g, "t", 2, 1, 6), 0);
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[2]);
    obx_gate_stats(g, 6, &st);
    ck_assert_int_eq(st.cold, 0);
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_new_producer_id_cools_every_partition) {
    obx_gate_t *g = obx_gate_new(100000, 60000);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 1), 0);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[1], 2), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[2], 2), OBX_GATE_SEND);
    obx_gate_new_producer(g);
    /* Two in flight from before: a cold partition takes no more until an ack. */
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[3], 3), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 0, 4), 0); /* purged */
    ck_assert_ptr_null(obx_gate_release(g, 0));
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 0, 4), 0);
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[3]);
    ck_assert_ptr_null(obx_gate_release(g, 0));
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_partition_idle_past_cold_ms_is_cold_again) {
    obx_gate_t *g = obx_gate_new(100000, 1000);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 10), 0);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[1], 500), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[2], 500), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 600), 0);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 600), 0);
    /* 1,000 ms after the last acknowledgement the broker may have forgotten us. */
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[3], 1600), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[4], 1600), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 1601), 0);
    ck_assert_ptr_eq(obx_gate_release(g, 0), &m[4]);
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_stalled_partition_skips_until_rescan) {
    obx_gate_t *g = obx_gate_new(1000, 60000);
    obx_gate_stats_t st;
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 1), 0);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[i], 100), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 1, &m[7], 100), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_report(g, "t", 1, 1, 101), 0);
    /* Reports keep partition 0 alive for a while. */
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 900), 0);
    ck_assert_int_eq(obx_gate_stalled(g, 1899), 0);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[8], 1899), OBX_GATE_SEND);
    /* 1,000 ms without a report while three are out (a frozen leader):
     * this row and every later one of the partition are left for the next
     * scan, even once a report came, so that a later row never overtakes a
     * skipped one. Its messages leave the budget. */
    ck_assert_int_eq(obx_gate_stalled(g, 1900), 3);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[4], 1900), OBX_GATE_SKIP);
    /* The partition moves again: the report says a rescan may send it. */
    ck_assert_int_eq(obx_gate_report(g, "t", 0, 1, 2000), 1);
    ck_assert_int_eq(obx_gate_stalled(g, 2000), 0);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[5], 2000), OBX_GATE_SKIP);
    /* The other partitions flow. */
    ck_assert_int_eq(obx_gate_offer(g, "t", 1, &m[6], 2000), OBX_GATE_SEND);
    obx_gate_stats(g, 2000, &st);
    ck_assert_int_eq(st.skipping, 1);
    ck_assert_int_eq(st.stalled, 0);
    obx_gate_rescan(g);
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[4], 2001), OBX_GATE_SEND);
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_held_messages_of_a_stalled_cold_partition_leave_the_budget) {
    obx_gate_t *g = obx_gate_new(500, 60000);
    ck_assert_int_eq(obx_gate_offer(g, "t", 5, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", 5, &m[1], 0), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_offer(g, "t", 5, &m[2], 499), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_stalled(g, 499), 0);
    ck_assert_int_eq(obx_gate_stalled(g, 500), 3);
    ck_assert_int_eq(obx_gate_offer(g, "t", 5, &m[3], 500), OBX_GATE_SKIP);
    ck_assert_str_eq(obx_gate_topic(g, "t"), "t");
    ck_assert_ptr_eq(obx_gate_topic(g, "t"), obx_gate_topic(g, "t"));
    obx_gate_destroy(g);
}
END_TEST

static int dropped[64], ndropped;
static void drop(void *ctx, void *msg) {
    (void)ctx;
    dropped[ndropped++] = (int)((int *)msg - m);
}

START_TEST(test_drop_held_hands_back_in_order) {
    obx_gate_t *g = obx_gate_new(100000, 60000);
    obx_gate_stats_t st;
    ndropped = 0;
    ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[0], 0), OBX_GATE_SEND);
    for (int i = 1; i < 40; i++) /* past the ring's first growth */
        ck_assert_int_eq(obx_gate_offer(g, "t", 0, &m[i], 0), OBX_GATE_HOLD);
    obx_gate_drop_held(g, drop, NULL);
    ck_assert_int_eq(ndropped, 39);
    for (int i = 0; i < 39; i++)
        ck_assert_int_eq(dropped[i], i + 1);
    obx_gate_stats(g, 0, &st);
    ck_assert_int_eq(st.held, 0);
    ck_assert_ptr_null(obx_gate_release(g, 0));
    obx_gate_destroy(g);
}
END_TEST

START_TEST(test_unassigned_partition_and_bad_reports) {
    obx_gate_t *g = obx_gate_new(100000, 60000);
    /* -1: librdkafka partitions them; they share one slot. */
    ck_assert_int_eq(obx_gate_offer(g, "t", -1, &m[0], 0), OBX_GATE_SEND);
    ck_assert_int_eq(obx_gate_offer(g, "t", -1, &m[1], 0), OBX_GATE_HOLD);
    ck_assert_int_eq(obx_gate_report(g, "t", 3, 1, 0), -1);
    ck_assert_int_eq(obx_gate_report(g, "nope", 0, 1, 0), -1);
    ck_assert_int_eq(obx_gate_report(g, "t", -1, 1, 0), 0);
    ck_assert_int_eq(obx_gate_report(g, "t", -1, 1, 0), -1); /* more reports than sends */
    ck_assert_int_eq(obx_gate_offer(g, "t", -2, &m[2], 0), OBX_GATE_SKIP);
    obx_gate_destroy(g);
}
END_TEST

TH_MAIN("gate", 60, test_cold_partition_lets_one_message_through, test_failed_first_message_keeps_the_partition_cold, test_new_producer_id_cools_every_partition, test_partition_idle_past_cold_ms_is_cold_again, test_stalled_partition_skips_until_rescan, test_held_messages_of_a_stalled_cold_partition_leave_the_budget, test_drop_held_hands_back_in_order, test_unassigned_partition_and_bad_reports)
