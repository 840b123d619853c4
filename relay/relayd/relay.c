/* The relay's loop: one thread, one poll, nothing blocks for long.
 *
 * Each turn (tick, then wait_and_dispatch) serves librdkafka's events
 * (delivery reports, logs, errors: on_delivery), acts on whatever is due,
 * then polls the signal pipe, librdkafka's event pipe and the PostgreSQL
 * sessions until the next deadline (poll_timeout), and hands each result to
 * its operation's handler (on_result). A third session, the leader's
 * retention (retention.h), runs its own queries beside them.
 *
 * A row's way: a claim (on the claiming session, asynchronous) returns
 * unsent rows in id order; scan.h decides which ids each claim asks for, so
 * that nothing is missed and keys stay in order. Each row is routed, its
 * partition chosen, and handed to the gate (gate.h), which sends it, holds
 * it (a cold partition: one message at a time until an acknowledgement) or
 * skips it (a stalled partition: a later rescan finds it). A delivery report
 * queues the id to be marked (the marking session, in batches), or the
 * failure to be recorded; a row is never marked before the broker
 * acknowledged it (G1).
 *
 * Idle: when a rescan finds nothing, the relay polls a little longer
 * (busy_poll_ms), then sets the waiting flag that makes writers NOTIFY,
 * rechecks once, and sleeps on LISTEN (idle_t; DESIGN.md 2).
 *
 * Failures: any error result or a broken session drops both sessions and
 * the lock (disconnect), and the relay connects again with backoff; a fatal
 * producer error replaces the producer (recreate_producer). Unmarked rows
 * are then published again: duplicates, never losses. */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "clock.h"
#include "gate.h"
#include "health.h"
#include "idset.h"
#include "headers.h"
#include "log.h"
#include "pgconn.h"
#include "outbox.h"
#include "pace.h"
#include "producer.h"
#include "retention.h"
#include "route.h"
#include "scan.h"
#include "sdnotify.h"
#include "signals.h"
#include "xalloc.h"

#define MARK_MAX 10000 /* ids per UPDATE */
/* librdkafka 2.3.0 (PR 4438) stopped raising a fatal "sequence
 * desynchronization" after possibly persisted errors. */
#define LIBRDKAFKA_SEQ_FIX 0x02030000
/* Acknowledged ids wait for the rest of their batch's acknowledgements
 * (they arrive in one group per broker) for at most this long before they
 * are marked: following writers at 5,000 events/s, marks went out 2 per
 * claim, 6 rows each, and each was a transaction of its own. */
#define MARK_WAIT_MS 2
#define NOT_AUTHORIZED_LOG_MS 10000 /* a topic_not_authorized line per topic at most this often */
#define NOT_AUTHORIZED_TOPICS 16
#define HEALTH_TICK_MS 1000 /* health record, systemd status and watchdog ping, at most this far apart */

typedef struct batch batch_t;

/* One produced row; its strings point into batch->res. While the gate
 * holds it, it owns hdrs; once produced, librdkafka does. */
typedef struct {
    batch_t *batch;
    int64_t id;
    int row;
    int attempts;
    const char *topic;       /* the gate's copy */
    int32_t partition;
    rd_kafka_headers_t *hdrs;
} msg_t;

struct batch {
    PGresult *res;
    int remaining;   /* produced, not yet reported */
    msg_t *msgs;
};

typedef struct {
    int64_t id;
    int park;
    char event_id[40];
    char error[256];
} fail_t;

typedef enum { OP_NONE, OP_CLAIM, OP_MARK, OP_FAIL, OP_WAITING, OP_STATS, OP_HORIZON, OP_CONFIRM } op_t;

/* Idle protocol (DESIGN.md 2): set the waiting flag, re-check, sleep on
 * LISTEN; clear the flag before draining again. Within busy_poll_ms of the
 * last row it polls instead (IDLE_POLL): writers that keep coming would
 * otherwise pay a NOTIFY each time the relay catches up with them. */
typedef enum { IDLE_RUN, IDLE_POLL, IDLE_RECHECK, IDLE_SLEEP, IDLE_CLEAR } idle_t;

#define HORIZON_REFRESH_MS 20 /* newest horizon asked for while following writers, at most this often */

/* The relay's state, in named parts. The sessions come and go together
 * (disconnect); a relay without them, or without the leader lock, keeps
 * its acknowledgements and waits. */
typedef struct {
    obx_config_t *cfg;
    obx_producer_t *producer;
    obx_gate_t *gate;        /* which messages may go to which partition now */
    obx_retention_t *retention; /* the leader's deletes of old sent rows, on a session of their own */
    obx_backoff_t backoff;   /* between reconnects */

    /* The claiming session: claims, LISTEN, the leader lock, the idle
     * protocol, the horizon and stats queries. Two sessions so that
     * PostgreSQL serves claims and marks on both cores. */
    PGconn *conn;
    op_t op;                 /* query pending on conn */
    int leader;
    int op_waiting;          /* value sent by the pending waiting query */
    int noflag_warned;
    int64_t reconnect_at, lead_retry_at;

    /* The marking session: marks rows sent, records failed attempts. */
    PGconn *mconn;
    op_t mop;                /* query pending on mconn */
    size_t op_mark_n;        /* ids in the pending mark */

    /* The scan position (scan.h: cursor, horizon, low water; low water
     * spares rescans a walk over every sent row, the outbox having no index
     * on sent_at, which keeps marks HOT) and the pending claim. */
    obx_scan_t scan;
    obx_scan_claim_t claim;  /* the pending claim (op == OP_CLAIM) */
    int64_t retry_at;        /* earliest rescan after a failed or deferred row */

    /* The horizon queries (scan.h says what the horizon is for). */
    int hz_ok;               /* they could be prepared */
    int hz_want;             /* a claim ran past the horizon: find a newer one */
    int64_t hz_asked_ms;
    int64_t hz_v;            /* candidate, valid once hz_w have ended */
    char *hz_w;              /* their virtual transaction ids, text[] literal */
    int64_t hz_retry_at;
    int hz_retry_ms;

    /* The idle protocol and the pace of claims while following writers. */
    idle_t idle;             /* written by set_idle only */
    int64_t sleep_until;     /* fallback poll while idle; next busy poll */
    int pause_ms;            /* the last busy-poll pause (obx_pace_next) */
    int64_t last_rows_ms;    /* when a claim last found rows */

    /* Rows out: handed to the gate or produced, and what came back. Rows
     * handed to the gate and not yet marked sent or given up on are owned:
     * a rescan that runs while a stalled partition has rows out reads them
     * again, and must not publish them twice. Ids marked sent stay owned
     * until a claim sent after their mark returns (a claim sent before the
     * mark committed still sees them unsent): retire[0..retire_sent) were
     * marked before the pending claim. */
    long inflight;           /* rows produced or held by the gate, not yet reported */
    obx_idset_t owned;
    int64_t *retire;
    size_t retire_n, retire_cap, retire_sent;
    int64_t *acks;           /* acknowledged, to be marked */
    size_t acks_n, acks_cap;
    int64_t acks_since;      /* when the unmarked acks started waiting */
    fail_t *fails;           /* failed attempts, to be recorded */
    size_t fails_n, fails_cap;
    int blocked;             /* on_failure=block and a row failed */
    int fatal;               /* the producer must be recreated */
    /* topic_not_authorized lines: when each topic last logged one */
    struct {
        char topic[256];
        int64_t at;
    } denied[NOT_AUTHORIZED_TOPICS];

    /* Stopping. */
    int stopping;
    int exit_code;
    int64_t stop_deadline;

    /* Counters for the stats line. */
    long long published, marked, parked, failed, claimed, reconnects, rescans, skipped, deferred;
    long long last_published;
    int64_t last_stats_ms, stats_at;

    /* Health (health.h): what the record and systemd are told once a tick. */
    obx_health_watchdog_t *watchdog; /* ends the process when the loop stops turning */
    int64_t pg_answer_ms;    /* PostgreSQL's last answer */
    int64_t pg_waiting_since; /* a query is pending and nothing was answered since */
    int64_t kafka_up_ms;     /* a broker last up or acknowledging */
    int64_t health_at;
    int64_t health_tick_ms;
    int sd_watchdog;         /* systemd expects WATCHDOG=1 pings */
    char sd_status[64];      /* the last STATUS= sent */
    int health_file_failing; /* the failure is logged once, not every tick */
} relay_t;

