/* The scan: which outbox rows the relay's next claim asks for, so that no
 * committed row is missed (G1) and rows of a key go out in id order (G2).
 *
 * A claim returns unsent, unparked rows in id order. The forward scan goes
 * on from the cursor (the last row produced) but only up to the horizon: an
 * id at or below which every writer transaction has ended, so that no row
 * can still commit behind the cursor. Past it, or after anything that may
 * have left a row behind (a short batch, a failed or deferred row, a
 * released row, a reconnect), the scan ends and the next claim is a rescan:
 * from the low water, with no upper bound. The low water is an id at or
 * below which every row is sent or parked; it moves only on the result of
 * a rescan sent with nothing in flight ("settled"), to just below the first
 * unsent row it found, and never above the horizon of that rescan's sending
 * (rows above it may have been invisible to its snapshot).
 *
 * Pure functions over a struct: the relay keeps the claim it sent (an
 * obx_scan_claim_t) and hands it back with the result, since a claim may be
 * sent ahead, before the rows of the previous one are produced. */
#ifndef OBX_SCAN_H
#define OBX_SCAN_H

#include <stdint.h>

typedef struct {
    int64_t cursor;     /* the last id produced, or about to be, in this forward scan */
    int64_t low;        /* low water */
    int64_t hz;         /* horizon */
    unsigned low_gen;   /* bumped whenever low drops */
    unsigned epoch;     /* bumped when claims already sent must not be produced */
    int end;            /* the forward scan ended: the next claim is a rescan */
} obx_scan_t;

/* One claim: unsent rows with after < id <= upto, at most limit. Fewer
 * than batch rows end the forward scan (a limit below it, one row while the
 * relay is blocked, always does). */
typedef struct {
    int64_t after, upto;
    int limit, batch;
    int rescan;         /* from the low water, whatever the horizon */
    int settled;        /* sent with nothing in flight: its result may move low */
    int64_t hz;         /* the horizon when it was sent */
    unsigned low_gen;   /* low's generation when it was sent */
    unsigned epoch;     /* the scan's epoch when it was sent */
} obx_scan_claim_t;

/* A session connected: the forward scan starts from the start. */
void obx_scan_connected(obx_scan_t *s);
/* The sessions were lost: anything may have changed while away. */
void obx_scan_lost(obx_scan_t *s);
/* A sent or parked row was made unsent again (outbox_released), perhaps
 * below low. */
void obx_scan_released(obx_scan_t *s);
/* The forward scan stops here (a row failed or waits, the producer is
 * replaced, a stalled partition moves again): rescan next. */
void obx_scan_stop(obx_scan_t *s);
/* Claims sent so far are void, and the forward scan stops: their rows
 * would overtake rows that only a rescan from the low water publishes again
 * (producing stopped short after a claim went ahead, the producer was
 * replaced while a claim was out). */
void obx_scan_void_sent(obx_scan_t *s);
/* Whether c was sent before the last obx_scan_void_sent: its rows are
 * dropped, unproduced, and its result moves nothing. */
int obx_scan_is_void(const obx_scan_t *s, const obx_scan_claim_t *c);
/* Raises the horizon to v; 1 when it moved. */
int obx_scan_set_horizon(obx_scan_t *s, int64_t v);

/* A rescan: from low, no upper bound; the cursor goes back to low. settled:
 * nothing is in flight. Does not touch end (obx_scan_restart does). */
obx_scan_claim_t obx_scan_rescan(obx_scan_t *s, int limit, int batch, int settled);
/* The rescan that follows an ended forward scan: end is cleared. */
obx_scan_claim_t obx_scan_restart(obx_scan_t *s, int limit, int batch, int settled);
/* The next forward claim of batch rows, from the cursor up to the horizon:
 * 0 with *c, or -1 when the cursor has reached the horizon (end is then
 * set: the caller rescans once drained, and wants a newer horizon). */
int obx_scan_forward(obx_scan_t *s, int batch, obx_scan_claim_t *c);

/* The result of claim c: n rows, the first one's id (unused when n is 0).
 * A short batch ends the forward scan; a settled rescan of the current
 * generation moves low up to just below first (or to c's horizon when it
 * found nothing), never above c's horizon. Returns 1 when low moved. */
int obx_scan_claimed(obx_scan_t *s, const obx_scan_claim_t *c, int n, int64_t first);
/* Whether the next forward claim may go out before the n rows of c, the
 * last of them last, are produced: a full forward batch below c's horizon,
 * the scan not ended. The caller adds its own conditions (room in flight,
 * idle, not blocked) and then calls obx_scan_advance(s, last). */
int obx_scan_may_claim_ahead(const obx_scan_t *s, const obx_scan_claim_t *c, int n, int64_t last);
/* The forward scan has reached id (a row produced, or a batch claimed ahead of). */
void obx_scan_advance(obx_scan_t *s, int64_t id);
/* After producing the rows of c: ends the forward scan when it ran past
 * c's horizon (a rescan's rows) or reached it (a short forward batch).
 * Returns 1 then: the caller wants a newer horizon. */
int obx_scan_batch_done(obx_scan_t *s, const obx_scan_claim_t *c, int n);
/* A settled rescan that found nothing, with low at the horizon: a newer
 * horizon would let low follow the writers. */
int obx_scan_caught_up(const obx_scan_t *s, const obx_scan_claim_t *c);

#endif
