/* The command line: --help, --version, config errors at file:line with exit
 * code 2, --check against live and dead servers and its routed topics (ok,
 * missing, denied), migrate twice, secrets kept
 * out of the logs. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* Runs the relay with args, output (stdout+stderr) into out; fails the
 * test, showing the output, unless it exits with expect. */
static void relay_cmd(const th_ctx_t *t, const char *args, int expect, char *out, size_t size) {
    char cmd[2048], path[512];
    FILE *f;
    size_t n;
    int st;
    snprintf(path, sizeof path, "%s/cmd.out", t->dir);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>&1", th_bin("outbox-relay"), args, path);
    st = th_run(cmd);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
    ck_assert_msg(st == expect, "outbox-relay %s: exit status %d, expected %d; output:\n%s", args, st, expect, out);
}

static const char *write_file(const th_ctx_t *t, const char *name, const char *text) {
    static char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, name);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
    return path;
}

START_TEST(help_and_version) {
    th_ctx_t t;
    char out[8192];
    th_setup(&t, "cli_help");
    relay_cmd(&t, "--help", 0, out, sizeof out);
    th_assert_has(out, "--check");
    th_assert_has(out, "migrate");
    relay_cmd(&t, "--version", 0, out, sizeof out);
    th_assert_has(out, "outbox-relay 0.");
    th_assert_has(out, "librdkafka");
    relay_cmd(&t, "--bogus", 2, out, sizeof out);
    relay_cmd(&t, "", 2, out, sizeof out); /* -c is required */
}
END_TEST

START_TEST(config_errors_exit_2_at_file_line) {
    th_ctx_t t;
    char out[8192], args[1024], expect[1024];
    static const struct { const char *text; int line; const char *reason; } cases[] = {
        {"postgres: { conninfo = \"dbname=x\"; };\nrelay: { batch_size = 0; };\n", 2,
         "relay.batch_size = 0 is out of range [1, 100000]"},
        {"postgres: { conninfo = \"dbname=x\"; };\nrelay: {\n  batchsize = 5;\n};\n", 3,
         "unknown key \"relay.batchsize\""},
        {"postgres: { conninfo = ; };\n", 1, "syntax error"},
        {"postgres: { conninfo = \"dbname=x\"; };\nkafka: { acks = 1; };\n", 2,
         "kafka.acks = 1 breaks idempotence"},
        {"postgres: { conninfo = \"dbname=x\"; };\nkafka: { enable_idempotence = false; };\n", 2,
         "needs enable.idempotence=true"},
        {"postgres: { conninfo = \"dbname=x\"; };\nroutes = ( { aggregate_type = \"a\"; topic = \"no way\"; } );\n", 2,
         "is not a valid Kafka topic name"},
        {"postgres: {\n conninfo = \"host=/tmp port\"; };\n", 2, "postgres.conninfo"},
    };
    th_setup(&t, "cli_config");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = write_file(&t, "bad.conf", cases[i].text);
        snprintf(args, sizeof args, "-c '%s' --check", p);
        relay_cmd(&t, args, 2, out, sizeof out);
        snprintf(expect, sizeof expect, "%s:%d: ", p, cases[i].line);
        ck_assert_msg(strstr(out, expect) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, out, expect);
        ck_assert_msg(strstr(out, cases[i].reason) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, out,
                      cases[i].reason);
    }
    snprintf(args, sizeof args, "-c '%s/missing.conf'", t.dir);
    relay_cmd(&t, args, 2, out, sizeof out);
    th_assert_has(out, "missing.conf: cannot open: No such file or directory");
    /* Unreadable: a root-only file read by the postgres user (root reads
     * everything). The relay runs from a world-readable copy: a checkout
     * under /root (mode 700) keeps the postgres user out of the build tree. */
    {
        char cmd[2048], path[512], bindir[] = "/tmp/obx-cli-bin.XXXXXX";
        FILE *f;
        size_t n;
        int st;
        const char *p = write_file(&t, "secret-only-root.conf", cases[0].text);
        ck_assert_msg(mkdtemp(bindir) != NULL, "mkdtemp: %s", strerror(errno));
        snprintf(cmd, sizeof cmd, "chmod 755 '%s' && cp '%s' '%s/outbox-relay' && chmod 755 '%s/outbox-relay'",
                 bindir, th_bin("outbox-relay"), bindir, bindir);
        ck_assert_msg(th_run(cmd) == 0, "%s failed", cmd);
        snprintf(path, sizeof path, "%s/unreadable.out", t.dir);
        snprintf(cmd, sizeof cmd, "runuser -u postgres -- '%s/outbox-relay' -c '%s' --check >'%s' 2>&1",
                 bindir, p, path);
        st = th_run(cmd);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", bindir);
        th_run(cmd);
        f = fopen(path, "r");
        n = fread(out, 1, sizeof out - 1, f);
        out[n] = '\0';
        fclose(f);
        ck_assert_msg(st == 2, "exit status %d, expected 2; output:\n%s", st, out);
        th_assert_has(out, "secret-only-root.conf: cannot open: Permission denied");
    }
}
END_TEST

