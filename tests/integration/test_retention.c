/* Retention: the leader deletes rows marked sent more than keep_s ago and
 * nothing else (no unsent row, no parked one), loses nothing, and a standby
 * that takes over carries it on; a role without DELETE gets a logged error
 * while publishing goes on. Two triggers of the test's own are the
 * independent record: a ledger of every row inserted and an audit of every
 * row deleted, with the mark it had. In partitions mode the audit is an
 * event trigger that copies the rows of every detached partition as it is
 * dropped. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

static void mock_topic(th_mock_t *m, const th_ctx_t *t) {
    char topic[128];
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, 2, 1), 0);
}

static void install_record(PGconn *c) {
    th_exec(c, "CREATE TABLE ledger (id bigint PRIMARY KEY, event_id text NOT NULL)");
    th_exec(c, "CREATE TABLE deleted (id bigint PRIMARY KEY, sent_at timestamptz, parked_at timestamptz,"
               " deleted_at timestamptz NOT NULL)");
    th_exec(c, "CREATE FUNCTION ledger_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO ledger VALUES (NEW.id, NEW.event_id::text); RETURN NULL; END $$");
    th_exec(c, "CREATE TRIGGER ledger AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION ledger_add()");
    th_exec(c, "CREATE FUNCTION deleted_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO deleted VALUES (OLD.id, OLD.sent_at, OLD.parked_at, now()); RETURN OLD; END $$");
    th_exec(c, "CREATE TRIGGER deleted BEFORE DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION deleted_add()");
}

/* Every deleted row had been marked sent at least keep_s before the
 * delete's transaction began, and was not parked. */
