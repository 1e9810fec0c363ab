#include "m2m/http.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "m2m/buf.h"
#include "m2m/log.h"
#include "m2m/rand.h"

#define HTTP_MAX_PARAMS        4
#define HTTP_MAX_EXTRA_HEADERS 8
#define HTTP_RID_MAX           64

#define STREAM_BLOCK        8192  /* MHD's buffer for unchunked (HTTP/1.0) streams */
#define STREAM_KEEP_BUF     4096  /* a drained queue keeps a buffer up to this size */
#define STOP_WAIT_MS        10000 /* the stop waits this long for requests in flight */
#define STOP_STREAM_WAIT_MS 2000  /* and this long for closed streams to drain */

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
    atomic_int inflight;         /* requests between their first call and completion */
    atomic_bool stopping;        /* replies say Connection: close from then on */
    atomic_int inflight_streams; /* of which replying with a stream */
    pthread_mutex_t streams_lock;
    m2m_stream *streams;  /* streams whose connection still holds them */
    bool streams_closing; /* stop has closed them: new ones are born closed */
};

/* A streaming reply. Lock order: srv->streams_lock, then s->lock, then
 * MHD's own locks (MHD_suspend_connection is called under s->lock).
 * MHD_resume_connection is called without s->lock, by whoever turned
 * `suspended` from true to false: a suspended connection cannot end before
 * it is resumed, so conn is still valid then. */
struct m2m_stream {
    pthread_mutex_t lock;
    unsigned refs;               /* the caller's and the connection's */
    bool open;                   /* sends are accepted */
    bool aborted;                /* end the body with an error (slow consumer, peer gone) */
    bool suspended;              /* the reader has parked the connection */
    struct MHD_Connection *conn; /* NULL once the connection is done with us */
    char *buf;                   /* queued bytes: buf[off, len) */
    size_t off, len, cap;
    m2m_http_server *srv; /* for the server's list; NULL once off it */
    m2m_stream *prev, *next;
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
    bool no_host;  /* HTTP/1.1 without Host: RFC 9112 §3.2 says 400 */
    bool streamed; /* counted in inflight_streams */
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
    m2m_stream *stream; /* a streaming reply not yet handed to its response */
    char *stream_ctype;
};

static bool pool_push(blocking_pool *p, m2m_req *r);
static void stream_conn_done(void *cls);

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
        int n = snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "", rt->method);
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

void m2m_reply_raw(m2m_req *r, int status, const char *content_type, const char *data, size_t len)
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
    /* 15 significant digits: what a double holds exactly in decimal, so
     * 3536.5724005040001 goes out as 3536.572400504 */
    char *text =
        body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))
             : NULL;
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
        body =
            json_pack("{s:s, s:s}", "error", m2m_err_code(e), "error_description", m2m_err_text(e));
    if (body && extra)
        json_object_update_missing(body, extra);
    json_decref(extra);
    m2m_reply_json(r, m2m_err_status(e), body);
}

void m2m_reply_error(m2m_req *r, m2m_err e, const char *desc)
{
    m2m_reply_error_extra(r, e, desc, NULL);
}

/* ---- streaming replies ------------------------------------------------ */

static void stream_unref(m2m_stream *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned left = --s->refs;
    pthread_mutex_unlock(&s->lock);
    if (left)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->buf);
    free(s);
}

/* Under s->lock: the connection to resume (outside the lock), if parked. */
static struct MHD_Connection *stream_wake(m2m_stream *s)
{
    if (!s->suspended)
        return NULL;
    s->suspended = false;
    return s->conn;
}

static void stream_drop_queue(m2m_stream *s)
{
    free(s->buf);
    s->buf = NULL;
    s->off = s->len = s->cap = 0;
}

