#include "pgarray.h"

#include <stdint.h>
#include <string.h>

static int32_t read_i32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)__builtin_bswap32(v);
}

int obx_pgarray_decode(const char *buf, size_t len, obx_pgarray_elem_t *out, int max) {
    size_t pos = 12;
    int32_t ndim, n;

    /* Header: ndim, has-null flag, element type oid; then (size, lower bound) per dim. */
    if (len < 12)
        return -1;
    ndim = read_i32(buf);
    if (ndim == 0)
        return 0;
    if (ndim != 1 || len < 20)
        return -1;
    n = read_i32(buf + 12);
    pos = 20;
    if (n < 0 || n > max)
        return -1;
    for (int32_t i = 0; i < n; i++) {
        int32_t el;
        if (len - pos < 4)
            return -1;
        el = read_i32(buf + pos);
        pos += 4;
        if (el == -1) {
            out[i].ptr = NULL;
            out[i].len = 0;
            continue;
        }
        if (el < 0 || (size_t)el > len - pos)
            return -1;
        out[i].ptr = buf + pos;
        out[i].len = (size_t)el;
        pos += (size_t)el;
    }
    return n;
}
