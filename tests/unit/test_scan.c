/* The scan (relay/relayd/scan.h): which rows each claim asks for, through
 * the cases that G1 (nothing lost) and G2 (per-key order) rest on. Each
 * case asserts the exact range of the next claim. */
#include <check.h>
#include <stdint.h>

#include "harness.h"
#include "scan.h"

#define BATCH 500

/* The next claim the relay would send with nothing in flight: a rescan
 * once the forward scan ended, else forward (or a rescan when the cursor
 * has reached the horizon). */
static obx_scan_claim_t next_claim(obx_scan_t *s) {
    obx_scan_claim_t c;
    if (s->end || obx_scan_forward(s, BATCH, &c) != 0)
        return obx_scan_restart(s, BATCH, BATCH, 1);
    return c;
}

static void assert_claim(obx_scan_claim_t c, int rescan, int64_t after, int64_t upto) {
    ck_assert_msg(c.rescan == rescan && c.after == after && c.upto == upto,
                  "claim: want %s after %lld up to %lld, got %s after %lld up to %lld", rescan ? "rescan" : "forward",
                  (long long)after, (long long)upto, c.rescan ? "rescan" : "forward", (long long)c.after,
                  (long long)c.upto);
}

/* A claim's result of n rows first..first+n-1, all produced. */
static void produce(obx_scan_t *s, const obx_scan_claim_t *c, int n, int64_t first) {
    obx_scan_claimed(s, c, n, first);
    for (int i = 0; i < n; i++)
        obx_scan_advance(s, first + i);
    obx_scan_batch_done(s, c, n);
}

static obx_scan_t connected(int64_t hz) {
    obx_scan_t s = {0};
    obx_scan_connected(&s);
    obx_scan_set_horizon(&s, hz);
    return s;
}

START_TEST(test_forward_claims_stop_at_the_horizon) {
    obx_scan_t s = connected(1200);
    obx_scan_claim_t c = next_claim(&s);
    assert_claim(c, 0, 0, 1200);
    produce(&s, &c, BATCH, 1);
    c = next_claim(&s);
    assert_claim(c, 0, 500, 1200);
    produce(&s, &c, BATCH, 501);
    c = next_claim(&s);
    assert_claim(c, 0, 1000, 1200);
    /* 200 rows up to the horizon: a short batch ends the forward scan. */
    produce(&s, &c, 200, 1001);
    ck_assert_int_eq(s.end, 1);
    assert_claim(next_claim(&s), 1, 0, INT64_MAX);
}
END_TEST

/* A writer's transaction holds id 900 open while the relay passes it: a
 * forward scan never goes past the horizon (<= 899 here), and a rescan that
 * did (its rows run to 1000) ends the forward scan, so the next claim starts
 * from the low water again and finds 900 once it commits. */
START_TEST(test_late_commit_below_the_cursor_is_found_by_the_rescan) {
    obx_scan_t s = connected(899);
    obx_scan_claim_t c = next_claim(&s);
    assert_claim(c, 0, 0, 899);
    produce(&s, &c, 400, 1);           /* 1..400 */
    ck_assert_int_eq(s.end, 1);        /* the short batch */
    c = next_claim(&s);
    assert_claim(c, 1, 0, INT64_MAX);
    /* The rescan reads 401..899 and 901..1000 (900 is not committed yet). */
    obx_scan_claimed(&s, &c, 499, 401);
    obx_scan_advance(&s, 1000);
    ck_assert_int_eq(obx_scan_batch_done(&s, &c, 499), 1); /* ran past the horizon */
    /* Not a forward claim from 1000: a rescan, and from low (0: the rescan
     * was settled, but its first row was 401, so low moved to 400). */
    c = next_claim(&s);
    assert_claim(c, 1, 400, INT64_MAX);
}
END_TEST

/* The horizon moves while a claim is in flight: the claim's result is
 * judged against the horizon it was sent with. A settled rescan sent with
 * horizon 100 that finds its first unsent row at 150 moves low to 100, not
 * 149: rows 101..149 may have been invisible to its snapshot. */