static void assert_deleted_rows_were_due(PGconn *c, int keep_s) {
    char sql[512];
    long long bad;
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM deleted WHERE sent_at IS NULL OR parked_at IS NOT NULL"
             " OR deleted_at - sent_at < make_interval(secs => %d)", keep_s);
    bad = th_int(c, sql);
    ck_assert_msg(bad == 0, "%lld deleted rows were unsent, parked or younger than keep_s=%d", bad, keep_s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Ledger rows matching where that are not on the topic (msgs): lost, unless
 * the caller expects them missing (parked rows). */
static long ledger_missing(PGconn *c, const th_msgs_t *msgs, const char *where) {
    char sql[256];
    const char **ids = calloc(msgs->n + 1, sizeof *ids);
    PGresult *res;
    long missing = 0;

    ck_assert_msg(ids != NULL, "out of memory for %zu event ids", msgs->n);
    for (size_t i = 0; i < msgs->n; i++)
        ids[i] = msgs->v[i].event_id;
    qsort(ids, msgs->n, sizeof *ids, cmp_str);
    snprintf(sql, sizeof sql, "SELECT event_id FROM ledger WHERE %s ORDER BY id", where);
    res = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    for (int i = 0; i < PQntuples(res); i++) {
        const char *eid = PQgetvalue(res, i, 0);
        if (!bsearch(&eid, ids, msgs->n, sizeof *ids, cmp_str)) {
            if (missing < 5)
                fprintf(stderr, "not on the topic: event %s of the ledger (where %s)\n", eid, where);
            missing++;
        }
    }
    PQclear(res);
    free(ids);
    return missing;
}

static void consume_all(const th_ctx_t *t, const char *bootstrap, size_t expect, th_msgs_t *msgs) {
    char topic[128];
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    th_consume(bootstrap, topic, expect, 60000, msgs);
}

typedef struct {
    const th_ctx_t *t;
    const char *log;
    long long at_least;
} deleted_arg_t;

static int log_deleted_reached(void *arg) {
    deleted_arg_t *d = arg;
    return th_file_field(d->t, d->log, "event=retention_pass", "deleted_total") >= d->at_least;
}

/* The pass's line comes after its deletes have committed: wait for it. */
static void wait_log_deleted(const th_ctx_t *t, const char *log, long long at_least) {
    deleted_arg_t d = {t, log, at_least};
    ck_assert_msg(th_wait(log_deleted_reached, &d, 30000), "%s/%s: no retention_pass line with deleted_total >= %lld",
                  t->dir, log, at_least);
}

static int is_standby(void *arg) {
    const deleted_arg_t *d = arg;
    return th_file_count(d->t, d->log, "role=standby") > 0;
}

static void wait_standby(const th_ctx_t *t, const char *log) {
    deleted_arg_t d = {t, log, 0};
    ck_assert_msg(th_wait(is_standby, &d, 20000), "%s/%s: never a standby", t->dir, log);
}

START_TEST(retention_deletes_rows_sent_long_enough_ago_and_nothing_else) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    const char *conf;
    pid_t a, b;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "retention");
    mock_topic(&m, &t);
    c = th_connect(&t);
    install_record(c);
    ck_assert_int_eq(th_write(&t, 2, 500, 20, 100, "order"), 500);
    th_exec(c, "UPDATE outbox SET parked_at = now(), last_error = 'test' WHERE id IN (10, 20, 30)");
    conf = th_config_group(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "retention", "keep_s = 2; interval_s = 1;");
    a = th_spawn(&t, "outbox-relay", conf, "a.log");
    th_wait_count(&t, "SELECT (count(*) = 3)::int FROM outbox", 1, 60000);
    wait_log_deleted(&t, "a.log", 497);

    b = th_spawn(&t, "outbox-relay", conf, "b.log");
    wait_standby(&t, "b.log");
    th_stop(a, SIGKILL, 5000, 128 + SIGKILL);
    ck_assert_int_eq(th_write(&t, 2, 300, 20, 100, "order"), 300);
    th_wait_count(&t, "SELECT (count(*) = 3)::int FROM outbox", 1, 60000);
    ck_assert_int_eq(th_file_count(&t, "b.log", "event=leadership_acquired"), 1);
    wait_log_deleted(&t, "b.log", 300);

    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE id IN (10, 20, 30) AND parked_at IS NOT NULL"), 3);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted"), 797);
    assert_deleted_rows_were_due(c, 2);
    consume_all(&t, m.bootstrap, 797, &msgs);
    ck_assert_int_eq(ledger_missing(c, &msgs, "id NOT IN (10, 20, 30)"), 0);
    ck_assert_int_eq(ledger_missing(c, &msgs, "id IN (10, 20, 30)"), 3); /* parked: never published */
    fprintf(stderr, "retention: 800 rows, 797 deleted after keep_s, 3 parked kept, %zu messages\n", msgs.n);
    th_msgs_free(&msgs);
    PQfinish(c);
    th_stop(b, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* on_failure = "block" stops at a bad row: it and every row after it stay
 * unsent, and retention keeps them all, even with keep_s = 0. */
START_TEST(retention_keeps_unsent_rows_behind_a_blocked_one) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    pid_t relay;
    PGconn *c;
    long long bad;

    th_mock_start(&m, 1);
    th_setup(&t, "retentionblock");
    mock_topic(&m, &t);
    c = th_connect(&t);
    install_record(c);
    ck_assert_int_eq(th_write(&t, 1, 20, 5, 50, "order"), 20);
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
               " VALUES ('order', NULL, 'OrderPlaced', 'x')");
    bad = th_int(c, "SELECT id FROM outbox WHERE aggregate_id IS NULL");
    ck_assert_int_eq(th_write(&t, 1, 20, 5, 50, "order"), 20);
    relay = th_relay_start(&t, th_config_group(&t, "relay.conf", m.bootstrap,
                                               "on_failure = \"block\"; poll_interval_ms = 100; batch_size = 5;",
                                               "retention", "keep_s = 0; interval_s = 1;"));
    th_wait_count(&t, "SELECT count(*) FROM deleted", 20, 30000);
    th_wait_count(&t, "SELECT LEAST(attempts, 3) FROM outbox WHERE aggregate_id IS NULL", 3, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 21);
    ck_assert_int_eq(th_int(c, "SELECT min(id) FROM outbox"), bad);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), 0);
    assert_deleted_rows_were_due(c, 0);
    /* The operator fixes the row: everything goes out, then goes. */
    th_exec(c, "UPDATE outbox SET aggregate_id = 'fixed' WHERE aggregate_id IS NULL");
    th_wait_count(&t, "SELECT count(*) FROM deleted", 41, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 0);
    assert_deleted_rows_were_due(c, 0);
    consume_all(&t, m.bootstrap, 41, &msgs);
    ck_assert_int_eq(ledger_missing(c, &msgs, "true"), 0);
    th_msgs_free(&msgs);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* Runs a command, keeps its output; returns its exit status. */
