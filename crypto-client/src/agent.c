#include "agent.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetcher.h"
#include "m2m/httpc.h"
#include "m2m/log.h"

#define MAX_UPSTREAM_REPLY (1024 * 1024)

/* <server_url><path> unless the operator gave the URL itself; called locked. */
static void url_for(const agent_ctx *a, const char *explicit_url, const char *path, char *out,
                    size_t cap)
{
    if (explicit_url && *explicit_url)
        snprintf(out, cap, "%s", explicit_url);
    else
        snprintf(out, cap, "%s%s", a->settings.server_url, path);
}

/* The token manager's configuration from the settings; called locked. */
static void tokens_cfg(const agent_ctx *a, char *token_url, size_t cap, m2m_tokens_cfg *tc)
{
    const agent_config *cfg = a->cfg;
    url_for(a, cfg->token_url, "/api/auth/token", token_url, cap);
    *tc = (m2m_tokens_cfg){.token_url = token_url,
                           .client_id = a->settings.client_id,
                           .client_secret = a->settings.client_secret,
                           .scope = cfg->scope,
                           .resource = cfg->resource,
                           .renew_percent = (unsigned)cfg->renew_percent,
                           .renew_skew_s = cfg->renew_skew,
                           .backoff_min_ms = cfg->backoff_min_ms,
                           .backoff_max_ms = cfg->backoff_max_ms,
                           .timeout_ms = cfg->upstream_timeout_ms,
                           .background = true};
}

/* Brings the token manager in line with the settings; called locked. */
static m2m_err apply_settings(agent_ctx *a)
{
    char token_url[AGENT_URL_MAX + 64];
    m2m_tokens_cfg tc;

    if (!*a->settings.client_id || !*a->settings.client_secret)
        return M2M_OK; /* tokens_of() answers "not configured" meanwhile */
    tokens_cfg(a, token_url, sizeof(token_url), &tc);
    if (a->tokens)
        return m2m_tokens_reconfigure(a->tokens, &tc);
    return m2m_tokens_new(&tc, &a->tokens);
}

m2m_err agent_init(agent_ctx *a, const agent_config *cfg, char *errbuf, size_t errlen)
{
    m2m_err rc;

    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->save_mu, NULL);
    a->metrics = m2m_metrics_new("agent");
    a->cache = agent_cache_new();
    if (!a->metrics || !a->cache)
        return M2M_ERR_NOMEM;
    a->stale_served = m2m_metrics_counter(a->metrics, "agent_stale_replies_total",
                                          "Replies served from the cache while the "
                                          "crypto-server was out of reach.");
    a->upstream_failures = m2m_metrics_counter(a->metrics, "agent_upstream_failures_total",
                                               "Calls to the crypto-server that failed.");
    a->registrations = m2m_metrics_counter(a->metrics, "agent_registrations_total",
                                           "Successful registrations at the auth-service.");
    /* environment first, the state file over it */
    if (!agent_url_valid(cfg->server_url)) {
        m2m_errbuf_set(errbuf, errlen, "AGENT_SERVER_URL: expected an http(s) URL");
        return M2M_ERR_CONFIG;
    }
    agent_url_set(a->settings.server_url, cfg->server_url);
    if ((*cfg->client_id && !agent_client_id_valid(cfg->client_id)) ||
        (*cfg->client_secret && !agent_secret_valid(cfg->client_secret)) ||
        !agent_app_name_valid(cfg->app_name)) {
        m2m_errbuf_set(errbuf, errlen,
                       "AGENT_CLIENT_ID, AGENT_CLIENT_SECRET or AGENT_APP_NAME is invalid "
                       "(client_id: 1-128 of A-Z a-z 0-9 . _ : @ -; secret: %d-%d printable "
                       "characters)",
                       AGENT_SECRET_MIN, AGENT_SECRET_MAX);
        return M2M_ERR_CONFIG;
    }
    snprintf(a->settings.client_id, sizeof(a->settings.client_id), "%s", cfg->client_id);
    snprintf(a->settings.client_secret, sizeof(a->settings.client_secret), "%s",
             cfg->client_secret);
    snprintf(a->settings.app_name, sizeof(a->settings.app_name), "%s", cfg->app_name);
    for (const char *const *u = (const char *const[]){cfg->token_url, cfg->register_url,
                                                      cfg->currency_url, NULL};
         *u; u++)
        if (**u && !agent_url_valid(*u)) {
            m2m_errbuf_set(errbuf, errlen, "AGENT_*_URL: expected an http(s) URL, got '%s'", *u);
            return M2M_ERR_CONFIG;
        }
    rc = agent_settings_load(cfg->state_file, &a->settings, errbuf, errlen);
    if (rc == M2M_ERR_NOT_FOUND)
        rc = M2M_OK;
    else if (rc)
        return rc;
    else
        M2M_INFO("state_loaded", "configuration from %s (client %s)", cfg->state_file,
                 *a->settings.client_id ? a->settings.client_id : "none");
    rc = apply_settings(a);
    if (rc) {
        m2m_errbuf_set(errbuf, errlen, "cannot set up the token manager: %s", m2m_err_text(rc));
        return rc;
    }
    return fetcher_start(a, &a->fetch);
}

