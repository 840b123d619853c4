/* The relay daemon's event loop: claim unsent outbox rows, produce them,
 * mark them sent on acknowledgement, sleep on LISTEN when idle. */
#ifndef OBX_RELAY_H
#define OBX_RELAY_H

#include "config.h"

/* Runs until SIGTERM/SIGINT (graceful: in-flight acknowledged and marked, up
 * to shutdown_timeout_ms) or a second signal (immediate). cfg stays owned by
 * the caller; SIGHUP reloads its reloadable settings from cfg->path.
 * Returns the process exit code. */
int obx_relay_run(obx_config_t *cfg);

#endif
