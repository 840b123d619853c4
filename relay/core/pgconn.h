/* PostgreSQL connections as every program of the project opens them: a
 * connect timeout and application name as defaults the user's conninfo can
 * override, and server notices routed through the structured logger instead
 * of libpq's raw stderr print. */
#ifndef OBX_PGCONN_H
#define OBX_PGCONN_H

#include <libpq-fe.h>
#include <stddef.h>

/* Always returns a PGconn (libpq's rule): check PQstatus, PQfinish it. */
PGconn *obx_pgconn_open(const char *conninfo, const char *application_name);
/* A libpq error message (PQerrorMessage, PQresultErrorMessage) as one log
 * field: its first line, trailing blanks cut, into buf (msg may be buf:
 * trimmed in place). Returns buf. */
const char *obx_pgconn_error(char *buf, size_t size, const char *msg);

#endif
