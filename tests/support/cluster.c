/* See cluster.h. Node control goes through tests/kafka.sh cluster-node (the
 * script owns the processes and their pid files); elections and
 * reassignments run Kafka's own admin tools from the cluster's jar folder;
 * metadata comes from librdkafka over the direct (unproxied) listeners. */
#include "cluster.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* Why th_cluster_healthy last said no, for the failure message. */
static char unhealthy_why[256];

static void read_line(const char *dir, const char *file, char *out, size_t n) {
    char path[600];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cluster: cannot read %s (is the cluster started by tests/run.sh?)", path);
    ck_assert_msg(fgets(out, (int)n, f) != NULL, "cluster: %s is empty", path);
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

/* Runs cmd with stderr folded into stdout; returns its exit status and
 * leaves the tail of its output in out for failure messages. */
static int run_capture(const char *cmd, char *out, size_t n) {
    char full[4096], line[1024];
    size_t len = 0;
    FILE *p;
    int st;
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    p = popen(full, "r");
    ck_assert_msg(p != NULL, "cluster: cannot run %s", cmd);
    out[0] = '\0';
    while (fgets(line, sizeof line, p)) {
        size_t l = strlen(line);
        if (len + l + 1 > n) { /* keep the tail: it says what went wrong */
            len = 0;
            out[0] = '\0';
        }
        memcpy(out + len, line, l + 1);
        len += l;
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void run_ok(const char *cmd) {
    char out[8192];
    int64_t t0 = th_now_ms();
    int st = run_capture(cmd, out, sizeof out);
    size_t len = strlen(out);
    if (st != 0) /* all of it here: Check's messages hold about 4 kB */
        fprintf(stderr, "cluster: `%s` exited %d:\n%s", cmd, st, out);
    ck_assert_msg(st == 0, "cluster: `%.600s` exited %d:\n%s", cmd, st, out + (len > 1500 ? len - 1500 : 0));
    /* Slow admin commands explain slow faults (a loaded machine's JVMs). */
    if (th_now_ms() - t0 > 5000)
        fprintf(stderr, "cluster: `%.120s` took %lld ms\n", cmd, (long long)(th_now_ms() - t0));
}

static void kafka_sh(th_cluster_t *c, const char *action, int node) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' cluster-node '%s' %s %d", th_src("tests/kafka.sh"), c->dir, action, node);
    run_ok(cmd);
}

/* Runs one of Kafka's admin tools (a JVM start: about a second). */
static void kafka_tool(th_cluster_t *c, const char *cls, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "java -Xmx192m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j.configuration=file:'%s'"
             " -cp '%s/*' %s --bootstrap-server '%s' %s",
             th_src("tests/kafka/log4j.properties"), c->jars, cls, c->direct, args);
    run_ok(cmd);
}

void th_cluster_open(th_cluster_t *c) {
    const char *dir = getenv("OBX_CLUSTER_DIR");
    char err[256], port[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    ck_assert_msg(dir && *dir, "OBX_CLUSTER_DIR unset: tests/run.sh starts the cluster and sets it");
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    read_line(dir, "bootstrap", c->bootstrap, sizeof c->bootstrap);
    read_line(dir, "bootstrap.direct", c->direct, sizeof c->direct);
    read_line(dir, "jars", c->jars, sizeof c->jars);
    read_line(dir, "proxy.ctl", port, sizeof port);
    c->ctl_port = atoi(port);
    rd_kafka_conf_set(conf, "bootstrap.servers", c->direct, err, sizeof err);
    /* Nodes die on purpose here: their refused connections are not news. */
    rd_kafka_conf_set(conf, "log_level", "2", err, sizeof err);
    rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "1000", err, sizeof err);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(c->rk != NULL, "cluster: %s", err);
    th_cluster_wait_healthy(c, 60000);
}

void th_cluster_close(th_cluster_t *c) {
    for (int n = 1; n <= TH_CLUSTER_NODES; n++) {
        if (c->frozen[n])
            th_cluster_thaw(c, n);
        kafka_sh(c, "start", n); /* does nothing for a running node */
    }
    th_cluster_fault(c, 0, "pass");
    th_cluster_wait_healthy(c, 120000);
    rd_kafka_destroy(c->rk);
    c->rk = NULL;
}

/* A fresh Metadata answer for all topics; the caller destroys it. NULL when
 * no node answered within 2 s. */
static const rd_kafka_metadata_t *metadata(th_cluster_t *c) {
    const rd_kafka_metadata_t *md = NULL;
    if (rd_kafka_metadata(c->rk, 1, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return md;
}

static const rd_kafka_metadata_partition_t *find_partition(const rd_kafka_metadata_t *md,
                                                           const char *topic, int partition) {
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) != 0)
            continue;
        for (int p = 0; p < md->topics[i].partition_cnt; p++)
            if (md->topics[i].partitions[p].id == partition)
                return &md->topics[i].partitions[p];
    }
    return NULL;
}

