/* The dedup module's calls against a real PostgreSQL: duplicates, replays,
 * rejections, poison, compensations in both orders, offsets, retention, the
 * runner's batch path (one inbox statement per batch) and statements
 * prepared again on a reset connection. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../relay/dedup/dedup_internal.h"
#include "harness.h"
#include "obx_dedup.h"

#define EV1 "11111111-1111-4111-8111-111111111111"
#define EV2 "22222222-2222-4222-8222-222222222222"
#define EV3 "33333333-3333-4333-8333-333333333333"
#define EV4 "44444444-4444-4444-8444-444444444444"
#define EVA "abcdefab-cdef-4abc-8def-abcdefabcdef"
#define EVA_UPPER "ABCDEFAB-CDEF-4ABC-8DEF-ABCDEFABCDEF"

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

/* One batch in its own transaction, committed when commit is set. */
static int batch(PGconn *c, const obx_event_t *evs, int n, obx_batch_effect_fn bfn, obx_apply_status_t *st,
                 int commit) {
    char err[256];
    int rc;
    th_exec(c, "BEGIN");
    rc = obx_dedup_apply_batch_tx(c, "svc", evs, n, add_effect, bfn, NULL, st, err, sizeof err);
    th_exec(c, rc == 0 && commit ? "COMMIT" : "ROLLBACK");
    return rc;
}

static void assert_statuses(const obx_apply_status_t *got, const obx_apply_status_t *want, int n) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "event %d: got %s, expected %s", i, obx_dedup_apply_status_name(got[i]),
                      obx_dedup_apply_status_name(want[i]));
}

START_TEST(batch_duplicates_within_across_and_redelivered) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_batch");
    obx_apply_status_t st[4];
    /* The same id twice in one batch, once in upper case: the first counts. */
    obx_event_t first[4] = {event(EVA, "5", 0), event(EV2, "7", 1), event(EVA_UPPER, "100", 2),
                            event(EV3, "reject", 3)};
    obx_event_t second[3] = {event(EV2, "7", 4), event(EV4, "20", 5), event(EVA, "5", 6)};
    static const obx_apply_status_t want1[4] = {OBX_APPLY_APPLIED, OBX_APPLY_APPLIED, OBX_APPLY_DUPLICATE,
                                                OBX_APPLY_REJECTED};
    static const obx_apply_status_t want2[3] = {OBX_APPLY_DUPLICATE, OBX_APPLY_APPLIED, OBX_APPLY_DUPLICATE};
    static const obx_apply_status_t dup3[3] = {OBX_APPLY_DUPLICATE, OBX_APPLY_DUPLICATE, OBX_APPLY_DUPLICATE};

    first[1].event_type = NULL;
    ck_assert_int_eq(batch(c, first, 4, NULL, st, 1), 0);
    assert_statuses(st, want1, 4);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 12);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE event_id = '" EV3 "' AND status = 'rejected'"), 1);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE event_id = '" EV2 "' AND event_type IS NULL"), 1);
    /* Across batches: a crash before the commit leaves nothing, so the
     * redelivered batch applies once; redelivered after the commit, it is a no-op. */
    ck_assert_int_eq(batch(c, second, 3, NULL, st, 0), 0);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 12);
    ck_assert_int_eq(batch(c, second, 3, NULL, st, 1), 0);
    assert_statuses(st, want2, 3);
    ck_assert_int_eq(batch(c, second, 3, NULL, st, 1), 0);
    assert_statuses(st, dup3, 3);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 32);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events"), 4);
    PQfinish(c);
}
END_TEST

/* A batch effect: one UPDATE for all accepted events; records which events it got. */
static char batch_seen[256];

