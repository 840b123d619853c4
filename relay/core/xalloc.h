/* Allocation that never returns NULL. Out of memory, the process logs
 * event=out_of_memory and aborts: a relay that cannot hold its rows cannot
 * keep its guarantees, and one that stops is restarted by its supervisor
 * and publishes again what it had not marked (duplicates, never losses).
 * The programs (relay, consumer runner, tools) use it; the dedup library
 * (libobxdedup), which runs inside a service's process, reports out of
 * memory as an error instead, as libpq and librdkafka do. The memory is the
 * caller's, to free(). */
#ifndef OBX_XALLOC_H
#define OBX_XALLOC_H

#include <stddef.h>

void *obx_xmalloc(size_t n);
void *obx_xcalloc(size_t n, size_t size);
void *obx_xrealloc(void *p, size_t n);
char *obx_xstrdup(const char *s);

#endif
