/* Retention, mode delete: the leader deletes outbox rows marked sent more than
 * retention.keep_s ago, on a session of its own, in batches walked along the
 * primary key and paced by retention.max_rows_per_s, so that the table stays
 * small without a cron job and claims and marks never wait for it. Parked
 * and unsent rows are never deleted. A pass starts every
 * retention.interval_s from the lowest id and ends where rows must stay.
 *
 * Mode partitions (an outbox partitioned by range of id): a pass every
 * interval_s lists the partitions, creates partitions so that
 * partitions_ahead lie above the last id, and drops each partition whose
 * ids are all given out and whose rows were all sent keep_s ago, none
 * parked (DETACH ... CONCURRENTLY, then DROP: writers and claims never wait
 * for an ACCESS EXCLUSIVE lock on the outbox). A partition holding parked
 * rows stays until an operator releases or deletes them. A session
 * advisory lock keeps a second relay's retention out; a detach left
 * unfinished (a relay killed) is finished by the next pass.
 *
 * Driven by the relay's one poll loop: obx_retention_step at each turn,
 * obx_retention_input when obx_retention_fd is readable. Errors are logged
 * (retention_failed) and never stop publishing. */
#ifndef OBX_RETENTION_H
#define OBX_RETENTION_H

#include <stdint.h>

#include "config.h"

typedef struct obx_retention obx_retention_t;

/* cfg is borrowed and must outlive the retention (reloads included). */
obx_retention_t *obx_retention_new(const obx_config_t *cfg);
/* Closes its session and frees it; NULL is ignored. */
void obx_retention_free(obx_retention_t *r);
/* leading: this relay leads and is not stopping. Retention runs only then;
 * otherwise its session is closed. Connects (blocking, like the relay's
 * other sessions) and sends the next batch when due. */
void obx_retention_step(obx_retention_t *r, int leading, int64_t now);
/* The session's socket while a query is pending, else -1. */
int obx_retention_fd(const obx_retention_t *r);
/* Reads the pending query's result, when obx_retention_fd is readable. */
void obx_retention_input(obx_retention_t *r, int64_t now);
/* When obx_retention_step next has something to do (INT64_MAX: nothing
 * until a result or a change of leadership). */
int64_t obx_retention_due(const obx_retention_t *r);
/* Rows deleted, or in partitions dropped, since start. */
long long obx_retention_deleted(const obx_retention_t *r);

#endif
