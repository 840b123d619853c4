/* Test harness for integration suites: a fresh database per test on the
 * PostgreSQL started by tests/run.sh, the relay as a real child process,
 * an in-process librdkafka mock cluster, a topic reader, concurrent writers,
 * and condition waits with deadlines (scaled by OBX_TEST_TIMEOUT_MULT). */
#ifndef OBX_HARNESS_H
#define OBX_HARNESS_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

typedef struct {
    char db[64];          /* database created for this test */
    char dir[256];        /* scratch dir: configs, relay logs */
    char conninfo[512];
    char topic_prefix[64];
} th_ctx_t;

/* A message read back from Kafka; strings are owned by the array. */
typedef struct {
    char event_id[40];
    char *key;
    char *event_type;
    char *aggregate_type;
    char *traceparent;    /* the row's own "traceparent" header, or NULL */
    char *created_at;     /* the "created_at" header, or NULL */
    int32_t partition;
    int64_t offset;
    size_t payload_len;
} th_msg_t;

typedef struct {
    th_msg_t *v;
    size_t n, cap;
} th_msgs_t;

double th_mult(void);
int64_t th_now_ms(void);
/* Creates a database named after the test and applies the schema via
 * `outbox-relay migrate`. Aborts the test on failure. */
void th_setup(th_ctx_t *t, const char *name);
/* Kills the children th_spawn started that are still running. th_main's
 * teardown fixture and an exit handler call it too; PR_SET_PDEATHSIG
 * covers a test killed on timeout. */
void th_teardown(th_ctx_t *t);
void th_kill_children(void);
PGconn *th_connect(const th_ctx_t *t);
void th_exec(PGconn *c, const char *sql);
long long th_int(PGconn *c, const char *sql);

/* Writes a relay config with the given bootstrap and extra text appended
 * inside the relay group (e.g. "poll_interval_ms = 50;"); kafka_extra goes
 * inside the kafka group. Returns the path (static storage in t). */
const char *th_config(th_ctx_t *t, const char *file, const char *bootstrap,
                      const char *relay_extra, const char *kafka_extra);
/* th_config with the relay's log level (debug shows librdkafka's debug lines). */
const char *th_config_level(th_ctx_t *t, const char *file, const char *bootstrap,
                            const char *relay_extra, const char *kafka_extra, const char *level);
/* th_config with one more top-level group, "group: { body };" (health,
 * retention). Returns th_config's path. */
const char *th_config_group(th_ctx_t *t, const char *file, const char *bootstrap, const char *relay_extra,
                            const char *group, const char *body);
/* Starts outbox-relay -c conf with stderr appended to DIR/relay.log. */
pid_t th_relay_start(const th_ctx_t *t, const char *conf);
/* Starts build-dir program bin with -c conf, stderr appended to DIR/log,
 * through OBX_TEST_RELAY_WRAPPER when set (valgrind). */
pid_t th_spawn(const th_ctx_t *t, const char *bin, const char *conf, const char *log);
/* Starts argv[0] (a path), stderr appended to DIR/log; the harness records
 * it (see th_teardown). Fails the test when fork fails. */
pid_t th_spawn_argv(const th_ctx_t *t, char *const argv[], const char *log);
/* Counts lines of DIR/log containing needle. */
int th_file_count(const th_ctx_t *t, const char *log, const char *needle);
/* The integer value of key=V in the last line of DIR/log containing
 * needle, or -1 when there is no such line or key. */
long long th_file_field(const th_ctx_t *t, const char *log, const char *needle, const char *key);
/* Applies a SQL file of the source tree (e.g. "schema/003_shop.sql"). */
void th_apply_sql(PGconn *c, const char *rel);
/* Sends sig (0: none) and waits up to timeout_ms (scaled); returns the exit
 * status, or -1 after a SIGKILL on timeout (then prints the child's log end). */
int th_relay_stop(pid_t pid, int sig, int timeout_ms);
/* th_relay_stop, failing the test unless the exit status is expect; the
 * message has the status and the end of the child's log. */
void th_stop(pid_t pid, int sig, int timeout_ms, int expect);
/* Counts lines of DIR/relay.log containing needle. */
int th_log_count(const th_ctx_t *t, const char *needle);
/* Counts lines of DIR/log having every key=value of fields (space-separated,
 * e.g. "msg=stats inflight=0") as a whole field, in any order. */
int th_file_count_fields(const th_ctx_t *t, const char *log, const char *fields);
/* Runs a shell command (server control scripts); returns its exit status. */
int th_run(const char *cmd);
/* tests/pg.sh on the suite's PostgreSQL: "start", "stop", "restart fast",
 * "restart immediate"; fails the test when it fails. */
