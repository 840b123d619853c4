/* Faults: relay SIGKILL, PostgreSQL restart, broker outage, leader failover,
 * graceful shutdown with messages in flight. After each, every committed row
 * must be on Kafka (G1), first occurrences in per-key id order (G2). */
#include <check.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "cluster.h"
#include "proc.h"
#include "shop.h"

typedef struct {
    th_ctx_t *t;
    long n;
    long written;
} bg_write_t;

static void *bg_writer(void *p) {
    bg_write_t *w = p;
    w->written = th_write(w->t, 4, w->n, 100, 300, "order");
    return NULL;
}

typedef struct {
    th_ctx_t *t;
    long at_least;
} marked_arg_t;

static int marked_at_least(void *p) {
    marked_arg_t *m = p;
    PGconn *c = PQconnectdb(m->t->conninfo);
    int ok = 0;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) >= m->at_least;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

static void wait_marked(th_ctx_t *t, long n) {
    marked_arg_t m = {t, n};
    ck_assert_msg(th_wait(marked_at_least, &m, 60000), "never reached %ld marked rows", n);
}

/* librdkafka's mock cluster checks no sequence numbers without
 * transactional.id (rd_kafka_mock_validate_records returns early) and a
 * Produce request that takes an injected error appends nothing, so a request
 * pipelined behind a failed one is appended over the gap and librdkafka
 * acknowledges the failed one's messages implicitly (debug IMPLICITACK):
 * marked sent, never written (KNOWN-ISSUES.md). Tests that make produce
 * requests fail keep one request in flight per connection, to test the
 * relay's fault handling rather than this artefact. */
#define ONE_IN_FLIGHT "max_in_flight_requests_per_connection = 1;"

static void mock_topic(th_mock_t *m, const th_ctx_t *t) {
    char topic[128];
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, 4, 3), 0);
}

static long check_all(th_ctx_t *t, const char *bootstrap, long rows) {
    return th_check_published(t, bootstrap, "order", rows);
}

START_TEST(relay_sigkill_twice) {
    th_ctx_t t;
    th_mock_t m;
    bg_write_t w;
    pthread_t th;
    const char *conf;
    pid_t relay;
    long dups;

    th_mock_start(&m, 3);
    th_setup(&t, "sigkill");
    mock_topic(&m, &t);
    /* Small batches and a slower broker keep many rows between produce and mark. */
    conf = th_config(&t, "relay.conf", m.bootstrap, "batch_size = 200;", "");
    rd_kafka_mock_broker_set_rtt(m.mc, -1, 20);
    relay = th_relay_start(&t, conf);
    w = (bg_write_t){&t, 10000, 0};
    pthread_create(&th, NULL, bg_writer, &w);
    wait_marked(&t, 1500);
    th_stop(relay, SIGKILL, 5000, 128 + SIGKILL);
    relay = th_relay_start(&t, conf);
    wait_marked(&t, 5000);
    th_stop(relay, SIGKILL, 5000, 128 + SIGKILL);
    relay = th_relay_start(&t, conf);
    pthread_join(th, NULL);
    ck_assert_int_eq(w.written, 10000);
    dups = check_all(&t, m.bootstrap, 10000);
    fprintf(stderr, "sigkill: 2 kills, 10000 rows, %ld duplicates published (allowed)\n", dups);
    th_stop(relay, SIGTERM, 20000, 0);
    ck_assert_int_eq(th_log_count(&t, "msg=\"relay starting\""), 3);
    th_mock_stop(&m);
}
END_TEST

START_TEST(postgres_restart) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;

    th_mock_start(&m, 1);
    th_setup(&t, "pgrestart");
    mock_topic(&m, &t);
    rd_kafka_mock_broker_set_rtt(m.mc, -1, 20);
    ck_assert_int_eq(th_write(&t, 4, 6000, 100, 300, "order"), 6000);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "batch_size = 100;", ""));
    wait_marked(&t, 1000);
    th_pg_ctl("restart fast");
    ck_assert_int_eq(th_write(&t, 4, 3000, 100, 300, "order"), 3000);
    th_pg_ctl("restart immediate");
    check_all(&t, m.bootstrap, 9000);
    ck_assert_int_ge(th_log_count(&t, "msg=\"postgres connection lost\""), 1);
    ck_assert_int_ge(th_log_count(&t, "msg=\"postgres connected\""), 2);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

