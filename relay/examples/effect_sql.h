/* Shared by the example consumers: run one SQL statement that applies an
 * event's effect, with the raw payload as $1 (PostgreSQL parses the JSON),
 * and turn its outcome into an effect code. Statements are prepared once per
 * connection (obx_dedup_exec). */
#ifndef OBX_EFFECT_SQL_H
#define OBX_EFFECT_SQL_H

#include "obx_dedup.h"

/* Runs sql with $1 = payload text. On success the first column of the first
 * row is copied into out (empty when no row). Data errors (bad JSON, bad
 * numbers, constraint violations) are POISON with the server's message;
 * anything else (connection lost, serialization failure) is RETRY. */
obx_effect_rc_t obx_effect_sql(PGconn *conn, const char *sql, const obx_event_t *ev, char *out,
                               size_t outsize, char *reason, size_t reason_size);

/* The batch form: runs sql once with $1 = the n payloads as a text[], in
 * order. On OBX_EFFECT_OK *res holds the result, which the caller PQclears;
 * otherwise *res is NULL and the code is as for obx_effect_sql. */
obx_effect_rc_t obx_effect_sql_batch(PGconn *conn, const char *sql, const obx_event_t *evs, int n,
                                     PGresult **res, char *reason, size_t reason_size);

#endif
