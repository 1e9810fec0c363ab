#include "rates.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char symbol[SYMBOL_MAX + 1];
    char *json; /* this rate's object */
} rate_body;

struct rates_store {
    pthread_rwlock_t lock;
    rate_body one[RATES_MAX];
    size_t n;
    char *all; /* the array of every rate */
    size_t all_len;
    uint64_t version;
};

rates_store *rates_new(void)
{
    rates_store *s = calloc(1, sizeof(*s));
    if (s)
        pthread_rwlock_init(&s->lock, NULL);
    return s;
}

static void bodies_free(rate_body *one, size_t n, char *all)
{
    for (size_t i = 0; i < n; i++)
        free(one[i].json);
    free(all);
}

void rates_free(rates_store *s)
{
    if (!s)
        return;
    bodies_free(s->one, s->n, s->all);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

bool rates_symbol_normalize(const char *in, char out[SYMBOL_MAX + 1])
{
    size_t n = 0;
    if (!in)
        return false;
    for (; in[n]; n++) {
        if (n >= SYMBOL_MAX || !isalnum((unsigned char)in[n]))
            return false;
        out[n] = (char)toupper((unsigned char)in[n]);
    }
    out[n] = '\0';
    return n > 0;
}

static void iso_time(long long ms, char *out, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03lldZ", ms % 1000);
}

m2m_err rates_load(rates_store *s, const PGresult *res)
{
    rate_body one[RATES_MAX] = {0};
    json_t *all = json_array();
    char *all_text = NULL;
    size_t n = 0;
    m2m_err rc = M2M_ERR_NOMEM;
    int rows = PQntuples(res);

    if (!all || rows > RATES_MAX)
        goto out;
    for (int i = 0; i < rows; i++) {
        char stamp[40];
        iso_time(strtoll(PQgetvalue(res, i, 3), NULL, 10), stamp, sizeof(stamp));
        json_t *o = json_pack("{s:s, s:s, s:f, s:s}", "symbol", PQgetvalue(res, i, 0), "name",
                              PQgetvalue(res, i, 1), "rate", strtod(PQgetvalue(res, i, 2), NULL),
                              "last_updated", stamp);
        if (!o)
            goto out;
        snprintf(one[n].symbol, sizeof(one[n].symbol), "%s", PQgetvalue(res, i, 0));
        one[n].json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
        n++;
        if (!one[n - 1].json || json_array_append_new(all, o))
            goto out;
    }
    all_text = json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    if (!all_text)
        goto out;

    pthread_rwlock_wrlock(&s->lock);
    rate_body old[RATES_MAX];
    size_t old_n = s->n;
    char *old_all = s->all;
    memcpy(old, s->one, sizeof(old));
    memcpy(s->one, one, sizeof(one));
    s->n = n;
    s->all = all_text;
    s->all_len = strlen(all_text);
    s->version++;
    pthread_rwlock_unlock(&s->lock);
    bodies_free(old, old_n, old_all);
    n = 0;
    all_text = NULL;
    rc = M2M_OK;
out:
    bodies_free(one, n, all_text);
    json_decref(all);
    return rc;
}

bool rates_ready(rates_store *s)
{
    pthread_rwlock_rdlock(&s->lock);
    bool ready = s->all != NULL;
    pthread_rwlock_unlock(&s->lock);
    return ready;
}

uint64_t rates_version(rates_store *s)
{
    pthread_rwlock_rdlock(&s->lock);
    uint64_t v = s->version;
    pthread_rwlock_unlock(&s->lock);
    return v;
}

void rates_reply_all(rates_store *s, m2m_req *req)
{
    pthread_rwlock_rdlock(&s->lock);
    if (s->all)
        m2m_reply_raw(req, 200, "application/json", s->all, s->all_len);
    else
        m2m_reply_error(req, M2M_ERR_UNAVAILABLE, "rates not loaded yet");
    pthread_rwlock_unlock(&s->lock);
}

static const rate_body *find(const rates_store *s, const char *symbol)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->one[i].symbol, symbol) == 0)
            return &s->one[i];
    return NULL;
}

bool rates_reply_one(rates_store *s, m2m_req *req, const char *symbol)
{
    pthread_rwlock_rdlock(&s->lock);
    const rate_body *b = find(s, symbol);
    if (b)
        m2m_reply_raw(req, 200, "application/json", b->json, strlen(b->json));
    pthread_rwlock_unlock(&s->lock);
    return b != NULL;
}

bool rates_known(rates_store *s, const char *symbol)
{
    pthread_rwlock_rdlock(&s->lock);
    bool known = find(s, symbol) != NULL;
    pthread_rwlock_unlock(&s->lock);
    return known;
}

char *rates_all_json(rates_store *s, size_t *len)
{
    pthread_rwlock_rdlock(&s->lock);
    char *copy = s->all ? strdup(s->all) : NULL;
    if (len)
        *len = copy ? s->all_len : 0;
    pthread_rwlock_unlock(&s->lock);
    return copy;
}