START_TEST(check_live_and_dead_servers) {
    th_ctx_t t;
    th_mock_t m;
    char out[8192], args[1024], text[1024];
    th_mock_start(&m, 1);
    th_setup(&t, "cli_check");
    snprintf(args, sizeof args, "-c '%s' --check", th_config(&t, "ok.conf", m.bootstrap, "", ""));
    relay_cmd(&t, args, 0, out, sizeof out);
    th_assert_has(out, "check: ok");
    th_assert_has(out, "SELECT, UPDATE and DELETE (retention) granted");
    /* Unreachable PostgreSQL. */
    snprintf(text, sizeof text, "postgres: { conninfo = \"host=%s/nowhere dbname=x\"; };\n"
                                "kafka: { bootstrap_servers = \"%s\"; };\n", t.dir, m.bootstrap);
    snprintf(args, sizeof args, "-c '%s' --check", write_file(&t, "nopg.conf", text));
    relay_cmd(&t, args, 1, out, sizeof out);
    th_assert_has(out, "postgres: FAILED");
    /* A table that does not exist. */
    snprintf(text, sizeof text, "postgres: { conninfo = \"%s\"; table = \"public.nope\"; };\n"
                                "kafka: { bootstrap_servers = \"%s\"; };\n", t.conninfo, m.bootstrap);
    snprintf(args, sizeof args, "-c '%s' --check", write_file(&t, "notable.conf", text));
    relay_cmd(&t, args, 1, out, sizeof out);
    th_assert_has(out, "does not exist");
    /* Unreachable broker. */
    snprintf(args, sizeof args, "-c '%s' --check", th_config(&t, "nokafka.conf", "127.0.0.1:1", "", ""));
    relay_cmd(&t, args, 1, out, sizeof out);
    th_assert_has(out, "kafka: FAILED");
    th_mock_stop(&m);
}
END_TEST

/* --check asks the brokers about every routed topic and every topic the
 * rows resolve to: ok with its partitions, missing, or denied (exit 1).
 * The check's own metadata requests never create a topic, so a missing
 * topic stays missing even where the broker would auto-create it. */
static void check_with(th_ctx_t *t, const char *bootstrap, const char *routes_topic, int expect, char *out,
                       size_t size) {
    char text[2048], args[1024];
    snprintf(text, sizeof text,
             "postgres: { conninfo = \"%s\"; };\nkafka: { bootstrap_servers = \"%s\"; };\n"
             "relay: { topic_pattern = \"%s.${aggregate_type}\"; };\n"
             "routes = ( { aggregate_type = \"order\"; topic = \"%s\"; } );\n",
             t->conninfo, bootstrap, t->topic_prefix, routes_topic);
    snprintf(args, sizeof args, "-c '%s' --check", write_file(t, "topics.conf", text));
    relay_cmd(t, args, expect, out, size);
}