static int run_capture(const char *cmd, char *out, size_t outsize) {
    FILE *f = popen(cmd, "r");
    size_t n;
    int st;
    ck_assert_msg(f != NULL, "popen %s", cmd);
    n = fread(out, 1, outsize - 1, f);
    out[n] = '\0';
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A role for the relay with what it needs to publish, nothing more. */
static void create_relay_role(PGconn *c, const char *role) {
    char sql[256];
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role);
    th_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN", role);
    th_exec(c, sql);
    snprintf(sql, sizeof sql, "GRANT SELECT, UPDATE ON outbox TO %s", role);
    th_exec(c, sql);
    snprintf(sql, sizeof sql, "GRANT SELECT ON SEQUENCE outbox_id_seq TO %s", role);
    th_exec(c, sql);
    snprintf(sql, sizeof sql, "GRANT UPDATE ON SEQUENCE outbox_relay_waiting TO %s", role);
    th_exec(c, sql);
}

/* A relay config with that retention group whose role is role (libpq
 * takes the last user= of a conninfo). */
static const char *config_as(th_ctx_t *t, const char *role, const char *bootstrap, const char *retention) {
    char conninfo[sizeof t->conninfo];
    const char *conf;
    memcpy(conninfo, t->conninfo, sizeof conninfo);
    ck_assert_int_lt(strlen(t->conninfo) + strlen(role) + 7, sizeof t->conninfo);
    strcat(t->conninfo, " user=");
    strcat(t->conninfo, role);
    conf = th_config_group(t, "relay.conf", bootstrap, "", "retention", retention);
    memcpy(t->conninfo, conninfo, sizeof conninfo);
    return conf;
}

/* --check refuses conf, saying want; a relay started on it anyway logs
 * its retention's failure with cause and publishes every row. */
static void assert_refused_and_publishing_goes_on(th_ctx_t *t, const th_mock_t *m, PGconn *c, const char *conf,
                                                  const char *want, const char *cause) {
    char cmd[1024], out[4096];
    pid_t relay;

    snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check 2>&1", th_bin("outbox-relay"), conf);
    ck_assert_int_eq(run_capture(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, want), "%s", out);
    relay = th_relay_start(t, conf);
    ck_assert_int_eq(th_write(t, 2, 200, 20, 100, "order"), 200);
    th_wait_log(t, "event=retention_failed", 30000);
    ck_assert_int_ge(th_log_count(t, cause), 1);
    th_check_published(t, m->bootstrap, "order", 200);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 200);
    th_stop(relay, SIGTERM, 20000, 0);
}

START_TEST(retention_without_delete_privilege_is_logged_and_publishing_goes_on) {
    th_ctx_t t;
    th_mock_t m;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "retentionpriv");
    mock_topic(&m, &t);
    c = th_connect(&t);
    create_relay_role(c, "obx_nodelete");
    assert_refused_and_publishing_goes_on(&t, &m, c, config_as(&t, "obx_nodelete", m.bootstrap,
                                                               "keep_s = 0; interval_s = 1;"),
                                          "role obx_nodelete lacks DELETE on public.outbox", "permission denied");
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* Partitions mode's record: the ledger, and the rows of every table
 * dropped that was detached from the outbox (the relay drops only those),
 * copied by an event trigger before the drop. */