void agent_free(agent_ctx *a)
{
    fetcher_stop(a->fetch);
    m2m_tokens_free(a->tokens);
    agent_cache_free(a->cache);
    m2m_metrics_free(a->metrics);
    agent_settings_wipe(&a->settings);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->save_mu);
    memset(a, 0, sizeof(*a));
}

/* Saves, then swaps in, new settings. Writers are serialised by save_mu, so
 * the file and the memory agree; a->mu is held only for the swap, so status
 * readers on event threads never wait for an fsync. */
static m2m_err settings_replace(agent_ctx *a, const agent_settings *s, char *errbuf,
                                size_t errlen)
{
    m2m_err rc = agent_settings_save(a->cfg->state_file, s, errbuf, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&a->mu);
    /* another client or another suite: what the old one fetched is not
     * this one's to serve, even as stale data */
    bool other = strcmp(a->settings.client_id, s->client_id) != 0 ||
                 strcmp(a->settings.server_url, s->server_url) != 0;
    agent_settings_wipe(&a->settings);
    a->settings = *s;
    rc = apply_settings(a);
    if (other) {
        agent_cache_clear(a->cache);
        a->upstream_ok = false;
        a->upstream_error[0] = '\0';
    }
    pthread_mutex_unlock(&a->mu);
    if (rc)
        m2m_errbuf_set(errbuf, errlen, "cannot set up the token manager: %s", m2m_err_text(rc));
    return rc;
}

m2m_err agent_configure(agent_ctx *a, const agent_settings *s, char *errbuf, size_t errlen)
{
    pthread_mutex_lock(&a->save_mu);
    m2m_err rc = settings_replace(a, s, errbuf, errlen);
    pthread_mutex_unlock(&a->save_mu);
    if (!rc) {
        M2M_INFO("configured", "client %s at %s", s->client_id, s->server_url);
        fetcher_kick(a->fetch);
    }
    return rc;
}

static agent_outcome outcome(m2m_err rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static agent_outcome outcome(m2m_err rc, const char *fmt, ...)
{
    agent_outcome o = {.rc = rc};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o.desc, sizeof(o.desc), fmt, ap);
    va_end(ap);
    return o;
}

static agent_outcome not_configured(const agent_settings *s)
{
    if (!*s->client_id)
        return outcome(M2M_ERR_NOT_CONFIGURED,
                       "no client_id: POST /api/configure {\"client_id\", \"client_secret\"} "
                       "(or set AGENT_CLIENT_ID)");
    return outcome(M2M_ERR_NOT_CONFIGURED,
                   "client %s has no secret: POST /api/register to have one generated, or "
                   "POST /api/configure with client_secret",
                   s->client_id);
}

/* What a token manager error means to the agent's caller. */
static agent_outcome token_failure(agent_ctx *a, m2m_err rc)
{
    m2m_tokens_status st;
    m2m_tokens_status_get(a->tokens, &st);
    /* 409, not 401: the caller's request is fine, the agent's own
     * configuration is what must change */
    if (rc == M2M_ERR_INVALID_CLIENT)
        return outcome(M2M_ERR_CREDENTIALS_REFUSED,
                       "the auth-service refused the agent's credentials (%s): POST "
                       "/api/configure with the right secret, or POST /api/register",
                       st.last_error_text);
    if (st.credentials_refused)
        return outcome(M2M_ERR_UPSTREAM, "the auth-service refused the token request: %s",
                       st.last_error_text);
    return outcome(M2M_ERR_UNAVAILABLE, "cannot get a token: %s",
                   *st.last_error_text ? st.last_error_text : m2m_err_text(rc));
}

