/* Preloaded (LD_PRELOAD) into the obx-mock-kafka that obx-bench starts, and
 * nowhere else: sets TCP_NODELAY on every connection the mock broker accepts.
 *
 * librdkafka's mock cluster leaves Nagle's algorithm on for its broker
 * sockets, while a real Kafka broker turns it off. With Nagle on, a response
 * written while an earlier one is still unacknowledged waits for the
 * client's delayed ACK, about 40 ms on Linux: a relay cycle whose messages
 * go to three or more partitions then takes ~48 ms instead of ~6 ms, and the
 * latency figures would measure the mock. The mock accepts with accept(). */
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static accept_fn real;
    int one = 1, s;

    if (!real)
        real = (accept_fn)dlsym(RTLD_NEXT, "accept");
    s = real(fd, addr, len);
    if (s >= 0)
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}
