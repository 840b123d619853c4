#include "rklog.h"

#include "log.h"

void obx_rklog_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    obx_log_level_t l = level <= 3 ? OBX_LOG_ERROR : level <= 4 ? OBX_LOG_WARN
                      : level <= 6 ? OBX_LOG_INFO : OBX_LOG_DEBUG;
    (void)rk;
    OBX_LOG(l, "librdkafka", "librdkafka", KS("facility", fac), KS("detail", buf));
}