START_TEST(test_horizon_moving_while_a_claim_is_in_flight) {
    obx_scan_t s = connected(100);
    obx_scan_claim_t c;

    obx_scan_stop(&s);
    c = next_claim(&s);
    assert_claim(c, 1, 0, INT64_MAX);
    ck_assert_int_eq(obx_scan_set_horizon(&s, 200), 1);
    ck_assert_int_eq(obx_scan_claimed(&s, &c, 10, 150), 1);
    ck_assert_int_eq(s.low, 100);
    /* A forward claim sent at horizon 200 that comes back full below it may
     * be followed by a claim sent ahead; past the old horizon it may not. */
    s.end = 0;
    obx_scan_advance(&s, 100);
    ck_assert_int_eq(obx_scan_forward(&s, BATCH, &c), 0);
    assert_claim(c, 0, 100, 200);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH, 199), 1);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH, 200), 0);
    ck_assert_int_eq(obx_scan_set_horizon(&s, 150), 0); /* never backwards */
    ck_assert_int_eq(s.hz, 200);
}
END_TEST

/* A full batch lets the next claim go out before its rows are produced;
 * when producing stops short (a row deferred, the relay blocked), the
 * cursor is not where that claim began: the relay voids it, its result is
 * dropped, and the rows after the stop come from a rescan, in order. */
START_TEST(test_claim_ahead_discarded_after_a_short_batch) {
    obx_scan_t s = connected(5000);
    obx_scan_claim_t c = next_claim(&s), ahead;

    obx_scan_claimed(&s, &c, BATCH, 1);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH, 500), 1);
    obx_scan_advance(&s, 500);
    ck_assert_int_eq(obx_scan_forward(&s, BATCH, &ahead), 0);
    assert_claim(ahead, 0, 500, 5000);
    /* Producing goes back to the batch's own rows and stops at 300. */
    for (int64_t id = 1; id <= 300; id++)
        obx_scan_advance(&s, id);
    ck_assert_int_ne(s.cursor, 500); /* the relay's test for voiding `ahead` */
    obx_scan_void_sent(&s);
    ck_assert_int_eq(obx_scan_is_void(&s, &ahead), 1);
    ck_assert_int_eq(obx_scan_batch_done(&s, &c, BATCH), 0);
    c = next_claim(&s);
    assert_claim(c, 1, 0, INT64_MAX);
    ck_assert_int_eq(obx_scan_is_void(&s, &c), 0);
    /* No claim ahead of a rescan's rows, or of a short or ended batch. */
    c = obx_scan_rescan(&s, BATCH, BATCH, 1);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH, 600), 0);
    ck_assert_int_eq(obx_scan_forward(&s, BATCH, &c), 0);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH - 1, 600), 0);
    obx_scan_stop(&s);
    ck_assert_int_eq(obx_scan_may_claim_ahead(&s, &c, BATCH, 600), 0);
}
END_TEST

/* The producer fails on a batch holding rows from 4501 while a forward
 * claim from 14000 is out; the relay replaces the producer before that
 * claim returns. Its rows (14001..14500) must not go out on the new
 * producer ahead of 4501..14000, which only the rescan from low publishes
 * again: the claim is void, and so is one sent ahead before the failure. */
START_TEST(test_claim_out_when_the_producer_is_replaced_is_void) {
    obx_scan_t s = connected(20000);
    obx_scan_claim_t out, c;

    s.low = 4500;
    s.cursor = 14000;
    ck_assert_int_eq(obx_scan_forward(&s, BATCH, &out), 0);
    assert_claim(out, 0, 14000, 20000);
    obx_scan_void_sent(&s); /* the producer replaced */
    ck_assert_int_eq(obx_scan_is_void(&s, &out), 1);
    ck_assert_int_eq(s.end, 1);
    c = next_claim(&s);
    assert_claim(c, 1, 4500, INT64_MAX);
    ck_assert_int_eq(obx_scan_is_void(&s, &c), 0);
    /* Voiding again (a second failure) voids the rescan too, not only claims
     * of one epoch back. */
    obx_scan_void_sent(&s);
    ck_assert_int_eq(obx_scan_is_void(&s, &c), 1);
    ck_assert_int_eq(obx_scan_is_void(&s, &out), 1);
}
END_TEST

/* Low moves only on a settled rescan of the current generation: a row
 * released (made unsent again) while a rescan was out drops low to 0, and
 * that rescan's result must not raise it again. */
