/* obx-faultproxy: the TCP proxy between Kafka clients and the brokers of the
 * test cluster (tests/kafka.sh cluster-start), so that tests can break the
 * network the way a real one breaks, per broker, at run time.
 *
 *   obx-faultproxy CTLPORT LISTEN:UPSTREAM [LISTEN:UPSTREAM...]
 *
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
typedef struct {
    unsigned char hdr[REQ_HDR];
    size_t hlen;
    uint64_t left;
    int dropping;
} framer_t;

typedef struct {
    int route, cfd, ufd, connecting, dead;
    pipe_t up, down; /* up: client to broker; down: broker to client */
    framer_t req;    /* of the up stream */
} conn_t;

/* Token bucket for one direction of a route. */
typedef struct {
    double tokens;
} bucket_t;

typedef struct {
    int lfd, upstream_port;
    enum mode mode;
    int latency_ms;
    long bandwidth;
    long drop; /* Produce requests still to drop */
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

/* Reads from fd into p (or drops what it reads when discard); returns 0 on
 * EOF or error. */
static int pipe_fill(pipe_t *p, int fd, int latency_ms, int discard, int64_t now) {
    char tmp[65536];
    size_t room = BUF_SZ - p->len;
    ssize_t n = read(fd, tmp, discard || room > sizeof tmp ? sizeof tmp : room);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (!discard)
        pipe_append(p, tmp, (size_t)n, latency_ms, now);
    return 1;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
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
            if (!f->dropping)
                pipe_append(&c->up, data, k, latency_ms, now);
            data += k;
            n -= k;
            f->left -= k;
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
            if (f->dropping) {
                rt->drop--;
                fprintf(stderr,
                        "obx-faultproxy: route %d dropped a Produce request (correlation id %d, %llu bytes,"
                        " %ld more to drop)\n",
                        c->route + 1, f->hlen >= REQ_HDR ? (int32_t)be32(f->hdr + 8) : -1,
                        (unsigned long long)total, rt->drop);
            } else {
                pipe_append(&c->up, (const char *)f->hdr, f->hlen, latency_ms, now);
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
static const char *apply(int r, const char *verb, long arg, int has_arg) {
    if (strcmp(verb, "latency") == 0 || strcmp(verb, "bandwidth") == 0 || strcmp(verb, "drop") == 0) {
        if (!has_arg || arg < 0)
            return "needs a number >= 0";
        if (verb[0] == 'l')
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
    long arg = 0;
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
    fields = sscanf(line, "%15s %31s %ld", target, verb, &arg);
    if (fields < 2) {
        err = "usage: N|all pass|swallow|reset|down|latency MS|bandwidth BPS|drop K";
    } else if (strcmp(target, "all") == 0) {
        first = 0;
        last = nroutes - 1;
    } else {
        first = last = atoi(target) - 1;
        if (first < 0 || first >= nroutes)
            err = "no such route";
    }
    for (int r = first; !err && r <= last; r++)
        err = apply(r, verb, arg, fields == 3);
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
        if (!pipe_fill(&c->down, c->ufd, rt->latency_ms, rt->mode == M_SWALLOW, now)) {
            conn_kill(c, 0);
            return;
        }
    }
    if (!pipe_flush(&c->up, c->ufd, &rt->up, rt->bandwidth) ||
        !pipe_flush(&c->down, c->cfd, &rt->down, rt->bandwidth))
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
            if (c->connecting) {
                uev = POLLOUT;
            } else {
                if (c->up.len + REQ_HDR < BUF_SZ)
                    cev |= POLLIN;
                if (c->down.len < BUF_SZ || rt->mode != M_PASS)
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
        fprintf(stderr, "usage: obx-faultproxy CTLPORT LISTEN:UPSTREAM [LISTEN:UPSTREAM...] (at most %d)\n",
                MAX_ROUTES);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 2; i < argc; i++) {
        int lport, uport;
        if (sscanf(argv[i], "%d:%d", &lport, &uport) != 2) {
            fprintf(stderr, "obx-faultproxy: bad route %s (LISTEN:UPSTREAM)\n", argv[i]);
            return 2;
        }
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
