#include "pgbin.h"

#include <stdint.h>
#include <string.h>

int32_t obx_pgbin_int32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)__builtin_bswap32(v);
}

int64_t obx_pgbin_int64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)__builtin_bswap64(v);
}

int obx_pgbin_array(const char *buf, size_t len, obx_pgbin_elem_t *out, int max) {
    size_t pos = 12;
    int32_t ndim, n;

    /* Header: ndim, has-null flag, element type oid; then (size, lower bound) per dim. */
    if (len < 12)
        return -1;
    ndim = obx_pgbin_int32(buf);
    if (ndim == 0)
        return 0;
    if (ndim != 1 || len < 20)
        return -1;
    n = obx_pgbin_int32(buf + 12);
    pos = 20;
    if (n < 0 || n > max)
        return -1;
    for (int32_t i = 0; i < n; i++) {
        int32_t el;
        if (len - pos < 4)
            return -1;
        el = obx_pgbin_int32(buf + pos);
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

void obx_pgbin_uuid(const char *p, char out[OBX_PGBIN_UUID_SIZE]) {
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        unsigned char c = (unsigned char)p[i];
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
    }
    *o = '\0';
}

/* Writes v as exactly n digits, most significant first. */
static char *digits(char *o, int64_t v, int n) {
    for (int i = n - 1; i >= 0; i--, v /= 10)
        o[i] = (char)('0' + v % 10);
    return o + n;
}

/* Floor division: timestamps before 2000 are negative. */
static int64_t floor_div(int64_t a, int64_t b) {
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

void obx_pgbin_timestamptz(const char *p, char out[OBX_PGBIN_TS_SIZE]) {
    int64_t us = obx_pgbin_int64(p), days, sod, z, era, doe, yoe, doy, mp, y, m, d;
    char *o = out;

    if (us == INT64_MAX || us == INT64_MIN) {
        strcpy(out, us == INT64_MAX ? "infinity" : "-infinity");
        return;
    }
    /* Day and time of day without forming days * 86400000000, which
     * overflows near the ends of int64 (not PostgreSQL's range, but a
     * decoder should not trust its input). */
    days = us / 86400000000LL - (us % 86400000000LL < 0);
    us = us % 86400000000LL + (us % 86400000000LL < 0 ? 86400000000LL : 0);
    sod = us / 1000000;
    us %= 1000000;
    /* Civil date of a day count (H. Hinnant's days_from_civil, inverted);
     * 10957 days separate 1970-01-01 from 2000-01-01. */
    z = days + 10957 + 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = yoe + era * 400 + (m <= 2);
    if (y < 0) {
        *o++ = '-';
        y = -y;
    }
    o = digits(o, y, y > 99999 ? 6 : y > 9999 ? 5 : 4);
    *o++ = '-';
    o = digits(o, m, 2);
    *o++ = '-';
    o = digits(o, d, 2);
    *o++ = 'T';
    o = digits(o, sod / 3600, 2);
    *o++ = ':';
    o = digits(o, sod / 60 % 60, 2);
    *o++ = ':';
    o = digits(o, sod % 60, 2);
    *o++ = '.';
    o = digits(o, us, 6);
    *o++ = 'Z';
    *o = '\0';
}
