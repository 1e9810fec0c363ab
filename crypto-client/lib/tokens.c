/* Token manager (see m2m/tokens.h).
 *
 * One mutex guards the state; a token request runs with it released and
 * `fetching` set, so that other callers wait on the condition variable for
 * its result instead of sending their own (single flight). The
 * configuration is an immutable, reference-counted object: a request in
 * flight keeps the one it started with, and m2m_tokens_reconfigure() swaps
 * in a new one (the result of a request made under the old one is dropped).
 * Deadlines use CLOCK_MONOTONIC; the wall clock is only reported. */
#include "m2m/tokens.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "m2m/b64.h"
#include "m2m/buf.h"
#include "m2m/form.h"
#include "m2m/log.h"
#include "m2m/rand.h"

#define DEFAULT_RENEW_PERCENT 80
#define DEFAULT_RENEW_SKEW_S 30
#define DEFAULT_BACKOFF_MIN_MS 500
#define DEFAULT_BACKOFF_MAX_MS 30000
#define DEFAULT_TIMEOUT_MS 5000
/* Lifetime assumed when the endpoint gives no expires_in and the token is
 * not a JWT with an exp: short, so a wrong guess costs a renewal, not a 401. */
#define FALLBACK_LIFETIME_S 60
#define MAX_TOKEN_REPLY (64 * 1024)
#define MAX_METADATA (64 * 1024)
#define MAX_URL 2048

typedef struct {
    atomic_int refs;
    char *token_url; /* NULL: discover from issuer */
    char *issuer;
    char *client_id;
    char *client_secret;
    char *scope;
    char *resource;
    unsigned renew_percent;
    long renew_skew_s, backoff_min_ms, backoff_max_ms, timeout_ms;
} tokens_conf;

/* What one request to the token endpoint produced. */
typedef struct {
    m2m_err rc;
    bool permanent; /* the credentials or the request were refused */
    char text[M2M_TOKENS_MAX_ERROR];
    char token[M2M_TOKENS_MAX_TOKEN + 1];
    long lifetime;
    char scope[M2M_TOKENS_MAX_SCOPE];
    char discovered[MAX_URL]; /* token endpoint found by discovery ("" if none) */
} fetch_result;

struct m2m_tokens {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a request ended, the configuration changed, or stop */
    tokens_conf *conf;
    uint64_t conf_gen;
    char *discovered_url;

    bool has_token;
    char token[M2M_TOKENS_MAX_TOKEN + 1];
    double renew_mono;
    time_t expires_at, renew_at, last_renewal;
    char scope[M2M_TOKENS_MAX_SCOPE];

    bool fetching;
    bool refused;
    unsigned failures;
    double retry_mono; /* backing off: no request before this */
    m2m_err last_error;
    char last_error_text[M2M_TOKENS_MAX_ERROR];
    time_t last_error_at;

    uint64_t token_requests, token_failures, api_calls, api_retries;
    uint64_t refused_fresh; /* hash of a token refused on a retry (0: none) */

    bool background, thread_started, stopping;
    pthread_t thread;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static void conf_release(tokens_conf *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->client_secret)
        OPENSSL_cleanse(c->client_secret, strlen(c->client_secret));
    free(c->token_url);
    free(c->issuer);
    free(c->client_id);
    free(c->client_secret);
    free(c->scope);
    free(c->resource);
    free(c);
}

