/* Exponential backoff with full jitter, for reconnects and retries. */
#ifndef OBX_BACKOFF_H
#define OBX_BACKOFF_H

#include <stdint.h>

typedef struct {
    int64_t base_ms;
    int64_t max_ms;
    int attempt;      /* failures since the last reset */
    uint64_t rng;     /* xorshift state; seeded by obx_backoff_init */
} obx_backoff_t;

void obx_backoff_init(obx_backoff_t *b, int64_t base_ms, int64_t max_ms, uint64_t seed);
/* The delay before the next try: uniform in [cap/2, cap] where cap = min(max, base*2^attempt). */
int64_t obx_backoff_next(obx_backoff_t *b);
void obx_backoff_reset(obx_backoff_t *b);

#endif
