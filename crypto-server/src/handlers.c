/* The rates API (design.md §3). Reads answer from memory; the history, a
 * rate change and health need the database and run on a blocking thread. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m2m/buf.h"
#include "m2m/json.h"
#include "m2m/log.h"
#include "server.h"

#define HISTORY_DEFAULT_LIMIT 100
#define HISTORY_DEFAULT_SPAN 3600 /* seconds back when ?since= is absent */
#define RATE_MAX 1e15
#define RATE_MIN 1e-10 /* the column keeps 10 decimals: anything smaller is 0 */
#define RATE_RULE "rate: a number from 0.0000000001 to 1e15"

/* RFC 6750: the bearer token must be valid, carry `scope`, and (for writes)
 * the admin role. Replies (or defers the request to `self`) and returns false
 * otherwise. */
static bool authorize(currency_ctx *ctx, m2m_req *req, m2m_handler self, const char *scope,
                      bool admin, m2m_token_info *info)
{
    const char *tok = NULL, *why = NULL;
    size_t len = 0;
    char desc[96];
    m2m_err rc = m2m_bearer_token(req, &tok, &len);

    if (rc == M2M_ERR_NOT_FOUND) {
        m2m_reply_bearer_error(req, CURRENCY_REALM, M2M_ERR_NOT_FOUND, NULL, NULL);
        return false;
    }
    if (rc) {
        m2m_reply_bearer_error(req, CURRENCY_REALM, M2M_ERR_INVALID_REQUEST,
                               "malformed Authorization header", NULL);
        return false;
    }
    rc = m2m_verifier_check(ctx->verifier, tok, len, m2m_req_may_block(req), info, &why);
    if (rc == M2M_ERR_WOULD_BLOCK) { /* a kid we don't know yet: refetch off the event thread */
        m2m_req_defer(req, self);
        return false;
    }
    if (rc == M2M_ERR_UNAVAILABLE) {
        m2m_reply_header(req, "Retry-After", "1");
        m2m_reply_error(req, M2M_ERR_UNAVAILABLE, "signing keys not loaded yet");
        return false;
    }
    if (rc) {
        m2m_counter_add(ctx->tokens_refused, 1);
        M2M_INFO("token_refused", "%s", why ? why : "invalid token");
        m2m_reply_bearer_error(req, CURRENCY_REALM, M2M_ERR_INVALID_TOKEN, why, NULL);
        return false;
    }
    if (!m2m_token_has_scope(info, scope)) {
        snprintf(desc, sizeof(desc), "scope %s required", scope);
        m2m_reply_bearer_error(req, CURRENCY_REALM, M2M_ERR_INSUFFICIENT_SCOPE, desc, scope);
        return false;
    }
    if (admin && strcmp(info->role, ROLE_ADMIN) != 0) {
        m2m_reply_error(req, M2M_ERR_FORBIDDEN, "role admin required");
        return false;
    }
    return true;
}

/* The {SYM} path segment, upper-cased; replies 404 and returns false when it
 * is malformed or unknown. */
static bool symbol_param(currency_ctx *ctx, m2m_req *req, char sym[SYMBOL_MAX + 1])
{
    char desc[64];
    if (!rates_symbol_normalize(m2m_req_param(req, 0), sym)) {
        m2m_reply_error(req, M2M_ERR_NOT_FOUND, "unknown currency symbol");
        return false;
    }
    if (!rates_known(ctx->rates, sym)) {
        snprintf(desc, sizeof(desc), "unknown currency symbol %s", sym);
        m2m_reply_error(req, M2M_ERR_NOT_FOUND, desc);
        return false;
    }
    return true;
}

void currency_handle_all(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_token_info info;
    if (authorize(ctx, req, currency_handle_all, SCOPE_READ, false, &info))
        rates_reply_all(ctx->rates, req);
}

void currency_handle_one(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_token_info info;
    char sym[SYMBOL_MAX + 1];
    if (!authorize(ctx, req, currency_handle_one, SCOPE_READ, false, &info))
        return;
    if (symbol_param(ctx, req, sym) && !rates_reply_one(ctx->rates, req, sym))
        m2m_reply_error(req, M2M_ERR_NOT_FOUND, "unknown currency symbol");
}

/* Strict integer in [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '-'))
        return false;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* ?since= as Unix seconds or RFC 3339 UTC ("2026-11-22T10:00:00Z", optional
 * fraction). */
static bool parse_since(const char *s, double *out)
{
    long secs;
    struct tm tm = {0};
    if (parse_long(s, 0, 253402300799L, &secs)) {
        *out = (double)secs;
        return true;
    }
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return false;
    double frac = 0;
    if (*p == '.') {
        double scale = 0.1;
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p)) {
            frac += (*p++ - '0') * scale;
            scale /= 10;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return false;
    /* strptime takes Feb 30 and timegm rolls it into March: refuse dates
     * that do not survive the round trip. */
    struct tm check = tm;
    time_t t = timegm(&check);
    if (check.tm_mday != tm.tm_mday || check.tm_mon != tm.tm_mon || check.tm_year != tm.tm_year)
        return false;
    *out = (double)t + frac;
    return true;
}

