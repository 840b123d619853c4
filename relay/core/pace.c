#include "pace.h"

int obx_pace_next(int cur_ms, int rows, int min_ms, int max_ms) {
    int next;

    if (max_ms < min_ms)
        max_ms = min_ms;
    if (rows < OBX_PACE_GROW_ROWS)
        return min_ms;
    next = cur_ms < min_ms ? min_ms : cur_ms;
    /* Against half the maximum rather than doubled: no overflow, whatever cur_ms. */
    return next > max_ms / 2 ? max_ms : next * 2;
}
