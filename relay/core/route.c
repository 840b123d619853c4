#include "route.h"

#include <stdio.h>
#include <string.h>

#define TOPIC_MAX 249

int obx_route_topic_valid(const char *topic) {
    size_t n = strlen(topic);
    if (n == 0 || n > TOPIC_MAX || strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
        return 0;
    for (const char *p = topic; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Expands ${aggregate_type} and ${event_type}; returns -1 on an unknown or
 * unterminated variable, -2 when out is too small. */
static int expand(const char *pattern, const char *aggregate_type, const char *event_type,
                  char *out, size_t outsize, const char **bad) {
    size_t len = 0;
    for (const char *p = pattern; *p;) {
        const char *val = NULL;
        size_t skip = 1;
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p, '}');
            if (!end) {
                *bad = p;
                return -1;
            }
            size_t name_len = (size_t)(end - p - 2);
            if (name_len == 14 && strncmp(p + 2, "aggregate_type", 14) == 0)
                val = aggregate_type;
            else if (name_len == 10 && strncmp(p + 2, "event_type", 10) == 0)
                val = event_type;
            else {
                *bad = p;
                return -1;
            }
            skip = (size_t)(end - p) + 1;
        }
        if (val) {
            size_t vl = strlen(val);
            if (len + vl >= outsize)
                return -2;
            memcpy(out + len, val, vl);
            len += vl;
        } else {
            if (len + 1 >= outsize)
                return -2;
            out[len++] = *p;
        }
        p += skip;
    }
    out[len] = '\0';
    return 0;
}

int obx_route_pattern_check(const char *pattern, char *errstr, size_t errsize) {
    char out[1024];
    const char *bad = NULL;
    int rc = expand(pattern, "x", "x", out, sizeof out, &bad);
    if (rc == -1) {
        snprintf(errstr, errsize, "unknown variable at \"%.40s\" (known: ${aggregate_type}, ${event_type})", bad);
        return -1;
    }
    if (rc == -2 || !obx_route_topic_valid(out)) {
        snprintf(errstr, errsize, "pattern \"%s\" does not give a valid Kafka topic name", pattern);
        return -1;
    }
    return 0;
}

int obx_route_resolve(const obx_route_t *routes, size_t nroutes, const char *pattern,
                      const char *row_topic, const char *aggregate_type,
                      const char *event_type, char *out, size_t outsize,
                      char *errstr, size_t errsize) {
    const char *bad = NULL;
    const char *src = NULL;

    if (row_topic) {
        src = row_topic;
    } else {
        for (size_t i = 0; i < nroutes && !src; i++)
            if (strcmp(routes[i].aggregate_type, aggregate_type) == 0)
                src = routes[i].topic;
    }
    if (src && (size_t)snprintf(out, outsize, "%s", src) >= outsize) {
        snprintf(errstr, errsize, "invalid topic name \"%.60s...\": longer than 249 characters%s",
                 src, row_topic ? " in the row's topic column" : "");
        return -1;
    }
    if (!src && expand(pattern, aggregate_type, event_type, out, outsize, &bad) != 0) {
        snprintf(errstr, errsize, "topic pattern does not expand for aggregate_type=\"%.60s\"",
                 aggregate_type);
        return -1;
    }
    if (!obx_route_topic_valid(out)) {
        snprintf(errstr, errsize, "invalid topic name \"%.100s\"%s", src ? src : out,
                 row_topic ? " in the row's topic column" : "");
        return -1;
    }
    return 0;
}
