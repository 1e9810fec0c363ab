/* HTTP client against a small libmicrohttpd server started inside the test
 * on 127.0.0.1 and a kernel-chosen port. The server echoes method, a header
 * and the body, sends large bodies (sized or chunked), sleeps on request, and
 * counts the TCP connections it accepts so keep-alive can be checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <microhttpd.h>

#include "m2m/httpc.h"
#include "m2m/log.h"

#define UPLOAD_MAX (4u << 20)

static struct MHD_Daemon *daemon_h;
static unsigned short port;
static atomic_int stopping;
static atomic_int connections_opened;

typedef struct {
    m2m_buf body;
} req_ctx;

typedef struct {
    uint64_t left;
} chunk_state;

static long query_long(struct MHD_Connection *c, const char *name, long def)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);

    return v ? strtol(v, NULL, 10) : def;
}

static ssize_t chunk_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    chunk_state *st = cls;
    size_t n;

    (void)pos;
    if (st->left == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    n = st->left < max ? (size_t)st->left : max;
    memset(buf, 'c', n);
    st->left -= n;
    return (ssize_t)n;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *ctype,
                             const char *body, size_t len)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    req_ctx *ctx = *con_cls;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)version;
    /* First call (headers only): never queue here, or MHD drops keep-alive
     * (design.md §7). Just set up the per-request state. */
    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        m2m_buf_init(&ctx->body, UPLOAD_MAX);
        *con_cls = ctx;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (m2m_buf_append(&ctx->body, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (strcmp(url, "/rid") == 0) { /* echoes X-Request-Id */
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
        const char *text = rid ? rid : "-";
        r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/echo") == 0) {
        const char *xt = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Test");
        m2m_buf out;

        m2m_buf_init(&out, UPLOAD_MAX + 256);
        if (m2m_buf_appendf(&out, "%s|%s|%s", method, xt ? xt : "-",
                            ctx->body.data ? ctx->body.data : ""))
            return MHD_NO;
        ret = reply(c, MHD_HTTP_OK, "text/plain; charset=utf-8", out.data, out.len);
        m2m_buf_free(&out);
        return ret;
    }
    if (strcmp(url, "/missing") == 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json", "{\"error\":\"not_found\"}", 21);
    if (strcmp(url, "/empty") == 0)
        return reply(c, MHD_HTTP_OK, NULL, "", 0);
    if (strcmp(url, "/redirect") == 0) {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, "/echo");
        ret = MHD_queue_response(c, MHD_HTTP_FOUND, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/longctype") == 0) {
        char ct[301];

        memset(ct, 'a', sizeof(ct) - 1);
        memcpy(ct, "text/x-", 7);
        ct[sizeof(ct) - 1] = '\0';
        return reply(c, MHD_HTTP_OK, ct, "ok", 2);
    }
    if (strcmp(url, "/big") == 0) {
        /* Known size: the client sees Content-Length up front. */
        size_t n = (size_t)query_long(c, "n", 0);
        char *p = malloc(n ? n : 1);

        if (!p)
            return MHD_NO;
        memset(p, 'b', n);
        r = MHD_create_response_from_buffer(n, p, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(p);
            return MHD_NO;
        }
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/bigchunked") == 0) {
        /* Unknown size: chunked, so only the write callback can stop it. */
        chunk_state *st = malloc(sizeof(*st));

        if (!st)
            return MHD_NO;
        st->left = (uint64_t)query_long(c, "n", 0);
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, chunk_reader, st, free);
        if (!r) {
            free(st);
            return MHD_NO;
        }
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/sleep") == 0) {
        long ms = query_long(c, "ms", 0);

        /* Sleep in slices so stopping the server does not wait it out. */
        for (long t = 0; t < ms && !atomic_load(&stopping); t += 10)
            usleep(10000);
        return reply(c, MHD_HTTP_OK, "text/plain", "slept", 5);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no route", 8);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    req_ctx *ctx = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (ctx) {
        m2m_buf_free(&ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

static void conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)c;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&connections_opened, 1);
}

static int setup(void **state)
{
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;

    (void)state;
    if (m2m_httpc_global_init() != M2M_OK)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* A pool, so one sleeping handler does not hold up the other tests. */
    daemon_h = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, handler, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)4,
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, conn_notify,
        NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (!daemon_h)
        return -1;
    info = MHD_get_daemon_info(daemon_h, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0)
        return -1;
    port = info->port;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&stopping, 1);
    if (daemon_h)
        MHD_stop_daemon(daemon_h);
    m2m_httpc_global_cleanup();
    return 0;
}

static void url_for(char *buf, size_t len, const char *path)
{
    snprintf(buf, len, "http://127.0.0.1:%u%s", (unsigned)port, path);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void test_get(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/echo");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "text/plain; charset=utf-8");
    assert_string_equal(resp.body.data, "GET|-|");
    assert_int_equal(resp.body.len, 6);
    m2m_httpc_resp_free(&resp);
    m2m_httpc_resp_free(&resp); /* twice is fine */
}

static void test_headers_sent(void **state)
{
    char url[128];
    const char *const hdrs[] = {"X-Test: hello there", "Accept: text/plain", NULL};
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/echo");
    req.url = url;
    req.headers = hdrs;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "GET|hello there|");
    m2m_httpc_resp_free(&resp);
}