m2m_stream *m2m_reply_stream(m2m_req *r, const char *content_type)
{
    if (r->replied) {
        M2M_ERROR("http_double_reply", "handler replied twice on %s", r->url);
        return NULL;
    }
    m2m_stream *s = calloc(1, sizeof(*s));
    char *ct = strdup(content_type ? content_type : "text/event-stream");
    if (!s || !ct) {
        free(s);
        free(ct);
        m2m_reply_error(r, M2M_ERR_NOMEM, NULL);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 2;
    s->open = true;
    s->conn = r->conn;
    s->srv = r->srv;
    pthread_mutex_lock(&r->srv->streams_lock);
    if (r->srv->streams_closing)
        s->open = false; /* the server is stopping: the body ends at once */
    s->next = r->srv->streams;
    if (s->next)
        s->next->prev = s;
    r->srv->streams = s;
    pthread_mutex_unlock(&r->srv->streams_lock);
    r->replied = true;
    r->status = 200;
    r->streamed = true;
    atomic_fetch_add(&r->srv->inflight_streams, 1);
    r->stream = s; /* the connection's reference, handed to the response */
    r->stream_ctype = ct;
    r->reply_ctype = ct;
    return s;
}

m2m_err m2m_stream_send(m2m_stream *s, const char *data, size_t len)
{
    struct MHD_Connection *wake = NULL;
    m2m_err rc = M2M_OK;

    if (!s)
        return M2M_ERR_IO;
    pthread_mutex_lock(&s->lock);
    size_t pending = s->len - s->off;
    if (!s->open) {
        rc = M2M_ERR_IO;
    } else if (len > M2M_STREAM_MAX_PENDING - pending) {
        /* A slow consumer: give up on it rather than queue without bound. */
        s->open = false;
        s->aborted = true;
        stream_drop_queue(s);
        wake = stream_wake(s);
        rc = M2M_ERR_PAYLOAD_TOO_LARGE;
    } else if (len) {
        if (s->len + len > s->cap && s->off) {
            memmove(s->buf, s->buf + s->off, pending);
            s->off = 0;
            s->len = pending;
        }
        if (s->len + len > s->cap) {
            size_t ncap = s->cap ? s->cap : 1024;
            while (ncap < s->len + len)
                ncap *= 2;
            char *nb = realloc(s->buf, ncap);
            if (!nb) {
                rc = M2M_ERR_NOMEM;
                goto out;
            }
            s->buf = nb;
            s->cap = ncap;
        }
        memcpy(s->buf + s->len, data, len);
        s->len += len;
        wake = stream_wake(s);
    }
out:
    pthread_mutex_unlock(&s->lock);
    if (wake)
        MHD_resume_connection(wake);
    return rc;
}

void m2m_stream_close(m2m_stream *s)
{
    struct MHD_Connection *wake = NULL;

    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->open) {
        s->open = false;
        wake = stream_wake(s);
    }
    pthread_mutex_unlock(&s->lock);
    if (wake)
        MHD_resume_connection(wake);
}

