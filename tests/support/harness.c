#include "harness.h"
#include "proc.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *def) {
    const char *v = getenv(name);
    return v && *v ? v : def;
}

double th_mult(void) { return atof(env_or("OBX_TEST_TIMEOUT_MULT", "1")) > 0 ? atof(env_or("OBX_TEST_TIMEOUT_MULT", "1")) : 1; }

int64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *th_bin(const char *name) {
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 512, "%s/%s", env_or("OBX_BUILD_ROOT", "."), name);
    return b;
}

const char *th_src(const char *rel) {
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 512, "%s/%s", env_or("OBX_SOURCE_ROOT", "."), rel);
    return b;
}

int th_run(const char *cmd) {
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void th_pg_ctl(const char *what) {
    char cmd[1024];
    const char *dir = getenv("OBX_TEST_PGDIR");
    int st;
    ck_assert_msg(dir && *dir, "OBX_TEST_PGDIR unset: tests/run.sh sets it");
    /* pg.sh's arguments are "start|stop DIR" and "restart DIR MODE". */
    if (strncmp(what, "restart ", 8) == 0)
        snprintf(cmd, sizeof cmd, "'%s' restart '%s' %s >/dev/null", th_src("tests/pg.sh"), dir, what + 8);
    else
        snprintf(cmd, sizeof cmd, "'%s' %s '%s' >/dev/null", th_src("tests/pg.sh"), what, dir);
    st = th_run(cmd);
    ck_assert_msg(st == 0, "tests/pg.sh %s exited %d: %s", what, st, cmd);
}

static PGconn *connect_db(const char *db) {
    char ci[512];
    PGconn *c;
    snprintf(ci, sizeof ci, "host=%s port=%s dbname=%s user=postgres", env_or("OBX_TEST_PGHOST", "/tmp"),
             env_or("OBX_TEST_PGPORT", "54329"), db);
    c = PQconnectdb(ci);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", db, PQerrorMessage(c));
    return c;
}

PGconn *th_connect(const th_ctx_t *t) { return connect_db(t->db); }

void th_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

long long th_int(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    long long v;
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQresultErrorMessage(r));
    v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

void th_setup(th_ctx_t *t, const char *name) {
    char sql[256], cmd[1024];
    PGconn *c;

    memset(t, 0, sizeof *t);
    snprintf(t->db, sizeof t->db, "t_%s", name);
    snprintf(t->dir, sizeof t->dir, "%s/%s", env_or("OBX_TEST_TMP", "/tmp/obx-tests"), name);
    snprintf(t->topic_prefix, sizeof t->topic_prefix, "%s-%d", name, (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", t->dir, t->dir);
    ck_assert_int_eq(th_run(cmd), 0);
    snprintf(t->conninfo, sizeof t->conninfo, "host=%s port=%s dbname=%s user=postgres",
             env_or("OBX_TEST_PGHOST", "/tmp"), env_or("OBX_TEST_PGPORT", "54329"), t->db);
    c = connect_db("postgres");
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->db);
    th_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", t->db);
    th_exec(c, sql);
    PQfinish(c);
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' migrate 2>>'%s/migrate.log'", th_bin("outbox-relay"),
             th_config(t, "migrate.conf", "127.0.0.1:1", "", ""), t->dir);
    ck_assert_msg(th_run(cmd) == 0, "migrate failed, see %s/migrate.log", t->dir);
}

/* Every child th_spawn started and has not reaped, with its log, so that
 * th_relay_stop can show the log and the test's end can kill what is left. */
static struct {
    pid_t pid;
    char log[512];
} children[64];
static int nchildren;

static const char *child_log(pid_t pid) {
    for (int i = 0; i < nchildren; i++)
        if (children[i].pid == pid)
            return children[i].log;
    return NULL;
}

static void child_forget(pid_t pid) {
    for (int i = 0; i < nchildren; i++)
        if (children[i].pid == pid)
            children[i] = children[--nchildren];
}

void th_kill_children(void) {
    while (nchildren > 0) {
        fprintf(stderr, "harness: killing pid %d left running (log %s)\n", (int)children[0].pid, children[0].log);
        proc_reap(children[0].pid, SIGKILL, 5000);
        child_forget(children[0].pid);
    }
}

void th_teardown(th_ctx_t *t) {
    (void)t;
    th_kill_children();
}

const char *th_config(th_ctx_t *t, const char *file, const char *bootstrap,
                      const char *relay_extra, const char *kafka_extra) {
    return th_config_level(t, file, bootstrap, relay_extra, kafka_extra, "info");
}

const char *th_config_level(th_ctx_t *t, const char *file, const char *bootstrap,
                            const char *relay_extra, const char *kafka_extra, const char *level) {
    static char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, file);
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "write %s", path);
    fprintf(f,
            "postgres: { conninfo = \"%s\"; };\n"
            "kafka: { bootstrap_servers = \"%s\"; linger_ms = 5; %s };\n"
            "relay: { topic_pattern = \"%s.${aggregate_type}\"; shutdown_timeout_ms = 10000;"
            " reconnect_max_ms = 2000; %s };\n"
            "log: { level = \"%s\"; stats_interval_s = 1; };\n",
            t->conninfo, bootstrap, kafka_extra, t->topic_prefix, relay_extra, level);
    fclose(f);
    chmod(path, 0600);
    return path;
}

