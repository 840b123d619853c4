/* obx-faultproxy: the TCP proxy between Kafka clients and the brokers of the
 * test cluster (tests/kafka.sh cluster-start), so that tests can break the
 * network the way a real one breaks, per broker, at run time.
 *
 *   obx-faultproxy CTLPORT LISTEN:UPSTREAM[:raw] [LISTEN:UPSTREAM[:raw]...]
 *
 * A raw route carries another protocol (PostgreSQL's): its bytes are not
 * read as Kafka frames, so only pass, reset, down, latency and bandwidth
 * apply to it.
 * Route N (from 1, in argument order) is broker node N. Control: connect to
 * 127.0.0.1:CTLPORT, send one line, read one reply line ("ok" or "error: ...").
 *   N|all pass            forward everything (clears the faults below)
 *   N|all swallow         forward requests, drop the broker's responses: the
 *                         requests are applied but the client never learns it
 *   N|all reset           forward half of each response chunk, then reset both
 *                         connections (RST): responses cut mid-way
 *   N|all down            reset open connections, reset new ones at once
 *   N|all latency MS      delay every chunk, both ways, by MS (0: off)
 *   N|all bandwidth BPS   at most BPS bytes/s each way for the route (0: off)
 *   N|all drop K          drop the route's next K Produce requests (api_key 0)
 *                         from the clients, whole frames; everything else
 *                         passes. The broker never sees them, so never answers;
 *                         later requests on the connection are processed. Each
 *                         drop is logged (route, correlation id, size).
 *   N|all refuse K [CODE] refuse the route's next K Produce requests: they are
 *                         not forwarded, and the proxy answers each with a
 *                         ProduceResponse carrying error CODE (default 19,
 *                         NOT_ENOUGH_REPLICAS: retriable, nothing written; 45,
 *                         OUT_OF_ORDER_SEQUENCE_NUMBER, is what a broker
 *                         answers a sequence gap with) for its topic and
 *                         partition (Produce v3-v8, one topic, one partition:
 *                         what librdkafka sends). The answer is held until the
 *                         next Produce request on that connection has been
 *                         written to the broker (or 1 s passed), then put into
 *                         the broker->client stream at once, at a response
 *                         frame boundary, so ahead of the broker's answer to
 *                         that next request: the widest window for a client
 *                         to have sent a second request before it learns the
 *                         first one failed. Each refusal and each injected
 *                         answer is logged (route, correlation id, topic,
 *                         partition).
 * One process, one thread, one poll loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUTES 8
#define BUF_SZ (256 * 1024)
#define MAX_MARKS 128

enum mode { M_PASS, M_SWALLOW, M_RESET, M_DOWN };
static const char *const mode_names[] = {"pass", "swallow", "reset", "down"};

/* Bytes one way through a connection. Latency: each chunk read gets a mark
 * (stream position of its end, time it may leave); bytes up to `released`
 * may be written. */
typedef struct {
    char *buf;
    size_t off, len;
    uint64_t in_total, out_total, released;
    struct { uint64_t end; int64_t ready_ms; } marks[MAX_MARKS];
    int mhead, mcount;
} pipe_t;

/* The client's request framing (int32 size, then int16 api_key, int16
 * api_version, int32 correlation_id, ...), followed on every connection
 * from its first byte, since chunks split frames anywhere: the frame's
 * first bytes are held in hdr until its api key and correlation id are
 * known, then the rest (left) passes or is dropped with them. */
#define REQ_HDR 12
#define REFUSE_CAP 1024 /* bytes of a refused request kept: header, topic, partition */
typedef struct {
    unsigned char hdr[REQ_HDR];
    size_t hlen;
    uint64_t left;
    int dropping, refusing;
    unsigned char cap[REFUSE_CAP]; /* the refused frame's first bytes */
    size_t caplen;
} framer_t;

/* The broker's response framing (int32 size, then the frame), followed so
 * that injected answers go in between two responses, never into one. */
typedef struct {
    unsigned char hdr[4];
    size_t hlen;
    uint64_t left;
} rframer_t;

/* An answer to a refused request, waiting for its moment. */
#define MAX_PEND 8
#define RESP_MAX 400 /* a ProduceResponse for a topic name of up to 249 bytes */
#define DOWN_RESERVE (MAX_PEND * RESP_MAX)
typedef struct {
    unsigned char bytes[RESP_MAX];
    size_t len;
    int32_t corr;
    int code;
    int64_t deadline_ms; /* injected by then whatever happened */
    uint64_t trigger;    /* 0, or the up-stream end of the next Produce request */
} pending_t;

