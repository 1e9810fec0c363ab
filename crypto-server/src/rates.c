#include "rates.h"

#include <stdio.h>
#include "m2m/buf.h"

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
    long long newest_ms; /* latest updated_at loaded: older snapshots are refused */
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

void rates_iso_time(long long ms, char *out, size_t cap)
{
    /* floor division: times before 1970 have negative ms */
    long long secs = ms / 1000, rem = ms % 1000;
    if (rem < 0) {
        rem += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* %Y would print year 1 as "1": RFC 3339 wants four digits */
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem);
}

bool rates_number_ok(const char *s)
{
    /* what trim_scale(numeric)::text gives: digits, at most one '.', no sign
     * or exponent (rates are positive) - safe to paste into JSON as is */
    bool dot = false, digit = false;
    for (; *s; s++) {
        if (*s >= '0' && *s <= '9')
            digit = true;
        else if (*s == '.' && !dot && digit)
            dot = true;
        else
            return false;
    }
    return digit;
}

/* {"symbol":…,"name":…,"rate":<exact decimal>,"last_updated":…}: the rate
 * is PostgreSQL's own text, so what was stored is what is read, digit for
 * digit (a double would round 123456789012.3456). */
static char *render_one(const char *symbol, const char *name, const char *rate, long long ms)
{
    char stamp[40], *out = NULL;
    json_t *js = json_string(symbol), *jn = json_string(name);
    char *s = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    char *n = jn ? json_dumps(jn, JSON_ENCODE_ANY) : NULL;

    rates_iso_time(ms, stamp, sizeof(stamp));
    if (s && n && rates_number_ok(rate) &&
        asprintf(&out, "{\"symbol\":%s,\"name\":%s,\"rate\":%s,\"last_updated\":\"%s\"}", s,
                 n, rate, stamp) < 0)
        out = NULL;
    free(s);
    free(n);
    json_decref(js);
    json_decref(jn);
    return out;
}

m2m_err rates_load(rates_store *s, const PGresult *res)
{
    rate_body one[RATES_MAX] = {0};
    m2m_buf all;
    char *all_text = NULL;
    size_t n = 0;
    m2m_err rc = M2M_ERR_NOMEM;
    int rows = PQntuples(res);

    long long newest = 0;
    m2m_buf_init(&all, (size_t)RATES_MAX * 512);
    if (rows > RATES_MAX || m2m_buf_appends(&all, "["))
        goto out;
    for (int i = 0; i < rows; i++) {
        long long ms = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        if (ms > newest)
            newest = ms;
        snprintf(one[n].symbol, sizeof(one[n].symbol), "%s", PQgetvalue(res, i, 0));
        one[n].json = render_one(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                 PQgetvalue(res, i, 2), strtoll(PQgetvalue(res, i, 3), NULL, 10));
        n++;
        if (!one[n - 1].json || (i && m2m_buf_appends(&all, ",")) ||
            m2m_buf_appends(&all, one[n - 1].json))
            goto out;
    }
    if (m2m_buf_appends(&all, "]"))
        goto out;
    all_text = m2m_buf_steal(&all);

    pthread_rwlock_wrlock(&s->lock);
    if (newest < s->newest_ms) {
        /* A PUT's reload and an updater tick raced, and this snapshot was
         * read first: keep the newer one we have. */
        pthread_rwlock_unlock(&s->lock);
        rc = M2M_OK;
        goto out;
    }
    s->newest_ms = newest;
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
    m2m_buf_free(&all);
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
