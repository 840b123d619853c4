/* Between the dedup module and its runner: the batch fast path. */
#ifndef OBX_DEDUP_INTERNAL_H
#define OBX_DEDUP_INTERNAL_H

#include "obx_dedup.h"

/* Returned on the fast path for an event it cannot handle (a poison effect,
 * no valid id): roll the transaction back and apply the batch again
 * carefully, event by event, with savepoints. */
#define OBX_DEDUP_REDO (-2)

/* Inside an open transaction, without savepoints: records the inbox rows of
 * n ordinary events (no compensations) in one statement and runs the
 * effects of the new ones, batch_fn on all of them at once or, when it is
 * NULL, fn on each in order. status[i] receives evs[i]'s outcome. Returns 0,
 * -1 (roll back; retry later) or OBX_DEDUP_REDO (an event without a valid id
 * or a poison effect: roll back and apply the events again one by one with
 * obx_dedup_apply_tx, which parks them). */
int obx_dedup_apply_batch_tx(PGconn *conn, const char *consumer, const obx_event_t *evs, int n,
                             obx_effect_fn fn, obx_batch_effect_fn batch_fn, void *arg,
                             obx_apply_status_t *status, char *errstr, size_t errsize);

/* Retention beyond the inbox (obx_dedup_cleanup), in batches of at most
 * batch rows: this consumer's dead letters older than retention_s; and,
 * after marking this consumer's offsets as just seen, the offsets of other
 * consumers not seen for gone_s, then the inbox rows and dead letters of
 * consumers left without offsets, older than gone_s. Return the rows
 * deleted, or -1 with errstr. */
long obx_dedup_cleanup_dead_letters(PGconn *conn, const char *consumer, long retention_s, int batch,
                                    char *errstr, size_t errsize);
long obx_dedup_forget_gone(PGconn *conn, const char *consumer, long gone_s, int batch, char *errstr,
                           size_t errsize);

#endif