agent_outcome agent_register(agent_ctx *a, json_t **reply)
{
    agent_settings s;
    char url[AGENT_URL_MAX + 64], *body = NULL;
    m2m_httpc_resp resp = {0};
    json_t *req_body = NULL, *answer = NULL;
    agent_outcome o;
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Accept: application/json", NULL};

    *reply = NULL;
    pthread_mutex_lock(&a->mu);
    s = a->settings;
    url_for(a, a->cfg->register_url, "/api/auth/register", url, sizeof(url));
    pthread_mutex_unlock(&a->mu);
    if (!*s.client_id) {
        o = not_configured(&s);
        goto out;
    }
    req_body = json_pack("{s:s, s:s}", "client_id", s.client_id, "app_name", s.app_name);
    if (req_body && *s.client_secret)
        json_object_set_new(req_body, "client_secret", json_string(s.client_secret));
    body = req_body ? json_dumps(req_body, JSON_COMPACT) : NULL;
    if (!body) {
        o = outcome(M2M_ERR_NOMEM, "out of memory");
        goto out;
    }
    m2m_httpc_req req = {.method = "POST",
                         .url = url,
                         .headers = headers,
                         .body = body,
                         .body_len = strlen(body),
                         .timeout_ms = a->cfg->upstream_timeout_ms,
                         .max_response = 64 * 1024};
    if (m2m_httpc_do(&req, &resp)) {
        o = outcome(M2M_ERR_UNAVAILABLE, "the auth-service at %s is unreachable", url);
        goto out;
    }
    answer = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    const char *err = json_string_value(json_object_get(answer, "error"));
    const char *desc = json_string_value(json_object_get(answer, "error_description"));
    if (resp.status == 409) {
        o = outcome(M2M_ERR_CONFLICT,
                    "the auth-service already has a client '%s': if it is this agent's, POST "
                    "/api/login; otherwise POST /api/configure with another client_id",
                    s.client_id);
        goto out;
    }
    if (resp.status >= 502 && resp.status <= 504) {
        o = outcome(M2M_ERR_UNAVAILABLE, "the auth-service is unavailable (HTTP %ld)",
                    resp.status);
        goto out;
    }
    if (resp.status != 201 || !json_is_object(answer)) {
        o = outcome(M2M_ERR_UPSTREAM, "the auth-service refused the registration: HTTP %ld %s%s%s",
                    resp.status, err ? err : "", desc ? ": " : "", desc ? desc : "");
        goto out;
    }
    const char *generated = json_string_value(json_object_get(answer, "client_secret"));
    if (!*s.client_secret) {
        if (!generated || !agent_secret_valid(generated)) {
            o = outcome(M2M_ERR_UPSTREAM, "the auth-service registered the client but sent no "
                                          "usable secret");
            goto out;
        }
        char errbuf[256];
        m2m_err rc = M2M_OK;
        pthread_mutex_lock(&a->save_mu);
        /* only if nobody reconfigured meanwhile (writers hold save_mu) */
        if (strcmp(a->settings.client_id, s.client_id) == 0 && !*a->settings.client_secret) {
            agent_settings next = a->settings;
            snprintf(next.client_secret, sizeof(next.client_secret), "%s", generated);
            rc = settings_replace(a, &next, errbuf, sizeof(errbuf));
            agent_settings_wipe(&next);
        }
        pthread_mutex_unlock(&a->save_mu);
        if (rc) {
            M2M_ERROR("state_write_failed", "%s", errbuf);
            o = outcome(M2M_ERR_IO, "registered, but the generated secret could not be saved: %s",
                        errbuf);
            goto out;
        }
    } else {
        pthread_mutex_lock(&a->mu); /* a refused state from before the registration ends */
        apply_settings(a);
        pthread_mutex_unlock(&a->mu);
    }
    json_object_del(answer, "client_secret");
    *reply = answer;
    answer = NULL;
    m2m_counter_add(a->registrations, 1);
    M2M_INFO("registered", "client %s registered at %s", s.client_id, url);
    fetcher_kick(a->fetch);
    o = outcome(M2M_OK, "registered");
out:
    agent_settings_wipe(&s);
    if (body) {
        OPENSSL_cleanse(body, strlen(body));
        free(body);
    }
    json_decref(req_body);
    json_decref(answer);
    m2m_httpc_resp_free(&resp);
    return o;
}

/* The token manager, or NULL with the reason when there is none; the
 * pointer stays valid until agent_free. */
static m2m_tokens *tokens_of(agent_ctx *a, agent_outcome *why)
{
    m2m_tokens *t;
    pthread_mutex_lock(&a->mu);
    t = a->tokens;
    if (!*a->settings.client_id || !*a->settings.client_secret)
        t = NULL;
    if (!t)
        *why = not_configured(&a->settings);
    pthread_mutex_unlock(&a->mu);
    return t;
}

