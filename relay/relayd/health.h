/* The relay's health: a one-line record that the loop rewrites about once
 * a second (health.file) and `outbox-relay health` judges, and a watchdog
 * thread that ends the process when the loop stops turning, so that a
 * standby can take the leader lock over.
 *
 * Times are obx_clock_ms (clock.h), which every process of a boot shares,
 * so a probe in another process compares them. */
#ifndef OBX_HEALTH_H
#define OBX_HEALTH_H

#include <stddef.h>
#include <stdint.h>

/* What a probe asks: the loop turns (live); and PostgreSQL answers (ready);
 * and, for the leader, a Kafka broker is up (full). */
typedef enum { OBX_HEALTH_FULL, OBX_HEALTH_READY, OBX_HEALTH_LIVE } obx_health_mode_t;

typedef struct {
    long pid;
    int64_t tick_ms;   /* the loop's last turn */
    int64_t pg_ms;     /* PostgreSQL's last answer; 0: none yet */
    int64_t kafka_ms;  /* last time a broker was up or acknowledged; 0: never */
    char role[16];     /* leader, standby, disconnected */
    char state[16];    /* the stats line's state */
} obx_health_t;

/* Replaces path's content with h (written to path.tmp, then renamed, so a
 * reader never sees half a record). Returns 0, or -1 with the reason. */
int obx_health_write(const char *path, const obx_health_t *h, char *errstr, size_t errsize);
/* Reads a record obx_health_write wrote. Returns 0, or -1 with the reason. */
int obx_health_read(const char *path, obx_health_t *h, char *errstr, size_t errsize);
/* Judges h at now against max_age_ms for mode. Returns 0 when healthy, 1
 * when not; why says what was seen (both cases), e.g. "role=leader loop=0.2s
 * postgres=0.1s kafka=0.9s" or "no Kafka broker up for 12.0s (limit 10s)". */
int obx_health_judge(const obx_health_t *h, int64_t now, int64_t max_age_ms, obx_health_mode_t mode,
                     char *why, size_t whysize);

typedef struct obx_health_watchdog obx_health_watchdog_t;

/* Starts a thread that exits the process with status 1 (after the event
 * loop_stuck, when stderr can take it without blocking) once the loop has
 * not called obx_health_watchdog_tick for timeout_ms. NULL with the reason
 * when the thread cannot start. Stop it with obx_health_watchdog_stop. */
obx_health_watchdog_t *obx_health_watchdog_start(int64_t timeout_ms, char *errstr, size_t errsize);
void obx_health_watchdog_tick(obx_health_watchdog_t *w, int64_t now);
/* Joins the thread and frees w; NULL is ignored. */
void obx_health_watchdog_stop(obx_health_watchdog_t *w);

#endif
