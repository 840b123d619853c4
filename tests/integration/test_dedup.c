/* The dedup module's calls against a real PostgreSQL: duplicates, replays,
 * rejections, poison, compensations in both orders, offsets, retention. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "obx_dedup.h"

#define EV1 "11111111-1111-4111-8111-111111111111"
#define EV2 "22222222-2222-4222-8222-222222222222"
#define EV3 "33333333-3333-4333-8333-333333333333"

/* The effect under test: adds the payload's number to a counter row. */
static obx_effect_rc_t add_effect(PGconn *c, const obx_event_t *ev, void *arg, char *reason, size_t rs) {
    const char *vals[1] = {ev->payload};
    PGresult *r;
    (void)arg;
    if (strcmp(ev->payload, "reject") == 0) {
        snprintf(reason, rs, "business says no");
        return OBX_EFFECT_REJECT;
    }
    r = PQexecParams(c, "UPDATE counter SET n = n + $1::int", 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(reason, rs, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return OBX_EFFECT_POISON;
    }
    PQclear(r);
    return OBX_EFFECT_OK;
}

static obx_effect_rc_t sub_effect(PGconn *c, const obx_event_t *ev, void *arg, char *reason, size_t rs) {
    (void)ev;
    (void)arg;
    (void)reason;
    (void)rs;
    PQclear(PQexec(c, "UPDATE counter SET n = n - 10"));
    return OBX_EFFECT_OK;
}

static obx_event_t event(const char *id, const char *payload, int64_t offset) {
    obx_event_t ev = {.event_id = id, .event_type = "Added", .key = "k", .payload = payload,
                      .payload_len = strlen(payload), .topic = "t", .partition = 0, .offset = offset};
    return ev;
}

static PGconn *setup(th_ctx_t *t, const char *name) {
    PGconn *c;
    th_setup(t, name);
    c = th_connect(t);
    th_exec(c, "CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0)");
    return c;
}

START_TEST(duplicate_twice_ten_times_and_replay) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_dup");
    obx_apply_status_t st;
    char err[256];
    obx_event_t a = event(EV1, "5", 0), b = event(EV2, "7", 1);

    ck_assert_int_eq(obx_dedup_apply(c, "svc", &a, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_APPLIED);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(obx_dedup_apply(c, "svc", &a, add_effect, NULL, &st, err, sizeof err), 0);
        ck_assert_int_eq(st, OBX_APPLY_DUPLICATE);
    }
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &b, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_APPLIED);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 12);
    /* Replay from offset 0: nothing changes. */
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &a, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &b, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 12);
    /* Another consumer has its own inbox. */
    ck_assert_int_eq(obx_dedup_apply(c, "other", &a, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_APPLIED);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 17);
    ck_assert_int_eq(th_int(c, "SELECT next_offset FROM consumer_offsets WHERE consumer = 'svc'"), 2);
    PQfinish(c);
}
END_TEST

START_TEST(reject_poison_and_bad_ids) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_poison");
    obx_apply_status_t st;
    char err[256];
    obx_event_t rej = event(EV1, "reject", 0), bad = event(EV2, "not a number", 1);
    obx_event_t noid = event(NULL, "1", 2), badid = event("1234", "1", 3);

    ck_assert_int_eq(obx_dedup_apply(c, "svc", &rej, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_REJECTED);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &rej, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_DUPLICATE); /* a rejection is final */
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &bad, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_PARKED);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &bad, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_DUPLICATE); /* parked once, skipped on replay */
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &noid, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_PARKED);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &badid, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_PARKED);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters"), 3);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters WHERE event_id = '" EV2 "'"
                               " AND reason LIKE '%invalid input syntax for type integer%'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters WHERE reason = 'missing event_id header'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM dead_letters WHERE reason = 'invalid event_id header'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'rejected'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'parked'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT next_offset FROM consumer_offsets"), 4); /* the partition moved on */
    PQfinish(c);
}
END_TEST