static bool printable_url(const char *s)
{
    size_t n = strlen(s);
    if (n >= MAX_URL || (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0))
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static m2m_err conf_new(const m2m_tokens_cfg *cfg, tokens_conf **out)
{
    tokens_conf *c;

    *out = NULL;
    if (!cfg || !cfg->client_id || !*cfg->client_id || !cfg->client_secret)
        return M2M_ERR_CONFIG;
    if (cfg->token_url && *cfg->token_url ? !printable_url(cfg->token_url)
                                          : !cfg->issuer || !printable_url(cfg->issuer))
        return M2M_ERR_CONFIG;
    if (cfg->renew_percent > 100)
        return M2M_ERR_CONFIG;
    c = calloc(1, sizeof(*c));
    if (!c)
        return M2M_ERR_NOMEM;
    atomic_init(&c->refs, 1);
    c->token_url = dup_or_null(cfg->token_url);
    c->issuer = dup_or_null(cfg->issuer);
    c->client_id = strdup(cfg->client_id);
    c->client_secret = strdup(cfg->client_secret);
    c->scope = dup_or_null(cfg->scope);
    c->resource = dup_or_null(cfg->resource);
    c->renew_percent = cfg->renew_percent ? cfg->renew_percent : DEFAULT_RENEW_PERCENT;
    c->renew_skew_s = cfg->renew_skew_s < 0 ? DEFAULT_RENEW_SKEW_S : cfg->renew_skew_s;
    c->backoff_min_ms = cfg->backoff_min_ms > 0 ? cfg->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    c->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (c->backoff_max_ms < c->backoff_min_ms)
        c->backoff_max_ms = c->backoff_min_ms;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    if (!c->client_id || !c->client_secret || (cfg->token_url && *cfg->token_url && !c->token_url) ||
        (cfg->issuer && *cfg->issuer && !c->issuer) || (cfg->scope && *cfg->scope && !c->scope) ||
        (cfg->resource && *cfg->resource && !c->resource)) {
        conf_release(c);
        return M2M_ERR_NOMEM;
    }
    *out = c;
    return M2M_OK;
}

/* ---- one request to the token endpoint ---------------------------------- */

static void result_fail(fetch_result *r, m2m_err rc, bool permanent, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void result_fail(fetch_result *r, m2m_err rc, bool permanent, const char *fmt, ...)
{
    va_list ap;
    r->rc = rc;
    r->permanent = permanent;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
}

/* Copies a peer's text for a message: printable ASCII only, capped. */
static void peer_text(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && *src && i + 1 < cap; src++)
        dst[i++] = (*src >= ' ' && *src < 0x7f) ? *src : '?';
    dst[i] = '\0';
}

/* RFC 8414 §3: GET the metadata, check its issuer, take token_endpoint. */
static void discover(const tokens_conf *c, fetch_result *r)
{
    char url[MAX_URL + 64];
    m2m_httpc_resp resp = {0};
    json_t *meta = NULL;
    const char *iss, *te;
    size_t ilen = strlen(c->issuer);
    static const char *const accept[] = {"Accept: application/json", NULL};

    /* RFC 8414 §3.1: the well-known segment goes between host and path. */
    const char *path = strchr(strstr(c->issuer, "://") + 3, '/');
    if (path)
        snprintf(url, sizeof(url), "%.*s/.well-known/oauth-authorization-server%s",
                 (int)(path - c->issuer), c->issuer, path[1] ? path : "");
    else
        snprintf(url, sizeof(url), "%.*s/.well-known/oauth-authorization-server",
                 (int)(ilen && c->issuer[ilen - 1] == '/' ? ilen - 1 : ilen), c->issuer);
    m2m_httpc_req req = {.url = url,
                         .headers = accept,
                         .timeout_ms = c->timeout_ms,
                         .max_response = MAX_METADATA};
    if (m2m_httpc_do(&req, &resp)) {
        result_fail(r, M2M_ERR_UPSTREAM, false, "authorization server metadata unreachable: %s",
                    url);
        goto out;
    }
    if (resp.status != 200) {
        result_fail(r, M2M_ERR_UPSTREAM, false, "authorization server metadata: HTTP %ld from %s",
                    resp.status, url);
        goto out;
    }
    meta = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    iss = json_string_value(json_object_get(meta, "issuer"));
    te = json_string_value(json_object_get(meta, "token_endpoint"));
    if (!json_is_object(meta) || !iss || !te) {
        result_fail(r, M2M_ERR_UPSTREAM, false,
                    "authorization server metadata without issuer or token_endpoint");
        goto out;
    }
    if (strcmp(iss, c->issuer) != 0) { /* RFC 8414 §3.3: a mix-up or an impostor */
        result_fail(r, M2M_ERR_UPSTREAM, true,
                    "authorization server metadata names another issuer than the configured one");
        goto out;
    }
    if (!printable_url(te)) {
        result_fail(r, M2M_ERR_UPSTREAM, true, "authorization server metadata: bad token_endpoint");
        goto out;
    }
    snprintf(r->discovered, sizeof(r->discovered), "%s", te);
out:
    json_decref(meta);
    m2m_httpc_resp_free(&resp);
}

/* "exp" of a JWT's payload, read without verifying (only for scheduling a
 * renewal when the endpoint did not say expires_in); 0 if there is none. */
static long long jwt_exp_unverified(const char *token)
{
    const char *p = strchr(token, '.'), *q = p ? strchr(p + 1, '.') : NULL;
    uint8_t raw[4096];
    size_t n;
    long long exp = 0;

    if (!q || m2m_b64url_decode(p + 1, (size_t)(q - p - 1), raw, sizeof(raw) - 1, &n))
        return 0;
    json_t *claims = json_loadb((const char *)raw, n, 0, NULL);
    if (json_is_integer(json_object_get(claims, "exp")))
        exp = json_integer_value(json_object_get(claims, "exp"));
    json_decref(claims);
    return exp;
}

/* Maps the OAuth error of a refused request (RFC 6749 §5.2). All of these
 * mean the configuration is wrong: asking again would get the same answer. */
static bool oauth_refusal(const char *error, m2m_err *rc)
{
    static const struct {
        const char *name;
        m2m_err rc;
    } map[] = {{"invalid_client", M2M_ERR_INVALID_CLIENT},
               {"unauthorized_client", M2M_ERR_UNAUTHORIZED_CLIENT},
               {"invalid_scope", M2M_ERR_INVALID_SCOPE},
               {"invalid_target", M2M_ERR_INVALID_TARGET},
               {"invalid_grant", M2M_ERR_INVALID_GRANT},
               {"unsupported_grant_type", M2M_ERR_UNSUPPORTED_GRANT_TYPE},
               {"invalid_request", M2M_ERR_INVALID_REQUEST}};
    for (size_t i = 0; error && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(error, map[i].name) == 0) {
            *rc = map[i].rc;
            return true;
        }
    return false;
}

static void parse_token_reply(const tokens_conf *c, const m2m_httpc_resp *resp, fetch_result *r)
{
    json_t *body = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    const char *error = json_string_value(json_object_get(body, "error"));
    char desc[160] = "";
    m2m_err rc;

    if (resp->status != 200) {
        peer_text(desc, sizeof(desc),
                  json_string_value(json_object_get(body, "error_description")));
        if ((resp->status == 400 || resp->status == 401) && oauth_refusal(error, &rc))
            result_fail(r, rc, true, "token endpoint refused the client '%s': %s%s%s",
                        c->client_id, error, *desc ? ": " : "", desc);
        else
            result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint answered HTTP %ld%s%s",
                        resp->status, *desc ? ": " : "", desc);
        goto out;
    }
    const char *tok = json_string_value(json_object_get(body, "access_token"));
    const char *type = json_string_value(json_object_get(body, "token_type"));
    json_t *jexp = json_object_get(body, "expires_in");
    const char *scope = json_string_value(json_object_get(body, "scope"));
    if (!json_is_object(body) || !tok || !*tok) {
        result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint reply without access_token");
        goto out;
    }
    if (!type || strcasecmp(type, "Bearer") != 0) { /* RFC 6749 §7.1: case-insensitive */
        result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint gave a token_type other than Bearer");
        goto out;
    }
    if (strlen(tok) > M2M_TOKENS_MAX_TOKEN) {
        result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint gave a token over %d bytes",
                    M2M_TOKENS_MAX_TOKEN);
        goto out;
    }
    for (const char *p = tok; *p; p++)
        if (*p <= ' ' || *p >= 0x7f) { /* it goes into an Authorization header */
            result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint gave a malformed token");
            goto out;
        }
    if (jexp && !json_is_null(jexp)) {
        if (!json_is_integer(jexp) || json_integer_value(jexp) <= 0 ||
            json_integer_value(jexp) > 10L * 365 * 86400) {
            result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint gave a bad expires_in");
            goto out;
        }
        r->lifetime = (long)json_integer_value(jexp);
    } else {
        long long exp = jwt_exp_unverified(tok), now = (long long)time(NULL);
        r->lifetime = exp > now ? (long)(exp - now < 10LL * 365 * 86400 ? exp - now : 0)
                                : FALLBACK_LIFETIME_S;
        if (r->lifetime <= 0)
            r->lifetime = FALLBACK_LIFETIME_S;
    }
    snprintf(r->token, sizeof(r->token), "%s", tok);
    peer_text(r->scope, sizeof(r->scope), scope ? scope : c->scope);
    r->rc = M2M_OK;
