/* Bad messages at the consumer: each is parked in dead_letters with its
 * reason, logged once, and every good event still takes effect. Also the
 * stock consumer's compensations and its batch decisions. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shop.h"

/* Produces one raw message; event_id/event_type NULL leave the header out. */
static void produce_raw(const char *bootstrap, const char *topic, const char *event_id,
                        const char *event_type, const char *payload) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);

    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_ptr_nonnull(rk);
    if (event_id)
        rd_kafka_header_add(h, "event_id", -1, event_id, -1);
    if (event_type)
        rd_kafka_header_add(h, "event_type", -1, event_type, -1);
    ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("bad", 3),
                                       RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END), 0);
    ck_assert_int_eq(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
}

static void assert_dead_letter(th_ctx_t *t, PGconn *c, const char *event_id, const char *reason) {
    char sql[512], needle[128];
    if (event_id)
        snprintf(sql, sizeof sql, "SELECT count(*) FROM dead_letters WHERE event_id = '%s' AND reason LIKE '%%%s%%'",
                 event_id, reason);
    else
        snprintf(sql, sizeof sql, "SELECT count(*) FROM dead_letters WHERE event_id IS NULL AND reason LIKE '%%%s%%'",
                 reason);
    ck_assert_msg(th_int(c, sql) == 1, "no dead letter for %s with \"%s\"", event_id ? event_id : "(none)", reason);
    if (event_id) {
        snprintf(needle, sizeof needle, "event_id=%s", event_id);
        ck_assert_int_eq(th_file_count(t, "stock.log", needle), 1);
    }
}

START_TEST(bad_messages_parked_good_ones_flow) {
    th_ctx_t t;
    th_mock_t m;
    char topic[128], conf[512];
    pid_t relay, stock;
    PGconn *c;
    static const char *const ids[] = {
        "b0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002",
        "b0000000-0000-4000-8000-000000000003", "b0000000-0000-4000-8000-000000000004",
    };

    th_mock_start(&m, 1);
    th_setup(&t, "consumer_input");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 2, 1), 0);
    c = th_connect(&t);
    th_apply_sql(c, "schema/003_shop.sql");
    produce_raw(m.bootstrap, topic, NULL, "OrderPlaced", "{\"order_id\": 1}");
    produce_raw(m.bootstrap, topic, "not-a-uuid", "OrderPlaced", "{}");
    produce_raw(m.bootstrap, topic, ids[0], "OrderPlaced", "{\"order_id\": 900001, \"sku\": \"sku-1\", \"qty\"");
    produce_raw(m.bootstrap, topic, ids[1], "OrderPlaced", "this is not json");
    produce_raw(m.bootstrap, topic, ids[2], "OrderShipped", "{\"order_id\": 900003}");
    produce_raw(m.bootstrap, topic, ids[3], "OrderPlaced",
                "{\"order_id\": 900004, \"sku\": \"sku-1\", \"qty\": -2, \"amount_cents\": 100}");
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    snprintf(conf, sizeof conf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    stock = th_spawn(&t, "obx-stock-consumer", conf, "stock.log");
    th_gen_orders(&t, 300, 1000);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 300, 60000);
    th_wait_count(&t, "SELECT count(*) FROM dead_letters", 6, 30000);
    th_stop(stock, SIGTERM, 20000, 0);
    assert_dead_letter(&t, c, NULL, "missing event_id header");
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters WHERE event_id = 'not-a-uuid'"
                               " AND reason = 'invalid event_id header'"), 1);
    assert_dead_letter(&t, c, ids[0], "invalid input syntax for type json");
    assert_dead_letter(&t, c, ids[1], "invalid input syntax for type json");
    assert_dead_letter(&t, c, ids[2], "unknown event type \"OrderShipped\"");
    assert_dead_letter(&t, c, ids[3], "needs order_id, sku and qty > 0");
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters"), 6);
    /* Nothing of the bad messages took effect; every good order did, once. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE order_id > 900000"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves"), 300);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock s LEFT JOIN (SELECT sku, sum(qty) q"
                               " FROM shop_stock_moves WHERE outcome = 'deducted' GROUP BY sku) d USING (sku)"
                               " WHERE s.initial - s.available <> COALESCE(d.q, 0)"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'parked'"), 4);
    ck_assert_int_eq(th_file_count(&t, "stock.log", "msg=\"message parked\""), 6);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

#define UA "a0000000-0000-4000-8000-00000000000a"
#define CA "c0000000-0000-4000-8000-00000000000a"
#define UB "a0000000-0000-4000-8000-00000000000b"
#define CB "c0000000-0000-4000-8000-00000000000b"

/* A shop database whose order topic has the given partitions. */
static PGconn *shop_setup(th_ctx_t *t, th_mock_t *m, const char *name, int partitions) {
    char topic[128];
    PGconn *c;

    th_mock_start(m, 1);
    th_setup(t, name);
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, partitions, 1), 0);
    c = th_connect(t);
    th_apply_sql(c, "schema/003_shop.sql");
    return c;
}

