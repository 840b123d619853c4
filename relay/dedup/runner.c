#include "obx_runner.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "clock.h"
#include "config.h"
#include "dedup_internal.h"
#include "log.h"
#include "pgconn.h"
#include "rklog.h"
#include "rkmeta.h"
#include "signals.h"
#include "xalloc.h"

#define HDR_MAX 128
#define WARM_TIMEOUT_MS 1000 /* per subscribed topic, at start-up */
#define END_TIMEOUT_MS 5000  /* a partition's high watermark, consumer.from = latest */
#define CHECK_TIMEOUT_MS 10000 /* each broker request of --check */
#define ASSIGNED_MAX 1024      /* the stats line's assigned= value; a longer list is cut */

/* Where an event's header values live while its batch is applied. */
typedef struct {
    char eid[HDR_MAX], etype[HDR_MAX], comp[HDR_MAX], key[512];
} hdrs_t;

typedef struct {
    obx_config_t *cfg;
    const obx_handler_t *h;
    rd_kafka_t *rk;
    rd_kafka_topic_t **rkts;     /* the subscribed topics' handles, held until the end */
    PGconn *conn;
    rd_kafka_message_t **batch;
    int batch_n;
    obx_event_t *evs;            /* batch[i] as an event, its strings in hdrs[i] */
    hdrs_t *hdrs;
    obx_apply_status_t *status;
    obx_backoff_t backoff;
    /* The assignment, sorted; each offset is the next one to apply, as
     * loaded at assignment and then committed (or OFFSET_BEGINNING/END). */
    rd_kafka_topic_partition_list_t *assigned;
    int64_t newest_ts_ms;        /* newest message timestamp applied, -1: none yet */
    long long applied, rejected, duplicates, parked, compensations, batches, retries, cleaned;
    long long last_done;
    int64_t last_stats_ms, next_stats_ms, next_cleanup_ms;
} runner_t;

static volatile sig_atomic_t stop_signals, reload_signals;

static void on_signal(int sig) {
    if (sig == SIGHUP)
        reload_signals = 1;
    else
        stop_signals++;
}


/* Sleeps up to ms, waking early when a stop signal arrives. */
static void nap(int64_t ms) {
    int64_t until = obx_clock_ms() + ms;
    while (!stop_signals && obx_clock_ms() < until)
        usleep(10000);
}

static int db_ok(runner_t *r) {
    char err[512];
    while (!stop_signals) {
        if (r->conn && PQstatus(r->conn) == CONNECTION_OK)
            return 1;
        PQfinish(r->conn);
        r->conn = obx_pgconn_open(r->cfg->pg_conninfo, r->cfg->consumer_name);
        if (PQstatus(r->conn) == CONNECTION_OK) {
            OBX_LOG(OBX_LOG_INFO, "postgres_connected",
                    "postgres connected", KS("consumer", r->cfg->consumer_name),
                    KS("db", PQdb(r->conn)));
            return 1;
        }
        obx_pgconn_error(err, sizeof err, PQerrorMessage(r->conn));
        {
            int64_t delay = obx_backoff_next(&r->backoff);
            OBX_LOG(OBX_LOG_ERROR, "postgres_connect_failed",
                    "postgres connect failed", KS("error", err), KI("retry_in_ms", delay));
            nap(delay);
        }
    }
    return 0;
}

static const char *header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size) {
    rd_kafka_headers_t *hdrs = NULL;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v)
        return NULL;
    if (n >= size)
        n = size - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
}

typedef struct {
    long long applied, rejected, duplicates, parked, compensations;
} tally_t;

static void event_of(const rd_kafka_message_t *m, hdrs_t *h, obx_event_t *ev) {
    memset(ev, 0, sizeof *ev);
    ev->event_id = header(m, "event_id", h->eid, sizeof h->eid);
    ev->event_type = header(m, "event_type", h->etype, sizeof h->etype);
    ev->compensates = header(m, "compensates", h->comp, sizeof h->comp);
    if (m->key) {
        size_t n = m->key_len < sizeof h->key - 1 ? m->key_len : sizeof h->key - 1;
        memcpy(h->key, m->key, n);
        h->key[n] = '\0';
        ev->key = h->key;
    }
    ev->payload = m->payload;
    ev->payload_len = m->len;
    ev->topic = rd_kafka_topic_name(m->rkt);
    ev->partition = m->partition;
    ev->offset = m->offset;
}