out:
    json_decref(body);
}

/* The request itself: client_secret_basic (RFC 6749 §2.3.1: id and secret
 * form-encoded, then base64), client_credentials, scope, resource. */
static void request_token(const tokens_conf *c, const char *url, fetch_result *r)
{
    m2m_buf cred, body;
    char *basic = NULL, *auth = NULL;
    size_t blen;
    m2m_httpc_resp resp = {0};
    m2m_err rc;

    m2m_buf_init(&cred, 4096);
    m2m_buf_init(&body, 8192);
    rc = m2m_pct_encode(&cred, c->client_id, strlen(c->client_id));
    if (!rc)
        rc = m2m_buf_append(&cred, ":", 1);
    if (!rc)
        rc = m2m_pct_encode(&cred, c->client_secret, strlen(c->client_secret));
    if (!rc) {
        blen = M2M_B64_LEN(cred.len) + 1;
        basic = malloc(blen);
        auth = malloc(blen + 32);
        rc = basic && auth ? m2m_b64_encode((const uint8_t *)cred.data, cred.len, basic, blen, NULL)
                           : M2M_ERR_NOMEM;
    }
    if (!rc) {
        snprintf(auth, blen + 32, "Authorization: Basic %s", basic);
        rc = m2m_buf_appends(&body, "grant_type=client_credentials");
    }
    if (!rc && c->scope && !(rc = m2m_buf_appends(&body, "&scope=")))
        rc = m2m_pct_encode(&body, c->scope, strlen(c->scope));
    if (!rc && c->resource && !(rc = m2m_buf_appends(&body, "&resource=")))
        rc = m2m_pct_encode(&body, c->resource, strlen(c->resource));
    if (rc) {
        result_fail(r, rc, false, "cannot build the token request (%s)", m2m_err_text(rc));
        goto out;
    }
    const char *headers[] = {auth, "Content-Type: application/x-www-form-urlencoded",
                             "Accept: application/json", NULL};
    m2m_httpc_req req = {.method = "POST",
                         .url = url,
                         .headers = headers,
                         .body = body.data,
                         .body_len = body.len,
                         .timeout_ms = c->timeout_ms,
                         .max_response = MAX_TOKEN_REPLY};
    if (m2m_httpc_do(&req, &resp))
        result_fail(r, M2M_ERR_UPSTREAM, false, "token endpoint unreachable: %s", url);
    else
        parse_token_reply(c, &resp, r);
out:
    m2m_httpc_resp_free(&resp);
    if (cred.data)
        OPENSSL_cleanse(cred.data, cred.len);
    if (basic)
        OPENSSL_cleanse(basic, strlen(basic));
    if (auth)
        OPENSSL_cleanse(auth, strlen(auth));
    free(basic);
    free(auth);
    m2m_buf_free(&cred);
    m2m_buf_free(&body);
}