const char *th_config_group(th_ctx_t *t, const char *file, const char *bootstrap, const char *relay_extra,
                            const char *group, const char *body) {
    const char *path = th_config(t, file, bootstrap, relay_extra, "");
    FILE *f = fopen(path, "a");
    ck_assert_msg(f != NULL, "append to %s", path);
    fprintf(f, "%s: { %s };\n", group, body);
    fclose(f);
    return path;
}

pid_t th_spawn_argv(const th_ctx_t *t, char *const argv[], const char *logname) {
    static int registered;
    pid_t pid;
    ck_assert_msg(nchildren < (int)(sizeof children / sizeof children[0]), "more than %d children",
                  nchildren);
    /* A failed assertion exits the test's process without its teardown. */
    if (!registered++)
        atexit(th_kill_children);
    snprintf(children[nchildren].log, sizeof children[nchildren].log, "%s/%s", t->dir, logname);
    pid = proc_spawn(argv, children[nchildren].log, -1);
    ck_assert_msg(pid > 0, "fork %s: %s", argv[0], strerror(errno));
    children[nchildren++].pid = pid;
    return pid;
}

pid_t th_spawn(const th_ctx_t *t, const char *bin, const char *conf, const char *logname) {
    char path[512], cmd[2048];
    snprintf(path, sizeof path, "%s", th_bin(bin));
    if (getenv("OBX_TEST_RELAY_WRAPPER")) {
        /* exec keeps the pid, so signals reach the wrapped program. */
        snprintf(cmd, sizeof cmd, "exec %s '%s' -c '%s'", getenv("OBX_TEST_RELAY_WRAPPER"), path, conf);
        return th_spawn_argv(t, (char *const[]){"/bin/sh", "-c", cmd, NULL}, logname);
    }
    return th_spawn_argv(t, (char *const[]){path, "-c", (char *)conf, NULL}, logname);
}

pid_t th_relay_start(const th_ctx_t *t, const char *conf) {
    return th_spawn(t, "outbox-relay", conf, "relay.log");
}

void th_apply_sql(PGconn *c, const char *rel) {
    FILE *f = fopen(th_src(rel), "r");
    char *sql;
    long n;
    ck_assert_msg(f != NULL, "open %s", th_src(rel));
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    sql = calloc(1, (size_t)n + 1);
    ck_assert_int_eq(fread(sql, 1, (size_t)n, f), n);
    fclose(f);
    th_exec(c, sql);
    free(sql);
}

/* The last lines of DIR/log for a failure message. */
static const char *tail_of(const char *path, char *out, size_t size) {
    return proc_tail(path, 8, out, size);
}

int th_relay_stop(pid_t pid, int sig, int timeout_ms) {
    const char *log = child_log(pid);
    char tail[2048];
    int st = proc_reap(pid, sig, timeout_ms * th_mult());
    if (st == -1 && log)
        fprintf(stderr, "pid %d did not exit within %d ms (killed); %s ends:\n%s\n", (int)pid,
                (int)(timeout_ms * th_mult()), log, tail_of(log, tail, sizeof tail));
    child_forget(pid);
    return st;
}

void th_stop(pid_t pid, int sig, int timeout_ms, int expect) {
    const char *log = child_log(pid);
    char path[512], tail[2048];
    int st;
    snprintf(path, sizeof path, "%s", log ? log : "(not spawned by the harness)");
    st = th_relay_stop(pid, sig, timeout_ms);
    ck_assert_msg(st == expect, "pid %d after signal %d: exit status %d, expected %d (-1: still running after %d ms); %s ends:\n%s",
                  (int)pid, sig, st, expect, (int)(timeout_ms * th_mult()), path,
                  log ? tail_of(path, tail, sizeof tail) : "");
}

