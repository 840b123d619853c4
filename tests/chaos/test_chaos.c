/* Chaos: the whole order flow under continuous writer load while a seeded
 * schedule of faults hits every part: relay and consumer SIGKILLs, PostgreSQL
 * fast and immediate restarts, the relay's connection cut with messages in
 * flight, brokers down, produce errors, slow acknowledgements that time out
 * and are retried (the mock appends such retries again: duplicates the
 * consumers must drop), a partition leader move.
 * Afterwards: G1 (every row published and marked), G2 (first occurrences per
 * key in id order), G3 (every effect exactly once), stock never negative,
 * ledger consistent. Reproduce a run with OBX_CHAOS_SEED=<seed>;
 * CHAOS_LONG=1 runs a longer schedule. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "shop.h"

enum { F_RELAY_KILL, F_STOCK_KILL, F_PAYMENT_KILL, F_PG_FAST, F_PG_IMMEDIATE, F_PG_CUT,
       F_BROKER_DOWN, F_PRODUCE_ERRORS, F_SLOW_ACKS, F_LEADER_MOVE, F_KINDS };
static const char *const fault_names[F_KINDS] = {
    "relay_kill", "stock_kill", "payment_kill", "pg_fast_restart", "pg_immediate_restart",
    "relay_pg_cut", "broker_down", "produce_errors", "slow_acks", "leader_move"};

static uint64_t rng;
static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void cut_relay_connection(th_ctx_t *t) {
    PGconn *c = th_connect(t);
    th_exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE application_name = 'outbox-relay' AND datname = current_database()");
    PQfinish(c);
}

START_TEST(chaos_order_flow) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    th_verify_t v;
    pid_t relay, stock, pay, gen;
    char rconf[512], sconf[512], pconf[512], topic[128], cnt[512] = "";
    const char *seed_env = getenv("OBX_CHAOS_SEED");
    int long_run = getenv("CHAOS_LONG") && atoi(getenv("CHAOS_LONG"));
    int nfaults = long_run ? 60 : 14, orders = long_run ? 40000 : 8000, rate = long_run ? 250 : 200;
    int counts[F_KINDS] = {0}, perm[F_KINDS];
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    long long dup_effects;
    static const char *const topics[] = {"order", "stock", "payment"};
    PGconn *c;

    ck_assert_msg(getenv("OBX_TEST_PGDIR"), "OBX_TEST_PGDIR unset: tests/run.sh sets it");
    rng = seed * 2654435761ULL + 1;
    fprintf(stderr, "chaos: seed=%llu (rerun with OBX_CHAOS_SEED=%llu)\n", (unsigned long long)seed,
            (unsigned long long)seed);
    th_mock_start(&m, 3);
    th_setup(&t, "chaos");
    for (int i = 0; i < 3; i++) {
        snprintf(topic, sizeof topic, "%s.%s", t.topic_prefix, topics[i]);
        ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 3), 0);
    }
    c = th_connect(&t);
    th_apply_sql(c, "schema/003_shop.sql");
    PQfinish(c);
    /* A short request timeout: slow acknowledgements make the producer retry
     * requests the broker already appended. One request in flight per
     * connection: the mock checks no sequence numbers without
     * transactional.id (rd_kafka_mock_validate_records returns early), so a
     * request pipelined behind a failed one is appended over the gap and
     * librdkafka acknowledges the failed one's events implicitly, events lost
     * by the mock and not by the relay (KNOWN-ISSUES.md). */
    snprintf(rconf, sizeof rconf, "%s", th_config(&t, "relay.conf", m.bootstrap, "batch_size = 200;",
                                                  "request_timeout_ms = 1000;"
                                                  " max_in_flight_requests_per_connection = 1;"));
    snprintf(sconf, sizeof sconf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", th_consumer_conf(&t, "payment.conf", m.bootstrap, "payment", "stock"));
    relay = th_relay_start(&t, rconf);
    stock = th_spawn(&t, "obx-stock-consumer", sconf, "stock.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    gen = th_ordergen_spawn(&t, orders, rate);

    /* Every kind at least once, in a seeded order, then seeded picks. */
    for (int i = 0; i < F_KINDS; i++)
        perm[i] = i;
    for (int i = F_KINDS - 1; i > 0; i--) {
        int j = (int)rnd((unsigned)i + 1), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (int i = 0; i < nfaults; i++) {
        int kind = i < F_KINDS ? perm[i] : (int)rnd(F_KINDS);
        usleep((useconds_t)(300000 + rnd(1200000)));
        counts[kind]++;
        fprintf(stderr, "chaos: fault %d/%d %s\n", i + 1, nfaults, fault_names[kind]);
        switch (kind) {
        case F_RELAY_KILL:
            th_relay_stop(relay, SIGKILL, 5000);
            relay = th_relay_start(&t, rconf);
            break;
        case F_STOCK_KILL:
            th_relay_stop(stock, SIGKILL, 5000);
            stock = th_spawn(&t, "obx-stock-consumer", sconf, "stock.log");
            break;
        case F_PAYMENT_KILL:
            th_relay_stop(pay, SIGKILL, 5000);
            pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
            break;
        case F_PG_FAST: th_pg_ctl("restart fast"); break;
        case F_PG_IMMEDIATE: th_pg_ctl("restart immediate"); break;
        case F_PG_CUT: cut_relay_connection(&t); break;
        case F_BROKER_DOWN: {
            int b = 1 + (int)rnd(3);
            rd_kafka_mock_broker_set_down(m.mc, b);
            usleep((useconds_t)(1000000 + rnd(3000000)));
            rd_kafka_mock_broker_set_up(m.mc, b);
            break;
        }
        case F_PRODUCE_ERRORS:
            rd_kafka_mock_push_request_errors(m.mc, 0 /* Produce */, 5,
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR__TRANSPORT,
                RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
            break;
        case F_SLOW_ACKS:
            rd_kafka_mock_broker_set_rtt(m.mc, -1, 1500);
            usleep(2500000);
            rd_kafka_mock_broker_set_rtt(m.mc, -1, 0);
            break;
        case F_LEADER_MOVE:
            snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
            rd_kafka_mock_partition_set_leader(m.mc, topic, (int32_t)rnd(4), 1 + (int32_t)rnd(3));
            break;
        }
    }
    th_shop_finish(&t, gen, orders, 180000);

    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    th_consume(m.bootstrap, topic, (size_t)orders, 60000, &msgs);
    v = th_verify_counts(&t, &msgs, "order");
    th_msgs_free(&msgs);
    c = th_connect(&t);
    dup_effects = th_int(c, "SELECT count(*) FROM shop_stock s LEFT JOIN (SELECT sku, sum(qty) q FROM shop_stock_moves"
                            " WHERE outcome = 'deducted' GROUP BY sku) d USING (sku)"
                            " WHERE s.initial - s.available <> COALESCE(d.q, 0)") +
                  th_int(c, "SELECT count(*) - count(DISTINCT event_id) FROM processed_events");
    PQfinish(c);
    for (int k = 0; k < F_KINDS; k++) {
        size_t len = strlen(cnt);
        snprintf(cnt + len, sizeof cnt - len, "%s%s:%d", len ? "," : "", fault_names[k], counts[k]);
    }
    fprintf(stderr, "chaos summary: seed=%llu events=%ld faults=%d (%s) lost=%ld duplicated_effects=%lld"
                    " order_violations=%ld duplicates_published=%ld\n",
            (unsigned long long)seed, v.rows, nfaults, cnt, v.lost + v.unsent, dup_effects,
            v.order_violations, v.duplicates);
    ck_assert_int_eq(v.rows, orders);
    ck_assert_int_eq(v.lost + v.unsent, 0);
    ck_assert_int_eq(v.order_violations, 0);
    ck_assert_int_eq(v.wrong_headers, 0);
    ck_assert_int_eq(dup_effects, 0);
    th_shop_check(&t, orders);
    th_stop(stock, SIGTERM, 30000, 0);
    th_stop(pay, SIGTERM, 30000, 0);
    th_stop(relay, SIGTERM, 30000, 0);
    th_mock_stop(&m);
}
END_TEST

TH_MAIN("chaos", 1800, chaos_order_flow)