static const char *const idle_names[] = {[IDLE_RUN] = "run", [IDLE_POLL] = "poll", [IDLE_RECHECK] = "recheck",
                                         [IDLE_SLEEP] = "sleep", [IDLE_CLEAR] = "clear"};

/* The one writer of r->idle: its transitions are the idle protocol's trace. */
static void set_idle(relay_t *r, idle_t to) {
    if (r->idle == to)
        return;
    OBX_LOG(OBX_LOG_DEBUG, "idle_state", "idle state", KS("from", idle_names[r->idle]), KS("to", idle_names[to]));
    r->idle = to;
}

static int sigpipe_fds[2] = {-1, -1};

static void on_signal(int sig) {
    unsigned char c = (unsigned char)sig;
    int saved = errno;
    if (write(sigpipe_fds[1], &c, 1) < 0) {
        /* The pipe is full: a signal is already pending, nothing to add. */
    }
    errno = saved;
}

static void push_ack(relay_t *r, int64_t id) {
    if (r->acks_n == 0)
        r->acks_since = obx_clock_ms();
    if (r->acks_n == r->acks_cap) {
        r->acks_cap = r->acks_cap ? r->acks_cap * 2 : 1024;
        r->acks = obx_xrealloc(r->acks, r->acks_cap * sizeof *r->acks);
    }
    r->acks[r->acks_n++] = id;
}

static int is_permanent(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

/* The broker refuses the relay's principal (a missing ACL): the deployment's
 * fault, not the row's. The row is not failed, it holds its place (issue 14). */
static int is_unauthorized(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED;
}

/* A row of topic waits for an ACL: rescan after poll_interval_ms (the
 * producer asks for the topic's metadata again, so publishing resumes by
 * itself once the ACL exists), and say so at most once per
 * NOT_AUTHORIZED_LOG_MS per topic. */
static void not_authorized(relay_t *r, const char *topic, rd_kafka_resp_err_t err, int64_t id) {
    int64_t now = obx_clock_ms();
    int slot = 0;

    r->deferred++;
    obx_scan_stop(&r->scan);
    r->retry_at = now + r->cfg->poll_interval_ms;
    for (int i = 0; i < NOT_AUTHORIZED_TOPICS; i++) {
        if (strcmp(r->denied[i].topic, topic) == 0) {
            slot = i;
            break;
        }
        if (r->denied[i].at < r->denied[slot].at)
            slot = i; /* the least recently logged, if topic has no slot */
    }
    if (strcmp(r->denied[slot].topic, topic) == 0 && r->denied[slot].at != 0 &&
        now - r->denied[slot].at < NOT_AUTHORIZED_LOG_MS)
        return;
    snprintf(r->denied[slot].topic, sizeof r->denied[slot].topic, "%s", topic);
    r->denied[slot].at = now;
    OBX_LOG(OBX_LOG_ERROR, "topic_not_authorized",
            "the broker refuses the relay access to the topic: its rows wait, none is failed",
            KS("topic", topic), KS("error", rd_kafka_err2name(err)), KI("id", id),
            KS("remedy", err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED
                             ? "grant the relay's principal IdempotentWrite on the cluster"
                             : "grant the relay's principal Write and Describe on the topic"));
}

/* A row could not be published: queue the attempt (and maybe the parking)
 * for the database, log it with its event id. */
static void row_failed(relay_t *r, int64_t id, const char *event_id, int attempts,
                       int permanent, const char *error) {
    fail_t *f;
    int park = r->cfg->on_failure == OBX_FAIL_PARK &&
               (permanent || attempts + 1 >= r->cfg->max_attempts);

    if (r->fails_n == r->fails_cap) {
        r->fails_cap = r->fails_cap ? r->fails_cap * 2 : 16;
        r->fails = obx_xrealloc(r->fails, r->fails_cap * sizeof *r->fails);
    }
    f = &r->fails[r->fails_n++];
    f->id = id;
    f->park = park;
    snprintf(f->event_id, sizeof f->event_id, "%s", event_id);
    snprintf(f->error, sizeof f->error, "%s", error);
    r->failed++;
    if (park) {
        r->parked++;
        OBX_LOG(OBX_LOG_ERROR, "row_parked", "event parked", KS("event_id", event_id), KI("id", id),
                KI("attempts", attempts + 1), KS("error", error));
    } else {
        OBX_LOG(r->cfg->on_failure == OBX_FAIL_BLOCK ? OBX_LOG_ERROR : OBX_LOG_WARN,
                r->cfg->on_failure == OBX_FAIL_BLOCK ? "publish_blocked" : "publish_failed",
                r->cfg->on_failure == OBX_FAIL_BLOCK ? "publish failed, blocking" : "publish failed",
                KS("event_id", event_id), KI("id", id), KI("attempts", attempts + 1),
                KS("error", error));
        if (r->cfg->on_failure == OBX_FAIL_BLOCK) {
            r->blocked = 1;
            obx_scan_stop(&r->scan);
        }
    }
    r->retry_at = obx_clock_ms() + r->cfg->poll_interval_ms;
}

static void batch_release(batch_t *b) {
    if (--b->remaining > 0)
        return;
    PQclear(b->res);
    free(b->msgs);
    free(b);
}

/* A partition that skipped rows moves again: rescan as soon as the other
 * partitions' work allows, rather than after the pause that followed the
 * skip or at the end of the forward scan (a second or more once a frozen
 * leader thaws). */
static void resume_skipped(relay_t *r) {
    obx_scan_stop(&r->scan);
    if (r->idle == IDLE_POLL)
        r->sleep_until = obx_clock_ms();
}

static void drop_held(void *ctx, void *msg);

static void on_delivery(void *ctx, void *opaque, rd_kafka_resp_err_t err, int32_t partition,
                        int64_t offset) {
    relay_t *r = ctx;
    msg_t *m = opaque;
    int64_t now = obx_clock_ms();
    int gate;

    (void)partition; /* the one the relay chose: m->partition */
    (void)offset;
    r->inflight--;
    gate = obx_gate_report(r->gate, m->topic, m->partition, err == RD_KAFKA_RESP_ERR_NO_ERROR, now);
    if (gate < 0)
        OBX_LOG(OBX_LOG_ERROR, "unexpected_delivery_report",
                "delivery report for a message the gate did not let through",
                KI("id", m->id), KS("topic", m->topic), KI("partition", m->partition));
    else if (gate > 0 && !r->stopping)
        resume_skipped(r);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->published++;
        r->kafka_up_ms = now;
        push_ack(r, m->id);
        if (r->blocked && r->cfg->on_failure == OBX_FAIL_BLOCK) {
            r->blocked = 0;
            OBX_LOG(OBX_LOG_INFO, "unblocked", "unblocked", KI("id", m->id));
        }
    } else if (err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT ||
               err == RD_KAFKA_RESP_ERR__FATAL || r->fatal ||
               obx_producer_fatal(r->producer, NULL, 0)) {
        /* Not the row's fault: it stays unsent and is claimed again. */
        obx_idset_del(&r->owned, m->id);
        OBX_LOG(OBX_LOG_DEBUG, "delivery_abandoned", "delivery abandoned", KI("id", m->id),
                KS("error", rd_kafka_err2name(err)));
    } else if (is_unauthorized(err)) {
        /* A missing ACL: the row stays unsent and is claimed again. The
         * producer is replaced as after a fatal error: librdkafka would send
         * the partition's next messages after this one failed, and once the
         * ACL exists they would go out ahead of it. */
        obx_idset_del(&r->owned, m->id);
        if (!r->stopping)
            not_authorized(r, m->topic, err, m->id);
        if (!r->fatal) {
            r->fatal = 1;
            obx_gate_drop_held(r->gate, drop_held, r);
            obx_producer_purge(r->producer);
        }
    } else {
        char msg[256], eid[OBX_PGBIN_UUID_SIZE];
        obx_outbox_row_event_id(m->batch->res, m->row, eid);
        snprintf(msg, sizeof msg, "%s: %s", rd_kafka_err2name(err), rd_kafka_err2str(err));
        row_failed(r, m->id, eid, m->attempts, is_permanent(err), msg);
    }
    batch_release(m->batch);
}