static int line_has(const char *line, const char *needle) { return strstr(line, needle) != NULL; }

/* Counts the lines of DIR/log that match(line, arg). */
static int count_lines(const th_ctx_t *t, const char *logname, int (*match)(const char *, const char *),
                       const char *arg) {
    char path[512], line[8192];
    int n = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, logname);
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        n += match(line, arg);
    fclose(f);
    return n;
}

int th_file_count(const th_ctx_t *t, const char *logname, const char *needle) {
    return count_lines(t, logname, line_has, needle);
}

long long th_file_field(const th_ctx_t *t, const char *logname, const char *needle, const char *key) {
    char path[512], line[8192], k[128];
    long long v = -1;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, logname);
    snprintf(k, sizeof k, " %s=", key);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        const char *p;
        if (strstr(line, needle))
            v = (p = strstr(line, k)) ? atoll(p + strlen(k)) : -1;
    }
    fclose(f);
    return v;
}

/* 1 when every "key=value" of fields (space-separated) is a whole field of
 * line, wherever it stands. */
static int line_has_fields(const char *line, const char *fields) {
    char f[256];
    for (const char *p = fields; *p;) {
        size_t n = strcspn(p, " ");
        const char *at = line;
        int found = 0;
        snprintf(f, sizeof f, "%.*s", (int)n, p);
        while (!found && (at = strstr(at, f)) != NULL) {
            found = (at == line || at[-1] == ' ') && strchr(" \n", at[strlen(f)]);
            at++;
        }
        if (!found)
            return 0;
        p += n + strspn(p + n, " ");
    }
    return 1;
}

int th_file_count_fields(const th_ctx_t *t, const char *logname, const char *fields) {
    return count_lines(t, logname, line_has_fields, fields);
}

int th_log_count(const th_ctx_t *t, const char *needle) {
    return th_file_count(t, "relay.log", needle);
}

int th_wait(int (*cond)(void *), void *arg, int timeout_ms) {
    int64_t deadline = th_now_ms() + (int64_t)(timeout_ms * th_mult());
    while (!cond(arg)) {
        if (th_now_ms() >= deadline)
            return 0;
        usleep(20000);
    }
    return 1;
}

typedef struct {
    const th_ctx_t *t;
    const char *text;
    long at_least;
} wait_arg_t;

static int count_reached(void *p) {
    wait_arg_t *a = p;
    PGconn *c = PQconnectdb(a->t->conninfo);
    int ok = 0;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, a->text);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) >= a->at_least;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

void th_wait_count(const th_ctx_t *t, const char *sql, long n, int timeout_ms) {
    wait_arg_t a = {t, sql, n};
    char path[512], tail[2048];
    PGconn *c;
    long long last;
    if (th_wait(count_reached, &a, timeout_ms))
        return;
    c = th_connect(t);
    last = th_int(c, sql);
    PQfinish(c);
    snprintf(path, sizeof path, "%s/relay.log", t->dir);
    ck_assert_msg(0, "never reached %ld within %d ms (now %lld): %s; %s ends:\n%s", n,
                  (int)(timeout_ms * th_mult()), last, sql, path, tail_of(path, tail, sizeof tail));
}

typedef struct {
    const th_ctx_t *t;
    const char *log, *text;
    int fields;
} log_arg_t;

static int log_has(void *p) {
    log_arg_t *a = p;
    return (a->fields ? th_file_count_fields(a->t, a->log, a->text) : th_file_count(a->t, a->log, a->text)) > 0;
}

static void wait_log(const th_ctx_t *t, const char *log, int fields, const char *needle, int timeout_ms) {
    log_arg_t a = {t, log, needle, fields};
    char path[512], tail[2048];
    if (th_wait(log_has, &a, timeout_ms))
        return;
    snprintf(path, sizeof path, "%s/%s", t->dir, log);
    ck_assert_msg(0, "no line with \"%s\" within %d ms; %s ends:\n%s", needle, (int)(timeout_ms * th_mult()),
                  path, tail_of(path, tail, sizeof tail));
}

void th_wait_log(const th_ctx_t *t, const char *needle, int timeout_ms) {
    wait_log(t, "relay.log", 0, needle, timeout_ms);
}

void th_wait_log_fields(const th_ctx_t *t, const char *fields, int timeout_ms) {
    wait_log(t, "relay.log", 1, fields, timeout_ms);
}