void currency_handle_history(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_token_info info;
    char sym[SYMBOL_MAX + 1], since_s[32], limit_s[24], desc[128];
    const char *q_since = m2m_req_query(req, "since"), *q_limit = m2m_req_query(req, "limit");
    double since = (double)time(NULL) - HISTORY_DEFAULT_SPAN;
    long limit = HISTORY_DEFAULT_LIMIT;
    PGresult *res = NULL;

    if (!authorize(ctx, req, currency_handle_history, SCOPE_READ, false, &info))
        return;
    if (!symbol_param(ctx, req, sym))
        return;
    if (q_since && !parse_since(q_since, &since)) {
        m2m_reply_error_extra(req, M2M_ERR_INVALID_REQUEST,
                              "since: Unix seconds or an RFC 3339 UTC time like "
                              "2026-11-22T10:00:00Z",
                              json_pack("{s:s}", "field", "since"));
        return;
    }
    if (q_limit && !parse_long(q_limit, 1, ctx->cfg->history_max_limit, &limit)) {
        snprintf(desc, sizeof(desc), "limit: an integer from 1 to %ld",
                 ctx->cfg->history_max_limit);
        m2m_reply_error_extra(req, M2M_ERR_INVALID_REQUEST, desc,
                              json_pack("{s:s}", "field", "limit"));
        return;
    }
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, currency_handle_history);
        return;
    }
    snprintf(since_s, sizeof(since_s), "%.3f", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    const char *params[3] = {sym, since_s, limit_s};
    m2m_err rc = m2m_db_query(ctx->db,
                              "SELECT trim_scale(rate)::text,"
                              " (extract(epoch FROM at) * 1000)::bigint"
                              " FROM currency.history"
                              " WHERE symbol = $1 AND at >= to_timestamp($2::double precision)"
                              " ORDER BY at DESC LIMIT $3::integer",
                              3, params, &res);
    if (rc) {
        m2m_reply_error(req, rc, NULL);
        return;
    }
    /* Rates as PostgreSQL's exact decimal text, like the current rates. */
    char since_iso[40];
    m2m_buf out;
    m2m_buf_init(&out, (size_t)limit * 96 + 256);
    rates_iso_time((long long)floor(since * 1000), since_iso, sizeof(since_iso));
    rc = m2m_buf_appendf(&out, "{\"symbol\":\"%s\",\"since\":\"%s\",\"limit\":%ld,\"history\":[",
                         sym, since_iso, limit);
    for (int i = 0; !rc && i < PQntuples(res); i++) {
        char at[40];
        const char *rate = PQgetvalue(res, i, 0);
        rates_iso_time(strtoll(PQgetvalue(res, i, 1), NULL, 10), at, sizeof(at));
        rc = rates_number_ok(rate)
                 ? m2m_buf_appendf(&out, "%s{\"rate\":%s,\"at\":\"%s\"}", i ? "," : "", rate, at)
                 : M2M_ERR_INTERNAL;
    }
    PQclear(res);
    if (!rc)
        rc = m2m_buf_appends(&out, "]}");
    if (rc)
        m2m_reply_error(req, M2M_ERR_INTERNAL, NULL);
    else
        m2m_reply_raw(req, 200, "application/json", out.data, out.len);
    m2m_buf_free(&out);
}

void currency_handle_stream(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_token_info info;

    if (!authorize(ctx, req, currency_handle_stream, SCOPE_READ, false, &info))
        return;
    if (!streams_reserve(ctx->subs)) {
        m2m_reply_header(req, "Retry-After", "5");
        m2m_reply_error(req, M2M_ERR_UNAVAILABLE, "too many stream subscribers");
        return;
    }
    m2m_stream *st = m2m_reply_stream(req, "text/event-stream");
    if (!st) { /* a 503 went out instead; give the place back */
        streams_unreserve(ctx->subs);
        return;
    }
    /* The current rates at once, so a subscriber need not wait for a tick;
     * "retry" tells EventSource clients how soon to reconnect. */
    size_t len = 0;
    char *json = rates_all_json(ctx->rates, &len), *ev = NULL;
    int n = asprintf(&ev, "retry: 3000\nevent: rates\ndata: %s\n\n", json ? json : "[]");
    if (n > 0)
        m2m_stream_send(st, ev, (size_t)n);
    free(ev);
    free(json);
    streams_add(ctx->subs, st);
}

