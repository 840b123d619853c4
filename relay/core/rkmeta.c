#include "rkmeta.h"

rd_kafka_resp_err_t obx_rkmeta_fetch(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int timeout_ms) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);

    if (md)
        rd_kafka_metadata_destroy(md);
    return err;
}