static int count_unsent(th_ctx_t *t) {
    PGconn *c = th_connect(t);
    int n = (int)th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL");
    PQfinish(c);
    return n;
}

START_TEST(broker_down_10s) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;

    th_mock_start(&m, 1);
    th_setup(&t, "brokerdown");
    mock_topic(&m, &t);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ONE_IN_FLIGHT));
    ck_assert_int_eq(th_write(&t, 2, 1000, 50, 300, "order"), 1000);
    th_drain(&t, 30000);
    ck_assert_int_eq(rd_kafka_mock_broker_set_down(m.mc, 1), 0);
    ck_assert_int_eq(th_write(&t, 2, 2000, 50, 300, "order"), 2000);
    /* The outage itself (not a synchronisation sleep): nothing may be marked
     * sent while no broker can acknowledge. */
    sleep(10);
    ck_assert_int_eq(count_unsent(&t), 2000);
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(m.mc, 1), 0);
    check_all(&t, m.bootstrap, 3000);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

START_TEST(standby_takes_over) {
    th_ctx_t t;
    th_mock_t m;
    pid_t a, b;
    const char *conf;

    th_mock_start(&m, 1);
    th_setup(&t, "standby");
    mock_topic(&m, &t);
    conf = th_config(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "");
    a = th_relay_start(&t, conf);
    ck_assert_int_eq(th_write(&t, 2, 500, 20, 100, "order"), 500);
    th_drain(&t, 30000);
    b = th_relay_start(&t, conf);
    {
        int64_t deadline = th_now_ms() + (int64_t)(10000 * th_mult());
        while (th_log_count(&t, "role=standby") < 1 && th_now_ms() < deadline)
            usleep(20000);
    }
    ck_assert_int_eq(th_log_count(&t, "role=standby"), 1);
    th_stop(a, SIGKILL, 5000, 128 + SIGKILL);
    ck_assert_int_eq(th_write(&t, 2, 500, 20, 100, "order"), 500);
    check_all(&t, m.bootstrap, 1000);
    ck_assert_int_eq(th_log_count(&t, "msg=\"leadership acquired\""), 1);
    th_stop(b, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

static int log_has_shutdown_line(void *p) {
    return th_log_count(p, "msg=\"relay stopped\"") > 0;
}

/* Stats lines that show rows in flight. */
static int busy_stats(const th_ctx_t *t) {
    return th_log_count(t, "msg=stats") - th_file_count_fields(t, "relay.log", "msg=stats inflight=0");
}

typedef struct {
    const th_ctx_t *t;
    int before;
} busy_arg_t;

static int busy_stats_since(void *p) {
    busy_arg_t *a = p;
    return busy_stats(a->t) > a->before;
}

START_TEST(graceful_shutdown_in_flight) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    busy_arg_t busy = {&t, 0};
    pid_t relay;
    char topic[128];
    PGconn *c;
    PGresult *r;
    int marked, missing = 0;

    th_mock_start(&m, 1);
    th_setup(&t, "graceful");
    mock_topic(&m, &t);
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    /* A slow broker (300 ms per acknowledgement) and a small in-flight bound:
     * draining takes seconds, so SIGTERM finds rows in flight. */
    rd_kafka_mock_broker_set_rtt(m.mc, 1, 300);
    ck_assert_int_eq(th_write(&t, 2, 3000, 50, 300, "order"), 3000);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap,
                                         "batch_size = 100; max_inflight = 200;", ""));
    wait_marked(&t, 100);
    /* Then acknowledgements take 5 s: what the relay produces from now on
     * is still in flight when a stats line shows it, and at the SIGTERM
     * that follows (batches sent in pairs used to be acknowledged in pairs,
     * and a SIGTERM between them found nothing in flight). */
    rd_kafka_mock_broker_set_rtt(m.mc, 1, 5000);
    busy.before = busy_stats(&t);
    ck_assert_msg(th_wait(busy_stats_since, &busy, 20000), "no stats line with rows in flight in %s/relay.log",
                  t.dir);
    th_stop(relay, SIGTERM, 20000, 0);
    ck_assert_msg(th_wait(log_has_shutdown_line, &t, 1000), "no \"relay stopped\" in %s/relay.log", t.dir);
    rd_kafka_mock_broker_set_rtt(m.mc, 1, 0);
    c = th_connect(&t);
    marked = (int)th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL");
    fprintf(stderr, "graceful: %d of 3000 rows marked at shutdown\n", marked);
    ck_assert_int_gt(marked, 0);
    ck_assert_int_lt(marked, 3000); /* it stopped claiming */
    ck_assert_int_eq(th_file_count_fields(&t, "relay.log", "event=shutting_down inflight=0"), 0); /* SIGTERM found rows in flight */
    /* Every row marked sent must be on Kafka: marks only follow acknowledgements. */
    th_consume(m.bootstrap, topic, (size_t)marked, 30000, &msgs);
    r = PQexec(c, "SELECT event_id::text FROM outbox WHERE sent_at IS NOT NULL");
    for (int i = 0; i < PQntuples(r); i++) {
        int found = 0;
        for (size_t j = 0; j < msgs.n && !found; j++)
            found = strcmp(msgs.v[j].event_id, PQgetvalue(r, i, 0)) == 0;
        missing += !found;
    }
    PQclear(r);
    PQfinish(c);
    th_msgs_free(&msgs);
    ck_assert_int_eq(missing, 0);
    ck_assert_int_eq(th_log_count(&t, "msg=\"shutting down\""), 1);
    ck_assert_int_eq(th_log_count(&t, "shutdown deadline passed"), 0);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    check_all(&t, m.bootstrap, 3000);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* The consumers' database restarts under load: batches roll back, the
 * consumers reconnect and retry, nothing is skipped or applied twice. */
