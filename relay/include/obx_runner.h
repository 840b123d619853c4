/* outbox-relay consumer runner: a complete consuming service around one
 * handler. It owns the Kafka consumer (group membership, rebalances), seeks
 * each assigned partition to the offset stored in PostgreSQL, applies
 * messages in batches of one transaction each through the dedup module, and
 * retries a failed batch (database down, serialization failure) with backoff
 * without skipping anything.
 *
 * A service's main is one call:
 *   int main(int argc, char **argv) {
 *       static const obx_handler_t h = {.apply = my_effect};
 *       return obx_runner_main(argc, argv, "obx-stock-consumer", &h);
 *   }
 * Command line: -c FILE (libconfig, see config/consumer.conf), --check (config,
 * PostgreSQL and the inbox tables, the brokers and the subscribed topics; one
 * line per check on stdout, exit 0 or 1), --help, --version. */
#ifndef OBX_RUNNER_H
#define OBX_RUNNER_H

#include "obx_dedup.h"

typedef struct {
    obx_effect_fn apply;  /* effect of an ordinary event */
    obx_effect_fn undo;   /* effect of a compensating event (one with a "compensates"
                             header) when its original was applied; NULL: such
                             events are treated as ordinary ones */
    void *arg;            /* passed to all three */
    obx_batch_effect_fn apply_batch; /* optional: apply for many new events at once
                                        (see obx_batch_effect_fn); NULL: apply runs
                                        on each event */
} obx_handler_t;

/* Returns the process exit code: 0 after SIGTERM/SIGINT, 1 on a fatal error,
 * 2 on a bad command line or config. The handler is borrowed for the run. */
int obx_runner_main(int argc, char **argv, const char *program, const obx_handler_t *h);

#endif