/* Hands one admitted message to librdkafka. Returns 0, or -1 when the
 * producer cannot take it now (full, fatal): the row stays unsent. */
static int send_msg(relay_t *r, msg_t *m) {
    obx_row_t row;
    rd_kafka_resp_err_t kerr;
    char err[256];

    obx_outbox_row(m->batch->res, m->row, &row);
    kerr = obx_producer_send(r->producer, m->topic, m->partition, row.aggregate_id,
                             strlen(row.aggregate_id), row.payload, row.payload_len, m->hdrs, m);
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR) {
        m->hdrs = NULL; /* librdkafka's now */
        return 0;
    }
    obx_gate_report(r->gate, m->topic, m->partition, 0, obx_clock_ms());
    r->inflight--;
    rd_kafka_headers_destroy(m->hdrs);
    m->hdrs = NULL;
    if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL || kerr == RD_KAFKA_RESP_ERR__FATAL ||
        is_unauthorized(kerr)) {
        /* Not the row's fault: claim it again later. */
        obx_idset_del(&r->owned, m->id);
        if (is_unauthorized(kerr))
            not_authorized(r, m->topic, kerr, row.id);
        else
            OBX_LOG(OBX_LOG_WARN, "produce_deferred",
                    "produce deferred", KI("id", row.id), KS("error", rd_kafka_err2name(kerr)));
        batch_release(m->batch);
        return -1;
    }
    snprintf(err, sizeof err, "%s: %s", rd_kafka_err2name(kerr), rd_kafka_err2str(kerr));
    row_failed(r, row.id, row.event_id, row.attempts, is_permanent(kerr), err);
    batch_release(m->batch);
    return 0;
}

/* A held message that never went out: its row is claimed again. */
static void drop_held(void *ctx, void *msg) {
    relay_t *r = ctx;
    msg_t *m = msg;
    r->inflight--;
    obx_idset_del(&r->owned, m->id);
    rd_kafka_headers_destroy(m->hdrs);
    m->hdrs = NULL;
    batch_release(m->batch);
}

/* Produces what the gate lets go after delivery reports. A held message
 * the producer refuses would let later rows of its partition overtake it:
 * everything is then published again from a rescan by a new producer. */
static void release_held(relay_t *r) {
    msg_t *m;
    while (!r->fatal && (m = obx_gate_release(r->gate, obx_clock_ms())) != NULL) {
        int64_t id = m->id; /* send_msg may free m with its batch */
        if (send_msg(r, m) != 0) {
            OBX_LOG(OBX_LOG_ERROR, "held_message_refused",
                    "held message refused by the producer, recreating it", KI("id", id));
            r->fatal = 1;
            obx_gate_drop_held(r->gate, drop_held, r);
            obx_producer_purge(r->producer);
        }
    }
}

/* This claim was sent after the marks of retire[0..retire_sent) committed:
 * those rows are done. */
static void retire_marked(relay_t *r) {
    if (r->retire_sent == 0)
        return; /* retire may still be NULL */
    for (size_t i = 0; i < r->retire_sent; i++)
        obx_idset_del(&r->owned, r->retire[i]);
    memmove(r->retire, r->retire + r->retire_sent, (r->retire_n - r->retire_sent) * sizeof *r->retire);
    r->retire_n -= r->retire_sent;
    r->retire_sent = 0;
}

/* Routes one row and hands it to the gate. Returns 1 when the gate skipped
 * it, -1 when the row (and so the rest of the batch) must wait: the topic's
 * partitions are not known yet, the broker refuses the relay the topic (a
 * missing ACL), or the producer is full; else 0. */
static int produce_row(relay_t *r, batch_t *b, msg_t *m, const obx_row_t *row) {
    char topic[256], err[512];
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    int rc;

    if (!row->aggregate_id || !*row->aggregate_id) {
        row_failed(r, row->id, row->event_id, row->attempts, 1,
                   "aggregate_id is NULL or empty (it is the Kafka key)");
        return 0;
    }
    if (obx_route_resolve(r->cfg->routes, r->cfg->routes_n, r->cfg->topic_pattern, row->topic,
                          row->aggregate_type, row->event_type, topic, sizeof topic, err,
                          sizeof err) != 0) {
        row_failed(r, row->id, row->event_id, row->attempts, 1, err);
        return 0;
    }
    rc = obx_producer_partition(r->producer, topic, row->aggregate_id, strlen(row->aggregate_id),
                                &m->partition, &kerr);
    if (rc > 0) {
        OBX_LOG(OBX_LOG_WARN, "topic_partitions_unknown",
                "produce deferred: the topic's partitions are not known yet", KI("id", row->id),
                KS("topic", topic), KS("error", rd_kafka_err2name(kerr)));
        r->deferred++;
        r->retry_at = obx_clock_ms() + r->cfg->poll_interval_ms;
        return -1;
    }
    if (rc < 0 && is_unauthorized(kerr)) {
        /* Held like unknown partitions: the rest of the batch waits. */
        not_authorized(r, topic, kerr, row->id);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, sizeof err, "%s: %s (topic %s)", rd_kafka_err2name(kerr), rd_kafka_err2str(kerr), topic);
        row_failed(r, row->id, row->event_id, row->attempts, is_permanent(kerr), err);
        return 0;
    }
    m->topic = obx_gate_topic(r->gate, topic);
    if (obx_headers_build(row, &m->hdrs, err, sizeof err) != 0) {
        row_failed(r, row->id, row->event_id, row->attempts, 1, err);
        return 0;
    }
    switch (obx_gate_offer(r->gate, m->topic, m->partition, m, obx_clock_ms())) {
    case OBX_GATE_SKIP:
        /* Its partition is stalled: a later scan finds the row. */
        rd_kafka_headers_destroy(m->hdrs);
        m->hdrs = NULL;
        r->skipped++;
        return 1;
    case OBX_GATE_HOLD:
        obx_idset_add(&r->owned, row->id);
        b->remaining++;
        r->inflight++;
        return 0;
    case OBX_GATE_SEND:
        break;
    }
    obx_idset_add(&r->owned, row->id);
    b->remaining++;
    r->inflight++;
    return send_msg(r, m);
}

/* Produces the rows of one claim result in id order; returns how many it
 * skipped (their partition stalled, or already out). */
