/* Rows that can never be published are parked with their reason and event
 * id while the rest flow (on_failure=park), or stop the line (block); and the
 * idle relay wakes on NOTIFY within milliseconds. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void mock_topic(th_mock_t *m, const th_ctx_t *t, const char *suffix) {
    char topic[128];
    snprintf(topic, sizeof topic, "%s.%s", t->topic_prefix, suffix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, 4, 1), 0);
}

static void insert_bad(PGconn *c, const char *values_sql, char *event_id, size_t size) {
    char sql[1024];
    PGresult *r;
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, headers, topic)"
             " VALUES %s RETURNING event_id::text", values_sql);
    r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    snprintf(event_id, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static void assert_parked(PGconn *c, const th_ctx_t *t, const char *event_id, const char *reason) {
    char sql[512], needle[128];
    PGresult *r;
    snprintf(sql, sizeof sql,
             "SELECT parked_at IS NOT NULL, last_error, attempts FROM outbox WHERE event_id = '%s'",
             event_id);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_msg(PQgetvalue(r, 0, 0)[0] == 't', "event %s not parked", event_id);
    ck_assert_msg(strstr(PQgetvalue(r, 0, 1), reason) != NULL, "event %s: last_error \"%s\" lacks \"%s\"",
                  event_id, PQgetvalue(r, 0, 1), reason);
    PQclear(r);
    snprintf(needle, sizeof needle, "event_id=%s", event_id);
    ck_assert_int_eq(th_log_count(t, needle), 1); /* logged once, with its id */
}

/* Reads topic back: exactly n events, none lost, duplicated or out of
 * order; then stops the relay and the mock. */
static void verify_and_stop(th_ctx_t *t, th_mock_t *m, const char *topic, size_t n, pid_t relay) {
    th_msgs_t msgs;
    th_consume(m->bootstrap, topic, n, 30000, &msgs);
    ck_assert_int_eq(th_verify(t, &msgs, "order"), 0);
    ck_assert_int_eq(msgs.n, n);
    th_msgs_free(&msgs);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(m);
}

START_TEST(bad_rows_parked_rest_flows) {
    th_ctx_t t;
    th_mock_t m;
    char topic[128], big[64], nullkey[64], emptykey[64], arrhdr[64], numhdr[64], badtopic[64];
    char needle[64], sql[256];
    pid_t relay;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "badrows");
    mock_topic(&m, &t, "order");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    /* message.max.bytes below the big payload: refused by the producer. */
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "",
                                         "message_max_bytes = 100000;"));
    ck_assert_int_eq(th_write(&t, 2, 100, 10, 300, "order"), 100);
    c = th_connect(&t);
    insert_bad(c, "('order', 'agg-1', 'OrderPlaced', decode(repeat('ab', 150000), 'hex'), NULL, NULL)", big, sizeof big);
    insert_bad(c, "('order', NULL, 'OrderPlaced', 'x', NULL, NULL)", nullkey, sizeof nullkey);
    insert_bad(c, "('order', '', 'OrderPlaced', 'x', NULL, NULL)", emptykey, sizeof emptykey);
    insert_bad(c, "('order', 'agg-2', 'OrderPlaced', 'x', '[1,2]', NULL)", arrhdr, sizeof arrhdr);
    insert_bad(c, "('order', 'agg-3', 'OrderPlaced', 'x', '{\"n\": 1}', NULL)", numhdr, sizeof numhdr);
    insert_bad(c, "('order', 'agg-4', 'OrderPlaced', 'x', NULL, 'bad topic!')", badtopic, sizeof badtopic);
    ck_assert_int_eq(th_write(&t, 2, 100, 10, 300, "order"), 100);
    th_drain(&t, 30000);
    assert_parked(c, &t, big, "MSG_SIZE_TOO_LARGE");
    assert_parked(c, &t, nullkey, "aggregate_id is NULL or empty");
    assert_parked(c, &t, emptykey, "aggregate_id is NULL or empty");
    assert_parked(c, &t, arrhdr, "headers must be a JSON object");
    assert_parked(c, &t, numhdr, "headers must be a JSON object");
    assert_parked(c, &t, badtopic, "invalid topic name \"bad topic!\"");
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox_parked"), 6);
    /* Released once the relay's low water has passed it (it no longer scans
     * there): the release trigger makes it look again. */
    snprintf(needle, sizeof needle, "low_water=%lld ", th_int(c, "SELECT max(id) FROM outbox"));
    th_wait_log(&t, needle, 20000);
    snprintf(sql, sizeof sql, "UPDATE outbox SET aggregate_id = 'fixed', parked_at = NULL, attempts = 0"
                              " WHERE event_id = '%s'", nullkey);
    th_exec(c, sql);
    th_drain(&t, 20000);
    ck_assert_int_eq(th_log_count(&t, "rows released, rescanning from the start"), 1);
    PQfinish(c);
    verify_and_stop(&t, &m, topic, 201, relay);
}
END_TEST