static void install_partition_record(PGconn *c) {
    th_exec(c, "CREATE TABLE ledger (id bigint PRIMARY KEY, event_id text NOT NULL)");
    th_exec(c, "CREATE FUNCTION ledger_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO ledger VALUES (NEW.id, NEW.event_id::text); RETURN NULL; END $$");
    th_exec(c, "CREATE TRIGGER ledger AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION ledger_add()");
    th_exec(c, "CREATE TABLE deleted (id bigint PRIMARY KEY, sent_at timestamptz, parked_at timestamptz,"
               " deleted_at timestamptz NOT NULL, part text NOT NULL)");
    th_exec(c, "CREATE FUNCTION deleted_add() RETURNS event_trigger LANGUAGE plpgsql AS $$ DECLARE t regclass; BEGIN"
               " FOR t IN SELECT oid::regclass FROM pg_class WHERE relname ~ '^outbox_p[0-9]+$' AND relkind = 'r'"
               "  AND NOT relispartition LOOP"
               "  EXECUTE format('INSERT INTO deleted SELECT id, sent_at, parked_at, now(), %L FROM %s"
               "   ON CONFLICT DO NOTHING', t, t);"
               " END LOOP; END $$");
    th_exec(c, "CREATE EVENT TRIGGER deleted ON ddl_command_start WHEN TAG IN ('DROP TABLE')"
               " EXECUTE FUNCTION deleted_add()");
}

static const char partitions_ahead_sql[] =
    "SELECT count(*) FROM outbox_partition_bounds('outbox') WHERE lo > outbox_last_id('outbox')";

/* Writes rounds of 100 rows, each once the relay has two partitions of
 * 100 ids ahead, as a service whose ids never outrun retention does. */
static void write_rounds(const th_ctx_t *t, int rounds) {
    for (int i = 0; i < rounds; i++) {
        th_wait_count(t, partitions_ahead_sql, 2, 30000);
        ck_assert_int_eq(th_write(t, 2, 100, 20, 100, "order"), 100);
    }
}

/* Every row ever inserted is in the outbox or in a dropped partition
 * (nothing vanished another way), and every dropped row had been sent
 * keep_s before its drop and was not parked. */
static void assert_dropped_rows_were_due(PGconn *c, int keep_s) {
    assert_deleted_rows_were_due(c, keep_s);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM outbox o"
                               " WHERE o.id = l.id) AND NOT EXISTS (SELECT 1 FROM deleted d WHERE d.id = l.id)"), 0);
}

static const char partitions_group[] =
    "mode = \"partitions\"; keep_s = 2; interval_s = 1; partition_rows = 100; partitions_ahead = 3;";

/* Runs migrate with conf (retention.mode = "partitions") on the database
 * without its outbox (th_setup's is not partitioned): it creates the
 * outbox partitioned, partitions ahead. */
static void migrate_partitioned(const char *conf, PGconn *c) {
    char cmd[1024], out[4096];
    th_exec(c, "DROP TABLE outbox CASCADE");
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' migrate 2>&1", th_bin("outbox-relay"), conf);
    ck_assert_msg(run_capture(cmd, out, sizeof out) == 0, "%s", out);
    ck_assert_int_eq(th_int(c, "SELECT (relkind = 'p')::int FROM pg_class WHERE oid = 'outbox'::regclass"), 1);
    ck_assert_int_eq(th_int(c, partitions_ahead_sql), 3);
}

/* A new session inside a transaction that ran sql and stays open (the
 * caller commits): a writer's late row, or a lock the relay must wait for. */
static PGconn *open_transaction(const th_ctx_t *t, const char *sql) {
    PGconn *c = th_connect(t);
    th_exec(c, "BEGIN");
    th_exec(c, sql);
    return c;
}

/* A row the writer's open transaction inserted (open_transaction). */
#define LATE_ROW \
    "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', 'late', 'x', 'x')"

/* A test's partitioned outbox (migrate_partitioned) with its record, and
 * the relay config for it; returns a connection. */
