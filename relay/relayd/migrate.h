/* `outbox-relay migrate`: applies the embedded schema/ SQL, then installs the
 * configured outbox table if it is not the default public.outbox. With
 * retention.mode = "partitions", a table it creates is partitioned by id and
 * gets retention.partitions_ahead partitions; an existing one is left as it
 * is (converting takes an exclusive lock: the operator runs it). */
#ifndef OBX_MIGRATE_H
#define OBX_MIGRATE_H

#include "config.h"

/* Returns 0, or -1 with errstr. */
int obx_migrate_run(const obx_config_t *cfg, char *errstr, size_t errsize);

#endif