/* ---- state ------------------------------------------------------------- */

/* Seconds after issue at which a token is renewed: renew_percent of its
 * lifetime, or renew_skew_s before it expires if that is earlier - unless
 * the skew would leave less than half the lifetime (a 5 s token with a 30 s
 * skew), where the percentage alone decides. */
static double renew_offset(const tokens_conf *c, long lifetime)
{
    double by_share = (double)lifetime * c->renew_percent / 100.0;
    double by_skew = (double)(lifetime - c->renew_skew_s);
    if (by_skew >= lifetime / 2.0 && by_skew < by_share)
        return by_skew;
    return by_share;
}

/* Exponential backoff with "equal jitter": half the step fixed, half
 * random, never above the maximum. */
static double backoff_seconds(const tokens_conf *c, unsigned failures)
{
    double step = (double)c->backoff_min_ms;
    uint32_t rnd = 0;

    for (unsigned i = 1; i < failures && step < (double)c->backoff_max_ms; i++)
        step *= 2;
    if (step > (double)c->backoff_max_ms)
        step = (double)c->backoff_max_ms;
    m2m_rand_bytes((uint8_t *)&rnd, sizeof(rnd));
    return (step / 2 + step / 2 * ((double)rnd / 4294967296.0)) / 1000.0;
}

