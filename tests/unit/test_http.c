/* The HTTP server scaffolding, driven with libcurl over real sockets: routing
 * (exact, "*" captures, several methods per path), request accessors, body
 * caps (Content-Length and chunked), request ids, JSON replies from the error
 * table, default headers, the access log, metrics, keep-alive, a handler that
 * forgets to reply, stopping with a request in flight, concurrency, and
 * streaming replies (Server-Sent Events): order, idle cost, broadcast, a
 * peer that goes away, a slow consumer, closing, stopping with streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <poll.h>
#include <regex.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>

#include "m2m/buf.h"
#include "m2m/err.h"
#include "m2m/http.h"
#include "m2m/log.h"
#include "m2m/metrics.h"

#define DEFAULT_CAP 1024
#define SLOW_MS     600

/* ---- handlers ----------------------------------------------------------- */

typedef struct {
    atomic_int echo_calls;
    atomic_int slow_entered;
    atomic_int slow_done;
} server_ctx;

static void h_json(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_json(r, 200,
                   json_pack("{s:b, s:s, s:s}", "ok", 1, "method", m2m_req_method(r), "path",
                             m2m_req_path(r)));
}

static void h_method(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_json(r, strcmp(m2m_req_method(r), "POST") == 0 ? 201 : 200,
                   json_pack("{s:s}", "method", m2m_req_method(r)));
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void h_params(m2m_req *r, void *ctx)
{
    (void)ctx;
    json_t *a = json_array();
    for (unsigned i = 0; i < 5; i++)
        json_array_append_new(a, str_or_null(m2m_req_param(r, i)));
    m2m_reply_json(r, 200, json_pack("{s:o}", "params", a));
}

static void h_query(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_json(r, 200,
                   json_pack("{s:o, s:o, s:o, s:o, s:o}", "a", str_or_null(m2m_req_query(r, "a")),
                             "b", str_or_null(m2m_req_query(r, "b")), "c",
                             str_or_null(m2m_req_query(r, "c")), "d",
                             str_or_null(m2m_req_query(r, "d")), "missing",
                             str_or_null(m2m_req_query(r, "missing"))));
}

static void h_headers(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_json(r, 200,
                   json_pack("{s:o, s:o, s:s, s:s, s:s, s:s}", "x_test",
                             str_or_null(m2m_req_header(r, "x-test")), "absent",
                             str_or_null(m2m_req_header(r, "X-Absent")), "rid", m2m_req_id(r),
                             "ctype", m2m_req_content_type(r), "method", m2m_req_method(r), "path",
                             m2m_req_path(r)));
}

static void h_echo(m2m_req *r, void *ctx)
{
    server_ctx *c = ctx;
    size_t len = 12345;
    const char *body = m2m_req_body(r, &len);
    atomic_fetch_add(&c->echo_calls, 1);
    m2m_reply_raw(r, 200, "application/octet-stream", body, len);
}

static void h_cache(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_header(r, "Cache-Control", "max-age=60");
    m2m_reply_json(r, 200, json_object());
}

static void h_cache_lower(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_header(r, "cache-control", "private");
    m2m_reply_header(r, "X-Extra", "yes");
    m2m_reply_json(r, 200, json_object());
}

static m2m_err err_by_name(const char *name)
{
    for (int e = 0; e < M2M_ERR__COUNT; e++)
        if (strcmp(m2m_err_name((m2m_err)e), name) == 0)
            return (m2m_err)e;
    return M2M_ERR__COUNT;
}

static void h_error(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_err e = err_by_name(m2m_req_param(r, 0));
    if (e == M2M_ERR__COUNT) {
        m2m_reply_json(r, 599, json_pack("{s:s}", "test", "unknown error name"));
        return;
    }
    m2m_reply_error(r, e, m2m_req_query(r, "desc"));
}

static void h_error_badutf8(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_error(r, M2M_ERR_INVALID_REQUEST, "bad byte \xff from the peer");
}

static void h_error_extra(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_error_extra(r, M2M_ERR_INVALID_CLIENT_METADATA, "redirect_uris must use https",
                          json_pack("{s:s, s:s, s:s, s:i}", "field", "redirect_uris", "error",
                                    "forged", "error_description", "forged", "retry", 3));
}

static void h_noreply(m2m_req *r, void *ctx)
{
    (void)r;
    (void)ctx;
}

static void h_double(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_json(r, 201, json_pack("{s:b}", "first", 1));
    m2m_reply_json(r, 200, json_pack("{s:b}", "second", 1));
    m2m_reply_error(r, M2M_ERR_INTERNAL, NULL);
    m2m_reply_raw(r, 202, "text/plain", "third", 5);
}

static void h_slow(m2m_req *r, void *ctx)
{
    server_ctx *c = ctx;
    atomic_store(&c->slow_entered, 1);
    usleep(SLOW_MS * 1000);
    m2m_reply_json(r, 200, json_pack("{s:b}", "slow", 1));
    atomic_store(&c->slow_done, 1);
}

static void h_log(m2m_req *r, void *ctx)
{
    (void)ctx;
    M2M_INFO("unit_handler_line", "inside the handler");
    m2m_reply_json(r, 200, json_object());
}

static void h_many_headers(m2m_req *r, void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 10; i++) {
        char name[16], value[16];
        snprintf(name, sizeof(name), "X-H%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        m2m_reply_header(r, name, value);
    }
    m2m_reply_json(r, 200, json_object());
}

static void h_raw(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_reply_raw(r, 202, "text/plain; charset=utf-8", "hi\n", 3);
}

/* Defers itself; on the blocking thread replies with what it saw. */
static void h_defer(m2m_req *r, void *ctx)
{
    (void)ctx;
    if (!m2m_req_may_block(r)) {
        m2m_req_defer(r, h_defer);
        return;
    }
    usleep(1000 * (useconds_t)atoi(m2m_req_query(r, "ms") ? m2m_req_query(r, "ms") : "0"));
    m2m_reply_json(r, 200, json_pack("{s:b, s:s}", "in_pool", 1, "id", m2m_req_id(r)));
}

static void h_pool_noreply(m2m_req *r, void *ctx)
{
    (void)r;
    (void)ctx;
}

static void h_defer_noreply(m2m_req *r, void *ctx)
{
    (void)ctx;
    m2m_req_defer(r, h_pool_noreply);
}

/* Streams made by the handlers below, for the tests to send on (the
 * registry holds the caller's reference). */
#define REG_MAX 256
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static m2m_stream *reg[REG_MAX];
static int reg_n;
static atomic_int stream_defer_entered;

static void stream_register(m2m_req *r)
{
    m2m_stream *s = m2m_reply_stream(r, "text/event-stream");
    if (!s)
        return;
    /* sent before the reply is even queued */
    const char *hello = m2m_req_may_block(r) ? ": pool\n\n" : ": event\n\n";
    m2m_stream_send(s, hello, strlen(hello));
    pthread_mutex_lock(&reg_lock);
    if (reg_n < REG_MAX) {
        reg[reg_n++] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&reg_lock);
    m2m_stream_release(s);
}

static void h_stream(m2m_req *r, void *ctx)
{
    (void)ctx;
    stream_register(r);
}

/* The same from a blocking thread, after ?ms= milliseconds there. */
static void h_stream_defer(m2m_req *r, void *ctx)
{
    (void)ctx;
    if (!m2m_req_may_block(r)) {
        m2m_req_defer(r, h_stream_defer);
        return;
    }
    atomic_store(&stream_defer_entered, 1);
    const char *ms = m2m_req_query(r, "ms");
    if (ms)
        usleep(1000 * (useconds_t)atoi(ms));
    stream_register(r);
}

static const m2m_route routes[] = {
    {"GET", "/stream", h_stream, 0},
    {"GET", "/stream-defer", h_stream_defer, 0},
    {"GET", "/defer", h_defer, 0},
    {"GET", "/defer-noreply", h_defer_noreply, 0},
    {"GET", "/json", h_json, 0},
    {"GET", "/items", h_method, 0},
    {"POST", "/items", h_method, 0},
    {"GET", "/items/*", h_params, 0},
    {"GET", "/a/*/b/*", h_params, 0},
    {"GET", "/query", h_query, 0},
    {"GET", "/headers", h_headers, 0},
    {"POST", "/headers", h_headers, 0},
    {"POST", "/echo", h_echo, 0},
    {"POST", "/small", h_echo, 16},
    {"POST", "/big", h_echo, 4096},
    {"GET", "/cache", h_cache, 0},
    {"GET", "/cache-lower", h_cache_lower, 0},
    {"GET", "/error/*", h_error, 0},
    {"GET", "/error-badutf8", h_error_badutf8, 0},
    {"GET", "/error-extra", h_error_extra, 0},
    {"GET", "/noreply", h_noreply, 0},
    {"GET", "/double", h_double, 0},
    {"GET", "/slow", h_slow, 0},
    {"GET", "/log", h_log, 0},
    {"GET", "/many-headers", h_many_headers, 0},
    {"GET", "/raw", h_raw, 0},
};

/* ---- fixture ------------------------------------------------------------ */

static char log_path[] = "/tmp/test_http_log.XXXXXX";
static FILE *log_file;
static m2m_http_server *srv;
static unsigned srv_port;
static server_ctx srv_ctx;
static m2m_metrics *srv_metrics;

static m2m_err start_server(m2m_metrics *m, server_ctx *ctx, unsigned threads,
                            m2m_http_server **out)
{
    m2m_http_cfg cfg = {
        .service = "unit-http",
        .bind_addr = "127.0.0.1",
        .port = 0,
        .threads = threads,
        .conn_timeout = 10,
        .max_conns = 512,
        .per_ip_limit = 0,
        .max_body = DEFAULT_CAP,
        .metrics = m,
        .access_log = true,
        .routes = routes,
        .nroutes = sizeof(routes) / sizeof(routes[0]),
        .ctx = ctx,
    };
    return m2m_http_server_start(&cfg, out);
}

static int group_setup(void **state)
{
    (void)state;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    int fd = mkstemp(log_path);
    if (fd < 0)
        return -1;
    log_file = fdopen(fd, "w");
    if (!log_file)
        return -1;
    m2m_log_init("unit-http", M2M_LOG_INFO);
    m2m_log_set_stream(log_file);
    srv_metrics = m2m_metrics_new("unit");
    if (!srv_metrics || start_server(srv_metrics, &srv_ctx, 4, &srv) != M2M_OK)
        return -1;
    srv_port = m2m_http_server_port(srv);
    return srv_port ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    m2m_http_server_stop(srv);
    m2m_metrics_free(srv_metrics);
    m2m_log_set_stream(NULL);
    fclose(log_file);
    unlink(log_path);
    curl_global_cleanup();
    return 0;
}

/* ---- client ------------------------------------------------------------- */

#define MAX_HDRS 64

typedef struct {
    long status;
    m2m_buf body;
    char hdr[MAX_HDRS][512];
    int nhdr;
    long connects;
    CURLcode rc;
} resp;

typedef struct {
    const char *data;
    size_t len, pos;
} upload;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    resp *r = ud;
    return m2m_buf_append(&r->body, p, size * n) == M2M_OK ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    resp *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0)
        r->nhdr = 0; /* a new response (after 100 Continue) */
    while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    if (len && r->nhdr < MAX_HDRS && len < sizeof(r->hdr[0])) {
        memcpy(r->hdr[r->nhdr], p, len);
        r->hdr[r->nhdr][len] = '\0';
        r->nhdr++;
    }
    return size * n;
}