START_TEST(one_megabyte_payload_flows) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    char topic[128], eid[64];
    pid_t relay;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "bigpayload");
    mock_topic(&m, &t, "order");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "",
                                         "message_max_bytes = 2000000;"));
    c = th_connect(&t);
    insert_bad(c, "('order', 'agg-1', 'OrderPlaced', decode(repeat('ab', 1048576), 'hex'), NULL, NULL)", eid, sizeof eid);
    th_drain(&t, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 1);
    PQfinish(c);
    th_consume(m.bootstrap, topic, 1, 30000, &msgs);
    ck_assert_int_eq(msgs.n, 1);
    ck_assert_str_eq(msgs.v[0].event_id, eid);
    ck_assert_int_eq(msgs.v[0].payload_len, 1048576);
    th_msgs_free(&msgs);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST


START_TEST(block_policy_stops_at_bad_row) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    char topic[128], eid[64];
    pid_t relay;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "block");
    mock_topic(&m, &t, "order");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    c = th_connect(&t);
    ck_assert_int_eq(th_write(&t, 1, 20, 5, 50, "order"), 20);
    insert_bad(c, "('order', NULL, 'OrderPlaced', 'x', NULL, NULL)", eid, sizeof eid);
    ck_assert_int_eq(th_write(&t, 1, 20, 5, 50, "order"), 20);
    /* Batches of 5: the batch holding the bad row is full, so the claim of
     * the next one is already out when production stops at it. */
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap,
                                         "on_failure = \"block\"; poll_interval_ms = 100; batch_size = 5;", ""));
    th_wait_count(&t, "SELECT attempts FROM outbox WHERE aggregate_id IS NULL", 2, 20000);
    /* Strict order: the 20 rows before it are sent, none after it. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 20);
    ck_assert_int_eq(th_int(c, "SELECT max(id) FROM outbox WHERE sent_at IS NOT NULL"),
                     th_int(c, "SELECT id - 1 FROM outbox WHERE aggregate_id IS NULL"));
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL"), 0);
    ck_assert_int_ge(th_log_count(&t, "msg=\"publish failed, blocking\""), 2);
    /* The operator fixes the row: the line moves again. */
    th_exec(c, "UPDATE outbox SET aggregate_id = 'fixed' WHERE aggregate_id IS NULL");
    th_drain(&t, 20000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 41);
    PQfinish(c);
    th_consume(m.bootstrap, topic, 41, 30000, &msgs);
    th_verify(&t, &msgs, "order");
    th_msgs_free(&msgs);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

START_TEST(idle_wake_on_notify) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    PGconn *c;
    long long lat_us[20];
    const int n = 20;

    th_mock_start(&m, 1);
    th_setup(&t, "wake");
    mock_topic(&m, &t, "order");
    /* A one-minute fallback poll: only the NOTIFY can wake the relay in time. */
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 60000;", ""));
    c = th_connect(&t);
    ck_assert_int_eq(th_write(&t, 1, 1, 1, 10, "order"), 1); /* warm the producer up */
    th_drain(&t, 30000);
    for (int i = 0; i < n; i++) {
        th_wait_count(&t, TH_RELAY_WAITING, 1, 10000);
        ck_assert_int_eq(th_write(&t, 1, 1, 1, 10, "order"), 1);
        th_drain(&t, 5000);
        lat_us[i] = th_int(c, "SELECT (extract(epoch FROM sent_at - created_at) * 1e6)::bigint"
                              " FROM outbox ORDER BY id DESC LIMIT 1");
    }
    qsort(lat_us, (size_t)n, sizeof lat_us[0], cmp_ll);
    fprintf(stderr, "idle wake: insert-to-mark latency over %d single inserts: p50=%.2f ms max=%.2f ms\n",
            n, lat_us[n / 2] / 1000.0, lat_us[n - 1] / 1000.0);
    ck_assert_int_lt(lat_us[n - 1], 1000000);
    /* Writers paid NOTIFY only while the relay was idle: the flag is set now. */
    th_wait_count(&t, TH_RELAY_WAITING, 1, 10000);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    /* A graceful stop clears the flag so writers stop paying NOTIFY. */
    c = th_connect(&t);
    ck_assert_int_eq(th_int(c, TH_RELAY_WAITING), 0);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* Counts the NOTIFYs writers send while one row at a time arrives every
 * gap_ms, the relay following them. */
