/* librdkafka's implicit-ack window on the real 3-node cluster (issue 13,
 * parts 1 and 6; docs/guarantees.md). The fault proxy drops whole Produce
 * requests ("drop K"): the broker never sees them and never answers, while
 * later requests on the same connection are processed.
 * - first_request_of_new_producer_lost: the first Produce request of the
 *   relay's new producer id on every broker vanishes while the relay starts
 *   on a backlog. A broker accepts any first sequence number from a producer
 *   id it holds no state for, so a later request of that partition pipelined
 *   behind the lost one would be written over the gap, and librdkafka would
 *   acknowledge the lost one's messages implicitly: events marked sent that
 *   are not on the topic. The relay's partition gate keeps a cold partition
 *   at one message in flight; nothing may be lost.
 * - request_lost_mid_drain_recovers: a Produce request to partition 0's
 *   leader vanishes while the relay drains warm partitions.
 * What librdkafka 2.0.2 does (msg debug, counted in the "window:" line as
 * max_requests_in_flight_per_partition): its idempotent producer almost
 * always has one Produce request per partition in flight whatever
 * max.in.flight says (librdkafka PR 4989 reports the same of 2.8.0; two
 * were seen once, on a warm partition), so no request followed a lost
 * one: it times out (socket.timeout.ms), the connection is closed, and the
 * same batch is sent again with the same sequence numbers. No gap, no
 * OUT_OF_ORDER_SEQUENCE_NUMBER, no epoch bump, no fatal error, no implicit
 * ack, with this relay or the one before the gate (51b9cc3, which did not
 * lose here either, also with batch.num.messages=20). The tests still
 * fail if a librdkafka that pipelines per partition loses events here.
 * - first_request_refused_behind_a_pipelined_one: what does open the
 *   window with 2.0.2. OBX_WINDOW_BACKLOG rows (default 10) wait in a
 *   1-partition topic's outbox; the relay starts with batch.num.messages =
 *   OBX_WINDOW_BATCH (default 2; 0: librdkafka's default) and a writer
 *   trickles rows (OBX_WINDOW_RATE, at most 50/s by default). The proxy
 *   refuses the first Produce request(s) to the leader ("refuse K",
 *   OBX_WINDOW_REFUSE, default 1): not forwarded, answered with
 *   NOT_ENOUGH_REPLICAS (retriable, nothing written) once the next Produce
 *   request on the connection went to the broker, ahead of its answer.
 *   librdkafka puts the refused messages back in the partition queue; the
 *   next request's success (the broker holds no state for the new id, so
 *   takes its non-zero first sequence) acknowledges them implicitly:
 *   reported delivered, never written. The relay from before the gate lost
 *   the refused request's 2 events in each of 5 runs (requests of 2
 *   messages, 3 in flight, one IMPLICITACK line); with librdkafka's default
 *   batch size (2 runs) it lost none: following writers it keeps one claim
 *   in flight (a short claim waits for its acknowledgements), and a claim,
 *   produced in one loop, went out as one request, so none followed the
 *   refused one. With the partition gate a cold partition has one message
 *   out, no request follows it (the answer goes out after 1 s), the
 *   message is retried; nothing may be lost.
 * - sequence_error_mid_drain_recreates_the_producer: the proxy answers a
 *   Produce request to partition 0's leader mid-drain with
 *   OUT_OF_ORDER_SEQUENCE_NUMBER ("refuse 1 45", nothing written), what a
 *   broker answers after it lost track of the producer's sequence. For the
 *   request at the head of the partition's queue librdkafka 2.0.2 raises a
 *   fatal "sequence desynchronization" error; the relay recreates its
 *   producer and publishes everything unacknowledged again under a new
 *   producer id: duplicates (counted in the "window:" line), no losses, and
 *   the first copy of each event in order.
 * Each prints one "window:" line with the figures. OBX_TEST_RELAY_WRAPPER
 * (harness) runs another relay binary, e.g. one built before the gate;
 * OBX_WINDOW_ONLY=first|mid|refused|seq runs one test. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"

#define PARTS 4
#define BACKLOG 20000
#define KEYS 2000
#define MARKED "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"

/* What the relay's log says about its producers. */
typedef struct {
    long long implicit_acks;  /* the largest implicit_acks of a stats line (-1: none) */
    int implicit_lines;       /* librdkafka's IMPLICITACK debug lines */
    long implicit_msgs;       /* the messages they name */
    int stats;                /* stats lines */
    int fatal;                /* "kafka fatal error" lines */
    int pids;                 /* producer ids acquired */
    int oooseq;               /* lines naming OUT_OF_ORDER_SEQUENCE_NUMBER */
    int desync;               /* librdkafka's "sequence desynchronization" */
    int timeouts;             /* librdkafka's "Timed out ProduceRequest" */
    int max_pipelined;        /* most Produce requests of one partition in flight
                                 at once (msg debug: sent minus answered) */
} relay_log_t;