static void tally_add(tally_t *t, obx_apply_status_t st) {
    switch (st) {
    case OBX_APPLY_APPLIED: t->applied++; break;
    case OBX_APPLY_REJECTED: t->rejected++; break;
    case OBX_APPLY_DUPLICATE: t->duplicates++; break;
    case OBX_APPLY_PARKED: t->parked++; break;
    }
}

static int is_compensation(const runner_t *r, const obx_event_t *ev) {
    return ev->compensates && r->h->undo;
}

/* One event with savepoints (the careful pass), or a compensation. */
static int apply_one(runner_t *r, const obx_event_t *ev, int careful, tally_t *t, char *err,
                     size_t errsize) {
    obx_apply_status_t st;

    if (is_compensation(r, ev)) {
        obx_comp_status_t cs;
        if (!obx_dedup_uuid_valid(ev->compensates) || !obx_dedup_uuid_valid(ev->event_id)) {
            if (!careful)
                return OBX_DEDUP_REDO; /* parked (and logged) once, on the careful pass */
            t->parked++;
            return obx_dedup_park_tx(r->conn, r->cfg->consumer_name, ev,
                                     obx_dedup_uuid_valid(ev->event_id) ? "invalid compensates header"
                                     : ev->event_id ? "invalid event_id header" : "missing event_id header",
                                     err, errsize);
        }
        if (obx_dedup_compensate_tx(r->conn, r->cfg->consumer_name, ev, ev->compensates, r->h->undo,
                                    r->h->arg, &cs, err, errsize) != 0)
            return -1;
        if (cs == OBX_COMP_DUPLICATE)
            t->duplicates++;
        else
            t->compensations++;
        return 0;
    }
    if (obx_dedup_apply_tx(r->conn, r->cfg->consumer_name, ev, r->h->apply, r->h->arg, &st, err, errsize) != 0)
        return -1;
    tally_add(t, st);
    return 0;
}

/* Ordinary events evs[from..to) in one go: one inbox statement, their effects. */
static int apply_run(runner_t *r, int from, int to, tally_t *t, char *err, size_t errsize) {
    int rc = obx_dedup_apply_batch_tx(r->conn, r->cfg->consumer_name, r->evs + from, to - from, r->h->apply,
                                      r->h->apply_batch, r->h->arg, r->status + from, err, errsize);
    if (rc != 0)
        return rc;
    for (int i = from; i < to; i++)
        tally_add(t, r->status[i]);
    return 0;
}

static int exec_simple(PGconn *conn, const char *sql, char *err, size_t errsize) {
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) {
        obx_pgconn_error(err, errsize, PQresultErrorMessage(res));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

/* One transaction for the whole batch: effects, inbox rows, offsets.
 * Returns 0, -1 (retry later) or OBX_DEDUP_REDO (apply again, carefully). */
static int apply_batch_once(runner_t *r, int careful, tally_t *t, char *err, size_t errsize) {
    char ignored[64];
    int rc = -1;
    memset(t, 0, sizeof *t);
    if (exec_simple(r->conn, "BEGIN", err, errsize) != 0)
        return -1;
    /* Runs of ordinary events between compensations go in one go: a
     * compensation depends on what came before it, so order is kept. */
    for (int i = 0, j; i < r->batch_n; i = j) {
        j = i + 1;
        if (careful || is_compensation(r, &r->evs[i])) {
            rc = apply_one(r, &r->evs[i], careful, t, err, errsize);
        } else {
            while (j < r->batch_n && !is_compensation(r, &r->evs[j]))
                j++;
            rc = apply_run(r, i, j, t, err, errsize);
        }
        if (rc != 0)
            goto fail;
    }
    rc = -1;
    /* The last message of each partition in the batch gives its next offset. */
    for (int i = 0; i < r->batch_n; i++) {
        const rd_kafka_message_t *m = r->batch[i];
        int last = 1;
        for (int j = i + 1; j < r->batch_n && last; j++)
            last = !(r->batch[j]->rkt == m->rkt && r->batch[j]->partition == m->partition);
        if (last && obx_dedup_store_offset_tx(r->conn, r->cfg->consumer_name, rd_kafka_topic_name(m->rkt),
                                              m->partition, m->offset + 1, err, errsize) != 0)
            goto fail;
    }
    if (exec_simple(r->conn, "COMMIT", err, errsize) != 0)
        goto fail;
    return 0;
fail:
    exec_simple(r->conn, "ROLLBACK", ignored, sizeof ignored);
    return rc;
}

/* "orders:0,1,2 payments:0" from the sorted assignment, cut after a
 * whole item with "..." when the rest would not fit. */
static void assigned_list(const rd_kafka_topic_partition_list_t *a, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; a && i < a->cnt; i++) {
        char item[300]; /* a topic name has at most 249 characters */
        const rd_kafka_topic_partition_t *p = &a->elems[i];
        int n = i > 0 && strcmp(a->elems[i - 1].topic, p->topic) == 0
                    ? snprintf(item, sizeof item, ",%d", p->partition)
                    : snprintf(item, sizeof item, "%s%s:%d", i > 0 ? " " : "", p->topic, p->partition);
        if (n < 0 || len + (size_t)n + sizeof "..." > size) {
            memcpy(buf + len, "...", sizeof "...");
            return;
        }
        memcpy(buf + len, item, (size_t)n + 1);
        len += (size_t)n;
    }
}