START_TEST(test_rescan_after_the_low_water_and_a_released_row) {
    obx_scan_t s = connected(1000);
    obx_scan_claim_t c, stale;

    obx_scan_stop(&s);
    c = next_claim(&s);
    ck_assert_int_eq(obx_scan_claimed(&s, &c, 0, 0), 1); /* nothing unsent: low to the horizon */
    ck_assert_int_eq(s.low, 1000);
    obx_scan_stop(&s);
    stale = next_claim(&s);
    assert_claim(stale, 1, 1000, INT64_MAX);
    obx_scan_released(&s);
    ck_assert_int_eq(s.low, 0);
    ck_assert_int_eq(obx_scan_claimed(&s, &stale, 0, 0), 0);
    ck_assert_int_eq(s.low, 0);
    assert_claim(next_claim(&s), 1, 0, INT64_MAX);
    /* An unsettled rescan (rows in flight) does not move low either. */
    c = obx_scan_restart(&s, BATCH, BATCH, 0);
    ck_assert_int_eq(obx_scan_claimed(&s, &c, 3, 700), 0);
    ck_assert_int_eq(s.low, 0);
    /* One row at a time while blocked: a full one-row rescan still ends the scan. */
    c = obx_scan_restart(&s, 1, BATCH, 1);
    ck_assert_int_eq(c.limit, 1);
    obx_scan_claimed(&s, &c, 1, 700);
    ck_assert_int_eq(s.end, 1);
}
END_TEST

/* The leader's sessions drop mid-scan and a relay (this one, or the
 * standby that takes the lock) connects: no position survives, the first
 * claim is a rescan from 0 once a horizon is known. */
START_TEST(test_failover_to_a_standby_mid_scan) {
    obx_scan_t s = connected(5000);
    obx_scan_claim_t c = next_claim(&s);

    produce(&s, &c, BATCH, 1);
    obx_scan_stop(&s);
    c = next_claim(&s);
    obx_scan_claimed(&s, &c, BATCH, 501);
    ck_assert_int_eq(s.low, 500);
    obx_scan_lost(&s);
    ck_assert_int_eq(s.low, 0);
    ck_assert_int_eq(s.hz, 0);
    obx_scan_connected(&s);
    /* No horizon yet: nothing is safe to claim forward. */
    ck_assert_int_eq(obx_scan_forward(&s, BATCH, &c), -1);
    ck_assert_int_eq(s.end, 1);
    assert_claim(next_claim(&s), 1, 0, INT64_MAX);
    /* The result of a claim sent before the failover cannot move low. */
    ck_assert_int_eq(obx_scan_claimed(&s, &(obx_scan_claim_t){.rescan = 1, .settled = 1, .batch = BATCH,
                                                            .hz = 5000, .low_gen = s.low_gen - 1}, 0, 0), 0);
    ck_assert_int_eq(s.low, 0);
}
END_TEST

/* Caught up: a settled rescan that found nothing with low at the horizon
 * asks for a newer horizon, so that low follows the writers. */
START_TEST(test_caught_up_wants_a_newer_horizon) {
    obx_scan_t s = connected(300);
    obx_scan_claim_t c;

    obx_scan_stop(&s);
    c = next_claim(&s);
    obx_scan_claimed(&s, &c, 0, 0);
    ck_assert_int_eq(obx_scan_caught_up(&s, &c), 1);
    obx_scan_set_horizon(&s, 400);
    ck_assert_int_eq(obx_scan_caught_up(&s, &c), 0);
    c = obx_scan_rescan(&s, BATCH, BATCH, 0);
    ck_assert_int_eq(obx_scan_caught_up(&s, &c), 0);
}
END_TEST

TH_MAIN("scan", 60, test_forward_claims_stop_at_the_horizon, test_late_commit_below_the_cursor_is_found_by_the_rescan,
        test_horizon_moving_while_a_claim_is_in_flight, test_claim_ahead_discarded_after_a_short_batch,
        test_claim_out_when_the_producer_is_replaced_is_void,
        test_rescan_after_the_low_water_and_a_released_row, test_failover_to_a_standby_mid_scan,
        test_caught_up_wants_a_newer_horizon)