START_TEST(check_routed_topics) {
    th_ctx_t t;
    th_mock_t m;
    char out[8192], ok[256], missing[256], denied[256], pattern[256], line[512];
    const char *real = getenv("OBX_KAFKA_BOOTSTRAP");
    PGconn *c;

    th_mock_start(&m, 1);
    /* Metadata (ApiKey 3) up to v4: librdkafka 2.0's mock answers v0-v2
     * only, where every request for a topic creates it (Kafka's rule before
     * v4 added AllowAutoTopicCreation), so nothing could be missing. */
    ck_assert_int_eq(rd_kafka_mock_set_apiversion(m.mc, 3, 0, 4), RD_KAFKA_RESP_ERR_NO_ERROR);
    th_setup(&t, "cli_topics");
    snprintf(ok, sizeof ok, "%s.orders", t.topic_prefix);
    snprintf(missing, sizeof missing, "%s.nope", t.topic_prefix);
    snprintf(denied, sizeof denied, "%s.secret", t.topic_prefix);
    snprintf(pattern, sizeof pattern, "%s.payment", t.topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, ok, 3, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, denied, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_mock_topic_set_error(m.mc, denied, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);

    /* A route to an existing topic, an empty outbox. */
    check_with(&t, m.bootstrap, ok, 0, out, sizeof out);
    snprintf(line, sizeof line, "topic %s: ok (partitions 3; route aggregate_type=order)", ok);
    th_assert_has(out, line);
    th_assert_has(out, "check: ok");

    /* A route to a topic that does not exist; asking did not create it. */
    for (int i = 0; i < 2; i++) {
        check_with(&t, m.bootstrap, missing, 1, out, sizeof out);
        snprintf(line, sizeof line, "topic %s: FAILED: missing (UNKNOWN_TOPIC_OR_PART", missing);
        th_assert_has(out, line);
        th_assert_has(out, "auto.create.topics.enable");
        th_assert_has(out, "check: FAILED");
    }

    /* A topic the principal may not describe. */
    check_with(&t, m.bootstrap, denied, 1, out, sizeof out);
    snprintf(line, sizeof line, "topic %s: FAILED: denied (TOPIC_AUTHORIZATION_FAILED", denied);
    th_assert_has(out, line);
    th_assert_has(out, "kafka-acls.sh");

    /* topic_pattern targets of the aggregate types in the outbox, and a
     * row's own topic column. */
    c = th_connect(&t);
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
               " VALUES ('payment', 'p1', 'Paid', 'x'), ('order', 'o1', 'Placed', 'x')");
    check_with(&t, m.bootstrap, ok, 1, out, sizeof out);
    snprintf(line, sizeof line, "topic %s: FAILED: missing (UNKNOWN_TOPIC_OR_PART;"
             " topic_pattern, aggregate_type=payment)", pattern);
    th_assert_has(out, line);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, pattern, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    check_with(&t, m.bootstrap, ok, 0, out, sizeof out);
    snprintf(line, sizeof line, "topic %s: ok (partitions 2; topic_pattern, aggregate_type=payment)",
             pattern);
    th_assert_has(out, line);
    snprintf(line, sizeof line, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, topic,"
             " payload) VALUES ('refund', 'r1', 'Done', '%s', 'x')", denied);
    th_exec(c, line);
    check_with(&t, m.bootstrap, ok, 1, out, sizeof out);
    snprintf(line, sizeof line, "topic %s: FAILED: denied (TOPIC_AUTHORIZATION_FAILED; rows' topic column)",
             denied);
    th_assert_has(out, line);
    th_exec(c, "DELETE FROM outbox");
    PQfinish(c);

    /* The real broker runs with auto.create.topics.enable=true: the check
     * still reports the topic missing, twice, since it never creates it. */
    if (real && *real) {
        for (int i = 0; i < 2; i++) {
            check_with(&t, real, missing, 1, out, sizeof out);
            snprintf(line, sizeof line, "topic %s: FAILED: missing (UNKNOWN_TOPIC_OR_PART", missing);
            th_assert_has(out, line);
        }
    }
    th_mock_stop(&m);
}
END_TEST