void th_wait_file_log(const th_ctx_t *t, const char *logname, const char *needle, int timeout_ms) {
    wait_log(t, logname, 0, needle, timeout_ms);
}

#define UNSENT_SQL "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL"

static int drained(void *arg) {
    wait_arg_t a = {arg, UNSENT_SQL, 0};
    PGconn *c = PQconnectdb(a.t->conninfo);
    int done = 0;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, a.text);
        done = PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) == 0;
        PQclear(r);
    }
    PQfinish(c);
    return done;
}

/* Why a drain did not finish: rows left and the relay log's end. */
static const char *undrained(const th_ctx_t *t, int timeout_ms, char *out, size_t size) {
    char path[512], tail[2048];
    PGconn *c = PQconnectdb(t->conninfo);
    PGresult *r = PQexec(c, UNSENT_SQL);
    snprintf(path, sizeof path, "%s/relay.log", t->dir);
    snprintf(out, size, "%s rows of %s unsent and unparked after %d ms; %s ends:\n%s",
             PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQerrorMessage(c), t->db,
             (int)(timeout_ms * th_mult()), path, tail_of(path, tail, sizeof tail));
    PQclear(r);
    PQfinish(c);
    return out;
}

int th_wait_drained(const th_ctx_t *t, int timeout_ms) {
    char why[3072];
    if (th_wait(drained, (void *)t, timeout_ms))
        return 1;
    fprintf(stderr, "%s\n", undrained(t, timeout_ms, why, sizeof why));
    return 0;
}

void th_drain(const th_ctx_t *t, int timeout_ms) {
    char why[3072];
    ck_assert_msg(th_wait(drained, (void *)t, timeout_ms), "%s", undrained(t, timeout_ms, why, sizeof why));
}

typedef struct {
    const th_ctx_t *t;
    int index, writers, naggs, payload_size;
    long n;
    const char *aggregate_type;
    long committed;
} writer_arg_t;

static void *writer_main(void *p) {
    writer_arg_t *w = p;
    PGconn *c = PQconnectdb(w->t->conninfo);
    char *payload = malloc((size_t)w->payload_size + 1);
    char agg[32], hdr[128];
    const char *vals[4] = {w->aggregate_type, agg, payload, hdr};
    int lens[4] = {0, 0, w->payload_size, 0}, fmts[4] = {0, 0, 1, 0};

    for (int i = 0; i < w->payload_size; i++)
        payload[i] = (char)('a' + (i + w->index) % 26);
    for (long i = w->index; i < w->n && PQstatus(c) == CONNECTION_OK; i += w->writers) {
        PGresult *r;
        snprintf(agg, sizeof agg, "agg-%ld", i % w->naggs);
        snprintf(hdr, sizeof hdr, "{\"traceparent\": \"00-%s-%ld\"}", agg, i);
        /* The CTE takes the aggregate's lock before the insert: writers of one
         * aggregate serialize, so id order is commit order per key (G2). */
        r = PQexecParams(c,
            "WITH l AS (SELECT pg_advisory_xact_lock(hashtext($2)))"
            " SELECT outbox_enqueue($1, $2, 'OrderPlaced', $3::bytea, $4::jsonb) FROM l",
            4, NULL, vals, lens, fmts, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            w->committed++;
        PQclear(r);
    }
    free(payload);
    PQfinish(c);
    return NULL;
}

long th_write(const th_ctx_t *t, int writers, long n, int naggs, int payload_size,
              const char *aggregate_type) {
    pthread_t th[32];
    writer_arg_t args[32];
    long total = 0;
    ck_assert_int_le(writers, 32);
    for (int i = 0; i < writers; i++) {
        args[i] = (writer_arg_t){t, i, writers, naggs, payload_size, n, aggregate_type, 0};
        pthread_create(&th[i], NULL, writer_main, &args[i]);
    }
    for (int i = 0; i < writers; i++) {
        pthread_join(th[i], NULL);
        total += args[i].committed;
    }
    return total;
}

void th_mock_start(th_mock_t *m, int brokers) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(m->rk != NULL, "%s", err);
    m->mc = rd_kafka_mock_cluster_new(m->rk, brokers);
    ck_assert_ptr_nonnull(m->mc);
    snprintf(m->bootstrap, sizeof m->bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(m->mc));
}

void th_mock_stop(th_mock_t *m) {
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->rk);
}

