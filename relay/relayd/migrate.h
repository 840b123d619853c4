/* `outbox-relay migrate`: applies the embedded schema/ SQL, then installs the
 * configured outbox table if it is not the default public.outbox. */
#ifndef OBX_MIGRATE_H
#define OBX_MIGRATE_H

#include "config.h"

/* Returns 0, or -1 with errstr. */
int obx_migrate_run(const obx_config_t *cfg, char *errstr, size_t errsize);

#endif
