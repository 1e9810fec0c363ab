#include "m2m/http.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <ctype.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "m2m/buf.h"
#include "m2m/log.h"
#include "m2m/rand.h"

#define HTTP_MAX_PARAMS 4
#define HTTP_MAX_EXTRA_HEADERS 8
#define HTTP_RID_MAX 64


/* The blocking pool: a bounded FIFO of suspended requests and the threads
 * that run their deferred handlers. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    m2m_req **ring;
    size_t cap, head, len;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
} blocking_pool;

struct m2m_http_server {
    blocking_pool pool;
    struct MHD_Daemon *mhd;
    m2m_http_cfg cfg;
    int *route_metric; /* metrics index per route */
    int metric_unrouted;
    char rid_prefix[12];
    atomic_uint_fast64_t rid_seq;
    atomic_int inflight; /* requests between their first call and completion */
};

typedef struct {
    char *name;
    char *value;
} extra_header;

struct m2m_req {
    m2m_http_server *srv;
    struct MHD_Connection *conn;
    const char *method; /* owned by MHD for the request's life */
    const char *url;
    const m2m_route *route;
    m2m_handler deferred; /* set by m2m_req_defer */
    bool in_pool;         /* the handler runs on a blocking thread */
    bool suspended;
    int metric;
    bool method_mismatch;
    bool too_large;
    bool bad_length;
    bool no_host; /* HTTP/1.1 without Host: RFC 9112 §3.2 says 400 */
    size_t max_body;
    m2m_buf body;
    char *params[HTTP_MAX_PARAMS];
    char id[HTTP_RID_MAX];
    char ctype[64];
    struct timespec start;
    /* the reply */
    bool replied;
    int status;
    const char *reply_ctype;
    char *reply_body;
    size_t reply_len;
    extra_header extra[HTTP_MAX_EXTRA_HEADERS];
    size_t nextra;
};

static bool pool_push(blocking_pool *p, m2m_req *r);

/* ---- routing ---------------------------------------------------------- */

/* Matches "/a/ * /c" style patterns segment by segment; captures "*" segments
 * into params (when non-NULL). Trailing slashes are significant, as in nginx. */
static bool route_match(const char *pattern, const char *path, char **params)
{
    unsigned np = 0;
    const char *p = pattern, *s = path;

    while (*p && *s) {
        if (*p == '*') {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || np >= HTTP_MAX_PARAMS)
                goto fail;
            if (params) {
                params[np] = strndup(s, n);
                if (!params[np])
                    goto fail;
            }
            np++;
            p++;
            s += n;
            continue;
        }
        if (*p != *s)
            goto fail;
        p++;
        s++;
    }
    if (*p == '\0' && *s == '\0')
        return true;
fail:
    if (params)
        for (unsigned i = 0; i < np; i++) {
            free(params[i]);
            params[i] = NULL;
        }
    return false;
}

static void route_find(m2m_req *r)
{
    const m2m_http_cfg *cfg = &r->srv->cfg;
    bool path_seen = false;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const m2m_route *rt = &cfg->routes[i];
        if (!route_match(rt->pattern, r->url, NULL))
            continue;
        path_seen = true;
        if (strcmp(rt->method, r->method) != 0)
            continue;
        if (route_match(rt->pattern, r->url, r->params)) {
            r->route = rt;
            r->metric = r->srv->route_metric[i];
            return;
        }
    }
    r->method_mismatch = path_seen;
}

static void allow_header(m2m_req *r)
{
    char allow[128] = "";
    size_t used = 0;
    const m2m_http_cfg *cfg = &r->srv->cfg;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const m2m_route *rt = &cfg->routes[i];
        if (!route_match(rt->pattern, r->url, NULL) || strstr(allow, rt->method))
            continue;
        int n = snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                         rt->method);
        if (n < 0 || (size_t)n >= sizeof(allow) - used)
            break;
        used += (size_t)n;
    }
    m2m_reply_header(r, "Allow", allow);
}

