/* The order flow end to end, through real processes: obx-order-gen writes
 * orders and OrderPlaced events; the relay publishes them; two stock
 * consumers in one group deduct stock; the payment consumer captures.
 * Faults along the way: relay SIGKILL (re-publishing), stock consumer SIGKILL
 * mid-batch and a clean leave (rebalances), payment consumer SIGKILL, then a
 * replay of the whole topic from offset 0. The checks query the database
 * directly; they do not trust the services' counters. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "shop.h"

#define ORDERS 5000
#define STOCK 60

START_TEST(flash_sale_with_kills_and_rebalances) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay, stock_a, stock_b, pay;
    const char *rconf;
    char sconf[512], pconf[512];
    char topic[128];
    PGconn *c;
    int64_t t0;
    static const char *const topics[] = {"order", "stock", "payment"};

    th_mock_start(&m, 3);
    th_setup(&t, "shop");
    for (int i = 0; i < 3; i++) {
        snprintf(topic, sizeof topic, "%s.%s", t.topic_prefix, topics[i]);
        ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 3), 0);
    }
    c = th_connect(&t);
    th_apply_sql(c, "schema/003_shop.sql");
    PQfinish(c);
    rconf = th_config(&t, "relay.conf", m.bootstrap, "batch_size = 200;", "");
    snprintf(sconf, sizeof sconf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", th_consumer_conf(&t, "payment.conf", m.bootstrap, "payment", "stock"));
    relay = th_relay_start(&t, rconf);
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "stock-a.log");
    stock_b = th_spawn(&t, "obx-stock-consumer", sconf, "stock-b.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    t0 = th_now_ms();
    th_gen_orders(&t, ORDERS, STOCK);
    fprintf(stderr, "flash sale: %d orders written in %lld ms\n", ORDERS, (long long)(th_now_ms() - t0));

    /* Faults, each at a point where work is under way. */
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 500, 60000);
    th_stop(relay, SIGKILL, 5000, 128 + SIGKILL);
    relay = th_relay_start(&t, rconf);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 1500, 60000);
    th_stop(stock_a, SIGKILL, 5000, 128 + SIGKILL);
    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 1000, 60000);
    th_stop(pay, SIGKILL, 5000, 128 + SIGKILL);
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "stock-a.log");
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 3000, 60000);
    th_stop(stock_b, SIGTERM, 20000, 0); /* a clean leave: rebalance */

    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", ORDERS, 120000);
    fprintf(stderr, "flash sale: all %d orders decided %lld ms after the first write\n", ORDERS,
            (long long)(th_now_ms() - t0));
    th_drain(&t, 30000);
    th_shop_check(&t, ORDERS);
    ck_assert_int_ge(th_file_count(&t, "stock-a.log", "msg=\"partition assigned\""), 2);

    /* Replay: the stock consumer forgets its offsets and reads the topic from 0. */
    th_stop(stock_a, SIGTERM, 20000, 0);
    c = th_connect(&t);
    th_exec(c, "DELETE FROM consumer_offsets WHERE consumer = 'stock'");
    PQfinish(c);
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "replay.log");
    {
        int64_t deadline = th_now_ms() + (int64_t)(60000 * th_mult());
        c = th_connect(&t);
        while (th_int(c, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'stock'") <
                   th_int(c, "SELECT count(*) FROM outbox WHERE aggregate_type = 'order'") &&
               th_now_ms() < deadline)
            usleep(50000);
        PQfinish(c);
    }
    th_stop(stock_a, SIGTERM, 20000, 0);
    /* Every event of the replay was a duplicate: effects unchanged. The
     * topic may hold more than ORDERS messages: the relay killed above
     * publishes again what it had not marked. */
    {
        const char *stopped = "msg=\"consumer stopped\"";
        long long applied = th_file_field(&t, "replay.log", stopped, "applied"),
                  rejected = th_file_field(&t, "replay.log", stopped, "rejected"),
                  parked = th_file_field(&t, "replay.log", stopped, "parked"),
                  dups = th_file_field(&t, "replay.log", stopped, "duplicates");
        ck_assert_int_eq(th_file_count(&t, "replay.log", stopped), 1);
        ck_assert_msg(applied == 0 && rejected == 0 && parked == 0 && dups >= ORDERS,
                      "replay: applied=%lld rejected=%lld parked=%lld duplicates=%lld, expected 0 0 0 and >= %d",
                      applied, rejected, parked, dups, ORDERS);
    }
    th_shop_check(&t, ORDERS);

    th_stop(pay, SIGTERM, 20000, 0);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

static int stock_b_joined(void *t) {
    return th_file_count(t, "stock-b.log", "msg=\"partition assigned\"") > 0;
}

/* The same flow on a real Kafka broker: group coordination, rebalances and
 * offsets as a real cluster does them. */
START_TEST(flash_sale_real_broker) {
    th_ctx_t t;
    const char *b = getenv("OBX_KAFKA_BOOTSTRAP");
    pid_t relay, stock_a, stock_b, pay;
    char sconf[512], pconf[512];
    PGconn *c;

    ck_assert_msg(b && *b, "OBX_KAFKA_BOOTSTRAP unset: tests/run.sh starts a real broker");
    th_setup(&t, "shop_real");
    c = th_connect(&t);
    th_apply_sql(c, "schema/003_shop.sql");
    PQfinish(c);
    snprintf(sconf, sizeof sconf, "%s", th_consumer_conf(&t, "stock.conf", b, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", th_consumer_conf(&t, "payment.conf", b, "payment", "stock"));
    relay = th_relay_start(&t, th_config(&t, "relay.conf", b, "", ""));
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "stock-a.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    th_gen_orders(&t, 2000, 30);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 500, 60000);
    stock_b = th_spawn(&t, "obx-stock-consumer", sconf, "stock-b.log"); /* joins: rebalance */
    /* Under valgrind the flow could finish before B had even connected, and
     * the SIGTERM below then caught it starting up. */
    ck_assert_msg(th_wait(stock_b_joined, &t, 60000), "consumer B never joined; see %s/stock-b.log", t.dir);
    th_wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 2000, 120000);
    th_drain(&t, 30000);
    th_shop_check(&t, 2000);
    th_stop(stock_b, SIGTERM, 30000, 0);
    th_stop(stock_a, SIGTERM, 30000, 0);
    th_stop(pay, SIGTERM, 30000, 0);
    th_stop(relay, SIGTERM, 30000, 0);
    ck_assert_int_ge(th_file_count(&t, "stock-a.log", "msg=\"partitions revoked\""), 1);
}
END_TEST

TH_MAIN("shop", 400, flash_sale_with_kills_and_rebalances, flash_sale_real_broker)
