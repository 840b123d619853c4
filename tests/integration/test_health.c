/* Health: `outbox-relay health` follows PostgreSQL and the brokers, a loop
 * that stops turning ends the process so that the standby takes over, a
 * query PostgreSQL never answers gives the leader lock up, and systemd hears
 * READY, STATUS, WATCHDOG and STOPPING. Stops PostgreSQL: runs alone. */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    char conf[512];
    const char *mode;  /* "", "--live", "--ready" */
    int want_rc;
    const char *needle;
    int rc;
    char out[1024];
} probe_t;

/* Runs `outbox-relay -c conf health mode`; keeps its exit status and output. */
static int probe_run(probe_t *p) {
    char cmd[1024];
    FILE *f;
    size_t n;
    int st;

    snprintf(cmd, sizeof cmd, "'%s' -c '%s' health %s 2>&1", th_bin("outbox-relay"), p->conf, p->mode);
    f = popen(cmd, "r");
    ck_assert_msg(f != NULL, "popen %s", cmd);
    n = fread(p->out, 1, sizeof p->out - 1, f);
    p->out[n] = '\0';
    st = pclose(f);
    p->rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return p->rc;
}

static int probe_says(void *arg) {
    probe_t *p = arg;
    probe_run(p);
    return p->rc == p->want_rc && strstr(p->out, p->needle) != NULL;
}

/* Waits until the probe exits want_rc with needle in its output. */
static void probe_wait(const char *conf, const char *mode, int want_rc, const char *needle, int timeout_ms) {
    probe_t p = {.mode = mode, .want_rc = want_rc, .needle = needle};
    snprintf(p.conf, sizeof p.conf, "%s", conf);
    ck_assert_msg(th_wait(probe_says, &p, timeout_ms),
                  "health %s never exited %d with \"%s\"; last: exit %d, %s", mode, want_rc, needle, p.rc,
                  p.out);
}

/* The probe's answer now, which must be want_rc. */
static void probe_is(const char *conf, const char *mode, int want_rc, const char *needle) {
    probe_t p = {.mode = mode, .want_rc = want_rc, .needle = needle};
    snprintf(p.conf, sizeof p.conf, "%s", conf);
    ck_assert_msg(probe_says(&p), "health %s: want exit %d with \"%s\", got exit %d: %s", mode, want_rc,
                  needle, p.rc, p.out);
}

static void mock_topic(th_mock_t *m, const th_ctx_t *t) {
    char topic[128];
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, 2, 1), 0);
}

START_TEST(probe_follows_postgres_and_the_brokers) {
    th_ctx_t t;
    th_mock_t m;
    char health[600];
    const char *conf;
    pid_t relay;

    th_mock_start(&m, 1);
    th_setup(&t, "healthprobe");
    mock_topic(&m, &t);
    snprintf(health, sizeof health, "file = \"%s/health\"; max_age_s = 3;", t.dir);
    conf = th_config_group(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "health", health);
    probe_is(conf, "", 1, "is the relay running");
    relay = th_relay_start(&t, conf);
    probe_wait(conf, "", 0, "health: ok: role=leader", 20000);

    ck_assert_int_eq(rd_kafka_mock_broker_set_down(m.mc, 1), 0);
    probe_wait(conf, "", 1, "no Kafka broker up for", 30000);
    probe_is(conf, "--ready", 0, "role=leader");
    probe_is(conf, "--live", 0, "role=leader");
    ck_assert_int_eq(th_write(&t, 2, 200, 20, 100, "order"), 200);
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(m.mc, 1), 0);
    probe_wait(conf, "", 0, "health: ok: role=leader", 30000);

    th_pg_ctl("stop");
    probe_wait(conf, "--ready", 1, "PostgreSQL", 30000);
    probe_is(conf, "", 1, "PostgreSQL");
    probe_is(conf, "--live", 0, "role=disconnected");
    th_pg_ctl("start");
    probe_wait(conf, "", 0, "health: ok: role=leader", 30000);

    ck_assert_int_eq(th_write(&t, 2, 200, 20, 100, "order"), 200);
    th_check_published(&t, m.bootstrap, "order", 400);
    th_stop(relay, SIGTERM, 20000, 0);
    probe_is(conf, "--live", 1, "is not running");
    th_mock_stop(&m);
}
END_TEST