static int produce_batch(relay_t *r, PGresult *res) {
    int n = PQntuples(res), skipped = 0;
    batch_t *b = obx_xcalloc(1, sizeof *b);

    b->res = res;
    b->msgs = obx_xcalloc((size_t)n, sizeof *b->msgs);
    b->remaining = 1; /* held by this function until the loop ends */
    for (int i = 0; i < n; i++) {
        obx_row_t row;
        msg_t *m = &b->msgs[i];
        int rc;

        obx_outbox_row(res, i, &row);
        m->batch = b;
        m->id = row.id;
        m->row = i;
        m->attempts = row.attempts;
        /* Already out (a rescan beside a stalled partition): not twice. */
        rc = obx_idset_has(&r->owned, row.id) ? 1 : produce_row(r, b, m, &row);
        if (rc > 0)
            skipped++;
        if (rc < 0) {
            obx_scan_stop(&r->scan);
            break;
        }
        obx_scan_advance(&r->scan, row.id);
        if (r->blocked) {
            /* Strict order: nothing after a failed row is produced. */
            obx_scan_stop(&r->scan);
            break;
        }
    }
    batch_release(b);
    return skipped;
}

static void disconnect(relay_t *r, const char *why) {
    int64_t delay = obx_backoff_next(&r->backoff);
    if (r->conn) {
        OBX_LOG(OBX_LOG_ERROR, "postgres_connection_lost", "postgres connection lost", KS("error", why),
                KI("retry_in_ms", delay), KI("inflight", r->inflight));
        PQfinish(r->conn);
        r->conn = NULL;
        if (r->mconn)
            PQfinish(r->mconn);
        r->mconn = NULL;
    } else {
        OBX_LOG(OBX_LOG_ERROR, "postgres_connect_failed", "postgres connect failed", KS("error", why),
                KI("retry_in_ms", delay));
    }
    r->leader = 0;
    r->op = OP_NONE;
    r->mop = OP_NONE;
    obx_scan_lost(&r->scan);
    free(r->hz_w);
    r->hz_w = NULL;
    set_idle(r, IDLE_RUN);
    r->reconnect_at = obx_clock_ms() + delay;
}

static void try_connect(relay_t *r) {
    char err[512];
    int lead;

    r->conn = obx_outbox_connect(r->cfg, "outbox-relay", OBX_SESSION_CLAIM, err, sizeof err);
    if (!r->conn) {
        disconnect(r, err);
        return;
    }
    r->mconn = obx_outbox_connect(r->cfg, "outbox-relay marks", OBX_SESSION_MARK, err, sizeof err);
    if (!r->mconn) {
        PQfinish(r->conn);
        r->conn = NULL;
        disconnect(r, err);
        return;
    }
    lead = obx_outbox_try_lead(r->conn, r->cfg, err, sizeof err);
    if (lead < 0) {
        disconnect(r, err);
        return;
    }
    r->hz_ok = obx_outbox_prepare_horizon(r->conn, r->cfg, err, sizeof err);
    if (r->hz_ok < 0) {
        disconnect(r, err);
        return;
    }
    if (!r->hz_ok)
        OBX_LOG(OBX_LOG_WARN, "claims_not_pipelined",
                "claims wait for their marks (no pipelining)", KS("reason", err));
    r->hz_want = r->hz_ok;
    OBX_LOG(OBX_LOG_INFO, "postgres_connected", "postgres connected", KS("host", PQhost(r->conn)),
            KS("db", PQdb(r->conn)), KS("table", r->cfg->pg_table),
            KS("role", lead ? "leader" : "standby"));
    r->leader = lead;
    r->pg_answer_ms = obx_clock_ms();
    r->lead_retry_at = r->pg_answer_ms + r->cfg->poll_interval_ms;
    obx_scan_connected(&r->scan);
    /* A relay killed while idle leaves the flag set; clear it first. */
    set_idle(r, IDLE_CLEAR);
}

static int pending_work(const relay_t *r) {
    return r->inflight > 0 || r->acks_n > 0 || r->fails_n > 0;
}

/* Rows in flight on stalled partitions, at most max_inflight of them: they
 * are left out of the budget (so a sick leader cannot stop the others),
 * which bounds the rows in memory at twice max_inflight. */
static long stalled(const relay_t *r) {
    long n = obx_gate_stalled(r->gate, obx_clock_ms());
    return n < r->cfg->max_inflight ? n : r->cfg->max_inflight;
}

/* The in-flight budget in use: rows out on partitions that are not stalled. */
static long budget_used(const relay_t *r) { return r->inflight - stalled(r); }

/* Work that a rescan must wait for: rows out on partitions that are not
 * stalled, marks and failures to record. A stalled partition's rows are
 * skipped by the gate, so a rescan does not publish them twice. */
static int pending_unstalled(const relay_t *r) {
    return budget_used(r) > 0 || r->acks_n > 0 || r->fails_n > 0;
}

/* Whether the acknowledged ids should be marked now rather than wait for
 * more: nothing else in flight, a batch's worth, or waited long enough. */
static int marks_due(const relay_t *r, int64_t now) {
    return r->acks_n > 0 && (r->inflight == 0 || r->acks_n >= (size_t)r->cfg->batch_size ||
                             now >= r->acks_since + MARK_WAIT_MS || r->stopping);
}

/* Sends what the marking session has to do: failed attempts, then marks. */
static void send_marks(relay_t *r) {
    int rc;

    if (r->fails_n > 0) {
        rc = obx_outbox_send_fail(r->mconn, r->fails[0].id, r->fails[0].error, r->fails[0].park);
        r->mop = OP_FAIL;
    } else if (marks_due(r, obx_clock_ms())) {
        r->op_mark_n = r->acks_n < MARK_MAX ? r->acks_n : MARK_MAX;
        rc = obx_outbox_send_mark(r->mconn, r->acks, r->op_mark_n);
        r->mop = OP_MARK;
    } else {
        return;
    }
    if (rc != 0)
        disconnect(r, PQerrorMessage(r->mconn));
}

/* Following writers: the next claim waits a pause that depends on the rows
 * this one found (obx_pace_next). */
static void busy_pause(relay_t *r, int rows) {
    set_idle(r, IDLE_POLL);
    r->pause_ms = obx_pace_next(r->pause_ms, rows, r->cfg->busy_poll_interval_ms,
                                r->cfg->busy_poll_max_interval_ms);
    r->sleep_until = obx_clock_ms() + r->pause_ms;
}

/* Sends claim c on the claiming session. */
static int send_claim(relay_t *r, obx_scan_claim_t c) {
    r->claim = c;
    r->op = OP_CLAIM;
    r->retire_sent = r->retire_n;
    return obx_outbox_send_claim(r->conn, c.after, c.limit, c.upto);
}

