/* Soak: writers at a steady rate for minutes, the relay following with
 * retention on, on a PostgreSQL of its own with fsync on and the real
 * broker. Every few seconds it samples the outbox's size, its dead tuples,
 * the time of a claim walking from the lowest id and the insert-to-mark
 * latency, and asserts that size and dead tuples stop growing once keep_s
 * has passed and that latency does not drift. Mid-soak the relay is killed
 * (SIGKILL) and PostgreSQL restarted; at the end every event of a ledger
 * (written by a trigger in the writers' transactions, so it holds exactly
 * what committed) is checked against the topic row by row: none lost, per-key
 * order kept, and every row retention deleted was sent keep_s before.
 *
 * Short form by default (CI); OBX_SOAK_LONG=1: 2,100,000 events at 5,000/s
 * with keep_s 60. OBX_SOAK_RATE, OBX_SOAK_SECONDS, OBX_SOAK_KEEP_S override.
 * OBX_SOAK_MODE=partitions: the outbox is created partitioned by migrate
 * (partitions of 2 s of writes, 10 ahead) and retention drops partitions;
 * an event trigger audits every dropped table's rows as the delete trigger
 * audits deleted rows. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define TXN_ROWS 20
#define KEYS 200
#define SAMPLE_MS 2000
#define SAMPLES_MAX 4096

typedef struct {
    const th_ctx_t *t;
    int index, writers;
    double rate;            /* rows/s of this writer */
    int64_t until;
    long committed, failed;
} writer_t;

/* One transaction of TXN_ROWS rows for one key, the key locked first (as a
 * service locks its aggregate): a statement, so one round trip. */
static const char insert_sql[] =
    "WITH l AS (SELECT pg_advisory_xact_lock(hashtext($1)))"
    " INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
    " SELECT 'order', $1, 'OrderPlaced', convert_to(repeat('x', 200), 'UTF8') FROM generate_series(1, 20), l";

/* Inserts at its rate until the deadline; reconnects after PostgreSQL's
 * restart (a transaction lost with the connection is either in the ledger
 * or not: the ledger commits with it). */