typedef struct {
    int route, cfd, ufd, connecting, dead;
    pipe_t up, down; /* up: client to broker; down: broker to client */
    framer_t req;    /* of the up stream */
    rframer_t resp;  /* of the down stream */
    pending_t pend[MAX_PEND];
    int npend;
} conn_t;

/* Token bucket for one direction of a route. */
typedef struct {
    double tokens;
} bucket_t;

typedef struct {
    int lfd, upstream_port;
    int raw; /* not Kafka: no framing */
    enum mode mode;
    int latency_ms;
    long bandwidth;
    long drop; /* Produce requests still to drop */
    long refuse; /* Produce requests still to refuse */
    int refuse_code; /* the Kafka error code they are answered with */
    bucket_t up, down;
} route_t;

static route_t routes[MAX_ROUTES];
static int nroutes;
static conn_t **conns;
static size_t nconns, capconns;
static volatile sig_atomic_t stop;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

static int nonblock(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int listen_on(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        fprintf(stderr, "obx-faultproxy: listen on %d: %s\n", port, strerror(errno));
        exit(1);
    }
    nonblock(fd);
    return fd;
}

/* Closes with RST instead of FIN: the peer sees a reset connection. */
static void close_reset(int fd) {
    struct linger l = {1, 0};
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static void conn_kill(conn_t *c, int reset) {
    if (c->dead)
        return;
    if (reset) {
        close_reset(c->cfd);
        close_reset(c->ufd);
    } else {
        close(c->cfd);
        if (c->ufd >= 0)
            close(c->ufd);
    }
    c->dead = 1;
}

static void accept_client(int r) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)routes[r].upstream_port)};
    int cfd = accept(routes[r].lfd, NULL, NULL), ufd, one = 1;
    conn_t *c;
    if (cfd < 0)
        return;
    if (routes[r].mode == M_DOWN) {
        close_reset(cfd);
        return;
    }
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ufd = socket(AF_INET, SOCK_STREAM, 0);
    nonblock(cfd);
    nonblock(ufd);
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(ufd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(cfd);
        close(ufd);
        return;
    }
    c = calloc(1, sizeof *c);
    c->route = r;
    c->cfd = cfd;
    c->ufd = ufd;
    c->connecting = 1;
    c->up.buf = malloc(BUF_SZ);
    c->down.buf = malloc(BUF_SZ);
    if (nconns == capconns) {
        capconns = capconns ? capconns * 2 : 64;
        conns = realloc(conns, capconns * sizeof *conns);
    }
    conns[nconns++] = c;
}

/* Releases the chunks whose delay has passed; returns ms until the next one
 * (or -1 when none is waiting). */
static int64_t pipe_release(pipe_t *p, int64_t now) {
    while (p->mcount > 0 && p->marks[p->mhead].ready_ms <= now) {
        p->released = p->marks[p->mhead].end;
        p->mhead = (p->mhead + 1) % MAX_MARKS;
        p->mcount--;
    }
    return p->mcount > 0 ? p->marks[p->mhead].ready_ms - now : -1;
}

static void pipe_append(pipe_t *p, const char *data, size_t n, int latency_ms, int64_t now) {
    if (p->off + p->len + n > BUF_SZ) {
        memmove(p->buf, p->buf + p->off, p->len);
        p->off = 0;
    }
    memcpy(p->buf + p->off + p->len, data, n);
    p->len += n;
    p->in_total += n;
    /* Without latency and nothing delayed ahead, bytes leave at once; with
     * some delayed ahead they queue behind them to keep the stream's order. */
    if (latency_ms <= 0 && p->mcount == 0) {
        p->released = p->in_total;
    } else if (p->mcount == MAX_MARKS) {
        p->marks[(p->mhead + p->mcount - 1) % MAX_MARKS].end = p->in_total;
    } else {
        int i = (p->mhead + p->mcount++) % MAX_MARKS;
        p->marks[i].end = p->in_total;
        p->marks[i].ready_ms = now + (latency_ms > 0 ? latency_ms : 0);
    }
}

