/* The relay's side of the PostgreSQL outbox: session set-up, prepared
 * statements, and asynchronous claim / mark / fail / waiting-flag queries.
 * Rows decoded by obx_outbox_row point into the PGresult (but for the event
 * id and creation time, formatted into the row): they live exactly as long
 * as the caller keeps that result (zero-copy produce relies on it). */
#ifndef OBX_OUTBOX_H
#define OBX_OUTBOX_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "pgbin.h"

#define OBX_HEADERS_MAX 64

typedef struct {
    int64_t id;
    char event_id[OBX_PGBIN_UUID_SIZE];
    const char *aggregate_type;
    const char *aggregate_id;   /* NULL when SQL NULL */
    const char *event_type;
    const char *topic;          /* NULL: route by config */
    const char *payload;        /* NULL when SQL NULL */
    size_t payload_len;
    char created_at[OBX_PGBIN_TS_SIZE]; /* ISO 8601 UTC */
    int attempts;
    int headers_ok;             /* headers is NULL or an object of strings */
    const char *hkeys;          /* binary text[] or NULL */
    size_t hkeys_len;
    const char *hvals;
    size_t hvals_len;
} obx_row_t;

/* The relay's sessions: each is set up for its own queries. */
typedef enum {
    OBX_SESSION_CLAIM,     /* LISTEN on the channel; claim, stats and waiting prepared */
    OBX_SESSION_MARK,      /* mark and fail prepared */
    OBX_SESSION_RETENTION, /* retain_size, and retain (delete mode) or partitions, add_partitions and
                              drop_partition (partitions mode) prepared; lock and statement timeouts */
} obx_session_t;

/* Connects and prepares a session of kind, synchronous_commit off. name is
 * the application_name. Returns NULL with errstr on failure. */
PGconn *obx_outbox_connect(const obx_config_t *cfg, const char *name, obx_session_t kind,
                           char *errstr, size_t errsize);
/* Tries the session advisory lock that makes this relay the outbox's only
 * publisher. Returns 1 leader, 0 standby, -1 error (errstr). Blocking. */
int obx_outbox_try_lead(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize);

/* Prepares the horizon queries on the claiming session when the outbox ids
 * allow them: they come from a sequence with CACHE 1 the role may read.
 * Returns 1 ready, 0 not possible (why says so), -1 error (why). */
int obx_outbox_prepare_horizon(PGconn *conn, const obx_config_t *cfg, char *why, size_t whysize);

/* Asynchronous sends: return 0 when the query went out, -1 otherwise. */
/* Unsent rows with after_id < id <= upto_id, in id order. */
int obx_outbox_send_claim(PGconn *conn, int64_t after_id, int limit, int64_t upto_id);
/* One row: the sequence's last id (text) and the virtual transaction ids
 * holding a write lock on the outbox (a text[] literal). */
int obx_outbox_send_horizon(PGconn *conn, const obx_config_t *cfg);
/* One row: 't' once none of vxids (a text[] literal) holds its lock any more. */
int obx_outbox_send_confirm(PGconn *conn, const obx_config_t *cfg, const char *vxids);
/* ids are marked sent in one UPDATE. */
int obx_outbox_send_mark(PGconn *conn, const int64_t *ids, size_t n);
/* Records a failed attempt with its error; park != 0 also parks the row. */
int obx_outbox_send_fail(PGconn *conn, int64_t id, const char *error, int park);
int obx_outbox_send_waiting(PGconn *conn, const obx_config_t *cfg, int waiting);
/* Retention (OBX_SESSION_RETENTION): deletes the rows among the first limit
 * past after_id (by id) that were marked sent more than keep_s ago and are
 * not parked. One row: deleted, scanned, the last id scanned, whether a
 * scanned row must stay a while (unsent or sent within keep_s, not
 * parked), and the age in seconds of the oldest deleted row's mark. */
int obx_outbox_send_retain(PGconn *conn, int64_t after_id, int limit, int keep_s);
/* One row: the table's total size in bytes (indexes, TOAST and partitions
 * included) and its dead tuples (pg_stat_user_tables, 0 when not known). */
int obx_outbox_send_retain_size(PGconn *conn, const obx_config_t *cfg);
/* Partitions mode (OBX_SESSION_RETENTION). The lock that makes one relay's
 * retention the only one that detaches and drops the outbox's partitions
 * (a session advisory lock): 1 taken, 0 held by another session, -1 error
 * (errstr). Blocking. */
int obx_outbox_retention_lock(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize);
/* One row per partition, oldest first, then per table detached and not
 * dropped: name (regclass text), lo, hi (NULL: unbounded), state
 * ('pending', 'detached', 'ahead', 'open', 'unsent', 'parked',
 * 'droppable'), rows and parked (NULL when not counted). */
int obx_outbox_send_partitions(PGconn *conn, const obx_config_t *cfg);
/* One row: the partitions it created to have partitions_ahead above the last id. */
int obx_outbox_send_add_partitions(PGconn *conn, const obx_config_t *cfg);
/* DETACH PARTITION part CONCURRENTLY (finalize: FINALIZE, for a detach
 * left pending); a command result. */
int obx_outbox_send_detach(PGconn *conn, const obx_config_t *cfg, const char *part, int finalize);
/* One row for part, detached: 'dropped' (every row sent keep_s ago, none
 * parked), 'reattached' (a row that must stay; the relay is told to
 * rescan) or 'gone'; and its rows. */
int obx_outbox_send_drop_partition(PGconn *conn, const obx_config_t *cfg, const char *part);
/* Backlog (unsent rows past after_id) and the age of its oldest row, in a
 * two-column text result. */
int obx_outbox_send_stats(PGconn *conn, int64_t after_id);

/* The id of row i of a claim result. */
int64_t obx_outbox_row_id(const PGresult *res, int i);
/* The event id of row i of a claim result, as text. */
void obx_outbox_row_event_id(const PGresult *res, int i, char out[OBX_PGBIN_UUID_SIZE]);
/* Decodes row i of a claim result. */
void obx_outbox_row(const PGresult *res, int i, obx_row_t *row);

/* Blocking schema and privilege checks for --check; prints findings to out.
 * Returns 0 when the relay can run. */
int obx_outbox_check(PGconn *conn, const obx_config_t *cfg, char *errstr, size_t errsize);

/* For --check: the distinct (topic, aggregate_type, event_type) of the
 * newest scan rows, at most limit of them, as a three-column text result the
 * caller clears. aggregate_type and event_type are NULL when the row has its
 * own topic; event_type is NULL too unless with_event_type. NULL with
 * errstr on error. Blocking. */
PGresult *obx_outbox_topic_sample(PGconn *conn, const obx_config_t *cfg, int scan, int limit,
                                  int with_event_type, char *errstr, size_t errsize);

#endif