START_TEST(consumers_survive_postgres_restart) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay, stock, pay;
    char sconf[512], pconf[512], topic[128];
    PGconn *c;
    static const char *const topics[] = {"order", "stock", "payment"};

    th_mock_start(&m, 1);
    th_setup(&t, "consumer_pgrestart");
    for (int i = 0; i < 3; i++) {
        snprintf(topic, sizeof topic, "%s.%s", t.topic_prefix, topics[i]);
        ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 1), 0);
    }
    c = th_connect(&t);
    th_apply_sql(c, "schema/003_shop.sql");
    PQfinish(c);
    snprintf(sconf, sizeof sconf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", th_consumer_conf(&t, "payment.conf", m.bootstrap, "payment", "stock"));
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    stock = th_spawn(&t, "obx-stock-consumer", sconf, "stock.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    th_gen_orders(&t, 3000, 40);
    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 300, 60000);
    th_pg_ctl("restart fast");
    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 1500, 60000);
    th_pg_ctl("restart immediate");
    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 3000, 120000);
    th_drain(&t, 30000);
    th_shop_check(&t, 3000);
    ck_assert_int_ge(th_file_count(&t, "stock.log", "msg=\"postgres connected\"") +
                     th_file_count(&t, "payment.log", "msg=\"postgres connected\""), 4);
    th_stop(stock, SIGTERM, 20000, 0);
    th_stop(pay, SIGTERM, 20000, 0);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

#define PRODUCE_API 0 /* Kafka protocol ApiKey of Produce */

