#include "producer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "rklog.h"
#include "rkmeta.h"
#include "xalloc.h"

/* Topics are few (routes, or one per aggregate type), so a short list with
 * the last hit first is enough; past TOPICS_MAX the least recent is dropped. */
/* librdkafka statistics, for obx_producer_broker_up_ms: a few KB a second. */
#define STATS_INTERVAL_MS "1000"
#define TOPICS_MAX 256
/* A topic's metadata is asked for with this timeout, four times longer
 * after each ask that timed out (a slow broker) up to META_TIMEOUT_MAX_MS;
 * each ask blocks the loop that long at worst. */
#define WARM_TIMEOUT_MS 200
#define META_TIMEOUT_MAX_MS 3200
/* A topic's partition count is asked again this often (partitions added),
 * and while it is unknown at most this often. */
#define META_REFRESH_MS 300000
#define META_RETRY_MS 1000
/* A topic the brokers do not know yet may be being created (auto-create):
 * its rows wait this long, as librdkafka's topic.metadata.propagation.max.ms
 * lets them, before they fail (and are parked after relay.max_attempts). */
#define UNKNOWN_TOPIC_WAIT_MS 30000

typedef int32_t (*partitioner_fn)(const rd_kafka_topic_t *rkt, const void *key, size_t keylen,
                                  int32_t partition_cnt, void *rkt_opaque, void *msg_opaque);

/* librdkafka's partitioners by their `partitioner` property names: the
 * relay picks each message's partition itself (the gate must know it before
 * librdkafka does), exactly where librdkafka would have put it. */
static const struct {
    const char *name;
    partitioner_fn fn;
} partitioners[] = {
    {"consistent_random", rd_kafka_msg_partitioner_consistent_random}, /* librdkafka's default */
    {"consistent", rd_kafka_msg_partitioner_consistent},
    {"murmur2", rd_kafka_msg_partitioner_murmur2},
    {"murmur2_random", rd_kafka_msg_partitioner_murmur2_random},
    {"fnv1a", rd_kafka_msg_partitioner_fnv1a},
    {"fnv1a_random", rd_kafka_msg_partitioner_fnv1a_random},
};

typedef struct {
    char *name;
    rd_kafka_topic_t *rkt;
    int partitions;          /* 0: not known yet */
    int meta_timeout_ms;     /* for the next ask */
    int64_t unknown_since;   /* first answer that the topic does not exist; 0: none */
    rd_kafka_resp_err_t err; /* the topic's error in the last metadata answer */
    int64_t meta_at;         /* when its metadata was last asked for */
} topic_t;

struct obx_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipefd[2];
    obx_dr_fn dr;
    void *ctx;
    partitioner_fn partitioner;
    int pids;                /* producer ids acquired */
    char pid_lost[256];      /* set when a second one was: see log_cb */
    long long implicit_acks;
    int64_t broker_up_ms;    /* when statistics last showed a broker up */
    topic_t topics[TOPICS_MAX];
    int topics_n;
};

/* Served on our thread (log.queue), in order with the delivery reports.
 * The `eos` debug context tells when a producer id is acquired
 * (rd_kafka_idemp_pid_update: "[thrd:main]: Acquired PID{...}") and when
 * librdkafka acknowledges messages implicitly (rd_kafka_dr_implicit_ack);
 * there is no other interface for either. A second producer id (an epoch
 * bump after UNKNOWN_PRODUCER_ID, a sequence gap or a permanent produce
 * error: for a producer without transactional.id, a new id the brokers
 * know nothing of) sends what librdkafka had queued pipelined, so a lost
 * first request could be acknowledged implicitly: this producer is then
 * treated as failed (obx_producer_fatal), and later successes as unknown. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    obx_producer_t *p = rd_kafka_opaque(rk);
    if (p && strcmp(fac, "GETPID") == 0 && strstr(buf, "Acquired PID")) {
        if (++p->pids > 1 && !p->pid_lost[0])
            snprintf(p->pid_lost, sizeof p->pid_lost, "librdkafka changed the producer id: %s", buf);
        OBX_LOG(OBX_LOG_INFO, "producer_id_acquired", "kafka producer id acquired", KS("detail", buf));
        return;
    }
    if (p && strcmp(fac, "IMPLICITACK") == 0)
        p->implicit_acks++;
    obx_rklog_cb(rk, level, fac, buf);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    obx_producer_t *p = opaque;
    rd_kafka_resp_err_t err = m->err;
    (void)rk;
    /* After a second producer id a success may be an implicit one over a
     * gap (log_cb): the row is published again instead. */
    if (p->pid_lost[0] && err == RD_KAFKA_RESP_ERR_NO_ERROR)
        err = RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
    p->dr(p->ctx, m->_private, err, m->partition, m->offset);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    (void)opaque;
    /* Fatal errors are picked up by obx_producer_fatal; the rest are transient
     * and librdkafka retries them itself. */
    OBX_LOG(err == RD_KAFKA_RESP_ERR__FATAL ? OBX_LOG_ERROR : OBX_LOG_WARN, "kafka_error", "kafka error",
            KS("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)), KS("reason", reason));
}

/* librdkafka says nothing when a broker comes back, only when all went
 * down; its statistics (JSON, compact) give each broker's state. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    obx_producer_t *p = opaque;
    const char *brokers = strstr(json, "\"brokers\":");
    (void)rk;
    (void)len;
    if (brokers && strstr(brokers, "\"state\":\"UP\""))
        p->broker_up_ms = obx_clock_ms();
    return 0; /* librdkafka frees json */
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t errsize) {
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "kafka.%s: %s", k, err);
        return -1;
    }
    return 0;
}