static void *paced_writer(void *arg) {
    writer_t *w = arg;
    PGconn *c = NULL;
    int64_t start = th_now_ms();
    double every_ms = TXN_ROWS * 1000.0 / w->rate;

    for (long k = 0; th_now_ms() < w->until; k++) {
        int64_t due = start + (int64_t)(k * every_ms);
        char key[32];
        const char *params[1] = {key};
        PGresult *r;

        if (due > th_now_ms())
            usleep((useconds_t)(due - th_now_ms()) * 1000);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(w->t->conninfo);
            if (PQstatus(c) != CONNECTION_OK) {
                w->failed++;
                usleep(100000);
                continue;
            }
        }
        snprintf(key, sizeof key, "k%ld", (w->index + k * w->writers) % KEYS);
        r = PQexecParams(c, insert_sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            w->committed += TXN_ROWS;
        else
            w->failed++;
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

typedef struct {
    double t_s, size_mb, claim_ms, p99_ms;
    long long dead, rows;
} sample_t;

static double query_double(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    double v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atof(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static void take_sample(const th_ctx_t *t, int64_t started, sample_t *s) {
    PGconn *c = PQconnectdb(t->conninfo);
    int64_t t0;

    memset(s, 0, sizeof *s);
    s->t_s = (double)(th_now_ms() - started) / 1000.0;
    s->size_mb = s->claim_ms = s->p99_ms = -1;
    s->dead = s->rows = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c); /* PostgreSQL restarting: a gap in the samples */
        return;
    }
    /* Over the partitions, if any: a partitioned table has no storage. */
    s->size_mb = query_double(c, "SELECT sum(pg_total_relation_size(relid)) / 1048576.0 FROM"
                                 " (SELECT relid FROM pg_partition_tree('outbox') UNION SELECT 'outbox'::regclass) t");
    s->dead = (long long)query_double(c, "SELECT COALESCE(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relid IN"
                                         " (SELECT relid FROM pg_partition_tree('outbox') UNION SELECT 'outbox'::regclass)");
    s->rows = (long long)query_double(c, "SELECT count(*) FROM outbox");
    s->p99_ms = query_double(c, "SELECT COALESCE(1000 * percentile_cont(0.99) WITHIN GROUP"
                                " (ORDER BY EXTRACT(EPOCH FROM sent_at - created_at)), 0)"
                                " FROM outbox WHERE sent_at > now() - interval '2 seconds'");
    /* A rescan's claim walks the primary key from the lowest id over every
     * row still kept: it slows down as the table (or its dead tuples) grows. */
    t0 = th_now_ms();
    if (query_double(c, "SELECT count(*) FROM (SELECT id FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL"
                        " AND id > 0 ORDER BY id LIMIT 500) s") >= 0)
        s->claim_ms = (double)(th_now_ms() - t0);
    PQfinish(c);
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* The highest value of field over samples whose time is in [from, to). */
static double window_max(const sample_t *s, int n, double from, double to, int field) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        double v = field == 0 ? s[i].size_mb : field == 1 ? (double)s[i].dead : s[i].claim_ms;
        if (s[i].t_s >= from && s[i].t_s < to && v > m)
            m = v;
    }
    return m;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of the p99 samples in [from, to). */
static double window_median_p99(const sample_t *s, int n, double from, double to) {
    double v[SAMPLES_MAX];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (s[i].t_s >= from && s[i].t_s < to && s[i].p99_ms >= 0)
            v[k++] = s[i].p99_ms;
    if (k == 0)
        return 0;
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return v[k / 2];
}

static const char ledger_view[] =
    "(SELECT l.id, l.event_id, l.aggregate_type, l.aggregate_id, l.event_type, l.headers, l.created_at,"
    " o.parked_at, CASE WHEN o.id IS NULL THEN l.created_at ELSE o.sent_at END AS sent_at"
    " FROM ledger l LEFT JOIN outbox o USING (id)) v";

START_TEST(soak_retention_keeps_the_outbox_small_and_loses_nothing) {
    static sample_t samples[SAMPLES_MAX];
    int long_form = getenv("OBX_SOAK_LONG") && *getenv("OBX_SOAK_LONG") == '1';
    int rate = env_int("OBX_SOAK_RATE", 5000), seconds = env_int("OBX_SOAK_SECONDS", long_form ? 420 : 60);
    int keep_s = env_int("OBX_SOAK_KEEP_S", long_form ? 60 : 10);
    int partitions = getenv("OBX_SOAK_MODE") && strcmp(getenv("OBX_SOAK_MODE"), "partitions") == 0;
    const char *bootstrap = getenv("OBX_KAFKA_BOOTSTRAP"), *tmp = getenv("OBX_TEST_TMP");
    char dir[512], cmd[1024], port[16], retention[256], topic[128];
    writer_t w[2];
    pthread_t th[2];
    th_ctx_t t;
    th_msgs_t msgs;
    th_verify_t v;
    PGconn *c;
    pid_t relay;
    const char *conf;
    int64_t started;
    int n = 0, killed = 0, restarted = 0;
    long committed = 0, failed = 0;
    double warm, mid, end, size1, size2, dead1, dead2, claim1, claim2, p99a, p99b;

    ck_assert_msg(bootstrap && *bootstrap, "OBX_KAFKA_BOOTSTRAP unset: tests/run.sh starts a real broker");
    ck_assert_msg(tmp && *tmp, "OBX_TEST_TMP unset: tests/run.sh sets it");
    /* A PostgreSQL of its own with fsync on: the suite's runs without. */
    snprintf(dir, sizeof dir, "%s/pg-soak", tmp);
    snprintf(port, sizeof port, "%d", env_int("OBX_TEST_PGPORT", 54329) + 11);
    snprintf(cmd, sizeof cmd, "PGPORT=%s PG_FSYNC=on '%s' start '%s' >/dev/null", port, th_src("tests/pg.sh"), dir);
    ck_assert_msg(th_run(cmd) == 0, "cannot start the soak's PostgreSQL in %s", dir);
    setenv("OBX_TEST_PGHOST", dir, 1);
    setenv("OBX_TEST_PGPORT", port, 1);
    th_setup(&t, "soak");
    c = th_connect(&t);
    ck_assert_int_eq(th_int(c, "SELECT (current_setting('fsync') = 'on')::int"), 1);
    /* Autovacuum looks at each database once a minute: the short form, a
     * minute long, asks every 5 s so that its vacuums show; the long form
     * keeps the server's defaults. */
    th_exec(c, long_form ? "ALTER SYSTEM RESET autovacuum_naptime" : "ALTER SYSTEM SET autovacuum_naptime = '5s'");
    th_exec(c, "SELECT pg_reload_conf()");
    if (partitions) {
        /* Partitions of 2 s of writes, 20 s of them ahead of the ids. */
        snprintf(retention, sizeof retention,
                 "mode = \"partitions\"; keep_s = %d; interval_s = 2; partition_rows = %d; partitions_ahead = 10;",
                 keep_s, rate * 2);
        conf = th_config_group(&t, "relay.conf", bootstrap, "", "retention", retention);
        th_exec(c, "DROP TABLE outbox CASCADE");
        snprintf(cmd, sizeof cmd, "'%s' -c '%s' migrate 2>>'%s/migrate.log'", th_bin("outbox-relay"), conf, t.dir);
        ck_assert_msg(th_run(cmd) == 0, "migrate failed, see %s/migrate.log", t.dir);
        th_exec(c, "CREATE FUNCTION dropped_add() RETURNS event_trigger LANGUAGE plpgsql AS $$ DECLARE p regclass;"
                   " BEGIN FOR p IN SELECT oid::regclass FROM pg_class WHERE relname ~ '^outbox_p[0-9]+$'"
                   "  AND relkind = 'r' AND NOT relispartition LOOP"
                   "  EXECUTE format('INSERT INTO deleted SELECT id, sent_at, parked_at, now() FROM %s', p);"
                   " END LOOP; END $$");
        th_exec(c, "CREATE EVENT TRIGGER dropped ON ddl_command_start WHEN TAG IN ('DROP TABLE')"
                   " EXECUTE FUNCTION dropped_add()");
    } else {
        snprintf(retention, sizeof retention, "keep_s = %d; interval_s = 2;", keep_s);
        conf = th_config_group(&t, "relay.conf", bootstrap, "", "retention", retention);
    }
    th_exec(c, "CREATE TABLE ledger (LIKE outbox)");
    th_exec(c, "CREATE FUNCTION ledger_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO ledger SELECT NEW.*; RETURN NULL; END $$");
    th_exec(c, "CREATE TRIGGER ledger AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION ledger_add()");
    th_exec(c, "CREATE TABLE deleted (id bigint, sent_at timestamptz, parked_at timestamptz, deleted_at timestamptz)");
    th_exec(c, "CREATE FUNCTION deleted_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO deleted VALUES (OLD.id, OLD.sent_at, OLD.parked_at, now()); RETURN OLD; END $$");
    th_exec(c, "CREATE TRIGGER deleted BEFORE DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION deleted_add()");
    PQfinish(c);
    relay = th_relay_start(&t, conf);

    started = th_now_ms();
    for (int i = 0; i < 2; i++) {
        w[i] = (writer_t){&t, i, 2, rate / 2.0, started + (int64_t)seconds * 1000, 0, 0};
        pthread_create(&th[i], NULL, paced_writer, &w[i]);
    }
    fprintf(stderr, "soak: %d events/s for %d s, keep_s %d, retention %s, fsync on\n", rate, seconds, keep_s,
            partitions ? "partitions" : "delete");
    fprintf(stderr, "soak:   t_s   rows  size_mb   dead  claim_ms  p99_ms\n");
    while (th_now_ms() < started + (int64_t)seconds * 1000 && n < SAMPLES_MAX) {
        double at = (double)(th_now_ms() - started) / seconds / 1000.0;
        usleep(SAMPLE_MS * 1000); /* the sampling period, not a wait for an event */
        take_sample(&t, started, &samples[n]);
        fprintf(stderr, "soak: %5.0f %6lld %8.1f %6lld %9.1f %7.0f\n", samples[n].t_s, samples[n].rows,
                samples[n].size_mb, samples[n].dead, samples[n].claim_ms, samples[n].p99_ms);
        n++;
        if (!killed && at >= 0.35) {
            th_stop(relay, SIGKILL, 5000, 128 + SIGKILL);
            relay = th_relay_start(&t, conf);
            killed = 1;
            fprintf(stderr, "soak: relay killed (SIGKILL) and started again\n");
        } else if (!restarted && at >= 0.65) {
            snprintf(cmd, sizeof cmd, "PGPORT=%s '%s' restart '%s' fast", port, th_src("tests/pg.sh"), dir);
            ck_assert_int_eq(th_run(cmd), 0);
            restarted = 1;
            fprintf(stderr, "soak: PostgreSQL restarted (fast)\n");
        }
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        committed += w[i].committed;
        failed += w[i].failed;
    }
    fprintf(stderr, "soak: writers committed %ld rows (%.0f/s), %ld failed transactions\n", committed,
            committed / (double)seconds, failed);
    ck_assert_msg(th_wait_drained(&t, 120000), "rows left unsent");

    /* Bounded: from keep_s (plus the first passes) on, the second half of the
     * soak peaks about as high as the first (vacuum's timing makes it
     * wobble); a table that grows at a steady pace peaks 1.5 times as high. */
    warm = keep_s + 10.0;
    mid = warm + (seconds - warm) / 2;
    end = seconds + 1.0;
    size1 = window_max(samples, n, warm, mid, 0);
    size2 = window_max(samples, n, mid, end, 0);
    dead1 = window_max(samples, n, warm, mid, 1);
    dead2 = window_max(samples, n, mid, end, 1);
    claim1 = window_max(samples, n, warm, mid, 2);
    claim2 = window_max(samples, n, mid, end, 2);
    p99a = window_median_p99(samples, n, warm, mid);
    p99b = window_median_p99(samples, n, mid, end);
    fprintf(stderr, "soak: peaks first half / second half: size %.1f / %.1f MB, dead %.0f / %.0f,"
                    " claim %.1f / %.1f ms; median p99 %.0f / %.0f ms\n",
            size1, size2, dead1, dead2, claim1, claim2, p99a, p99b);
    ck_assert_msg(size2 <= size1 * 1.25 + 2, "the outbox kept growing: %.1f MB, then %.1f MB", size1, size2);
    ck_assert_msg(dead2 <= dead1 * 1.5 + 20000, "dead tuples kept growing: %.0f, then %.0f", dead1, dead2);
    ck_assert_msg(p99b <= p99a * 2 + 200, "latency drifted up: median p99 %.0f ms, then %.0f ms", p99a, p99b);

    c = th_connect(&t);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM ledger"), committed);
    ck_assert_msg(th_int(c, "SELECT count(*) FROM deleted WHERE sent_at IS NULL OR parked_at IS NOT NULL") == 0,
                  "retention deleted unsent or parked rows");
    {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM deleted WHERE deleted_at - sent_at < make_interval(secs => %d)",
                 keep_s);
        ck_assert_msg(th_int(c, sql) == 0, "retention deleted rows younger than keep_s");
    }
    fprintf(stderr, "soak: retention deleted %lld rows; %lld left in the outbox; %d partition_ahead_missing lines\n",
            th_int(c, "SELECT count(*) FROM deleted"), th_int(c, "SELECT count(*) FROM outbox"),
            th_log_count(&t, "event=partition_ahead_missing"));
    if (partitions) {
        /* The writers never outran the partitions ahead. */
        ck_assert_int_eq(th_log_count(&t, "event=partition_ahead_missing"), 0);
        ck_assert_msg(th_int(c, "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = l.id)"
                                " AND NOT EXISTS (SELECT 1 FROM deleted d WHERE d.id = l.id)") == 0,
                      "rows vanished from the outbox other than in an audited drop");
    }
    PQfinish(c);
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    th_consume(bootstrap, topic, (size_t)committed, 300000, &msgs);
    v = th_verify_from(&t, &msgs, "order", ledger_view);
    th_msgs_free(&msgs);
    ck_assert_msg(v.lost == 0 && v.unsent == 0 && v.order_violations == 0 && v.wrong_headers == 0,
                  "lost %ld, unsent %ld, order violations %ld, wrong headers %ld", v.lost, v.unsent,
                  v.order_violations, v.wrong_headers);
    th_stop(relay, SIGTERM, 30000, 0);
    snprintf(cmd, sizeof cmd, "PGPORT=%s '%s' stop '%s'", port, th_src("tests/pg.sh"), dir);
    th_run(cmd);
}
END_TEST

TH_MAIN("soak", 3600, soak_retention_keeps_the_outbox_small_and_loses_nothing)