agent_outcome agent_login(agent_ctx *a, m2m_tokens_status *st)
{
    agent_outcome o = {.rc = M2M_OK};
    m2m_tokens *t = tokens_of(a, &o);
    if (!t)
        return o;
    m2m_err rc = m2m_tokens_renew(t);
    if (rc)
        return token_failure(a, rc);
    m2m_tokens_status_get(t, st);
    return outcome(M2M_OK, "authenticated");
}

static void upstream_state(agent_ctx *a, bool ok, const char *why)
{
    pthread_mutex_lock(&a->mu);
    a->upstream_ok = ok;
    snprintf(a->upstream_error, sizeof(a->upstream_error), "%s", ok ? "" : why);
    pthread_mutex_unlock(&a->mu);
    if (!ok)
        m2m_counter_add(a->upstream_failures, 1);
}

agent_outcome agent_fetch(agent_ctx *a, const char *sym, char **body)
{
    agent_outcome o = {.rc = M2M_OK};
    char url[AGENT_URL_MAX + 64];
    m2m_httpc_resp resp = {0};
    json_t *parsed = NULL;
    static const char *const headers[] = {"Accept: application/json", NULL};

    *body = NULL;
    m2m_tokens *t = tokens_of(a, &o);
    if (!t)
        return o;
    pthread_mutex_lock(&a->mu);
    url_for(a, a->cfg->currency_url, "/api/currency", url, sizeof(url));
    pthread_mutex_unlock(&a->mu);
    size_t n = strlen(url);
    snprintf(url + n, sizeof(url) - n, "/%s", sym ? sym : "");

    m2m_httpc_req req = {.url = url,
                         .headers = headers,
                         .timeout_ms = a->cfg->upstream_timeout_ms,
                         .max_response = MAX_UPSTREAM_REPLY};
    m2m_err rc = m2m_tokens_call(t, &req, &resp);
    if (rc && rc != M2M_ERR_UPSTREAM) { /* no token */
        o = token_failure(a, rc);
        upstream_state(a, false, o.desc);
        goto out;
    }
    if (rc) {
        o = outcome(M2M_ERR_UNAVAILABLE, "the crypto-server is unreachable");
        upstream_state(a, false, o.desc);
        goto out;
    }
    parsed = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    if (resp.status == 404 && sym) { /* the caller's mistake, not an outage */
        o = outcome(M2M_ERR_NOT_FOUND, "unknown currency symbol %s", sym);
        upstream_state(a, true, "");
        goto out;
    }
    if (resp.status != 200 || !(sym ? json_is_object(parsed) : json_is_array(parsed))) {
        const char *err = json_string_value(json_object_get(parsed, "error"));
        if (resp.status == 200)
            o = outcome(M2M_ERR_UPSTREAM, "the crypto-server sent malformed data");
        else if (resp.status >= 500)
            o = outcome(M2M_ERR_UNAVAILABLE, "the crypto-server is unavailable (HTTP %ld)",
                        resp.status);
        else
            o = outcome(M2M_ERR_UPSTREAM, "the crypto-server refused the call: HTTP %ld%s%s",
                        resp.status, err ? " " : "", err ? err : "");
        upstream_state(a, false, o.desc);
        goto out;
    }
    rc = sym ? agent_cache_put_one(a->cache, sym, resp.body.data, resp.body.len)
             : agent_cache_put_all(a->cache, resp.body.data, resp.body.len);
    if (rc)
        M2M_WARN("cache_failed", "cannot keep the data: %s", m2m_err_text(rc));
    upstream_state(a, true, "");
    *body = m2m_buf_steal(&resp.body);
out:
    json_decref(parsed);
    m2m_httpc_resp_free(&resp);
    return o;
}

void agent_snapshot_get(agent_ctx *a, agent_snapshot *out)
{
    m2m_tokens *t;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&a->mu);
    out->configured = *a->settings.client_id != '\0';
    out->has_secret = *a->settings.client_secret != '\0';
    snprintf(out->client_id, sizeof(out->client_id), "%s", a->settings.client_id);
    snprintf(out->server_url, sizeof(out->server_url), "%s", a->settings.server_url);
    out->upstream_ok = a->upstream_ok;
    snprintf(out->upstream_error, sizeof(out->upstream_error), "%s", a->upstream_error);
    t = out->configured && out->has_secret ? a->tokens : NULL;
    pthread_mutex_unlock(&a->mu);
    out->has_tokens = t != NULL;
    if (t)
        m2m_tokens_status_get(t, &out->tokens);
}