START_TEST(migrate_twice_and_quoted_table) {
    th_ctx_t t;
    th_mock_t m;
    char out[8192], args[1024], text[1024];
    PGconn *c;
    pid_t relay;
    th_mock_start(&m, 1);
    th_setup(&t, "cli_migrate");
    snprintf(text, sizeof text,
             "postgres: { conninfo = \"%s\"; table = \"public.Order Events\"; channel = \"Order Events\"; };\n"
             "kafka: { bootstrap_servers = \"%s\"; };\nrelay: { topic_pattern = \"%s.${aggregate_type}\"; };\n",
             t.conninfo, m.bootstrap, t.topic_prefix);
    snprintf(args, sizeof args, "-c '%s' migrate", write_file(&t, "quoted.conf", text));
    relay_cmd(&t, args, 0, out, sizeof out);
    relay_cmd(&t, args, 0, out, sizeof out); /* idempotent */
    c = th_connect(&t);
    th_exec(c, "INSERT INTO \"Order Events\" (aggregate_type, aggregate_id, event_type, payload)"
               " SELECT 'order', 'a' || g, 'OrderPlaced', 'x' FROM generate_series(1, 50) g");
    relay = th_relay_start(&t, write_file(&t, "quoted.conf", text));
    {
        int64_t deadline = th_now_ms() + (int64_t)(20000 * th_mult());
        while (th_int(c, "SELECT count(*) FROM \"Order Events\" WHERE sent_at IS NULL") > 0 &&
               th_now_ms() < deadline)
            usleep(20000);
    }
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM \"Order Events\" WHERE sent_at IS NOT NULL"), 50);
    PQfinish(c);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

START_TEST(password_never_logged) {
    th_ctx_t t;
    char text[1024], path[512], line[8192];
    pid_t relay;
    FILE *f;
    int lines = 0;
    th_setup(&t, "cli_secret");
    /* Wrong password for a role that needs one: libpq's error goes to the log. */
    snprintf(text, sizeof text,
             "postgres: { conninfo = \"%s password=Sup3rS3cretPw host=127.0.0.1\"; };\n"
             "kafka: { bootstrap_servers = \"127.0.0.1:1\"; sasl_password = \"KafkaS3cretPw\"; };\n"
             "log: { level = \"debug\"; };\n", t.conninfo);
    relay = th_relay_start(&t, write_file(&t, "secret.conf", text));
    th_wait_log(&t, "postgres connect failed", 20000);
    th_stop(relay, SIGTERM, 20000, 0);
    snprintf(path, sizeof path, "%s/relay.log", t.dir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        lines++;
        ck_assert_msg(!strstr(line, "Sup3rS3cretPw") && !strstr(line, "KafkaS3cretPw"), "secret in log: %s", line);
    }
    fclose(f);
    ck_assert_int_gt(lines, 3);
    ck_assert_int_ge(th_log_count(&t, "password authentication failed"), 1);
}
END_TEST

START_TEST(world_readable_secret_warns) {
    th_ctx_t t;
    char out[8192], args[1024], text[1024];
    const char *p;
    th_setup(&t, "cli_perm");
    snprintf(text, sizeof text, "postgres: { conninfo = \"%s password=x1y2z3\"; };\n"
                                "kafka: { bootstrap_servers = \"127.0.0.1:1\"; };\n", t.conninfo);
    p = write_file(&t, "perm.conf", text);
    chmod(p, 0644);
    snprintf(args, sizeof args, "-c '%s' --check", p);
    relay_cmd(&t, args, 1, out, sizeof out); /* no broker at 127.0.0.1:1 */
    th_assert_has(out, "readable by other users");
    chmod(p, 0600);
    relay_cmd(&t, args, 1, out, sizeof out); /* no broker at 127.0.0.1:1 */
    th_assert_lacks(out, "readable by other users");
}
END_TEST