/* A partition's lag: its high watermark minus the next offset to apply, or
 * -1 while either is unknown. The watermarks are librdkafka's cache, filled
 * by fetch responses: no broker request. */
static int64_t partition_lag(const runner_t *r, const rd_kafka_topic_partition_t *p) {
    int64_t lo, hi, next = p->offset;
    if (rd_kafka_get_watermark_offsets(r->rk, p->topic, p->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    /* Consuming from the beginning, or from an offset retention deleted,
     * starts at the log's start. */
    if (lo >= 0 && (next == RD_KAFKA_OFFSET_BEGINNING || (next >= 0 && next < lo)))
        next = lo;
    if (next < 0 || hi < 0)
        return -1;
    return hi > next ? hi - next : 0;
}

typedef struct {
    int known;                              /* every assigned partition's lag is known */
    int64_t total, max;
    const rd_kafka_topic_partition_t *worst; /* NULL: no partition lags */
} lag_t;

/* Unknown between a revocation and the next assignment (or the first):
 * the group is deciding. An empty assignment has no lag. */
static lag_t lag_of(const runner_t *r) {
    lag_t l = {r->assigned != NULL, 0, 0, NULL};
    for (int i = 0; l.known && i < r->assigned->cnt; i++) {
        int64_t n = partition_lag(r, &r->assigned->elems[i]);
        if (n < 0)
            return (lag_t){0, 0, 0, NULL};
        l.total += n;
        if (n > l.max) {
            l.max = n;
            l.worst = &r->assigned->elems[i];
        }
    }
    return l;
}

/* The stats line, when it is due. Also called between a batch's retries:
 * a consumer stuck on its database keeps showing its lag. */
static void stats_if_due(runner_t *r) {
    int64_t now = obx_clock_ms();
    char assigned[ASSIGNED_MAX], worst[300];
    if (r->cfg->stats_interval_s <= 0 || now < r->next_stats_ms)
        return;
    long long done = r->applied + r->rejected + r->duplicates + r->parked + r->compensations;
    double secs = (double)(now - r->last_stats_ms) / 1000.0;
    lag_t l = lag_of(r);
    int64_t age_ms = obx_clock_wall_ms() - r->newest_ts_ms;
    assigned_list(r->assigned, assigned, sizeof assigned);
    if (l.worst)
        snprintf(worst, sizeof worst, "%s:%d", l.worst->topic, l.worst->partition);
    OBX_LOG(OBX_LOG_INFO, "stats",
            "stats", KS("consumer", r->cfg->consumer_name), KI("applied", r->applied),
            KI("rejected", r->rejected), KI("duplicates", r->duplicates), KI("parked", r->parked),
            KI("compensations", r->compensations), KI("batches", r->batches), KI("retries", r->retries),
            KD("rate_per_s", secs > 0 ? (double)(done - r->last_done) / secs : 0),
            KI("partitions", r->assigned ? r->assigned->cnt : 0), KS("assigned", assigned),
            l.known ? (obx_kv_t)KI("lag", l.total) : (obx_kv_t)KS("lag_known", "false"),
            l.known ? (obx_kv_t)KI("max_lag", l.max) : (obx_kv_t)KNONE,
            l.worst ? (obx_kv_t)KS("max_lag_partition", worst) : (obx_kv_t)KNONE,
            r->newest_ts_ms >= 0 ? (obx_kv_t)KI("last_applied_age_s", age_ms > 0 ? age_ms / 1000 : 0)
                                 : (obx_kv_t)KNONE);
    r->last_done = done;
    r->last_stats_ms = now;
    r->next_stats_ms = now + (int64_t)r->cfg->stats_interval_s * 1000;
}

/* What a committed batch moved: each partition's next offset, the newest
 * message timestamp. */
static void track_batch(runner_t *r, const rd_kafka_topic_partition_list_t *offs) {
    for (int i = 0; r->assigned && i < offs->cnt; i++) {
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(r->assigned, offs->elems[i].topic, offs->elems[i].partition);
        if (p)
            p->offset = offs->elems[i].offset;
    }
    for (int i = 0; i < r->batch_n; i++) {
        int64_t ts = rd_kafka_message_timestamp(r->batch[i], NULL);
        if (ts > r->newest_ts_ms)
            r->newest_ts_ms = ts;
    }
}

/* Applies the pending batch, retrying until it commits or a stop signal. */
static int flush_batch(runner_t *r) {
    char err[512];
    tally_t t;

    if (r->batch_n == 0)
        return 0;
    for (int i = 0; i < r->batch_n; i++)
        event_of(r->batch[i], &r->hdrs[i], &r->evs[i]);
    while (!stop_signals) {
        if (!db_ok(r))
            break;
        /* Savepoints cost two round trips per event; batches go without them
         * (one inbox statement for many events) and only a batch holding a
         * poison event is applied again with them, event by event. */
        int rc = apply_batch_once(r, 0, &t, err, sizeof err);
        if (rc == OBX_DEDUP_REDO) {
            OBX_LOG(OBX_LOG_DEBUG, "batch_poison_retry",
                    "batch has a poison event, applying it again with savepoints",
                    KS("detail", err));
            rc = apply_batch_once(r, 1, &t, err, sizeof err);
        }
        if (rc == 0) {
            rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(r->batch_n);
            obx_backoff_reset(&r->backoff);
            r->applied += t.applied;
            r->rejected += t.rejected;
            r->duplicates += t.duplicates;
            r->parked += t.parked;
            r->compensations += t.compensations;
            r->batches++;
            /* Kafka offsets only for lag display: PostgreSQL's are the truth. */
            for (int i = 0; i < r->batch_n; i++) {
                const char *tn = rd_kafka_topic_name(r->batch[i]->rkt);
                rd_kafka_topic_partition_t *p =
                    rd_kafka_topic_partition_list_find(offs, tn, r->batch[i]->partition);
                if (!p)
                    p = rd_kafka_topic_partition_list_add(offs, tn, r->batch[i]->partition);
                p->offset = r->batch[i]->offset + 1;
            }
            rd_kafka_commit(r->rk, offs, 1);
            track_batch(r, offs);
            rd_kafka_topic_partition_list_destroy(offs);
            for (int i = 0; i < r->batch_n; i++)
                rd_kafka_message_destroy(r->batch[i]);
            r->batch_n = 0;
            return 0;
        }
        r->retries++;
        {
            int64_t delay = obx_backoff_next(&r->backoff);
            OBX_LOG(OBX_LOG_WARN, "batch_rolled_back", "batch rolled back, retrying", KS("error", err),
                    KI("messages", r->batch_n), KI("retry_in_ms", delay));
            nap(delay);
            stats_if_due(r);
        }
    }
    /* Stopping: the batch was not committed and will be delivered again. */
    for (int i = 0; i < r->batch_n; i++)
        rd_kafka_message_destroy(r->batch[i]);
    r->batch_n = 0;
    return -1;
}

/* consumer.from = latest, for a partition without a stored offset: its
 * high watermark now, stored at once so that a restart before the first
 * event resumes there instead of at a later end. RD_KAFKA_OFFSET_END when
 * the broker does not say (librdkafka then finds the end itself). */
static int64_t start_at_end(runner_t *r, const char *topic, int32_t partition) {
    char e[512];
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(r->rk, topic, partition, &lo, &hi,
                                                                END_TIMEOUT_MS);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0) {
        OBX_LOG(OBX_LOG_WARN, "partition_end_unknown",
                "no stored offset and the partition's end is unknown, starting at its end as the broker finds it",
                KS("topic", topic), KI("partition", partition), KS("error", rd_kafka_err2str(kerr)));
        return RD_KAFKA_OFFSET_END;
    }
    while (db_ok(r)) {
        if (exec_simple(r->conn, "BEGIN", e, sizeof e) == 0 &&
            obx_dedup_store_offset_tx(r->conn, r->cfg->consumer_name, topic, partition, hi, e, sizeof e) == 0 &&
            exec_simple(r->conn, "COMMIT", e, sizeof e) == 0)
            break;
        {
            char ignored[64];
            int64_t delay = obx_backoff_next(&r->backoff);
            exec_simple(r->conn, "ROLLBACK", ignored, sizeof ignored);
            OBX_LOG(OBX_LOG_WARN, "offset_store_failed", "cannot store the start offset, retrying",
                    KS("topic", topic), KI("partition", partition), KS("error", e), KI("retry_in_ms", delay));
            nap(delay);
        }
    }
    obx_backoff_reset(&r->backoff);
    OBX_LOG(OBX_LOG_INFO, "partition_start_latest",
            "no stored offset, starting at the partition's end (consumer.from = latest)",
            KS("topic", topic), KI("partition", partition), KI("next_offset", hi), KI("skipped", hi - lo));
    return hi;
}

/* Keeps a sorted copy of the assignment (NULL: none) for the stats line. */
static void set_assigned(runner_t *r, const rd_kafka_topic_partition_list_t *parts) {
    if (r->assigned)
        rd_kafka_topic_partition_list_destroy(r->assigned);
    r->assigned = parts ? rd_kafka_topic_partition_list_copy(parts) : NULL;
    if (r->assigned)
        rd_kafka_topic_partition_list_sort(r->assigned, NULL, NULL);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    runner_t *r = opaque;
    char e[512];

    /* Messages already fetched are applied before the assignment changes. */
    flush_batch(r);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            int64_t next = -1;
            while (db_ok(r) && obx_dedup_load_offset(r->conn, r->cfg->consumer_name, parts->elems[i].topic,
                                                     parts->elems[i].partition, &next, e, sizeof e) != 0) {
                OBX_LOG(OBX_LOG_WARN, "offset_load_failed", "cannot load offset, retrying", KS("error", e));
                PQfinish(r->conn);
                r->conn = NULL;
            }
            if (next < 0 && r->cfg->consumer_from == OBX_FROM_LATEST)
                parts->elems[i].offset = start_at_end(r, parts->elems[i].topic, parts->elems[i].partition);
            else
                parts->elems[i].offset = next >= 0 ? next : RD_KAFKA_OFFSET_BEGINNING;
            OBX_LOG(OBX_LOG_INFO, "partition_assigned",
                    "partition assigned", KS("topic", parts->elems[i].topic),
                    KI("partition", parts->elems[i].partition), KI("next_offset", next));
        }
        set_assigned(r, parts);
        rd_kafka_assign(rk, parts);
    } else {
        OBX_LOG(OBX_LOG_INFO, "partitions_revoked", "partitions revoked", KI("count", parts->cnt));
        set_assigned(r, NULL);
        rd_kafka_assign(rk, NULL);
    }
}