static void compensate(PGconn *c, const char *comp_id, const char *orig, obx_comp_status_t expect) {
    obx_comp_status_t st;
    char err[256];
    obx_event_t comp = event(comp_id, "", 9);
    th_exec(c, "BEGIN");
    ck_assert_int_eq(obx_dedup_compensate_tx(c, "svc", &comp, orig, sub_effect, NULL, &st, err, sizeof err), 0);
    th_exec(c, "COMMIT");
    ck_assert_msg(st == expect, "compensation: got %s, expected %s", obx_dedup_comp_status_name(st),
                  obx_dedup_comp_status_name(expect));
}

START_TEST(compensation_before_and_after_original) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_comp");
    obx_apply_status_t st;
    char err[256];
    obx_event_t orig = event(EV1, "10", 0), rej = event(EV3, "reject", 1);

    /* Before its original: empty rollback, and the late original is skipped (no hanging). */
    compensate(c, "aaaaaaaa-0000-4000-8000-000000000001", EV1, OBX_COMP_EMPTY);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &orig, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(st, OBX_APPLY_DUPLICATE);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 0);
    /* After its original: undone once, even when the compensation is redelivered. */
    orig = event(EV2, "10", 2);
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &orig, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 10);
    compensate(c, "aaaaaaaa-0000-4000-8000-000000000002", EV2, OBX_COMP_UNDONE);
    compensate(c, "aaaaaaaa-0000-4000-8000-000000000002", EV2, OBX_COMP_DUPLICATE);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 0);
    /* A second, different compensation of the same original has nothing left to undo. */
    compensate(c, "aaaaaaaa-0000-4000-8000-000000000003", EV2, OBX_COMP_NOTHING);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 0);
    /* Nothing to undo when the original was rejected. */
    ck_assert_int_eq(obx_dedup_apply(c, "svc", &rej, add_effect, NULL, &st, err, sizeof err), 0);
    compensate(c, "aaaaaaaa-0000-4000-8000-000000000004", EV3, OBX_COMP_NOTHING);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'compensated'"), 1);
    PQfinish(c);
}
END_TEST

START_TEST(offsets_never_move_back_and_cleanup) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_offsets");
    char err[256];
    int64_t next;

    ck_assert_int_eq(obx_dedup_load_offset(c, "svc", "t", 3, &next, err, sizeof err), 0);
    ck_assert_int_eq(next, -1);
    th_exec(c, "BEGIN");
    ck_assert_int_eq(obx_dedup_store_offset_tx(c, "svc", "t", 3, 100, err, sizeof err), 0);
    ck_assert_int_eq(obx_dedup_store_offset_tx(c, "svc", "t", 3, 40, err, sizeof err), 0); /* a zombie */
    th_exec(c, "COMMIT");
    ck_assert_int_eq(obx_dedup_load_offset(c, "svc", "t", 3, &next, err, sizeof err), 0);
    ck_assert_int_eq(next, 100);
    th_exec(c, "INSERT INTO processed_events (consumer, event_id, status, processed_at)"
               " SELECT 'svc', gen_random_uuid(), 'applied', now() - interval '10 days' FROM generate_series(1, 2500);"
               " INSERT INTO processed_events (consumer, event_id, status)"
               " SELECT 'svc', gen_random_uuid(), 'applied' FROM generate_series(1, 30);"
               " INSERT INTO processed_events (consumer, event_id, status, processed_at)"
               " SELECT 'other', gen_random_uuid(), 'applied', now() - interval '10 days' FROM generate_series(1, 5)");
    ck_assert_int_eq(obx_dedup_cleanup(c, "svc", 7 * 86400, 1000, err, sizeof err), 2500);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'svc'"), 30);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE consumer = 'other'"), 5);
    PQfinish(c);
}
END_TEST

TH_MAIN("dedup", 60, duplicate_twice_ten_times_and_replay, reject_poison_and_bad_ids,
        compensation_before_and_after_original, offsets_never_move_back_and_cleanup)
