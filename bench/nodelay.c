/* Preloaded (LD_PRELOAD) into the obx-mock-kafka that obx-bench starts, and
 * nowhere else: sets TCP_NODELAY on every connection the mock accepts, as a
 * real broker does. With Nagle on, responses wait for the client's delayed
 * ACK (~40 ms) and the latency figures would measure the mock. */
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