/* The partition's replicas (isr 0) or in-sync replicas (isr 1); -1 when no
 * node answered or the partition is unknown. */
static int partition_nodes(th_cluster_t *c, const char *topic, int partition, int isr, int *out, int max) {
    const rd_kafka_metadata_t *md = metadata(c);
    const rd_kafka_metadata_partition_t *p = md ? find_partition(md, topic, partition) : NULL;
    int n = p ? 0 : -1;
    for (int i = 0; p && i < (isr ? p->isr_cnt : p->replica_cnt) && n < max; i++)
        out[n++] = isr ? p->isrs[i] : p->replicas[i];
    if (md)
        rd_kafka_metadata_destroy(md);
    return n;
}

int th_cluster_replicas(th_cluster_t *c, const char *topic, int partition, int *out, int max) {
    int n = partition_nodes(c, topic, partition, 0, out, max);
    ck_assert_msg(n >= 0, "cluster: no Metadata answer for %s/%d", topic, partition);
    return n;
}

int th_cluster_isr(th_cluster_t *c, const char *topic, int partition, int *out, int max) {
    return partition_nodes(c, topic, partition, 1, out, max);
}

int th_cluster_leader(th_cluster_t *c, const char *topic, int partition) {
    const rd_kafka_metadata_t *md = metadata(c);
    const rd_kafka_metadata_partition_t *p;
    int leader;
    ck_assert_msg(md != NULL, "cluster: no node answered a Metadata request");
    p = find_partition(md, topic, partition);
    leader = p && p->err == RD_KAFKA_RESP_ERR_NO_ERROR ? p->leader : -1;
    rd_kafka_metadata_destroy(md);
    return leader;
}

static int node_alive(th_cluster_t *c, int node) {
    char path[600], buf[32];
    FILE *f;
    pid_t pid = 0;
    snprintf(path, sizeof path, "%s/n%d/kafka.pid", c->dir, node);
    f = fopen(path, "r");
    if (f) {
        if (fgets(buf, sizeof buf, f))
            pid = (pid_t)atoi(buf);
        fclose(f);
    }
    return pid > 0 && kill(pid, 0) == 0 ? (int)pid : 0;
}

pid_t th_cluster_pid(th_cluster_t *c, int node) {
    pid_t pid = node_alive(c, node);
    ck_assert_msg(pid > 0, "cluster: node %d is not running", node);
    return pid;
}

int th_cluster_healthy(th_cluster_t *c) {
    const rd_kafka_metadata_t *md;
    int ok = 1;
    for (int n = 1; n <= TH_CLUSTER_NODES; n++) {
        if (c->frozen[n] || !node_alive(c, n)) {
            snprintf(unhealthy_why, sizeof unhealthy_why, "node %d %s", n, c->frozen[n] ? "frozen" : "not running");
            return 0;
        }
    }
    md = metadata(c);
    if (!md) {
        snprintf(unhealthy_why, sizeof unhealthy_why, "no Metadata answer");
        return 0;
    }
    if (md->broker_cnt != TH_CLUSTER_NODES) {
        snprintf(unhealthy_why, sizeof unhealthy_why, "%d brokers registered", md->broker_cnt);
        ok = 0;
    }
    for (int i = 0; ok && i < md->topic_cnt; i++) {
        for (int j = 0; ok && j < md->topics[i].partition_cnt; j++) {
            const rd_kafka_metadata_partition_t *p = &md->topics[i].partitions[j];
            if (p->leader < 0 || p->err || p->isr_cnt < p->replica_cnt) {
                snprintf(unhealthy_why, sizeof unhealthy_why, "%s/%d: leader %d, isr %d of %d replicas (%s)",
                         md->topics[i].topic, p->id, p->leader, p->isr_cnt, p->replica_cnt,
                         rd_kafka_err2name(p->err));
                ok = 0;
            }
        }
    }
    rd_kafka_metadata_destroy(md);
    return ok;
}

static int healthy_cond(void *arg) { return th_cluster_healthy(arg); }

void th_cluster_wait_healthy(th_cluster_t *c, int timeout_ms) {
    int64_t t0 = th_now_ms();
    ck_assert_msg(th_wait(healthy_cond, c, timeout_ms), "cluster: not healthy after %d ms: %s",
                  (int)(th_now_ms() - t0), unhealthy_why);
}

typedef struct {
    th_cluster_t *c;
    int stable_ms;
    int64_t since; /* healthy since (ms), 0 while not */
} stable_t;