static int notifies_while_following(th_ctx_t *t, int n, int gap_ms) {
    PGconn *l = th_connect(t);
    PGnotify *nt;
    int count = 0;

    th_exec(l, "LISTEN outbox");
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(th_write(t, 1, 1, 1, 10, "order"), 1);
        usleep((useconds_t)gap_ms * 1000);
    }
    th_drain(t, 30000);
    ck_assert_int_eq(PQconsumeInput(l), 1);
    while ((nt = PQnotifies(l)) != NULL) {
        count++;
        PQfreemem(nt);
    }
    PQfinish(l);
    return count;
}

/* Busy polling: while rows keep coming the relay claims every
 * busy_poll_interval_ms instead of sleeping on LISTEN, so writers pay no
 * NOTIFY; with busy_poll_ms = 0 the
 * same writers notify about once per row (the relay catches up between rows). */
START_TEST(busy_writers_pay_no_notify) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    char extra[128];
    const int n = 40, gap_ms = (int)(20 * th_mult());
    int busy, sleepy, lag_ms;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "busy_poll");
    mock_topic(&m, &t, "order");
    snprintf(extra, sizeof extra, "poll_interval_ms = 60000; busy_poll_ms = %d;", 1000 * (int)th_mult());
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, extra, ""));
    ck_assert_int_eq(th_write(&t, 1, 1, 1, 10, "order"), 1);
    th_drain(&t, 30000);
    th_wait_count(&t, TH_RELAY_WAITING, 1, 30000);
    busy = notifies_while_following(&t, n, gap_ms);
    th_stop(relay, SIGTERM, 20000, 0);
    /* Following them, the relay never stalls: a claim that ended exactly at
     * the horizon once left it waiting out its 1 s poll timeout. */
    c = th_connect(&t);
    lag_ms = th_int(c, "SELECT (max(extract(epoch FROM sent_at - created_at)) * 1000)::int FROM outbox"
                       " WHERE id > (SELECT min(id) FROM outbox)"); /* not the warm-up row */
    PQfinish(c);

    relay = th_relay_start(&t, th_config(&t, "relay0.conf", m.bootstrap,
                                         "poll_interval_ms = 60000; busy_poll_ms = 0;", ""));
    th_wait_count(&t, TH_RELAY_WAITING, 1, 30000);
    sleepy = notifies_while_following(&t, n, gap_ms);
    th_stop(relay, SIGTERM, 20000, 0);
    fprintf(stderr, "busy poll: %d rows %d ms apart sent %d NOTIFYs (busy_poll_ms = 0: %d), slowest %d ms\n",
            n, gap_ms, busy, sleepy, lag_ms);
    ck_assert_int_lt(lag_ms, (int)(500 * th_mult()));
    /* The first row wakes the sleeping relay; a second may race its flag clear. */
    ck_assert_int_le(busy, 2);
    ck_assert_int_ge(sleepy, n / 2);
    th_mock_stop(&m);
}
END_TEST

/* G2 with a long writer transaction: its row holds an early id but stays
 * invisible while the relay drains a backlog past it; it commits mid-drain
 * and the next event of its key follows at once. The successor must not be
 * published first (a cursor that had moved past the early id would do that). */
