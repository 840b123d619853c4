/* The pause between claims while the relay follows writers. */
#ifndef OBX_PACE_H
#define OBX_PACE_H

/* Claims that find at least this many rows make the pause grow. A claim and
 * its mark cost the relay and its PostgreSQL sessions about 0.6 ms of CPU
 * whatever their rows (measured on 2 cores): 32 rows or more a claim means
 * writers busy enough that fewer, fuller claims leave them more CPU, while
 * a relay following 1,000 events/s at 5 ms finds about 5 and keeps its
 * latency. */
#define OBX_PACE_GROW_ROWS 32

/* The pause after a claim that found rows rows, the last pause being
 * cur_ms: doubled (from at least min_ms) up to max_ms after a claim that
 * found OBX_PACE_GROW_ROWS or more, min_ms after one that found fewer. A
 * max_ms below min_ms means min_ms. */
int obx_pace_next(int cur_ms, int rows, int min_ms, int max_ms);

#endif
