/* The relay's idempotent Kafka producer: built from the config's kafka group
 * with enable.idempotence forced on, its logs routed through our logger, and
 * its events (delivery reports, errors, logs) signalled on a pipe so the one
 * poll loop can serve them. */
#ifndef OBX_PRODUCER_H
#define OBX_PRODUCER_H

#include <librdkafka/rdkafka.h>

#include "config.h"

typedef struct obx_producer obx_producer_t;

/* Called from obx_producer_serve for every delivery report; opaque is what
 * was passed to obx_producer_send. */
typedef void (*obx_dr_fn)(void *ctx, void *opaque, rd_kafka_resp_err_t err, int32_t partition,
                          int64_t offset);

obx_producer_t *obx_producer_new(const obx_config_t *cfg, obx_dr_fn dr, void *ctx,
                                 char *errstr, size_t errsize);
/* Readable when librdkafka has events for us. */
int obx_producer_fd(const obx_producer_t *p);
/* When librdkafka's statistics (every second) last showed a broker up
 * (CLOCK_MONOTONIC ms; 0: not yet): a broker outage shows in no other way
 * while nothing is produced. */
int64_t obx_producer_broker_up_ms(const obx_producer_t *p);
/* Drains the pipe and serves queued events (delivery reports, logs, errors). */
void obx_producer_serve(obx_producer_t *p);
/* The partition of key in topic, chosen by the configured partitioner
 * (kafka.partitioner, librdkafka's names and default) over the topic's
 * partition count, which is asked for on first use (blocking up to 200 ms,
 * longer after timeouts: producer.c) and every 5 minutes. Returns 0 with *partition; 1 when the count is not
 * known yet (no answer, no leader, a topic unknown for less than 30 s: ask
 * again later, at most once a second); -1 when the topic cannot take
 * messages (*err: an invalid name, not authorized, still unknown after 30 s). */
int obx_producer_partition(obx_producer_t *p, const char *topic, const char *key, size_t keylen,
                           int32_t *partition, rd_kafka_resp_err_t *err);
/* Produces to partition without copying: key, payload and the row they
 * point into must outlive the delivery report. On success librdkafka owns
 * hdrs; on failure the caller still does. */
rd_kafka_resp_err_t obx_producer_send(obx_producer_t *p, const char *topic, int32_t partition,
                                      const char *key, size_t keylen, const char *payload, size_t len,
                                      rd_kafka_headers_t *hdrs, void *opaque);
/* Messages librdkafka acknowledged implicitly (its IMPLICITACK debug line):
 * reported delivered because a later batch of their partition was. */
long long obx_producer_implicit_acks(const obx_producer_t *p);
/* 1 once librdkafka raised a fatal (idempotence) error or changed the
 * producer id (producer.c: log_cb), so that the producer must be replaced;
 * the reason in errstr (which may be NULL when only the answer is wanted).
 * Successes reported after a changed id come as __PURGE_INFLIGHT. */
int obx_producer_fatal(obx_producer_t *p, char *errstr, size_t errsize);
/* Fails everything not yet acknowledged (delivered as __PURGE_* reports on the next serve). */
void obx_producer_purge(obx_producer_t *p);
/* The librdkafka handle, borrowed (for metadata requests in --check). */
rd_kafka_t *obx_producer_handle(obx_producer_t *p);
void obx_producer_destroy(obx_producer_t *p);

#endif