/* Picks the next query for the idle claiming session. */
static void send_next(relay_t *r) {
    int64_t now = obx_clock_ms();
    int rc = 0;

    if (r->cfg->stats_interval_s > 0 && now >= r->stats_at) {
        rc = obx_outbox_send_stats(r->conn, r->scan.low);
        r->op = OP_STATS;
    } else if (r->idle == IDLE_CLEAR) {
        r->op_waiting = 0;
        rc = obx_outbox_send_waiting(r->conn, r->cfg, 0);
        r->op = OP_WAITING;
    } else if (r->stopping || r->fatal || r->idle == IDLE_SLEEP || r->idle == IDLE_POLL ||
               budget_used(r) >= r->cfg->max_inflight) {
        return;
    } else if (r->hz_w && now >= r->hz_retry_at) {
        rc = obx_outbox_send_confirm(r->conn, r->cfg, r->hz_w);
        r->op = OP_CONFIRM;
    } else if (r->hz_want && !r->hz_w) {
        r->hz_want = 0;
        r->hz_asked_ms = now;
        rc = obx_outbox_send_horizon(r->conn, r->cfg);
        r->op = OP_HORIZON;
    } else if (r->idle == IDLE_RECHECK) {
        rc = send_claim(r, obx_scan_rescan(&r->scan, r->cfg->batch_size, r->cfg->batch_size, !pending_work(r)));
    } else if (r->scan.end) {
        if (pending_unstalled(r) || now < r->retry_at)
            return;
        r->rescans++;
        rc = send_claim(r, obx_scan_restart(&r->scan, r->blocked ? 1 : r->cfg->batch_size, r->cfg->batch_size,
                                            !pending_work(r)));
    } else if (r->blocked) {
        return;
    } else {
        obx_scan_claim_t c;
        if (obx_scan_forward(&r->scan, r->cfg->batch_size, &c) != 0) {
            /* Nothing safe past the cursor: rescan once drained, and ask for
             * a newer horizon. Decide again now: returning with nothing sent
             * left the loop asleep until its 1 s poll timeout when the marks
             * were already done. */
            r->hz_want = r->hz_ok;
            send_next(r);
            return;
        }
        rc = send_claim(r, c);
    }
    if (rc != 0)
        disconnect(r, PQerrorMessage(r->conn));
}

static const char *state_name(const relay_t *r) {
    return !r->conn ? "disconnected" : r->stopping ? "stopping" : r->blocked ? "blocked"
           : r->idle == IDLE_SLEEP ? "idle" : "running";
}

/* backlog and age are -1 when they could not be read (standby, no connection).
 * The line then says backlog_known=false in their place: a -1 would read as
 * "nothing waiting" to an age alert (docs/monitoring.md). */
static void log_stats(relay_t *r, long long backlog, long long oldest_age_s) {
    int64_t now = obx_clock_ms();
    double secs = (double)(now - r->last_stats_ms) / 1000.0;
    obx_gate_stats_t g;
    obx_kv_t known = backlog >= 0 ? (obx_kv_t)KI("backlog", backlog) : (obx_kv_t)KS("backlog_known", "false");
    obx_kv_t age = backlog >= 0 ? (obx_kv_t)KI("oldest_unsent_age_s", oldest_age_s) : (obx_kv_t)KNONE;
    obx_gate_stats(r->gate, now, &g);
    OBX_LOG(OBX_LOG_INFO, "stats", "stats", KI("published", r->published), KI("marked", r->marked),
            KI("parked", r->parked), KI("failed", r->failed), KI("inflight", r->inflight),
            known, age,
            KD("rate_per_s", secs > 0 ? (double)(r->published - r->last_published) / secs : 0),
            KI("reconnects", r->reconnects), KI("rescans", r->rescans),
            KI("low_water", r->scan.low), KI("horizon", r->scan.hz),
            KI("held", g.held), KI("cold_partitions", g.cold), KI("stalled_partitions", g.stalled),
            KI("skipped", r->skipped), KI("deferred", r->deferred),
            KI("implicit_acks", obx_producer_implicit_acks(r->producer)),
            KI("retention_deleted", obx_retention_deleted(r->retention)),
            KS("role", r->leader ? "leader" : "standby"),
            KS("state", state_name(r)));
    r->last_published = r->published;
    r->last_stats_ms = now;
    r->stats_at = now + (int64_t)r->cfg->stats_interval_s * 1000;
}

static void set_horizon(relay_t *r) {
    if (obx_scan_set_horizon(&r->scan, r->hz_v))
        OBX_LOG(OBX_LOG_DEBUG, "horizon", "horizon", KI("id", r->scan.hz));
}

/* A claim came back empty: caught up. Unless rows are still in flight,
 * the idle protocol begins (busy polling first, while writers were active
 * within busy_poll_ms). */
static void on_claim_empty(relay_t *r, const obx_scan_claim_t *c) {
    if (obx_scan_caught_up(&r->scan, c) && r->hz_ok && obx_clock_ms() - r->hz_asked_ms >= HORIZON_REFRESH_MS)
        r->hz_want = 1; /* caught up with the horizon: let low follow the writers */
    if (!c->rescan || pending_unstalled(r) || r->stopping)
        return;
    if (r->idle == IDLE_RECHECK) {
        set_idle(r, IDLE_SLEEP);
        r->sleep_until = obx_clock_ms() + r->cfg->poll_interval_ms;
    } else if (r->idle == IDLE_RUN && obx_clock_ms() - r->last_rows_ms < r->cfg->busy_poll_ms) {
        busy_pause(r, 0);
    } else if (r->idle == IDLE_RUN) {
        r->op_waiting = 1;
        if (obx_outbox_send_waiting(r->conn, r->cfg, 1) != 0)
            disconnect(r, PQerrorMessage(r->conn));
        else
            r->op = OP_WAITING;
    }
}

/* A claim's rows: produced in id order, the next claim perhaps sent ahead.
 * Takes res (the batch holds it while its messages are out). */
static void on_claim(relay_t *r, PGresult *res) {
    const obx_scan_claim_t c = r->claim; /* a claim sent ahead replaces r->claim */
    int n = PQntuples(res), ahead, skipped;
    int64_t last;

    /* Reset only once a claim worked: a session that connects but then
     * fails (missing table, no privilege) must keep backing off. */
    obx_backoff_reset(&r->backoff);
    retire_marked(r);
    if (obx_scan_is_void(&r->scan, &c) || r->fatal) {
        /* Its rows follow one that was not produced, or the producer is
         * being (or was) replaced: a rescan finds them in order. */
        OBX_LOG(OBX_LOG_DEBUG, "claim_void", "claim dropped, a rescan publishes its rows in order", KI("rows", n),
                KI("after_id", c.after));
        obx_scan_stop(&r->scan);
        PQclear(res);
        return;
    }
    /* Partitions stop skipping when the rescan's rows arrive, not when it
     * is sent: a batch claimed before it may still be produced in between,
     * and its rows must not overtake the skipped ones. */
    if (c.rescan)
        obx_gate_rescan(r->gate);
    r->claimed += n;
    if (obx_scan_claimed(&r->scan, &c, n, n > 0 ? obx_outbox_row_id(res, 0) : 0))
        OBX_LOG(OBX_LOG_DEBUG, "low_water", "low water", KI("id", r->scan.low));
    if (n == 0) {
        PQclear(res);
        on_claim_empty(r, &c);
        return;
    }
    last = obx_outbox_row_id(res, n - 1);
    r->last_rows_ms = obx_clock_ms();
    OBX_LOG(OBX_LOG_DEBUG, "claimed", "claimed", KI("rows", n), KI("after_id", c.after), KI("inflight", r->inflight));
    if (r->idle == IDLE_RECHECK)
        set_idle(r, IDLE_CLEAR);
    /* A full batch below the horizon: send the next claim before producing
     * this one, so that PostgreSQL reads the next batch while the relay
     * produces this one (the two took turns, one core idle, in a drain).
     * Only with room in flight for both: under a tight bound, batches sent
     * in pairs would be acknowledged in pairs and leave the pipe empty
     * between. */
    ahead = obx_scan_may_claim_ahead(&r->scan, &c, n, last) && r->idle == IDLE_RUN && !r->blocked &&
            !r->stopping && !r->fatal && budget_used(r) + 2 * n < r->cfg->max_inflight;
    if (ahead) {
        obx_scan_advance(&r->scan, last);
        send_next(r);
    }
    skipped = produce_batch(r, res); /* the batch owns res now */
    if (ahead && (r->scan.cursor != last || r->blocked))
        obx_scan_void_sent(&r->scan);
    /* Ran past the horizon, or reached it: only a rescan may follow, and a
     * newer horizon lets the next one pipeline. Rescans that follow writers
     * need it only to move the low water: reading pg_locks on every one of
     * them cost the relay's session a third of its CPU. */
    if (obx_scan_batch_done(&r->scan, &c, n) && (!c.rescan || obx_clock_ms() - r->hz_asked_ms >= HORIZON_REFRESH_MS))
        r->hz_want = r->hz_ok;
    if (skipped == n && r->idle == IDLE_RUN && !r->stopping) {
        /* Only rows of stalled partitions: reading them again every few ms
         * would load the database for nothing. */
        set_idle(r, IDLE_POLL);
        r->sleep_until = obx_clock_ms() + r->cfg->poll_interval_ms;
    } else if (n < r->cfg->batch_size && r->idle == IDLE_RUN && !r->stopping) {
        /* Caught up with the writers: let a few ms of their rows gather
         * rather than pay two statements per row or two, and more while
         * they keep the database busy. */
        busy_pause(r, n);
    }
}