/* librdkafka learns a subscribed topic's partitions only with the first
 * assignment, and starts each one's offset query as the assignment is made:
 * a partition whose leader its broker thread had not taken over yet waited
 * for a 500 ms retry timer (three of four partitions, in one start out of
 * five). Holding a handle and asking for the metadata before the group
 * assigns anything makes the leaders known by then. Best effort: a topic
 * that does not exist yet is found by the subscription later. */
static void warm_topics(runner_t *r) {
    r->rkts = obx_xcalloc(r->cfg->consumer_topics_n, sizeof *r->rkts);
    for (size_t i = 0; i < r->cfg->consumer_topics_n; i++) {
        r->rkts[i] = rd_kafka_topic_new(r->rk, r->cfg->consumer_topics[i], NULL);
        if (r->rkts[i])
            obx_rkmeta_fetch(r->rk, r->rkts[i], WARM_TIMEOUT_MS, NULL);
    }
}

static rd_kafka_t *consumer_new(runner_t *r, char *err, size_t errsize) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    int has_group = 0;
    static const char *const forced[][2] = {
        {"enable.auto.commit", "false"}, {"auto.offset.reset", "earliest"}, {"log.queue", "true"},
    };

    /* A default the user may override. A fetch waits at the broker up to
     * fetch.wait.max.ms (librdkafka: 500) for new data, and a partition whose
     * start offset was found after it went out waits for it to return: after
     * an assignment, two of four partitions once started 1 s late. */
    if (rd_kafka_conf_set(conf, "fetch.wait.max.ms", "100", err, errsize) != RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < r->cfg->kafka_n; i++) {
        has_group |= strcmp(r->cfg->kafka[i].key, "group.id") == 0;
        if (rd_kafka_conf_set(conf, r->cfg->kafka[i].key, r->cfg->kafka[i].value, err, errsize) != RD_KAFKA_CONF_OK)
            goto fail;
    }
    if (!has_group && rd_kafka_conf_set(conf, "group.id", r->cfg->consumer_name, err, errsize) != RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < sizeof forced / sizeof forced[0]; i++)
        if (rd_kafka_conf_set(conf, forced[i][0], forced[i][1], err, errsize) != RD_KAFKA_CONF_OK)
            goto fail;
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_log_cb(conf, obx_rklog_cb);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsize); /* takes conf on success */
    if (!rk)
        goto fail;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_set_log_queue(rk, NULL);
    return rk;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static void periodic(runner_t *r) {
    int64_t now = obx_clock_ms();
    stats_if_due(r);
    if (r->cfg->inbox_cleanup_interval_s > 0 && now >= r->next_cleanup_ms && db_ok(r)) {
        char err[512];
        const obx_config_t *c = r->cfg;
        long n = obx_dedup_cleanup(r->conn, c->consumer_name, c->inbox_retention_s, c->inbox_cleanup_batch, err,
                                   sizeof err);
        long dead = n < 0 || c->inbox_dead_letters_retention_s == 0
                        ? 0 : obx_dedup_cleanup_dead_letters(r->conn, c->consumer_name, c->inbox_dead_letters_retention_s,
                                                             c->inbox_cleanup_batch, err, sizeof err);
        long gone = n < 0 || dead < 0 || c->inbox_gone_consumer_s == 0
                        ? 0 : obx_dedup_forget_gone(r->conn, c->consumer_name, c->inbox_gone_consumer_s,
                                                    c->inbox_cleanup_batch, err, sizeof err);
        if (n < 0 || dead < 0 || gone < 0)
            OBX_LOG(OBX_LOG_WARN, "inbox_cleanup_failed", "inbox cleanup failed", KS("error", err));
        else if (n + dead + gone > 0)
            OBX_LOG(OBX_LOG_INFO, "inbox_cleanup", "inbox cleanup", KI("deleted", n),
                    KI("retention_s", c->inbox_retention_s), KI("dead_letters_deleted", dead),
                    KI("gone_consumers_rows_deleted", gone));
        r->next_cleanup_ms = now + (int64_t)r->cfg->inbox_cleanup_interval_s * 1000;
    }
}

