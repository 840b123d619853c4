#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "xalloc.h"

#define WATCHDOG_CHECK_MS 100

int obx_health_write(const char *path, const obx_health_t *h, char *errstr, size_t errsize) {
    char tmp[4096 + 8], line[256];
    int fd, n, rc = -1;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(errstr, errsize, "%s: path too long", path);
        return -1;
    }
    n = snprintf(line, sizeof line,
                 "pid=%ld tick_ms=%" PRId64 " pg_ms=%" PRId64 " kafka_ms=%" PRId64 " role=%s state=%s\n",
                 h->pid, h->tick_ms, h->pg_ms, h->kafka_ms, h->role, h->state);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errstr, errsize, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    errno = 0;
    if (write(fd, line, (size_t)n) != n)
        snprintf(errstr, errsize, "%s: %s", tmp, errno ? strerror(errno) : "short write");
    else if (rename(tmp, path) != 0)
        snprintf(errstr, errsize, "%s: %s", path, strerror(errno));
    else
        rc = 0;
    close(fd);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

int obx_health_read(const char *path, obx_health_t *h, char *errstr, size_t errsize) {
    char line[256];
    FILE *f = fopen(path, "r");
    int ok;

    if (!f) {
        snprintf(errstr, errsize, "%s: %s%s", path, strerror(errno),
                 errno == ENOENT ? " (is the relay running with this health.file?)" : "");
        return -1;
    }
    memset(h, 0, sizeof *h);
    ok = fgets(line, sizeof line, f) &&
         sscanf(line, "pid=%ld tick_ms=%" SCNd64 " pg_ms=%" SCNd64 " kafka_ms=%" SCNd64 " role=%15s state=%15s",
                &h->pid, &h->tick_ms, &h->pg_ms, &h->kafka_ms, h->role, h->state) == 6;
    fclose(f);
    if (!ok) {
        snprintf(errstr, errsize, "%s: not a health record", path);
        return -1;
    }
    return 0;
}

/* "0.2s", or "never" for a time that has not happened. */
static const char *age(char buf[32], int64_t at, int64_t now) {
    if (at <= 0)
        snprintf(buf, 32, "never");
    else
        snprintf(buf, 32, "%.1fs", (double)(now - at) / 1000.0);
    return buf;
}

int obx_health_judge(const obx_health_t *h, int64_t now, int64_t max_age_ms, obx_health_mode_t mode,
                     char *why, size_t whysize) {
    char a[32], b[32], c[32];
    double limit = (double)max_age_ms / 1000.0;

    if (now - h->tick_ms > max_age_ms) {
        snprintf(why, whysize, "the loop last turned %s ago (limit %.0fs): stuck", age(a, h->tick_ms, now),
                 limit);
        return 1;
    }
    if (mode != OBX_HEALTH_LIVE) {
        if (strcmp(h->role, "disconnected") == 0) {
            snprintf(why, whysize, "not connected to PostgreSQL (last answer %s%s)", age(a, h->pg_ms, now),
                     h->pg_ms > 0 ? " ago" : "");
            return 1;
        }
        if (h->pg_ms <= 0 || now - h->pg_ms > max_age_ms) {
            snprintf(why, whysize, "PostgreSQL last answered %s%s (limit %.0fs)", age(a, h->pg_ms, now),
                     h->pg_ms > 0 ? " ago" : "", limit);
            return 1;
        }
    }
    if (mode == OBX_HEALTH_FULL && strcmp(h->role, "leader") == 0 &&
        (h->kafka_ms <= 0 || now - h->kafka_ms > max_age_ms)) {
        snprintf(why, whysize, "no Kafka broker up %s%s (limit %.0fs)", h->kafka_ms > 0 ? "for " : "since start",
                 h->kafka_ms > 0 ? age(a, h->kafka_ms, now) : "", limit);
        return 1;
    }
    snprintf(why, whysize, "role=%s state=%s loop=%s postgres=%s kafka=%s", h->role, h->state,
             age(a, h->tick_ms, now), age(b, h->pg_ms, now), age(c, h->kafka_ms, now));
    return 0;
}

struct obx_health_watchdog {
    pthread_t thread;
    int64_t timeout_ms;
    _Atomic int64_t tick;
    atomic_int stop;
};

static void *watch(void *arg) {
    obx_health_watchdog_t *w = arg;
    const struct timespec nap = {0, WATCHDOG_CHECK_MS * 1000000L};

    while (!atomic_load(&w->stop)) {
        int64_t since = obx_clock_ms() - atomic_load(&w->tick);
        if (since > w->timeout_ms) {
            /* The loop may be stuck writing to stderr itself: log only if
             * the line cannot block, and exit either way. */
            struct pollfd p = {.fd = STDERR_FILENO, .events = POLLOUT};
            if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT))
                OBX_LOG(OBX_LOG_ERROR, "loop_stuck",
                        "the relay's loop has not turned; exiting so that a standby can take over",
                        KI("stuck_ms", since), KI("stuck_timeout_ms", w->timeout_ms));
            _exit(1);
        }
        nanosleep(&nap, NULL);
    }
    return NULL;
}

obx_health_watchdog_t *obx_health_watchdog_start(int64_t timeout_ms, char *errstr, size_t errsize) {
    obx_health_watchdog_t *w = obx_xcalloc(1, sizeof *w);
    int err;

    w->timeout_ms = timeout_ms;
    atomic_init(&w->tick, obx_clock_ms());
    atomic_init(&w->stop, 0);
    err = pthread_create(&w->thread, NULL, watch, w);
    if (err != 0) {
        snprintf(errstr, errsize, "pthread_create: %s", strerror(err));
        free(w);
        return NULL;
    }
    return w;
}

void obx_health_watchdog_tick(obx_health_watchdog_t *w, int64_t now) {
    if (w)
        atomic_store(&w->tick, now);
}

void obx_health_watchdog_stop(obx_health_watchdog_t *w) {
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    free(w);
}