void currency_handle_set(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_token_info info;
    char sym[SYMBOL_MAX + 1], rate_s[48], desc[128];
    json_t *body = NULL;
    PGresult *res = NULL;
    size_t len;
    const char *raw;

    if (!authorize(ctx, req, currency_handle_set, SCOPE_WRITE, true, &info))
        return;
    if (!symbol_param(ctx, req, sym))
        return;
    if (strcmp(m2m_req_content_type(req), "application/json") != 0) {
        m2m_reply_error(req, M2M_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        return;
    }
    raw = m2m_req_body(req, &len);
    if (m2m_json_parse_object(raw, len, &body, desc, sizeof(desc))) {
        /* jansson refuses 1e999 while parsing: still the rate's fault */
        if (strstr(desc, "overflow"))
            m2m_reply_error_extra(req, M2M_ERR_INVALID_REQUEST, RATE_RULE,
                                  json_pack("{s:s}", "field", "rate"));
        else
            m2m_reply_error(req, M2M_ERR_INVALID_REQUEST, desc);
        return;
    }
    json_t *rv = json_object_get(body, "rate");
    double rate = json_is_number(rv) ? json_number_value(rv) : NAN;
    json_decref(body);
    if (!isfinite(rate) || rate < RATE_MIN || rate > RATE_MAX) {
        m2m_reply_error_extra(req, M2M_ERR_INVALID_REQUEST, RATE_RULE,
                              json_pack("{s:s}", "field", "rate"));
        return;
    }
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, currency_handle_set);
        return;
    }
    snprintf(rate_s, sizeof(rate_s), "%.17g", rate);
    const char *params[2] = {sym, rate_s};
    m2m_err rc = m2m_db_query(ctx->db,
                              "WITH upd AS (UPDATE currency.rates"
                              " SET rate = $2::numeric, updated_at = now()"
                              " WHERE symbol = $1 RETURNING symbol, rate, updated_at)"
                              " INSERT INTO currency.history (symbol, rate, at)"
                              " SELECT symbol, rate, updated_at FROM upd RETURNING symbol",
                              2, params, &res);
    if (rc) {
        m2m_reply_error(req, rc, NULL);
        return;
    }
    int changed = PQntuples(res);
    PQclear(res);
    if (changed != 1) {
        m2m_reply_error(req, M2M_ERR_NOT_FOUND, "unknown currency symbol");
        return;
    }
    m2m_counter_add(ctx->rates_set, 1);
    M2M_INFO("rate_set", "%s set by %s", sym, info.sub);
    /* Serve the new rate at once rather than after the next tick. */
    rc = m2m_db_query(ctx->db, RATES_SELECT_SQL, 0, NULL, &res);
    if (!rc) {
        rates_load(ctx->rates, res);
        PQclear(res);
    }
    if (!rates_reply_one(ctx->rates, req, sym))
        m2m_reply_error(req, M2M_ERR_NOT_FOUND, "unknown currency symbol");
}

void currency_handle_health(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    if (!m2m_req_may_block(req)) {
        m2m_req_defer(req, currency_handle_health);
        return;
    }
    bool db = m2m_db_ping(ctx->db) == M2M_OK;
    bool keys = m2m_verifier_ready(ctx->verifier);
    bool rates = rates_ready(ctx->rates);
    const updater_status *st = updater_get_status(ctx->upd);
    json_t *body = json_pack("{s:s, s:s, s:b, s:I, s:b, s:I}", "status",
                             db && keys && rates ? "ok" : "unavailable", "database",
                             db ? "up" : "down", "keys_loaded", keys, "keys",
                             (json_int_t)m2m_verifier_key_count(ctx->verifier), "updater_leader",
                             atomic_load(&st->leader), "subscribers",
                             (json_int_t)streams_count(ctx->subs));
    if (!(db && keys && rates)) {
        m2m_reply_header(req, "Retry-After", "1");
        json_object_set_new(body, "error", json_string("temporarily_unavailable"));
        json_object_set_new(body, "error_description",
                            json_string(!db ? "database unavailable"
                                            : !keys ? "signing keys not loaded yet"
                                                    : "rates not loaded yet"));
        m2m_reply_json(req, 503, body);
        return;
    }
    m2m_reply_json(req, 200, body);
}

void currency_handle_metrics(m2m_req *req, void *arg)
{
    currency_ctx *ctx = arg;
    m2m_buf out;
    m2m_buf_init(&out, 1 << 20);
    const updater_status *st = updater_get_status(ctx->upd);
    if (m2m_metrics_render(ctx->metrics, &out) ||
        m2m_buf_appendf(&out,
                        "# HELP currency_stream_subscribers Open /stream connections.\n"
                        "# TYPE currency_stream_subscribers gauge\n"
                        "currency_stream_subscribers %zu\n"
                        "# HELP currency_updater_leader 1 when this instance moves the rates.\n"
                        "# TYPE currency_updater_leader gauge\n"
                        "currency_updater_leader %d\n"
                        "# HELP currency_updater_ticks_total Ticks this instance led.\n"
                        "# TYPE currency_updater_ticks_total counter\n"
                        "currency_updater_ticks_total %llu\n",
                        streams_count(ctx->subs), atomic_load(&st->leader) ? 1 : 0,
                        (unsigned long long)atomic_load(&st->ticks))) {
        m2m_reply_error(req, M2M_ERR_INTERNAL, "metrics too large");
    } else {
        m2m_reply_raw(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    }
    m2m_buf_free(&out);
}