static size_t pipe_sendable(const pipe_t *p, const bucket_t *b, long bandwidth) {
    size_t n = (size_t)(p->released - p->out_total);
    if (bandwidth > 0 && (double)n > b->tokens)
        n = b->tokens > 0 ? (size_t)b->tokens : 0;
    return n;
}

/* Writes what may leave from p to fd; returns 0 on a broken connection. */
static int pipe_flush(pipe_t *p, int fd, bucket_t *b, long bandwidth) {
    size_t n = pipe_sendable(p, b, bandwidth);
    ssize_t w;
    if (n == 0)
        return 1;
    w = write(fd, p->buf + p->off, n);
    if (w < 0)
        return errno == EAGAIN || errno == EINTR;
    p->off += (size_t)w;
    p->len -= (size_t)w;
    p->out_total += (uint64_t)w;
    if (bandwidth > 0)
        b->tokens -= (double)w;
    if (p->len == 0)
        p->off = 0;
    return 1;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void put16(unsigned char *b, int v) {
    b[0] = (unsigned char)(v >> 8);
    b[1] = (unsigned char)v;
}

static void put32(unsigned char *b, int32_t v) {
    uint32_t u = (uint32_t)v;
    b[0] = (unsigned char)(u >> 24);
    b[1] = (unsigned char)(u >> 16);
    b[2] = (unsigned char)(u >> 8);
    b[3] = (unsigned char)u;
}

/* Skips a (nullable) int16-length string at *off of b[0..n); returns its
 * length (-1: null) or -2 when it does not fit. */
static int skip_str(const unsigned char *b, size_t n, size_t *off, size_t *start) {
    int len;
    if (*off + 2 > n)
        return -2;
    len = (int16_t)(b[*off] << 8 | b[*off + 1]);
    *off += 2;
    *start = *off;
    if (len > 0) {
        if (*off + (size_t)len > n)
            return -2;
        *off += (size_t)len;
    }
    return len;
}

/* The client's refused Produce request is whole in c->req.cap (as far as
 * REFUSE_CAP): builds the answer with the route's error code and queues it. */
static void refused(conn_t *c, int64_t now) {
    framer_t *f = &c->req;
    const unsigned char *b = f->cap;
    size_t n = f->caplen, off = 12, tstart = 0, s;
    int ver = n >= 8 ? (b[6] << 8 | b[7]) : -1, tlen = -2;
    int32_t corr = n >= 12 ? (int32_t)be32(b + 8) : -1, part = -1;
    pending_t *p = &c->pend[c->npend];
    unsigned char *r = p->bytes;
    size_t k = 4;

    f->refusing = 0;
    /* Produce v3-v8: client_id, transactional_id, acks, timeout, one topic
     * (count, name), one partition (count, index), records. */
    if (ver >= 3 && ver <= 8 && skip_str(b, n, &off, &s) >= -1 && skip_str(b, n, &off, &s) >= -1 &&
        off + 10 <= n && be32(b + off + 6) == 1) {
        off += 10;
        tlen = skip_str(b, n, &off, &tstart);
        if (tlen > 0 && tlen <= 249 && off + 8 <= n && be32(b + off) == 1)
            part = (int32_t)be32(b + off + 4);
        else
            tlen = -2;
    }
    if (tlen < 0) {
        fprintf(stderr,
                "obx-faultproxy: route %d could not read the refused Produce request (version %d, correlation"
                " id %d): dropped, unanswered\n",
                c->route + 1, ver, corr);
        return;
    }
    put32(r + k, corr), k += 4;
    put32(r + k, 1), k += 4;
    put16(r + k, tlen), k += 2;
    memcpy(r + k, b + tstart, (size_t)tlen), k += (size_t)tlen;
    put32(r + k, 1), k += 4;
    put32(r + k, part), k += 4;
    put16(r + k, routes[c->route].refuse_code), k += 2;
    memset(r + k, 0xff, 8), k += 8; /* base_offset -1 */
    if (ver >= 2)
        memset(r + k, 0xff, 8), k += 8; /* log_append_time -1 */
    if (ver >= 5)
        memset(r + k, 0xff, 8), k += 8; /* log_start_offset -1 */
    if (ver >= 8) {
        put32(r + k, 0), k += 4;  /* record_errors: none */
        put16(r + k, -1), k += 2; /* error_message: null */
    }
    put32(r + k, 0), k += 4; /* throttle_time_ms */
    put32(r, (int32_t)(k - 4));
    p->len = k;
    p->corr = corr;
    p->code = routes[c->route].refuse_code;
    p->deadline_ms = now + 1000;
    p->trigger = 0;
    c->npend++;
    fprintf(stderr,
            "obx-faultproxy: route %d refused a Produce request (correlation id %d, v%d, %.*s [%d], %zu bytes;"
            " %ld more to refuse): error %d held until the next Produce request is forwarded\n",
            c->route + 1, corr, ver, tlen, (const char *)b + tstart, part, n, routes[c->route].refuse, p->code);
}

/* Puts the due answers to refused requests into c->down; only called at a
 * response frame boundary. */
static void inject_due(conn_t *c, int latency_ms, int64_t now) {
    while (c->npend > 0) {
        pending_t *p = &c->pend[0];
        int forwarded = p->trigger != 0 && c->up.out_total >= p->trigger;
        if (!forwarded && now < p->deadline_ms)
            return;
        if (c->down.len + p->len > BUF_SZ)
            return;
        pipe_append(&c->down, (const char *)p->bytes, p->len, latency_ms, now);
        fprintf(stderr,
                "obx-faultproxy: route %d injected error %d for correlation id %d (%s)\n",
                c->route + 1, p->code, p->corr,
                forwarded ? "the next Produce request was forwarded" : "1 s passed, no Produce request followed");
        memmove(&c->pend[0], &c->pend[1], (size_t)(c->npend - 1) * sizeof *c->pend);
        c->npend--;
    }
}

/* Passes n broker bytes through the response framer into c->down (or
 * nowhere when discard), injecting due answers between two responses. */
static void down_frames(conn_t *c, const char *data, size_t n, int latency_ms, int discard, int64_t now) {
    rframer_t *f = &c->resp;
    while (n > 0) {
        size_t k;
        if (f->left > 0) {
            k = n < f->left ? n : (size_t)f->left;
            if (!discard)
                pipe_append(&c->down, data, k, latency_ms, now);
            data += k;
            n -= k;
            f->left -= k;
            continue;
        }
        if (f->hlen == 0)
            inject_due(c, latency_ms, now);
        k = 4 - f->hlen < n ? 4 - f->hlen : n;
        memcpy(f->hdr + f->hlen, data, k);
        f->hlen += k;
        data += k;
        n -= k;
        if (f->hlen == 4) {
            f->left = be32(f->hdr);
            f->hlen = 0;
            if (!discard)
                pipe_append(&c->down, (const char *)f->hdr, 4, latency_ms, now);
        }
    }
}

/* Reads the broker's bytes into c->down through the response framer,
 * keeping room for the held answers; returns 0 on EOF or error. */
static int down_fill(conn_t *c, int latency_ms, int discard, int64_t now) {
    char tmp[65536];
    size_t room = c->down.len + DOWN_RESERVE + 4 < BUF_SZ ? BUF_SZ - c->down.len - DOWN_RESERVE - 4 : 0;
    ssize_t n;
    if (room == 0 && !discard)
        return 1;
    n = read(c->ufd, tmp, discard || room > sizeof tmp ? sizeof tmp : room);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (routes[c->route].raw && !discard)
        pipe_append(&c->down, tmp, (size_t)n, latency_ms, now);
    else if (!routes[c->route].raw)
        down_frames(c, tmp, (size_t)n, latency_ms, discard, now);
    return 1;
}

/* Passes n client bytes through the request framer into c->up: whole
 * frames of Produce requests are dropped while the route has drops left. */
static void up_frames(conn_t *c, const char *data, size_t n, int latency_ms, int64_t now) {
    framer_t *f = &c->req;
    route_t *rt = &routes[c->route];
    while (n > 0) {
        size_t want, k;
        if (f->left > 0) { /* inside a frame whose fate is decided */
            k = n < f->left ? n : (size_t)f->left;
            if (f->refusing) {
                size_t keep = k < REFUSE_CAP - f->caplen ? k : REFUSE_CAP - f->caplen;
                memcpy(f->cap + f->caplen, data, keep);
                f->caplen += keep;
            } else if (!f->dropping) {
                pipe_append(&c->up, data, k, latency_ms, now);
            }
            data += k;
            n -= k;
            f->left -= k;
            if (f->left == 0 && f->refusing)
                refused(c, now);
            continue;
        }
        /* A frame's start: its size first, then up to REQ_HDR bytes of it. */
        want = 4;
        if (f->hlen >= 4) {
            uint64_t total = 4 + (uint64_t)be32(f->hdr);
            want = total < REQ_HDR ? (size_t)total : REQ_HDR;
        }
        if (f->hlen < want) {
            k = want - f->hlen < n ? want - f->hlen : n;
            memcpy(f->hdr + f->hlen, data, k);
            f->hlen += k;
            data += k;
            n -= k;
            if (f->hlen < want || want == 4)
                continue;
        }
        {
            uint64_t total = 4 + (uint64_t)be32(f->hdr);
            int api_key = f->hlen >= 6 ? (f->hdr[4] << 8 | f->hdr[5]) : -1;
            f->left = total - f->hlen;
            f->dropping = api_key == 0 && rt->drop > 0;
            f->refusing = !f->dropping && api_key == 0 && rt->refuse > 0 && c->npend < MAX_PEND;
            if (f->refusing) {
                rt->refuse--;
                memcpy(f->cap, f->hdr, f->hlen);
                f->caplen = f->hlen;
                if (f->left == 0)
                    refused(c, now);
            } else if (f->dropping) {
                rt->drop--;
                fprintf(stderr,
                        "obx-faultproxy: route %d dropped a Produce request (correlation id %d, %llu bytes,"
                        " %ld more to drop)\n",
                        c->route + 1, f->hlen >= REQ_HDR ? (int32_t)be32(f->hdr + 8) : -1,
                        (unsigned long long)total, rt->drop);
            } else {
                pipe_append(&c->up, (const char *)f->hdr, f->hlen, latency_ms, now);
                /* A Produce request that goes to the broker: the held
                 * answers are due once its last byte has been written. */
                if (api_key == 0)
                    for (int i = 0; i < c->npend; i++)
                        if (c->pend[i].trigger == 0)
                            c->pend[i].trigger = c->up.in_total + f->left;
            }
            f->hlen = 0;
        }
    }
}

/* Reads the client's bytes into c->up through the framer; returns 0 on EOF
 * or error. The framer may release up to REQ_HDR bytes it held from an
 * earlier read: room is kept for them (the loop polls only then). */
static int up_fill(conn_t *c, int latency_ms, int64_t now) {
    char tmp[65536];
    size_t room = c->up.len + REQ_HDR < BUF_SZ ? BUF_SZ - c->up.len - REQ_HDR : 0;
    ssize_t n;
    if (room == 0)
        return 1;
    n = read(c->cfd, tmp, room > sizeof tmp ? sizeof tmp : room);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (routes[c->route].raw)
        pipe_append(&c->up, tmp, (size_t)n, latency_ms, now);
    else
        up_frames(c, tmp, (size_t)n, latency_ms, now);
    return 1;
}

/* The broker answered while the route resets: half of the chunk reaches the
 * client, then both connections are reset. */
static void reset_mid_response(conn_t *c) {
    char tmp[65536];
    ssize_t n = read(c->ufd, tmp, sizeof tmp);
    if (n > 1 && write(c->cfd, tmp, (size_t)n / 2) < 0)
        n = 0;
    conn_kill(c, 1);
}

static void set_mode(int r, enum mode m) {
    routes[r].mode = m;
    if (m != M_DOWN)
        return;
    for (size_t i = 0; i < nconns; i++)
        if (conns[i]->route == r)
            conn_kill(conns[i], 1);
}

/* Applies one control line to route r; returns an error text or NULL. */
/* code: the error code given to refuse (1..32767), or -1. */
static const char *apply(int r, const char *verb, long arg, int has_arg, long code) {
    if (code > 0 && strcmp(verb, "refuse") != 0)
        return "takes one number";
    if (strcmp(verb, "latency") == 0 || strcmp(verb, "bandwidth") == 0 || strcmp(verb, "drop") == 0 ||
        strcmp(verb, "refuse") == 0) {
        if (!has_arg || arg < 0)
            return "needs a number >= 0";
        if (verb[0] == 'r') {
            routes[r].refuse = arg;
            routes[r].refuse_code = code > 0 ? (int)code : 19;
        } else if (verb[0] == 'l')
            routes[r].latency_ms = (int)arg;
        else if (verb[0] == 'b')
            routes[r].bandwidth = arg;
        else
            routes[r].drop = arg;
        return NULL;
    }
    for (int m = 0; m < (int)(sizeof mode_names / sizeof *mode_names); m++) {
        if (strcmp(verb, mode_names[m]) == 0) {
            if (m == M_PASS) {
                routes[r].latency_ms = 0;
                routes[r].bandwidth = 0;
                routes[r].drop = 0;
                routes[r].refuse = 0;
            }
            set_mode(r, (enum mode)m);
            return NULL;
        }
    }
    return "unknown fault";
}

static void control(int lfd) {
    char line[256] = "", target[16], verb[32], reply[300];
    const char *err = NULL;
    struct timeval tv = {1, 0};
    long arg = 0, code = -1;
    ssize_t n;
    int fd = accept(lfd, NULL, NULL), fields, first = 0, last = -1;
    if (fd < 0)
        return;
    /* The client sends its line right after connecting; waiting for it here
     * (at most 1 s) keeps the loop simple. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    n = read(fd, line, sizeof line - 1);
    line[n > 0 ? n : 0] = '\0';
    if (n <= 0) { /* a readiness probe (tests/kafka.sh): connected, said nothing */
        close(fd);
        return;
    }
    fields = sscanf(line, "%15s %31s %ld %ld", target, verb, &arg, &code);
    if (fields < 2) {
        err = "usage: N|all pass|swallow|reset|down|latency MS|bandwidth BPS|drop K|refuse K [CODE]";
    } else if (fields == 4 && (code < 1 || code > 32767)) {
        err = "the error code must be 1..32767";
    } else if (strcmp(target, "all") == 0) {
        first = 0;
        last = nroutes - 1;
    } else {
        first = last = atoi(target) - 1;
        if (first < 0 || first >= nroutes)
            err = "no such route";
    }
    for (int r = first; !err && r <= last; r++)
        err = apply(r, verb, arg, fields >= 3, fields == 4 ? code : -1);
    snprintf(reply, sizeof reply, err ? "error: %s\n" : "ok\n", err);
    if (write(fd, reply, strlen(reply)) < 0)
        err = "reply lost";
    close(fd);
    line[strcspn(line, "\n")] = '\0';
    fprintf(stderr, "obx-faultproxy: %s -> %s", line, reply);
}