/* The acknowledged ids in the mark committed: they wait in retire until a
 * claim sent after it returns (retire_marked). */
static void on_mark(relay_t *r, PGresult *res) {
    r->marked += PQcmdTuples(res)[0] ? atoll(PQcmdTuples(res)) : 0;
    if (r->retire_n + r->op_mark_n > r->retire_cap) {
        r->retire_cap = (r->retire_n + r->op_mark_n) * 2;
        r->retire = obx_xrealloc(r->retire, r->retire_cap * sizeof *r->retire);
    }
    memcpy(r->retire + r->retire_n, r->acks, r->op_mark_n * sizeof *r->acks);
    r->retire_n += r->op_mark_n;
    memmove(r->acks, r->acks + r->op_mark_n, (r->acks_n - r->op_mark_n) * sizeof *r->acks);
    r->acks_n -= r->op_mark_n;
    /* Those left arrived while the mark ran: they wait from now. */
    r->acks_since = obx_clock_ms();
}

static void on_fail(relay_t *r) {
    obx_idset_del(&r->owned, r->fails[0].id);
    memmove(r->fails, r->fails + 1, (r->fails_n - 1) * sizeof *r->fails);
    r->fails_n--;
}

static void on_waiting(relay_t *r, PGresult *res) {
    if (PQntuples(res) == 0 && !r->noflag_warned) {
        /* Writers never or always notify: wake-ups wait for the fallback poll, or cost writers. */
        OBX_LOG(OBX_LOG_WARN, "notify_flag_missing",
                "no waiting flag: the outbox_notify trigger is missing or older than this relay"
                " (run migrate)", KS("table", r->cfg->pg_table));
        r->noflag_warned = 1;
    }
    if (r->op_waiting) {
        /* A stop that came while the flag was being set must clear it. */
        set_idle(r, r->stopping ? IDLE_CLEAR : IDLE_RECHECK);
    } else {
        set_idle(r, IDLE_RUN);
    }
}

static void on_horizon(relay_t *r, PGresult *res) {
    r->hz_v = atoll(PQgetvalue(res, 0, 0));
    if (strcmp(PQgetvalue(res, 0, 1), "{}") == 0) {
        set_horizon(r);
    } else {
        r->hz_w = obx_xstrdup(PQgetvalue(res, 0, 1));
        r->hz_retry_at = 0;
        r->hz_retry_ms = 1;
    }
}

static void on_confirm(relay_t *r, PGresult *res) {
    if (PQgetvalue(res, 0, 0)[0] == 't') {
        free(r->hz_w);
        r->hz_w = NULL;
        set_horizon(r);
    } else {
        /* A writer's transaction is still open: ask again, less and less often. */
        r->hz_retry_at = obx_clock_ms() + r->hz_retry_ms;
        r->hz_retry_ms = r->hz_retry_ms < 128 ? r->hz_retry_ms * 2 : 128;
    }
}

/* Dispatches a session's result to its operation's handler; an error
 * result drops the sessions (disconnect, the one recovery path). */
static void on_result(relay_t *r, PGresult *res, op_t op) {
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char err[512];
        obx_pgconn_error(err, sizeof err, PQresultErrorMessage(res));
        PQclear(res);
        disconnect(r, err);
        return;
    }
    switch (op) {
    case OP_CLAIM:
        on_claim(r, res);
        return; /* on_claim owns res */
    case OP_MARK: on_mark(r, res); break;
    case OP_FAIL: on_fail(r); break;
    case OP_WAITING: on_waiting(r, res); break;
    case OP_STATS: log_stats(r, atoll(PQgetvalue(res, 0, 0)), atoll(PQgetvalue(res, 0, 1))); break;
    case OP_HORIZON: on_horizon(r, res); break;
    case OP_CONFIRM: on_confirm(r, res); break;
    case OP_NONE: break;
    }
    PQclear(res);
}

/* Notifications may arrive with any result and sit in libpq's buffer, so
 * they are drained after every read, not only when the socket wakes us. */
static void drain_notifies(relay_t *r) {
    PGnotify *n;
    while ((n = PQnotifies(r->conn)) != NULL) {
        if (strcmp(n->extra, "rescan") == 0) {
            obx_scan_released(&r->scan);
            OBX_LOG(OBX_LOG_INFO, "rows_released", "rows released, rescanning from the start");
        }
        PQfreemem(n);
        if (r->idle == IDLE_SLEEP) {
            set_idle(r, IDLE_CLEAR);
            OBX_LOG(OBX_LOG_DEBUG, "notify_woken", "woken by notify");
        }
    }
}

/* Reads one session's input; *op is the query pending on it. */
static void pg_input(relay_t *r, PGconn *conn, op_t *op) {
    if (!PQconsumeInput(conn)) {
        disconnect(r, PQerrorMessage(conn));
        return;
    }
    if (conn == r->conn)
        drain_notifies(r);
    while (r->conn && *op != OP_NONE && !PQisBusy(conn)) {
        PGresult *res = PQgetResult(conn), *extra;
        op_t done = *op;
        if (!res) {
            disconnect(r, "query ended without a result");
            return;
        }
        /* Each prepared query yields one result then NULL; collect the NULL
         * before the next send. */
        while ((extra = PQgetResult(conn)) != NULL)
            PQclear(extra);
        *op = OP_NONE;
        r->pg_answer_ms = obx_clock_ms();
        r->pg_waiting_since = r->pg_answer_ms;
        on_result(r, res, done);
    }
    if (r->conn && conn == r->conn)
        drain_notifies(r);
}

/* A session has a result ready without reading its socket again. */
static int ready(PGconn *conn, op_t op) { return conn && op != OP_NONE && !PQisBusy(conn); }

static int handle_signals(relay_t *r) {
    unsigned char sig;
    while (read(sigpipe_fds[0], &sig, 1) == 1) {
        if (sig == SIGHUP) {
            if (obx_config_reload_file(r->cfg) == 0) {
                r->backoff.max_ms = r->cfg->reconnect_max_ms;
                obx_gate_configure(r->gate, r->cfg->partition_stall_ms, r->cfg->partition_cold_ms);
            }
        } else if (r->stopping) {
            OBX_LOG(OBX_LOG_WARN, "second_signal", "second signal, exiting now", KI("inflight", r->inflight),
                    KI("unmarked", (long long)r->acks_n));
            return 1;
        } else {
            r->stopping = 1;
            if (r->idle == IDLE_POLL)
                set_idle(r, IDLE_RUN);
            else if (r->idle != IDLE_RUN)
                set_idle(r, IDLE_CLEAR); /* writers must not keep paying NOTIFY */
            r->stop_deadline = obx_clock_ms() + r->cfg->shutdown_timeout_ms;
            obx_sdnotify("STOPPING=1");
            OBX_LOG(OBX_LOG_INFO, "shutting_down",
                    "shutting down", KS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"),
                    KI("inflight", r->inflight), KI("deadline_ms", r->cfg->shutdown_timeout_ms));
        }
    }
    return 0;
}

