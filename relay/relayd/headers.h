/* Kafka headers for one outbox row: event_id, event_type, aggregate_type,
 * created_at, then the row's own headers (keys sorted). */
#ifndef OBX_HEADERS_H
#define OBX_HEADERS_H

#include <librdkafka/rdkafka.h>

#include "outbox.h"

/* Returns 0 and a new header list in *out (the caller owns it until it hands
 * it to rd_kafka_producev, which takes it on success), or -1 with errstr when
 * the row's headers are not an object of strings or cannot be decoded. */
int obx_headers_build(const obx_row_t *row, rd_kafka_headers_t **out, char *errstr,
                      size_t errsize);

#endif