void th_pg_ctl(const char *what);
/* Path of a binary in the build dir / a file in the source tree. */
const char *th_bin(const char *name);
const char *th_src(const char *rel);

/* Polls cond(arg) every 20 ms until it returns non-zero or timeout_ms (scaled) passes. */
int th_wait(int (*cond)(void *), void *arg, int timeout_ms);
/* Returns when count(*) of unsent, unparked rows is 0 (1) or on timeout (0,
 * after printing the rows left and the relay log's end). */
int th_wait_drained(const th_ctx_t *t, int timeout_ms);
/* th_wait_drained, failing the test with that explanation on timeout. */
void th_drain(const th_ctx_t *t, int timeout_ms);
/* 1 while the relay of public.outbox says it is waiting (writers NOTIFY), else 0. */
#define TH_RELAY_WAITING "SELECT COALESCE(pg_sequence_last_value('outbox_relay_waiting'), 0)"
/* Polls sql (one count) until it reaches n; fails the test on timeout,
 * saying the last count and the relay log's end. */
void th_wait_count(const th_ctx_t *t, const char *sql, long n, int timeout_ms);
/* Waits until a line of the relay log contains needle; fails the test on
 * timeout, showing the log's end. */
void th_wait_log(const th_ctx_t *t, const char *needle, int timeout_ms);
/* th_wait_log for a line having the fields of th_file_count_fields. */
void th_wait_log_fields(const th_ctx_t *t, const char *fields, int timeout_ms);
/* th_wait_log for the log logname in the test's folder. */
void th_wait_file_log(const th_ctx_t *t, const char *logname, const char *needle, int timeout_ms);
/* Fails the test unless text contains (lacks) needle, showing the text. */
#define th_assert_has(text, needle) \
    ck_assert_msg(strstr((text), (needle)) != NULL, "no \"%s\" in:\n%s", (needle), (text))
#define th_assert_lacks(text, needle) \
    ck_assert_msg(strstr((text), (needle)) == NULL, "\"%s\" in:\n%s", (needle), (text))

/* Inserts n rows with writers threads (own connection each), over naggs
 * aggregates, each transaction locking its aggregate first (the normal
 * serialized writer). Payload: payload_size bytes. Returns rows committed. */
long th_write(const th_ctx_t *t, int writers, long n, int naggs, int payload_size,
              const char *aggregate_type);

/* Mock cluster owned by an rd_kafka_t in this process. */
typedef struct {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
} th_mock_t;
void th_mock_start(th_mock_t *m, int brokers);
void th_mock_stop(th_mock_t *m);

/* Reads topic from the beginning until at least expect messages or timeout. */
void th_consume(const char *bootstrap, const char *topic, size_t expect, int timeout_ms,
                th_msgs_t *out);
void th_msgs_free(th_msgs_t *m);

typedef struct {
    long rows, messages, lost, duplicates, unsent, order_violations, wrong_headers;
} th_verify_t;

/* Compares the outbox rows of aggregate_type with the messages read back:
 * lost events, duplicates, unsent rows, per-key order of first occurrences,
 * keys and headers. Counts only; th_verify asserts. */
th_verify_t th_verify_counts(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type);
/* th_verify_counts over relation (a table, or a parenthesised SELECT with an
 * alias) with outbox's columns: id, event_id, aggregate_type, aggregate_id,
 * event_type, headers, created_at, sent_at, parked_at. */
th_verify_t th_verify_from(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type,
                           const char *relation);
/* th_verify_counts, failing the test on any lost, unsent, misordered or
 * mislabelled event. Returns the duplicates seen. */
long th_verify(const th_ctx_t *t, const th_msgs_t *msgs, const char *aggregate_type);

/* Waits until no row is unsent, reads TOPIC_PREFIX.aggregate_type back
 * (at least rows messages) and th_verify-s it. Returns the duplicates. */
long th_check_published(const th_ctx_t *t, const char *bootstrap, const char *aggregate_type, long rows);

/* Runs one suite of the given tests with a per-test timeout (scaled) and
 * th_kill_children as teardown; returns the process exit code. */
#include <check.h>
int th_main(const char *suite, int timeout_s, const TTest *const *tests, size_t n);
#define TH_MAIN(suite, timeout_s, ...)                                                  \
    int main(void) {                                                                     \
        const TTest *const tests_[] = {__VA_ARGS__};                                     \
        return th_main((suite), (timeout_s), tests_, sizeof tests_ / sizeof tests_[0]); \
    }
/* Runs a suite of several test cases (built by the caller); returns the
 * process exit code. TH_SUITE_MAIN(make) is a main running make(). */
int th_run_suite(Suite *s);
#define TH_SUITE_MAIN(make) \
    int main(void) { return th_run_suite(make()); }

#endif
