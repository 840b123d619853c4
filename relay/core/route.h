/* Topic routing: the row's own topic column, else the first route whose
 * aggregate_type matches, else the topic pattern with ${aggregate_type} and
 * ${event_type} substituted. Strings are borrowed; nothing is allocated. */
#ifndef OBX_ROUTE_H
#define OBX_ROUTE_H

#include <stddef.h>

typedef struct {
    char *aggregate_type; /* owned by the config that holds the route */
    char *topic;
} obx_route_t;

/* Kafka's rule: 1..249 chars of [A-Za-z0-9._-], not "." or "..". Returns 1 if valid. */
int obx_route_topic_valid(const char *topic);

/* Writes the topic for a row into out. Returns 0, or -1 with a reason in
 * errstr when the result is not a valid Kafka topic name. */
int obx_route_resolve(const obx_route_t *routes, size_t nroutes, const char *pattern,
                      const char *row_topic, const char *aggregate_type,
                      const char *event_type, char *out, size_t outsize,
                      char *errstr, size_t errsize);

/* Checks that a pattern only uses known ${...} variables. Returns 0 or -1 with errstr. */
int obx_route_pattern_check(const char *pattern, char *errstr, size_t errsize);

#endif