static PGconn *setup_partitioned(th_ctx_t *t, th_mock_t *m, const char *name, const char **conf) {
    PGconn *c;
    th_mock_start(m, 1);
    th_setup(t, name);
    mock_topic(m, t);
    c = th_connect(t);
    *conf = th_config_group(t, "relay.conf", m->bootstrap, "poll_interval_ms = 100;", "retention", partitions_group);
    migrate_partitioned(*conf, c);
    install_partition_record(c);
    return c;
}

/* Only rows due were dropped and every event of the ledger (messages of
 * them) is on the topic; then stops the relay and the mock, closes c. */
static void assert_nothing_lost_and_stop(th_ctx_t *t, th_mock_t *m, PGconn *c, size_t messages, pid_t relay) {
    th_msgs_t msgs;
    assert_dropped_rows_were_due(c, 2);
    consume_all(t, m->bootstrap, messages, &msgs);
    ck_assert_int_eq(ledger_missing(c, &msgs, "true"), 0);
    th_msgs_free(&msgs);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(m);
}

START_TEST(partitions_drop_only_partitions_sent_long_enough_ago_and_stay_ahead) {
    th_ctx_t t;
    th_mock_t m;
    th_msgs_t msgs;
    char cmd[1024], out[4096];
    const char *conf;
    pid_t a, b;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "retentionpart");
    mock_topic(&m, &t);
    c = th_connect(&t);
    conf = th_config_group(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "retention", partitions_group);
    /* th_setup's outbox is not partitioned: --check names the remedy. */
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check 2>&1", th_bin("outbox-relay"), conf);
    ck_assert_int_eq(run_capture(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "public.outbox partitioned by range of id") &&
                  strstr(out, "SELECT outbox_convert_to_partitions('public', 'outbox', 100)"), "%s", out);
    migrate_partitioned(conf, c);
    install_partition_record(c);

    write_rounds(&t, 1);
    th_exec(c, "UPDATE outbox SET parked_at = now(), last_error = 'test' WHERE id IN (10, 20, 30)");
    a = th_spawn(&t, "outbox-relay", conf, "a.log");
    write_rounds(&t, 4);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 400, 60000);
    ck_assert_int_ge(th_file_count(&t, "a.log", "event=retention_partitions"), 1);

    b = th_spawn(&t, "outbox-relay", conf, "b.log");
    wait_standby(&t, "b.log");
    th_stop(a, SIGKILL, 5000, 128 + SIGKILL);
    write_rounds(&t, 3);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 700, 60000);
    th_wait_count(&t, partitions_ahead_sql, 3, 30000);
    ck_assert_int_eq(th_file_count(&t, "b.log", "event=leadership_acquired"), 1);
    ck_assert_int_ge(th_file_count(&t, "b.log", "event=retention_partitions"), 1);
    ck_assert_int_ge(th_file_count(&t, "b.log", "parked_names=outbox_p1"), 1);

    /* The partition of the parked rows stays, whole; the others went. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox_p1 WHERE parked_at IS NOT NULL"), 3);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 100);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted"), 700);
    ck_assert_int_eq(th_int(c, "SELECT count(DISTINCT part) FROM deleted"), 7);
    assert_dropped_rows_were_due(c, 2);
    consume_all(&t, m.bootstrap, 797, &msgs);
    ck_assert_int_eq(ledger_missing(c, &msgs, "id NOT IN (10, 20, 30)"), 0);
    ck_assert_int_eq(ledger_missing(c, &msgs, "id IN (10, 20, 30)"), 3); /* parked: never published */
    fprintf(stderr, "partitions: 800 rows, 7 partitions dropped after keep_s, 1 kept for 3 parked rows,"
                    " %zu messages\n", msgs.n);
    th_msgs_free(&msgs);
    PQfinish(c);
    th_stop(b, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* A transaction that took an id of a partition stays open while the rest
 * of it is sent and old: the detach waits for it and gives up (lock
 * timeout), leaving the detach pending; once it commits, the next pass
 * finishes the detach, finds its row unsent, attaches the partition again
 * and the relay publishes the row; later the partition goes. */
START_TEST(partitions_keep_a_row_committed_during_the_detach) {
    th_ctx_t t;
    th_mock_t m;
    const char *conf;
    pid_t relay;
    PGconn *c, *w;

    c = setup_partitioned(&t, &m, "retentionlate", &conf);
    w = open_transaction(&t, LATE_ROW);
    write_rounds(&t, 1);
    relay = th_relay_start(&t, conf);
    th_wait_log(&t, "step=detach", 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted"), 0);
    th_exec(w, "COMMIT");
    th_wait_log(&t, "event=partition_reattached", 30000);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 100, 30000); /* ids 1-100; 101 is the next partition's */
    PQfinish(w);
    assert_nothing_lost_and_stop(&t, &m, c, 101, relay);
}
END_TEST

/* Kills the relay while its retention step whose SQL has what waits for
 * a lock; the server ends its session once the step's lock_timeout ends
 * the wait (a dead client is not noticed before), rolling back what the
 * step had not committed. */
static void kill_while_retention_waits(const th_ctx_t *t, pid_t relay, const char *what) {
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay retention'"
             " AND wait_event_type = 'Lock' AND query LIKE '%%%s%%'", what);
    th_wait_count(t, sql, 1, 30000);
    th_stop(relay, SIGKILL, 5000, 128 + SIGKILL);
    th_wait_count(t, "SELECT (count(*) = 0)::int FROM pg_stat_activity"
                     " WHERE application_name = 'outbox-relay retention'", 1, 30000);
}

