/* The project's clocks, in milliseconds. obx_clock_ms (CLOCK_MONOTONIC) for
 * every deadline and interval: every process of a boot shares it, so one
 * process may compare another's. obx_clock_wall_ms (CLOCK_REALTIME) only
 * against times from elsewhere, such as Kafka message timestamps. */
#ifndef OBX_CLOCK_H
#define OBX_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t obx_clock_of(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t obx_clock_ms(void) { return obx_clock_of(CLOCK_MONOTONIC); }

static inline int64_t obx_clock_wall_ms(void) { return obx_clock_of(CLOCK_REALTIME); }

#endif