/* Records a request's result; called locked. */
static void apply_result(m2m_tokens *t, const fetch_result *r, double started)
{
    time_t wall = time(NULL);

    t->token_requests++;
    if (r->discovered[0] && !t->discovered_url)
        t->discovered_url = strdup(r->discovered);
    if (r->rc == M2M_OK) {
        double off = renew_offset(t->conf, r->lifetime);
        memcpy(t->token, r->token, strlen(r->token) + 1);
        snprintf(t->scope, sizeof(t->scope), "%s", r->scope);
        t->has_token = true;
        /* from when the request was sent: the server's clock started then */
        t->renew_mono = started + off;
        t->expires_at = wall + r->lifetime;
        t->renew_at = wall + (time_t)off;
        t->last_renewal = wall;
        t->failures = 0;
        t->retry_mono = 0;
        t->refused = false;
        t->last_error = M2M_OK;
        t->last_error_text[0] = '\0';
        M2M_INFO("token_obtained", "token for client %s: lifetime %lds, renewal in %.1fs",
                 t->conf->client_id, r->lifetime, off);
        return;
    }
    t->token_failures++;
    t->last_error = r->rc;
    snprintf(t->last_error_text, sizeof(t->last_error_text), "%s", r->text);
    t->last_error_at = wall;
    if (r->permanent) {
        t->refused = true;
        t->has_token = false; /* refused credentials: the old token is suspect too */
        M2M_ERROR("token_refused", "%s (not retried until reconfigured)", r->text);
        return;
    }
    t->failures++;
    double wait = backoff_seconds(t->conf, t->failures);
    t->retry_mono = mono_now() + wait;
    M2M_WARN("token_request_failed", "%s (attempt %u, next in %.2fs)", r->text, t->failures, wait);
}

/* Sends one token request with the lock released; the caller holds the lock
 * and has checked that no other request is in flight. Returns the result's
 * code, or M2M_ERR_UNAVAILABLE when the configuration changed meanwhile (the
 * caller looks again). */
static m2m_err fetch_locked(m2m_tokens *t)
{
    tokens_conf *c = t->conf;
    uint64_t gen = t->conf_gen;
    char *url = NULL;
    fetch_result *r = calloc(1, sizeof(*r)); /* ~10 KiB: not on a caller's stack */
    m2m_err rc;
    double started = mono_now();

    if (!r)
        return M2M_ERR_NOMEM;
    atomic_fetch_add(&c->refs, 1);
    url = c->token_url ? strdup(c->token_url) : t->discovered_url ? strdup(t->discovered_url) : NULL;
    bool need_discovery = !c->token_url && !t->discovered_url;
    t->fetching = true;
    pthread_mutex_unlock(&t->mu);

    if (need_discovery) {
        discover(c, r);
        if (!r->rc && r->discovered[0])
            url = strdup(r->discovered);
    }
    if (!r->rc && !url)
        result_fail(r, M2M_ERR_NOMEM, false, "out of memory");
    if (!r->rc)
        request_token(c, url, r);

    pthread_mutex_lock(&t->mu);
    t->fetching = false;
    if (gen == t->conf_gen) {
        apply_result(t, r, started);
        rc = r->rc;
    } else {
        rc = M2M_ERR_UNAVAILABLE;
    }
    pthread_cond_broadcast(&t->cv);
    OPENSSL_cleanse(r->token, sizeof(r->token));
    free(r);
    free(url);
    conf_release(c);
    return rc;
}