/* The query counting part in state (1 or 0), into sql. */
static const char *partition_state_sql(char *sql, size_t size, const char *part, const char *state) {
    snprintf(sql, size, "SELECT count(*) FROM outbox_partitions('outbox', 2) WHERE part = '%s' AND state = '%s'",
             part, state);
    return sql;
}

static long long partition_in_state(PGconn *c, const char *part, const char *state) {
    char sql[256];
    return th_int(c, partition_state_sql(sql, sizeof sql, part, state));
}

/* The relay is killed while its DETACH ... CONCURRENTLY of outbox_p101
 * waits for a reader of the partition: the detach is left pending. An
 * operator deletes the parked row that kept outbox_p1, which comes first
 * and is droppable: PostgreSQL refuses to detach it concurrently while
 * outbox_p101's detach is pending, so the next relay must finish that one
 * first; then both go, and nothing else. */
START_TEST(partitions_kill_during_detach_is_finished_by_the_next_pass) {
    th_ctx_t t;
    th_mock_t m;
    char sql[256];
    const char *conf;
    pid_t a, b;
    PGconn *c, *reader;

    c = setup_partitioned(&t, &m, "retentionkilldetach", &conf);
    write_rounds(&t, 2);
    th_exec(c, "UPDATE outbox SET parked_at = now(), last_error = 'test' WHERE id = 50");
    reader = open_transaction(&t, "SELECT count(*) FROM outbox_p101");

    a = th_spawn(&t, "outbox-relay", conf, "a.log");
    kill_while_retention_waits(&t, a, "DETACH PARTITION outbox_p101 CONCURRENTLY");
    th_exec(reader, "COMMIT");
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'outbox_p101'::regclass"
                               " AND inhdetachpending"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted"), 0);
    /* The operator deletes the parked event: it is expected nowhere now. */
    th_exec(c, "DELETE FROM outbox WHERE id = 50");
    th_exec(c, "DELETE FROM ledger WHERE id = 50");
    th_wait_count(&t, partition_state_sql(sql, sizeof sql, "outbox_p1", "droppable"), 1, 30000);
    ck_assert_int_eq(partition_in_state(c, "outbox_p101", "pending"), 1);

    b = th_relay_start(&t, conf);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 199, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted WHERE part = 'outbox_p101'"), 100);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_class WHERE relname IN ('outbox_p1', 'outbox_p101')"), 0);
    ck_assert_int_eq(th_log_count(&t, "already pending detach"), 0);
    PQfinish(reader);
    assert_nothing_lost_and_stop(&t, &m, c, 199, b);
}
END_TEST

