/* Chaos on the real 3-node cluster (replication 3, min.insync.replicas 2):
 * the whole order flow (relay, stock and payment consumers, order generator)
 * through the fault proxy, while a seeded schedule kills and freezes
 * partition leaders, freezes two nodes at once, starves a partition of
 * in-sync replicas (NOT_ENOUGH_REPLICAS), moves leaders by election and
 * reassignment, swallows, resets, delays and throttles client traffic, kills
 * the relay with a backlog while leaders move, and restarts PostgreSQL.
 * The cluster heals between faults (never more than two nodes down, briefly).
 * Afterwards, read around the proxy with kcat: G1 (every row published and
 * marked), G2 (first occurrences per key in id order), G3 (every effect
 * exactly once), headers right, the flash-sale invariants. Also counts
 * librdkafka's IMPLICITACK debug lines in the relay log (reported, not
 * asserted: DESIGN.md section 6). OBX_CHAOS_SEED=<seed> reruns a schedule;
 * CHAOS_LONG=1 runs 200 faults. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"
#include "shop.h"

enum { F_LEADER_KILL, F_LEADER_FREEZE, F_TWO_FREEZE, F_NOT_ENOUGH_REPLICAS, F_ELECT, F_REASSIGN,
       F_SWALLOW, F_RESET, F_LATENCY, F_BANDWIDTH, F_RELAY_KILL_MOVE, F_PG_FAST, F_PG_IMMEDIATE,
       F_KINDS };
static const char *const fault_names[F_KINDS] = {
    "leader_kill", "leader_freeze", "two_freeze", "not_enough_replicas", "preferred_election",
    "reassign", "proxy_swallow", "proxy_reset", "proxy_latency", "proxy_bandwidth",
    "relay_kill_leader_move", "pg_fast_restart", "pg_immediate_restart"};

/* The relay's request timeout: freezes longer than this make it retry
 * requests whose fate it cannot know. */
#define REQUEST_TIMEOUT_MS 3000
#define PARTITIONS 4

typedef struct {
    th_cluster_t *c;
    th_ctx_t *t;
    char topic[128]; /* the order topic: the relay's */
    char rconf[512];
    pid_t relay;
    int starved; /* the partition starve_isr works on */
} chaos_t;

/* Sleeps that are the fault itself: how long a node stays frozen or a
 * proxy fault lasts. */
static void hold_ms(unsigned lo, unsigned spread) { usleep((useconds_t)(lo + th_rnd(spread)) * 1000); }

static int other_node(int a, int b) {
    for (int n = 1; n <= TH_CLUSTER_NODES; n++)
        if (n != a && n != b)
            return n;
    return -1;
}

/* Rotates the partition's replica order and elects its new preferred
 * leader: the leader moves while the relay produces to it. */
static void move_leader(chaos_t *x, int partition) {
    int rep[3], rot[3];
    ck_assert_int_eq(th_cluster_replicas(x->c, x->topic, partition, rep, 3), 3);
    for (int i = 0; i < 3; i++)
        rot[i] = rep[(i + 1) % 3];
    th_cluster_reassign(x->c, x->topic, partition, rot, 3);
    th_cluster_elect_preferred(x->c, x->topic, partition);
}

static int isr_alone(void *arg) {
    chaos_t *x = arg;
    int isr[3];
    return th_cluster_isr(x->c, x->topic, x->starved, isr, 3) == 1;
}

/* Partition p on two replicas only, then its follower frozen until fenced:
 * the ISR is the leader alone, below min.insync.replicas, and acks=all
 * produce requests get NOT_ENOUGH_REPLICAS. (Freezing two nodes of three
 * cannot do it: they are two of the three controllers, so no ISR change
 * commits.) Then everything back to three replicas. */
static void starve_isr(chaos_t *x, int p) {
    int rep[3], leader = th_cluster_leader(x->c, x->topic, p), two[2], follower;
    ck_assert_int_eq(th_cluster_replicas(x->c, x->topic, p, rep, 3), 3);
    follower = leader == rep[0] ? rep[1] : rep[0];
    x->starved = p;
    two[0] = leader;
    two[1] = follower;
    th_cluster_reassign(x->c, x->topic, p, two, 2);
    th_cluster_freeze(x->c, follower);
    /* Fenced after the 4 s session timeout, the follower leaves the ISR.
     * On a loaded machine the controller may take longer (seen: more than
     * 30 s with eight other JVMs beside the cluster); the fault is then a
     * long follower freeze, said so, and the run's checks still apply. */
    if (th_wait(isr_alone, x, 60000))
        hold_ms(1000, 2000); /* the fault: produce requests refused for lack of replicas */
    else
        fprintf(stderr, "cluster chaos: %s/%d: the ISR did not shrink to its leader within 60 s;"
                        " the follower stayed frozen instead\n", x->topic, p);
    th_cluster_thaw(x->c, follower);
    th_cluster_wait_stable(x->c, 2000, 60000);
    rep[0] = leader;
    rep[1] = follower;
    rep[2] = other_node(leader, follower);
    th_cluster_reassign(x->c, x->topic, p, rep, 3);
}