/* Polls messages into the batch until it is full, or batch_timeout_ms
 * after its first message, or 100 ms pass with none. */
static void fill_batch(runner_t *r) {
    int64_t deadline = 0;
    while (!stop_signals && r->batch_n < r->cfg->consumer_batch_size) {
        int64_t wait = deadline ? deadline - obx_clock_ms() : 100;
        rd_kafka_message_t *m;
        if (deadline && wait <= 0)
            break;
        m = rd_kafka_consumer_poll(r->rk, (int)(wait > 0 ? wait : 0));
        if (!m) {
            if (!deadline)
                break;
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                OBX_LOG(OBX_LOG_WARN, "kafka_consume_error",
                        "kafka consume error", KS("error", rd_kafka_message_errstr(m)));
            rd_kafka_message_destroy(m);
            continue;
        }
        r->batch[r->batch_n++] = m;
        if (!deadline)
            deadline = obx_clock_ms() + r->cfg->consumer_batch_timeout_ms;
    }
}

static void subscribe(runner_t *r) {
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)r->cfg->consumer_topics_n);
    for (size_t i = 0; i < r->cfg->consumer_topics_n; i++)
        rd_kafka_topic_partition_list_add(topics, r->cfg->consumer_topics[i], RD_KAFKA_PARTITION_UA);
    warm_topics(r);
    rd_kafka_subscribe(r->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
}