static obx_effect_rc_t add_batch(PGconn *c, const obx_event_t *evs, int n, void *arg, obx_effect_rc_t *rcs,
                                 char *reason, size_t rs) {
    obx_dedup_array_t nums = {0};
    const char *vals[1];
    int lens[1], fmts[1] = {1};
    PGresult *r;
    (void)arg;
    batch_seen[0] = '\0';
    for (int i = 0; i < n; i++) {
        strncat(batch_seen, evs[i].payload, sizeof batch_seen - strlen(batch_seen) - 2);
        strcat(batch_seen, " ");
        if (strcmp(evs[i].payload, "poison") == 0) {
            snprintf(reason, rs, "refused");
            obx_dedup_array_free(&nums);
            return OBX_EFFECT_POISON;
        }
        rcs[i] = strcmp(evs[i].payload, "reject") == 0 ? OBX_EFFECT_REJECT : OBX_EFFECT_OK;
        if (rcs[i] == OBX_EFFECT_OK)
            ck_assert_int_eq(obx_dedup_array_add(&nums, evs[i].payload, -1), 0);
    }
    vals[0] = nums.data;
    lens[0] = nums.len;
    r = obx_dedup_exec(c, "UPDATE counter SET n = n + (SELECT sum(x::int) FROM unnest($1::text[]) x)", 1, vals,
                       lens, fmts);
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    obx_dedup_array_free(&nums);
    return OBX_EFFECT_OK;
}

START_TEST(batch_effect_gets_new_events_in_order_and_poison_redoes) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_batch_fn");
    obx_apply_status_t st[4];
    obx_event_t evs[4] = {event(EV1, "1", 0), event(EV2, "reject", 1), event(EV3, "10", 2), event(EV4, "100", 3)};
    obx_event_t bad[2] = {event(EV4, "poison", 3), event(NULL, "1", 4)};
    static const obx_apply_status_t want[4] = {OBX_APPLY_DUPLICATE, OBX_APPLY_REJECTED, OBX_APPLY_APPLIED,
                                               OBX_APPLY_APPLIED};

    ck_assert_int_eq(batch(c, evs, 1, add_batch, st, 1), 0);
    ck_assert_int_eq(batch(c, evs, 4, add_batch, st, 1), 0);
    assert_statuses(st, want, 4);
    ck_assert_str_eq(batch_seen, "reject 10 100 ");
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 111);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events WHERE status = 'rejected'"), 1);
    /* A poison effect or a message without an id: redo, one by one. */
    ck_assert_int_eq(batch(c, bad, 1, add_batch, st, 1), 0); /* EV4 is a duplicate: never reaches the effect */
    bad[0].event_id = "55555555-5555-4555-8555-555555555555";
    ck_assert_int_eq(batch(c, bad, 1, add_batch, st, 1), OBX_DEDUP_REDO);
    ck_assert_int_eq(batch(c, bad, 1, NULL, st, 1), OBX_DEDUP_REDO); /* "poison" is not a number */
    ck_assert_int_eq(batch(c, bad + 1, 1, add_batch, st, 1), OBX_DEDUP_REDO);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 111);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM processed_events"), 4);
    PQfinish(c);
}
END_TEST

START_TEST(prepared_again_after_reset) {
    th_ctx_t t;
    PGconn *c = setup(&t, "dd_reset");
    obx_apply_status_t st;
    char err[256];
    obx_event_t a = event(EV1, "5", 0), b = event(EV2, "7", 1);

    ck_assert_int_eq(obx_dedup_apply(c, "svc", &a, add_effect, NULL, &st, err, sizeof err), 0);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_prepared_statements"), 2);
    PQreset(c); /* a new session: nothing prepared there */
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    ck_assert_int_eq(th_int(c, "SELECT count(*) FROM pg_prepared_statements"), 0);
    ck_assert_msg(obx_dedup_apply(c, "svc", &b, add_effect, NULL, &st, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(st, OBX_APPLY_APPLIED);
    ck_assert_int_eq(th_int(c, "SELECT n FROM counter"), 12);
    PQfinish(c);
}
END_TEST

TH_MAIN("dedup", 60, duplicate_twice_ten_times_and_replay, reject_poison_and_bad_ids,
        compensation_before_and_after_original, offsets_never_move_back_and_cleanup,
        batch_duplicates_within_across_and_redelivered, batch_effect_gets_new_events_in_order_and_poison_redoes,
        prepared_again_after_reset)
