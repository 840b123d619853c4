#include "headers.h"

#include <stdio.h>
#include <string.h>

#include "pgbin.h"

int obx_headers_build(const obx_row_t *row, rd_kafka_headers_t **out, char *errstr,
                      size_t errsize) {
    obx_pgbin_elem_t keys[OBX_HEADERS_MAX], vals[OBX_HEADERS_MAX];
    int nk = 0, nv = 0;
    rd_kafka_headers_t *hdrs;

    *out = NULL;
    if (!row->headers_ok) {
        snprintf(errstr, errsize, "headers must be a JSON object whose values are strings");
        return -1;
    }
    if (row->hkeys) {
        nk = obx_pgbin_array(row->hkeys, row->hkeys_len, keys, OBX_HEADERS_MAX);
        nv = row->hvals ? obx_pgbin_array(row->hvals, row->hvals_len, vals, OBX_HEADERS_MAX) : -1;
        if (nk < 0 || nv != nk) {
            snprintf(errstr, errsize, "headers: more than %d entries or undecodable", OBX_HEADERS_MAX);
            return -1;
        }
    }
    hdrs = rd_kafka_headers_new((size_t)nk + 4);
    rd_kafka_header_add(hdrs, "event_id", -1, row->event_id, -1);
    rd_kafka_header_add(hdrs, "event_type", -1, row->event_type, -1);
    rd_kafka_header_add(hdrs, "aggregate_type", -1, row->aggregate_type, -1);
    rd_kafka_header_add(hdrs, "created_at", -1, row->created_at, -1);
    for (int i = 0; i < nk; i++) {
        if (!keys[i].ptr || !vals[i].ptr) {
            rd_kafka_headers_destroy(hdrs);
            snprintf(errstr, errsize, "headers: null key or value");
            return -1;
        }
        rd_kafka_header_add(hdrs, keys[i].ptr, (ssize_t)keys[i].len, vals[i].ptr,
                            (ssize_t)vals[i].len);
    }
    *out = hdrs;
    return 0;
}