static int run(obx_config_t *cfg, const obx_handler_t *h) {
    runner_t r;
    char err[512];
    int rc = 1;

    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.h = h;
    r.newest_ts_ms = -1;
    r.batch = obx_xcalloc((size_t)cfg->consumer_batch_size, sizeof *r.batch);
    r.evs = obx_xcalloc((size_t)cfg->consumer_batch_size, sizeof *r.evs);
    r.hdrs = obx_xcalloc((size_t)cfg->consumer_batch_size, sizeof *r.hdrs);
    r.status = obx_xcalloc((size_t)cfg->consumer_batch_size, sizeof *r.status);
    obx_backoff_init(&r.backoff, 100, 10000, (uint64_t)obx_clock_ms() ^ (uint64_t)getpid());
    r.last_stats_ms = obx_clock_ms();
    r.next_stats_ms = r.last_stats_ms + (int64_t)cfg->stats_interval_s * 1000;
    r.next_cleanup_ms = r.last_stats_ms + 1000;
    r.rk = consumer_new(&r, err, sizeof err);
    if (!r.rk) {
        OBX_LOG(OBX_LOG_ERROR, "kafka_consumer_failed", "kafka consumer", KS("error", err));
        goto out;
    }
    if (!db_ok(&r))
        goto out;
    subscribe(&r);
    OBX_LOG(OBX_LOG_INFO, "consumer_starting", "consumer starting", KS("consumer", cfg->consumer_name),
            KS("topics", cfg->consumer_topics[0]), KI("batch_size", cfg->consumer_batch_size));
    while (!stop_signals) {
        fill_batch(&r);
        flush_batch(&r);
        periodic(&r);
        if (reload_signals) {
            reload_signals = 0;
            obx_config_reload_file(r.cfg);
        }
    }
    OBX_LOG(OBX_LOG_INFO, "consumer_stopping", "consumer stopping", KS("consumer", cfg->consumer_name));
    rc = 0;
out:
    if (r.rk) {
        flush_batch(&r);
        if (stop_signals < 2)
            rd_kafka_consumer_close(r.rk);
        for (size_t i = 0; r.rkts && i < cfg->consumer_topics_n; i++)
            if (r.rkts[i])
                rd_kafka_topic_destroy(r.rkts[i]);
        free(r.rkts);
        rd_kafka_destroy(r.rk);
    }
    set_assigned(&r, NULL);
    for (int i = 0; i < r.batch_n; i++)
        rd_kafka_message_destroy(r.batch[i]);
    OBX_LOG(OBX_LOG_INFO, "consumer_stopped",
            "consumer stopped", KS("consumer", cfg->consumer_name), KI("applied", r.applied),
            KI("rejected", r.rejected), KI("duplicates", r.duplicates), KI("parked", r.parked),
            KI("compensations", r.compensations));
    free(r.batch);
    free(r.evs);
    free(r.hdrs);
    free(r.status);
    PQfinish(r.conn);
    return rc;
}