/* The user's value of a kafka property, or NULL. */
static const char *user_value(const obx_config_t *cfg, const char *key) {
    for (size_t i = 0; i < cfg->kafka_n; i++)
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return cfg->kafka[i].value;
    return NULL;
}

static int set_partitioner(obx_producer_t *p, const obx_config_t *cfg, char *errstr, size_t errsize) {
    const char *name = user_value(cfg, "partitioner");
    for (size_t i = 0; i < sizeof partitioners / sizeof partitioners[0]; i++) {
        if (!name || strcmp(name, partitioners[i].name) == 0) {
            p->partitioner = partitioners[i].fn;
            return 0;
        }
    }
    snprintf(errstr, errsize, "kafka.partitioner: \"%s\" is not one of librdkafka's key partitioners"
             " (consistent_random, consistent, murmur2, murmur2_random, fnv1a, fnv1a_random; \"random\""
             " would break per-key order)", name);
    return -1;
}

/* The eos debug context is always on (see log_cb), beside the user's own. */
static int set_debug(rd_kafka_conf_t *conf, const obx_config_t *cfg, char *errstr, size_t errsize) {
    const char *user = user_value(cfg, "debug");
    char v[512];
    snprintf(v, sizeof v, "%s%seos", user ? user : "", user && *user ? "," : "");
    return set(conf, "debug", v, errstr, errsize);
}