static void inject(chaos_t *x, int kind) {
    int p = (int)th_rnd(PARTITIONS), leader = th_cluster_leader(x->c, x->topic, p), other;
    ck_assert_msg(leader > 0, "no leader for %s/%d on a healthy cluster", x->topic, p);
    switch (kind) {
    case F_LEADER_KILL:
        th_cluster_kill(x->c, leader);
        hold_ms(500, 4000);
        th_cluster_restart(x->c, leader);
        break;
    case F_LEADER_FREEZE:
        th_cluster_freeze(x->c, leader);
        hold_ms(REQUEST_TIMEOUT_MS + 500, 3000);
        th_cluster_thaw(x->c, leader);
        break;
    case F_TWO_FREEZE:
        /* Two of three controllers frozen: no quorum, so briefly (below the
         * session timeout). Produce requests wait for the frozen followers. */
        other = leader % TH_CLUSTER_NODES + 1;
        th_cluster_freeze(x->c, leader);
        th_cluster_freeze(x->c, other);
        hold_ms(1500, 2000);
        th_cluster_thaw(x->c, other);
        th_cluster_thaw(x->c, leader);
        break;
    case F_NOT_ENOUGH_REPLICAS:
        starve_isr(x, p);
        break;
    case F_ELECT:
        th_cluster_wait_stable(x->c, 2000, 60000);
        th_cluster_elect_preferred(x->c, NULL, 0);
        break;
    case F_REASSIGN:
        th_cluster_wait_stable(x->c, 2000, 60000);
        move_leader(x, p);
        break;
    case F_SWALLOW:
        th_cluster_fault(x->c, leader, "swallow");
        hold_ms(1000, 4000);
        th_cluster_fault(x->c, leader, "pass");
        break;
    case F_RESET:
        th_cluster_fault(x->c, leader, "reset");
        hold_ms(500, 2500);
        th_cluster_fault(x->c, leader, "pass");
        break;
    case F_LATENCY:
        th_cluster_fault(x->c, 0, "latency 200");
        hold_ms(2000, 3000);
        th_cluster_fault(x->c, 0, "pass");
        break;
    case F_BANDWIDTH:
        th_cluster_fault(x->c, 1 + (int)th_rnd(TH_CLUSTER_NODES), "bandwidth 20000");
        hold_ms(2000, 3000);
        th_cluster_fault(x->c, 0, "pass");
        break;
    case F_RELAY_KILL_MOVE:
        th_relay_stop(x->relay, SIGKILL, 5000);
        /* A backlog of its own: the order generator may be done by now. */
        ck_assert_int_eq(th_write(x->t, 2, 500, 50, 100, "backlog"), 500);
        th_cluster_wait_stable(x->c, 2000, 60000);
        x->relay = th_relay_start(x->t, x->rconf);
        move_leader(x, p);
        break;
    case F_PG_FAST: th_pg_ctl("restart fast"); break;
    case F_PG_IMMEDIATE: th_pg_ctl("restart immediate"); break;
    }
    /* Heal before the next fault: never two faults' worth of nodes down. */
    th_cluster_wait_healthy(x->c, 90000);
}

