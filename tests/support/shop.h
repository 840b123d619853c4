/* Order-flow test helpers (see shop.c). */
#ifndef OBX_TEST_SHOP_H
#define OBX_TEST_SHOP_H

#include "harness.h"

#define TH_SHOP_SKUS 50

/* Writes a consumer config for name reading <prefix>.<topic>; returns its path (static). */
const char *th_consumer_conf(th_ctx_t *t, const char *file, const char *bootstrap,
                             const char *name, const char *topic);
/* Runs obx-order-gen: n orders over TH_SHOP_SKUS skus with stock units each. */
void th_gen_orders(th_ctx_t *t, int n, int stock);
/* Starts obx-order-gen in the background: n orders at rate orders/s over
 * TH_SHOP_SKUS skus (40 units each, 10 hot); stderr to DIR/ordergen.log. */
pid_t th_ordergen_spawn(th_ctx_t *t, int n, int rate);
/* Seed of a chaos schedule: OBX_CHAOS_SEED, else the time; prints
 * "<label>: seed=N (rerun with OBX_CHAOS_SEED=N)" and seeds th_rnd. */
uint64_t th_chaos_seed(const char *label);
/* Seeded pseudo-random number in [0, n). */
unsigned th_rnd(unsigned n);
/* Fills kinds_out[0..n): every kind of 0..kinds-1 once in a seeded order
 * (as far as n allows), then seeded picks. */
void th_chaos_schedule(int kinds, int n, int *kinds_out);
/* Waits for the order generator to exit 0, for every order's outcome, and
 * for the outbox to drain; fails the test otherwise. */
void th_shop_finish(th_ctx_t *t, pid_t gen, int orders, int timeout_ms);
/* Effects applied twice: stock deducted beyond its moves, and events
 * processed more than once by a consumer. 0 when exactly-once held. */
long long th_shop_dup_effects(th_ctx_t *t);
/* Every invariant of the flash sale, row by row; prints one summary line. */
void th_shop_check(th_ctx_t *t, int orders);

#endif