/* FNV-1a: only to recognise a token again, never to protect one. */
static uint64_t token_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void copy_token(const m2m_tokens *t, char *buf, size_t cap, time_t *expires_at, m2m_err *rc)
{
    size_t n = strlen(t->token);
    if (n + 1 > cap) {
        *rc = M2M_ERR_PAYLOAD_TOO_LARGE;
        return;
    }
    memcpy(buf, t->token, n + 1);
    if (expires_at)
        *expires_at = t->expires_at;
    *rc = M2M_OK;
}

m2m_err m2m_tokens_get(m2m_tokens *t, char *buf, size_t cap, time_t *expires_at)
{
    m2m_err rc;

    if (!t || !buf || !cap)
        return M2M_ERR_INTERNAL;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        double now = mono_now();
        if (t->has_token && now < t->renew_mono) {
            copy_token(t, buf, cap, expires_at, &rc);
            break;
        }
        if (t->refused) {
            rc = t->last_error;
            break;
        }
        if (t->fetching) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        if (now < t->retry_mono) {
            rc = t->last_error ? t->last_error : M2M_ERR_UPSTREAM;
            break;
        }
        rc = fetch_locked(t);
        if (rc == M2M_ERR_UNAVAILABLE)
            continue; /* reconfigured meanwhile: look again */
        if (rc == M2M_OK) /* fresh from the endpoint, even if its lifetime is tiny */
            copy_token(t, buf, cap, expires_at, &rc);
        break;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

m2m_err m2m_tokens_renew(m2m_tokens *t)
{
    m2m_err rc;

    if (!t)
        return M2M_ERR_INTERNAL;
    pthread_mutex_lock(&t->mu);
    t->refused = false;
    t->failures = 0;
    t->retry_mono = 0;
    for (;;) {
        if (t->fetching) { /* one in flight: its result is as new as ours would be */
            uint64_t before = t->token_requests;
            while (t->fetching)
                pthread_cond_wait(&t->cv, &t->mu);
            if (t->token_requests == before)
                continue; /* dropped by a reconfiguration */
            rc = t->last_error;
            break;
        }
        rc = fetch_locked(t);
        if (rc != M2M_ERR_UNAVAILABLE)
            break;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void m2m_tokens_invalidate(m2m_tokens *t, const char *token)
{
    if (!t || !token)
        return;
    pthread_mutex_lock(&t->mu);
    if (t->has_token && strcmp(token, t->token) == 0) {
        t->has_token = false;
        M2M_INFO("token_invalidated", "a resource server refused the token of client %s",
                 t->conf->client_id);
    }
    pthread_mutex_unlock(&t->mu);
}

m2m_err m2m_tokens_call(m2m_tokens *t, const m2m_httpc_req *req, m2m_httpc_resp *resp)
{
    char token[M2M_TOKENS_MAX_TOKEN + 1];
    char auth[M2M_TOKENS_MAX_TOKEN + 32];
    const char *headers[34];
    size_t n = 0;
    m2m_err rc;

    memset(resp, 0, sizeof(*resp));
    if (!t || !req)
        return M2M_ERR_INTERNAL;
    for (; req->headers && req->headers[n]; n++)
        if (n + 2 >= sizeof(headers) / sizeof(headers[0]))
            return M2M_ERR_INTERNAL;
    if (n)
        memcpy(headers, req->headers, n * sizeof(headers[0]));
    headers[n] = auth;
    headers[n + 1] = NULL;
    m2m_httpc_req with = *req;
    with.headers = headers;

    for (int attempt = 0; attempt < 2; attempt++) {
        rc = m2m_tokens_get(t, token, sizeof(token), NULL);
        if (rc) {
            if (rc == M2M_ERR_UPSTREAM) /* the token endpoint's failure, not the call's */
                rc = M2M_ERR_UNAVAILABLE;
            break;
        }
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        pthread_mutex_lock(&t->mu);
        t->api_calls++;
        if (attempt)
            t->api_retries++;
        pthread_mutex_unlock(&t->mu);
        m2m_httpc_resp_free(resp);
        memset(resp, 0, sizeof(*resp));
        rc = m2m_httpc_do(&with, resp);
        if (rc || resp->status != 401)
            break;
        /* Refused. One more try with a new token - unless this token is
         * itself one that a retry got refused with: then the resource
         * server refuses our tokens whatever their age, and renewing on
         * every call would only flood the token endpoint. */
        uint64_t h = token_hash(token);
        pthread_mutex_lock(&t->mu);
        bool known_refused = t->refused_fresh == h;
        if (attempt == 1)
            t->refused_fresh = h;
        pthread_mutex_unlock(&t->mu);
        if (attempt == 1 || known_refused)
            break;
        m2m_tokens_invalidate(t, token);
    }
    OPENSSL_cleanse(token, sizeof(token));
    OPENSSL_cleanse(auth, sizeof(auth));
    return rc;
}

void m2m_tokens_status_get(m2m_tokens *t, m2m_tokens_status *out)
{
    memset(out, 0, sizeof(*out));
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    out->has_token = t->has_token && mono_now() < t->renew_mono;
    if (t->has_token) {
        out->expires_at = t->expires_at;
        out->renew_at = t->renew_at;
        snprintf(out->scope, sizeof(out->scope), "%s", t->scope);
    }
    out->last_renewal = t->last_renewal;
    out->last_error = t->last_error;
    snprintf(out->last_error_text, sizeof(out->last_error_text), "%s", t->last_error_text);
    out->last_error_at = t->last_error_at;
    out->credentials_refused = t->refused;
    out->token_requests = t->token_requests;
    out->token_failures = t->token_failures;
    out->api_calls = t->api_calls;
    out->api_retries = t->api_retries;
    pthread_mutex_unlock(&t->mu);
}

/* ---- background renewal ------------------------------------------------ */

static void wait_until(m2m_tokens *t, double when)
{
    struct timespec ts;
    double s = when > 0 ? when : mono_now() + 3600;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
}

/* Renews at the renewal time, and retries a failed renewal when the backoff
 * allows, as long as the manager has had a token once and its credentials
 * are not refused. Before the first m2m_tokens_get() it sends nothing. */
static void *renewer(void *arg)
{
    m2m_tokens *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        double now = mono_now(), due = 0;
        if (!t->fetching && !t->refused && t->last_renewal) {
            if (t->has_token)
                due = t->renew_mono > t->retry_mono ? t->renew_mono : t->retry_mono;
            else if (t->failures)
                due = t->retry_mono;
        }
        if (due > 0 && now >= due) {
            fetch_locked(t);
            continue;
        }
        wait_until(t, due);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- life cycle -------------------------------------------------------- */

m2m_err m2m_tokens_new(const m2m_tokens_cfg *cfg, m2m_tokens **out)
{
    m2m_tokens *t;
    pthread_condattr_t ca;
    m2m_err rc;

    *out = NULL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return M2M_ERR_NOMEM;
    rc = conf_new(cfg, &t->conf);
    if (rc) {
        free(t);
        return rc;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->background = cfg->background;
    if (t->background) {
        if (pthread_create(&t->thread, NULL, renewer, t) != 0) {
            m2m_tokens_free(t);
            return M2M_ERR_NOMEM;
        }
        t->thread_started = true;
    }
    *out = t;
    return M2M_OK;
}

m2m_err m2m_tokens_reconfigure(m2m_tokens *t, const m2m_tokens_cfg *cfg)
{
    tokens_conf *c, *old;
    m2m_err rc;

    if (!t)
        return M2M_ERR_INTERNAL;
    rc = conf_new(cfg, &c);
    if (rc)
        return rc;
    pthread_mutex_lock(&t->mu);
    old = t->conf;
    t->conf = c;
    t->conf_gen++;
    free(t->discovered_url);
    t->discovered_url = NULL;
    t->has_token = false;
    OPENSSL_cleanse(t->token, sizeof(t->token));
    t->refused = false;
    t->failures = 0;
    t->retry_mono = 0;
    t->last_error = M2M_OK;
    t->last_error_text[0] = '\0';
    t->last_renewal = 0;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    conf_release(old);
    return M2M_OK;
}

void m2m_tokens_free(m2m_tokens *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_broadcast(&t->cv);
    while (t->fetching) /* a caller's request in flight */
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    if (t->thread_started)
        pthread_join(t->thread, NULL);
    OPENSSL_cleanse(t->token, sizeof(t->token));
    conf_release(t->conf);
    free(t->discovered_url);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