/* The relay is killed after its detach of outbox_p1 committed, while the
 * drop waits (for the audit's table, locked by the test): the table is
 * left detached, its rows out of the outbox; the next relay drops it, and
 * every row was on the topic. */
START_TEST(partitions_kill_between_detach_and_drop_loses_nothing) {
    th_ctx_t t;
    th_mock_t m;
    const char *conf;
    pid_t a, b;
    PGconn *c, *audit;

    c = setup_partitioned(&t, &m, "retentionkilldrop", &conf);
    write_rounds(&t, 1);
    /* The drop's event trigger writes to deleted. */
    audit = open_transaction(&t, "LOCK TABLE deleted IN EXCLUSIVE MODE");

    a = th_spawn(&t, "outbox-relay", conf, "a.log");
    kill_while_retention_waits(&t, a, "outbox_drop_partition");
    th_exec(audit, "COMMIT");
    ck_assert_int_eq(partition_in_state(c, "outbox_p1", "detached"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox_p1"), 100);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted"), 0);

    b = th_relay_start(&t, conf);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 100, 30000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_class WHERE relname = 'outbox_p1'"), 0);
    /* The table dropped was no partition: the three ahead are left. */
    th_wait_log_fields(&t, "event=retention_partitions dropped=1", 30000);
    ck_assert_int_eq(th_file_field(&t, "relay.log", "event=retention_partitions", "partitions"), 3);
    PQfinish(audit);
    assert_nothing_lost_and_stop(&t, &m, c, 100, b);
}
END_TEST

/* The relay is killed while outbox_drop_partition attaches outbox_p1
 * again (it holds a row committed during the detach): the gate, an event
 * trigger on that ATTACH, waits for a lock the test holds. The table is
 * left detached with its row unsent and out of the outbox; the next relay
 * attaches it again, publishes the row, and drops the partition once due. */
START_TEST(partitions_kill_during_reattach_keeps_the_row) {
    th_ctx_t t;
    th_mock_t m;
    const char *conf;
    pid_t a, b;
    PGconn *c, *w, *gate;

    c = setup_partitioned(&t, &m, "retentionkillattach", &conf);
    th_exec(c, "CREATE TABLE attach_gate (n int)");
    th_exec(c, "CREATE FUNCTION attach_gate() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF current_query() LIKE '%outbox_drop_partition%' THEN INSERT INTO attach_gate VALUES (1); END IF;"
               " END $$");
    th_exec(c, "CREATE EVENT TRIGGER attach_gate ON ddl_command_start WHEN TAG IN ('ALTER TABLE')"
               " EXECUTE FUNCTION attach_gate()");
    w = open_transaction(&t, LATE_ROW);
    write_rounds(&t, 1);
    gate = open_transaction(&t, "LOCK TABLE attach_gate IN EXCLUSIVE MODE");

    a = th_spawn(&t, "outbox-relay", conf, "a.log");
    th_wait_file_log(&t, "a.log", "step=detach", 30000);
    th_exec(w, "COMMIT");
    kill_while_retention_waits(&t, a, "outbox_drop_partition");
    th_exec(gate, "COMMIT");
    ck_assert_int_eq(partition_in_state(c, "outbox_p1", "detached"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox_p1 WHERE aggregate_id = 'late' AND sent_at IS NULL"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE aggregate_id = 'late'"), 0);

    b = th_relay_start(&t, conf);
    th_wait_log(&t, "event=partition_reattached", 30000);
    th_wait_count(&t, "SELECT count(*) FROM deleted", 100, 30000);
    /* The late row (id 1) went with the partition, once sent. */
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted WHERE id = 1 AND sent_at IS NOT NULL"), 1);
    PQfinish(gate);
    PQfinish(w);
    assert_nothing_lost_and_stop(&t, &m, c, 101, b);
}
END_TEST

/* The documented conversion of a live outbox: rows written before it are
 * published, and dropped with the old table once due; writers go on. */