/* Runs the relay and the stock consumer on the outbox rows until wait_sql
 * counts n, then stops the consumer; returns the relay, still running. */
static pid_t run_stock(th_ctx_t *t, const th_mock_t *m, const char *wait_sql, long n) {
    char conf[512];
    pid_t relay = th_relay_start(t, th_config(t, "relay.conf", m->bootstrap, "", "")), stock;

    snprintf(conf, sizeof conf, "%s", th_consumer_conf(t, "stock.conf", m->bootstrap, "stock", "order"));
    stock = th_spawn(t, "obx-stock-consumer", conf, "stock.log");
    th_wait_count(t, wait_sql, n, 60000);
    th_stop(stock, SIGTERM, 20000, 0);
    return relay;
}

/* OrderCancelled compensates OrderPlaced through relay and stock consumer:
 * after its original it puts the stock back; before it, the late original is
 * skipped (no hanging deduction) and the cancel itself does nothing. */
START_TEST(compensation_through_the_flow) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    PGconn *c = shop_setup(&t, &m, "compensation", 2);

    th_exec(c, "INSERT INTO shop_stock VALUES ('sku-1', 10, 10)");
    /* Written in this id order; each order's events share a key, so they
     * reach the consumer in this order too. */
    th_exec(c,
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES"
        " ('" UA "', 'order', '1', 'OrderPlaced', convert_to('{\"order_id\": 1, \"sku\": \"sku-1\", \"qty\": 3, \"amount_cents\": 300}', 'UTF8'), NULL),"
        " ('" CA "', 'order', '1', 'OrderCancelled', convert_to('{\"order_id\": 1}', 'UTF8'), '{\"compensates\": \"" UA "\"}'),"
        " ('" CB "', 'order', '2', 'OrderCancelled', convert_to('{\"order_id\": 2}', 'UTF8'), '{\"compensates\": \"" UB "\"}'),"
        " ('" UB "', 'order', '2', 'OrderPlaced', convert_to('{\"order_id\": 2, \"sku\": \"sku-1\", \"qty\": 4, \"amount_cents\": 400}', 'UTF8'), NULL)");
    relay = run_stock(&t, &m, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'stock'", 4);
    ck_assert_int_eq(th_int(c, "SELECT available FROM shop_stock WHERE sku = 'sku-1'"), 10);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE order_id = 1 AND outcome = 'released'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE order_id = 2"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE event_id = '" UA "' AND status = 'compensated'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE event_id = '" UB "' AND status = 'preempted'"), 1);
    ck_assert_int_eq(th_file_count(&t, "stock.log", "compensation before its original"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters"), 0);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* The stock consumer decides a whole batch in one statement; its decisions
 * must be those of one order at a time, in order: 3 of 5 fits, the next 3
 * does not, the 2 after it still does. */
START_TEST(batch_decides_like_one_at_a_time) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    PGconn *c = shop_setup(&t, &m, "stock_batch", 1); /* one partition: one order */

    th_exec(c, "INSERT INTO shop_stock VALUES ('sku-1', 5, 5), ('sku-2', 0, 0)");
    th_exec(c,
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " SELECT 'order', o::text, 'OrderPlaced', convert_to(jsonb_build_object('order_id', o, 'sku', s,"
        " 'qty', q, 'amount_cents', 100)::text, 'UTF8')"
        " FROM (VALUES (11, 'sku-1', 3), (12, 'sku-1', 3), (13, 'sku-1', 2), (14, 'sku-2', 1)) v(o, s, q) ORDER BY o");
    relay = run_stock(&t, &m, "SELECT count(*) FROM processed_events WHERE consumer = 'stock'", 4);
    ck_assert_int_eq(th_int(c, "SELECT available FROM shop_stock WHERE sku = 'sku-1'"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE (order_id, outcome) IN"
                               " ((11, 'deducted'), (12, 'rejected'), (13, 'deducted'), (14, 'rejected'))"), 4);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'rejected'"), 2);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE aggregate_type = 'stock' AND"
                               " (aggregate_id, event_type, convert_from(payload, 'UTF8')::jsonb->>'outcome') IN"
                               " (('11', 'StockDeducted', 'deducted'), ('12', 'StockRejected', 'rejected'),"
                               " ('13', 'StockDeducted', 'deducted'), ('14', 'StockRejected', 'rejected'))"), 4);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* th_consumer_conf with consumer.from set (from NULL: the key left out). */
