/* libFuzzer target: decoding of PostgreSQL's binary format (the claim
 * query's headers text[], its uuid and its timestamptz). */
#include <stdint.h>
#include <string.h>

#include "pgbin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    obx_pgbin_elem_t out[64];
    int n = obx_pgbin_array((const char *)data, size, out, 64);
    /* Every element must lie inside the input. */
    for (int i = 0; i < n; i++)
        if (out[i].ptr && (out[i].ptr < (const char *)data ||
                           out[i].ptr + out[i].len > (const char *)data + size))
            __builtin_trap();
    if (size >= 8) {
        char ts[OBX_PGBIN_TS_SIZE];
        obx_pgbin_timestamptz((const char *)data, ts);
        if (strlen(ts) >= sizeof ts)
            __builtin_trap();
    }
    if (size >= 16) {
        char uuid[OBX_PGBIN_UUID_SIZE];
        obx_pgbin_uuid((const char *)data, uuid);
        if (strlen(uuid) != 36)
            __builtin_trap();
    }
    return 0;
}