START_TEST(partitions_convert_an_existing_outbox) {
    th_ctx_t t;
    th_mock_t m;
    char cmd[1024], out[4096];
    const char *conf;
    pid_t relay;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "retentionconvert");
    mock_topic(&m, &t);
    c = th_connect(&t);
    ck_assert_int_eq(th_write(&t, 2, 150, 20, 100, "order"), 150);
    th_exec(c, "SELECT outbox_convert_to_partitions('public', 'outbox', 100)");
    conf = th_config_group(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "retention", partitions_group);
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' migrate 2>&1", th_bin("outbox-relay"), conf);
    ck_assert_msg(run_capture(cmd, out, sizeof out) == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check 2>&1", th_bin("outbox-relay"), conf);
    run_capture(cmd, out, sizeof out);
    ck_assert_msg(strstr(out, "partitioned by id, owned (retention)"), "%s", out);
    ck_assert_int_eq(th_int(c, partitions_ahead_sql), 3);
    install_partition_record(c);
    th_exec(c, "INSERT INTO ledger SELECT id, event_id::text FROM outbox");

    relay = th_relay_start(&t, conf);
    write_rounds(&t, 3);
    /* outbox_p0, the old table, goes once due; the partitions after it too. */
    th_wait_count(&t, "SELECT count(*) FROM deleted", 450, 60000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM deleted WHERE part = 'outbox_p0'"), 150);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 0);
    assert_nothing_lost_and_stop(&t, &m, c, 450, relay);
}
END_TEST

/* A role that does not own the outbox: --check says so; run anyway, its
 * retention fails with the cause logged and publishing goes on. */
START_TEST(partitions_without_ownership_is_refused_and_publishing_goes_on) {
    th_ctx_t t;
    th_mock_t m;
    PGconn *c;

    th_mock_start(&m, 1);
    th_setup(&t, "retentionpartpriv");
    mock_topic(&m, &t);
    c = th_connect(&t);
    migrate_partitioned(th_config_group(&t, "relay.conf", m.bootstrap, "", "retention", partitions_group), c);
    create_relay_role(c, "obx_notowner");
    /* Grants on the outbox do not reach its partitions: retention's reads fail. */
    assert_refused_and_publishing_goes_on(&t, &m, c, config_as(&t, "obx_notowner", m.bootstrap, partitions_group),
                                          "role obx_notowner does not own public.outbox",
                                          "permission denied for table outbox_p");
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

START_TEST(retention_refuses_bad_values) {
    static const struct {
        const char *group, *want;
    } cases[] = {
        {"keep_s = -1;", "keep_s"},
        {"mode = \"truncate\";", "mode"},
        {"partition_rows = 5;", "partition_rows"},
        {"interval_s = 0;", "interval_s"},
        {"max_rows_per_s = \"fast\";", "max_rows_per_s"},
    };
    th_ctx_t t;
    char cmd[1024], out[4096];

    th_setup(&t, "retentionbad");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *conf = th_config_group(&t, "bad.conf", "127.0.0.1:1", "", "retention", cases[i].group);
        snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check 2>&1", th_bin("outbox-relay"), conf);
        ck_assert_int_eq(run_capture(cmd, out, sizeof out), 2);
        ck_assert_msg(strstr(out, "bad.conf:5:") && strstr(out, cases[i].want), "%s: %s", cases[i].group, out);
    }
}
END_TEST

TH_MAIN("retention", 300, retention_deletes_rows_sent_long_enough_ago_and_nothing_else,
        retention_keeps_unsent_rows_behind_a_blocked_one,
        retention_without_delete_privilege_is_logged_and_publishing_goes_on, retention_refuses_bad_values,
        partitions_drop_only_partitions_sent_long_enough_ago_and_stay_ahead,
        partitions_keep_a_row_committed_during_the_detach, partitions_kill_during_detach_is_finished_by_the_next_pass,
        partitions_kill_between_detach_and_drop_loses_nothing, partitions_kill_during_reattach_keeps_the_row,
        partitions_convert_an_existing_outbox,
        partitions_without_ownership_is_refused_and_publishing_goes_on)