/* Replaces the first `from` of the config file conf with `to`. */
static void conf_replace(const char *conf, const char *from, const char *to) {
    char buf[4096], *at;
    size_t n;
    FILE *f = fopen(conf, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    at = strstr(buf, from);
    ck_assert_msg(at != NULL, "no \"%s\" in %s:\n%s", from, conf, buf);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    fclose(f);
}

/* Messages librdkafka acknowledged implicitly, from the relay log's
 * IMPLICITACK lines ("... [3] 4 message(s) implicitly acked ..."). */
static long implicit_acks(const th_ctx_t *t) {
    char path[512], line[8192];
    long n = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/relay.log", t->dir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, " message(s) implicitly acked");
        if (!p || !strstr(line, "IMPLICITACK"))
            continue;
        while (p > line && isdigit((unsigned char)p[-1]))
            p--;
        n += atol(p);
    }
    fclose(f);
    return n;
}

/* Retriable broker errors on produce requests and a leader move, with
 * librdkafka's eos debug on: 200 rows published first, then 8 errors, then
 * 2000 more rows. Returns the running relay. */
static pid_t inject_broker_errors(th_ctx_t *t, th_mock_t *m, const char *name, const char *kafka_extra) {
    char topic[128], kafka[256];
    pid_t relay;

    th_mock_start(m, 3);
    th_setup(t, name);
    mock_topic(m, t);
    snprintf(kafka, sizeof kafka, "debug = \"eos\"; %s", kafka_extra);
    relay = th_relay_start(t, th_config_level(t, "relay.conf", m->bootstrap, "batch_size = 100;", kafka, "debug"));
    ck_assert_int_eq(th_write(t, 2, 200, 20, 100, "order"), 200);
    th_drain(t, 30000);
    rd_kafka_mock_push_request_errors(m->mc, PRODUCE_API, 8,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    ck_assert_int_eq(th_write(t, 2, 2000, 20, 100, "order"), 2000);
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(m->mc, topic, 0, 2), 0); /* leader moved */
    return relay;
}

/* librdkafka retries the failed requests under the idempotent producer, so
 * nothing is lost, duplicated or reordered; with one request in flight,
 * nothing is acknowledged implicitly. */
START_TEST(broker_errors_injected) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay = inject_broker_errors(&t, &m, "brokererrors", ONE_IN_FLIGHT);
    long dups = check_all(&t, m.bootstrap, 2200);

    fprintf(stderr, "broker errors: 8 injected, %ld duplicates on the topic\n", dups);
    ck_assert_int_eq(implicit_acks(&t), 0);
    ck_assert_int_eq(th_log_count(&t, "msg=\"event parked\""), 0);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* The same with librdkafka's default pipelining (5 requests in flight): the
 * mock's missing sequence check may lose events, but only those librdkafka
 * acknowledged implicitly; everything else holds. */
START_TEST(broker_errors_implicit_acks_accounted) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    th_verify_t v;
    char topic[128];
    pid_t relay = inject_broker_errors(&t, &m, "implicitacks", "");
    long implicit;

    th_drain(&t, 60000);
    implicit = implicit_acks(&t);
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    th_consume(m.bootstrap, topic, (size_t)(2200 - implicit), 60000, &msgs);
    v = th_verify_counts(&t, &msgs, "order");
    th_msgs_free(&msgs);
    fprintf(stderr, "broker errors, pipelined: %ld message(s) acknowledged implicitly, %ld lost,"
                    " %ld duplicates on the topic\n", implicit, v.lost, v.duplicates);
    ck_assert_int_eq(v.rows, 2200);
    ck_assert_int_le(v.lost, implicit);
    ck_assert_int_eq(v.unsent, 0);
    ck_assert_int_eq(v.order_violations, 0);
    ck_assert_int_eq(v.wrong_headers, 0);
    ck_assert_int_eq(th_log_count(&t, "msg=\"event parked\""), 0);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* Makes the slowed broker fast again, checks every row arrived, stops. */