/* The backend of the relay's claiming session: the one that holds the
 * leader lock (leader) or not (standby). */
static long claim_backend(const th_ctx_t *t, int leader) {
    char sql[512];
    PGconn *c = th_connect(t);
    long pid;
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(max(pid), 0) FROM pg_stat_activity WHERE datname = current_database()"
             " AND application_name = 'outbox-relay' AND pid %s IN"
             " (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
             leader ? "" : "NOT");
    pid = (long)th_int(c, sql);
    PQfinish(c);
    return pid;
}

typedef struct {
    const th_ctx_t *t;
    int leader;
    long pid;
} backend_t;

static int backend_found(void *arg) {
    backend_t *b = arg;
    b->pid = claim_backend(b->t, b->leader);
    return b->pid > 0;
}

static long wait_backend(const th_ctx_t *t, int leader) {
    backend_t b = {t, leader, 0};
    ck_assert_msg(th_wait(backend_found, &b, 20000), "no %s backend", leader ? "leader's" : "standby's");
    return b.pid;
}

/* A frozen backend (SIGSTOP) answers nothing. The standby's lock attempt is
 * a blocking call, so its loop stops turning: the watchdog ends it. The
 * leader's queries are asynchronous: it gives its sessions up after
 * health.stuck_timeout_s, and leads again once the frozen backend is gone. */