START_TEST(sighup_reloads_and_keeps_old_on_error) {
    th_ctx_t t;
    th_mock_t m;
    char text[1024];
    const char *p;
    pid_t relay;
    int64_t deadline;

    th_mock_start(&m, 1);
    th_setup(&t, "cli_reload");
    snprintf(text, sizeof text, "postgres: { conninfo = \"%s\"; };\nkafka: { bootstrap_servers = \"%s\"; };\n"
                                "log: { level = \"info\"; };\n", t.conninfo, m.bootstrap);
    p = write_file(&t, "reload.conf", text);
    relay = th_relay_start(&t, p);
    deadline = th_now_ms() + (int64_t)(10000 * th_mult());
    while (th_log_count(&t, "msg=\"postgres connected\"") < 1 && th_now_ms() < deadline)
        usleep(20000);
    snprintf(text, sizeof text, "postgres: { conninfo = \"%s\"; };\nkafka: { bootstrap_servers = \"%s\"; };\n"
                                "relay: { poll_interval_ms = 50; batch_size = 7; };\nlog: { level = \"debug\"; };\n",
             t.conninfo, m.bootstrap);
    write_file(&t, "reload.conf", text);
    kill(relay, SIGHUP);
    deadline = th_now_ms() + (int64_t)(10000 * th_mult());
    while (th_log_count(&t, "msg=\"config reloaded\"") < 1 && th_now_ms() < deadline)
        usleep(20000);
    ck_assert_int_eq(th_log_count(&t, "msg=\"config reloaded\" restart_needed_for=relay.batch_size"), 1);
    ck_assert_int_eq(th_write(&t, 1, 1, 1, 10, "order"), 1);
    th_drain(&t, 10000);
    ck_assert_int_ge(th_log_count(&t, "level=debug"), 1); /* the new level took effect */
    write_file(&t, "reload.conf", "postgres: { conninfo = ; };\n");
    kill(relay, SIGHUP);
    deadline = th_now_ms() + (int64_t)(10000 * th_mult());
    while (th_log_count(&t, "reload failed, keeping the current config") < 1 && th_now_ms() < deadline)
        usleep(20000);
    ck_assert_int_eq(th_log_count(&t, "reload failed, keeping the current config"), 1);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* The relay runs as a least-privilege role (the README's GRANTs); a role
 * without UPDATE is refused by --check with the reason. */
START_TEST(least_privilege_role) {
    th_ctx_t t;
    th_mock_t m;
    char out[8192], args[1024], text[2048], ci[600];
    PGconn *c, *w;
    pid_t relay;
    int64_t deadline;

    th_mock_start(&m, 1);
    th_setup(&t, "cli_roles");
    c = th_connect(&t);
    th_exec(c, "DROP ROLE IF EXISTS obx_relay_t; DROP ROLE IF EXISTS obx_reader_t; DROP ROLE IF EXISTS obx_writer_t;"
               " CREATE ROLE obx_relay_t LOGIN; CREATE ROLE obx_reader_t LOGIN; CREATE ROLE obx_writer_t LOGIN;"
               " GRANT SELECT, UPDATE, DELETE ON outbox TO obx_relay_t;"
               " GRANT UPDATE ON SEQUENCE outbox_relay_waiting TO obx_relay_t;"
               " GRANT SELECT ON SEQUENCE outbox_id_seq TO obx_relay_t;"
               " GRANT SELECT ON outbox TO obx_reader_t");
    snprintf(ci, sizeof ci, "%s", t.conninfo);
    *strstr(ci, "user=postgres") = '\0';
    snprintf(text, sizeof text, "postgres: { conninfo = \"%suser=obx_reader_t\"; };\n"
                                "kafka: { bootstrap_servers = \"%s\"; };\n", ci, m.bootstrap);
    snprintf(args, sizeof args, "-c '%s' --check", write_file(&t, "reader.conf", text));
    relay_cmd(&t, args, 1, out, sizeof out);
    th_assert_has(out, "role obx_reader_t lacks SELECT and UPDATE on public.outbox");
    /* With UPDATE on the table but not on the waiting flag it cannot go idle. */
    th_exec(c, "GRANT UPDATE ON outbox TO obx_reader_t");
    relay_cmd(&t, args, 1, out, sizeof out);
    th_assert_has(out, "role obx_reader_t lacks UPDATE on the waiting flag of public.outbox");
    snprintf(text, sizeof text, "postgres: { conninfo = \"%suser=obx_relay_t\"; };\n"
                                "kafka: { bootstrap_servers = \"%s\"; };\n"
                                "relay: { topic_pattern = \"%s.${aggregate_type}\"; };\n", ci, m.bootstrap, t.topic_prefix);
    snprintf(args, sizeof args, "-c '%s' --check", write_file(&t, "relay.conf", text));
    relay_cmd(&t, args, 0, out, sizeof out);
    relay = th_relay_start(&t, write_file(&t, "relay.conf", text));
    ck_assert_int_eq(th_write(&t, 2, 300, 10, 50, "order"), 300);
    th_drain(&t, 20000);
    deadline = th_now_ms() + (int64_t)(10000 * th_mult());
    while (th_int(c, TH_RELAY_WAITING) == 0 && th_now_ms() < deadline)
        usleep(20000);
    ck_assert_int_eq(th_int(c, TH_RELAY_WAITING), 1);
    /* A writer with only the README's grant and a search_path without the
     * outbox's schema: the gate trigger still reads the flag and notifies. */
    th_exec(c, "GRANT INSERT, SELECT (event_id) ON outbox TO obx_writer_t");
    snprintf(text, sizeof text, "%suser=obx_writer_t", ci);
    w = PQconnectdb(text);
    ck_assert_int_eq(PQstatus(w), CONNECTION_OK);
    th_exec(w, "SET search_path = pg_temp;"
               " INSERT INTO public.outbox (aggregate_type, aggregate_id, event_type, payload)"
               " VALUES ('order', 'w-1', 'Placed', '\\x01')");
    PQfinish(w);
    th_drain(&t, 20000);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox WHERE aggregate_id = 'w-1' AND sent_at IS NOT NULL"), 1);
    th_stop(relay, SIGTERM, 20000, 0);
    ck_assert_int_eq(th_log_count(&t, "level=error"), 0);
    th_exec(c, "DROP OWNED BY obx_relay_t; DROP OWNED BY obx_reader_t; DROP OWNED BY obx_writer_t;"
               " DROP ROLE obx_relay_t; DROP ROLE obx_reader_t; DROP ROLE obx_writer_t");
    PQfinish(c);
    th_mock_stop(&m);
}
END_TEST

/* Headers with bytes that are not UTF-8 never reach the outbox: PostgreSQL
 * refuses them at insert, and the writer's transaction fails instead. */
START_TEST(non_utf8_headers_refused_at_insert) {
    th_ctx_t t;
    PGconn *c;
    PGresult *r;
    const char *vals[1] = {"{\"trace\": \"\xff\xfe\"}"};

    th_setup(&t, "cli_utf8");
    c = th_connect(&t);
    r = PQexecParams(c, "SELECT outbox_enqueue('order', 'a', 'E', 'x'::bytea, $1::jsonb)", 1, NULL, vals, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    th_assert_has(PQresultErrorMessage(r), "invalid byte sequence for encoding \"UTF8\"");
    PQclear(r);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM outbox"), 0);
    PQfinish(c);
}
END_TEST

TH_MAIN("cli", 120, help_and_version, config_errors_exit_2_at_file_line, check_live_and_dead_servers, check_routed_topics,
        migrate_twice_and_quoted_table, password_never_logged, world_readable_secret_warns, sighup_reloads_and_keeps_old_on_error, least_privilege_role,
        non_utf8_headers_refused_at_insert)