static void finish_fast(th_ctx_t *t, th_mock_t *m, int32_t broker, pid_t relay, long rows) {
    rd_kafka_mock_broker_set_rtt(m->mc, broker, 0);
    check_all(t, m->bootstrap, rows);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(m);
}

/* Acknowledgements that arrive while PostgreSQL is down wait for the
 * reconnect, and the relay idles meanwhile (a mark deadline it could not
 * act on once made its loop spin at full CPU); then every row is marked. */
START_TEST(acks_wait_idly_while_postgres_is_down) {
    th_ctx_t t;
    th_mock_t m;
    busy_arg_t busy = {&t, 0};
    pid_t relay;
    double cpu;

    th_mock_start(&m, 1);
    th_setup(&t, "acksdown");
    mock_topic(&m, &t);
    ck_assert_int_eq(th_write(&t, 2, 300, 20, 100, "order"), 300);
    rd_kafka_mock_broker_set_rtt(m.mc, 1, 2000);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    ck_assert_msg(th_wait(busy_stats_since, &busy, 20000), "no stats line with rows in flight in %s/relay.log",
                  t.dir);
    th_pg_ctl("stop");
    /* A stats line of the disconnected relay with nothing in flight: the
     * acknowledgements came while PostgreSQL was down. */
    th_wait_log_fields(&t, "msg=stats inflight=0 backlog_known=false", 30000);
    cpu = proc_cpu_s(relay);
    usleep(1000000); /* a measuring window, not a wait for an event */
    cpu = proc_cpu_s(relay) - cpu;
    fprintf(stderr, "postgres down, acks pending: relay used %.2f s of CPU in 1 s\n", cpu);
    ck_assert_double_lt(cpu, 0.3);
    th_pg_ctl("start");
    finish_fast(&t, &m, 1, relay, 300);
}
END_TEST

/* Rows a fast broker acknowledged are marked while a slow one still holds
 * others: a mark waits for the rest of its batch only briefly. Were it to
 * wait until nothing is in flight, the first marks would come with the slow
 * broker's acknowledgements, every row at once. */
START_TEST(marks_do_not_wait_for_a_slow_broker) {
    th_ctx_t t;
    th_mock_t m;
    marked_arg_t some;
    pid_t relay;
    char topic[128];
    PGconn *c;
    long unsent;

    th_mock_start(&m, 2);
    th_setup(&t, "slowbroker");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 2, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(m.mc, topic, 0, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(m.mc, topic, 1, 2), 0);
    rd_kafka_mock_broker_set_rtt(m.mc, 2, 10000);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    ck_assert_int_eq(th_write(&t, 2, 200, 50, 100, "order"), 200);
    some = (marked_arg_t){&t, 1};
    ck_assert_msg(th_wait(marked_at_least, &some, 30000), "no row marked sent within 30 s; see %s/relay.log", t.dir);
    c = th_connect(&t);
    unsent = th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL");
    PQfinish(c);
    fprintf(stderr, "slow broker: %ld of 200 rows unsent at the first mark\n", unsent);
    ck_assert_int_gt(unsent, 0);
    finish_fast(&t, &m, 2, relay, 200);
}
END_TEST

/* A loopback TCP port nothing listens on now. */
static int free_port(void) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                      getsockname(fd, (struct sockaddr *)&a, &len) == 0,
                  "no free loopback port: %s", strerror(errno));
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The relay's PostgreSQL sessions behind a fault proxy of their own (to
 * the server's 127.0.0.1:OBX_TEST_PGPORT), started as *pid. Returns its
 * control port; *conninfo is th_config's through the proxy. */
