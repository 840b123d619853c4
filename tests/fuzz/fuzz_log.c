/* libFuzzer target: log line formatting (logfmt and JSON) of arbitrary
 * strings, with secrets that must never survive into the line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1), line[512];
    size_t half = size / 2;
    obx_kv_t kvs[3];

    memcpy(s, data, size);
    s[size] = '\0';
    /* The first 4 bytes (when present and NUL-free) are a secret. */
    if (size >= 8 && !memchr(data, 0, 4)) {
        char secret[5];
        memcpy(secret, data, 4);
        secret[4] = '\0';
        obx_log_add_secret(secret);
    }
    kvs[0] = (obx_kv_t)KS("k", s + half);
    kvs[1] = (obx_kv_t)KI("n", (int64_t)size);
    kvs[2] = (obx_kv_t){0};
    for (int fmt = 0; fmt < 2; fmt++) {
        obx_log_configure(OBX_LOG_DEBUG, (obx_log_format_t)fmt);
        obx_log_format_line(line, (size % sizeof line) + 1, OBX_LOG_INFO, s, kvs);
        if (strlen(line) > size % sizeof line)
            __builtin_trap();
    }
    obx_log_clear_secrets();
    free(s);
    return 0;
}
