/* Between the dedup module and its runner: the batch fast path. */
#ifndef OBX_DEDUP_INTERNAL_H
#define OBX_DEDUP_INTERNAL_H

#include "obx_dedup.h"

/* Returned when an effect refused an event (POISON) on the fast path: roll
 * the transaction back and apply it again with careful = 1. */
#define OBX_DEDUP_REDO (-2)

/* obx_dedup_apply_tx with a choice: careful = 1 wraps each effect in a
 * savepoint (a poison event is undone alone and parked); careful = 0 skips
 * the savepoint and returns OBX_DEDUP_REDO on poison. */
int obx_dedup_apply_mode_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                            obx_effect_fn fn, void *arg, int careful, obx_apply_status_t *status,
                            char *errstr, size_t errsize);

#endif
