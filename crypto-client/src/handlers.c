#include "handlers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "m2m/buf.h"
#include "m2m/json.h"
#include "m2m/log.h"

/* RFC 3339, UTC, seconds. */
static void iso_time(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *iso_or_null(time_t t)
{
    char s[32];
    if (!t)
        return json_null();
    iso_time(t, s);
    return json_string(s);
}

static void reply_outcome(m2m_req *req, const agent_outcome *o)
{
    if (o->rc == M2M_ERR_UNAVAILABLE)
        m2m_reply_header(req, "Retry-After", "5");
    m2m_reply_error(req, o->rc, o->desc);
}

/* ---- POST /api/configure ------------------------------------------------ */

static void reject_field(m2m_req *req, const char *field, const char *desc)
{
    m2m_reply_error_extra(req, M2M_ERR_INVALID_REQUEST, desc, json_pack("{s:s}", "field", field));
}

void agent_handle_configure(m2m_req *req, void *arg)
{
    agent_ctx *a = arg;
    json_t *body = NULL;
    const char *id = NULL, *secret = NULL, *url = NULL, *app = NULL, *key;
    json_t *val;
    agent_settings s;
    char desc[256], errbuf[256];
    size_t len;

    if (!m2m_req_may_block(req)) { /* it writes the state file */
        m2m_req_defer(req, agent_handle_configure);
        return;
    }
    memset(&s, 0, sizeof(s));
    if (strcmp(m2m_req_content_type(req), "application/json") != 0) {
        m2m_reply_error(req, M2M_ERR_UNSUPPORTED_MEDIA_TYPE,
                        "Content-Type must be application/json");
        goto out;
    }
    const char *text = m2m_req_body(req, &len);
    if (m2m_json_parse_object(text, len, &body, desc, sizeof(desc))) {
        m2m_reply_error(req, M2M_ERR_INVALID_REQUEST, desc);
        goto out;
    }
    json_object_foreach(body, key, val)
    {
        if (strcmp(key, "client_id") && strcmp(key, "client_secret") &&
            strcmp(key, "server_url") && strcmp(key, "app_name")) {
            snprintf(desc, sizeof(desc),
                     "unknown member '%.64s' (expected client_id, client_secret, server_url, "
                     "app_name)", key);
            reject_field(req, key, desc);
            goto out;
        }
    }
    if (m2m_json_get_string(body, "client_id", true, AGENT_CLIENT_ID_MAX, &id, desc,
                            sizeof(desc)) ||
        !agent_client_id_valid(id)) {
        reject_field(req, "client_id",
                     "client_id: 1-128 characters of A-Z a-z 0-9 . _ : @ -, starting with a "
                     "letter or digit");
        goto out;
    }
    if (m2m_json_get_string(body, "client_secret", false, AGENT_SECRET_MAX, &secret, desc,
                            sizeof(desc)) ||
        (secret && !agent_secret_valid(secret))) {
        snprintf(desc, sizeof(desc),
                 "client_secret: %d to %d printable characters (omit it to have POST "
                 "/api/register get a generated one)",
                 AGENT_SECRET_MIN, AGENT_SECRET_MAX);
        reject_field(req, "client_secret", desc);
        goto out;
    }
    if (m2m_json_get_string(body, "server_url", false, AGENT_URL_MAX, &url, desc,
                            sizeof(desc)) ||
        (url && !agent_url_valid(url))) {
        reject_field(req, "server_url",
                     "server_url: an http:// or https:// URL of at most 512 bytes, without "
                     "query or fragment");
        goto out;
    }
    if (m2m_json_get_string(body, "app_name", false, AGENT_APP_NAME_MAX, &app, desc,
                            sizeof(desc)) ||
        (app && !agent_app_name_valid(app))) {
        reject_field(req, "app_name", "app_name: printable text of at most 128 bytes");
        goto out;
    }

    agent_snapshot now;
    agent_snapshot_get(a, &now);
    snprintf(s.client_id, sizeof(s.client_id), "%s", id);
    snprintf(s.client_secret, sizeof(s.client_secret), "%s", secret ? secret : "");
    agent_url_set(s.server_url, url ? url : now.server_url);
    snprintf(s.app_name, sizeof(s.app_name), "%s", app ? app : a->cfg->app_name);
    if (agent_configure(a, &s, errbuf, sizeof(errbuf))) {
        M2M_ERROR("state_write_failed", "%s", errbuf);
        m2m_reply_error(req, M2M_ERR_UNAVAILABLE, "cannot save the configuration");
        goto out;
    }
    m2m_reply_json(req, 200,
                   json_pack("{s:b, s:s, s:s, s:b}", "configured", 1, "client_id", s.client_id,
                             "server_url", s.server_url, "has_secret", *s.client_secret != 0));
out:
    agent_settings_wipe(&s);
    json_decref(body);
}

/* ---- POST /api/register, POST /api/login ----------------------------------- */

void agent_handle_register(m2m_req *req, void *arg)
{
    json_t *reply = NULL;
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, agent_handle_register);
        return;
    }
    agent_outcome o = agent_register(arg, &reply);
    if (o.rc) {
        reply_outcome(req, &o);
        return;
    }
    json_object_set_new(reply, "registered", json_true());
    m2m_reply_json(req, 201, reply);
}

