/* The relay against the real 3-node cluster (replication 3,
 * min.insync.replicas 2), every client byte through the fault proxy, read
 * back around the proxy with kcat.
 * - cluster_smoke: the tools of tests/support/cluster.h work, and the relay
 *   loses nothing across a leader kill -9, a reassignment with a preferred
 *   election, and responses swallowed by the proxy.
 * - frozen_leader_healthy_partitions_flow: a SIGSTOPped leader must not hold
 *   up the partitions it does not lead: commit-to-mark latency of the events
 *   committed during the freeze, frozen partitions vs healthy ones. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"

START_TEST(cluster_smoke) {
    th_cluster_t c;
    th_ctx_t t;
    th_msgs_t msgs;
    char topic[128];
    int replicas[3], rotated[3], leader, n;
    pid_t relay;

    th_cluster_open(&c);
    th_setup(&t, "cluster_smoke");
    snprintf(topic, sizeof topic, "%s.smoke", t.topic_prefix);
    th_cluster_create_topic(&c, topic, 4);
    ck_assert_int_eq(th_write(&t, 4, 2000, 100, 100, "smoke"), 2000);
    relay = th_relay_start(&t, th_config(&t, "relay.conf", c.bootstrap, "", "request_timeout_ms = 3000;"));
    th_wait_count(&t, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", 1, 60000);

    /* The responses of partition 0's leader vanish for a while: the relay
     * must retry, and idempotence keep one copy. */
    leader = th_cluster_leader(&c, topic, 0);
    th_cluster_fault(&c, leader, "swallow");
    ck_assert_int_eq(th_write(&t, 4, 1000, 100, 100, "smoke"), 1000);
    th_cluster_fault(&c, leader, "pass");

    /* kill -9 of partition 1's leader, more rows, then the node comes back. */
    leader = th_cluster_leader(&c, topic, 1);
    th_cluster_kill(&c, leader);
    ck_assert_int_eq(th_write(&t, 4, 1000, 100, 100, "smoke"), 1000);
    ck_assert_msg(th_wait_drained(&t, 60000), "relay did not drain with node %d down", leader);
    th_cluster_restart(&c, leader);

    /* Partition 2 gets its replicas rotated; the election moves its leader. */
    n = th_cluster_replicas(&c, topic, 2, replicas, 3);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++)
        rotated[i] = replicas[(i + 1) % 3];
    th_cluster_reassign(&c, topic, 2, rotated, 3);
    th_cluster_elect_preferred(&c, topic, 2);
    ck_assert_int_eq(th_cluster_leader(&c, topic, 2), rotated[0]);
    ck_assert_int_eq(th_write(&t, 4, 1000, 100, 100, "smoke"), 1000);

    ck_assert_msg(th_wait_drained(&t, 60000), "relay did not drain");
    th_cluster_read(&c, topic, &msgs, 60000);
    th_verify(&t, &msgs, "smoke");
    th_msgs_free(&msgs);
    ck_assert_int_eq(th_relay_stop(relay, SIGTERM, 30000), 0);
    th_cluster_close(&c);
}
END_TEST

/* A paced writer: one row per transaction at `rate` rows/s over 1,000 keys
 * until told to stop. */
typedef struct {
    const th_ctx_t *t;
    int rate, index;
    atomic_int stop;
    long committed;
} pacer_t;