/* The calling thread's request id travels with its outgoing calls, unless
 * the caller sets one itself; without one, none is sent. */
static void test_request_id_forwarded(void **state)
{
    char url[128];
    const char *const own[] = {"x-request-id: mine", NULL};
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/rid");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "-");
    m2m_httpc_resp_free(&resp);

    m2m_log_set_request_id("abc-123");
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "abc-123");
    m2m_httpc_resp_free(&resp);

    req.headers = own;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "mine");
    m2m_httpc_resp_free(&resp);
    m2m_log_set_request_id(NULL);
}

static void test_post_echo(void **state)
{
    char url[128];
    const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    const char body[] = "grant_type=client_credentials&scope=currency%3Aread";
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/echo");
    req.method = "POST";
    req.url = url;
    req.headers = hdrs;
    req.body = body;
    req.body_len = strlen(body);
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body.data,
                        "POST|-|grant_type=client_credentials&scope=currency%3Aread");
    m2m_httpc_resp_free(&resp);

    /* body_len is honoured: only the first 10 bytes go out. */
    req.body_len = 10;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "POST|-|grant_type");
    m2m_httpc_resp_free(&resp);

    /* A POST without a body. */
    req.body = NULL;
    req.body_len = 0;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "POST|-|");
    m2m_httpc_resp_free(&resp);
}

static void test_large_post(void **state)
{
    char url[128];
    size_t n = 200000;
    char *body = malloc(n);
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    assert_non_null(body);
    memset(body, 'p', n);
    url_for(url, sizeof(url), "/echo");
    req.method = "POST";
    req.url = url;
    req.body = body;
    req.body_len = n;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.body.len, n + 7);
    assert_memory_equal(resp.body.data, "POST|-|ppp", 10);
    m2m_httpc_resp_free(&resp);
    free(body);
}

static void test_other_methods(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/echo");
    req.url = url;
    req.method = "PUT";
    req.body = "{\"rate\":1.5}";
    req.body_len = strlen(req.body);
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "PUT|-|{\"rate\":1.5}");
    m2m_httpc_resp_free(&resp);

    req.method = "DELETE";
    req.body = NULL;
    req.body_len = 0;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "DELETE|-|");
    m2m_httpc_resp_free(&resp);

    /* Options from the previous call do not leak into this one. */
    req.method = "GET";
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "GET|-|");
    m2m_httpc_resp_free(&resp);
}

static void test_404_is_a_status(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/missing");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.status, 404);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal(resp.body.data, "{\"error\":\"not_found\"}");
    m2m_httpc_resp_free(&resp);
}

static void test_redirect_not_followed(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/redirect");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.status, 302);
    assert_string_equal(resp.body.data, "");
    m2m_httpc_resp_free(&resp);
}

static void test_empty_body_and_no_ctype(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/empty");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    assert_non_null(resp.body.data); /* "" rather than NULL */
    assert_string_equal(resp.body.data, "");
    assert_string_equal(resp.content_type, "");
    m2m_httpc_resp_free(&resp);
}

static void test_long_content_type_truncated(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    url_for(url, sizeof(url), "/longctype");
    req.url = url;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_int_equal(strlen(resp.content_type), sizeof(resp.content_type) - 1);
    assert_true(strncmp(resp.content_type, "text/x-aaa", 10) == 0);
    m2m_httpc_resp_free(&resp);
}

static void fetch_size(const char *path, size_t n, size_t max, m2m_err want)
{
    char p[64], url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    snprintf(p, sizeof(p), "%s?n=%zu", path, n);
    url_for(url, sizeof(url), p);
    req.url = url;
    req.max_response = max;
    assert_int_equal(m2m_httpc_do(&req, &resp), want);
    if (want == M2M_OK) {
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.body.len, n);
    } else {
        assert_null(resp.body.data); /* nothing left to free on failure */
        assert_int_equal(resp.status, 0);
    }
    m2m_httpc_resp_free(&resp);
}

static void test_response_cap(void **state)
{
    (void)state;
    /* Exactly at the cap is fine; one byte over is an upstream failure,
     * whether the size is announced or the body is chunked. */
    fetch_size("/big", 1000, 1000, M2M_OK);
    fetch_size("/big", 1001, 1000, M2M_ERR_UPSTREAM);
    fetch_size("/big", 500000, 1000, M2M_ERR_UPSTREAM);
    fetch_size("/bigchunked", 1000, 1000, M2M_OK);
    fetch_size("/bigchunked", 1001, 1000, M2M_ERR_UPSTREAM);
    fetch_size("/bigchunked", 500000, 1000, M2M_ERR_UPSTREAM);
    /* Default cap: 1 MiB. */
    fetch_size("/big", (size_t)1 << 20, 0, M2M_OK);
    fetch_size("/big", ((size_t)1 << 20) + 1, 0, M2M_ERR_UPSTREAM);
    fetch_size("/bigchunked", ((size_t)1 << 20) + 1, 0, M2M_ERR_UPSTREAM);
    /* The thread's handle still works after an aborted transfer. */
    fetch_size("/big", 10, 0, M2M_OK);
}