size_t m2m_stream_pending(m2m_stream *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    size_t n = s->len - s->off;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool m2m_stream_is_open(m2m_stream *s)
{
    if (!s)
        return false;
    pthread_mutex_lock(&s->lock);
    bool open = s->open;
    pthread_mutex_unlock(&s->lock);
    return open;
}

void m2m_stream_release(m2m_stream *s)
{
    if (!s)
        return;
    m2m_stream_close(s);
    stream_unref(s);
}

/* Whether the peer has closed its side (or reset): read on a parked
 * connection, only from the reader (MHD's thread for this connection), and
 * without consuming anything. An SSE client sends nothing after its request,
 * so end-of-file there means it has gone. */
static bool stream_peer_closed(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    char c;
    if (!ci)
        return false;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* MHD's content reader, on the connection's event thread. With nothing
 * queued it parks the connection (returning 0 without suspending would
 * busy-loop, design.md §7); a send or close resumes it. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    m2m_stream *s = cls;
    ssize_t ret;
    (void)pos;

    pthread_mutex_lock(&s->lock);
    size_t pending = s->len - s->off;
    if (s->aborted) {
        ret = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (pending) {
        size_t n = pending < max ? pending : max;
        memcpy(out, s->buf + s->off, n);
        s->off += n;
        if (s->off == s->len) {
            s->off = s->len = 0;
            if (s->cap > STREAM_KEEP_BUF) /* idle subscribers keep little */
                stream_drop_queue(s);
        }
        ret = (ssize_t)n;
    } else if (!s->open) {
        ret = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (stream_peer_closed(s->conn)) {
        s->open = false;
        s->aborted = true;
        ret = MHD_CONTENT_READER_END_WITH_ERROR;
    } else {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        ret = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* The connection is done with the stream (the response is freed, or the
 * request ended before its response was made): drop its reference. */
static void stream_conn_done(void *cls)
{
    m2m_stream *s = cls;

    pthread_mutex_lock(&s->lock);
    m2m_http_server *srv = s->srv;
    s->srv = NULL;
    s->conn = NULL;
    s->open = false;
    s->suspended = false;
    stream_drop_queue(s);
    pthread_mutex_unlock(&s->lock);
    if (srv) {
        /* Off the list before the reference goes: the stop's walk takes
         * references under streams_lock. */
        pthread_mutex_lock(&srv->streams_lock);
        if (s->prev)
            s->prev->next = s->next;
        else
            srv->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->prev = s->next = NULL;
        pthread_mutex_unlock(&srv->streams_lock);
    }
    stream_unref(s);
}

/* Closes every open stream (each connection resumes, drains and ends) and
 * makes new ones start closed. */
static void streams_close_all(m2m_http_server *srv)
{
    for (;;) {
        m2m_stream *batch[64];
        size_t n = 0;
        pthread_mutex_lock(&srv->streams_lock);
        srv->streams_closing = true;
        for (m2m_stream *s = srv->streams; s && n < 64; s = s->next) {
            pthread_mutex_lock(&s->lock);
            if (s->open) {
                s->refs++;
                batch[n++] = s;
            }
            pthread_mutex_unlock(&s->lock);
        }
        pthread_mutex_unlock(&srv->streams_lock);
        if (n == 0)
            return;
        for (size_t i = 0; i < n; i++) {
            m2m_stream_close(batch[i]);
            stream_unref(batch[i]);
        }
    }
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
    for (; ct[i] && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t' && i < sizeof(r->ctype) - 1; i++)
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
    if (r->stream) /* never handed to a response */
        stream_conn_done(r->stream);
    free(r->stream_ctype);
    free(r);
}

static enum MHD_Result req_queue(m2m_req *r)
{
    struct MHD_Response *resp;
    bool streaming = r->stream != NULL;
    if (streaming) {
        /* Unknown size: chunked for HTTP/1.1, until the reader ends it. */
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader,
                                                 r->stream, stream_conn_done);
        if (!resp)
            return MHD_NO; /* req_free drops the stream */
        r->stream = NULL;  /* the response holds the connection's reference now */
    } else {
        resp = MHD_create_response_from_buffer(r->reply_len, r->reply_body, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            return MHD_NO;
        r->reply_body = NULL; /* owned by the response now */
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->reply_ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    bool has_cache_control = false, has_accel = false;
    for (size_t i = 0; i < r->nextra; i++) {
        MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
        if (strcasecmp(r->extra[i].name, "Cache-Control") == 0)
            has_cache_control = true;
        if (strcasecmp(r->extra[i].name, "X-Accel-Buffering") == 0)
            has_accel = true;
    }
    /* An auth server's answers are about credentials: never cache by default. */
    if (!has_cache_control)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* nginx would otherwise hold events back in its proxy buffer */
    if (streaming && !has_accel)
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    /* Stopping: keep-alive clients should take their next request elsewhere. */
    if (atomic_load_explicit(&r->srv->stopping, memory_order_relaxed))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
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
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
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
    unsigned want = s->cfg.blocking_threads ? s->cfg.blocking_threads : 4;
    p->cap = s->cfg.blocking_queue ? s->cfg.blocking_queue : 256;
    p->nthreads = 0; /* counts threads actually running: pool_drain joins those */
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->ready, NULL);
    p->ring = calloc(p->cap, sizeof(*p->ring));
    p->threads = calloc(want, sizeof(*p->threads));
    if (!p->ring || !p->threads)
        return M2M_ERR_NOMEM;
    for (unsigned i = 0; i < want; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_main, s) != 0)
            return M2M_ERR_NOMEM;
        p->nthreads++;
    }
    return M2M_OK;
}

/* Runs what is queued, then joins the threads. The lock stays valid: MHD
 * threads may still try pool_push (and get "busy") until MHD stops. */
static void pool_drain(blocking_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
}

/* After MHD has stopped: nobody can push any more. */
static void pool_destroy(blocking_pool *p)
{
    pool_drain(p);
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
    double secs =
        (double)(end.tv_sec - r->start.tv_sec) + (double)(end.tv_nsec - r->start.tv_nsec) / 1e9;
    int status = r->replied ? r->status : 499; /* client went away before a reply */
    if (srv->cfg.metrics)
        m2m_metrics_observe(srv->cfg.metrics, r->metric, status, secs);
    bool log_it =
        srv->cfg.access_log || status >= 400 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
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
    bool streamed = r->streamed;
    req_free(r);
    *con_cls = NULL;
    if (streamed)
        atomic_fetch_sub(&srv->inflight_streams, 1);
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
    pthread_mutex_init(&s->streams_lock, NULL);
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
        s->route_metric[i] =
            cfg->metrics ? m2m_metrics_route(cfg->metrics, cfg->routes[i].pattern) : -1;
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
                     MHD_USE_ITC |             /* ITC: needed by MHD_quiesce_daemon */
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
        {cfg->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)cfg->threads,
         NULL},
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
            pool_destroy(&s->pool);
        free(s->route_metric);
        pthread_mutex_destroy(&s->streams_lock);
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
    /* Stop accepting, end the streams (their parked connections resume,
     * send what is queued and end the body: MHD must not be stopped with a
     * suspended connection), let requests already started send their
     * replies (up to 10 s; idle keep-alive connections are not waited for;
     * streams whose peer does not read what is left are not waited for
     * after 2 s: MHD_stop_daemon closes them), then stop. The quiesced
     * listening socket is ours to close. */
    atomic_store(&s->stopping, true);
    MHD_socket lfd = MHD_quiesce_daemon(s->mhd);
    streams_close_all(s);
    for (int ms = 0; ms < STOP_WAIT_MS; ms += 10) {
        int busy = atomic_load(&s->inflight);
        if (ms >= STOP_STREAM_WAIT_MS)
            busy -= atomic_load(&s->inflight_streams);
        if (busy <= 0)
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pool_drain(&s->pool); /* runs and resumes whatever is still queued */
    MHD_stop_daemon(s->mhd);
    pool_destroy(&s->pool);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    /* Every connection has ended, so every stream has left the list; the
     * callers' references may outlive the server. */
    pthread_mutex_lock(&s->streams_lock);
    if (s->streams)
        M2M_ERROR("http_stream_leak", "a stream outlived its connection");
    for (m2m_stream *st = s->streams; st; st = st->next) {
        pthread_mutex_lock(&st->lock);
        st->srv = NULL;
        pthread_mutex_unlock(&st->lock);
    }
    pthread_mutex_unlock(&s->streams_lock);
    pthread_mutex_destroy(&s->streams_lock);
    free(s->route_metric);
    free(s);
}
