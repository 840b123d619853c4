#include "scan.h"

void obx_scan_connected(obx_scan_t *s) {
    s->cursor = 0;
    s->end = 0;
}

void obx_scan_lost(obx_scan_t *s) {
    s->hz = 0;
    s->low = 0;
    s->low_gen++;
    s->end = 1;
}

void obx_scan_released(obx_scan_t *s) {
    s->low = 0;
    s->low_gen++;
    s->end = 1;
}

void obx_scan_stop(obx_scan_t *s) { s->end = 1; }

void obx_scan_void_sent(obx_scan_t *s) {
    s->epoch++;
    s->end = 1;
}

int obx_scan_is_void(const obx_scan_t *s, const obx_scan_claim_t *c) { return c->epoch != s->epoch; }

int obx_scan_set_horizon(obx_scan_t *s, int64_t v) {
    if (v <= s->hz)
        return 0;
    s->hz = v;
    return 1;
}

obx_scan_claim_t obx_scan_rescan(obx_scan_t *s, int limit, int batch, int settled) {
    obx_scan_claim_t c = {.after = s->low, .upto = INT64_MAX, .limit = limit, .batch = batch, .rescan = 1,
                          .settled = settled, .hz = s->hz, .low_gen = s->low_gen, .epoch = s->epoch};
    s->cursor = s->low;
    return c;
}

obx_scan_claim_t obx_scan_restart(obx_scan_t *s, int limit, int batch, int settled) {
    s->end = 0;
    return obx_scan_rescan(s, limit, batch, settled);
}

int obx_scan_forward(obx_scan_t *s, int batch, obx_scan_claim_t *c) {
    if (s->cursor >= s->hz) {
        s->end = 1;
        return -1;
    }
    *c = (obx_scan_claim_t){.after = s->cursor, .upto = s->hz, .limit = batch, .batch = batch, .rescan = 0, .settled = 0,
                            .hz = s->hz, .low_gen = s->low_gen, .epoch = s->epoch};
    return 0;
}

int obx_scan_claimed(obx_scan_t *s, const obx_scan_claim_t *c, int n, int64_t first) {
    int64_t to;

    if (obx_scan_is_void(s, c))
        return 0;
    if (n < c->batch)
        s->end = 1;
    if (!c->rescan || !c->settled || c->low_gen != s->low_gen)
        return 0;
    to = n > 0 && first - 1 < c->hz ? first - 1 : c->hz;
    if (to <= s->low)
        return 0;
    s->low = to;
    return 1;
}

int obx_scan_may_claim_ahead(const obx_scan_t *s, const obx_scan_claim_t *c, int n, int64_t last) {
    return n == c->batch && !c->rescan && !s->end && last < c->hz;
}

void obx_scan_advance(obx_scan_t *s, int64_t id) { s->cursor = id; }

int obx_scan_batch_done(obx_scan_t *s, const obx_scan_claim_t *c, int n) {
    if (s->cursor > c->hz || (n < c->batch && !c->rescan)) {
        s->end = 1;
        return 1;
    }
    return 0;
}

int obx_scan_caught_up(const obx_scan_t *s, const obx_scan_claim_t *c) {
    return c->rescan && c->settled && s->low >= s->hz;
}
