/* Asking librdkafka for a topic's metadata at once, instead of waiting for
 * it to learn the topic on its own (its 1 s timer for a producer, the first
 * assignment for a consumer). */
#ifndef OBX_RKMETA_H
#define OBX_RKMETA_H

#include <librdkafka/rdkafka.h>

/* Requests rkt's metadata and waits up to timeout_ms for it; librdkafka
 * keeps what it learned. Blocks that long while the broker is unreachable.
 * partitions (may be NULL) gets the topic's partition count, 0 when the
 * answer had none; the topic's own error is returned when the request
 * itself worked. */
rd_kafka_resp_err_t obx_rkmeta_fetch(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int timeout_ms,
                                     int *partitions);

/* obx_rkmeta_fetch for a topic by name, through a topic handle of its own.
 * Whether the request lets the broker create a missing topic follows rk's
 * allow.auto.create.topics (a producer's default is true). */
rd_kafka_resp_err_t obx_rkmeta_fetch_name(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                          int *partitions);

#endif