/* ---- request accessors ------------------------------------------------ */

const char *m2m_req_method(const m2m_req *r)
{
    return r->method;
}

const char *m2m_req_path(const m2m_req *r)
{
    return r->url;
}

const char *m2m_req_header(const m2m_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *m2m_req_query(const m2m_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *m2m_req_body(const m2m_req *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

const char *m2m_req_id(const m2m_req *r)
{
    return r->id;
}

const char *m2m_req_param(const m2m_req *r, unsigned n)
{
    return n < HTTP_MAX_PARAMS ? r->params[n] : NULL;
}

const char *m2m_req_content_type(const m2m_req *r)
{
    return r->ctype;
}

/* ---- replies ---------------------------------------------------------- */

void m2m_reply_header(m2m_req *r, const char *name, const char *value)
{
    if (r->nextra >= HTTP_MAX_EXTRA_HEADERS)
        return;
    extra_header *h = &r->extra[r->nextra];
    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return;
    }
    r->nextra++;
}

void m2m_reply_raw(m2m_req *r, int status, const char *content_type, const char *data,
                   size_t len)
{
    if (r->replied) {
        M2M_ERROR("http_double_reply", "handler replied twice on %s", r->url);
        return;
    }
    r->replied = true;
    r->status = status;
    r->reply_ctype = content_type;
    r->reply_body = malloc(len + 1);
    if (!r->reply_body) {
        r->status = 503;
        r->reply_len = 0;
        return;
    }
    memcpy(r->reply_body, data, len);
    r->reply_body[len] = '\0';
    r->reply_len = len;
}

void m2m_reply_json(m2m_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        static const char nomem[] =
            "{\"error\":\"temporarily_unavailable\",\"error_description\":\"out of memory\"}";
        m2m_reply_raw(r, 503, "application/json", nomem, sizeof(nomem) - 1);
        return;
    }
    if (r->replied) {
        free(text);
        M2M_ERROR("http_double_reply", "handler replied twice on %s", r->url);
        return;
    }
    r->replied = true;
    r->status = status;
    r->reply_ctype = "application/json";
    r->reply_body = text;
    r->reply_len = strlen(text);
}

void m2m_reply_error_extra(m2m_req *r, m2m_err e, const char *desc, json_t *extra)
{
    json_t *body = json_pack("{s:s, s:s}", "error", m2m_err_code(e), "error_description",
                             desc ? desc : m2m_err_text(e));
    if (!body) /* desc was not UTF-8: it came from the peer; use the generic text */
        body = json_pack("{s:s, s:s}", "error", m2m_err_code(e), "error_description",
                         m2m_err_text(e));
    if (body && extra)
        json_object_update_missing(body, extra);
    json_decref(extra);
    m2m_reply_json(r, m2m_err_status(e), body);
}

void m2m_reply_error(m2m_req *r, m2m_err e, const char *desc)
{
    m2m_reply_error_extra(r, e, desc, NULL);
}

/* ---- MHD glue --------------------------------------------------------- */

static bool rid_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!(isalnum((unsigned char)s[n]) || s[n] == '-' || s[n] == '_' || s[n] == '.') ||
            n >= HTTP_RID_MAX - 1)
            return false;
    return n > 0;
}

static void req_set_id(m2m_req *r)
{
    const char *given = m2m_req_header(r, "X-Request-Id");
    if (given && rid_valid(given)) {
        snprintf(r->id, sizeof(r->id), "%s", given);
        return;
    }
    uint64_t seq = atomic_fetch_add(&r->srv->rid_seq, 1);
    snprintf(r->id, sizeof(r->id), "%s-%llx", r->srv->rid_prefix, (unsigned long long)seq);
}

static void req_set_ctype(m2m_req *r)
{
    const char *ct = m2m_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    size_t i = 0;
    if (!ct)
        return;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    for (; ct[i] && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t' && i < sizeof(r->ctype) - 1;
         i++)
        r->ctype[i] = (char)tolower((unsigned char)ct[i]);
    r->ctype[i] = '\0';
}