static void *pacer_main(void *arg) {
    pacer_t *w = arg;
    PGconn *pg = th_connect(w->t);
    int64_t start = th_now_ms();
    char agg[32];
    const char *vals[1] = {agg};
    for (long i = 0; !atomic_load(&w->stop); i++) {
        int64_t due = start + i * 1000 / w->rate;
        PGresult *r;
        while (th_now_ms() < due)
            usleep(1000);
        snprintf(agg, sizeof agg, "k-%ld", (i * 2 + w->index) % 1000);
        r = PQexecParams(pg, "SELECT outbox_enqueue('frozen', $1, 'Tick', '\\x00'::bytea, NULL)", 1, NULL,
                         vals, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            w->committed++;
        PQclear(r);
    }
    PQfinish(pg);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int by_event_id(const void *a, const void *b) {
    return strcmp(((const th_msg_t *)a)->event_id, ((const th_msg_t *)b)->event_id);
}

typedef struct {
    double *v;
    size_t n;
} sample_t;

static double pct(const sample_t *s, double p) {
    return s->n ? s->v[(size_t)(p * (double)(s->n - 1) + 0.5)] : 0;
}

static void report(const char *name, sample_t *s) {
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    fprintf(stderr, "frozen leader: %s partitions: events=%zu p50=%.0f ms p99=%.0f ms max=%.0f ms\n", name, s->n,
            pct(s, 0.50), pct(s, 0.99), s->n ? s->v[s->n - 1] : 0.0);
}

START_TEST(frozen_leader_healthy_partitions_flow) {
    enum { PARTS = 6, FREEZE_S = 8 };
    th_cluster_t c;
    th_ctx_t t;
    th_msgs_t msgs;
    pacer_t w[2];
    pthread_t th[2];
    char topic[128], t0[64], t1[64];
    const char *params[2] = {t0, t1};
    int leaders[PARTS], frozen;
    sample_t groups[2] = {{NULL, 0}, {NULL, 0}}; /* 0: healthy, 1: led by the frozen node */
    PGconn *pg;
    PGresult *r;
    pid_t relay;

    th_cluster_open(&c);
    th_setup(&t, "frozen_leader");
    snprintf(topic, sizeof topic, "%s.frozen", t.topic_prefix);
    th_cluster_create_topic(&c, topic, PARTS);
    /* The relay as users run it: its own defaults, through the proxy. */
    relay = th_relay_start(&t, th_config(&t, "relay.conf", c.bootstrap, "", ""));
    for (int i = 0; i < 2; i++) {
        w[i] = (pacer_t){.t = &t, .rate = 250, .index = i};
        atomic_init(&w[i].stop, 0);
        pthread_create(&th[i], NULL, pacer_main, &w[i]);
    }
    th_wait_count(&t, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", 2000, 60000);

    for (int p = 0; p < PARTS; p++)
        leaders[p] = th_cluster_leader(&c, topic, p);
    frozen = leaders[0];
    pg = th_connect(&t);
    snprintf(t0, sizeof t0, "%lld", th_int(pg, "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint"));
    th_cluster_freeze(&c, frozen);
    sleep(FREEZE_S); /* the fault itself: how long the leader stays frozen */
    th_cluster_thaw(&c, frozen);
    snprintf(t1, sizeof t1, "%lld", th_int(pg, "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint"));
    fprintf(stderr, "frozen leader: froze node %d (leader of partitions", frozen);
    for (int p = 0; p < PARTS; p++)
        if (leaders[p] == frozen)
            fprintf(stderr, " %d", p);
    fprintf(stderr, ") for %d s\n", FREEZE_S);
    /* A little more load after the thaw, then let everything drain. */
    th_wait_count(&t, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL AND sent_at > clock_timestamp() - interval '1 s'",
                  1, 60000);
    for (int i = 0; i < 2; i++) {
        atomic_store(&w[i].stop, 1);
        pthread_join(th[i], NULL);
    }
    ck_assert_msg(th_wait_drained(&t, 120000), "relay did not drain after the freeze");
    th_cluster_wait_healthy(&c, 60000);
    th_cluster_read(&c, topic, &msgs, 60000);
    th_verify(&t, &msgs, "frozen");

    r = PQexecParams(pg,
        "SELECT event_id::text, extract(epoch FROM sent_at - created_at) * 1000 FROM outbox"
        " WHERE aggregate_type = 'frozen' AND created_at >= to_timestamp($1::bigint / 1e6)"
        " AND created_at < to_timestamp($2::bigint / 1e6)",
        2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int g = 0; g < 2; g++)
        groups[g].v = calloc((size_t)PQntuples(r) + 1, sizeof(double));
    /* The partition each event landed on, by event id (first copy). */
    qsort(msgs.v, msgs.n, sizeof *msgs.v, by_event_id);
    for (int i = 0; i < PQntuples(r); i++) {
        th_msg_t key, *m;
        snprintf(key.event_id, sizeof key.event_id, "%s", PQgetvalue(r, i, 0));
        m = bsearch(&key, msgs.v, msgs.n, sizeof *msgs.v, by_event_id);
        if (m) {
            sample_t *s = &groups[leaders[m->partition] == frozen];
            s->v[s->n++] = atof(PQgetvalue(r, i, 1));
        }
    }
    PQclear(r);
    PQfinish(pg);
    th_msgs_free(&msgs);
    report("frozen-leader", &groups[1]);
    report("healthy", &groups[0]);
    ck_assert_int_eq(th_relay_stop(relay, SIGTERM, 30000), 0);
    th_cluster_close(&c);
    ck_assert_msg(groups[0].n > 0 && groups[1].n > 0, "no events committed during the freeze on one side");
    ck_assert_msg(pct(&groups[0], 0.99) < 2000 * th_mult(),
                  "healthy partitions' p99 %.0f ms during the freeze of node %d (bound %.0f ms)",
                  pct(&groups[0], 0.99), frozen, 2000 * th_mult());
    free(groups[0].v);
    free(groups[1].v);
}
END_TEST

TH_MAIN("cluster", 900, cluster_smoke, frozen_leader_healthy_partitions_flow)
