/* The last good data from the crypto-server, kept so that the agent can
 * answer with it (marked stale, with its age) while the server is out of
 * reach. Values are kept as the server's exact JSON text: rates are exact
 * decimals, and a round trip through a double would change them. */
#ifndef AGENT_CACHE_H
#define AGENT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include "m2m/buf.h"
#include "m2m/err.h"

#define AGENT_SYMBOL_MAX 10
#define AGENT_CACHE_SYMBOLS 256

typedef struct agent_cache agent_cache;

typedef struct {
    char *json;        /* the value's text (caller frees) */
    time_t fetched_at; /* wall clock */
    double age;        /* seconds */
} agent_cached;

agent_cache *agent_cache_new(void);
void agent_cache_free(agent_cache *c);
/* Stores GET /api/currency/'s array (text already checked to be a JSON
 * array) and each of its elements under its "symbol". */
m2m_err agent_cache_put_all(agent_cache *c, const char *json, size_t len);
/* Stores one rate object under sym. */
m2m_err agent_cache_put_one(agent_cache *c, const char *sym, const char *json, size_t len);
/* sym NULL: the whole list. M2M_ERR_NOT_FOUND when nothing is kept. */
m2m_err agent_cache_get(agent_cache *c, const char *sym, agent_cached *out);
/* Forgets everything (new credentials, another server). */
void agent_cache_clear(agent_cache *c);
/* When the whole list was last stored (0: never). */
time_t agent_cache_last_fetch(agent_cache *c, double *age);

/* Splits a JSON array's text into its elements' texts: calls fn for each
 * (start, length). The text must be valid JSON (checked by the caller). */
m2m_err agent_json_elements(const char *json, size_t len,
                            m2m_err (*fn)(const char *el, size_t n, void *arg), void *arg);
/* The text of member `key` of a JSON object's text (NULL when absent). */
const char *agent_json_member(const char *json, size_t len, const char *key, size_t *n);

#endif