static json_t *token_json(const m2m_tokens_status *st)
{
    char exp[32], renew[32];
    if (!st->has_token)
        return json_null();
    iso_time(st->expires_at, exp);
    iso_time(st->renew_at, renew);
    long long left = (long long)(st->expires_at - time(NULL));
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "token_type", "Bearer", "expires_at", exp,
                     "expires_in", (json_int_t)(left > 0 ? left : 0), "renew_at", renew, "scope",
                     st->scope);
}

void agent_handle_login(m2m_req *req, void *arg)
{
    m2m_tokens_status st;
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, agent_handle_login);
        return;
    }
    agent_outcome o = agent_login(arg, &st);
    if (o.rc) {
        reply_outcome(req, &o);
        return;
    }
    json_t *body = token_json(&st);
    if (json_is_object(body))
        json_object_set_new(body, "authenticated", json_true());
    m2m_reply_json(req, 200, body);
}

/* ---- GET /api/status, /api/health ---------------------------------------- */

void agent_handle_status(m2m_req *req, void *arg)
{
    agent_ctx *a = arg;
    agent_snapshot sn;
    double age = 0;

    agent_snapshot_get(a, &sn);
    time_t last_fetch = agent_cache_last_fetch(a->cache, &age);
    json_t *err = json_null();
    if (sn.has_tokens && sn.tokens.last_error)
        err = json_pack("{s:s, s:s, s:o}", "error", m2m_err_code(sn.tokens.last_error),
                        "error_description", sn.tokens.last_error_text, "at",
                        iso_or_null(sn.tokens.last_error_at));
    json_t *body = json_pack(
        "{s:b, s:o, s:s, s:b, s:b, s:o, s:o, s:o, s:b,"
        " s:{s:I, s:I, s:I, s:I, s:I},"
        " s:{s:o, s:b, s:o, s:o}}",
        "configured", sn.configured, "client_id",
        sn.configured ? json_string(sn.client_id) : json_null(), "server_url", sn.server_url,
        "has_secret", sn.has_secret, "authenticated", sn.has_tokens && sn.tokens.has_token,
        "token", sn.has_tokens ? token_json(&sn.tokens) : json_null(), "last_renewal",
        iso_or_null(sn.has_tokens ? sn.tokens.last_renewal : 0), "last_error", err,
        "credentials_refused", sn.has_tokens && sn.tokens.credentials_refused, "counts",
        "token_requests", (json_int_t)sn.tokens.token_requests, "token_failures",
        (json_int_t)sn.tokens.token_failures, "api_calls", (json_int_t)sn.tokens.api_calls,
        "api_retries", (json_int_t)sn.tokens.api_retries, "stale_served",
        (json_int_t)atomic_load(&a->stale_served->value), "currencies", "last_fetch",
        iso_or_null(last_fetch), "stale", last_fetch && !sn.upstream_ok, "age_seconds",
        last_fetch ? json_integer((json_int_t)age) : json_null(), "upstream_error",
        sn.upstream_ok || !*sn.upstream_error ? json_null() : json_string(sn.upstream_error));
    m2m_reply_json(req, 200, body);
}

void agent_handle_health(m2m_req *req, void *arg)
{
    agent_snapshot sn;
    agent_snapshot_get(arg, &sn);
    m2m_reply_json(req, 200,
                   json_pack("{s:s, s:b, s:b}", "status", "ok", "configured", sn.configured,
                             "authenticated", sn.has_tokens && sn.tokens.has_token));
}

/* ---- GET /api/currencies[/SYM] ------------------------------------------ */

/* {"stale":…,"age_seconds":…,"fetched_at":…,["stale_reason":…,]"data":<text>}:
 * built as text so that the data stays byte for byte the server's. */
