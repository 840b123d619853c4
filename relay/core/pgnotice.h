/* Routes PostgreSQL notices and warnings (e.g. "terminating connection due
 * to administrator command") through the structured logger instead of
 * libpq's default raw stderr print. */
#ifndef OBX_PGNOTICE_H
#define OBX_PGNOTICE_H

#include <libpq-fe.h>

void obx_pgnotice_route(PGconn *conn);

#endif
