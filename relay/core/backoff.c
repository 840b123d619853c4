#include "backoff.h"

void obx_backoff_init(obx_backoff_t *b, int64_t base_ms, int64_t max_ms, uint64_t seed) {
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->max_ms = max_ms >= b->base_ms ? max_ms : b->base_ms;
    b->attempt = 0;
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int64_t obx_backoff_next(obx_backoff_t *b) {
    int64_t cap = b->base_ms;
    for (int i = 0; i < b->attempt && cap < b->max_ms; i++)
        cap = cap > b->max_ms / 2 ? b->max_ms : cap * 2;
    if (cap > b->max_ms)
        cap = b->max_ms;
    b->attempt++;
    /* Half fixed, half random: spreads reconnect storms but never retries at once. */
    int64_t half = cap / 2;
    return half + (int64_t)(xorshift(&b->rng) % (uint64_t)(cap - half + 1));
}

void obx_backoff_reset(obx_backoff_t *b) { b->attempt = 0; }