static int stable_cond(void *arg) {
    stable_t *s = arg;
    if (!th_cluster_healthy(s->c)) {
        s->since = 0;
        return 0;
    }
    if (!s->since)
        s->since = th_now_ms();
    return th_now_ms() - s->since >= s->stable_ms;
}

void th_cluster_wait_stable(th_cluster_t *c, int stable_ms, int timeout_ms) {
    stable_t s = {c, stable_ms, 0};
    ck_assert_msg(th_wait(stable_cond, &s, timeout_ms), "cluster: not healthy for %d ms in a row within %d ms: %s",
                  stable_ms, timeout_ms, unhealthy_why);
}

typedef struct {
    th_cluster_t *c;
    const char *topic;
    int partitions;
    const int *replicas;
    int partition, n;
} topic_wait_t;

/* The topic has all its partitions, each with a leader and a full ISR. */
static int topic_ready(void *arg) {
    topic_wait_t *w = arg;
    const rd_kafka_metadata_t *md = metadata(w->c);
    int ready = 0;
    if (!md)
        return 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];
        if (strcmp(t->topic, w->topic) != 0 || t->err || t->partition_cnt != w->partitions)
            continue;
        ready = 1;
        for (int p = 0; p < t->partition_cnt; p++)
            if (t->partitions[p].leader < 0 || t->partitions[p].isr_cnt < 3)
                ready = 0;
    }
    rd_kafka_metadata_destroy(md);
    return ready;
}

void th_cluster_create_topic(th_cluster_t *c, const char *topic, int partitions) {
    char err[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 3, err, sizeof err);
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **res;
    size_t nres = 0;
    topic_wait_t w = {c, topic, partitions, NULL, 0, 0};

    ck_assert_msg(nt != NULL, "cluster: topic %s: %s", topic, err);
    rd_kafka_CreateTopics(c->rk, &nt, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, (int)(30000 * th_mult()));
    ck_assert_msg(ev != NULL, "cluster: CreateTopics %s: no answer in 30 s", topic);
    ck_assert_msg(!rd_kafka_event_error(ev), "cluster: CreateTopics %s: %s", topic, rd_kafka_event_error_string(ev));
    res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
    ck_assert_msg(nres == 1 && (rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR ||
                                rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS),
                  "cluster: CreateTopics %s: %s", topic, nres ? rd_kafka_topic_result_error_string(res[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    ck_assert_msg(th_wait(topic_ready, &w, 30000), "cluster: topic %s has no leader or full ISR after 30 s", topic);
}

void th_cluster_kill(th_cluster_t *c, int node) {
    if (c->frozen[node]) /* a frozen process dies on SIGKILL too; forget the freeze */
        c->frozen[node] = 0;
    kafka_sh(c, "kill", node);
}

void th_cluster_restart(th_cluster_t *c, int node) {
    kafka_sh(c, "start", node);
    th_cluster_wait_healthy(c, 60000);
}

void th_cluster_freeze(th_cluster_t *c, int node) {
    ck_assert_msg(kill(th_cluster_pid(c, node), SIGSTOP) == 0, "cluster: SIGSTOP node %d", node);
    c->frozen[node] = 1;
}

void th_cluster_thaw(th_cluster_t *c, int node) {
    ck_assert_msg(kill(th_cluster_pid(c, node), SIGCONT) == 0, "cluster: SIGCONT node %d", node);
    c->frozen[node] = 0;
}

void th_cluster_elect_preferred(th_cluster_t *c, const char *topic, int partition) {
    char args[512];
    if (topic)
        snprintf(args, sizeof args, "--election-type PREFERRED --topic '%s' --partition %d", topic, partition);
    else
        snprintf(args, sizeof args, "--election-type PREFERRED --all-topic-partitions");
    kafka_tool(c, "org.apache.kafka.tools.LeaderElectionCommand", args);
}

/* The partition reports exactly the wanted replica order and a full ISR. */
static int assignment_done(void *arg) {
    topic_wait_t *w = arg;
    const rd_kafka_metadata_t *md = metadata(w->c);
    const rd_kafka_metadata_partition_t *p;
    int done;
    if (!md)
        return 0;
    p = find_partition(md, w->topic, w->partition);
    done = p && p->replica_cnt == w->n && p->isr_cnt == w->n;
    for (int i = 0; done && i < w->n; i++)
        done = p->replicas[i] == w->replicas[i];
    rd_kafka_metadata_destroy(md);
    return done;
}

void th_cluster_reassign(th_cluster_t *c, const char *topic, int partition, const int *replicas, int n) {
    char path[600], args[800];
    topic_wait_t w = {c, topic, 0, replicas, partition, n};
    FILE *f;
    snprintf(path, sizeof path, "%s/reassign-%d.json", c->dir, (int)getpid());
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cluster: write %s", path);
    fprintf(f, "{\"version\":1,\"partitions\":[{\"topic\":\"%s\",\"partition\":%d,\"replicas\":[", topic, partition);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", replicas[i]);
    fprintf(f, "]}]}\n");
    fclose(f);
    snprintf(args, sizeof args, "--reassignment-json-file '%s' --execute", path);
    kafka_tool(c, "org.apache.kafka.tools.reassign.ReassignPartitionsCommand", args);
    ck_assert_msg(th_wait(assignment_done, &w, 30000), "cluster: %s/%d never reported its new assignment", topic,
                  partition);
}

void th_proxy_fault(int ctl_port, const char *dir, int route, const char *fault) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ctl_port)};
    struct timeval tv = {5, 0};
    char line[128], reply[128] = "";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0,
                  "fault proxy control port %d refused (see %s/proxy.log)", ctl_port, dir);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (route > 0)
        snprintf(line, sizeof line, "%d %s\n", route, fault);
    else
        snprintf(line, sizeof line, "all %s\n", fault);
    ck_assert_int_eq(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    n = read(fd, reply, sizeof reply - 1);
    reply[n > 0 ? n : 0] = '\0';
    close(fd);
    ck_assert_msg(strncmp(reply, "ok", 2) == 0, "proxy `%.*s`: %s", (int)strcspn(line, "\n"), line,
                  n > 0 ? reply : "no reply");
}