/* --check, the inbox part: each table the dedup module writes, with the
 * privileges its statements need. Returns the number of failed checks. */
static int check_inbox(PGconn *conn) {
    static const char *const tables[][2] = {
        {"processed_events", "SELECT,INSERT,UPDATE,DELETE"},
        {"consumer_offsets", "SELECT,INSERT,UPDATE,DELETE"},
        {"dead_letters", "INSERT,SELECT,DELETE"},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const char *params[2] = {tables[i][0], tables[i][1]};
        PGresult *res = PQexecParams(conn,
            "SELECT to_regclass($1) IS NOT NULL,"
            " (SELECT string_agg(p, ', ') FROM unnest(string_to_array($2, ',')) p"
            "  WHERE to_regclass($1) IS NOT NULL AND NOT has_table_privilege(to_regclass($1)::oid, p))",
            2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            char e[512];
            obx_pgconn_error(e, sizeof e, PQresultErrorMessage(res));
            printf("inbox: FAILED: table %s: %s\n", tables[i][0], e);
            failed++;
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            printf("inbox: FAILED: table %s does not exist (outbox-relay migrate or schema/002_inbox.sql "
                   "creates it)\n", tables[i][0]);
            failed++;
        } else if (!PQgetisnull(res, 0, 1)) {
            printf("inbox: FAILED: table %s: %s not granted to %s\n", tables[i][0], PQgetvalue(res, 0, 1),
                   PQuser(conn));
            failed++;
        } else {
            printf("inbox: table %s ok, %s granted\n", tables[i][0], tables[i][1]);
        }
        PQclear(res);
    }
    return failed;
}

/* --check, the Kafka part: the brokers answer, and each subscribed topic
 * exists. All topics' metadata in one request: a request naming a topic
 * may create it (a broker or mock with auto-creation on). A topic that
 * the principal may not Describe is not listed either. Returns the number
 * of failed checks. */
