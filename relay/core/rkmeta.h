/* Asking librdkafka for a topic's metadata at once, instead of waiting for
 * it to learn the topic on its own (its 1 s timer for a producer, the first
 * assignment for a consumer). */
#ifndef OBX_RKMETA_H
#define OBX_RKMETA_H

#include <librdkafka/rdkafka.h>

/* Requests rkt's metadata and waits up to timeout_ms for it; the answer
 * itself is dropped (librdkafka keeps what it learned). Blocks that long
 * while the broker is unreachable. */
rd_kafka_resp_err_t obx_rkmeta_fetch(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int timeout_ms);

#endif