static int pg_proxy_start(th_ctx_t *t, char *conninfo, size_t size, pid_t *pid) {
    int listen = free_port(), ctl = free_port();
    char route[48], ctls[16], *argv[] = {(char *)th_bin("tests/obx-faultproxy"), ctls, route, NULL};
    snprintf(ctls, sizeof ctls, "%d", ctl);
    snprintf(route, sizeof route, "%d:%d:raw", listen, atoi(getenv("OBX_TEST_PGPORT")));
    *pid = th_spawn_argv(t, argv, "proxy.log");
    th_wait_file_log(t, "proxy.log", "control on", 10000);
    /* The last host= and port= win; TCP needs the password (tests/pg.sh). */
    ck_assert_msg(snprintf(conninfo, size, "%s host=127.0.0.1 port=%d password=postgres", t->conninfo, listen) <
                      (int)size,
                  "conninfo longer than %zu: %s", size, t->conninfo);
    return ctl;
}

/* The producer fails fatally on the first rows while the claim that
 * follows them is out (slow: every PostgreSQL exchange takes a second). That
 * claim returns after the producer was replaced: producing its rows then
 * would put them ahead of the failed rows of their keys, which only the
 * rescan from the low water publishes again. The relay drops it (claim_void). */
START_TEST(claim_out_when_the_producer_fails_is_dropped) {
    th_ctx_t t, via;
    th_mock_t m;
    const char *conf;
    pid_t relay, proxy;
    int ctl;

    th_mock_start(&m, 1);
    th_setup(&t, "voidclaim");
    mock_topic(&m, &t);
    ck_assert_int_eq(th_write(&t, 2, 1000, 20, 100, "order"), 1000);
    via = t;
    ctl = pg_proxy_start(&t, via.conninfo, sizeof via.conninfo, &proxy);
    th_proxy_fault(ctl, t.dir, 1, "latency 500");
    rd_kafka_mock_push_request_errors(m.mc, PRODUCE_API, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    conf = th_config_level(&via, "relay.conf", m.bootstrap, "batch_size = 100;", ONE_IN_FLIGHT, "debug");
    conf_replace(conf, "stats_interval_s = 1", "stats_interval_s = 0"); /* no stats query before the claim */
    relay = th_relay_start(&t, conf);
    th_wait_log(&t, "kafka producer recreated", 60000);
    th_wait_log_fields(&t, "event=claim_void", 30000);
    th_proxy_fault(ctl, t.dir, 1, "pass");
    check_all(&t, m.bootstrap, 1000);
    th_stop(relay, SIGTERM, 20000, 0);
    th_stop(proxy, SIGTERM, 5000, 0);
    th_mock_stop(&m);
}
END_TEST

/* An idempotence error the producer cannot recover from: the relay purges,
 * recreates the producer and publishes again what was not marked. */
START_TEST(fatal_idempotence_error_recreates_producer) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    long dups;

    th_mock_start(&m, 1);
    th_setup(&t, "fatal");
    mock_topic(&m, &t);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ONE_IN_FLIGHT));
    ck_assert_int_eq(th_write(&t, 2, 200, 20, 100, "order"), 200);
    th_drain(&t, 30000);
    rd_kafka_mock_push_request_errors(m.mc, PRODUCE_API, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    ck_assert_int_eq(th_write(&t, 2, 1000, 20, 100, "order"), 1000);
    dups = check_all(&t, m.bootstrap, 1200);
    fprintf(stderr, "fatal error: producer recreated %d time(s), %ld duplicates on the topic\n",
            th_log_count(&t, "kafka producer recreated"), dups);
    ck_assert_int_ge(th_log_count(&t, "msg=\"kafka fatal error, recreating the producer\""), 1);
    ck_assert_int_ge(th_log_count(&t, "kafka producer recreated"), 1);
    ck_assert_int_eq(th_log_count(&t, "msg=\"publish failed\""), 0); /* not the rows' fault */
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

TH_MAIN("faults", 300, relay_sigkill_twice, postgres_restart, consumers_survive_postgres_restart, broker_down_10s, broker_errors_injected,
        broker_errors_implicit_acks_accounted, fatal_idempotence_error_recreates_producer,
        claim_out_when_the_producer_fails_is_dropped, standby_takes_over, graceful_shutdown_in_flight,
        marks_do_not_wait_for_a_slow_broker, acks_wait_idly_while_postgres_is_down)
