/* The programs' one signal set-up: SIGTERM, SIGINT and SIGHUP go to
 * handler (which only sets a flag or writes to a pipe), SIGPIPE is ignored
 * (a closed socket shows as an error where it is written). */
#ifndef OBX_SIGNALS_H
#define OBX_SIGNALS_H

void obx_signals_install(void (*handler)(int));

#endif