static void req_check_length(m2m_req *r)
{
    const char *cl = m2m_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return;
    char *end = NULL;
    unsigned long long v = strtoull(cl, &end, 10);
    if (end == cl || *end != '\0')
        r->bad_length = true; /* MHD normally refuses these itself */
    else if (v > r->max_body)
        r->too_large = true;
}

static void req_free(m2m_req *r)
{
    if (!r)
        return;
    m2m_buf_free(&r->body);
    for (unsigned i = 0; i < HTTP_MAX_PARAMS; i++)
        free(r->params[i]);
    for (size_t i = 0; i < r->nextra; i++) {
        free(r->extra[i].name);
        free(r->extra[i].value);
    }
    free(r->reply_body);
    free(r);
}

static enum MHD_Result req_queue(m2m_req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(r->reply_len, r->reply_body,
                                                                MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->reply_body = NULL; /* owned by the response now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->reply_ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    bool has_cache_control = false;
    for (size_t i = 0; i < r->nextra; i++) {
        MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
        if (strcasecmp(r->extra[i].name, "Cache-Control") == 0)
            has_cache_control = true;
    }
    /* An auth server's answers are about credentials: never cache by default. */
    if (!has_cache_control)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void req_dispatch(m2m_req *r)
{
    m2m_log_set_request_id(r->id);
    if (r->no_host) {
        m2m_reply_error(r, M2M_ERR_INVALID_REQUEST, "missing Host header");
    } else if (r->bad_length) {
        m2m_reply_error(r, M2M_ERR_INVALID_REQUEST, "invalid Content-Length");
    } else if (r->too_large) {
        char desc[96];
        snprintf(desc, sizeof(desc), "request body larger than %zu bytes", r->max_body);
        m2m_reply_error(r, M2M_ERR_PAYLOAD_TOO_LARGE, desc);
    } else if (r->route) {
        r->route->fn(r, r->srv->cfg.ctx);
        if (r->deferred && !r->replied)
            goto out; /* queued for a blocking thread */
        if (!r->replied) {
            M2M_ERROR("http_no_reply", "handler for %s gave no reply", r->route->pattern);
            m2m_reply_error(r, M2M_ERR_INTERNAL, NULL);
        }
    } else if (r->method_mismatch) {
        allow_header(r);
        m2m_reply_error(r, M2M_ERR_METHOD_NOT_ALLOWED, NULL);
    } else {
        m2m_reply_error(r, M2M_ERR_NOT_FOUND, "no such route");
    }
out:
    m2m_log_set_request_id(NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    m2m_http_server *srv = cls;
    m2m_req *r = *con_cls;

    if (!r) {
        /* First call: headers only. Never queue here (design.md §7: doing so
         * closes keep-alive connections). */
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        atomic_fetch_add(&srv->inflight, 1);
        clock_gettime(CLOCK_MONOTONIC, &r->start);
        r->srv = srv;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->metric = srv->metric_unrouted;
        req_set_id(r);
        req_set_ctype(r);
        route_find(r);
        r->max_body = (r->route && r->route->max_body) ? r->route->max_body : srv->cfg.max_body;
        m2m_buf_init(&r->body, r->max_body);
        req_check_length(r);
        r->no_host = strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && !m2m_req_header(r, "Host");
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Keep consuming an oversized body: MHD 0.9.75 cannot queue mid-body. */
        if (!r->too_large && m2m_buf_append(&r->body, upload_data, *upload_data_size)) {
            r->too_large = true;
            m2m_buf_free(&r->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!r->replied && !r->suspended) {
        req_dispatch(r);
        if (r->deferred && !r->replied) {
            /* Parked until a blocking thread has replied and resumes it. */
            r->suspended = true;
            MHD_suspend_connection(conn);
            if (!pool_push(&srv->pool, r)) {
                r->deferred = NULL;
                r->suspended = false;
                MHD_resume_connection(conn);
                m2m_reply_header(r, "Retry-After", "1");
                m2m_reply_error(r, M2M_ERR_UNAVAILABLE, "server busy, retry later");
            }
            return MHD_YES;
        }
    }
    if (!r->replied)
        return MHD_YES; /* resumed before the reply: wait for the next call */
    return req_queue(r);
}

/* ---- blocking pool ------------------------------------------------------ */

void m2m_req_defer(m2m_req *r, m2m_handler fn)
{
    r->deferred = fn;
}

bool m2m_req_may_block(const m2m_req *r)
{
    return r->in_pool;
}

static bool pool_push(blocking_pool *p, m2m_req *r)
{
    bool ok = false;
    pthread_mutex_lock(&p->lock);
    if (!p->stopping && p->len < p->cap) {
        p->ring[(p->head + p->len) % p->cap] = r;
        p->len++;
        ok = true;
        pthread_cond_signal(&p->ready);
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static void *pool_main(void *arg)
{
    m2m_http_server *srv = arg;
    blocking_pool *p = &srv->pool;

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->len == 0 && !p->stopping)
            pthread_cond_wait(&p->ready, &p->lock);
        if (p->len == 0) { /* stopping and drained */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        m2m_req *r = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        pthread_mutex_unlock(&p->lock);

        m2m_handler fn = r->deferred;
        r->deferred = NULL;
        r->in_pool = true;
        m2m_log_set_request_id(r->id);
        fn(r, srv->cfg.ctx);
        if (r->deferred && !r->replied) {
            M2M_ERROR("http_defer_twice", "handler for %s deferred from a blocking thread",
                      r->route ? r->route->pattern : r->url);
            r->deferred = NULL;
        }
        if (!r->replied) {
            M2M_ERROR("http_no_reply", "deferred handler for %s gave no reply", r->url);
            m2m_reply_error(r, M2M_ERR_INTERNAL, NULL);
        }
        m2m_log_set_request_id(NULL);
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

static m2m_err pool_start(m2m_http_server *s)
{
    blocking_pool *p = &s->pool;
    p->cap = s->cfg.blocking_queue ? s->cfg.blocking_queue : 256;
    p->nthreads = s->cfg.blocking_threads ? s->cfg.blocking_threads : 4;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->ready, NULL);
    p->ring = calloc(p->cap, sizeof(*p->ring));
    p->threads = calloc(p->nthreads, sizeof(*p->threads));
    if (!p->ring || !p->threads)
        return M2M_ERR_NOMEM;
    for (unsigned i = 0; i < p->nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_main, s) != 0) {
            p->nthreads = i;
            return M2M_ERR_NOMEM;
        }
    }
    return M2M_OK;
}

/* Runs what is queued, then joins the threads. */
static void pool_stop(blocking_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->ring);
    pthread_cond_destroy(&p->ready);
    pthread_mutex_destroy(&p->lock);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    m2m_http_server *srv = cls;
    m2m_req *r = *con_cls;
    struct timespec end;
    (void)conn;

    if (!r)
        return;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double secs = (double)(end.tv_sec - r->start.tv_sec) +
                  (double)(end.tv_nsec - r->start.tv_nsec) / 1e9;
    int status = r->replied ? r->status : 499; /* client went away before a reply */
    if (srv->cfg.metrics)
        m2m_metrics_observe(srv->cfg.metrics, r->metric, status, secs);
    bool log_it = srv->cfg.access_log || status >= 400 ||
                  toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (log_it && m2m_log_enabled(M2M_LOG_INFO)) {
        m2m_log_set_request_id(r->id);
        json_t *f = json_pack("{s:s, s:s, s:i, s:f, s:I}", "method", r->method, "route",
                              r->route ? r->route->pattern : "(none)", "status", status, "ms",
                              secs * 1e3, "bytes_in", (json_int_t)r->body.len);
        /* The path may carry peer bytes that are not UTF-8: log it only when valid. */
        if (f) {
            json_t *p = json_string(r->url);
            if (p)
                json_object_set_new(f, "path", p);
            if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
                json_object_set_new(f, "aborted", json_true());
        }
        m2m_log_event(status >= 500 ? M2M_LOG_WARN : M2M_LOG_INFO, "http_request", f);
        m2m_log_set_request_id(NULL);
    }
    req_free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

/* Percent-decodes the path and query in place like MHD's default, except
 * that %00 is left encoded: a decoded NUL would end the C string early and
 * "/api/auth/jwks.json%00junk" would be served as "/api/auth/jwks.json".
 * Left as text, such a path matches no route (404). */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *w = s;
    (void)cls;
    (void)conn;
    for (const char *r = s; *r;) {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2]) &&
            !(r[1] == '0' && r[2] == '0')) {
            char hex[3] = {r[1], r[2], '\0'};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    M2M_WARN("mhd", "%s", msg);
}

m2m_err m2m_http_server_start(const m2m_http_cfg *cfg, m2m_http_server **out)
{
    m2m_err rc = M2M_OK;
    struct sockaddr_in sa = {0};
    m2m_http_server *s = calloc(1, sizeof(*s));
    uint8_t rnd[4];

    bool pool_started = false;

    if (!s)
        return M2M_ERR_NOMEM;
    s->cfg = *cfg;
    if (!s->cfg.threads) {
        /* One event thread per CPU: they never block, so more only adds
         * context switches (measured: p99 9 ms with 4 on 2 CPUs, 1 ms with 2). */
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->cfg.threads = n > 0 ? (unsigned)n : 2;
    }
    cfg = &s->cfg;
    s->route_metric = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(int));
    if (!s->route_metric) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < cfg->nroutes; i++)
        s->route_metric[i] = cfg->metrics ? m2m_metrics_route(cfg->metrics, cfg->routes[i].pattern)
                                          : -1;
    s->metric_unrouted = cfg->metrics ? m2m_metrics_route(cfg->metrics, "(none)") : -1;
    rc = m2m_rand_bytes(rnd, sizeof(rnd));
    if (rc)
        goto out;
    snprintf(s->rid_prefix, sizeof(s->rid_prefix), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3]);

    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind_addr, &sa.sin_addr) != 1) {
        M2M_ERROR("http_config", "invalid bind address '%s' (IPv4 expected)", cfg->bind_addr);
        rc = M2M_ERR_CONFIG;
        goto out;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC | /* ITC: needed by MHD_quiesce_daemon */
                     MHD_ALLOW_SUSPEND_RESUME; /* deferred handlers */
    /* The logger goes first so MHD reports nothing outside our JSON logs; a
     * pool of one is no pool (MHD warns), so the pool option is only given
     * for two threads or more. */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &sa},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->conn_timeout, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)(cfg->max_conns ? cfg->max_conns : 1024), NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)cfg->per_ip_limit, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)on_unescape, NULL},
        {cfg->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)cfg->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    rc = pool_start(s);
    pool_started = true;
    if (rc)
        goto out;
    s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd) {
        M2M_ERROR("http_listen", "cannot listen on %s:%u", cfg->bind_addr, cfg->port);
        rc = M2M_ERR_IO;
        goto out;
    }
out:
    if (rc) {
        if (pool_started)
            pool_stop(&s->pool);
        free(s->route_metric);
        free(s);
        s = NULL;
    }
    *out = s;
    return rc;
}

unsigned m2m_http_server_port(const m2m_http_server *s)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

void m2m_http_server_stop(m2m_http_server *s)
{
    if (!s)
        return;
    /* Stop accepting, let requests already started send their replies (up
     * to 10 s; idle keep-alive connections are not waited for), then stop.
     * The quiesced listening socket is ours to close. */
    MHD_socket lfd = MHD_quiesce_daemon(s->mhd);
    for (int i = 0; i < 1000 && atomic_load(&s->inflight) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pool_stop(&s->pool); /* runs and resumes whatever is still queued */
    MHD_stop_daemon(s->mhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    free(s->route_metric);
    free(s);
}