static void test_timeout(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;
    double t0, elapsed;

    (void)state;
    url_for(url, sizeof(url), "/sleep?ms=2000");
    req.url = url;
    req.timeout_ms = 300;
    t0 = now_ms();
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_ERR_UPSTREAM);
    elapsed = now_ms() - t0;
    assert_true(elapsed >= 250.0);
    assert_true(elapsed < 1000.0);
    m2m_httpc_resp_free(&resp);

    /* A short sleep within the timeout succeeds. */
    url_for(url, sizeof(url), "/sleep?ms=50");
    req.timeout_ms = 2000;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    assert_string_equal(resp.body.data, "slept");
    m2m_httpc_resp_free(&resp);
}

static void test_connection_refused(void **state)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;
    double t0;

    (void)state;
    /* Take a free port from the kernel and close it again: nothing listens. */
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)ntohs(sa.sin_port));
    req.url = url;
    t0 = now_ms();
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_ERR_UPSTREAM);
    assert_true(now_ms() - t0 < 2000.0);
    assert_null(resp.body.data);
    m2m_httpc_resp_free(&resp);
}

static void test_protocols_limited(void **state)
{
    const char *const bad[] = {"file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1/",
                               "dict://127.0.0.1/", "not a url"};
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        req.url = bad[i];
        assert_int_equal(m2m_httpc_do(&req, &resp), M2M_ERR_UPSTREAM);
        assert_null(resp.body.data);
        m2m_httpc_resp_free(&resp);
    }
}

static void test_caller_errors(void **state)
{
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;

    (void)state;
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_ERR_INTERNAL); /* no URL */
    m2m_httpc_resp_free(&resp);
    assert_int_equal(m2m_httpc_do(NULL, &resp), M2M_ERR_INTERNAL);
    m2m_httpc_resp_free(&resp);
    m2m_httpc_resp_free(NULL);
}

static void test_keepalive_reuse(void **state)
{
    char url[128];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;
    int before, i;

    (void)state;
    url_for(url, sizeof(url), "/echo");
    req.url = url;
    /* Warm up: the previous test may have left no live connection. */
    assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
    m2m_httpc_resp_free(&resp);
    before = atomic_load(&connections_opened);
    for (i = 0; i < 20; i++) {
        req.method = i % 2 ? "POST" : "GET";
        req.body = i % 2 ? "x" : NULL;
        req.body_len = i % 2 ? 1 : 0;
        assert_int_equal(m2m_httpc_do(&req, &resp), M2M_OK);
        assert_int_equal(resp.status, 200);
        m2m_httpc_resp_free(&resp);
    }
    /* One reused connection, not twenty. */
    assert_int_equal(atomic_load(&connections_opened), before);
}

#define NTHREADS   4
#define PER_THREAD 50

typedef struct {
    int id;
    int failures;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    char url[128], body[64], want[96];
    m2m_httpc_req req = {0};
    m2m_httpc_resp resp;
    int i;

    /* No cmocka asserts here: they longjmp and are not thread-safe. */
    url_for(url, sizeof(url), "/echo");
    req.method = "POST";
    req.url = url;
    for (i = 0; i < PER_THREAD; i++) {
        snprintf(body, sizeof(body), "thread-%d-req-%d", w->id, i);
        snprintf(want, sizeof(want), "POST|-|%s", body);
        req.body = body;
        req.body_len = strlen(body);
        if (m2m_httpc_do(&req, &resp) != M2M_OK) {
            w->failures++;
            continue;
        }
        if (resp.status != 200 || strcmp(resp.body.data, want) != 0)
            w->failures++;
        m2m_httpc_resp_free(&resp);
    }
    /* Thread exit runs the key destructor: the handle is cleaned up there
     * (LeakSanitizer would report it otherwise). */
    return NULL;
}

static void test_concurrent(void **state)
{
    pthread_t th[NTHREADS];
    worker w[NTHREADS];
    int i, before;

    (void)state;
    before = atomic_load(&connections_opened);
    for (i = 0; i < NTHREADS; i++) {
        w[i].id = i;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    /* Each thread kept its own connection alive for its 50 requests. */
    assert_true(atomic_load(&connections_opened) - before <= NTHREADS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_headers_sent),
        cmocka_unit_test(test_request_id_forwarded),
        cmocka_unit_test(test_post_echo),
        cmocka_unit_test(test_large_post),
        cmocka_unit_test(test_other_methods),
        cmocka_unit_test(test_404_is_a_status),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_empty_body_and_no_ctype),
        cmocka_unit_test(test_long_content_type_truncated),
        cmocka_unit_test(test_response_cap),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_protocols_limited),
        cmocka_unit_test(test_caller_errors),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_concurrent),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
