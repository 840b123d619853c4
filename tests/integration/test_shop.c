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

#define ORDERS 5000
#define SKUS 50
#define STOCK 60

typedef struct {
    th_ctx_t *t;
    const char *sql;
    long at_least;
} count_arg_t;

static int count_reached(void *p) {
    count_arg_t *a = p;
    PGconn *c = PQconnectdb(a->t->conninfo);
    int ok = 0;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, a->sql);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) >= a->at_least;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

static void wait_count(th_ctx_t *t, const char *sql, long n, int timeout_ms) {
    count_arg_t a = {t, sql, n};
    ck_assert_msg(th_wait(count_reached, &a, timeout_ms), "never reached %ld: %s", n, sql);
}

static const char *consumer_conf(th_ctx_t *t, const char *file, const char *bootstrap,
                                 const char *name, const char *topic) {
    static char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, file);
    f = fopen(path, "w");
    fprintf(f,
            "postgres: { conninfo = \"%s\"; };\n"
            "kafka: { bootstrap_servers = \"%s\"; group_id = \"%s\"; session_timeout_ms = 6000;"
            " heartbeat_interval_ms = 500; };\n"
            "consumer: { name = \"%s\"; topics = [\"%s.%s\"]; batch_size = 200; };\n"
            "log: { stats_interval_s = 1; };\n",
            t->conninfo, bootstrap, name, name, t->topic_prefix, topic);
    fclose(f);
    return path;
}

static void gen_orders(th_ctx_t *t, int n, int stock) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' -d '%s' -n %d --skus %d --stock %d --clients 4 --hot-skus 10"
                              " >>'%s/ordergen.out' 2>>'%s/ordergen.log'",
             th_bin("obx-order-gen"), t->conninfo, n, SKUS, stock, t->dir, t->dir);
    ck_assert_int_eq(th_run(cmd), 0);
}

/* Every invariant of the flash sale, row by row from the tables. */
static void check_invariants(th_ctx_t *t, int orders) {
    PGconn *c = th_connect(t);
    long long deducted, rejected, captured, cancelled, amount;

    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_orders"), orders);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock WHERE available < 0"), 0);
    /* Deducted quantity equals initial minus final stock, per sku. */
    ck_assert_int_eq(th_int(c,
        "SELECT count(*) FROM shop_stock s LEFT JOIN (SELECT sku, sum(qty) q FROM shop_stock_moves"
        " WHERE outcome = 'deducted' GROUP BY sku) m USING (sku)"
        " WHERE s.initial - s.available <> COALESCE(m.q, 0)"), 0);
    /* Every order decided once by stock, and has exactly one final outcome. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_orders o LEFT JOIN shop_stock_moves m USING (order_id)"
                               " WHERE m.order_id IS NULL"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_orders o LEFT JOIN shop_order_outcomes x USING (order_id)"
                               " WHERE x.order_id IS NULL"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_order_outcomes"), orders);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves m JOIN shop_order_outcomes x USING (order_id)"
                               " WHERE (m.outcome = 'deducted') <> (x.outcome = 'captured')"), 0);
    /* The ledger: one capture per captured order, for the order's amount, no refunds. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_ledger WHERE kind = 'refund'"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_order_outcomes x FULL JOIN shop_ledger l USING (order_id)"
                               " WHERE COALESCE(x.outcome = 'captured', false) <> COALESCE(l.kind = 'capture', false)"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_ledger l JOIN shop_orders o USING (order_id)"
                               " WHERE l.amount_cents <> o.amount_cents"), 0);
    /* No event applied twice, none parked: one inbox row per event and consumer. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'stock'"), orders);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'payment'"), orders);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status NOT IN ('applied', 'rejected')"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"), 0);
    deducted = th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE outcome = 'deducted'");
    rejected = th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE outcome = 'rejected'");
    captured = th_int(c, "SELECT count(*) FROM shop_order_outcomes WHERE outcome = 'captured'");
    cancelled = th_int(c, "SELECT count(*) FROM shop_order_outcomes WHERE outcome = 'cancelled'");
    amount = th_int(c, "SELECT sum(amount_cents) FROM shop_ledger");
    ck_assert_int_gt(deducted, 0);
    ck_assert_int_gt(rejected, 0); /* it was a flash sale: demand exceeded stock */
    fprintf(stderr, "flash sale: orders=%d skus=%d stock_per_sku=%d deducted=%lld rejected=%lld"
                    " captured=%lld cancelled=%lld ledger_total_cents=%lld units_left=%lld\n",
            orders, SKUS, STOCK, deducted, rejected, captured, cancelled, amount,
            th_int(c, "SELECT sum(available) FROM shop_stock"));
    PQfinish(c);
}

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
    snprintf(sconf, sizeof sconf, "%s", consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", consumer_conf(&t, "payment.conf", m.bootstrap, "payment", "stock"));
    relay = th_relay_start(&t, rconf);
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "stock-a.log");
    stock_b = th_spawn(&t, "obx-stock-consumer", sconf, "stock-b.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    t0 = th_now_ms();
    gen_orders(&t, ORDERS, STOCK);
    fprintf(stderr, "flash sale: %d orders written in %lld ms\n", ORDERS, (long long)(th_now_ms() - t0));

    /* Faults, each at a point where work is under way. */
    wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 500, 60000);
    ck_assert_int_eq(th_relay_stop(relay, SIGKILL, 5000), 128 + SIGKILL);
    relay = th_relay_start(&t, rconf);
    wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 1500, 60000);
    ck_assert_int_eq(th_relay_stop(stock_a, SIGKILL, 5000), 128 + SIGKILL);
    wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", 1000, 60000);
    ck_assert_int_eq(th_relay_stop(pay, SIGKILL, 5000), 128 + SIGKILL);
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    stock_a = th_spawn(&t, "obx-stock-consumer", sconf, "stock-a.log");
    wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 3000, 60000);
    ck_assert_int_eq(th_relay_stop(stock_b, SIGTERM, 20000), 0); /* a clean leave: rebalance */

    wait_count(&t, "SELECT count(*) FROM shop_order_outcomes", ORDERS, 120000);
    fprintf(stderr, "flash sale: all %d orders decided %lld ms after the first write\n", ORDERS,
            (long long)(th_now_ms() - t0));
    ck_assert(th_wait_drained(&t, 30000));
    check_invariants(&t, ORDERS);
    ck_assert_int_ge(th_file_count(&t, "stock-a.log", "msg=\"partition assigned\""), 2);

    /* Replay: the stock consumer forgets its offsets and reads the topic from 0. */
    ck_assert_int_eq(th_relay_stop(stock_a, SIGTERM, 20000), 0);
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
    ck_assert_int_eq(th_relay_stop(stock_a, SIGTERM, 20000), 0);
    /* Every event of the replay was a duplicate: effects unchanged. */
    {
        char needle[128];
        snprintf(needle, sizeof needle, "consumer=stock applied=0 rejected=0 duplicates=%d parked=0", ORDERS);
        ck_assert_int_eq(th_file_count(&t, "replay.log", "msg=\"consumer stopped\""), 1);
        ck_assert_int_ge(th_file_count(&t, "replay.log", needle), 1);
    }
    check_invariants(&t, ORDERS);

    ck_assert_int_eq(th_relay_stop(pay, SIGTERM, 20000), 0);
    ck_assert_int_eq(th_relay_stop(relay, SIGTERM, 20000), 0);
    th_mock_stop(&m);
}
END_TEST

TH_MAIN("shop", 400, flash_sale_with_kills_and_rebalances)