static int check_kafka(obx_config_t *cfg) {
    runner_t r;
    char err[512];
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t kerr;
    int failed = 0;

    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.rk = consumer_new(&r, err, sizeof err);
    if (!r.rk) {
        printf("kafka: FAILED: %s\n", err);
        return 1;
    }
    kerr = rd_kafka_metadata(r.rk, 1, NULL, &md, CHECK_TIMEOUT_MS);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        printf("kafka: FAILED: cannot reach the brokers: %s\n", rd_kafka_err2str(kerr));
        rd_kafka_destroy(r.rk);
        return 1;
    }
    printf("kafka: %d broker(s) reachable\n", md->broker_cnt);
    for (size_t i = 0; i < cfg->consumer_topics_n; i++) {
        const char *tn = cfg->consumer_topics[i];
        const rd_kafka_metadata_topic_t *mt = NULL;
        for (int j = 0; j < md->topic_cnt && !mt; j++)
            if (strcmp(md->topics[j].topic, tn) == 0)
                mt = &md->topics[j];
        if (mt && mt->err == RD_KAFKA_RESP_ERR_NO_ERROR && mt->partition_cnt > 0) {
            printf("topic %s: ok, %d partition(s)\n", tn, mt->partition_cnt);
            continue;
        }
        failed++;
        if (!mt || mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            printf("topic %s: FAILED: the topic does not exist (or Describe on it is not granted)\n", tn);
        else if (mt->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
            printf("topic %s: FAILED: not authorized (grant Describe and Read on the topic)\n", tn);
        else
            printf("topic %s: FAILED: %s\n", tn, mt->err ? rd_kafka_err2str(mt->err) : "no partitions");
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(r.rk);
    return failed;
}

/* --check: one line per check on stdout, then "check: ok" (0) or
 * "check: FAILED" (1). Every check runs, so that one run names every
 * problem. */
static int check(obx_config_t *cfg) {
    PGconn *conn;
    int failed = 0;

    printf("config: %s ok (consumer %s, %zu topic(s), from %s, %zu kafka setting(s))\n", cfg->path,
           cfg->consumer_name, cfg->consumer_topics_n,
           cfg->consumer_from == OBX_FROM_LATEST ? "latest" : "earliest", cfg->kafka_n);
    conn = obx_pgconn_open(cfg->pg_conninfo, cfg->consumer_name);
    if (PQstatus(conn) != CONNECTION_OK) {
        char e[512];
        obx_pgconn_error(e, sizeof e, PQerrorMessage(conn));
        printf("postgres: FAILED: %s\n", e);
        failed++;
    } else {
        printf("postgres: connected to %s as %s (server %d)\n", PQdb(conn), PQuser(conn),
               PQserverVersion(conn));
        failed += check_inbox(conn);
    }
    PQfinish(conn);
    fflush(stdout);
    failed += check_kafka(cfg);
    printf("%s\n", failed ? "check: FAILED" : "check: ok");
    return failed ? 1 : 0;
}

int obx_runner_main(int argc, char **argv, const char *program, const obx_handler_t *h) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    obx_config_t cfg;
    char err[1024];
    int opt, rc, do_check = 0;

    obx_log_set_component(program);
    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'k': do_check = 1; break;
        case 'h':
            printf("Usage: %s -c FILE [--check]\n"
                   "\n"
                   "Applies events from Kafka exactly once per event id (outbox-relay dedup module).\n"
                   "\n"
                   "  -c, --config FILE  configuration (postgres, kafka, consumer, inbox, log groups)\n"
                   "      --check        validate the config, connect to PostgreSQL and check the inbox\n"
                   "                     tables and privileges, connect to Kafka and check that every\n"
                   "                     subscribed topic exists; one line per check, then exit 0 or 1\n"
                   "  -h, --help         this help\n"
                   "  -V, --version      print the version\n"
                   "\n"
                   "Signals: SIGTERM/SIGINT stop gracefully (a second one exits at once),\n"
                   "SIGHUP reloads log level and intervals.\n"
                   "Exit codes: 0 ok, 1 runtime error or a failed check, 2 bad config or usage.\n",
                   program);
            return 0;
        case 'V': printf("%s %s (librdkafka %s)\n", program, OBX_VERSION, rd_kafka_version_str()); return 0;
        default: return 2;
        }
    }
    if (!path || optind < argc) {
        fprintf(stderr, "%s: %s (see --help)\n", program,
                path ? "unexpected argument" : "-c FILE is required");
        return 2;
    }
    if (obx_config_load(path, OBX_PROG_CONSUMER, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        return 2;
    }
    obx_log_configure((obx_log_level_t)cfg.log_level, (obx_log_format_t)cfg.log_format);
    if (do_check) {
        rc = check(&cfg);
        obx_config_free(&cfg);
        obx_log_clear_secrets();
        return rc;
    }
    obx_signals_install(on_signal);
    rc = run(&cfg, h);
    obx_config_free(&cfg);
    obx_log_clear_secrets();
    return rc;
}