static void reply_envelope(m2m_req *req, const char *data, time_t fetched_at, double age,
                           const char *stale_reason)
{
    m2m_buf out;
    char at[32], agehdr[32];
    char *reason = NULL;

    iso_time(fetched_at, at);
    if (stale_reason) {
        json_t *js = json_string(stale_reason);
        reason = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        json_decref(js);
    }
    m2m_buf_init(&out, 2 * 1024 * 1024);
    if (m2m_buf_appendf(&out, "{\"stale\":%s,\"age_seconds\":%lld,\"fetched_at\":\"%s\",",
                        stale_reason ? "true" : "false", (long long)age, at) ||
        (reason && m2m_buf_appendf(&out, "\"stale_reason\":%s,", reason)) ||
        m2m_buf_appendf(&out, "\"data\":%s}", data)) {
        m2m_reply_error(req, M2M_ERR_NOMEM, "reply too large");
    } else {
        if (stale_reason) { /* RFC 9111 §5.1 */
            snprintf(agehdr, sizeof(agehdr), "%lld", (long long)age);
            m2m_reply_header(req, "Age", agehdr);
        }
        m2m_reply_raw(req, 200, "application/json", out.data, out.len);
    }
    free(reason);
    m2m_buf_free(&out);
}

static void serve_rates(m2m_req *req, agent_ctx *a, const char *sym)
{
    char *body = NULL;
    agent_cached c;

    agent_outcome o = agent_fetch(a, sym, &body);
    if (o.rc == M2M_OK) {
        reply_envelope(req, body, time(NULL), 0, NULL);
        free(body);
        return;
    }
    /* the caller's mistake or no credentials: nothing a cache can fix */
    if (o.rc == M2M_ERR_NOT_FOUND || o.rc == M2M_ERR_NOT_CONFIGURED ||
        agent_cache_get(a->cache, sym, &c)) {
        reply_outcome(req, &o);
        return;
    }
    m2m_counter_add(a->stale_served, 1);
    reply_envelope(req, c.json, c.fetched_at, c.age, o.desc);
    free(c.json);
}

void agent_handle_currencies(m2m_req *req, void *arg)
{
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, agent_handle_currencies);
        return;
    }
    serve_rates(req, arg, NULL);
}

void agent_handle_currency(m2m_req *req, void *arg)
{
    const char *p = m2m_req_param(req, 0);
    char sym[AGENT_SYMBOL_MAX + 1];
    size_t n = p ? strlen(p) : 0;

    if (n == 0 || n > AGENT_SYMBOL_MAX) {
        m2m_reply_error(req, M2M_ERR_INVALID_REQUEST, "symbol: 1 to 10 letters or digits");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)p[i])) {
            m2m_reply_error(req, M2M_ERR_INVALID_REQUEST, "symbol: 1 to 10 letters or digits");
            return;
        }
        sym[i] = (char)toupper((unsigned char)p[i]);
    }
    sym[n] = '\0';
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, agent_handle_currency);
        return;
    }
    serve_rates(req, arg, sym);
}

/* ---- internal: /metrics ---------------------------------------------------- */

void agent_handle_metrics(m2m_req *req, void *arg)
{
    agent_ctx *a = arg;
    agent_snapshot sn;
    m2m_buf out;

    agent_snapshot_get(a, &sn);
    m2m_buf_init(&out, 1 << 20);
    if (m2m_metrics_render(a->metrics, &out) ||
        m2m_buf_appendf(&out,
                        "# HELP agent_token_requests_total Requests sent to the token endpoint.\n"
                        "# TYPE agent_token_requests_total counter\n"
                        "agent_token_requests_total %llu\n"
                        "# HELP agent_token_failures_total Token requests that failed.\n"
                        "# TYPE agent_token_failures_total counter\n"
                        "agent_token_failures_total %llu\n"
                        "# HELP agent_api_calls_total Calls sent to the crypto-server.\n"
                        "# TYPE agent_api_calls_total counter\n"
                        "agent_api_calls_total %llu\n"
                        "# HELP agent_api_retries_total Calls repeated after a 401.\n"
                        "# TYPE agent_api_retries_total counter\n"
                        "agent_api_retries_total %llu\n"
                        "# HELP agent_authenticated 1 while the agent holds a usable token.\n"
                        "# TYPE agent_authenticated gauge\n"
                        "agent_authenticated %d\n",
                        (unsigned long long)sn.tokens.token_requests,
                        (unsigned long long)sn.tokens.token_failures,
                        (unsigned long long)sn.tokens.api_calls,
                        (unsigned long long)sn.tokens.api_retries,
                        sn.has_tokens && sn.tokens.has_token))
        m2m_reply_error(req, M2M_ERR_INTERNAL, "metrics too large");
    else
        m2m_reply_raw(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    m2m_buf_free(&out);
}
