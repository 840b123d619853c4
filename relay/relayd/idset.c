#include "idset.h"
#include "xalloc.h"

#include <stdlib.h>

static size_t slot_of(size_t cap, int64_t id) {
    /* Ids are consecutive: a multiplicative hash spreads them. */
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ULL) >> 17) & (cap - 1);
}

static void grow(obx_idset_t *s) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    int64_t *slots = obx_xcalloc(cap, sizeof *slots);
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i]) {
            size_t j = slot_of(cap, s->slots[i]);
            while (slots[j])
                j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
}

void obx_idset_add(obx_idset_t *s, int64_t id) {
    size_t i;
    if ((s->n + 1) * 2 > s->cap)
        grow(s);
    for (i = slot_of(s->cap, id); s->slots[i]; i = (i + 1) & (s->cap - 1))
        if (s->slots[i] == id)
            return;
    s->slots[i] = id;
    s->n++;
}

int obx_idset_has(const obx_idset_t *s, int64_t id) {
    if (!s->cap)
        return 0;
    for (size_t i = slot_of(s->cap, id); s->slots[i]; i = (i + 1) & (s->cap - 1))
        if (s->slots[i] == id)
            return 1;
    return 0;
}

void obx_idset_del(obx_idset_t *s, int64_t id) {
    size_t i, j;
    if (!s->cap)
        return;
    for (i = slot_of(s->cap, id); s->slots[i] && s->slots[i] != id; i = (i + 1) & (s->cap - 1))
        ;
    if (!s->slots[i])
        return;
    s->slots[i] = 0;
    s->n--;
    /* Backward shift: move later members of the probe run into the hole
     * when their home slot does not lie between the hole and them. */
    for (j = (i + 1) & (s->cap - 1); s->slots[j]; j = (j + 1) & (s->cap - 1)) {
        size_t home = slot_of(s->cap, s->slots[j]);
        if (((j - home) & (s->cap - 1)) >= ((j - i) & (s->cap - 1))) {
            s->slots[i] = s->slots[j];
            s->slots[j] = 0;
            i = j;
        }
    }
}

void obx_idset_free(obx_idset_t *s) {
    free(s->slots);
    s->slots = NULL;
    s->cap = s->n = 0;
}