static const char *from_conf(th_ctx_t *t, const char *file, const char *bootstrap, const char *topic,
                             const char *from) {
    static char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, file);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "postgres: { conninfo = \"%s\"; };\n"
            "kafka: { bootstrap_servers = \"%s\"; group_id = \"stock\"; session_timeout_ms = 6000;"
            " heartbeat_interval_ms = 500; max_poll_interval_ms = 20000; };\n"
            "consumer: { name = \"stock\"; topics = [\"%s.%s\"]; batch_size = 200;\n"
            "  from = \"%s\"; };\n"
            "log: { stats_interval_s = 1; };\n",
            t->conninfo, bootstrap, t->topic_prefix, topic, from);
    fclose(f);
    return path;
}

/* Orders first..last of 3 units of sku-1 into the outbox, one per key. */
static void insert_orders(PGconn *c, int first, int last) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
             " SELECT 'order', o::text, 'OrderPlaced', convert_to(jsonb_build_object('order_id', o, 'sku', 'sku-1',"
             " 'qty', 3, 'amount_cents', 100)::text, 'UTF8') FROM generate_series(%d, %d) o ORDER BY o",
             first, last);
    th_exec(c, sql);
}

/* The stock consumer with consumer.from = "latest", log in stock.log. */
static pid_t spawn_latest(th_ctx_t *t, const th_mock_t *m) {
    return th_spawn(t, "obx-stock-consumer", from_conf(t, "stock.conf", m->bootstrap, "order", "latest"),
                    "stock.log");
}

/* consumer.from = "latest": a new consumer group does not apply what was
 * published before its partitions were assigned, stores their end at once,
 * and applies everything published after. */
START_TEST(from_latest_skips_history) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay, stock;
    PGconn *c = shop_setup(&t, &m, "from_latest", 2);

    th_exec(c, "INSERT INTO shop_stock VALUES ('sku-1', 100000, 100000)");
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    insert_orders(c, 1, 40);
    th_drain(&t, 30000);
    stock = spawn_latest(&t, &m);
    /* Both partitions assigned: their ends stored before anything is applied. */
    th_wait_count(&t, "SELECT count(*) FROM consumer_offsets WHERE consumer = 'stock'", 2, 60000);
    ck_assert_int_eq(th_int(c, "SELECT sum(next_offset) FROM consumer_offsets WHERE consumer = 'stock'"), 40);
    ck_assert_int_eq(th_file_count(&t, "stock.log", "event=partition_start_latest"), 2);
    insert_orders(c, 101, 130);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 30, 60000);
    th_wait_count(&t, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'stock'", 70,
                  30000);
    th_stop(stock, SIGTERM, 20000, 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE order_id <= 40"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves WHERE order_id > 100"), 30);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'stock'"), 30);
    /* A restart resumes at the stored offsets: nothing skipped, nothing again. */
    insert_orders(c, 201, 210);
    th_drain(&t, 30000);
    stock = spawn_latest(&t, &m);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 40, 60000);
    th_stop(stock, SIGTERM, 20000, 0);
    th_stop(relay, SIGTERM, 20000, 0);
    ck_assert_int_eq(th_file_count(&t, "stock.log", "event=partition_start_latest"), 2);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'stock'"), 40);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

typedef struct {
    const th_ctx_t *t;
    const char *needle, *key;
    long long value;
} stats_field_t;

static int stats_field_is(void *p) {
    const stats_field_t *a = p;
    return th_file_field(a->t, "stock.log", a->needle, a->key) == a->value;
}

/* Waits until the last stats line of stock.log holding needle has key=value. */
static void wait_stats_field(const th_ctx_t *t, const char *needle, const char *key, long long value) {
    stats_field_t a = {t, needle, key, value};
    ck_assert_msg(th_wait(stats_field_is, &a, 60000), "no stats line with %s and %s=%lld (last: %lld)", needle,
                  key, value, th_file_field(t, "stock.log", needle, key));
}