/* The partition of a msg debug line ("... topic [P]: <what>"), or -1. */
static int debug_partition(const char *line, const char *what) {
    const char *w = strstr(line, what), *b;
    if (!w)
        return -1;
    for (b = w; b > line && *b != '['; b--)
        ;
    return *b == '[' && atoi(b + 1) >= 0 && atoi(b + 1) < PARTS ? atoi(b + 1) : -1;
}

static relay_log_t scan_log(const th_ctx_t *t) {
    relay_log_t l = {-1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    int out[PARTS] = {0};
    char path[512], line[16384];
    FILE *f;
    snprintf(path, sizeof path, "%s/relay.log", t->dir);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    while (fgets(line, sizeof line, f)) {
        const char *p;
        if ((p = strstr(line, "implicit_acks="))) {
            long long v = atoll(p + strlen("implicit_acks="));
            l.implicit_acks = v > l.implicit_acks ? v : l.implicit_acks;
        }
        if (strstr(line, "msg=stats") || strstr(line, "\"msg\":\"stats\""))
            l.stats++;
        if ((p = strstr(line, " message(s) implicitly acked"))) {
            const char *d = p;
            while (d > line && d[-1] >= '0' && d[-1] <= '9')
                d--;
            l.implicit_lines++;
            l.implicit_msgs += atol(d);
        }
        l.fatal += strstr(line, "kafka fatal error") != NULL;
        /* the relay's own line, or librdkafka's eos debug line (older relays) */
        l.pids += strstr(line, "Acquired PID") != NULL;
        l.oooseq += strstr(line, "OUT_OF_ORDER_SEQUENCE") || strstr(line, "Out of order sequence");
        l.desync += strstr(line, "sequence desynchronization") != NULL;
        l.timeouts += strstr(line, "Timed out ProduceRequest") != NULL;
        if ((p = strstr(line, "facility=PRODUCE")) && debug_partition(p, "]: Produce MessageSet") >= 0) {
            int n = ++out[debug_partition(p, "]: Produce MessageSet")];
            l.max_pipelined = n > l.max_pipelined ? n : l.max_pipelined;
        } else if ((p = strstr(line, "facility=MSGSET")) && debug_partition(p, "]: MessageSet with") >= 0 &&
                   (strstr(p, "delivered") || strstr(p, "encountered error"))) {
            out[debug_partition(p, "]: MessageSet with")]--;
        }
    }
    fclose(f);
    return l;
}

typedef struct {
    const th_ctx_t *t;
    int stats;
} stats_wait_t;

static int new_stats_line(void *arg) {
    stats_wait_t *w = arg;
    return scan_log(w->t).stats > w->stats;
}

/* Lines of the proxy's log: one per refused Produce request, one per
 * injected answer. */
#define REFUSED "refused a Produce request"
#define INJECTED "injected error "

typedef struct {
    th_cluster_t *c;
    const char *needle;
    int before;
} fault_wait_t;

static int faulted(void *arg) {
    fault_wait_t *w = arg;
    return th_cluster_proxy_log_count(w->c, w->needle) > w->before;
}

/* Waits until the proxy's log has more lines with needle than before. */
static void await_fault(th_cluster_t *c, const char *needle, int before) {
    fault_wait_t fw = {c, needle, before};
    ck_assert_msg(th_wait(faulted, &fw, 60000), "no \"%s\" in the proxy's log within 60 s (see %s/proxy.log)",
                  needle, c->dir);
}

/* The relay as the tests run it on the cluster, max.in.flight left at 5. A
 * dropped request times out after 3 s: the relay sets message.timeout.ms
 * to 0 (no limit), so librdkafka bounds a Produce request's wait by
 * socket.timeout.ms alone (60 s by default), then drops the connection and
 * retries what was in flight on it. librdkafka's eos debug shows producer
 * ids and implicit acks (older relays do not turn it on themselves). */
static pid_t start_relay(th_ctx_t *t, th_cluster_t *c, const char *debug) {
    char kafka[256];
    snprintf(kafka, sizeof kafka, "request_timeout_ms = 3000; socket_timeout_ms = 3000; debug = \"%s\";", debug);
    return th_relay_start(t, th_config_level(t, "relay.conf", c->bootstrap, "", kafka, "debug"));
}

/* Waits for the proxy's fault (a new line with needle in its log), then
 * until drained and for one more stats line; stops the relay, reads every
 * partition with kcat, leaves the cluster healthy and prints the figures;
 * returns the counts. */
static th_verify_t finish(th_ctx_t *t, th_cluster_t *c, pid_t relay, const char *topic, const char *name,
                          const char *needle, int before, relay_log_t *log) {
    th_msgs_t msgs;
    th_verify_t v;
    stats_wait_t sw = {t, 0};
    const char *wrapper = getenv("OBX_TEST_RELAY_WRAPPER");

    await_fault(c, needle, before);
    th_drain(t, 180000);
    sw.stats = scan_log(t).stats;
    ck_assert_msg(th_wait(new_stats_line, &sw, 10000), "%s: no stats line after the drain", name);
    *log = scan_log(t);
    th_stop(relay, SIGTERM, 30000, 0);
    th_cluster_read(c, topic, &msgs, 60000);
    v = th_verify_counts(t, &msgs, "win");
    th_msgs_free(&msgs);
    fprintf(stderr,
            "window: %s: rows=%ld messages=%ld lost=%ld unsent=%ld order_violations=%ld wrong_headers=%ld"
            " duplicates=%ld implicit_acks=%lld (IMPLICITACK lines %d naming %ld messages) fatal_errors=%d"
            " producer_ids=%d out_of_order_lines=%d desync_lines=%d request_timeouts=%d"
            " max_requests_in_flight_per_partition=%d proxy_faults=%d relay=%s\n",
            name, v.rows, v.messages, v.lost, v.unsent, v.order_violations, v.wrong_headers, v.duplicates,
            log->implicit_acks, log->implicit_lines, log->implicit_msgs, log->fatal, log->pids, log->oooseq,
            log->desync, log->timeouts, log->max_pipelined, th_cluster_proxy_log_count(c, needle) - before,
            wrapper ? wrapper : "this build");
    th_cluster_close(c);
    return v;
}

/* A fresh topic of PARTS partitions with a backlog of BACKLOG rows over
 * KEYS keys written before any relay runs; no proxy fault. */
static void begin(th_cluster_t *c, th_ctx_t *t, const char *name, char *topic, size_t topic_size) {
    th_cluster_open(c);
    th_cluster_fault(c, 0, "pass");
    th_setup(t, name);
    snprintf(topic, topic_size, "%s.win", t->topic_prefix);
    th_cluster_create_topic(c, topic, PARTS);
    ck_assert_int_eq(th_write(t, 4, BACKLOG, KEYS, 100, "win"), BACKLOG);
}

static void assert_sound(const th_verify_t *v, const relay_log_t *log, const char *name) {
    ck_assert_msg(v->rows == BACKLOG || v->rows == 2 * BACKLOG, "%s: %ld rows written", name, v->rows);
    ck_assert_msg(v->unsent == 0, "%s: %ld rows never marked sent", name, v->unsent);
    ck_assert_msg(v->order_violations == 0 && v->wrong_headers == 0,
                  "%s: %ld per-key order violations, %ld mislabelled events", name, v->order_violations,
                  v->wrong_headers);
    (void)log;
}

START_TEST(first_request_of_new_producer_lost) {
    th_cluster_t c;
    th_ctx_t t;
    th_verify_t v;
    relay_log_t log;
    char topic[128];
    int drops;
    pid_t relay;

    /* The backlog is there before the relay starts: it drains at once, with
     * as many requests per partition in flight as librdkafka allows. */
    begin(&c, &t, "window_first", topic, sizeof topic);
    /* The first Produce request on every broker: each is the first request
     * of the new producer id for one of the partitions that broker leads,
     * and the only one a broker answers nothing to. */
    drops = th_cluster_proxy_log_count(&c, TH_CLUSTER_DROPPED);
    th_cluster_fault(&c, 0, "drop 1");
    relay = start_relay(&t, &c, "eos,msg");
    v = finish(&t, &c, relay, topic, "first_request_of_new_producer_lost", TH_CLUSTER_DROPPED, drops, &log);
    ck_assert_msg(v.lost == 0,
                  "%ld of %ld events lost: marked sent, not on the topic. The proxy dropped the first Produce"
                  " request of the relay's new producer id on a broker; the broker, holding no state for that"
                  " id on the partition, accepted a later request over the sequence gap, and librdkafka"
                  " acknowledged the dropped request's messages implicitly (%d IMPLICITACK lines naming %ld"
                  " messages). The partition gate must keep a cold partition at one message in flight.",
                  v.lost, v.rows, log.implicit_lines, log.implicit_msgs);
    assert_sound(&v, &log, "first_request_of_new_producer_lost");
}
END_TEST

/* A backlog drains; once every partition has acknowledgements under the
 * producer id (the brokers check its sequence numbers, and the relay
 * pipelines) the proxy gets fault for partition 0's leader, and more rows
 * keep requests following the faulted one. Returns finish()'s counts. */
static th_verify_t fault_mid_drain(const char *db, const char *name, const char *debug, const char *fault,
                                   const char *needle, relay_log_t *log, int *leader) {
    th_cluster_t c;
    th_ctx_t t;
    char topic[128];
    int before;
    pid_t relay;

    begin(&c, &t, db, topic, sizeof topic);
    relay = start_relay(&t, &c, debug);
    th_wait_count(&t, MARKED, 2000, 60000);
    *leader = th_cluster_leader(&c, topic, 0);
    before = th_cluster_proxy_log_count(&c, needle);
    th_cluster_fault(&c, *leader, fault);
    ck_assert_int_eq(th_write(&t, 4, BACKLOG, KEYS, 100, "win"), BACKLOG);
    return finish(&t, &c, relay, topic, name, needle, before, log);
}

START_TEST(request_lost_mid_drain_recovers) {
    th_verify_t v;
    relay_log_t log;
    int leader;

    /* msg: librdkafka's handling of the lost request, for the record */
    v = fault_mid_drain("window_mid", "request_lost_mid_drain_recovers", "eos,msg", "drop 1", TH_CLUSTER_DROPPED,
                        &log, &leader);
    ck_assert_msg(v.lost == 0,
                  "%ld of %ld events lost after a Produce request to node %d vanished mid-drain (%d IMPLICITACK"
                  " lines naming %ld messages, %d fatal errors, %d producer ids)",
                  v.lost, v.rows, leader, log.implicit_lines, log.implicit_msgs, log.fatal, log.pids);
    assert_sound(&v, &log, "request_lost_mid_drain_recovers");
    /* librdkafka must have noticed the lost request one way or another:
     * 2.0.2 times it out and sends it again (one request per partition in
     * flight); one that pipelines would get OUT_OF_ORDER_SEQUENCE_NUMBER for
     * the next ones and bump its epoch or fail fatally, and the relay then
     * recreates its producer. */
    ck_assert_msg(log.timeouts > 0 || log.fatal > 0 || log.pids > 1,
                  "the dropped request left no trace: no Produce request timed out, no fatal error, %d producer"
                  " id(s)",
                  log.pids);
}
END_TEST


/* The partition's leader; a node asked right after the topic was created
 * may not know the partition yet, so ask again for up to 30 s. */
static int leader_of(th_cluster_t *c, const char *topic, int partition) {
    int64_t deadline = th_now_ms() + (int64_t)(30000 * th_mult());
    int leader;
    while ((leader = th_cluster_leader(c, topic, partition)) < 1 && th_now_ms() < deadline)
        usleep(100000);
    return leader;
}

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

START_TEST(first_request_refused_behind_a_pipelined_one) {
    const char *name = "first_request_refused_behind_a_pipelined_one";
    const char *wrapper = getenv("OBX_TEST_RELAY_WRAPPER");
    th_cluster_t c;
    th_ctx_t t;
    th_verify_t v;
    th_msgs_t msgs;
    relay_log_t log;
    stats_wait_t sw = {&t, 0};
    int64_t start, answered_ms = 0;
    long trickled = 0;
    char topic[128], fault[32], kafka[256];
    int leader, refusals, injected, refuse = env_int("OBX_WINDOW_REFUSE", 1), rate = env_int("OBX_WINDOW_RATE", 50),
        batch = getenv("OBX_WINDOW_BATCH") ? atoi(getenv("OBX_WINDOW_BATCH")) : 2, backlog = env_int("OBX_WINDOW_BACKLOG", 10);
    pid_t relay;

    th_cluster_open(&c);
    th_cluster_fault(&c, 0, "pass");
    th_setup(&t, "window_refused");
    snprintf(topic, sizeof topic, "%s.win", t.topic_prefix);
    th_cluster_create_topic(&c, topic, 1);
    leader = leader_of(&c, topic, 0);
    ck_assert_msg(leader >= 1, "%s: partition 0 has no leader 30 s after the topic was created", name);
    /* A few rows before the relay starts: its first claim. The relay from
     * before the gate keeps one claim in flight while it follows writers
     * (a short claim waits for its acknowledgements before the next one),
     * and librdkafka puts a claim, produced in one loop, into one request:
     * no second request follows the first unless batch.num.messages
     * splits the claim (OBX_WINDOW_BATCH, default 2: requests of 2
     * messages, so up to 3 in flight under librdkafka's 5-message cap). */
    ck_assert_int_eq(th_write(&t, 1, backlog, backlog, 100, "win"), backlog);
    refusals = th_cluster_proxy_log_count(&c, REFUSED);
    injected = th_cluster_proxy_log_count(&c, INJECTED);
    /* The relay's first Produce requests under its new producer id. */
    snprintf(fault, sizeof fault, "refuse %d", refuse);
    th_cluster_fault(&c, leader, fault);
    snprintf(kafka, sizeof kafka,
             "request_timeout_ms = 3000; socket_timeout_ms = 3000; debug = \"eos,msg\";%s%.0d%s",
             batch > 0 ? " batch_num_messages = " : "", batch, batch > 0 ? ";" : "");
    relay = th_relay_start(&t, th_config_level(&t, "relay.conf", c.bootstrap, "", kafka, "debug"));
    /* Then a trickle: claims of a few rows, requests of one or two. */
    th_wait_log(&t, "Acquired PID", 60000);
    /* One row per th_write (its own connection and transaction), about
     * rate a second, until the proxy answered the refused requests, and 5 s
     * more. */
    start = th_now_ms();
    while (th_now_ms() - start < 60000 && (!answered_ms || th_now_ms() - answered_ms < 5000)) {
        trickled += th_write(&t, 1, 1, 1, 100, "win");
        if (!answered_ms && th_cluster_proxy_log_count(&c, INJECTED) - injected >= refuse)
            answered_ms = th_now_ms();
        usleep((useconds_t)(1000000 / rate));
    }
    ck_assert_msg(answered_ms, "%s: the proxy answered %d of %d refused Produce requests within 60 s (see %s/proxy.log)",
                  name, th_cluster_proxy_log_count(&c, INJECTED) - injected, refuse, c.dir);
    th_drain(&t, 180000);
    sw.stats = scan_log(&t).stats;
    ck_assert_msg(th_wait(new_stats_line, &sw, 10000), "%s: no stats line after the drain", name);
    log = scan_log(&t);
    th_stop(relay, SIGTERM, 30000, 0);
    th_cluster_read(&c, topic, &msgs, 60000);
    v = th_verify_counts(&t, &msgs, "win");
    th_msgs_free(&msgs);
    refusals = th_cluster_proxy_log_count(&c, REFUSED) - refusals;
    injected = th_cluster_proxy_log_count(&c, INJECTED) - injected;
    fprintf(stderr,
            "window: %s: rows=%ld (%d before the relay, %ld trickled at <= %d/s) messages=%ld lost=%ld unsent=%ld order_violations=%ld"
            " wrong_headers=%ld duplicates=%ld implicit_acks=%lld (IMPLICITACK lines %d naming %ld messages)"
            " fatal_errors=%d producer_ids=%d out_of_order_lines=%d desync_lines=%d request_timeouts=%d"
            " max_requests_in_flight_per_partition=%d proxy_refusals=%d proxy_answers=%d leader=%d"
            " batch_num_messages=%d relay=%s\n",
            name, v.rows, backlog, trickled, rate, v.messages, v.lost, v.unsent, v.order_violations, v.wrong_headers,
            v.duplicates, log.implicit_acks, log.implicit_lines, log.implicit_msgs, log.fatal, log.pids, log.oooseq,
            log.desync, log.timeouts, log.max_pipelined, refusals, injected, leader,
            batch, wrapper ? wrapper : "this build");
    th_cluster_close(&c);
    ck_assert_msg(refusals >= refuse, "%s: the proxy refused %d Produce requests, %d asked", name, refusals, refuse);
    ck_assert_msg(v.lost == 0,
                  "%ld of %ld events lost: marked sent, not on the topic. The proxy refused the first Produce"
                  " request(s) of the relay's new producer id with NOT_ENOUGH_REPLICAS behind a second request of"
                  " the same partition; the broker, holding no state for that id, wrote the second over the"
                  " sequence gap and librdkafka acknowledged the refused messages implicitly (%d IMPLICITACK"
                  " lines naming %ld messages). The partition gate must keep a cold partition at one message in"
                  " flight.",
                  v.lost, v.rows, log.implicit_lines, log.implicit_msgs);
    ck_assert_msg(v.rows == trickled + backlog, "%s: %ld rows, %d + %ld written", name, v.rows, backlog,
                  trickled);
    ck_assert_msg(v.unsent == 0, "%s: %ld rows never marked sent", name, v.unsent);
    ck_assert_msg(v.order_violations == 0 && v.wrong_headers == 0, "%s: %ld per-key order violations, %ld"
                  " mislabelled events", name, v.order_violations, v.wrong_headers);
}
END_TEST

START_TEST(sequence_error_mid_drain_recreates_the_producer) {
    const char *name = "sequence_error_mid_drain_recreates_the_producer";
    th_verify_t v;
    relay_log_t log;
    int leader;

    v = fault_mid_drain("window_seq", name, "eos", "refuse 1 45", INJECTED, &log, &leader);
    ck_assert_msg(v.lost == 0,
                  "%ld of %ld events lost after a Produce request was answered OUT_OF_ORDER_SEQUENCE_NUMBER"
                  " (%d fatal errors, %d producer ids)",
                  v.lost, v.rows, log.fatal, log.pids);
    assert_sound(&v, &log, name);
    /* The head-of-line request's error is fatal in librdkafka 2.0.2 (and
     * bumps the epoch when a later request's, which the relay treats the
     * same way): either way a new producer id published the rest. */
    ck_assert_msg(log.fatal > 0 && log.pids > 1,
                  "%s: %d fatal error lines, %d producer ids: the sequence error did not make the relay"
                  " recreate its producer", name, log.fatal, log.pids);
}
END_TEST

/* OBX_WINDOW_ONLY=first|mid|refused|seq runs one of the four (repeated
 * runs against another relay binary). */
int main(void) {
    const TTest *const all[] = {first_request_of_new_producer_lost, request_lost_mid_drain_recovers,
                                first_request_refused_behind_a_pipelined_one,
                                sequence_error_mid_drain_recreates_the_producer};
    const char *const names[] = {"first", "mid", "refused", "seq"};
    const char *only = getenv("OBX_WINDOW_ONLY");
    for (int i = 0; only && i < 4; i++)
        if (strcmp(only, names[i]) == 0)
            return th_main("cluster", 900, all + i, 1);
    return th_main("cluster", 900, all, 4);
}