static void recreate_producer(relay_t *r) {
    char err[512];
    obx_gate_drop_held(r->gate, drop_held, r);
    if (r->inflight > 0)
        return; /* wait for the purged reports first */
    obx_producer_destroy(r->producer);
    r->producer = obx_producer_new(r->cfg, on_delivery, r, err, sizeof err);
    obx_gate_new_producer(r->gate);
    if (!r->producer) {
        OBX_LOG(OBX_LOG_ERROR, "producer_recreate_failed",
                "cannot recreate the kafka producer", KS("error", err));
        r->stopping = 1;
        r->exit_code = 1;
        r->stop_deadline = obx_clock_ms();
        return;
    }
    r->fatal = 0;
    /* A claim sent before the producer failed must not come back to the new
     * one: its rows would go out ahead of the failed rows of their keys,
     * which only the rescan from the low water publishes again. */
    obx_scan_void_sent(&r->scan);
    OBX_LOG(OBX_LOG_INFO, "producer_recreated",
            "kafka producer recreated; unmarked rows will be published again");
}

static void check_fatal(relay_t *r) {
    char err[512];
    if (r->fatal || !obx_producer_fatal(r->producer, err, sizeof err))
        return;
    OBX_LOG(OBX_LOG_ERROR, "kafka_fatal_error",
            "kafka fatal error, recreating the producer", KS("error", err),
            KI("inflight", r->inflight));
    r->fatal = 1;
    obx_gate_drop_held(r->gate, drop_held, r);
    obx_producer_purge(r->producer);
}

/* A deadline whose work may have to wait for a query (or for room in
 * flight): once due it must not end every poll at once (the loop would
 * spin), so a passed one is skipped; the event it waits for wakes us. */
static int64_t sooner(int64_t next, int64_t at, int64_t now) { return at > now && at < next ? at : next; }

/* A deadline the loop acts on at its top whatever else is running: one that
 * passed while this turn ran ends the poll at once. Skipped, it left the
 * relay asleep for the whole 1 s poll timeout now and then while it
 * followed writers (a busy-poll pause that ended between the top of the
 * loop and the poll). */
static int64_t due(int64_t next, int64_t at, int64_t now) { return at < now ? now : at < next ? at : next; }

static int poll_timeout(const relay_t *r) {
    int64_t now = obx_clock_ms(), next = now + 1000;
    if (!r->conn)
        next = due(next, r->reconnect_at, now);
    else if (!r->leader)
        next = due(next, r->lead_retry_at, now);
    if (r->idle == IDLE_SLEEP || r->idle == IDLE_POLL)
        next = due(next, r->sleep_until, now);
    if (r->scan.end)
        next = sooner(next, r->retry_at, now);
    if (r->hz_w && r->idle == IDLE_RUN)
        next = sooner(next, r->hz_retry_at, now);
    if (r->cfg->stats_interval_s > 0)
        next = sooner(next, r->stats_at, now);
    next = due(next, obx_retention_due(r->retention), now);
    next = due(next, r->health_at, now);
    if (r->stopping)
        next = due(next, r->stop_deadline, now);
    /* Only when marks can go out: a standby or a relay between reconnects
     * keeps its acks, and a past deadline would spin the loop. */
    if (r->conn && r->leader && r->acks_n > 0 && r->mop == OP_NONE)
        next = due(next, r->acks_since + MARK_WAIT_MS, now);
    if (r->fatal)
        next = sooner(next, now + 10, now);
    return (int)(next - now);
}

/* Once a tick, from the top of the loop (so that a loop that stops turning
 * stops them): the health record and systemd's status and watchdog ping. */
static void health_tick(relay_t *r, int64_t now) {
    const char *role = !r->conn ? "disconnected" : r->leader ? "leader" : "standby";
    char err[512], status[64];

    obx_health_watchdog_tick(r->watchdog, now);
    if (now < r->health_at)
        return;
    r->health_at = now + r->health_tick_ms;
    if (obx_producer_broker_up_ms(r->producer) > r->kafka_up_ms)
        r->kafka_up_ms = obx_producer_broker_up_ms(r->producer);
    if (*r->cfg->health_file) {
        obx_health_t h = {.pid = (long)getpid(), .tick_ms = now, .pg_ms = r->pg_answer_ms,
                          .kafka_ms = r->kafka_up_ms};
        snprintf(h.role, sizeof h.role, "%s", role);
        snprintf(h.state, sizeof h.state, "%s", state_name(r));
        if (obx_health_write(r->cfg->health_file, &h, err, sizeof err) != 0) {
            if (!r->health_file_failing)
                OBX_LOG(OBX_LOG_WARN, "health_file_failed", "cannot write the health file; probes will fail",
                        KS("error", err));
            r->health_file_failing = 1;
        } else {
            r->health_file_failing = 0;
        }
    }
    snprintf(status, sizeof status, "STATUS=%s, %s", role, state_name(r));
    if (strcmp(status, r->sd_status) != 0) {
        obx_sdnotify(status);
        snprintf(r->sd_status, sizeof r->sd_status, "%s", status);
    }
    if (r->sd_watchdog)
        obx_sdnotify("WATCHDOG=1");
}

/* A query that PostgreSQL does not answer (a frozen server, a dropped
 * network path that TCP has not noticed) would hold the leader lock's
 * session forever: give the sessions up and connect again. */
static void check_unanswered(relay_t *r, int64_t now) {
    int64_t limit = (int64_t)r->cfg->health_stuck_timeout_s * 1000;
    if (!r->conn || (r->op == OP_NONE && r->mop == OP_NONE)) {
        r->pg_waiting_since = 0;
        return;
    }
    if (!r->pg_waiting_since)
        r->pg_waiting_since = now;
    if (limit > 0 && now - r->pg_waiting_since > limit) {
        OBX_LOG(OBX_LOG_ERROR, "postgres_unresponsive", "no answer from PostgreSQL; reconnecting",
                KI("waited_ms", now - r->pg_waiting_since), KI("stuck_timeout_s", r->cfg->health_stuck_timeout_s));
        disconnect(r, "no answer from PostgreSQL within health.stuck_timeout_s");
    }
}

static void drain_batches(relay_t *r) {
    /* Fail what is still queued so every batch is released before exit. */
    obx_gate_drop_held(r->gate, drop_held, r);
    if (r->inflight > 0) {
        obx_producer_purge(r->producer);
        for (int i = 0; i < 100 && r->inflight > 0; i++) {
            obx_producer_serve(r->producer);
            if (r->inflight > 0)
                poll(NULL, 0, 10);
        }
    }
}

/* The loop's first half: serve librdkafka's events, then act on whatever
 * is due (reconnect, the leader lock, the idle protocol's timers, marks,
 * the next query). Returns 0 when the relay is to stop. */