/* The consumer's stats line: its assignment, its lag while applying fails
 * (consumer_offsets renamed away) and events are published, the lag back
 * to 0 once the batch commits, and the age of the newest applied event. */
START_TEST(stats_show_assignment_and_lag) {
    th_ctx_t t;
    th_mock_t m;
    char conf[512], needle[256];
    pid_t relay, stock;
    PGconn *c = shop_setup(&t, &m, "consumer_stats", 2);

    th_exec(c, "INSERT INTO shop_stock VALUES ('sku-1', 100000, 100000)");
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    snprintf(conf, sizeof conf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    stock = th_spawn(&t, "obx-stock-consumer", conf, "stock.log");
    insert_orders(c, 1, 10);
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 10, 60000);
    wait_stats_field(&t, " applied=10 ", "lag", 0);
    /* Before its first assignment the group is deciding: no lag claimed. */
    ck_assert_int_eq(th_file_count(&t, "stock.log", "partitions=0 assigned=\"\" lag="), 0);
    ck_assert_int_eq(th_file_field(&t, "stock.log", "event=stats", "partitions"), 2);
    snprintf(needle, sizeof needle, " assigned=%s.order:0,1 ", t.topic_prefix);
    ck_assert_int_ge(th_file_count(&t, "stock.log", needle), 1);
    ck_assert_int_eq(th_file_field(&t, "stock.log", "event=stats", "max_lag"), 0);
    ck_assert_int_eq(th_file_field(&t, "stock.log", "event=stats", "max_lag_partition"), -1);

    /* Behind: every batch rolls back, and the stats line goes on. */
    th_exec(c, "ALTER TABLE consumer_offsets RENAME TO consumer_offsets_away");
    insert_orders(c, 11, 40);
    wait_stats_field(&t, "event=stats", "lag", 30);
    ck_assert_int_ge(th_file_field(&t, "stock.log", "event=stats", "max_lag"), 15);
    snprintf(needle, sizeof needle, " max_lag_partition=%s.order:", t.topic_prefix);
    ck_assert_int_ge(th_file_count(&t, "stock.log", needle), 1);
    ck_assert_int_ge(th_file_count(&t, "stock.log", "event=batch_rolled_back"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM shop_stock_moves"), 10);

    /* Caught up. */
    th_exec(c, "ALTER TABLE consumer_offsets_away RENAME TO consumer_offsets");
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 40, 60000);
    wait_stats_field(&t, " applied=40 ", "lag", 0);
    ck_assert_int_ge(th_file_field(&t, "stock.log", "event=stats", "last_applied_age_s"), 0);
    ck_assert_int_lt(th_file_field(&t, "stock.log", "event=stats", "last_applied_age_s"), 60);
    ck_assert_int_eq(th_file_count(&t, "stock.log", "lag=-"), 0);
    th_stop(stock, SIGTERM, 20000, 0);
    th_stop(relay, SIGTERM, 20000, 0);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* Runs obx-stock-consumer --check -c conf, its output in DIR/out; returns its exit code. */
static int run_check(th_ctx_t *t, const char *conf, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' --check -c '%s' >'%s/%s' 2>&1", th_bin("obx-stock-consumer"), conf, t->dir,
             out);
    return th_run(cmd);
}

/* --check: 0 and "check: ok" on a good setup; 1 naming a missing topic or
 * inbox table; 2 on a bad config value. */
START_TEST(check_names_missing_topic_and_table) {
    th_ctx_t t;
    th_mock_t m;
    char line[256], conf[512];
    PGconn *c = shop_setup(&t, &m, "consumer_check", 2);

    snprintf(conf, sizeof conf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    ck_assert_int_eq(run_check(&t, conf, "ok.out"), 0);
    ck_assert_int_eq(th_file_count(&t, "ok.out", "check: ok"), 1);
    ck_assert_int_eq(th_file_count(&t, "ok.out", "inbox: table consumer_offsets ok"), 1);
    snprintf(line, sizeof line, "topic %s.order: ok, 2 partition(s)", t.topic_prefix);
    ck_assert_int_eq(th_file_count(&t, "ok.out", line), 1);
    ck_assert_int_eq(th_file_count(&t, "ok.out", "FAILED"), 0);

    ck_assert_int_eq(run_check(&t, th_consumer_conf(&t, "nosuch.conf", m.bootstrap, "stock", "nosuch"),
                               "topic.out"), 1);
    snprintf(line, sizeof line, "topic %s.nosuch: FAILED: the topic does not exist", t.topic_prefix);
    ck_assert_int_eq(th_file_count(&t, "topic.out", line), 1);
    ck_assert_int_eq(th_file_count(&t, "topic.out", "check: FAILED"), 1);

    th_exec(c, "DROP TABLE consumer_offsets");
    ck_assert_int_eq(run_check(&t, conf, "table.out"), 1);
    ck_assert_int_eq(th_file_count(&t, "table.out", "inbox: FAILED: table consumer_offsets does not exist"), 1);
    ck_assert_int_eq(th_file_count(&t, "table.out", "inbox: table processed_events ok"), 1);
    ck_assert_int_eq(th_file_count(&t, "table.out", "check: FAILED"), 1);

    ck_assert_int_eq(run_check(&t, from_conf(&t, "bad.conf", m.bootstrap, "order", "newest"), "bad.out"), 2);
    ck_assert_int_eq(th_file_count(&t, "bad.out", "bad.conf:4: consumer.from = \"newest\" is not one of: earliest, latest"),
                     1);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* Consumer-side retention: this consumer's old dead letters go, its recent
 * ones stay; a consumer name not seen for gone_consumer_s loses its offsets,
 * inbox rows and dead letters; one seen lately, and this consumer itself
 * however old its offsets, keep theirs. */
START_TEST(cleanup_forgets_old_dead_letters_and_gone_consumers) {
    th_ctx_t t;
    th_mock_t m;
    char conf[512];
    pid_t stock;
    FILE *f;
    PGconn *c = shop_setup(&t, &m, "consumer_retention", 1);

    th_exec(c, "INSERT INTO dead_letters (consumer, topic, kafka_partition, kafka_offset, reason, created_at) VALUES"
               " ('stock', 't', 0, 1, 'old', now() - interval '2 hours'),"
               " ('stock', 't', 0, 2, 'recent', now()),"
               " ('ghost', 't', 0, 1, 'ghost', now() - interval '2 hours'),"
               " ('sleeper', 't', 0, 1, 'sleeper', now() - interval '2 hours')");
    th_exec(c, "INSERT INTO consumer_offsets (consumer, topic, kafka_partition, next_offset, updated_at) VALUES"
               " ('stock', 'x', 0, 5, now() - interval '2 hours'),"
               " ('ghost', 'x', 0, 5, now() - interval '2 hours'),"
               " ('sleeper', 'x', 0, 5, now() - interval '10 minutes')");
    th_exec(c, "INSERT INTO processed_events (consumer, event_id, status, processed_at) VALUES"
               " ('ghost', gen_random_uuid(), 'applied', now() - interval '2 hours'),"
               " ('sleeper', gen_random_uuid(), 'applied', now() - interval '2 hours')");
    snprintf(conf, sizeof conf, "%s", th_consumer_conf(&t, "stock.conf", m.bootstrap, "stock", "order"));
    f = fopen(conf, "a");
    ck_assert_msg(f != NULL, "append to %s", conf);
    fputs("inbox: { cleanup_interval_s = 1; dead_letters_retention_s = 3600; gone_consumer_s = 3600; };\n", f);
    fclose(f);
    stock = th_spawn(&t, "obx-stock-consumer", conf, "stock.log");
    th_wait_count(&t, "SELECT count(*) FROM consumer_offsets WHERE consumer = 'stock' AND updated_at > now() - interval '1 minute'",
                  1, 30000);
    th_wait_count(&t, "SELECT (count(*) = 0)::int FROM dead_letters WHERE reason IN ('old', 'ghost')", 1, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters WHERE reason IN ('recent', 'sleeper')"), 2);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM consumer_offsets WHERE consumer = 'ghost'"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'ghost'"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM consumer_offsets WHERE consumer IN ('stock', 'sleeper')"), 2);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'sleeper'"), 1);
    th_stop(stock, SIGTERM, 20000, 0);
    /* The pass logs once its deletes are done; the consumer has exited since. */
    ck_assert_int_ge(th_file_field(&t, "stock.log", "event=inbox_cleanup", "dead_letters_deleted"), 1);
    ck_assert_int_ge(th_file_count_fields(&t, "stock.log", "event=inbox_cleanup"), 1);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

TH_MAIN("consumer_input", 120, bad_messages_parked_good_ones_flow, compensation_through_the_flow,
        batch_decides_like_one_at_a_time, from_latest_skips_history, check_names_missing_topic_and_table,
        stats_show_assignment_and_lag, cleanup_forgets_old_dead_letters_and_gone_consumers)