/* Feeds the body in pieces of at most 7 bytes (several chunks when chunked). */
static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    upload *u = ud;
    size_t left = u->len - u->pos, max = size * n;
    if (max > 7)
        max = 7;
    if (left > max)
        left = max;
    memcpy(buf, u->data + u->pos, left);
    u->pos += left;
    return left;
}

enum { SEND_LENGTH = 0, SEND_CHUNKED = 1, SEND_EXPECT = 2 };

/* One request on handle h (connections are kept by the handle between calls).
 * body == NULL: no body. Returns the transport result (safe off the main
 * thread: never fails the test itself). */
static CURLcode do_request(CURL *h, const char *method, const char *path, const char *const *hdrs,
                           const char *body, size_t len, int mode, resp *out)
{
    char url[512];
    struct curl_slist *list = NULL;
    upload up = {body, len, 0};

    memset(out, 0, sizeof(*out));
    m2m_buf_init(&out->body, 16u << 20);
    curl_easy_reset(h);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", srv_port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    for (const char *const *p = hdrs; p && *p; p++)
        list = curl_slist_append(list, *p);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        if (mode == SEND_CHUNKED) {
            list = curl_slist_append(list, "Transfer-Encoding: chunked");
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, &up);
        } else {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
        list = curl_slist_append(list, mode == SEND_EXPECT ? "Expect: 100-continue" : "Expect:");
        /* libcurl sends form Content-Type by default; keep it out of the tests */
        list = curl_slist_append(list, "Content-Type:");
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (list)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    out->rc = curl_easy_perform(h);
    curl_slist_free_all(list);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &out->connects);
    if (!out->body.data)
        m2m_buf_append(&out->body, "", 0);
    return out->rc;
}

/* The same; fails the test on transport errors. */
static void request(CURL *h, const char *method, const char *path, const char *const *hdrs,
                    const char *body, size_t len, int mode, resp *out)
{
    CURLcode rc = do_request(h, method, path, hdrs, body, len, mode, out);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
}

static void get(CURL *h, const char *path, resp *out)
{
    request(h, "GET", path, NULL, NULL, 0, SEND_LENGTH, out);
}

static void resp_free(resp *r)
{
    m2m_buf_free(&r->body);
}

/* The value of the only header `name`; fails if it appears twice. */
static const char *header(const resp *r, const char *name)
{
    const char *found = NULL;
    size_t n = strlen(name);
    for (int i = 1; i < r->nhdr; i++)
        if (strncasecmp(r->hdr[i], name, n) == 0 && r->hdr[i][n] == ':') {
            if (found)
                fail_msg("header %s appears twice", name);
            found = r->hdr[i] + n + 1;
            while (*found == ' ')
                found++;
        }
    return found;
}

static json_t *body_json(const resp *r)
{
    json_error_t err;
    const char *ct = header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/json");
    json_t *j = json_loadb(r->body.data, r->body.len, 0, &err);
    if (!j)
        fail_msg("reply is not JSON (%s): %s", err.text, r->body.data);
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("member %s is not a string", key);
    return json_string_value(v);
}

/* Checks a JSON error reply: status, error code, description; returns it. */
static json_t *expect_error(const resp *r, long status, const char *code, const char *desc)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld (body %s)", r->status, status, r->body.data);
    json_t *j = body_json(r);
    assert_string_equal(jstr(j, "error"), code);
    if (desc)
        assert_string_equal(jstr(j, "error_description"), desc);
    else
        assert_true(strlen(jstr(j, "error_description")) > 0);
    return j;
}

static void expect_error_free(const resp *r, long status, const char *code, const char *desc)
{
    json_decref(expect_error(r, status, code, desc));
}

static double since_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- log inspection ----------------------------------------------------- */

/* The first log line with this event (and request id, when given), parsed;
 * waits up to 3 s for it (the access line is written after the reply). */
static json_t *find_log(const char *event, const char *rid)
{
    for (int tries = 0; tries < 300; tries++) {
        FILE *f = fopen(log_path, "r");
        char *line = NULL;
        size_t cap = 0;
        json_t *hit = NULL;
        assert_non_null(f);
        ssize_t n;
        while (!hit && (n = getline(&line, &cap, f)) > 0) {
            if (line[n - 1] != '\n')
                break; /* a line being written: read it on the next try */
            json_t *j = json_loads(line, 0, NULL);
            if (!j)
                fail_msg("log line is not JSON: %s", line);
            json_t *ev = json_object_get(j, "event");
            json_t *id = json_object_get(j, "request_id");
            if (json_is_string(ev) && strcmp(json_string_value(ev), event) == 0 &&
                (!rid || (json_is_string(id) && strcmp(json_string_value(id), rid) == 0)))
                hit = j;
            else
                json_decref(j);
        }
        free(line);
        fclose(f);
        if (hit)
            return hit;
        usleep(10000);
    }
    return NULL;
}

/* ---- tests: routing and accessors --------------------------------------- */

static void test_json_reply(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/json", &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_string_equal(jstr(j, "method"), "GET");
    assert_string_equal(jstr(j, "path"), "/json");
    json_decref(j);
    assert_non_null(header(&r, "X-Request-Id"));
    assert_string_equal(header(&r, "Cache-Control"), "no-store");
    char cl[32];
    snprintf(cl, sizeof(cl), "%zu", r.body.len);
    assert_string_equal(header(&r, "Content-Length"), cl);
    resp_free(&r);

    get(h, "/raw", &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(header(&r, "Content-Type"), "text/plain; charset=utf-8");
    assert_int_equal(r.body.len, 3);
    assert_memory_equal(r.body.data, "hi\n", 3);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_captures(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/items/abc-123", &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    json_t *p = json_object_get(j, "params");
    assert_string_equal(json_string_value(json_array_get(p, 0)), "abc-123");
    assert_true(json_is_null(json_array_get(p, 1)));
    json_decref(j);
    resp_free(&r);

    get(h, "/a/one/b/two", &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    p = json_object_get(j, "params");
    assert_string_equal(json_string_value(json_array_get(p, 0)), "one");
    assert_string_equal(json_string_value(json_array_get(p, 1)), "two");
    assert_true(json_is_null(json_array_get(p, 2)));
    assert_true(json_is_null(json_array_get(p, 4))); /* beyond the capture limit: NULL */
    json_decref(j);
    resp_free(&r);

    /* a percent-encoded capture arrives decoded */
    get(h, "/items/x%20y", &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "params"), 0)), "x y");
    json_decref(j);
    resp_free(&r);

    /* "*" is exactly one non-empty segment; trailing slashes are significant */
    static const char *const not_found[] = {"/items/", "/items/a/b", "/a//b/x", "/a/x/b/",
                                            "/json/",  "/jsonx",     "/a/x/b",  "/"};
    for (size_t i = 0; i < sizeof(not_found) / sizeof(not_found[0]); i++) {
        get(h, not_found[i], &r);
        if (r.status != 404)
            fail_msg("%s: status %ld, want 404", not_found[i], r.status);
        expect_error_free(&r, 404, "not_found", "no such route");
        resp_free(&r);
    }
    curl_easy_cleanup(h);
}

