#include "producer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "rklog.h"
#include "rkmeta.h"

/* Topics are few (routes, or one per aggregate type), so a short list with
 * the last hit first is enough; past TOPICS_MAX the least recent is dropped. */
#define TOPICS_MAX 256
#define WARM_TIMEOUT_MS 200

typedef struct {
    char *name;
    rd_kafka_topic_t *rkt;
} topic_t;

struct obx_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipefd[2];
    obx_dr_fn dr;
    void *ctx;
    topic_t topics[TOPICS_MAX];
    int topics_n;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    obx_producer_t *p = opaque;
    (void)rk;
    p->dr(p->ctx, m->_private, m->err, m->partition, m->offset);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    (void)opaque;
    /* Fatal errors are picked up by obx_producer_fatal; the rest are transient
     * and librdkafka retries them itself. */
    OBX_LOG(err == RD_KAFKA_RESP_ERR__FATAL ? OBX_LOG_ERROR : OBX_LOG_WARN, "kafka error",
            KS("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)), KS("reason", reason));
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t errsize) {
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "kafka.%s: %s", k, err);
        return -1;
    }
    return 0;
}

static int user_set(const obx_config_t *cfg, const char *key) {
    for (size_t i = 0; i < cfg->kafka_n; i++)
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return 1;
    return 0;
}

obx_producer_t *obx_producer_new(const obx_config_t *cfg, obx_dr_fn dr, void *ctx,
                                 char *errstr, size_t errsize) {
    obx_producer_t *p = calloc(1, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char qmax[32];

    p->pipefd[0] = p->pipefd[1] = -1;
    p->dr = dr;
    p->ctx = ctx;
    /* Defaults the user may override: infinite delivery timeout so an outage
     * delays messages instead of failing them (which would break key order);
     * no linger, because the relay hands over whole claim batches anyway and
     * librdkafka's 5 ms would be the latency floor of every quiet event; no
     * Nagle (librdkafka leaves it on, the Java client turns it off): a
     * request sent while another is unacknowledged would otherwise wait
     * for the broker's delayed ACK. */
    snprintf(qmax, sizeof qmax, "%d", cfg->max_inflight + cfg->batch_size + 1000);
    if (set(conf, "client.id", "outbox-relay", errstr, errsize) ||
        set(conf, "message.timeout.ms", "0", errstr, errsize) ||
        set(conf, "linger.ms", "0", errstr, errsize) ||
        set(conf, "socket.nagle.disable", "true", errstr, errsize) ||
        set(conf, "queue.buffering.max.messages", qmax, errstr, errsize) ||
        set(conf, "log.queue", "true", errstr, errsize))
        goto fail;
    for (size_t i = 0; i < cfg->kafka_n; i++)
        if (set(conf, cfg->kafka[i].key, cfg->kafka[i].value, errstr, errsize))
            goto fail;
    if (!user_set(cfg, "queue.buffering.max.messages") &&
        set(conf, "queue.buffering.max.messages", qmax, errstr, errsize))
        goto fail;
    if (set(conf, "enable.idempotence", "true", errstr, errsize))
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_log_cb(conf, obx_rklog_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    /* rd_kafka_new takes ownership of conf only on success. */
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errsize);
    if (!p->rk)
        goto fail;
    conf = NULL;
    if (pipe2(p->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errsize, "pipe: %m");
        goto fail;
    }
    rd_kafka_set_log_queue(p->rk, NULL);
    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->pipefd[1], "1", 1);
    return p;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    obx_producer_destroy(p);
    return NULL;
}

int obx_producer_fd(const obx_producer_t *p) { return p->pipefd[0]; }

void obx_producer_serve(obx_producer_t *p) {
    char buf[64];
    while (read(p->pipefd[0], buf, sizeof buf) > 0)
        ;
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
}

/* librdkafka asks for a topic's metadata created after the first broker
 * connection only on its 1 s timer, so the first message to a new topic
 * waited up to a second. Asking at once costs one round trip per topic and
 * process; while the broker is unreachable it blocks up to WARM_TIMEOUT_MS. */
static rd_kafka_topic_t *topic_get(obx_producer_t *p, const char *name) {
    rd_kafka_resp_err_t err;
    topic_t t;

    for (int i = 0; i < p->topics_n; i++) {
        if (strcmp(p->topics[i].name, name) == 0) {
            t = p->topics[i];
            memmove(&p->topics[1], &p->topics[0], (size_t)i * sizeof t);
            p->topics[0] = t;
            return t.rkt;
        }
    }
    if (p->topics_n == TOPICS_MAX) {
        p->topics_n--;
        rd_kafka_topic_destroy(p->topics[p->topics_n].rkt);
        free(p->topics[p->topics_n].name);
    }
    t.rkt = rd_kafka_topic_new(p->rk, name, NULL);
    if (!t.rkt)
        return NULL;
    t.name = strdup(name);
    if (!t.name) {
        rd_kafka_topic_destroy(t.rkt);
        return NULL;
    }
    err = obx_rkmeta_fetch(p->rk, t.rkt, WARM_TIMEOUT_MS);
    OBX_LOG(OBX_LOG_DEBUG, "kafka topic metadata requested", KS("topic", name),
            KS("result", rd_kafka_err2name(err)));
    memmove(&p->topics[1], &p->topics[0], (size_t)p->topics_n * sizeof t);
    p->topics[0] = t;
    p->topics_n++;
    return t.rkt;
}

rd_kafka_resp_err_t obx_producer_send(obx_producer_t *p, const char *topic, const char *key,
                                      size_t keylen, const char *payload, size_t len,
                                      rd_kafka_headers_t *hdrs, void *opaque) {
    rd_kafka_topic_t *rkt = topic_get(p, topic);
    if (!rkt)
        return RD_KAFKA_RESP_ERR__INVALID_ARG; /* an invalid topic name */
    return rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(rkt),
                             RD_KAFKA_V_KEY((void *)key, keylen),
                             RD_KAFKA_V_VALUE((void *)payload, len),
                             RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_MSGFLAGS(0), RD_KAFKA_V_END);
}

int obx_producer_fatal(obx_producer_t *p, char *errstr, size_t errsize) {
    char ignored[8];
    if (!errstr)
        return rd_kafka_fatal_error(p->rk, ignored, sizeof ignored) != RD_KAFKA_RESP_ERR_NO_ERROR;
    return rd_kafka_fatal_error(p->rk, errstr, errsize) != RD_KAFKA_RESP_ERR_NO_ERROR;
}

void obx_producer_purge(obx_producer_t *p) {
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

rd_kafka_t *obx_producer_handle(obx_producer_t *p) { return p->rk; }

void obx_producer_destroy(obx_producer_t *p) {
    if (!p)
        return;
    if (p->mainq) {
        rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(p->mainq);
    }
    for (int i = 0; i < p->topics_n; i++) {
        rd_kafka_topic_destroy(p->topics[i].rkt);
        free(p->topics[i].name);
    }
    if (p->rk)
        rd_kafka_destroy(p->rk);
    if (p->pipefd[0] >= 0)
        close(p->pipefd[0]);
    if (p->pipefd[1] >= 0)
        close(p->pipefd[1]);
    free(p);
}
