/* JSON request bodies over jansson: objects only, duplicate keys refused,
 * bounded depth, and field accessors that produce 400 messages naming the
 * field. */
#ifndef M2M_JSON_H
#define M2M_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include "m2m/err.h"

#define M2M_JSON_MAX_DEPTH 16

/* Parses a body that must be one JSON object. */
m2m_err m2m_json_parse_object(const char *body, size_t len, json_t **out, char *errbuf,
                              size_t errlen);
/* Reads an optional/required string field of at most maxlen bytes, without
 * NUL bytes. *out points into obj (NULL when absent and optional). */
m2m_err m2m_json_get_string(json_t *obj, const char *key, bool required, size_t maxlen,
                            const char **out, char *errbuf, size_t errlen);
/* Compact serialisation; caller frees. NULL on allocation failure. */
char *m2m_json_dump(const json_t *v);

#endif