static int tick(relay_t *r) {
    char err[512];
    int64_t now;

    obx_producer_serve(r->producer);
    check_fatal(r);
    release_held(r);
    if (r->fatal)
        recreate_producer(r);
    now = obx_clock_ms();
    health_tick(r, now);
    check_unanswered(r, now);
    if (!r->conn && now >= r->reconnect_at) {
        r->reconnects++;
        try_connect(r);
    }
    if (r->conn && !r->leader && now >= r->lead_retry_at) {
        int lead = obx_outbox_try_lead(r->conn, r->cfg, err, sizeof err);
        if (lead >= 0)
            r->pg_answer_ms = obx_clock_ms();
        if (lead < 0)
            disconnect(r, err);
        else if (lead) {
            r->leader = 1;
            OBX_LOG(OBX_LOG_INFO, "leadership_acquired", "leadership acquired", KS("role", "leader"));
        }
        r->lead_retry_at = now + r->cfg->poll_interval_ms;
    }
    if (r->idle == IDLE_SLEEP && now >= r->sleep_until)
        set_idle(r, IDLE_CLEAR);
    else if (r->idle == IDLE_POLL && now >= r->sleep_until)
        set_idle(r, IDLE_RUN);
    if (r->conn && r->leader && r->mop == OP_NONE)
        send_marks(r);
    if (r->conn && r->leader && r->op == OP_NONE)
        send_next(r);
    else if ((!r->conn || !r->leader) && r->cfg->stats_interval_s > 0 && now >= r->stats_at)
        log_stats(r, -1, -1);
    obx_retention_step(r->retention, r->conn && r->leader && !r->stopping, now);
    return !(r->stopping && ((!pending_work(r) && r->op == OP_NONE && r->mop == OP_NONE &&
                              (r->idle == IDLE_RUN || !r->conn || !r->leader)) ||
                             now >= r->stop_deadline));
}

/* The loop's second half: one poll over the signal pipe, librdkafka's
 * event pipe, the two sessions and retention's, until the next deadline
 * (poll_timeout), then read what came. Returns 0 when the relay is to stop. */
static int wait_and_dispatch(relay_t *r) {
    struct pollfd fds[5];
    int nfds = 2, pgidx = -1, retidx = -1, rc;

    fds[0].fd = sigpipe_fds[0];
    fds[0].events = POLLIN;
    fds[1].fd = obx_producer_fd(r->producer);
    fds[1].events = POLLIN;
    if (r->conn) {
        pgidx = nfds;
        fds[nfds].fd = PQsocket(r->conn);
        fds[nfds++].events = POLLIN;
        fds[nfds].fd = PQsocket(r->mconn);
        fds[nfds++].events = POLLIN;
    }
    if (obx_retention_fd(r->retention) >= 0) {
        retidx = nfds;
        fds[nfds].fd = obx_retention_fd(r->retention);
        fds[nfds++].events = POLLIN;
    }
    rc = poll(fds, (nfds_t)nfds, ready(r->conn, r->op) || ready(r->mconn, r->mop) ? 0 : poll_timeout(r));
    if (rc < 0 && errno != EINTR) {
        OBX_LOG(OBX_LOG_ERROR, "poll_failed", "poll failed", KS("error", strerror(errno)));
        r->exit_code = 1;
        return 0;
    }
    if (rc > 0 && (fds[0].revents & POLLIN) && handle_signals(r)) {
        r->exit_code = 1;
        return 0;
    }
    if (r->conn && pgidx >= 0 && (fds[pgidx].revents || ready(r->conn, r->op)))
        pg_input(r, r->conn, &r->op);
    if (r->conn && pgidx >= 0 && (fds[pgidx + 1].revents || ready(r->mconn, r->mop)))
        pg_input(r, r->mconn, &r->mop);
    if (retidx >= 0 && fds[retidx].revents)
        obx_retention_input(r->retention, obx_clock_ms());
    return 1;
}

/* Frees what relay_open set up, whatever part of it. */
static void relay_close(relay_t *r) {
    obx_health_watchdog_stop(r->watchdog);
    obx_producer_destroy(r->producer);
    obx_gate_destroy(r->gate);
    obx_retention_free(r->retention);
    obx_idset_free(&r->owned);
    free(r->retire);
    if (r->conn)
        PQfinish(r->conn);
    if (r->mconn)
        PQfinish(r->mconn);
    free(r->acks);
    free(r->fails);
    free(r->hz_w);
    if (sigpipe_fds[0] >= 0) {
        close(sigpipe_fds[0]);
        close(sigpipe_fds[1]);
    }
}

/* The signal pipe, the producer and its companions, the deadlines of the
 * first tick; 0, or -1 (logged) with r for relay_close. */
static int relay_open(relay_t *r, obx_config_t *cfg) {
    char err[512];
    int64_t started = obx_clock_ms();

    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    obx_backoff_init(&r->backoff, 100, cfg->reconnect_max_ms, (uint64_t)started ^ ((uint64_t)getpid() << 32));
    r->gate = obx_gate_new(cfg->partition_stall_ms, cfg->partition_cold_ms);
    r->retention = obx_retention_new(cfg);
    if (pipe2(sigpipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        OBX_LOG(OBX_LOG_ERROR, "pipe_failed", "pipe failed", KS("error", strerror(errno)));
        sigpipe_fds[0] = sigpipe_fds[1] = -1;
        return -1;
    }
    obx_signals_install(on_signal);
    r->producer = obx_producer_new(cfg, on_delivery, r, err, sizeof err);
    if (!r->producer) {
        OBX_LOG(OBX_LOG_ERROR, "producer_create_failed", "kafka producer", KS("error", err));
        return -1;
    }
    r->last_stats_ms = started;
    r->stats_at = started + (int64_t)cfg->stats_interval_s * 1000;
    r->health_tick_ms = HEALTH_TICK_MS;
    if (obx_sdnotify_watchdog_ms() > 0) {
        r->sd_watchdog = 1;
        if (obx_sdnotify_watchdog_ms() / 2 < r->health_tick_ms)
            r->health_tick_ms = obx_sdnotify_watchdog_ms() / 2;
    }
    if (cfg->health_stuck_timeout_s > 0) {
        r->watchdog = obx_health_watchdog_start((int64_t)cfg->health_stuck_timeout_s * 1000, err, sizeof err);
        if (!r->watchdog)
            OBX_LOG(OBX_LOG_WARN, "watchdog_failed", "cannot start the stuck-loop watchdog", KS("error", err));
    }
    return 0;
}

static void log_starting(const obx_config_t *cfg) {
    OBX_LOG(OBX_LOG_INFO, "relay_starting", "relay starting", KS("table", cfg->pg_table),
            KS("channel", cfg->pg_channel), KI("batch_size", cfg->batch_size),
            KI("max_inflight", cfg->max_inflight),
            KS("on_failure", cfg->on_failure == OBX_FAIL_PARK ? "park" : "block"),
            KS("librdkafka", rd_kafka_version_str()));
    if (rd_kafka_version() < LIBRDKAFKA_SEQ_FIX)
        OBX_LOG(OBX_LOG_WARN, "librdkafka_too_old",
                "librdkafka older than 2.3.0: after requests that may have been written it can"
                " raise a fatal sequence error; the relay then recreates its producer, which publishes"
                " duplicates, not losses (KNOWN-ISSUES.md)", KS("librdkafka", rd_kafka_version_str()));
}

int obx_relay_run(obx_config_t *cfg) {
    relay_t r;

    if (relay_open(&r, cfg) != 0) {
        relay_close(&r);
        return 1;
    }
    log_starting(cfg);
    try_connect(&r);
    health_tick(&r, obx_clock_ms());
    obx_sdnotify("READY=1");

    while (tick(&r) && wait_and_dispatch(&r))
        ;

    if (r.stopping && pending_work(&r))
        OBX_LOG(OBX_LOG_WARN, "shutdown_deadline_passed",
                "shutdown deadline passed; unacknowledged rows will be published again on restart",
                KI("inflight", r.inflight), KI("unmarked", (long long)r.acks_n));
    obx_health_watchdog_stop(r.watchdog);
    r.watchdog = NULL;
    drain_batches(&r);
    OBX_LOG(OBX_LOG_INFO, "relay_stopped",
            "relay stopped", KI("published", r.published), KI("marked", r.marked),
            KI("parked", r.parked), KI("exit_code", r.exit_code));
    relay_close(&r);
    return r.exit_code;
}