static void test_two_methods_one_path(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/items", &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(jstr(j, "method"), "GET");
    json_decref(j);
    resp_free(&r);

    request(h, "POST", "/items", NULL, "{}", 2, SEND_LENGTH, &r);
    assert_int_equal(r.status, 201);
    j = body_json(&r);
    assert_string_equal(jstr(j, "method"), "POST");
    json_decref(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_query_args(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/query?a=1&b=x%20y&c=&d=%C3%A9%26", &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(jstr(j, "a"), "1");
    assert_string_equal(jstr(j, "b"), "x y");
    assert_string_equal(jstr(j, "c"), "");
    assert_string_equal(jstr(j, "d"), "\xc3\xa9&");
    assert_true(json_is_null(json_object_get(j, "missing")));
    json_decref(j);
    resp_free(&r);

    get(h, "/query", &r);
    j = body_json(&r);
    assert_true(json_is_null(json_object_get(j, "a")));
    json_decref(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_request_headers_and_path(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    const char *hdrs[] = {"X-Test: hello world", NULL};
    (void)state;

    request(h, "GET", "/headers?x=1", hdrs, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(jstr(j, "x_test"), "hello world"); /* looked up as x-test */
    assert_true(json_is_null(json_object_get(j, "absent")));
    assert_string_equal(jstr(j, "method"), "GET");
    assert_string_equal(jstr(j, "path"), "/headers"); /* without the query */
    assert_string_equal(jstr(j, "ctype"), "");
    /* the handler sees the id the reply carries */
    assert_string_equal(jstr(j, "rid"), header(&r, "X-Request-Id"));
    json_decref(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_content_type(void **state)
{
    static const struct {
        const char *hdr, *want;
    } cases[] = {
        {"Content-Type: application/json", "application/json"},
        {"Content-Type: Application/JSON; charset=UTF-8", "application/json"},
        {"Content-Type: TEXT/Plain;charset=us-ascii", "text/plain"},
        {"Content-Type: application/x-www-form-urlencoded ; charset=utf-8",
         "application/x-www-form-urlencoded"},
        {"Content-Type:    application/json", "application/json"},
        /* RFC 9110 §8.3.1: OWS before ';' is SP or HTAB */
        {"Content-Type: application/json\t; charset=utf-8", "application/json"},
    };
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *hdrs[] = {cases[i].hdr, NULL};
        request(h, "GET", "/headers", hdrs, NULL, 0, SEND_LENGTH, &r);
        assert_int_equal(r.status, 200);
        json_t *j = body_json(&r);
        if (strcmp(jstr(j, "ctype"), cases[i].want) != 0)
            fail_msg("'%s' gave content type '%s', want '%s'", cases[i].hdr, jstr(j, "ctype"),
                     cases[i].want);
        json_decref(j);
        resp_free(&r);
    }
    curl_easy_cleanup(h);
}

static void test_body_echo(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    char bin[256];
    (void)state;

    for (int i = 0; i < 256; i++)
        bin[i] = (char)i;
    request(h, "POST", "/echo", NULL, bin, sizeof(bin), SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type"), "application/octet-stream");
    assert_int_equal(r.body.len, sizeof(bin));
    assert_memory_equal(r.body.data, bin, sizeof(bin));
    resp_free(&r);

    request(h, "POST", "/echo", NULL, bin, sizeof(bin), SEND_CHUNKED, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, sizeof(bin));
    assert_memory_equal(r.body.data, bin, sizeof(bin));
    resp_free(&r);

    /* empty body */
    request(h, "POST", "/echo", NULL, "", 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_not_found(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/nope", &r);
    expect_error_free(&r, 404, "not_found", "no such route");
    assert_non_null(header(&r, "X-Request-Id"));
    assert_string_equal(header(&r, "Cache-Control"), "no-store");
    assert_null(header(&r, "Allow"));
    resp_free(&r);

    request(h, "POST", "/nope", NULL, "x", 1, SEND_LENGTH, &r);
    expect_error_free(&r, 404, "not_found", "no such route");
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_method_not_allowed(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    request(h, "DELETE", "/items", NULL, NULL, 0, SEND_LENGTH, &r);
    expect_error_free(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(header(&r, "Allow"), "GET, POST");
    resp_free(&r);

    request(h, "PUT", "/json", NULL, "{}", 2, SEND_LENGTH, &r);
    expect_error_free(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(header(&r, "Allow"), "GET");
    resp_free(&r);

    request(h, "POST", "/items/x", NULL, "{}", 2, SEND_LENGTH, &r);
    expect_error_free(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(header(&r, "Allow"), "GET");
    resp_free(&r);

    request(h, "GET", "/echo", NULL, NULL, 0, SEND_LENGTH, &r);
    expect_error_free(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(header(&r, "Allow"), "POST");
    resp_free(&r);
    curl_easy_cleanup(h);
}

/* ---- tests: body caps --------------------------------------------------- */

static char *filled(size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    memset(p, 'b', n);
    p[n] = '\0';
    return p;
}

/* Sends n bytes to path and expects `status` (and the echo on 200). */
static void send_sized(CURL *h, const char *path, size_t n, int mode, long status, size_t cap)
{
    resp r;
    char *body = filled(n);
    int calls = atomic_load(&srv_ctx.echo_calls);

    request(h, "POST", path, NULL, body, n, mode, &r);
    if (r.status != status)
        fail_msg("POST %s with %zu bytes (mode %d): status %ld, want %ld", path, n, mode, r.status,
                 status);
    if (status == 200) {
        assert_int_equal(r.body.len, n);
        assert_memory_equal(r.body.data, body, n);
        assert_int_equal(atomic_load(&srv_ctx.echo_calls), calls + 1);
    } else {
        char desc[96];
        snprintf(desc, sizeof(desc), "request body larger than %zu bytes", cap);
        expect_error_free(&r, 413, "payload_too_large", desc);
        /* the handler never ran */
        assert_int_equal(atomic_load(&srv_ctx.echo_calls), calls);
    }
    resp_free(&r);
    free(body);
}

static void test_body_cap_content_length(void **state)
{
    CURL *h = curl_easy_init();
    (void)state;

    /* route cap below the default */
    send_sized(h, "/small", 16, SEND_LENGTH, 200, 16);
    send_sized(h, "/small", 17, SEND_LENGTH, 413, 16);
    /* default cap */
    send_sized(h, "/echo", DEFAULT_CAP, SEND_LENGTH, 200, DEFAULT_CAP);
    send_sized(h, "/echo", DEFAULT_CAP + 1, SEND_LENGTH, 413, DEFAULT_CAP);
    /* route cap above the default */
    send_sized(h, "/big", 2000, SEND_LENGTH, 200, 4096);
    send_sized(h, "/big", 4096, SEND_LENGTH, 200, 4096);
    send_sized(h, "/big", 4097, SEND_LENGTH, 413, 4096);
    /* with Expect: 100-continue, and far beyond the cap */
    send_sized(h, "/echo", 1u << 20, SEND_EXPECT, 413, DEFAULT_CAP);
    send_sized(h, "/small", 10, SEND_EXPECT, 200, 16);
    /* the server is fine afterwards */
    resp r;
    get(h, "/json", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_body_cap_chunked(void **state)
{
    CURL *h = curl_easy_init();
    (void)state;

    send_sized(h, "/small", 16, SEND_CHUNKED, 200, 16);
    send_sized(h, "/small", 17, SEND_CHUNKED, 413, 16);
    send_sized(h, "/echo", DEFAULT_CAP, SEND_CHUNKED, 200, DEFAULT_CAP);
    send_sized(h, "/echo", DEFAULT_CAP + 1, SEND_CHUNKED, 413, DEFAULT_CAP);
    send_sized(h, "/echo", 200000, SEND_CHUNKED, 413, DEFAULT_CAP);
    send_sized(h, "/big", 4096, SEND_CHUNKED, 200, 4096);
    send_sized(h, "/big", 4097, SEND_CHUNKED, 413, 4096);
    resp r;
    get(h, "/json", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_easy_cleanup(h);
}

/* ---- tests: request ids ------------------------------------------------- */

static bool id_looks_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

/* Sends X-Request-Id (hdr_line may be NULL: none) and returns the reply's id
 * (malloc'd), checking the handler saw the same one. */
static char *roundtrip_id(CURL *h, const char *hdr_line)
{
    resp r;
    const char *hdrs[] = {hdr_line, NULL};
    request(h, "GET", "/headers", hdr_line ? hdrs : NULL, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    const char *id = header(&r, "X-Request-Id");
    assert_non_null(id);
    json_t *j = body_json(&r);
    assert_string_equal(jstr(j, "rid"), id);
    json_decref(j);
    char *out = strdup(id);
    resp_free(&r);
    return out;
}

static void test_request_id_echo_and_replace(void **state)
{
    CURL *h = curl_easy_init();
    char line[256], id63[64], id64[65], id100[101];
    char *got;
    (void)state;

    got = roundtrip_id(h, "X-Request-Id: abc-DEF_123.x");
    assert_string_equal(got, "abc-DEF_123.x");
    free(got);

    memset(id63, 'k', 63);
    id63[63] = '\0';
    snprintf(line, sizeof(line), "X-Request-Id: %s", id63);
    got = roundtrip_id(h, line);
    assert_string_equal(got, id63);
    free(got);

    memset(id64, 'k', 64);
    id64[64] = '\0';
    memset(id100, 'a', 100);
    id100[100] = '\0';
    static char l64[128], l100[128];
    snprintf(l64, sizeof(l64), "X-Request-Id: %s", id64);
    snprintf(l100, sizeof(l100), "X-Request-Id: %s", id100);
    const char *invalid[] = {
        "X-Request-Id: has space",
        "X-Request-Id: semi;colon",
        "X-Request-Id: quote\"x",
        "X-Request-Id: new\\line",
        "X-Request-Id: caf\xc3\xa9",
        "X-Request-Id: a/b",
        "X-Request-Id;" /* empty */,
        l64,
        l100,
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        got = roundtrip_id(h, invalid[i]);
        if (!id_looks_valid(got))
            fail_msg("'%s' was answered with the invalid id '%s'", invalid[i], got);
        assert_null(strstr(got, "has"));
        assert_string_not_equal(got, id64);
        assert_string_not_equal(got, id100);
        assert_true(strncmp(got, id100, 63) != 0);
        free(got);
    }

    /* no header: generated */
    got = roundtrip_id(h, NULL);
    assert_true(id_looks_valid(got));
    free(got);
    curl_easy_cleanup(h);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_generated_ids_unique(void **state)
{
    enum { N = 200 };
    CURL *h = curl_easy_init();
    char *ids[N];
    (void)state;

    for (int i = 0; i < N; i++) {
        ids[i] = roundtrip_id(h, i % 2 ? NULL : "X-Request-Id: not valid");
        assert_true(id_looks_valid(ids[i]));
    }
    qsort(ids, N, sizeof(ids[0]), cmp_str);
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("generated id %s given twice", ids[i]);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    curl_easy_cleanup(h);
}

/* ---- tests: reply headers and errors ------------------------------------ */

static void test_cache_control(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/json", &r);
    assert_string_equal(header(&r, "Cache-Control"), "no-store");
    resp_free(&r);

    get(h, "/cache", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Cache-Control"), "max-age=60"); /* and only that one */
    resp_free(&r);

    get(h, "/cache-lower", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Cache-Control"), "private");
    assert_string_equal(header(&r, "X-Extra"), "yes");
    resp_free(&r);

    /* error replies too */
    get(h, "/nope", &r);
    assert_string_equal(header(&r, "Cache-Control"), "no-store");
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_many_reply_headers(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/many-headers", &r);
    assert_int_equal(r.status, 200);
    for (int i = 0; i < 8; i++) {
        char name[16], value[16];
        snprintf(name, sizeof(name), "X-H%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        assert_non_null(header(&r, name));
        assert_string_equal(header(&r, name), value);
    }
    /* up to 8: the rest are dropped, the reply still goes out */
    assert_null(header(&r, "X-H8"));
    assert_null(header(&r, "X-H9"));
    assert_string_equal(header(&r, "Cache-Control"), "no-store");
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_reply_error_table(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    char path[128];
    (void)state;

    for (int e = 1; e < M2M_ERR__COUNT; e++) {
        snprintf(path, sizeof(path), "/error/%s", m2m_err_name((m2m_err)e));
        get(h, path, &r);
        json_t *j = expect_error(&r, m2m_err_status((m2m_err)e), m2m_err_code((m2m_err)e),
                                 m2m_err_text((m2m_err)e));
        assert_int_equal(json_object_size(j), 2);
        json_decref(j);
        assert_string_equal(header(&r, "Cache-Control"), "no-store");
        resp_free(&r);
    }
    /* a description given by the handler */
    get(h, "/error/CONFLICT?desc=client%20exists", &r);
    expect_error_free(&r, 409, "conflict", "client exists");
    resp_free(&r);
    get(h, "/error/INVALID_CLIENT?desc=bad", &r);
    expect_error_free(&r, 401, "invalid_client", "bad");
    resp_free(&r);
    /* a description that is not UTF-8 falls back to the table's text */
    get(h, "/error-badutf8", &r);
    expect_error_free(&r, 400, "invalid_request", m2m_err_text(M2M_ERR_INVALID_REQUEST));
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_reply_error_extra(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/error-extra", &r);
    json_t *j = expect_error(&r, 400, "invalid_client_metadata", "redirect_uris must use https");
    /* extra members are added; they cannot override error/error_description */
    assert_string_equal(jstr(j, "field"), "redirect_uris");
    assert_int_equal(json_integer_value(json_object_get(j, "retry")), 3);
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void test_handler_without_reply(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    const char *hdrs[] = {"X-Request-Id: noreply-rid-1", NULL};
    (void)state;

    request(h, "GET", "/noreply", hdrs, NULL, 0, SEND_LENGTH, &r);
    expect_error_free(&r, 500, "server_error", NULL);
    assert_string_equal(header(&r, "X-Request-Id"), "noreply-rid-1");
    resp_free(&r);
    json_t *line = find_log("http_no_reply", "noreply-rid-1");
    assert_non_null(line);
    assert_string_equal(jstr(line, "level"), "error");
    json_decref(line);

    /* the server survives, on the same connection and on a new one */
    get(h, "/json", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    CURL *h2 = curl_easy_init();
    get(h2, "/json", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_easy_cleanup(h2);
    curl_easy_cleanup(h);
}

static void test_double_reply_first_wins(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    const char *hdrs[] = {"X-Request-Id: double-rid-1", NULL};
    (void)state;

    request(h, "GET", "/double", hdrs, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 201);
    json_t *j = body_json(&r);
    assert_true(json_is_true(json_object_get(j, "first")));
    assert_int_equal(json_object_size(j), 1);
    json_decref(j);
    resp_free(&r);
    json_t *line = find_log("http_double_reply", "double-rid-1");
    assert_non_null(line);
    json_decref(line);
    curl_easy_cleanup(h);
}

/* ---- tests: logs -------------------------------------------------------- */

static void test_access_log_and_request_id_on_lines(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    const char *h1[] = {"X-Request-Id: access-rid-1", NULL};
    const char *h2[] = {"X-Request-Id: handler-rid-1", NULL};
    (void)state;

    request(h, "POST", "/echo?q=1", h1, "12345", 5, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    json_t *line = find_log("http_request", "access-rid-1");
    assert_non_null(line);
    assert_string_equal(jstr(line, "level"), "info");
    assert_string_equal(jstr(line, "service"), "unit-http");
    assert_string_equal(jstr(line, "method"), "POST");
    assert_string_equal(jstr(line, "route"), "/echo");
    assert_string_equal(jstr(line, "path"), "/echo");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(line, "bytes_in")), 5);
    assert_true(json_is_number(json_object_get(line, "ms")));
    assert_true(json_number_value(json_object_get(line, "ms")) >= 0);
    assert_null(json_object_get(line, "aborted"));
    json_decref(line);

    /* a line the handler writes carries the request's id */
    request(h, "GET", "/log", h2, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    line = find_log("unit_handler_line", "handler-rid-1");
    assert_non_null(line);
    json_decref(line);

    /* unknown route: route "(none)" */
    const char *h3[] = {"X-Request-Id: access-rid-404", NULL};
    request(h, "GET", "/nope/x", h3, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    line = find_log("http_request", "access-rid-404");
    assert_non_null(line);
    assert_string_equal(jstr(line, "route"), "(none)");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 404);
    json_decref(line);

    /* 5xx lines are warnings */
    const char *h4[] = {"X-Request-Id: access-rid-500", NULL};
    request(h, "GET", "/noreply", h4, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 500);
    resp_free(&r);
    line = find_log("http_request", "access-rid-500");
    assert_non_null(line);
    assert_string_equal(jstr(line, "level"), "warn");
    json_decref(line);
    curl_easy_cleanup(h);
}

/* With access_log off, only 4xx, 5xx and aborted requests are logged. */
static void test_access_log_off_logs_only_errors(void **state)
{
    m2m_http_cfg cfg = {.service = "unit-http",
                        .bind_addr = "127.0.0.1",
                        .threads = 1,
                        .conn_timeout = 5,
                        .max_body = DEFAULT_CAP,
                        .access_log = false,
                        .routes = routes,
                        .nroutes = sizeof(routes) / sizeof(routes[0]),
                        .ctx = &srv_ctx};
    m2m_http_server *s = NULL;
    unsigned saved_port = srv_port;
    CURL *h = curl_easy_init();
    resp r;
    const char *ok[] = {"X-Request-Id: quiet-200", NULL};
    const char *nf[] = {"X-Request-Id: quiet-404", NULL};
    const char *err[] = {"X-Request-Id: quiet-500", NULL};
    (void)state;

    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_OK);
    srv_port = m2m_http_server_port(s);
    request(h, "GET", "/json", ok, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    request(h, "GET", "/nope", nf, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    request(h, "GET", "/noreply", err, NULL, 0, SEND_LENGTH, &r);
    assert_int_equal(r.status, 500);
    resp_free(&r);
    srv_port = saved_port;
    curl_easy_cleanup(h);

    json_t *line = find_log("http_request", "quiet-404");
    assert_non_null(line);
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 404);
    json_decref(line);
    line = find_log("http_request", "quiet-500");
    assert_non_null(line);
    json_decref(line);
    /* one connection, one thread: the 200 completed before the 404 was read,
     * so its line would be there by now */
    m2m_http_server_stop(s);
    line = find_log("http_request", "quiet-200");
    if (line) {
        json_decref(line);
        fail_msg("a 200 was logged with access_log off");
    }
}

/* %00 is not decoded (a NUL would cut the path short): such paths match no
 * route, and captures and query values keep it as text. */
static void test_nul_escape_not_decoded(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/json%00junk", &r);
    expect_error_free(&r, 404, "not_found", "no such route");
    resp_free(&r);

    get(h, "/items/a%00b", &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "params"), 0)),
                        "a%00b");
    json_decref(j);
    resp_free(&r);

    get(h, "/query?a=x%00y&b=%41%42", &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(jstr(j, "a"), "x%00y");
    assert_string_equal(jstr(j, "b"), "AB");
    json_decref(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

/* Sends raw bytes on a new connection and returns what comes back until the
 * server closes it (malloc'd). */
static char *raw_exchange(const char *req)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while (len < cap - 1 && (n = recv(fd, buf + len, cap - 1 - len, 0)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_missing_host(void **state)
{
    (void)state;

    char *out = raw_exchange("GET /json HTTP/1.1\r\nConnection: close\r\n\r\n");
    if (strncmp(out, "HTTP/1.1 400 ", 13) != 0)
        fail_msg("HTTP/1.1 without Host: %s", out);
    assert_non_null(strstr(out, "\"error\":\"invalid_request\""));
    assert_non_null(strstr(out, "missing Host header"));
    free(out);

    /* HTTP/1.0 has no Host requirement */
    out = raw_exchange("GET /json HTTP/1.0\r\n\r\n");
    if (strncmp(out, "HTTP/1.0 200 ", 13) != 0 && strncmp(out, "HTTP/1.1 200 ", 13) != 0)
        fail_msg("HTTP/1.0 without Host: %s", out);
    free(out);

    out = raw_exchange("GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    free(out);
}

/* ---- tests: connections ------------------------------------------------- */

static void test_keep_alive(void **state)
{
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    get(h, "/json", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.connects, 1);
    resp_free(&r);
    for (int i = 0; i < 30; i++) {
        switch (i % 5) {
        case 0:
            get(h, "/json", &r);
            assert_int_equal(r.status, 200);
            break;
        case 1:
            get(h, "/nope", &r);
            assert_int_equal(r.status, 404);
            break;
        case 2:
            request(h, "DELETE", "/items", NULL, NULL, 0, SEND_LENGTH, &r);
            assert_int_equal(r.status, 405);
            break;
        case 3:
            request(h, "POST", "/echo", NULL, "abc", 3, SEND_LENGTH, &r);
            assert_int_equal(r.status, 200);
            break;
        default:
            request(h, "POST", "/echo", NULL, "abcdef", 6, SEND_CHUNKED, &r);
            assert_int_equal(r.status, 200);
            break;
        }
        if (r.connects != 0)
            fail_msg("request %d opened a new connection", i);
        resp_free(&r);
    }
    curl_easy_cleanup(h);
}

/* An idle connection is closed after conn_timeout seconds. */
static void test_idle_timeout(void **state)
{
    m2m_http_cfg cfg = {.service = "unit-http",
                        .bind_addr = "127.0.0.1",
                        .threads = 1,
                        .conn_timeout = 1,
                        .max_body = DEFAULT_CAP,
                        .routes = routes,
                        .nroutes = sizeof(routes) / sizeof(routes[0]),
                        .ctx = &srv_ctx};
    m2m_http_server *s = NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timespec t0;
    char c;
    (void)state;

    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_OK);
    sa.sin_port = htons((uint16_t)m2m_http_server_port(s));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* closed by the server, not by our 5 s timeout */
    double ms = since_ms(&t0);
    assert_true(ms >= 500 && ms < 4000);
    close(fd);
    m2m_http_server_stop(s);
}

/* ---- tests: metrics ----------------------------------------------------- */

static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = nl ? nl + 1 : p + strlen(p);
    }
    return 0;
}

static char *render(m2m_metrics *m)
{
    m2m_buf b;
    m2m_buf_init(&b, 1u << 20);
    assert_int_equal(m2m_metrics_render(m, &b), M2M_OK);
    return m2m_buf_steal(&b);
}

static void test_metrics_per_route(void **state)
{
    m2m_metrics *m = m2m_metrics_new("unit");
    server_ctx ctx = {0};
    m2m_http_server *s = NULL;
    unsigned saved_port = srv_port;
    CURL *h = curl_easy_init();
    resp r;
    (void)state;

    assert_int_equal(start_server(m, &ctx, 2, &s), M2M_OK);
    srv_port = m2m_http_server_port(s); /* request() talks to srv_port */
    for (int i = 0; i < 3; i++) {
        get(h, "/json", &r);
        resp_free(&r);
    }
    get(h, "/items/a", &r);
    resp_free(&r);
    get(h, "/items/b", &r);
    resp_free(&r);
    get(h, "/items", &r);
    resp_free(&r);
    request(h, "POST", "/items", NULL, "{}", 2, SEND_LENGTH, &r);
    resp_free(&r);
    get(h, "/nope", &r);
    resp_free(&r);
    request(h, "DELETE", "/items", NULL, NULL, 0, SEND_LENGTH, &r);
    resp_free(&r);
    request(h, "POST", "/small", NULL, "0123456789abcdefXYZ", 19, SEND_LENGTH, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    get(h, "/noreply", &r);
    resp_free(&r);
    curl_easy_cleanup(h);
    srv_port = saved_port;
    /* stopping waits for completion callbacks: all observations are in */
    m2m_http_server_stop(s);

    char *t = render(m);
    assert_true(metric(t, "unit_http_requests_total{route=\"/json\",status=\"200\"}") == 3);
    assert_true(metric(t, "unit_http_requests_total{route=\"/items/*\",status=\"200\"}") == 2);
    assert_true(metric(t, "unit_http_requests_total{route=\"/items\",status=\"200\"}") == 1);
    assert_true(metric(t, "unit_http_requests_total{route=\"/items\",status=\"201\"}") == 1);
    assert_true(metric(t, "unit_http_requests_total{route=\"(none)\",status=\"404\"}") == 1);
    assert_true(metric(t, "unit_http_requests_total{route=\"(none)\",status=\"405\"}") == 1);
    assert_true(metric(t, "unit_http_requests_total{route=\"/small\",status=\"413\"}") == 1);
    assert_true(metric(t, "unit_http_requests_total{route=\"/noreply\",status=\"500\"}") == 1);
    assert_true(metric(t, "unit_http_request_duration_seconds_count{route=\"/json\"}") == 3);
    assert_true(metric(t, "unit_http_request_duration_seconds_count{route=\"/items\"}") == 2);
    assert_true(metric(t, "unit_http_request_duration_seconds_count{route=\"(none)\"}") == 2);
    assert_true(
        metric(t, "unit_http_request_duration_seconds_bucket{route=\"/json\",le=\"+Inf\"}") == 3);
    /* routes without traffic have no samples */
    assert_null(strstr(t, "route=\"/slow\""));
    free(t);
    m2m_metrics_free(m);
}

/* ---- tests: stop, start errors, concurrency ----------------------------- */

typedef struct {
    unsigned port;
    long status;
    char body[256];
    CURLcode rc;
} slow_client;

static size_t slow_body(char *p, size_t size, size_t n, void *ud)
{
    slow_client *c = ud;
    size_t have = strlen(c->body), len = size * n;
    if (have + len >= sizeof(c->body))
        return 0;
    memcpy(c->body + have, p, len);
    c->body[have + len] = '\0';
    return len;
}

static void *slow_request(void *arg)
{
    slow_client *c = arg;
    char url[128];
    CURL *h = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/slow", c->port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, slow_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    c->rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    curl_easy_cleanup(h);
    return NULL;
}

static void test_stop_completes_in_flight(void **state)
{
    server_ctx ctx = {0};
    m2m_http_server *s = NULL;
    slow_client c = {0};
    pthread_t th;
    struct timespec t0;
    (void)state;

    assert_int_equal(start_server(NULL, &ctx, 2, &s), M2M_OK);
    c.port = m2m_http_server_port(s);
    assert_int_equal(pthread_create(&th, NULL, slow_request, &c), 0);
    for (int i = 0; i < 500 && !atomic_load(&ctx.slow_entered); i++)
        usleep(2000);
    assert_true(atomic_load(&ctx.slow_entered));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    m2m_http_server_stop(s);
    double ms = since_ms(&t0);
    /* stop waited for the handler */
    assert_true(atomic_load(&ctx.slow_done));
    assert_true(ms >= SLOW_MS / 2);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (c.rc != CURLE_OK)
        fail_msg("the in-flight request failed: %s", curl_easy_strerror(c.rc));
    assert_int_equal(c.status, 200);
    assert_string_equal(c.body, "{\"slow\":true}");

    /* nothing listens any more */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

/* Stopping closes the listening socket: the port is free again. */
static void test_stop_releases_port(void **state)
{
    server_ctx ctx = {0};
    m2m_http_server *s = NULL;
    (void)state;

    assert_int_equal(start_server(NULL, &ctx, 1, &s), M2M_OK);
    unsigned port = m2m_http_server_port(s);
    m2m_http_server_stop(s);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd);
    if (rc == 0)
        fail_msg("port %u still accepts connections after m2m_http_server_stop", port);

    /* and a new server can listen there */
    m2m_http_cfg cfg = {.service = "unit-http",
                        .bind_addr = "127.0.0.1",
                        .port = port,
                        .threads = 1,
                        .conn_timeout = 5,
                        .max_body = DEFAULT_CAP,
                        .routes = routes,
                        .nroutes = sizeof(routes) / sizeof(routes[0]),
                        .ctx = &ctx};
    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_OK);
    assert_int_equal(m2m_http_server_port(s), port);
    m2m_http_server_stop(s);
}

static void test_start_errors(void **state)
{
    m2m_http_server *s = (m2m_http_server *)&s; /* must be reset to NULL */
    m2m_http_cfg cfg = {.service = "unit-http",
                        .bind_addr = "not-an-ip",
                        .threads = 1,
                        .conn_timeout = 5,
                        .max_body = DEFAULT_CAP,
                        .routes = routes,
                        .nroutes = sizeof(routes) / sizeof(routes[0])};
    (void)state;

    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_ERR_CONFIG);
    assert_null(s);
    cfg.bind_addr = "::1";
    s = (m2m_http_server *)&s;
    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_ERR_CONFIG);
    assert_null(s);
    /* the port is taken by the fixture's server */
    cfg.bind_addr = "127.0.0.1";
    cfg.port = srv_port;
    s = (m2m_http_server *)&s;
    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_ERR_IO);
    assert_null(s);
    m2m_http_server_stop(NULL);
}

#define CONC_THREADS 8
#define CONC_TOTAL   100

static atomic_int conc_ok;
static atomic_int conc_next;

static void *conc_worker(void *arg)
{
    CURL *h = curl_easy_init();
    (void)arg;
    for (;;) {
        int n = atomic_fetch_add(&conc_next, 1);
        if (n >= CONC_TOTAL)
            break;
        resp r;
        char path[64], body[64];
        snprintf(path, sizeof(path), "/items/req-%d", n);
        snprintf(body, sizeof(body), "body-%d", n);
        if (n % 2) {
            do_request(h, "GET", path, NULL, NULL, 0, SEND_LENGTH, &r);
            json_t *j = json_loadb(r.body.data, r.body.len, 0, NULL);
            const char *p = json_string_value(json_array_get(json_object_get(j, "params"), 0));
            if (r.rc == CURLE_OK && r.status == 200 && p && strcmp(p, path + 7) == 0)
                atomic_fetch_add(&conc_ok, 1);
            json_decref(j);
        } else {
            do_request(h, "POST", "/echo", NULL, body, strlen(body), SEND_LENGTH, &r);
            if (r.rc == CURLE_OK && r.status == 200 && r.body.len == strlen(body) &&
                memcmp(r.body.data, body, r.body.len) == 0)
                atomic_fetch_add(&conc_ok, 1);
        }
        resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    pthread_t th[CONC_THREADS];
    (void)state;

    atomic_store(&conc_ok, 0);
    atomic_store(&conc_next, 0);
    for (int i = 0; i < CONC_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, conc_worker, NULL), 0);
    for (int i = 0; i < CONC_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&conc_ok), CONC_TOTAL);
}

/* A deferred handler runs on a blocking thread (may_block true there,
 * false on the event thread), keeps the request id and keep-alive, and a
 * deferred handler that forgets to reply still gets a JSON 500. */
static void test_defer_runs_on_blocking_thread(void **state)
{
    CURL *h = curl_easy_init();
    resp r1 = {0}, r2 = {0}, r3 = {0};
    const char *hdrs[] = {"X-Request-Id: defer-123", NULL};
    (void)state;

    request(h, "GET", "/defer", hdrs, NULL, 0, SEND_LENGTH, &r1);
    assert_int_equal(r1.status, 200);
    json_t *j = body_json(&r1);
    assert_true(json_is_true(json_object_get(j, "in_pool")));
    assert_string_equal(jstr(j, "id"), "defer-123");
    assert_string_equal(header(&r1, "X-Request-Id"), "defer-123");
    json_decref(j);
    get(h, "/defer", &r2);
    assert_int_equal(r2.status, 200);
    assert_int_equal(r2.connects, 0); /* same connection */
    get(h, "/defer-noreply", &r3);
    expect_error_free(&r3, 500, "server_error", NULL);
    resp_free(&r1);
    resp_free(&r2);
    resp_free(&r3);
    curl_easy_cleanup(h);
}

static size_t on_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

typedef struct {
    unsigned port;
    long status;
} busy_arg;

static void *busy_worker(void *arg)
{
    busy_arg *a = arg;
    char url[96];
    CURL *h = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/defer?ms=400", a->port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
    curl_easy_cleanup(h);
    return NULL;
}

/* One blocking thread and a queue of one: of 4 slow deferred requests at
 * once, at most one runs and one waits, the others get 503 at once; none is
 * lost, and the event threads keep answering meanwhile. */
static void test_defer_queue_full_is_503(void **state)
{
    m2m_http_cfg cfg = {.service = "unit-busy",
                        .bind_addr = "127.0.0.1",
                        .threads = 2,
                        .blocking_threads = 1,
                        .blocking_queue = 1,
                        .conn_timeout = 10,
                        .max_body = DEFAULT_CAP,
                        .routes = routes,
                        .nroutes = sizeof(routes) / sizeof(routes[0]),
                        .ctx = &srv_ctx};
    m2m_http_server *busy = NULL;
    pthread_t th[4];
    busy_arg args[4];
    (void)state;

    assert_int_equal(m2m_http_server_start(&cfg, &busy), M2M_OK);
    for (int i = 0; i < 4; i++) {
        args[i] = (busy_arg){m2m_http_server_port(busy), 0};
        assert_int_equal(pthread_create(&th[i], NULL, busy_worker, &args[i]), 0);
    }
    usleep(100 * 1000);
    /* an event-thread route answers while the blocking thread is busy */
    CURL *h = curl_easy_init();
    char url[96];
    long status = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/json", m2m_http_server_port(busy));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 200L);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    curl_easy_cleanup(h);
    int ok = 0, busy503 = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        ok += args[i].status == 200;
        busy503 += args[i].status == 503;
    }
    assert_int_equal(ok + busy503, 4);
    assert_in_range(ok, 1, 2); /* at most one running and one queued */
    m2m_http_server_stop(busy);
}

/* ---- tests: streaming replies ------------------------------------------- */

static int reg_count(void)
{
    pthread_mutex_lock(&reg_lock);
    int n = reg_n;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

/* Waits until n streams are registered. */
static void reg_wait(int n)
{
    for (int i = 0; i < 1000 && reg_count() < n; i++)
        usleep(5000);
    if (reg_count() < n)
        fail_msg("%d streams registered, want %d", reg_count(), n);
}

static m2m_stream *reg_get(int i)
{
    pthread_mutex_lock(&reg_lock);
    m2m_stream *s = i < reg_n ? reg[i] : NULL;
    pthread_mutex_unlock(&reg_lock);
    return s;
}

static void reg_release_all(void)
{
    m2m_stream *all[REG_MAX];
    pthread_mutex_lock(&reg_lock);
    int n = reg_n;
    memcpy(all, reg, sizeof(all));
    reg_n = 0;
    pthread_mutex_unlock(&reg_lock);
    for (int i = 0; i < n; i++)
        m2m_stream_release(all[i]);
}

/* A subscriber on a raw socket that de-chunks what it reads. */
typedef struct {
    int fd;
    m2m_buf raw; /* everything received */
    size_t pos;  /* parsed up to here */
    bool have_head;
    char head[2048]; /* status line and headers, each ending in CRLF */
    bool chunked;
    m2m_buf body; /* the body, de-chunked */
    bool ended;   /* the last chunk arrived: the body ended cleanly */
    bool eof;     /* the server closed (or reset) the connection */
} sse_client;

static void sse_connect(sse_client *c, unsigned port, int rcvbuf, const char *req)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(c, 0, sizeof(*c));
    m2m_buf_init(&c->raw, 64u << 20);
    m2m_buf_init(&c->body, 64u << 20);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf) /* before connect, so that the window is small from the start */
        assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(send(c->fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
}

static void sse_open(sse_client *c, unsigned port, const char *path, const char *rid, int rcvbuf)
{
    char req[512];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: unit\r\nAccept: text/event-stream\r\n%s%s%s\r\n", path,
             rid ? "X-Request-Id: " : "", rid ? rid : "", rid ? "\r\n" : "");
    sse_connect(c, port, rcvbuf, req);
}

static void sse_parse(sse_client *c)
{
    const char *d = c->raw.data;
    size_t len = c->raw.len;

    if (!d)
        return;
    if (!c->have_head) {
        const char *e = memmem(d, len, "\r\n\r\n", 4);
        if (!e)
            return;
        size_t hl = (size_t)(e - d) + 2;
        if (hl >= sizeof(c->head))
            fail_msg("reply headers too long");
        memcpy(c->head, d, hl);
        c->head[hl] = '\0';
        c->have_head = true;
        c->chunked = strcasestr(c->head, "\r\nTransfer-Encoding: chunked\r\n") != NULL;
        c->pos = hl + 2;
    }
    if (!c->chunked) { /* the body runs until the connection closes */
        assert_int_equal(m2m_buf_append(&c->body, d + c->pos, len - c->pos), M2M_OK);
        c->pos = len;
        return;
    }
    while (!c->ended) {
        const char *p = d + c->pos;
        size_t left = len - c->pos;
        const char *crlf = memmem(p, left, "\r\n", 2);
        char *end;
        if (!crlf)
            return;
        unsigned long size = strtoul(p, &end, 16);
        if (end == p)
            fail_msg("bad chunk header: %.16s", p);
        size_t hdr = (size_t)(crlf - p) + 2;
        if (left < hdr + size + 2)
            return;
        if (memcmp(p + hdr + size, "\r\n", 2) != 0)
            fail_msg("chunk of %lu bytes not followed by CRLF", size);
        if (size == 0) /* the last chunk, no trailers */
            c->ended = true;
        else
            assert_int_equal(m2m_buf_append(&c->body, p + hdr, size), M2M_OK);
        c->pos += hdr + size + 2;
    }
}

/* Reads what arrives within timeout_ms. */
static void sse_pump(sse_client *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    char buf[65536];

    if (c->eof || poll(&pfd, 1, timeout_ms) <= 0)
        return;
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
        assert_int_equal(m2m_buf_append(&c->raw, buf, (size_t)n), M2M_OK);
        sse_parse(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        c->eof = true;
    }
}

static bool sse_has(const sse_client *c, const char *needle)
{
    return c->body.data && strstr(c->body.data, needle);
}

/* Pumps until the body holds needle; false after timeout_ms or at the end. */
static bool sse_wait_for(sse_client *c, const char *needle, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!sse_has(c, needle)) {
        if (c->eof || c->ended || since_ms(&t0) > timeout_ms)
            return false;
        sse_pump(c, 20);
    }
    return true;
}

/* Pumps until the body ends cleanly or the connection closes. */
static bool sse_wait_end(sse_client *c, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!c->ended && !c->eof) {
        if (since_ms(&t0) > timeout_ms)
            return false;
        sse_pump(c, 20);
    }
    return true;
}

static void sse_close(sse_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    m2m_buf_free(&c->raw);
    m2m_buf_free(&c->body);
}

static void sse_check_head(const sse_client *c)
{
    if (strncmp(c->head, "HTTP/1.1 200 ", 13) != 0)
        fail_msg("stream reply: %s", c->head);
    assert_non_null(strcasestr(c->head, "\r\nContent-Type: text/event-stream\r\n"));
    assert_non_null(strcasestr(c->head, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strcasestr(c->head, "\r\nX-Accel-Buffering: no\r\n"));
    assert_null(strcasestr(c->head, "\r\nContent-Length:"));
    assert_true(c->chunked);
}

/* A subscriber on libcurl, in its own thread. */
typedef struct {
    unsigned port;
    const char *path;
    const char *rid;
    pthread_t th;
    pthread_mutex_t lock;
    m2m_buf body; /* under lock while the thread runs */
    resp r;       /* headers, status and result: read after the join */
} curl_sse;

static size_t curl_sse_body(char *p, size_t size, size_t n, void *ud)
{
    curl_sse *c = ud;
    pthread_mutex_lock(&c->lock);
    m2m_err rc = m2m_buf_append(&c->body, p, size * n);
    pthread_mutex_unlock(&c->lock);
    return rc == M2M_OK ? size * n : 0;
}

static void *curl_sse_main(void *arg)
{
    curl_sse *c = arg;
    char url[256], rid[128];
    struct curl_slist *list = NULL;
    CURL *h = curl_easy_init();

    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", c->port, c->path);
    snprintf(rid, sizeof(rid), "X-Request-Id: %s", c->rid);
    list = curl_slist_append(list, rid);
    list = curl_slist_append(list, "Accept: text/event-stream");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sse_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &c->r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    c->r.rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->r.status);
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    return NULL;
}

static void curl_sse_start(curl_sse *c, unsigned port, const char *path, const char *rid)
{
    memset(c, 0, sizeof(*c));
    c->port = port;
    c->path = path;
    c->rid = rid;
    pthread_mutex_init(&c->lock, NULL);
    m2m_buf_init(&c->body, 16u << 20);
    assert_int_equal(pthread_create(&c->th, NULL, curl_sse_main, c), 0);
}

static bool curl_sse_has(curl_sse *c, const char *needle)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->body.data && strstr(c->body.data, needle);
    pthread_mutex_unlock(&c->lock);
    return has;
}

static bool curl_sse_wait_for(curl_sse *c, const char *needle, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!curl_sse_has(c, needle)) {
        if (since_ms(&t0) > timeout_ms)
            return false;
        usleep(1000);
    }
    return true;
}

static void curl_sse_free(curl_sse *c)
{
    m2m_buf_free(&c->body);
    pthread_mutex_destroy(&c->lock);
}

/* Events sent by the test thread arrive in order, one by one (each before
 * the next is sent) and in a burst, after the handler's own first event;
 * m2m_stream_close ends the body cleanly. From a handler on the event
 * thread and from a deferred one. The access log and metrics see a 200. */
static void test_stream_events_in_order(void **state)
{
    const char *paths[] = {"/stream", "/stream-defer"};
    const char *hellos[] = {": event\n\n", ": pool\n\n"};
    const char *rids[] = {"sse-order-event", "sse-order-pool"};
    (void)state;

    for (int k = 0; k < 2; k++) {
        curl_sse c;
        m2m_buf want;
        char ev[96];

        m2m_buf_init(&want, 1u << 20);
        m2m_buf_appends(&want, hellos[k]);
        curl_sse_start(&c, srv_port, paths[k], rids[k]);
        reg_wait(1);
        m2m_stream *s = reg_get(0);
        if (!curl_sse_wait_for(&c, hellos[k], 3000))
            fail_msg("the handler's first event did not arrive on %s", paths[k]);
        for (int i = 1; i <= 20; i++) {
            snprintf(ev, sizeof(ev), "id: %d\ndata: {\"rate\":%d}\n\n", i, i);
            assert_int_equal(m2m_stream_send(s, ev, strlen(ev)), M2M_OK);
            m2m_buf_appends(&want, ev);
            if (!curl_sse_wait_for(&c, ev, 3000))
                fail_msg("event %d did not arrive on %s", i, paths[k]);
        }
        for (int i = 21; i <= 300; i++) {
            snprintf(ev, sizeof(ev), "id: %d\ndata: {\"rate\":%d}\n\n", i, i);
            assert_int_equal(m2m_stream_send(s, ev, strlen(ev)), M2M_OK);
            m2m_buf_appends(&want, ev);
        }
        assert_int_equal(m2m_stream_send(s, "", 0), M2M_OK);
        assert_true(m2m_stream_is_open(s));
        m2m_stream_close(s);
        assert_false(m2m_stream_is_open(s));
        assert_int_equal(m2m_stream_send(s, "data: late\n\n", 12), M2M_ERR_IO);
        m2m_stream_close(s); /* twice is harmless */
        assert_int_equal(pthread_join(c.th, NULL), 0);
        if (c.r.rc != CURLE_OK)
            fail_msg("%s: %s", paths[k], curl_easy_strerror(c.r.rc));
        assert_int_equal(c.r.status, 200);
        assert_string_equal(header(&c.r, "Content-Type"), "text/event-stream");
        assert_null(header(&c.r, "Content-Length"));
        assert_string_equal(header(&c.r, "Transfer-Encoding"), "chunked");
        assert_string_equal(header(&c.r, "Cache-Control"), "no-store");
        assert_string_equal(header(&c.r, "X-Accel-Buffering"), "no");
        assert_string_equal(header(&c.r, "X-Request-Id"), rids[k]);
        assert_int_equal(c.body.len, want.len);
        assert_memory_equal(c.body.data, want.data, want.len);
        reg_release_all();

        json_t *line = find_log("http_request", rids[k]);
        assert_non_null(line);
        assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
        assert_string_equal(jstr(line, "route"), paths[k]);
        assert_null(json_object_get(line, "aborted"));
        json_decref(line);
        char series[128], *t = render(srv_metrics);
        snprintf(series, sizeof(series), "unit_http_requests_total{route=\"%s\",status=\"200\"}",
                 paths[k]);
        assert_true(metric(t, series) == 1);
        free(t);
        m2m_buf_free(&want);
        curl_sse_free(&c);
    }
}

/* HTTP/1.0 has no chunks: the body runs until the connection closes. */
static void test_stream_http10(void **state)
{
    sse_client c;
    (void)state;

    sse_connect(&c, srv_port, 0, "GET /stream HTTP/1.0\r\n\r\n");
    reg_wait(1);
    m2m_stream *s = reg_get(0);
    assert_true(sse_wait_for(&c, ": event\n\n", 3000));
    assert_false(c.chunked);
    assert_null(strcasestr(c.head, "\r\nContent-Length:"));
    assert_int_equal(m2m_stream_send(s, "data: a\n\n", 9), M2M_OK);
    assert_true(sse_wait_for(&c, "data: a\n\n", 3000));
    assert_int_equal(m2m_stream_send(s, "data: b\n\n", 9), M2M_OK);
    m2m_stream_close(s);
    assert_true(sse_wait_end(&c, 3000));
    assert_true(c.eof);
    assert_string_equal(c.body.data, ": event\n\ndata: a\n\ndata: b\n\n");
    sse_close(&c);
    reg_release_all();
}

#define IDLE_SUBS 100

/* 100 parked subscribers (half from deferred handlers) cost no CPU; one
 * broadcast reaches them all; closing ends every body cleanly. */
static void test_stream_idle_subscribers(void **state)
{
    sse_client *c = calloc(IDLE_SUBS, sizeof(*c));
    const char *tick = "event: rate\ndata: {\"EUR\":1.0842}\n\n";
    struct timespec c0, c1, t0;
    (void)state;

    assert_non_null(c);
    for (int i = 0; i < IDLE_SUBS; i++)
        sse_open(&c[i], srv_port, i % 2 ? "/stream-defer" : "/stream", NULL, 0);
    reg_wait(IDLE_SUBS);
    for (int i = 0; i < IDLE_SUBS; i++) {
        if (!sse_wait_for(&c[i], i % 2 ? ": pool\n\n" : ": event\n\n", 3000))
            fail_msg("subscriber %d got no first event", i);
        sse_check_head(&c[i]);
    }
    usleep(200 * 1000);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    usleep(1000 * 1000);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu_ms = (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
    printf("# %d idle subscribers: %.3f ms of process CPU in 1 s\n", IDLE_SUBS, cpu_ms);
    if (cpu_ms >= 50)
        fail_msg("%d idle subscribers used %.1f ms of CPU in 1 s", IDLE_SUBS, cpu_ms);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < IDLE_SUBS; i++)
        assert_int_equal(m2m_stream_send(reg_get(i), tick, strlen(tick)), M2M_OK);
    for (int i = 0; i < IDLE_SUBS; i++)
        if (!sse_wait_for(&c[i], tick, 5000))
            fail_msg("subscriber %d missed the broadcast", i);
    printf("# broadcast to %d subscribers received by all in %.1f ms\n", IDLE_SUBS, since_ms(&t0));

    for (int i = 0; i < IDLE_SUBS; i++)
        m2m_stream_close(reg_get(i));
    for (int i = 0; i < IDLE_SUBS; i++) {
        assert_true(sse_wait_end(&c[i], 5000));
        assert_true(c[i].ended);
        char want[128];
        snprintf(want, sizeof(want), "%s%s", i % 2 ? ": pool\n\n" : ": event\n\n", tick);
        assert_string_equal(c[i].body.data, want);
        sse_close(&c[i]);
    }
    reg_release_all();
    free(c);
}

/* A subscriber that goes away is noticed at the next ping: the send after
 * it returns M2M_ERR_IO. A plain close and a reset. The access log marks the
 * request aborted. */
static void test_stream_peer_gone(void **state)
{
    const char *rids[] = {"sse-gone-close", "sse-gone-reset"};
    (void)state;

    for (int k = 0; k < 2; k++) {
        sse_client c;
        sse_open(&c, srv_port, "/stream", rids[k], 0);
        reg_wait(1);
        m2m_stream *s = reg_get(0);
        assert_true(sse_wait_for(&c, ": event\n\n", 3000));
        if (k == 1) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        sse_close(&c);
        usleep(50 * 1000);
        assert_true(m2m_stream_is_open(s)); /* parked: nothing noticed yet */

        struct timespec t0;
        int pings = 0;
        m2m_err rc;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((rc = m2m_stream_send(s, ": ping\n\n", 8)) == M2M_OK && since_ms(&t0) < 3000) {
            pings++;
            usleep(20 * 1000);
        }
        printf("# peer gone (%s) noticed after %d ping(s), %.0f ms\n", k ? "reset" : "close", pings,
               since_ms(&t0));
        assert_int_equal(rc, M2M_ERR_IO);
        assert_in_range(pings, 1, 3);
        assert_false(m2m_stream_is_open(s));
        reg_release_all();

        json_t *line = find_log("http_request", rids[k]);
        assert_non_null(line);
        assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
        assert_true(json_is_true(json_object_get(line, "aborted")));
        json_decref(line);
    }
}

/* A consumer that keeps up gets 4 MiB; one that stops reading is cut off
 * with PAYLOAD_TOO_LARGE once more than 64 KiB wait unsent, and its body
 * does not end cleanly. */
static void test_stream_slow_consumer(void **state)
{
    char ev[1024];
    sse_client c;
    size_t sent;
    struct timespec t0;
    (void)state;

    memset(ev, 'x', sizeof(ev));
    memcpy(ev, "data: ", 6);
    ev[sizeof(ev) - 2] = '\n';
    ev[sizeof(ev) - 1] = '\n';

    sse_open(&c, srv_port, "/stream", NULL, 0);
    reg_wait(1);
    m2m_stream *s = reg_get(0);
    assert_true(sse_wait_for(&c, ": event\n\n", 3000));
    sent = c.body.len;
    for (int i = 0; i < 4096; i++) {
        assert_int_equal(m2m_stream_send(s, ev, sizeof(ev)), M2M_OK);
        sent += sizeof(ev);
        if (i % 16 != 15)
            continue;
        /* never more than 16 KiB ahead of the reader */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (c.body.len < sent) {
            if (c.eof || since_ms(&t0) > 5000)
                fail_msg("the reader fell behind at %zu of %zu bytes", c.body.len, sent);
            sse_pump(&c, 100);
        }
    }
    m2m_stream_close(s);
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.ended);
    assert_int_equal(c.body.len, sent);
    sse_close(&c);
    reg_release_all();

    sse_open(&c, srv_port, "/stream", NULL, 4096);
    reg_wait(1);
    s = reg_get(0);
    assert_true(sse_wait_for(&c, ": event\n\n", 3000));
    m2m_err rc = M2M_OK;
    sent = 0;
    while (sent < (64u << 20) && (rc = m2m_stream_send(s, ev, sizeof(ev))) == M2M_OK) {
        sent += sizeof(ev);
        if (sent % (16 * 1024) == 0)
            usleep(1000); /* the connection takes what the socket does */
    }
    printf("# a consumer that stopped reading was cut off after %zu KiB\n", sent / 1024);
    assert_int_equal(rc, M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_true(sent >= M2M_STREAM_MAX_PENDING);
    assert_false(m2m_stream_is_open(s));
    assert_int_equal(m2m_stream_send(s, "data: 1\n\n", 9), M2M_ERR_IO);
    /* reading again: what the connection held, then a close without the
     * last chunk */
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.eof);
    assert_false(c.ended);
    assert_true(c.body.len < sent);
    sse_close(&c);
    reg_release_all();
}

#define SEND_THREADS 4
#define SEND_EACH    400

typedef struct {
    m2m_stream *s;
    int id;
    atomic_int *go;
    int failures;
} sender_arg;

static void *sender_main(void *arg)
{
    sender_arg *a = arg;
    char ev[64];
    while (!atomic_load(a->go))
        ;
    for (int i = 0; i < SEND_EACH; i++) {
        int n = snprintf(ev, sizeof(ev), "data: %d %d\n\n", a->id, i);
        if (m2m_stream_send(a->s, ev, (size_t)n) != M2M_OK)
            a->failures++;
        if (i % 50 == 0)
            usleep(500); /* let the connection park now and then */
    }
    return NULL;
}

/* Several threads send on one stream at once while its connection parks
 * and resumes: every event arrives whole, each thread's in its order. */
static void test_stream_concurrent_senders(void **state)
{
    sse_client c;
    pthread_t th[SEND_THREADS];
    sender_arg args[SEND_THREADS];
    atomic_int go = 0;
    int next[SEND_THREADS] = {0};
    (void)state;

    sse_open(&c, srv_port, "/stream-defer", NULL, 0);
    reg_wait(1);
    m2m_stream *s = reg_get(0);
    assert_true(sse_wait_for(&c, ": pool\n\n", 3000));
    for (int i = 0; i < SEND_THREADS; i++) {
        args[i] = (sender_arg){s, i, &go, 0};
        assert_int_equal(pthread_create(&th[i], NULL, sender_main, &args[i]), 0);
    }
    atomic_store(&go, 1);
    for (int i = 0; i < SEND_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    m2m_stream_close(s);
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.ended);
    const char *p = c.body.data + strlen(": pool\n\n");
    for (int total = 0; total < SEND_THREADS * SEND_EACH; total++) {
        int id, seq, used = 0;
        if (sscanf(p, "data: %d %d\n\n%n", &id, &seq, &used) != 2 || used == 0)
            fail_msg("event %d malformed: %.20s", total, p);
        assert_in_range(id, 0, SEND_THREADS - 1);
        assert_int_equal(seq, next[id]);
        next[id]++;
        p += used;
    }
    assert_int_equal(*p, '\0');
    sse_close(&c);
    reg_release_all();
}

/* Stopping the server with open streams (parked, from both kinds of
 * handler, one on libcurl) ends each body cleanly after what was queued and
 * completes at once; a stream made while the stop waits starts closed;
 * streams outlive their server. */
static void test_stream_stop_with_open_streams(void **state)
{
    server_ctx ctx = {0};
    m2m_http_server *s = NULL;
    sse_client c[4], late;
    curl_sse cc;
    struct timespec t0;
    (void)state;

    assert_int_equal(start_server(NULL, &ctx, 2, &s), M2M_OK);
    unsigned port = m2m_http_server_port(s);
    for (int i = 0; i < 4; i++)
        sse_open(&c[i], port, i % 2 ? "/stream-defer" : "/stream", NULL, 0);
    curl_sse_start(&cc, port, "/stream", "sse-stop-curl");
    reg_wait(5);
    for (int i = 0; i < 4; i++)
        assert_true(sse_wait_for(&c[i], i % 2 ? ": pool\n\n" : ": event\n\n", 3000));
    assert_true(curl_sse_wait_for(&cc, ": event\n\n", 3000));
    for (int i = 0; i < 5; i++)
        assert_int_equal(m2m_stream_send(reg_get(i), "data: last\n\n", 12), M2M_OK);

    atomic_store(&stream_defer_entered, 0);
    sse_open(&late, port, "/stream-defer?ms=300", NULL, 0);
    for (int i = 0; i < 400 && !atomic_load(&stream_defer_entered); i++)
        usleep(5000);
    assert_true(atomic_load(&stream_defer_entered));

    clock_gettime(CLOCK_MONOTONIC, &t0);
    m2m_http_server_stop(s);
    double ms = since_ms(&t0);
    printf("# stop with 6 streams open took %.1f ms\n", ms);
    assert_true(ms < 2000);

    for (int i = 0; i < 4; i++) {
        assert_true(sse_wait_end(&c[i], 3000));
        assert_true(c[i].ended);
        assert_true(sse_has(&c[i], "data: last\n\n"));
        sse_close(&c[i]);
    }
    assert_int_equal(pthread_join(cc.th, NULL), 0);
    if (cc.r.rc != CURLE_OK)
        fail_msg("curl subscriber: %s", curl_easy_strerror(cc.r.rc));
    assert_int_equal(cc.r.status, 200);
    assert_true(curl_sse_has(&cc, ": event\n\ndata: last\n\n"));
    curl_sse_free(&cc);
    assert_true(sse_wait_end(&late, 3000));
    sse_check_head(&late);
    assert_true(late.ended);
    assert_int_equal(late.body.len, 0);
    sse_close(&late);

    assert_int_equal(reg_count(), 6);
    for (int i = 0; i < 6; i++) {
        assert_false(m2m_stream_is_open(reg_get(i)));
        assert_int_equal(m2m_stream_send(reg_get(i), "x", 1), M2M_ERR_IO);
    }
    reg_release_all();
}

/* A subscriber that stops reading does not hold the stop for long: it is
 * cut after 2 s, while a reading one still sees a clean end. */
static void test_stream_stop_with_stuck_consumer(void **state)
{
    server_ctx ctx = {0};
    m2m_http_server *s = NULL;
    sse_client stuck, ok;
    char ev[1024];
    struct timespec t0;
    (void)state;

    memset(ev, 'z', sizeof(ev));
    memcpy(ev, "data: ", 6);
    ev[sizeof(ev) - 2] = '\n';
    ev[sizeof(ev) - 1] = '\n';
    assert_int_equal(start_server(NULL, &ctx, 2, &s), M2M_OK);
    unsigned port = m2m_http_server_port(s);
    sse_open(&stuck, port, "/stream", NULL, 4096);
    reg_wait(1);
    assert_true(sse_wait_for(&stuck, ": event\n\n", 3000));
    sse_open(&ok, port, "/stream-defer", NULL, 0);
    reg_wait(2);
    assert_true(sse_wait_for(&ok, ": pool\n\n", 3000));
    m2m_stream *st = reg_get(0);

    /* fill the socket until the connection cannot take more: 32 KiB at a
     * time whenever it has taken everything, until a backlog stays put */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t last = 0;
    for (int stable = 0; stable < 50;) {
        if (since_ms(&t0) > 20000)
            fail_msg("the connection kept taking bytes");
        size_t pending = m2m_stream_pending(st);
        if (pending == 0) {
            for (int i = 0; i < 32; i++)
                assert_int_equal(m2m_stream_send(st, ev, sizeof(ev)), M2M_OK);
            stable = 0;
            continue;
        }
        stable = pending == last ? stable + 1 : 0;
        last = pending;
        usleep(2000);
    }
    assert_int_equal(m2m_stream_send(reg_get(1), "data: bye\n\n", 11), M2M_OK);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    m2m_http_server_stop(s);
    double ms = since_ms(&t0);
    printf("# stop with a stuck subscriber took %.0f ms\n", ms);
    assert_true(ms >= 1500 && ms < 4000);
    assert_true(sse_wait_end(&ok, 3000));
    assert_true(ok.ended);
    assert_string_equal(ok.body.data, ": pool\n\ndata: bye\n\n");
    assert_true(sse_wait_end(&stuck, 5000)); /* reading again: cut short */
    assert_true(stuck.eof);
    assert_false(stuck.ended);
    assert_int_equal(m2m_stream_pending(st), 0);
    sse_close(&ok);
    sse_close(&stuck);
    reg_release_all();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_reply),
        cmocka_unit_test(test_defer_runs_on_blocking_thread),
        cmocka_unit_test(test_defer_queue_full_is_503),
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_two_methods_one_path),
        cmocka_unit_test(test_query_args),
        cmocka_unit_test(test_request_headers_and_path),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_body_echo),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_body_cap_content_length),
        cmocka_unit_test(test_body_cap_chunked),
        cmocka_unit_test(test_request_id_echo_and_replace),
        cmocka_unit_test(test_generated_ids_unique),
        cmocka_unit_test(test_cache_control),
        cmocka_unit_test(test_many_reply_headers),
        cmocka_unit_test(test_reply_error_table),
        cmocka_unit_test(test_reply_error_extra),
        cmocka_unit_test(test_handler_without_reply),
        cmocka_unit_test(test_double_reply_first_wins),
        cmocka_unit_test(test_access_log_and_request_id_on_lines),
        cmocka_unit_test(test_access_log_off_logs_only_errors),
        cmocka_unit_test(test_nul_escape_not_decoded),
        cmocka_unit_test(test_missing_host),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_metrics_per_route),
        cmocka_unit_test(test_stop_completes_in_flight),
        cmocka_unit_test(test_stop_releases_port),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_stream_events_in_order),
        cmocka_unit_test(test_stream_http10),
        cmocka_unit_test(test_stream_idle_subscribers),
        cmocka_unit_test(test_stream_peer_gone),
        cmocka_unit_test(test_stream_slow_consumer),
        cmocka_unit_test(test_stream_concurrent_senders),
        cmocka_unit_test(test_stream_stop_with_open_streams),
        cmocka_unit_test(test_stream_stop_with_stuck_consumer),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (failed) {
        /* A failed assertion longjmps past the test's own cleanup: skip the
         * leak check (LeakSanitizer runs from exit()) so that the report
         * shows the failures rather than the leaks they cause. */
        fflush(stdout);
        fflush(stderr);
        _exit(1);
    }
    return 0;
}