static char *hdr_dup(rd_kafka_headers_t *h, const char *name) {
    const void *v;
    size_t sz;
    char *s;
    if (!h || rd_kafka_header_get_last(h, name, &v, &sz) != RD_KAFKA_RESP_ERR_NO_ERROR || !v)
        return NULL;
    s = malloc(sz + 1);
    memcpy(s, v, sz);
    s[sz] = '\0';
    return s;
}

static void msgs_push(th_msgs_t *out, const rd_kafka_message_t *km) {
    rd_kafka_headers_t *h = NULL;
    th_msg_t *m;
    char *eid;
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 1024;
        out->v = realloc(out->v, out->cap * sizeof *out->v);
    }
    m = &out->v[out->n++];
    memset(m, 0, sizeof *m);
    rd_kafka_message_headers(km, &h);
    eid = hdr_dup(h, "event_id");
    snprintf(m->event_id, sizeof m->event_id, "%s", eid ? eid : "");
    free(eid);
    m->key = km->key ? strndup(km->key, km->key_len) : NULL;
    m->event_type = hdr_dup(h, "event_type");
    m->aggregate_type = hdr_dup(h, "aggregate_type");
    m->traceparent = hdr_dup(h, "traceparent");
    m->created_at = hdr_dup(h, "created_at");
    m->partition = km->partition;
    m->offset = km->offset;
    m->payload_len = km->len;
}

void th_consume(const char *bootstrap, const char *topic, size_t expect, int timeout_ms,
                th_msgs_t *out) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_topic_partition_list_t *parts;
    int64_t deadline = th_now_ms() + (int64_t)(timeout_ms * th_mult());
    int nparts = 0, at_end = 0;
    char *eof = NULL;

    memset(out, 0, sizeof *out);
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "obx-test-reader", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    rkt = rd_kafka_topic_new(rk, topic, NULL);
    while (th_now_ms() < deadline) {
        if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && md->topics[0].err == 0)
                nparts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
            if (nparts > 0)
                break;
        }
        usleep(100000);
    }
    rd_kafka_topic_destroy(rkt);
    ck_assert_msg(nparts > 0, "topic %s never appeared", topic);
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    eof = calloc((size_t)nparts, 1);
    /* Read until the expected count is reached and every partition is at its
     * end, so duplicates are counted too. */
    while (th_now_ms() < deadline && (out->n < expect || at_end < nparts)) {
        rd_kafka_message_t *km = rd_kafka_consumer_poll(rk, 200);
        if (!km)
            continue;
        if (km->partition >= 0 && km->partition < nparts) {
            if (km->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && !eof[km->partition]) {
                eof[km->partition] = 1;
                at_end++;
            } else if (!km->err) {
                msgs_push(out, km);
                if (eof[km->partition]) {
                    eof[km->partition] = 0;
                    at_end--;
                }
            }
        }
        rd_kafka_message_destroy(km);
    }
    free(eof);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

void th_msgs_free(th_msgs_t *m) {
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].event_type);
        free(m->v[i].aggregate_type);
        free(m->v[i].traceparent);
        free(m->v[i].created_at);
    }
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* Open-addressing map from string to index, for event ids and keys. */
typedef struct {
    const char **keys;
    long *vals;
    size_t cap;
} smap_t;

static size_t shash(const char *s) {
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void smap_init(smap_t *m, size_t n) {
    m->cap = 16;
    while (m->cap < n * 2)
        m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
}

static long *smap_slot(smap_t *m, const char *k, int insert) {
    for (size_t i = shash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) {
            if (!insert)
                return NULL;
            m->keys[i] = k;
            m->vals[i] = -1;
            return &m->vals[i];
        }
        if (strcmp(m->keys[i], k) == 0)
            return &m->vals[i];
    }
}

static void smap_free(smap_t *m) {
    free(m->keys);
    free(m->vals);
}

