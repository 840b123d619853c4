/* outbox-relay dedup module: exactly-once effects on the consumer side.
 *
 * Kafka delivers at least once; the relay re-publishes after a crash and a
 * consumer may replay a topic from offset 0. This library records every
 * applied event in an inbox table (processed_events, primary key
 * (consumer, event_id)) in the same PostgreSQL transaction as the event's
 * effect and the consumer's partition offset, so each effect happens once.
 *
 * Memory: every pointer passed in is borrowed for the duration of the call.
 * Errors: functions return 0 or -1 with a message in errstr; after -1 inside
 * a transaction (the *_tx calls) the caller must roll the transaction back. */
#ifndef OBX_DEDUP_H
#define OBX_DEDUP_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* One event as received from Kafka. */
typedef struct {
    const char *event_id;     /* the relay's event_id header: a UUID */
    const char *event_type;   /* event_type header; may be NULL */
    const char *key;          /* message key (aggregate id); may be NULL */
    const char *compensates;  /* "compensates" header: the event id this one undoes, or NULL */
    const char *payload;      /* may be NULL */
    size_t payload_len;
    const char *topic;
    int32_t partition;
    int64_t offset;
} obx_event_t;

/* What an effect function reports. */
typedef enum {
    OBX_EFFECT_OK = 0,  /* applied */
    OBX_EFFECT_REJECT,  /* a business "no" (e.g. out of stock): final, not an error; its writes are kept */
    OBX_EFFECT_POISON,  /* can never be applied (bad payload): undone and parked in dead_letters */
    OBX_EFFECT_RETRY    /* transient failure: the whole transaction is rolled back and retried */
} obx_effect_rc_t;

/* Applies an event's effect on conn, inside the library's transaction.
 * reason (for REJECT, POISON, RETRY) is written into reason/reason_size. */
typedef obx_effect_rc_t (*obx_effect_fn)(PGconn *conn, const obx_event_t *ev, void *arg,
                                         char *reason, size_t reason_size);

/* Optional batch form of an effect, for the runner (obx_handler_t.apply_batch):
 * applies the effects of n new events at once (one statement with arrays,
 * say), as the effect function applied to each in turn would, on conn inside
 * the library's transaction. Returns OBX_EFFECT_OK with each event's outcome
 * in rcs[i] (OBX_EFFECT_OK or OBX_EFFECT_REJECT); OBX_EFFECT_POISON when some
 * event cannot be applied (the transaction is rolled back and the batch
 * applied again one event at a time with the effect function, which parks
 * the poison); OBX_EFFECT_RETRY on a transient failure. reason as above. */
typedef obx_effect_rc_t (*obx_batch_effect_fn)(PGconn *conn, const obx_event_t *evs, int n, void *arg,
                                               obx_effect_rc_t *rcs, char *reason, size_t reason_size);

typedef enum {
    OBX_APPLY_APPLIED = 0,
    OBX_APPLY_REJECTED,
    OBX_APPLY_DUPLICATE,   /* already processed (or preempted by its compensation): skipped */
    OBX_APPLY_PARKED       /* poison: in dead_letters, and in the inbox so replays skip it */
} obx_apply_status_t;

typedef enum {
    OBX_COMP_UNDONE = 0,   /* the original had been applied: undo ran */
    OBX_COMP_EMPTY,        /* the original never arrived: a marker now makes it a no-op when it does */
    OBX_COMP_NOTHING,      /* the original was rejected or parked: nothing to undo */
    OBX_COMP_DUPLICATE     /* this compensation was processed before */
} obx_comp_status_t;

const char *obx_dedup_apply_status_name(obx_apply_status_t s);
const char *obx_dedup_comp_status_name(obx_comp_status_t s);

/* 1 if s is a canonical textual UUID (8-4-4-4-12 hex digits). */
int obx_dedup_uuid_valid(const char *s);

/* Inside an open transaction: records ev in the inbox and, if it is new,
 * runs fn on the same connection. */
int obx_dedup_apply_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                       obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                       char *errstr, size_t errsize);

/* One event in its own transaction: BEGIN, apply, store the offset, COMMIT. */
int obx_dedup_apply(PGconn *conn, const char *consumer, const obx_event_t *ev,
                    obx_effect_fn fn, void *arg, obx_apply_status_t *status,
                    char *errstr, size_t errsize);

/* Inside an open transaction: processes compensation event comp for the
 * original event original_event_id (saga / TCC "cancel"). If the original was
 * applied, undo runs; if it never arrived, a "preempted" marker is recorded
 * under its id so the late original is skipped (no hanging action) and the
 * compensation is a no-op (empty rollback). */
int obx_dedup_compensate_tx(PGconn *conn, const char *consumer, const obx_event_t *comp,
                            const char *original_event_id, obx_effect_fn undo, void *arg,
                            obx_comp_status_t *status, char *errstr, size_t errsize);

/* Inside an open transaction: the consumer resumes at next_offset (never moves backwards). */
int obx_dedup_store_offset_tx(PGconn *conn, const char *consumer, const char *topic,
                              int32_t partition, int64_t next_offset, char *errstr,
                              size_t errsize);

/* Stored next offset of a partition: 0 and *next_offset = -1 when none. */
int obx_dedup_load_offset(PGconn *conn, const char *consumer, const char *topic,
                          int32_t partition, int64_t *next_offset, char *errstr, size_t errsize);

/* Inside an open transaction: parks a message that cannot be applied. */
int obx_dedup_park_tx(PGconn *conn, const char *consumer, const obx_event_t *ev,
                      const char *reason, char *errstr, size_t errsize);

/* Deletes inbox entries of consumer older than retention_s, batch rows per
 * transaction, until none are left. Returns the number deleted or -1.
 * Choose retention_s longer than the longest time a duplicate can arrive:
 * the topic's retention (a replay from offset 0) or at least the relay's
 * worst outage plus the consumer's worst lag. */
long obx_dedup_cleanup(PGconn *conn, const char *consumer, long retention_s, int batch,
                       char *errstr, size_t errsize);

/* PQexecParams for statements run again and again (effects, inbox): sql is
 * prepared once per connection, the first time it is run there, and the
 * prepared statement is executed from then on; a new or reset connection
 * prepares again. Never DEALLOCATE on a connection this is used on. Returns
 * what PQexecParams would (text results): check it and PQclear it. */
PGresult *obx_dedup_exec(PGconn *conn, const char *sql, int nparams, const char *const *vals,
                         const int *lens, const int *fmts);

/* A one-dimensional text[] parameter in PostgreSQL's binary format, to send
 * a batch's values in one statement ($1::text[], unnest). Start from
 * {0}, add at least one element, pass data and len with format 1, free. */
typedef struct {
    char *data;
    int len, cap, n;
} obx_dedup_array_t;

/* Appends s (len bytes; len < 0: up to its NUL; s NULL: SQL NULL).
 * Returns 0, or -1 when out of memory (the array is unchanged). */
int obx_dedup_array_add(obx_dedup_array_t *a, const char *s, int len);
void obx_dedup_array_free(obx_dedup_array_t *a);

#endif
