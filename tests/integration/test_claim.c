/* Claims that do not depend on the planner's statistics (issue 16, part 5).
 * A new outbox, or one never analyzed, that holds a backlog (a fresh
 * deployment, a relay back after an outage) has no statistics: the planner
 * then estimated one matching row and read the whole id range through a
 * bitmap scan and sorted it for every 500-row claim. The relay's claiming
 * session is set up by obx_outbox_connect itself here, and its prepared
 * claim must walk the primary key in id order and stop at its limit. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "outbox.h"

#define ROWS 100000

/* The EXPLAIN ANALYZE of the prepared claim from id 0, one string. */
static void explain_claim(PGconn *c, char *out, size_t size) {
    PGresult *r = PQexec(c, "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim(0, 500, 9223372036854775807)");
    size_t len = 0;
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "EXPLAIN: %s", PQresultErrorMessage(r));
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r) && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%s\n", PQgetvalue(r, i, 0));
    PQclear(r);
}

START_TEST(claim_takes_the_primary_key_without_statistics) {
    th_ctx_t t;
    obx_config_t cfg;
    char err[512], plan[4096], bare[4096], sql[512];
    PGconn *pg, *relay;

    th_setup(&t, "claim_plan");
    ck_assert_msg(obx_config_load(th_config(&t, "relay.conf", "127.0.0.1:1", "", ""), OBX_PROG_RELAY, &cfg, err,
                                  sizeof err) == 0,
                  "config: %s", err);
    pg = th_connect(&t);
    /* No autovacuum: nothing may analyze the table behind the test's back. */
    snprintf(sql, sizeof sql, "ALTER TABLE %s SET (autovacuum_enabled = false)", cfg.pg_table_sql);
    th_exec(pg, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (aggregate_type, aggregate_id, event_type, payload)"
             " SELECT 'order', 'agg-' || (g %% 1000), 'OrderPlaced', convert_to(repeat('x', 300), 'UTF8')"
             " FROM generate_series(1, %d) g",
             cfg.pg_table_sql, ROWS);
    th_exec(pg, sql);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename"
             " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname"
             " WHERE c.oid = '%s'::regclass",
             cfg.pg_table_sql);
    ck_assert_msg(th_int(pg, sql) == 0, "the outbox has statistics: the test's premise does not hold");

    relay = obx_outbox_connect(&cfg, "test claim", OBX_SESSION_CLAIM, err, sizeof err);
    ck_assert_msg(relay != NULL, "obx_outbox_connect: %s", err);
    explain_claim(relay, plan, sizeof plan);
    /* The same statement in a session without the relay's set-up, for the
     * record: what the planner does on its own. */
    snprintf(sql, sizeof sql,
             "PREPARE claim(bigint, bigint, bigint) AS SELECT id FROM %s WHERE sent_at IS NULL"
             " AND parked_at IS NULL AND id > $1 AND id <= $3 ORDER BY id LIMIT $2",
             cfg.pg_table_sql);
    th_exec(pg, sql);
    explain_claim(pg, bare, sizeof bare);
    fprintf(stderr, "claim plan, relay session:\n%sclaim plan, a plain session:\n%s", plan, bare);
    /* (The claim's header subplans sort each row's own headers.) */
    ck_assert_msg(strstr(plan, "Index Scan using") && strstr(plan, "pkey") && !strstr(plan, "Sort Key: id") &&
                      !strstr(plan, "Bitmap"),
                  "the relay's claim does not walk the primary key in order on an outbox without statistics:\n%s",
                  plan);
    PQfinish(relay);
    PQfinish(pg);
    obx_config_free(&cfg);
}
END_TEST

TH_MAIN("integration", 300, claim_takes_the_primary_key_without_statistics)
