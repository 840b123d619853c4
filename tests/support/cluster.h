/* The real 3-node Kafka cluster that tests/run.sh starts (tests/kafka.sh
 * cluster-start): topics, leaders, node kills and freezes, leader elections,
 * partition reassignments, faults of the proxy every client byte passes, and
 * an independent reader (kcat, around the proxy). Every function fails the
 * test with the command it ran and what it printed when something goes wrong;
 * waits have deadlines scaled by th_mult(). Nodes are numbered 1..3. */
#ifndef OBX_TEST_CLUSTER_H
#define OBX_TEST_CLUSTER_H

#include "harness.h"

#define TH_CLUSTER_NODES 3

typedef struct {
    char dir[512];       /* OBX_CLUSTER_DIR: the cluster's files (see tests/kafka.sh) */
    char bootstrap[512]; /* proxied client addresses: give these to the relay and consumers */
    char direct[512];    /* the nodes' own client addresses: for readers and admin tools */
    char jars[512];      /* Kafka's jar folder, for the admin tools */
    int ctl_port;        /* the fault proxy's control port */
    int frozen[TH_CLUSTER_NODES + 1];
    rd_kafka_t *rk;      /* metadata and admin requests, over the direct addresses */
} th_cluster_t;

/* Opens the cluster of OBX_CLUSTER_DIR and waits until it is healthy. */
void th_cluster_open(th_cluster_t *c);
/* Thaws frozen nodes, restarts dead ones, clears proxy faults, waits healthy. */
void th_cluster_close(th_cluster_t *c);

/* Creates topic with partitions partitions, replication 3, and waits until
 * every partition has a leader and a full ISR. */
void th_cluster_create_topic(th_cluster_t *c, const char *topic, int partitions);
/* Node leading the partition now (-1: none), from a fresh Metadata request. */
int th_cluster_leader(th_cluster_t *c, const char *topic, int partition);
/* Replicas of the partition in preference order; returns their count. */
int th_cluster_replicas(th_cluster_t *c, const char *topic, int partition, int *out, int max);
/* In-sync replicas of the partition; returns their count, or -1 when no
 * node answered within 2 s (one may be frozen). */
int th_cluster_isr(th_cluster_t *c, const char *topic, int partition, int *out, int max);

pid_t th_cluster_pid(th_cluster_t *c, int node);
/* kill -9 of the node; returns when the process is gone. */
void th_cluster_kill(th_cluster_t *c, int node);
/* Starts a stopped node and waits until it is back in every ISR it belongs to. */
void th_cluster_restart(th_cluster_t *c, int node);
/* SIGSTOP / SIGCONT of the node. */
void th_cluster_freeze(th_cluster_t *c, int node);
void th_cluster_thaw(th_cluster_t *c, int node);

/* Preferred-leader election for one partition, or every partition when
 * topic is NULL (LeaderElectionCommand). */
void th_cluster_elect_preferred(th_cluster_t *c, const char *topic, int partition);
/* Reassigns the partition to replicas (preference order; leader first) and
 * waits until the cluster reports that assignment (ReassignPartitionsCommand). */
void th_cluster_reassign(th_cluster_t *c, const char *topic, int partition, const int *replicas, int n);

/* Sets a fault of the proxy for node's client connections (node 0: all):
 * "pass", "swallow", "reset", "down", "latency MS", "bandwidth BYTES_PER_S",
 * "drop K" (the next K Produce requests vanish, whole; the rest passes),
 * "refuse K [CODE]" (the next K are answered with Kafka error CODE, default
 * 19 NOT_ENOUGH_REPLICAS, unwritten). */
void th_cluster_fault(th_cluster_t *c, int node, const char *fault);
/* The same for any obx-faultproxy: its control port, the folder of its
 * proxy.log (for the message), route N (0: all). */
void th_proxy_fault(int ctl_port, const char *dir, int route, const char *fault);
/* Lines of the proxy's log (DIR/proxy.log) containing needle, e.g.
 * TH_CLUSTER_DROPPED: one line per Produce request a "drop" fault dropped. */
#define TH_CLUSTER_DROPPED "dropped a Produce request"
int th_cluster_proxy_log_count(th_cluster_t *c, const char *needle);

/* 1 when all three nodes run unfrozen, each is registered, and every
 * partition of every topic has a leader and a full ISR; else 0. */
int th_cluster_healthy(th_cluster_t *c);
/* Waits for th_cluster_healthy; fails the test with the unhealthy partition. */
void th_cluster_wait_healthy(th_cluster_t *c, int timeout_ms);

/* Waits until the cluster has been healthy for stable_ms without a break:
 * a node thawed just now may still be fenced a moment later (the controller
 * acts on a session timeout it measured while frozen), and an election
 * started then fails. */
void th_cluster_wait_stable(th_cluster_t *c, int stable_ms, int timeout_ms);

/* Reads every partition of topic from the beginning to its end with kcat
 * over the direct addresses, into out (freed with th_msgs_free). */
void th_cluster_read(th_cluster_t *c, const char *topic, th_msgs_t *out, int timeout_ms);

#endif
