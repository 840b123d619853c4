#include "rkmeta.h"

rd_kafka_resp_err_t obx_rkmeta_fetch(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int timeout_ms,
                                     int *partitions) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);

    if (partitions)
        *partitions = 0;
    if (md) {
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
            err = md->topics[0].err;
            if (partitions && !err)
                *partitions = md->topics[0].partition_cnt;
        }
        rd_kafka_metadata_destroy(md);
    }
    return err;
}

rd_kafka_resp_err_t obx_rkmeta_fetch_name(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                          int *partitions) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err;

    if (partitions)
        *partitions = 0;
    if (!rkt)
        return rd_kafka_last_error();
    err = obx_rkmeta_fetch(rk, rkt, timeout_ms, partitions);
    rd_kafka_topic_destroy(rkt);
    return err;
}
