/* Decoding of PostgreSQL's binary wire format for one-dimensional text[]
 * (what the claim query returns for a row's headers). The decoded strings
 * point into the caller's buffer; nothing is allocated. */
#ifndef OBX_PGARRAY_H
#define OBX_PGARRAY_H

#include <stddef.h>

typedef struct {
    const char *ptr; /* not NUL-terminated; NULL for an SQL NULL element */
    size_t len;
} obx_pgarray_elem_t;

/* Decodes up to max elements into out. Returns the element count, or -1 when
 * buf is not a well-formed one-dimensional binary array (or has more than max). */
int obx_pgarray_decode(const char *buf, size_t len, obx_pgarray_elem_t *out, int max);

#endif
