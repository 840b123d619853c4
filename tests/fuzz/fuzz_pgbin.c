/* libFuzzer target: decoding of PostgreSQL binary text[] (the claim query's headers). */
#include <stdint.h>

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
    return 0;
}
