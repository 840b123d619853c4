/* End to end: 10,000 rows from concurrent writers through the relay to Kafka
 * (mock cluster and a real broker), every event checked on the topic. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

#define ROWS 10000

static void run_e2e(const char *name, const char *bootstrap, th_mock_t *mock) {
    th_ctx_t t;
    th_msgs_t msgs;
    char topic[128];
    pid_t relay;
    int64_t t0, t1;
    long written, dups;
    PGconn *c;

    th_setup(&t, name);
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    if (mock)
        ck_assert_int_eq(rd_kafka_mock_topic_create(mock->mc, topic, 4, 3), 0);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", bootstrap, "", ""));
    t0 = th_now_ms();
    written = th_write(&t, 4, ROWS, 200, 300, "order");
    t1 = th_now_ms();
    ck_assert_int_eq(written, ROWS);
    th_drain(&t, 60000);
    fprintf(stderr, "%s: %d rows written in %lld ms by 4 writers, all marked sent %lld ms after the first write\n",
            name, ROWS, (long long)(t1 - t0), (long long)(th_now_ms() - t0));
    c = th_connect(&t);
    fprintf(stderr, "%s: commit-to-mark latency p50=%lld ms p99=%lld ms max=%lld ms\n", name,
            th_int(c, "SELECT (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)) * 1000)::bigint FROM outbox"),
            th_int(c, "SELECT (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)) * 1000)::bigint FROM outbox"),
            th_int(c, "SELECT (max(extract(epoch FROM sent_at - created_at)) * 1000)::bigint FROM outbox"));
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), ROWS);
    PQfinish(c);
    th_consume(bootstrap, topic, ROWS, 60000, &msgs);
    dups = th_verify(&t, &msgs, "order");
    ck_assert_int_eq(dups, 0); /* no crash, no duplicate */
    th_msgs_free(&msgs);
    th_stop(relay, SIGTERM, 20000, 0);
    ck_assert_int_ge(th_log_count(&t, "msg=stats"), 1);
    ck_assert_int_eq(th_log_count(&t, "msg=\"relay stopped\""), 1);
    th_teardown(&t);
}

START_TEST(e2e_mock) {
    th_mock_t m;
    th_mock_start(&m, 3);
    run_e2e("e2e_mock", m.bootstrap, &m);
    th_mock_stop(&m);
}
END_TEST

START_TEST(e2e_real_broker) {
    const char *b = getenv("OBX_KAFKA_BOOTSTRAP");
    ck_assert_msg(b && *b, "OBX_KAFKA_BOOTSTRAP unset: tests/run.sh starts a real broker");
    run_e2e("e2e_real", b, NULL);
}
END_TEST

TH_MAIN("e2e", 300, e2e_mock, e2e_real_broker)
