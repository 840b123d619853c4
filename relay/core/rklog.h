/* librdkafka's log callback, routed through the structured logger (syslog
 * levels mapped to ours). Set with rd_kafka_conf_set_log_cb. */
#ifndef OBX_RKLOG_H
#define OBX_RKLOG_H

#include <librdkafka/rdkafka.h>

void obx_rklog_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#endif
