#include "gate.h"
#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    long unacked;
    int used;            /* a message was offered (slots below it are padding) */
    int warm;            /* acknowledged under the current producer id */
    int skipping;
    int64_t last_ack_ms;
    int64_t progress_ms; /* last report, or when the first unacknowledged went out */
    void **held;         /* ring of held messages */
    size_t head, n, cap;
} part_t;

typedef struct {
    char *name;
    part_t *parts;       /* index partition + 1: slot 0 is "librdkafka picks" */
    size_t nparts;
} topic_t;

struct obx_gate {
    int64_t stall_ms;
    int64_t cold_ms;
    topic_t *topics;
    size_t ntopics;
    size_t last;         /* the topic found last: messages come in runs */
    long held_total;
};

obx_gate_t *obx_gate_new(int64_t stall_ms, int64_t cold_ms) {
    obx_gate_t *g = obx_xcalloc(1, sizeof *g);
    obx_gate_configure(g, stall_ms, cold_ms);
    return g;
}

void obx_gate_configure(obx_gate_t *g, int64_t stall_ms, int64_t cold_ms) {
    g->stall_ms = stall_ms > 0 ? stall_ms : 1;
    g->cold_ms = cold_ms > 0 ? cold_ms : 1;
}

void obx_gate_destroy(obx_gate_t *g) {
    if (!g)
        return;
    for (size_t t = 0; t < g->ntopics; t++) {
        for (size_t i = 0; i < g->topics[t].nparts; i++)
            free(g->topics[t].parts[i].held);
        free(g->topics[t].parts);
        free(g->topics[t].name);
    }
    free(g->topics);
    free(g);
}

static topic_t *topic_find(obx_gate_t *g, const char *name, int create) {
    topic_t *t;
    if (g->last < g->ntopics && strcmp(g->topics[g->last].name, name) == 0)
        return &g->topics[g->last];
    for (size_t i = 0; i < g->ntopics; i++) {
        if (strcmp(g->topics[i].name, name) == 0) {
            g->last = i;
            return &g->topics[i];
        }
    }
    if (!create)
        return NULL;
    g->topics = obx_xrealloc(g->topics, (g->ntopics + 1) * sizeof *g->topics);
    t = &g->topics[g->ntopics];
    memset(t, 0, sizeof *t);
    t->name = obx_xstrdup(name);
    g->last = g->ntopics++;
    return t;
}

static part_t *part_find(obx_gate_t *g, const char *topic, int32_t partition, int create) {
    topic_t *t;
    size_t slot;

    if (partition < -1)
        return NULL;
    slot = (size_t)partition + 1;
    t = topic_find(g, topic, create);
    if (!t)
        return NULL;
    if (slot >= t->nparts) {
        part_t *p;
        size_t n = slot + 1;
        if (!create)
            return NULL;
        p = obx_xrealloc(t->parts, n * sizeof *p);
        memset(p + t->nparts, 0, (n - t->nparts) * sizeof *p);
        t->parts = p;
        t->nparts = n;
    }
    return &t->parts[slot];
}

const char *obx_gate_topic(obx_gate_t *g, const char *topic) {
    return topic_find(g, topic, 1)->name;
}

static int is_stalled(const obx_gate_t *g, const part_t *p, int64_t now) {
    return p->unacked > 0 && now - p->progress_ms >= g->stall_ms;
}

static int is_cold(const obx_gate_t *g, const part_t *p, int64_t now) {
    return !p->warm || (p->unacked == 0 && now - p->last_ack_ms >= g->cold_ms);
}

static void hold(obx_gate_t *g, part_t *p, void *msg) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        void **v = obx_xmalloc(cap * sizeof *v);
        for (size_t i = 0; i < p->n; i++)
            v[i] = p->held[(p->head + i) % p->cap];
        free(p->held);
        p->held = v;
        p->head = 0;
        p->cap = cap;
    }
    p->held[(p->head + p->n) % p->cap] = msg;
    p->n++;
    g->held_total++;
}