static void refill(int64_t elapsed_ms) {
    for (int r = 0; r < nroutes; r++) {
        /* A burst of at most 100 ms worth of bytes. */
        double add = (double)routes[r].bandwidth * (double)elapsed_ms / 1000.0,
               cap = (double)routes[r].bandwidth / 10.0 + 1;
        bucket_t *b[2] = {&routes[r].up, &routes[r].down};
        for (int i = 0; i < 2; i++)
            b[i]->tokens = b[i]->tokens + add > cap ? cap : b[i]->tokens + add;
    }
}

static void reap(void) {
    size_t j = 0;
    for (size_t i = 0; i < nconns; i++) {
        if (conns[i]->dead) {
            free(conns[i]->up.buf);
            free(conns[i]->down.buf);
            free(conns[i]);
        } else {
            conns[j++] = conns[i];
        }
    }
    nconns = j;
}

static void conn_events(conn_t *c, short cev, short uev, int64_t now) {
    route_t *rt = &routes[c->route];
    if (c->connecting && uev) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_kill(c, 0);
            return;
        }
        c->connecting = 0;
        return;
    }
    if (c->connecting)
        return;
    if ((cev & (POLLIN | POLLHUP | POLLERR)) && !up_fill(c, rt->latency_ms, now)) {
        conn_kill(c, 0);
        return;
    }
    if (uev & (POLLIN | POLLHUP | POLLERR)) {
        if (rt->mode == M_RESET) {
            reset_mid_response(c);
            return;
        }
        if (!down_fill(c, rt->latency_ms, rt->mode == M_SWALLOW, now)) {
            conn_kill(c, 0);
            return;
        }
    }
    if (!pipe_flush(&c->up, c->ufd, &rt->up, rt->bandwidth)) {
        conn_kill(c, 0);
        return;
    }
    /* Answers to refused requests whose moment came (the next Produce
     * request was just written, or 1 s passed) go out now when no
     * response is half through. */
    if (c->npend > 0 && c->resp.hlen == 0 && c->resp.left == 0)
        inject_due(c, rt->latency_ms, now);
    if (!pipe_flush(&c->down, c->cfd, &rt->down, rt->bandwidth))
        conn_kill(c, 0);
}

