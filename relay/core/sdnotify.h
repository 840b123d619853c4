/* systemd's notify protocol without libsystemd: one datagram per message to
 * the unix socket named by $NOTIFY_SOCKET (a leading '@' names an abstract
 * socket), as sd_notify(3) describes it. Outside systemd ($NOTIFY_SOCKET
 * unset) every call does nothing. */
#ifndef OBX_SDNOTIFY_H
#define OBX_SDNOTIFY_H

#include <stdint.h>

/* Sends state ("READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1", several
 * joined by newlines). Returns 1 when sent, 0 when there is no socket, -1 on
 * an error (errno set). */
int obx_sdnotify(const char *state);
/* The watchdog interval systemd expects pings within ($WATCHDOG_USEC, when
 * $WATCHDOG_PID is unset or this process), in ms; 0 when there is none. */
int64_t obx_sdnotify_watchdog_ms(void);

#endif