static int by_offset(const void *a, const void *b) {
    const th_msg_t *x = *(th_msg_t *const *)a, *y = *(th_msg_t *const *)b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

th_verify_t th_verify_counts(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type) {
    return th_verify_from(t, msgs, aggregate_type, "outbox");
}

th_verify_t th_verify_from(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type,
                           const char *relation) {
    PGconn *c = th_connect(t);
    th_verify_t v;
    const char *params[1] = {aggregate_type};
    char sql[2048];
    PGresult *r;
    snprintf(sql, sizeof sql,
             "SELECT id, event_id::text, aggregate_id, event_type, headers->>'traceparent',"
             " sent_at IS NOT NULL, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
             " FROM %s WHERE aggregate_type = $1 AND parked_at IS NULL ORDER BY id", relation);
    r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    int rows = PQntuples(r);
    long *seen = calloc((size_t)rows + 1, sizeof *seen);
    const th_msg_t **sorted = malloc((msgs->n + 1) * sizeof *sorted);
    smap_t ev, last;
    long dups = 0, lost = 0, unsent = 0, violations = 0, wrong = 0;

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    smap_init(&ev, (size_t)rows);
    smap_init(&last, (size_t)rows);
    for (int i = 0; i < rows; i++) {
        *smap_slot(&ev, PQgetvalue(r, i, 1), 1) = i;
        if (PQgetvalue(r, i, 5)[0] != 't')
            unsent++;
    }
    for (size_t i = 0; i < msgs->n; i++)
        sorted[i] = &msgs->v[i];
    qsort(sorted, msgs->n, sizeof *sorted, by_offset);
    for (size_t i = 0; i < msgs->n; i++) {
        const th_msg_t *m = sorted[i];
        long *slot = smap_slot(&ev, m->event_id, 0);
        long row, *lid;
        if (!slot)
            continue; /* another aggregate type or a parked row */
        row = *slot;
        if (seen[row]++ > 0) {
            dups++;
            continue;
        }
        if (!m->key || strcmp(m->key, PQgetvalue(r, (int)row, 2)) != 0 ||
            !m->event_type || strcmp(m->event_type, PQgetvalue(r, (int)row, 3)) != 0 ||
            !m->aggregate_type || strcmp(m->aggregate_type, aggregate_type) != 0 ||
            (!PQgetisnull(r, (int)row, 4) &&
             (!m->traceparent || strcmp(m->traceparent, PQgetvalue(r, (int)row, 4)) != 0)) ||
            !m->created_at || strcmp(m->created_at, PQgetvalue(r, (int)row, 6)) != 0) {
            if (wrong++ < 5)
                fprintf(stderr, "wrong key/headers for event %s\n", m->event_id);
        }
        lid = smap_slot(&last, PQgetvalue(r, (int)row, 2), 1);
        if (*lid > row) {
            if (violations++ < 5)
                fprintf(stderr, "order violation: key %s event %s (row %ld after row %ld)\n",
                        m->key, m->event_id, row, *lid);
        }
        *lid = row;
    }
    for (int i = 0; i < rows; i++)
        if (!seen[i] && lost++ < 5)
            fprintf(stderr, "lost: event %s id %s\n", PQgetvalue(r, i, 1), PQgetvalue(r, i, 0));
    fprintf(stderr, "verify %s: rows=%d messages=%zu lost=%ld duplicates=%ld unsent=%ld "
                    "order_violations=%ld wrong_headers=%ld\n",
            aggregate_type, rows, msgs->n, lost, dups, unsent, violations, wrong);
    smap_free(&ev);
    smap_free(&last);
    free(seen);
    free(sorted);
    PQclear(r);
    PQfinish(c);
    v = (th_verify_t){rows, (long)msgs->n, lost, dups, unsent, violations, wrong};
    return v;
}

long th_verify(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type) {
    th_verify_t v = th_verify_counts(t, msgs, aggregate_type);
    ck_assert_msg(v.rows > 0, "no rows to verify");
    ck_assert_msg(v.lost == 0, "%ld events lost", v.lost);
    ck_assert_msg(v.unsent == 0, "%ld rows not marked sent", v.unsent);
    ck_assert_msg(v.order_violations == 0, "%ld per-key order violations", v.order_violations);
    ck_assert_msg(v.wrong_headers == 0, "%ld messages with a wrong key or headers", v.wrong_headers);
    return v.duplicates;
}

long th_check_published(const th_ctx_t *t, const char *bootstrap, const char *aggregate_type, long rows) {
    th_msgs_t msgs;
    char topic[128];
    long dups;
    snprintf(topic, sizeof topic, "%s.%s", t->topic_prefix, aggregate_type);
    th_drain(t, 60000);
    th_consume(bootstrap, topic, (size_t)rows, 60000, &msgs);
    dups = th_verify(t, &msgs, aggregate_type);
    th_msgs_free(&msgs);
    return dups;
}

int th_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

int th_main(const char *suite, int timeout_s, const TTest *const *tests, size_t n) {
    Suite *s = suite_create(suite);
    TCase *tc = tcase_create(suite);

    tcase_set_timeout(tc, timeout_s * th_mult());
    tcase_add_checked_fixture(tc, NULL, th_kill_children);
    for (size_t i = 0; i < n; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(s, tc);
    return th_run_suite(s);
}