static void loop(int ctl) {
    struct pollfd *pfd = NULL;
    size_t cap = 0;
    int64_t last = now_ms();
    while (!stop) {
        size_t n = 0, need = 1 + (size_t)nroutes + 2 * nconns;
        int64_t now = now_ms(), wait_ms = 1000;
        if (need > cap) {
            cap = need * 2;
            pfd = realloc(pfd, cap * sizeof *pfd);
        }
        refill(now - last);
        last = now;
        pfd[n++] = (struct pollfd){ctl, POLLIN, 0};
        for (int r = 0; r < nroutes; r++)
            pfd[n++] = (struct pollfd){routes[r].lfd, POLLIN, 0};
        for (size_t i = 0; i < nconns; i++) {
            conn_t *c = conns[i];
            route_t *rt = &routes[c->route];
            int64_t t1 = pipe_release(&c->up, now), t2 = pipe_release(&c->down, now);
            short cev = 0, uev = 0;
            if (t1 >= 0 && t1 < wait_ms)
                wait_ms = t1;
            if (t2 >= 0 && t2 < wait_ms)
                wait_ms = t2;
            if (c->npend > 0) { /* a held answer's 1 s deadline (10 ms steps once past it) */
                int64_t t3 = c->pend[0].deadline_ms - now;
                t3 = t3 > 10 ? t3 : 10;
                wait_ms = t3 < wait_ms ? t3 : wait_ms;
            }
            if (c->connecting) {
                uev = POLLOUT;
            } else {
                if (c->up.len + REQ_HDR < BUF_SZ)
                    cev |= POLLIN;
                if (c->down.len + DOWN_RESERVE + 4 < BUF_SZ || rt->mode != M_PASS)
                    uev |= POLLIN;
                if (pipe_sendable(&c->down, &rt->down, rt->bandwidth))
                    cev |= POLLOUT;
                if (pipe_sendable(&c->up, &rt->up, rt->bandwidth))
                    uev |= POLLOUT;
                /* Data held back by the bandwidth limit: wake for new tokens. */
                if (rt->bandwidth > 0 && (c->up.released > c->up.out_total ||
                                          c->down.released > c->down.out_total) && wait_ms > 10)
                    wait_ms = 10;
            }
            pfd[n++] = (struct pollfd){c->cfd, cev, 0};
            pfd[n++] = (struct pollfd){c->ufd, uev, 0};
        }
        if (poll(pfd, n, (int)wait_ms) < 0 && errno != EINTR) {
            perror("obx-faultproxy: poll");
            exit(1);
        }
        now = now_ms();
        /* Connections first: accepting appends to conns, past the pollfds. */
        for (size_t i = 0, k = 1 + (size_t)nroutes; i < nconns && k < n; i++, k += 2)
            conn_events(conns[i], pfd[k].revents, pfd[k + 1].revents, now);
        if (pfd[0].revents & POLLIN)
            control(ctl);
        for (int r = 0; r < nroutes; r++)
            if (pfd[1 + r].revents & POLLIN)
                accept_client(r);
        reap();
    }
    free(pfd);
}

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_term};
    int ctl;
    if (argc < 3 || argc - 2 > MAX_ROUTES) {
        fprintf(stderr, "usage: obx-faultproxy CTLPORT LISTEN:UPSTREAM[:raw] [LISTEN:UPSTREAM[:raw]...] (at most %d)\n",
                MAX_ROUTES);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 2; i < argc; i++) {
        int lport, uport, end = 0;
        if (sscanf(argv[i], "%d:%d%n", &lport, &uport, &end) != 2 || (argv[i][end] && strcmp(argv[i] + end, ":raw"))) {
            fprintf(stderr, "obx-faultproxy: bad route %s (LISTEN:UPSTREAM[:raw])\n", argv[i]);
            return 2;
        }
        routes[nroutes].raw = argv[i][end] != '\0';
        routes[nroutes].lfd = listen_on(lport);
        routes[nroutes++].upstream_port = uport;
    }
    ctl = listen_on(atoi(argv[1]));
    fprintf(stderr, "obx-faultproxy: %d routes, control on %s\n", nroutes, argv[1]);
    loop(ctl);
    for (size_t i = 0; i < nconns; i++)
        conn_kill(conns[i], 0);
    reap();
    free(conns);
    return 0;
}
