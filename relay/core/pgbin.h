/* Decoding of PostgreSQL's binary wire format (the claim query's result
 * format): one-dimensional text[] (a row's headers), int4, int8, uuid and
 * timestamptz. Decoded strings point into the caller's buffer or are written
 * to the caller's array; nothing is allocated. */
#ifndef OBX_PGBIN_H
#define OBX_PGBIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *ptr; /* not NUL-terminated; NULL for an SQL NULL element */
    size_t len;
} obx_pgbin_elem_t;

/* Text of a uuid: 36 characters and the NUL. */
#define OBX_PGBIN_UUID_SIZE 37
/* Text of a timestamptz: "2026-12-01T09:45:59.123456Z" and the NUL, or
 * "infinity" / "-infinity"; years up to 6 digits. */
#define OBX_PGBIN_TS_SIZE 32

/* Decodes up to max elements into out. Returns the element count, or -1 when
 * buf is not a well-formed one-dimensional binary array (or has more than max). */
int obx_pgbin_array(const char *buf, size_t len, obx_pgbin_elem_t *out, int max);

int32_t obx_pgbin_int32(const char *p);
int64_t obx_pgbin_int64(const char *p);

/* The 16 bytes of a uuid as PostgreSQL prints it (lower-case hex, 8-4-4-4-12). */
void obx_pgbin_uuid(const char *p, char out[OBX_PGBIN_UUID_SIZE]);

/* The 8 bytes of a timestamptz (microseconds since 2000-01-01 UTC) as
 * ISO 8601 UTC with microseconds, what to_char(... 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
 * prints for years 1-9999; other years with as many digits as they need,
 * and years BC as astronomical years (1 BC is 0000, 2 BC -0001) where
 * to_char printed them unsigned. Formatted here rather than by to_char in the claim
 * query: to_char cost the claiming backend a fifth of its time per row. */
void obx_pgbin_timestamptz(const char *p, char out[OBX_PGBIN_TS_SIZE]);

#endif
