#include "cache.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char symbol[AGENT_SYMBOL_MAX + 1];
    char *json;
    time_t fetched_at;
    struct timespec fetched_mono;
} entry;

struct agent_cache {
    pthread_mutex_t mu;
    entry all;
    entry one[AGENT_CACHE_SYMBOLS];
    size_t n;
};

agent_cache *agent_cache_new(void)
{
    agent_cache *c = calloc(1, sizeof(*c));
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

void agent_cache_free(agent_cache *c)
{
    if (!c)
        return;
    free(c->all.json);
    for (size_t i = 0; i < c->n; i++)
        free(c->one[i].json);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static double age_of(const entry *e)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - e->fetched_mono.tv_sec) +
           (double)(now.tv_nsec - e->fetched_mono.tv_nsec) / 1e9;
}

/* Replaces e's value with a copy of json; called locked. */
static m2m_err entry_set(entry *e, const char *json, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return M2M_ERR_NOMEM;
    memcpy(copy, json, len);
    copy[len] = '\0';
    free(e->json);
    e->json = copy;
    e->fetched_at = time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &e->fetched_mono);
    return M2M_OK;
}

static entry *find_locked(agent_cache *c, const char *sym, bool create)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->one[i].symbol, sym) == 0)
            return &c->one[i];
    if (!create || c->n == AGENT_CACHE_SYMBOLS || strlen(sym) > AGENT_SYMBOL_MAX)
        return NULL;
    entry *e = &c->one[c->n++];
    memcpy(e->symbol, sym, strlen(sym) + 1);
    return e;
}

m2m_err agent_cache_put_one(agent_cache *c, const char *sym, const char *json, size_t len)
{
    m2m_err rc = M2M_ERR_PAYLOAD_TOO_LARGE;
    pthread_mutex_lock(&c->mu);
    entry *e = find_locked(c, sym, true);
    if (e)
        rc = entry_set(e, json, len);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* One element of the list: stored under its "symbol" (skipped without one). */
static m2m_err put_element(const char *el, size_t n, void *arg)
{
    agent_cache *c = arg;
    json_t *obj = json_loadb(el, n, 0, NULL);
    const char *sym = json_string_value(json_object_get(obj, "symbol"));
    m2m_err rc = M2M_OK;
    if (sym && *sym && strlen(sym) <= AGENT_SYMBOL_MAX)
        rc = agent_cache_put_one(c, sym, el, n);
    json_decref(obj);
    return rc;
}

m2m_err agent_cache_put_all(agent_cache *c, const char *json, size_t len)
{
    pthread_mutex_lock(&c->mu);
    m2m_err rc = entry_set(&c->all, json, len);
    pthread_mutex_unlock(&c->mu);
    if (!rc)
        rc = agent_json_elements(json, len, put_element, c);
    return rc;
}

m2m_err agent_cache_get(agent_cache *c, const char *sym, agent_cached *out)
{
    m2m_err rc = M2M_ERR_NOT_FOUND;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&c->mu);
    entry *e = sym ? find_locked(c, sym, false) : &c->all;
    if (e && e->json) {
        out->json = strdup(e->json);
        out->fetched_at = e->fetched_at;
        out->age = age_of(e);
        rc = out->json ? M2M_OK : M2M_ERR_NOMEM;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void agent_cache_clear(agent_cache *c)
{
    pthread_mutex_lock(&c->mu);
    free(c->all.json);
    memset(&c->all, 0, sizeof(c->all));
    for (size_t i = 0; i < c->n; i++)
        free(c->one[i].json);
    memset(c->one, 0, sizeof(c->one));
    c->n = 0;
    pthread_mutex_unlock(&c->mu);
}

time_t agent_cache_last_fetch(agent_cache *c, double *age)
{
    pthread_mutex_lock(&c->mu);
    time_t at = c->all.json ? c->all.fetched_at : 0;
    if (age)
        *age = at ? age_of(&c->all) : 0;
    pthread_mutex_unlock(&c->mu);
    return at;
}

/* ---- slicing valid JSON text -------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* End of the value starting at p (valid JSON assumed, so only strings and
 * nesting need care). */
static const char *value_end(const char *p, const char *end)
{
    int depth = 0;
    bool in_str = false;
    for (; p < end; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"') {
                in_str = false;
                if (depth == 0)
                    return p + 1;
            }
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0)
                return p; /* end of a scalar inside a container */
            if (--depth == 0)
                return p + 1;
        } else if (depth == 0 && (*p == ',' || *p == ' ' || *p == '\n' || *p == '\r' ||
                                  *p == '\t')) {
            return p;
        }
    }
    return end;
}

m2m_err agent_json_elements(const char *json, size_t len,
                            m2m_err (*fn)(const char *el, size_t n, void *arg), void *arg)
{
    const char *p = json, *end = json + len;
    p = skip_ws(p, end);
    if (p == end || *p != '[')
        return M2M_ERR_INVALID_REQUEST;
    p = skip_ws(p + 1, end);
    while (p < end && *p != ']') {
        const char *e = value_end(p, end);
        m2m_err rc = fn(p, (size_t)(e - p), arg);
        if (rc)
            return rc;
        p = skip_ws(e, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return M2M_OK;
}

const char *agent_json_member(const char *json, size_t len, const char *key, size_t *n)
{
    const char *p = json, *end = json + len;
    json_t *k = NULL;
    p = skip_ws(p, end);
    if (p == end || *p != '{')
        return NULL;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *kend = value_end(p, end), *v, *vend;
        k = json_loadb(p, (size_t)(kend - p), JSON_DECODE_ANY, NULL);
        p = skip_ws(kend, end);
        if (p == end || *p != ':')
            break;
        v = skip_ws(p + 1, end);
        vend = value_end(v, end);
        if (json_is_string(k) && strcmp(json_string_value(k), key) == 0) {
            json_decref(k);
            *n = (size_t)(vend - v);
            return v;
        }
        json_decref(k);
        k = NULL;
        p = skip_ws(vend, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    json_decref(k);
    return NULL;
}
