/* libFuzzer target: Kafka header building from a row whose key and value
 * arrays come from the input (split at its first byte). */
#include <stdint.h>
#include <string.h>

#include "headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    obx_row_t row;
    rd_kafka_headers_t *h = NULL;
    char err[256];
    size_t split;

    if (size < 1)
        return 0;
    split = data[0] % size;
    memset(&row, 0, sizeof row);
    strcpy(row.event_id, "00000000-0000-4000-8000-000000000000");
    row.event_type = "E";
    row.aggregate_type = "A";
    strcpy(row.created_at, "2026-01-01T00:00:00Z");
    row.headers_ok = 1;
    row.hkeys = (const char *)data + 1;
    row.hkeys_len = split;
    row.hvals = (const char *)data + 1 + split;
    row.hvals_len = size - 1 - split;
    if (obx_headers_build(&row, &h, err, sizeof err) == 0)
        rd_kafka_headers_destroy(h);
    return 0;
}