obx_producer_t *obx_producer_new(const obx_config_t *cfg, obx_dr_fn dr, void *ctx,
                                 char *errstr, size_t errsize) {
    obx_producer_t *p = obx_xcalloc(1, sizeof *p);
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
    /* Stalled partitions' rows leave the budget: up to twice max_inflight. */
    snprintf(qmax, sizeof qmax, "%d", 2 * cfg->max_inflight + cfg->batch_size + 1000);
    if (set(conf, "client.id", "outbox-relay", errstr, errsize) ||
        set(conf, "message.timeout.ms", "0", errstr, errsize) ||
        set(conf, "linger.ms", "0", errstr, errsize) ||
        set(conf, "socket.nagle.disable", "true", errstr, errsize) ||
        set(conf, "queue.buffering.max.messages", qmax, errstr, errsize) ||
        set(conf, "log.queue", "true", errstr, errsize) ||
        set(conf, "statistics.interval.ms", STATS_INTERVAL_MS, errstr, errsize))
        goto fail;
    for (size_t i = 0; i < cfg->kafka_n; i++)
        if (set(conf, cfg->kafka[i].key, cfg->kafka[i].value, errstr, errsize))
            goto fail;
    if (!user_value(cfg, "queue.buffering.max.messages") &&
        set(conf, "queue.buffering.max.messages", qmax, errstr, errsize))
        goto fail;
    if (set(conf, "enable.idempotence", "true", errstr, errsize) ||
        set_debug(conf, cfg, errstr, errsize) || set_partitioner(p, cfg, errstr, errsize))
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
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

int64_t obx_producer_broker_up_ms(const obx_producer_t *p) { return p->broker_up_ms; }

void obx_producer_serve(obx_producer_t *p) {
    char buf[64];
    while (read(p->pipefd[0], buf, sizeof buf) > 0)
        ;
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
}

/* Asks for t's metadata and keeps its partition count. */
static void topic_meta(obx_producer_t *p, topic_t *t) {
    int n = 0;
    if (t->meta_timeout_ms == 0)
        t->meta_timeout_ms = WARM_TIMEOUT_MS;
    t->err = obx_rkmeta_fetch(p->rk, t->rkt, t->meta_timeout_ms, &n);
    t->meta_at = obx_clock_ms();
    if (n > 0)
        t->partitions = n;
    if (t->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        t->unknown_since = 0;
    else if (!t->unknown_since)
        t->unknown_since = t->meta_at;
    if (t->err == RD_KAFKA_RESP_ERR__TIMED_OUT)
        t->meta_timeout_ms = t->meta_timeout_ms * 4 < META_TIMEOUT_MAX_MS ? t->meta_timeout_ms * 4 : META_TIMEOUT_MAX_MS;
    else
        t->meta_timeout_ms = WARM_TIMEOUT_MS;
    OBX_LOG(OBX_LOG_DEBUG, "topic_metadata", "kafka topic metadata requested", KS("topic", t->name),
            KS("result", rd_kafka_err2name(t->err)), KI("partitions", n));
}

/* librdkafka asks for a topic's metadata created after the first broker
 * connection only on its 1 s timer, so the first message to a new topic
 * waited up to a second. Asking at once costs one round trip per topic and
 * process; while the broker is unreachable it blocks up to WARM_TIMEOUT_MS.
 * Returns the topic moved to the front of the list, or NULL. */
static topic_t *topic_get(obx_producer_t *p, const char *name) {
    topic_t t;

    for (int i = 0; i < p->topics_n; i++) {
        if (strcmp(p->topics[i].name, name) == 0) {
            t = p->topics[i];
            memmove(&p->topics[1], &p->topics[0], (size_t)i * sizeof t);
            p->topics[0] = t;
            return &p->topics[0];
        }
    }
    if (p->topics_n == TOPICS_MAX) {
        p->topics_n--;
        rd_kafka_topic_destroy(p->topics[p->topics_n].rkt);
        free(p->topics[p->topics_n].name);
    }
    memset(&t, 0, sizeof t);
    t.rkt = rd_kafka_topic_new(p->rk, name, NULL);
    if (!t.rkt)
        return NULL;
    t.name = obx_xstrdup(name);
    memmove(&p->topics[1], &p->topics[0], (size_t)p->topics_n * sizeof t);
    p->topics[0] = t;
    p->topics_n++;
    topic_meta(p, &p->topics[0]);
    return &p->topics[0];
}

int obx_producer_partition(obx_producer_t *p, const char *topic, const char *key, size_t keylen,
                           int32_t *partition, rd_kafka_resp_err_t *err) {
    topic_t *t = topic_get(p, topic);
    int64_t age;

    if (!t) {
        *err = RD_KAFKA_RESP_ERR__INVALID_ARG; /* an invalid topic name */
        return -1;
    }
    age = obx_clock_ms() - t->meta_at;
    if (age >= (t->partitions > 0 ? META_REFRESH_MS : META_RETRY_MS))
        topic_meta(p, t);
    if (t->partitions > 0) {
        *partition = p->partitioner(t->rkt, key, keylen, t->partitions, NULL, NULL);
        return 0;
    }
    *err = t->err;
    /* Refused (an invalid topic; TOPIC_AUTHORIZATION_FAILED, which the
     * relay holds rather than fails, issue 14), or still unknown after the
     * creation window: -1. Otherwise (no answer, no leader yet, being
     * created) it waits: failing it would publish it after later rows of
     * its key. Until partitions are known the metadata is asked for again
     * every META_RETRY_MS, so a granted ACL is seen within a second. */
    if (t->err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION || t->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
        t->err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED)
        return -1;
    if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && obx_clock_ms() - t->unknown_since >= UNKNOWN_TOPIC_WAIT_MS)
        return -1;
    return 1;
}

rd_kafka_resp_err_t obx_producer_send(obx_producer_t *p, const char *topic, int32_t partition,
                                      const char *key, size_t keylen, const char *payload, size_t len,
                                      rd_kafka_headers_t *hdrs, void *opaque) {
    topic_t *t = topic_get(p, topic);
    if (!t)
        return RD_KAFKA_RESP_ERR__INVALID_ARG; /* an invalid topic name */
    return rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(t->rkt), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY((void *)key, keylen),
                             RD_KAFKA_V_VALUE((void *)payload, len),
                             RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_MSGFLAGS(0), RD_KAFKA_V_END);
}

long long obx_producer_implicit_acks(const obx_producer_t *p) { return p->implicit_acks; }

int obx_producer_fatal(obx_producer_t *p, char *errstr, size_t errsize) {
    char ignored[8];
    if (!errstr) {
        errstr = ignored;
        errsize = sizeof ignored;
    }
    if (rd_kafka_fatal_error(p->rk, errstr, errsize) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 1;
    if (!p->pid_lost[0])
        return 0;
    snprintf(errstr, errsize, "%s", p->pid_lost);
    return 1;
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
