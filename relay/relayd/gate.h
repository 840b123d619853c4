/* Per-partition admission of messages to the producer.
 *
 * Cold partitions. librdkafka treats a later batch's success as proof that
 * an earlier unacknowledged batch of the same partition was written
 * (rd_kafka_handle_idempotent_Produce_success -> rd_kafka_dr_implicit_ack),
 * but a broker that holds no state for the producer id on that partition
 * accepts any first sequence number (ProducerAppendInfo.checkSequence), so a
 * first request that was lost is reported delivered. A partition is cold
 * until its first acknowledgement under the current producer id, and again
 * after cold_ms without one (the broker may have expired the producer's
 * state); while cold it has at most one message unacknowledged, so there is
 * no earlier request to acknowledge implicitly. Later messages wait here.
 *
 * Stalled partitions. A partition with messages unacknowledged and no
 * report for stall_ms (a frozen or unreachable leader) is stalled: its next
 * message and every later one of it in the same scan are skipped (left
 * unsent, found again by a later scan, so per-key order holds), and the
 * caller leaves its messages out of the in-flight budget (obx_gate_stalled)
 * so that the other partitions keep flowing. obx_gate_rescan starts a scan.
 *
 * Pure bookkeeping: no librdkafka calls. Messages are opaque pointers owned
 * by the caller; the gate only keeps them in order. Topic names are copied. */
#ifndef OBX_GATE_H
#define OBX_GATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct obx_gate obx_gate_t;

typedef enum {
    OBX_GATE_SEND,   /* produce it now (counted as unacknowledged) */
    OBX_GATE_HOLD,   /* the gate keeps it; obx_gate_release hands it back */
    OBX_GATE_SKIP    /* leave the row unsent for the next scan */
} obx_gate_verdict_t;

typedef struct {
    long unacked;    /* handed to the producer, not yet reported */
    long held;       /* waiting in the gate */
    int cold;        /* partitions that are cold now (known ones) */
    int stalled;     /* partitions stalled now */
    int skipping;    /* partitions skipping rows in this scan */
} obx_gate_stats_t;

/* stall_ms, cold_ms > 0. Out of memory aborts (xalloc.h), here and below. */
obx_gate_t *obx_gate_new(int64_t stall_ms, int64_t cold_ms);
void obx_gate_destroy(obx_gate_t *g);
/* Settings changed by a reload; they apply to the next offers. */
void obx_gate_configure(obx_gate_t *g, int64_t stall_ms, int64_t cold_ms);
/* The gate's own copy of a topic name, stable until obx_gate_destroy (for
 * messages to point at). */
const char *obx_gate_topic(obx_gate_t *g, const char *topic);

/* Decides for one message of topic/partition (partition -1: librdkafka
 * picks it, all such messages of a topic count as one partition). On
 * OBX_GATE_HOLD the gate keeps msg until obx_gate_release returns it. */
obx_gate_verdict_t obx_gate_offer(obx_gate_t *g, const char *topic, int32_t partition, void *msg,
                                  int64_t now_ms);
/* A delivery report for a message that obx_gate_offer (or obx_gate_release)
 * let through; ok: the broker acknowledged it. Returns 1 when the partition
 * skipped rows in this scan (it moves again: a rescan can send them now), 0
 * otherwise, -1 for a partition the gate never let a message through on (a
 * caller bug). */
int obx_gate_report(obx_gate_t *g, const char *topic, int32_t partition, int ok, int64_t now_ms);
/* The next held message that may be produced now, or NULL; it then counts
 * as unacknowledged. Call until NULL after reports. */
void *obx_gate_release(obx_gate_t *g, int64_t now_ms);
/* A new producer id: every partition is cold again. */
void obx_gate_new_producer(obx_gate_t *g);
/* Hands every held message to drop (in order) and forgets them, e.g. when
 * the producer is recreated and the rows will be claimed again. */
void obx_gate_drop_held(obx_gate_t *g, void (*drop)(void *ctx, void *msg), void *ctx);
/* A new scan of the outbox begins: partitions stop skipping. */
void obx_gate_rescan(obx_gate_t *g);
/* Messages (unacknowledged and held) of the partitions stalled now. */
long obx_gate_stalled(const obx_gate_t *g, int64_t now_ms);
void obx_gate_stats(const obx_gate_t *g, int64_t now_ms, obx_gate_stats_t *out);

#endif