void th_cluster_fault(th_cluster_t *c, int node, const char *fault) { th_proxy_fault(c->ctl_port, c->dir, node, fault); }

int th_cluster_proxy_log_count(th_cluster_t *c, const char *needle) {
    char path[600], line[1024];
    int n = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/proxy.log", c->dir);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cluster: cannot read %s", path);
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* kcat prints headers as name=value,name=value. A value could hold a comma,
 * so a piece starts a new header only when it has a name= before any comma. */
static char *header_value(const char *hdrs, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = hdrs; p && *p;) {
        const char *end = p, *v = NULL;
        if (strncmp(p, name, nl) == 0 && p[nl] == '=')
            v = p + nl + 1;
        /* the next piece that looks like name= */
        for (end = strchr(p, ','); end; end = strchr(end + 1, ',')) {
            const char *eq = strchr(end + 1, '='), *cm = strchr(end + 1, ',');
            if (eq && (!cm || eq < cm))
                break;
        }
        if (v)
            return end ? strndup(v, (size_t)(end - v)) : strdup(v);
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

static void push_line(th_msgs_t *out, char *line) {
    char *f[5], *rest = line, *eid;
    th_msg_t *m;
    int nf = 0;
    line[strcspn(line, "\n")] = '\0';
    /* strsep keeps empty fields (an empty key); the headers take the rest */
    while (nf < 4 && rest)
        f[nf++] = strsep(&rest, "\t");
    if (rest)
        f[nf++] = rest;
    ck_assert_msg(nf == 5, "cluster: kcat line with %d fields", nf);
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 1024;
        out->v = realloc(out->v, out->cap * sizeof *out->v);
    }
    m = &out->v[out->n++];
    memset(m, 0, sizeof *m);
    m->partition = atoi(f[0]);
    m->offset = atoll(f[1]);
    m->payload_len = (size_t)atol(f[2]);
    m->key = strdup(f[3]);
    eid = header_value(f[4], "event_id");
    snprintf(m->event_id, sizeof m->event_id, "%s", eid ? eid : "");
    free(eid);
    m->event_type = header_value(f[4], "event_type");
    m->aggregate_type = header_value(f[4], "aggregate_type");
    m->traceparent = header_value(f[4], "traceparent");
    m->created_at = header_value(f[4], "created_at");
}

void th_cluster_read(th_cluster_t *c, const char *topic, th_msgs_t *out, int timeout_ms) {
    char cmd[2048], line[8192], err[600];
    FILE *p;
    int st;
    /* kcat reads every partition and exits (-e) once all are at their end. */
    snprintf(err, sizeof err, "%s/kcat-%d.err", c->dir, (int)getpid());
    snprintf(cmd, sizeof cmd,
             "timeout %d kcat -C -q -b '%s' -t '%s' -o beginning -e -X log_level=3"
             " -f '%%p\\t%%o\\t%%S\\t%%k\\t%%h\\n' 2>'%s'",
             (int)(timeout_ms * th_mult() / 1000) + 1, c->direct, topic, err);
    memset(out, 0, sizeof *out);
    p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "cluster: cannot run %s", cmd);
    while (fgets(line, sizeof line, p))
        push_line(out, line);
    st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cluster: `%s` exited %d after %zu messages (see %s)", cmd,
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, out->n, err);
}
