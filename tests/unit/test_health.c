/* The health record and its judge: what each probe mode answers. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health.h"
#include "harness.h"

#define NOW 1000000
#define MAX 10000

static obx_health_t rec(const char *role, int64_t tick, int64_t pg, int64_t kafka) {
    obx_health_t h = {.pid = 1, .tick_ms = tick, .pg_ms = pg, .kafka_ms = kafka};
    snprintf(h.role, sizeof h.role, "%s", role);
    snprintf(h.state, sizeof h.state, "running");
    return h;
}

static void judged(obx_health_t h, obx_health_mode_t mode, int want, const char *needle) {
    char why[256];
    int rc = obx_health_judge(&h, NOW, MAX, mode, why, sizeof why);
    ck_assert_msg(rc == want && strstr(why, needle), "mode %d: want %d with \"%s\", got %d: %s", (int)mode, want,
                  needle, rc, why);
}

START_TEST(test_healthy_leader) {
    judged(rec("leader", NOW - 500, NOW - 200, NOW - 900), OBX_HEALTH_FULL, 0,
           "role=leader state=running loop=0.5s postgres=0.2s kafka=0.9s");
}
END_TEST

START_TEST(test_stuck_loop_fails_every_mode) {
    obx_health_t h = rec("leader", NOW - MAX - 1, NOW, NOW);
    judged(h, OBX_HEALTH_LIVE, 1, "the loop last turned 10.0s ago (limit 10s): stuck");
    judged(h, OBX_HEALTH_READY, 1, "stuck");
    judged(h, OBX_HEALTH_FULL, 1, "stuck");
}
END_TEST

START_TEST(test_postgres_silent_fails_ready_not_live) {
    obx_health_t h = rec("leader", NOW, NOW - MAX - 1000, NOW);
    judged(h, OBX_HEALTH_LIVE, 0, "role=leader");
    judged(h, OBX_HEALTH_READY, 1, "PostgreSQL last answered 11.0s ago (limit 10s)");
    judged(rec("disconnected", NOW, NOW - 3000, 0), OBX_HEALTH_READY, 1,
           "not connected to PostgreSQL (last answer 3.0s ago)");
    judged(rec("disconnected", NOW, 0, 0), OBX_HEALTH_FULL, 1, "not connected to PostgreSQL (last answer never)");
}
END_TEST

START_TEST(test_kafka_counts_for_the_leader_only) {
    judged(rec("leader", NOW, NOW, NOW - MAX - 2000), OBX_HEALTH_FULL, 1, "no Kafka broker up for 12.0s (limit 10s)");
    judged(rec("leader", NOW, NOW, 0), OBX_HEALTH_FULL, 1, "no Kafka broker up since start");
    judged(rec("leader", NOW, NOW, 0), OBX_HEALTH_READY, 0, "kafka=never");
    judged(rec("standby", NOW, NOW, 0), OBX_HEALTH_FULL, 0, "role=standby");
}
END_TEST

START_TEST(test_record_round_trip) {
    char path[] = "/tmp/obx-unit-health-XXXXXX", err[256];
    obx_health_t h = rec("standby", 123, 456, 789), back;
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(obx_health_write(path, &h, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(obx_health_read(path, &back, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(back.tick_ms, 123);
    ck_assert_int_eq(back.pg_ms, 456);
    ck_assert_int_eq(back.kafka_ms, 789);
    ck_assert_str_eq(back.role, "standby");
    ck_assert_str_eq(back.state, "running");
    unlink(path);
    ck_assert_int_eq(obx_health_read(path, &back, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "is the relay running with this health.file?"), "%s", err);
    ck_assert_int_eq(obx_health_write("/nonexistent-dir/health", &h, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/nonexistent-dir/health.tmp: No such file or directory"), "%s", err);
}
END_TEST

TH_MAIN("health", 60, test_healthy_leader, test_stuck_loop_fails_every_mode, test_postgres_silent_fails_ready_not_live, test_kafka_counts_for_the_leader_only, test_record_round_trip)