START_TEST(long_transaction_keeps_key_order) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    char topic[128];
    pid_t relay;
    PGconn *c, *lt;
    const long backlog = 10000, after = 2000;

    th_mock_start(&m, 1);
    th_setup(&t, "long_tx");
    mock_topic(&m, &t, "order");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    c = th_connect(&t);
    lt = th_connect(&t);
    th_exec(lt, "BEGIN");
    th_exec(lt, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                " VALUES ('order', 'long-tx', 'First', '\\x01')");
    ck_assert_int_eq(th_write(&t, 2, backlog, 100, 50, "order"), backlog);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "", ""));
    th_wait_count(&t, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", 1000, 30000);
    th_exec(lt, "COMMIT");
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
               " VALUES ('order', 'long-tx', 'Second', '\\x02')");
    ck_assert_int_eq(th_write(&t, 2, after, 100, 50, "order"), after);
    th_drain(&t, 60000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"), 0);
    th_consume(m.bootstrap, topic, (size_t)(backlog + after + 2), 60000, &msgs);
    th_verify(&t, &msgs, "order");
    th_msgs_free(&msgs);
    th_stop(relay, SIGTERM, 20000, 0);
    PQfinish(lt);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* SIGTERM while the relay's query setting the waiting flag is still running:
 * the relay must clear the flag and exit once it returns, not wait out
 * shutdown_timeout_ms (10 s) and leave writers paying NOTIFY. Two sessions
 * take turns holding a lock that setval waits for: the relay's clear at
 * connect queues behind the first, the second queues behind that clear, so
 * the relay's next setval, the one that sets the flag, is what waits. */
#define RELAY_LOCKED "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay'" \
                     " AND wait_event_type = 'Lock' AND query LIKE '%setval%'"
#define LOCK_FLAG "ALTER SEQUENCE outbox_relay_waiting MAXVALUE 1"

START_TEST(stop_while_setting_waiting_flag) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    PGconn *c, *h1, *h2;
    PGresult *res;
    char sql[256];
    int64_t t0;

    th_mock_start(&m, 1);
    th_setup(&t, "stop_waiting");
    c = th_connect(&t);
    h1 = th_connect(&t);
    h2 = th_connect(&t);
    th_exec(h1, "BEGIN; " LOCK_FLAG);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "busy_poll_ms = 0;", ""));
    th_wait_count(&t, RELAY_LOCKED, 1, 20000);
    th_exec(h2, "BEGIN");
    ck_assert_msg(PQsendQuery(h2, LOCK_FLAG), "%s", PQerrorMessage(h2));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event_type = 'Lock'",
             PQbackendPID(h2));
    th_wait_count(&t, sql, 1, 10000);
    th_exec(h1, "COMMIT");
    while ((res = PQgetResult(h2)) != NULL) {
        ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
    }
    th_wait_count(&t, RELAY_LOCKED, 1, 20000);
    /* pg_sequence_last_value would wait for the lock too; a plain read does not. */
    ck_assert_int_eq(th_int(c, "SELECT last_value FROM outbox_relay_waiting"), 0);
    kill(relay, SIGTERM);
    th_exec(h2, "COMMIT");
    t0 = th_now_ms();
    th_stop(relay, 0, 20000, 0);
    fprintf(stderr, "stop while setting the waiting flag: exited %lld ms after it was set\n",
            (long long)(th_now_ms() - t0));
    ck_assert_int_lt(th_now_ms() - t0, (int64_t)(2500 * th_mult()));
    ck_assert_int_eq(th_int(c, TH_RELAY_WAITING), 0);
    PQfinish(h1);
    PQfinish(h2);
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* A missing topic ACL is the deployment's fault, not the rows': none is
 * parked or failed, the relay holds its place and says so once per interval
 * naming the topic and the remedy, and publishes in order once it is granted
 * (issue 14). */
static int deferred_many(void *arg) {
    return th_file_field(arg, "relay.log", "event=stats", "deferred") >= 10;
}

START_TEST(missing_acl_holds_rows_until_granted) {
    th_ctx_t t;
    th_mock_t m;
    char topic[128], needle[256];

    th_mock_start(&m, 1);
    th_setup(&t, "acl");
    mock_topic(&m, &t, "order");
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    /* The relay's principal may not write the topic (its metadata says so). */
    rd_kafka_mock_topic_set_error(m.mc, topic, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    pid_t relay = th_relay_start(&t, th_config(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", ""));
    ck_assert_int_eq(th_write(&t, 2, 100, 10, 100, "order"), 100);
    snprintf(needle, sizeof needle, "topic=%s ", topic);
    th_wait_log(&t, "event=topic_not_authorized", 20000);
    /* Several rescans found the topic still refused. */
    ck_assert_msg(th_wait(deferred_many, &t, 30000), "no stats line with deferred >= 10 in %s/relay.log", t.dir);
    PGconn *c = th_connect(&t);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL"), 0);
    ck_assert_int_eq(th_int(c, "SELECT COALESCE(sum(attempts), 0) FROM outbox"), 0);
    ck_assert_int_eq(th_log_count(&t, "event=row_parked"), 0);
    ck_assert_int_eq(th_log_count(&t, "event=publish_failed"), 0);
    ck_assert_int_ge(th_log_count(&t, "event=topic_not_authorized"), 1);
    ck_assert_int_ge(th_log_count(&t, needle), 1);
    ck_assert_int_ge(th_log_count(&t, "Write and Describe on the topic"), 1);
    /* The ACL is granted: the relay resumes by itself. */
    rd_kafka_mock_topic_set_error(m.mc, topic, RD_KAFKA_RESP_ERR_NO_ERROR);
    th_drain(&t, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 100);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL"), 0);
    PQfinish(c);
    verify_and_stop(&t, &m, topic, 100, relay);
}
END_TEST

TH_MAIN("rows", 120, bad_rows_parked_rest_flows, one_megabyte_payload_flows, block_policy_stops_at_bad_row,
        idle_wake_on_notify, busy_writers_pay_no_notify, long_transaction_keeps_key_order,
        stop_while_setting_waiting_flag, missing_acl_holds_rows_until_granted)
