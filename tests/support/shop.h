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
/* Every invariant of the flash sale, row by row; prints one summary line. */
void th_shop_check(th_ctx_t *t, int orders);

#endif
