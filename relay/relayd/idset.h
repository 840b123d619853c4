/* A set of outbox row ids (positive int64): the rows the relay has handed
 * to the gate or the producer and not yet marked sent or given up on, so
 * that a rescan that reads them again does not publish them twice.
 * Open addressing with linear probing; grows, never shrinks. */
#ifndef OBX_IDSET_H
#define OBX_IDSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t *slots;  /* 0: empty */
    size_t cap, n;   /* cap: a power of two, or 0 */
} obx_idset_t;

/* Adds id (> 0); out of memory aborts (xalloc.h). */
void obx_idset_add(obx_idset_t *s, int64_t id);
int obx_idset_has(const obx_idset_t *s, int64_t id);
/* Removes id when present. */
void obx_idset_del(obx_idset_t *s, int64_t id);
void obx_idset_free(obx_idset_t *s);

#endif
