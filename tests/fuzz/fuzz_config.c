/* libFuzzer target: the config loader on arbitrary file contents. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    obx_config_t cfg;
    char err[1024];
    FILE *f;

    if (!path[0])
        snprintf(path, sizeof path, "/tmp/obx-fuzz-config.%d", (int)getpid());
    f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    for (int prog = OBX_PROG_RELAY; prog <= OBX_PROG_CONSUMER; prog++)
        if (obx_config_load(path, (obx_program_t)prog, &cfg, err, sizeof err) == 0)
            obx_config_free(&cfg);
    obx_log_clear_secrets();
    return 0;
}