static void *unhold(obx_gate_t *g, part_t *p) {
    void *msg = p->held[p->head];
    p->head = (p->head + 1) % p->cap;
    p->n--;
    g->held_total--;
    return msg;
}

obx_gate_verdict_t obx_gate_offer(obx_gate_t *g, const char *topic, int32_t partition, void *msg,
                                  int64_t now_ms) {
    part_t *p = part_find(g, topic, partition, 1);

    if (!p || p->skipping)
        return OBX_GATE_SKIP;
    p->used = 1;
    if (is_stalled(g, p, now_ms)) {
        p->skipping = 1;
        return OBX_GATE_SKIP;
    }
    if (is_cold(g, p, now_ms))
        p->warm = 0; /* stays cold until the next acknowledgement */
    if (p->n > 0 || (!p->warm && p->unacked > 0)) {
        hold(g, p, msg);
        return OBX_GATE_HOLD;
    }
    if (p->unacked++ == 0)
        p->progress_ms = now_ms;
    return OBX_GATE_SEND;
}

int obx_gate_report(obx_gate_t *g, const char *topic, int32_t partition, int ok, int64_t now_ms) {
    part_t *p = part_find(g, topic, partition, 0);

    if (!p || p->unacked <= 0)
        return -1;
    p->unacked--;
    p->progress_ms = now_ms;
    if (ok) {
        p->warm = 1;
        p->last_ack_ms = now_ms;
    }
    return p->skipping;
}

void *obx_gate_release(obx_gate_t *g, int64_t now_ms) {
    if (g->held_total == 0)
        return NULL;
    for (size_t t = 0; t < g->ntopics; t++) {
        for (size_t i = 0; i < g->topics[t].nparts; i++) {
            part_t *p = &g->topics[t].parts[i];
            if (p->n > 0 && (p->warm || p->unacked == 0)) {
                if (p->unacked++ == 0)
                    p->progress_ms = now_ms;
                return unhold(g, p);
            }
        }
    }
    return NULL;
}

void obx_gate_new_producer(obx_gate_t *g) {
    for (size_t t = 0; t < g->ntopics; t++)
        for (size_t i = 0; i < g->topics[t].nparts; i++)
            g->topics[t].parts[i].warm = 0;
}

void obx_gate_drop_held(obx_gate_t *g, void (*drop)(void *ctx, void *msg), void *ctx) {
    for (size_t t = 0; t < g->ntopics; t++) {
        for (size_t i = 0; i < g->topics[t].nparts; i++) {
            part_t *p = &g->topics[t].parts[i];
            while (p->n > 0)
                drop(ctx, unhold(g, p));
        }
    }
}

void obx_gate_rescan(obx_gate_t *g) {
    for (size_t t = 0; t < g->ntopics; t++)
        for (size_t i = 0; i < g->topics[t].nparts; i++)
            g->topics[t].parts[i].skipping = 0;
}

long obx_gate_stalled(const obx_gate_t *g, int64_t now_ms) {
    long n = 0;
    for (size_t t = 0; t < g->ntopics; t++) {
        for (size_t i = 0; i < g->topics[t].nparts; i++) {
            const part_t *p = &g->topics[t].parts[i];
            if (is_stalled(g, p, now_ms))
                n += p->unacked + (long)p->n;
        }
    }
    return n;
}

void obx_gate_stats(const obx_gate_t *g, int64_t now_ms, obx_gate_stats_t *out) {
    memset(out, 0, sizeof *out);
    out->held = g->held_total;
    for (size_t t = 0; t < g->ntopics; t++) {
        for (size_t i = 0; i < g->topics[t].nparts; i++) {
            const part_t *p = &g->topics[t].parts[i];
            if (!p->used)
                continue;
            out->unacked += p->unacked;
            out->cold += is_cold(g, p, now_ms);
            out->stalled += is_stalled(g, p, now_ms);
            out->skipping += p->skipping;
        }
    }
}