START_TEST(stuck_loop_exits_and_unanswered_queries_reconnect) {
    th_ctx_t t;
    th_mock_t m;
    char health[600];
    char conf_a[512], conf_b[512];
    pid_t b;
    long pid;
    pid_t a;

    th_mock_start(&m, 1);
    th_setup(&t, "healthstuck");
    mock_topic(&m, &t);
    snprintf(health, sizeof health, "file = \"%s/a.health\"; max_age_s = 1; stuck_timeout_s = 3;", t.dir);
    snprintf(conf_a, sizeof conf_a, "%s", th_config_group(&t, "a.conf", m.bootstrap, "poll_interval_ms = 100;", "health", health));
    a = th_spawn(&t, "outbox-relay", conf_a, "a.log");
    probe_wait(conf_a, "", 0, "role=leader", 20000);
    snprintf(health, sizeof health, "file = \"%s/b.health\"; max_age_s = 1; stuck_timeout_s = 3;", t.dir);
    snprintf(conf_b, sizeof conf_b, "%s", th_config_group(&t, "b.conf", m.bootstrap, "poll_interval_ms = 100;", "health", health));
    b = th_spawn(&t, "outbox-relay", conf_b, "b.log");
    probe_wait(conf_b, "", 0, "role=standby", 20000);

    pid = wait_backend(&t, 0);
    ck_assert_int_eq(kill((pid_t)pid, SIGSTOP), 0);
    probe_wait(conf_b, "--live", 1, "stuck", 10000);
    th_stop(b, 0, 20000, 1); /* the stuck standby exits by itself, status 1 */
    ck_assert_int_eq(kill((pid_t)pid, SIGCONT), 0);
    th_wait_file_log(&t, "b.log", "event=loop_stuck", 0);
    probe_is(conf_a, "", 0, "role=leader");

    pid = wait_backend(&t, 1);
    ck_assert_int_eq(kill((pid_t)pid, SIGSTOP), 0);
    ck_assert_int_eq(th_write(&t, 2, 200, 20, 100, "order"), 200);
    th_wait_file_log(&t, "a.log", "event=postgres_unresponsive", 20000);
    probe_wait(conf_a, "", 0, "role=standby", 20000);
    ck_assert_int_eq(kill((pid_t)pid, SIGCONT), 0);
    probe_wait(conf_a, "", 0, "role=leader", 30000);
    th_check_published(&t, m.bootstrap, "order", 200);
    th_stop(a, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* Reads datagrams from fd until one equals want (or, for a prefix ending
 * in '*', starts with it); counts the WATCHDOG=1 pings seen meanwhile. */
static int notify_wait(int fd, const char *want, int *pings, int timeout_ms) {
    int64_t deadline = th_now_ms() + (int64_t)(timeout_ms * th_mult());
    size_t wl = strlen(want);
    int prefix = wl > 0 && want[wl - 1] == '*';
    char buf[512];

    while (th_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        if (poll(&p, 1, 100) != 1)
            continue;
        n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (strcmp(line, "WATCHDOG=1") == 0)
                (*pings)++;
            if (prefix ? strncmp(line, want, wl - 1) == 0 : strcmp(line, want) == 0)
                return 1;
        }
    }
    return 0;
}

START_TEST(systemd_hears_ready_status_watchdog_and_stopping) {
    th_ctx_t t;
    th_mock_t m;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, pings = 0;
    pid_t relay;
    const char *conf;

    th_mock_start(&m, 1);
    th_setup(&t, "healthsd");
    mock_topic(&m, &t);
    conf = th_config(&t, "relay.conf", m.bootstrap, "", "");
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    /* A socket path must fit sun_path's 108 bytes: the scratch dir may not. */
    snprintf(sa.sun_path, sizeof sa.sun_path, "/tmp/obx-notify-%d", (int)getpid());
    unlink(sa.sun_path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    /* The relay inherits them; WatchdogSec=1 asks for a ping every 0.5 s. */
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    setenv("WATCHDOG_USEC", "1000000", 1);
    relay = th_relay_start(&t, conf);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    ck_assert_msg(notify_wait(fd, "READY=1", &pings, 20000), "no READY=1");
    ck_assert_msg(notify_wait(fd, "STATUS=leader*", &pings, 20000), "no STATUS=leader");
    pings = 0;
    ck_assert_msg(!notify_wait(fd, "never", &pings, 3000), "unexpected datagram");
    fprintf(stderr, "systemd: %d watchdog pings in 3 s (WatchdogSec=1)\n", pings);
    ck_assert_int_ge(pings, 3);
    kill(relay, SIGTERM);
    ck_assert_msg(notify_wait(fd, "STOPPING=1", &pings, 20000), "no STOPPING=1");
    th_stop(relay, 0, 20000, 0); /* signal 0: only wait */
    close(fd);
    unlink(sa.sun_path);
    th_mock_stop(&m);
}
END_TEST

/* Runs the relay's health command; returns its exit status, output in out. */
static int health_cmd(const char *conf, const char *args, char *out, size_t outsize) {
    probe_t p = {.mode = args};
    snprintf(p.conf, sizeof p.conf, "%s", conf);
    probe_run(&p);
    snprintf(out, outsize, "%s", p.out);
    return p.rc;
}

START_TEST(health_refuses_bad_use) {
    th_ctx_t t;
    char out[1024], health[600];
    const char *conf;

    th_setup(&t, "healthbad");
    conf = th_config(&t, "none.conf", "127.0.0.1:1", "", "");
    ck_assert_int_eq(health_cmd(conf, "", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "none.conf: health.file is not set"), "%s", out);
    snprintf(health, sizeof health, "file = \"%s/health\";", t.dir);
    conf = th_config_group(&t, "both.conf", "127.0.0.1:1", "", "health", health);
    ck_assert_int_eq(health_cmd(conf, "--live --ready", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "Usage:"), "%s", out);
    conf = th_config_group(&t, "age.conf", "127.0.0.1:1", "", "health", "max_age_s = 0;");
    ck_assert_int_eq(health_cmd(conf, "", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "age.conf:5:") && strstr(out, "max_age_s"), "%s", out);
    conf = th_config_group(&t, "stuck.conf", "127.0.0.1:1", "", "health", "stuck_timeout_s = \"soon\";");
    ck_assert_int_eq(health_cmd(conf, "", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "stuck.conf:5:") && strstr(out, "stuck_timeout_s"), "%s", out);
    snprintf(health, sizeof health, "echo garbage > '%s/health'", t.dir);
    ck_assert_int_eq(th_run(health), 0);
    snprintf(health, sizeof health, "file = \"%s/health\";", t.dir);
    conf = th_config_group(&t, "garbage.conf", "127.0.0.1:1", "", "health", health);
    ck_assert_int_eq(health_cmd(conf, "", out, sizeof out), 1);
    ck_assert_msg(strstr(out, "not a health record"), "%s", out);
}
END_TEST

TH_MAIN("health", 300, probe_follows_postgres_and_the_brokers, stuck_loop_exits_and_unanswered_queries_reconnect,
        systemd_hears_ready_status_watchdog_and_stopping, health_refuses_bad_use)