START_TEST(cluster_chaos_order_flow) {
    th_cluster_t c;
    th_ctx_t t;
    th_msgs_t msgs;
    th_verify_t v = {0};
    long order_rows = 0;
    chaos_t x;
    pid_t stock, pay, gen;
    char sconf[512], pconf[512], topic[128], cnt[512] = "";
    int long_run = getenv("CHAOS_LONG") && atoi(getenv("CHAOS_LONG"));
    int nfaults = long_run ? 200 : 24, orders = long_run ? 150000 : 20000, rate = 100;
    int counts[F_KINDS] = {0}, schedule[200];
    uint64_t seed = th_chaos_seed("cluster chaos");
    long long dup_effects;
    static const char *const topics[] = {"order", "stock", "payment", "backlog"};
    PGconn *pg;

    ck_assert_msg(getenv("OBX_TEST_PGDIR"), "OBX_TEST_PGDIR unset: tests/run.sh sets it");
    th_cluster_open(&c);
    th_setup(&t, "cluster_chaos");
    for (int i = 0; i < 4; i++) {
        snprintf(topic, sizeof topic, "%s.%s", t.topic_prefix, topics[i]);
        th_cluster_create_topic(&c, topic, PARTITIONS);
    }
    pg = th_connect(&t);
    th_apply_sql(pg, "schema/003_shop.sql");
    PQfinish(pg);
    memset(&x, 0, sizeof x);
    x.c = &c;
    x.t = &t;
    snprintf(x.topic, sizeof x.topic, "%s.order", t.topic_prefix);
    /* librdkafka's eos debug lines show IMPLICITACK (counted below). */
    snprintf(x.rconf, sizeof x.rconf, "%s",
             th_config_level(&t, "relay.conf", c.bootstrap, "batch_size = 200;",
                             "request_timeout_ms = 3000; debug = \"eos\";", "debug"));
    snprintf(sconf, sizeof sconf, "%s", th_consumer_conf(&t, "stock.conf", c.bootstrap, "stock", "order"));
    snprintf(pconf, sizeof pconf, "%s", th_consumer_conf(&t, "payment.conf", c.bootstrap, "payment", "stock"));
    x.relay = th_relay_start(&t, x.rconf);
    stock = th_spawn(&t, "obx-stock-consumer", sconf, "stock.log");
    pay = th_spawn(&t, "obx-payment-consumer", pconf, "payment.log");
    gen = th_ordergen_spawn(&t, orders, rate);

    th_chaos_schedule(F_KINDS, nfaults, schedule);
    for (int i = 0; i < nfaults; i++) {
        int kind = schedule[i];
        int64_t t0;
        usleep((useconds_t)(300000 + th_rnd(1200000))); /* a random moment of the flow */
        counts[kind]++;
        t0 = th_now_ms();
        inject(&x, kind);
        fprintf(stderr, "cluster chaos: fault %d/%d %s (%lld ms to heal)\n", i + 1, nfaults, fault_names[kind],
                (long long)(th_now_ms() - t0));
    }
    th_shop_finish(&t, gen, orders, 300000);

    /* Every topic the relay wrote: orders, the consumers' own events, the
     * backlogs written while it was down. */
    for (int i = 0; i < 4; i++) {
        th_verify_t one;
        snprintf(topic, sizeof topic, "%s.%s", t.topic_prefix, topics[i]);
        th_cluster_read(&c, topic, &msgs, 120000);
        one = th_verify_counts(&t, &msgs, topics[i]);
        th_msgs_free(&msgs);
        if (i == 0)
            order_rows = one.rows;
        v.rows += one.rows;
        v.lost += one.lost;
        v.unsent += one.unsent;
        v.duplicates += one.duplicates;
        v.order_violations += one.order_violations;
        v.wrong_headers += one.wrong_headers;
    }
    dup_effects = th_shop_dup_effects(&t);
    for (int k = 0; k < F_KINDS; k++) {
        size_t len = strlen(cnt);
        snprintf(cnt + len, sizeof cnt - len, "%s%s:%d", len ? "," : "", fault_names[k], counts[k]);
    }
    fprintf(stderr, "cluster chaos summary: seed=%llu events=%ld faults=%d (%s) lost=%ld duplicated_effects=%lld"
                    " order_violations=%ld duplicates_published=%ld implicit_acks=%d\n",
            (unsigned long long)seed, v.rows, nfaults, cnt, v.lost + v.unsent, dup_effects, v.order_violations,
            v.duplicates, th_log_count(&t, "IMPLICITACK"));
    ck_assert_int_eq(order_rows, orders);
    ck_assert_int_eq(v.lost + v.unsent, 0);
    ck_assert_int_eq(v.order_violations, 0);
    ck_assert_int_eq(v.wrong_headers, 0);
    ck_assert_int_eq(dup_effects, 0);
    th_shop_check(&t, orders);
    th_stop(stock, SIGTERM, 30000, 0);
    th_stop(pay, SIGTERM, 30000, 0);
    th_stop(x.relay, SIGTERM, 30000, 0);
    th_cluster_close(&c);
}
END_TEST

TH_MAIN("cluster-chaos", 3000, cluster_chaos_order_flow)
