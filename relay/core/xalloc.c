#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

static void *checked(void *p, size_t n) {
    if (!p && n > 0) {
        OBX_LOG(OBX_LOG_ERROR, "out_of_memory", "out of memory", KI("bytes", (long long)n));
        abort();
    }
    return p;
}

void *obx_xmalloc(size_t n) { return checked(malloc(n), n); }

void *obx_xcalloc(size_t n, size_t size) { return checked(calloc(n, size), n * size); }

void *obx_xrealloc(void *p, size_t n) { return checked(realloc(p, n), n); }

char *obx_xstrdup(const char *s) { return checked(strdup(s), strlen(s) + 1); }
