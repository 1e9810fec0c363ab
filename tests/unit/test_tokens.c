/* Unit tests for the token manager (crypto-client/lib/include/m2m/tokens.h)
 * against a fake authorization server and a fake resource server run inside
 * the test with m2m_http on 127.0.0.1 and a kernel-chosen port: real HTTP
 * over loopback, the library speaking through libcurl (m2m_httpc).
 *
 * The fake token endpoint is scripted per test (what it answers, after what
 * delay), counts its requests and checks each one: POST, form-urlencoded,
 * grant_type=client_credentials, scope and resource exactly as configured,
 * HTTP Basic with the client id and secret form-urlencoded (RFC 6749
 * §2.3.1) and no second authentication method. It records every token it
 * issues with the time, so that "never handed out past its renewal time"
 * is checked against the server's own clock. It also serves RFC 8414
 * metadata. The fake resource server accepts only the newest token issued
 * (or refuses everything), so the 401-retry of m2m_tokens_call is checked by
 * counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
#include <sys/socket.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "m2m/b64.h"
#include "m2m/buf.h"
#include "m2m/err.h"
#include "m2m/form.h"
#include "m2m/http.h"
#include "m2m/httpc.h"
#include "m2m/log.h"
#include "m2m/tokens.h"

#define CLIENT_ID     "client-1"
#define CLIENT_SECRET "S3cret-never-logged-7f2c9a1e"
#define WRONG_SECRET  "Wrong-secret-also-private-5e1d9c"
#define AUD           "http://localhost:8000/api/currency"
#define SCOPE_DEFAULT "currency:read"
#define TOKBUF        (M2M_TOKENS_MAX_TOKEN + 1)
#define MAX_ISSUED    512
#define MAX_REQS      1024
#define RS_KEEP       8
#define TEXT_MAX      512

/* ---- time ----------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void sleep_until(int64_t t)
{
    sleep_ms((long)(t - now_ms()));
}

/* ---- the fake authorization server and resource server ------------------- */

typedef enum {
    TK_OK,         /* a Bearer token; expires_in (< 0: omitted) */
    TK_STATUS,     /* status with body (application/json) */
    TK_NOT_JSON,   /* 200 with garbage */
    TK_TYPE_MAC,   /* token_type "mac" */
    TK_TYPE_LOWER, /* token_type "bearer" (RFC 6749 §5.1: case-insensitive) */
    TK_NO_TOKEN,   /* no access_token */
    TK_TOKEN_INT,  /* "access_token": 42 */
    TK_NOT_OBJECT, /* ["access_token"] */
    TK_BIG,        /* an access_token of big_len bytes */
} tk_mode;

typedef enum {
    RS_NEWEST, /* 200 for the newest token issued (unless revoked), else 401 */
    RS_ALWAYS_401,
    RS_403,
} rs_mode;

typedef struct {
    char tok[64];
    int64_t at_ms; /* monotonic, when the reply was made */
} issued_tok;

static struct {
    pthread_mutex_t mu;
    /* the token endpoint's script */
    tk_mode mode;
    int status;
    char body[TEXT_MAX];
    long expires_in;
    unsigned delay_ms;
    size_t big_len;
    char good_id[128];
    char good_secret[128];
    const char *expect_scope;    /* NULL: must be absent */
    const char *expect_resource; /* NULL: must be absent */
    /* what it saw */
    char bad[TEXT_MAX]; /* the first problem found in a request */
    char seen_id[128], seen_secret[128], seen_scope[256], seen_path[64];
    bool seen_has_scope;
    char seen_resource[256];
    bool seen_has_resource;
    issued_tok issued[MAX_ISSUED];
    size_t nissued;
    int64_t req_ms[MAX_REQS]; /* monotonic time of each token request */
    size_t nreq;
    /* metadata */
    int md_status;
    char md_issuer[128];
    /* the resource server */
    rs_mode rs;
    char rs_accept[64];
    char rs_auth[RS_KEEP][128]; /* Authorization of request n at [n % RS_KEEP] */
    size_t rs_n;
} g_tk = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_int g_tk_requests, g_md_requests, g_rs_requests;
static atomic_long g_seq;
static m2m_http_server *g_srv;
static char g_base[64];      /* http://127.0.0.1:PORT, also the issuer */
static char g_token_url[96]; /* <base>/token */
static char g_res_url[96];   /* <base>/res */

static void bad_locked(const char *what)
{
    if (!g_tk.bad[0])
        snprintf(g_tk.bad, sizeof g_tk.bad, "%s", what);
}

/* Copies with truncation (cap > 0). */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Splits "Basic base64(id:secret)" and form-decodes both halves. */
static bool basic_creds(const char *authz, char *id, size_t idcap, char *secret, size_t seccap)
{
    uint8_t raw[512];
    size_t rawlen = 0, n;
    char *colon, *a = NULL, *b = NULL;
    bool ok = false;

    if (!authz || strncasecmp(authz, "Basic ", 6) != 0)
        return false;
    if (m2m_b64_decode(authz + 6, strlen(authz + 6), raw, sizeof raw - 1, &rawlen))
        return false;
    raw[rawlen] = '\0';
    colon = memchr(raw, ':', rawlen);
    if (!colon)
        return false;
    n = (size_t)(colon - (char *)raw);
    if (m2m_pct_decode((const char *)raw, n, 1, &a, NULL) ||
        m2m_pct_decode(colon + 1, rawlen - n - 1, 1, &b, NULL))
        goto out;
    copy_str(id, idcap, a);
    copy_str(secret, seccap, b);
    ok = true;
out:
    free(a);
    free(b);
    return ok;
}

/* Checks one token request; returns true when the credentials are good.
 * Called with the lock held. */
static bool check_token_request_locked(m2m_req *r)
{
    const char *authz = m2m_req_header(r, "Authorization"), *v;
    size_t len = 0, count = 0;
    const char *body = m2m_req_body(r, &len);
    m2m_form f;
    bool creds_ok;

    memset(&f, 0, sizeof f);
    copy_str(g_tk.seen_path, sizeof g_tk.seen_path, m2m_req_path(r));
    if (strcmp(m2m_req_method(r), "POST") != 0)
        bad_locked("token request: method is not POST");
    if (strcmp(m2m_req_content_type(r), "application/x-www-form-urlencoded") != 0)
        bad_locked("token request: Content-Type is not application/x-www-form-urlencoded");
    creds_ok = basic_creds(authz, g_tk.seen_id, sizeof g_tk.seen_id, g_tk.seen_secret,
                           sizeof g_tk.seen_secret);
    if (!creds_ok) {
        bad_locked("token request: no well-formed HTTP Basic credentials");
        g_tk.seen_id[0] = g_tk.seen_secret[0] = '\0';
    }
    if (m2m_form_parse(body ? body : "", body ? len : 0, &f)) {
        bad_locked("token request: the body is not form-urlencoded");
        return false;
    }
    v = m2m_form_get(&f, "grant_type", &count);
    if (!v || count != 1 || strcmp(v, "client_credentials") != 0)
        bad_locked("token request: grant_type is not exactly client_credentials");
    v = m2m_form_get(&f, "scope", &count);
    g_tk.seen_has_scope = v != NULL;
    copy_str(g_tk.seen_scope, sizeof g_tk.seen_scope, v);
    if (g_tk.expect_scope ? (!v || count != 1 || strcmp(v, g_tk.expect_scope) != 0) : v != NULL)
        bad_locked("token request: scope differs from the configured one");
    v = m2m_form_get(&f, "resource", &count);
    g_tk.seen_has_resource = v != NULL;
    copy_str(g_tk.seen_resource, sizeof g_tk.seen_resource, v);
    if (g_tk.expect_resource ? (!v || count != 1 || strcmp(v, g_tk.expect_resource) != 0)
                             : v != NULL)
        bad_locked("token request: resource differs from the configured one");
    /* RFC 6749 §2.3: one authentication method per request */
    if (m2m_form_get(&f, "client_secret", NULL))
        bad_locked("token request: client_secret in the body besides HTTP Basic");
    m2m_form_free(&f);
    return creds_ok && strcmp(g_tk.seen_id, g_tk.good_id) == 0 &&
           strcmp(g_tk.seen_secret, g_tk.good_secret) == 0;
}

static void new_token_locked(char *out, size_t cap)
{
    long seq = atomic_fetch_add(&g_seq, 1);
    issued_tok *it;

    snprintf(out, cap, "AT-%04ld-%08x%08x%08x", seq, (unsigned)rand(), (unsigned)rand(),
             (unsigned)rand());
    if (g_tk.nissued < MAX_ISSUED) {
        it = &g_tk.issued[g_tk.nissued++];
        copy_str(it->tok, sizeof it->tok, out);
        it->at_ms = now_ms();
    }
    copy_str(g_tk.rs_accept, sizeof g_tk.rs_accept, out);
}

static void token_reply(m2m_req *r, void *ctx)
{
    m2m_buf b;
    char tok[64];
    int status = 200;
    const char *scope;
    bool creds_ok;

    (void)ctx;
    m2m_buf_init(&b, 1u << 16);
    pthread_mutex_lock(&g_tk.mu);
    creds_ok = check_token_request_locked(r);
    scope = g_tk.seen_has_scope ? g_tk.seen_scope : SCOPE_DEFAULT;
    if (!creds_ok) {
        status = 401;
        m2m_buf_appends(&b, "{\"error\":\"invalid_client\","
                            "\"error_description\":\"client authentication failed\"}");
        m2m_reply_header(r, "WWW-Authenticate", "Basic realm=\"test\"");
    } else {
        switch (g_tk.mode) {
        case TK_OK:
        case TK_TYPE_LOWER:
            new_token_locked(tok, sizeof tok);
            m2m_buf_appendf(&b, "{\"access_token\":\"%s\",\"token_type\":\"%s\",", tok,
                            g_tk.mode == TK_OK ? "Bearer" : "bearer");
            if (g_tk.expires_in >= 0)
                m2m_buf_appendf(&b, "\"expires_in\":%ld,", g_tk.expires_in);
            m2m_buf_appendf(&b, "\"scope\":\"%s\"}", scope);
            break;
        case TK_STATUS:
            status = g_tk.status;
            m2m_buf_appends(&b, g_tk.body);
            break;
        case TK_NOT_JSON:
            m2m_buf_appends(&b, "{\"access_token\":\"AT-not-json\",\"token_type\":");
            break;
        case TK_TYPE_MAC:
            m2m_buf_appends(&b, "{\"access_token\":\"AT-mac-token\",\"token_type\":\"mac\","
                                "\"expires_in\":60}");
            break;
        case TK_NO_TOKEN:
            m2m_buf_appends(&b, "{\"token_type\":\"Bearer\",\"expires_in\":60}");
            break;
        case TK_TOKEN_INT:
            m2m_buf_appends(&b, "{\"access_token\":42,\"token_type\":\"Bearer\","
                                "\"expires_in\":60}");
            break;
        case TK_NOT_OBJECT:
            m2m_buf_appends(&b, "[\"access_token\",\"Bearer\"]");
            break;
        case TK_BIG:
            m2m_buf_appends(&b, "{\"access_token\":\"BIG");
            for (size_t i = 3; i < g_tk.big_len; i++)
                m2m_buf_append(&b, "A", 1);
            m2m_buf_appends(&b, "\",\"token_type\":\"Bearer\",\"expires_in\":60}");
            break;
        }
    }
    pthread_mutex_unlock(&g_tk.mu);
    m2m_reply_header(r, "Cache-Control", "no-store");
    m2m_reply_raw(r, b.data ? status : 500, "application/json", b.data ? b.data : "",
                  b.data ? b.len : 0);
    m2m_buf_free(&b);
}

static void h_token_slow(m2m_req *r, void *ctx)
{
    unsigned delay;

    pthread_mutex_lock(&g_tk.mu);
    delay = g_tk.delay_ms;
    pthread_mutex_unlock(&g_tk.mu);
    sleep_ms((long)delay);
    token_reply(r, ctx);
}

static void h_token(m2m_req *r, void *ctx)
{
    unsigned delay;

    atomic_fetch_add(&g_tk_requests, 1);
    pthread_mutex_lock(&g_tk.mu);
    if (g_tk.nreq < MAX_REQS)
        g_tk.req_ms[g_tk.nreq++] = now_ms();
    delay = g_tk.delay_ms;
    pthread_mutex_unlock(&g_tk.mu);
    if (delay && !m2m_req_may_block(r)) {
        m2m_req_defer(r, h_token_slow); /* event threads never sleep */
        return;
    }
    token_reply(r, ctx);
}

static void h_metadata(m2m_req *r, void *ctx)
{
    int status;
    json_t *doc;

    (void)ctx;
    atomic_fetch_add(&g_md_requests, 1);
    pthread_mutex_lock(&g_tk.mu);
    status = g_tk.md_status;
    doc = json_pack("{s:s, s:s, s:s, s:[s], s:[s]}", "issuer", g_tk.md_issuer, "token_endpoint", "",
                    "jwks_uri", "", "grant_types_supported", "client_credentials",
                    "token_endpoint_auth_methods_supported", "client_secret_basic");
    pthread_mutex_unlock(&g_tk.mu);
    if (!doc) {
        m2m_reply_error(r, M2M_ERR_INTERNAL, NULL);
        return;
    }
    {
        char url[128];

        snprintf(url, sizeof url, "%s/md/token", g_base);
        json_object_set_new(doc, "token_endpoint", json_string(url));
        snprintf(url, sizeof url, "%s/jwks.json", g_base);
        json_object_set_new(doc, "jwks_uri", json_string(url));
    }
    if (status != 200) {
        json_decref(doc);
        m2m_reply_error(r, M2M_ERR_UNAVAILABLE, NULL);
        return;
    }
    m2m_reply_json(r, 200, doc);
}

static void h_res(m2m_req *r, void *ctx)
{
    const char *authz = m2m_req_header(r, "Authorization");
    const char *caller = m2m_req_header(r, "X-Caller");
    size_t blen = 0;
    int status;

    (void)ctx;
    (void)m2m_req_body(r, &blen);
    atomic_fetch_add(&g_rs_requests, 1);
    pthread_mutex_lock(&g_tk.mu);
    copy_str(g_tk.rs_auth[g_tk.rs_n++ % RS_KEEP], sizeof g_tk.rs_auth[0], authz);
    if (g_tk.rs == RS_403)
        status = 403;
    else if (g_tk.rs == RS_ALWAYS_401)
        status = 401;
    else
        status = authz && g_tk.rs_accept[0] && strncmp(authz, "Bearer ", 7) == 0 &&
                         strcmp(authz + 7, g_tk.rs_accept) == 0
                     ? 200
                     : 401;
    pthread_mutex_unlock(&g_tk.mu);
    if (status == 401) {
        m2m_reply_header(r, "WWW-Authenticate", "Bearer realm=\"test\", error=\"invalid_token\"");
        m2m_reply_json(r, 401, json_pack("{s:s}", "error", "invalid_token"));
        return;
    }
    if (status == 403) {
        m2m_reply_json(r, 403, json_pack("{s:s}", "error", "insufficient_scope"));
        return;
    }
    m2m_reply_json(r, 200,
                   json_pack("{s:s, s:s?, s:s?, s:I}", "method", m2m_req_method(r), "auth", authz,
                             "caller", caller, "body_len", (json_int_t)blen));
}

static const m2m_route g_routes[] = {
    {"POST", "/token", h_token, 0},
    {"GET", "/token", h_token, 0}, /* to see a wrong method, not a 405 */
    {"POST", "/md/token", h_token, 0},
    {"GET", "/.well-known/oauth-authorization-server", h_metadata, 0},
    {"GET", "/res", h_res, 0},
    {"POST", "/res", h_res, 0},
};

/* ---- helpers ---------------------------------------------------------------- */

static void tk_reset(void)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.mode = TK_OK;
    g_tk.status = 200;
    g_tk.body[0] = '\0';
    g_tk.expires_in = 60;
    g_tk.delay_ms = 0;
    g_tk.big_len = 0;
    copy_str(g_tk.good_id, sizeof g_tk.good_id, CLIENT_ID);
    copy_str(g_tk.good_secret, sizeof g_tk.good_secret, CLIENT_SECRET);
    g_tk.expect_scope = NULL;
    g_tk.expect_resource = NULL;
    g_tk.bad[0] = '\0';
    g_tk.seen_id[0] = g_tk.seen_secret[0] = g_tk.seen_scope[0] = g_tk.seen_path[0] = '\0';
    g_tk.seen_resource[0] = '\0';
    g_tk.seen_has_scope = g_tk.seen_has_resource = false;
    g_tk.nissued = 0;
    g_tk.nreq = 0;
    g_tk.md_status = 200;
    copy_str(g_tk.md_issuer, sizeof g_tk.md_issuer, g_base);
    g_tk.rs = RS_NEWEST;
    g_tk.rs_accept[0] = '\0';
    g_tk.rs_n = 0;
    pthread_mutex_unlock(&g_tk.mu);
    atomic_store(&g_tk_requests, 0);
    atomic_store(&g_md_requests, 0);
    atomic_store(&g_rs_requests, 0);
}

static void tk_mode_set(tk_mode m)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.mode = m;
    pthread_mutex_unlock(&g_tk.mu);
}

static void tk_status_set(int status, const char *body)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.mode = TK_STATUS;
    g_tk.status = status;
    copy_str(g_tk.body, sizeof g_tk.body, body);
    pthread_mutex_unlock(&g_tk.mu);
}

static void tk_expires_set(long s)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.expires_in = s;
    pthread_mutex_unlock(&g_tk.mu);
}

static void tk_delay_set(unsigned ms)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.delay_ms = ms;
    pthread_mutex_unlock(&g_tk.mu);
}

static void rs_mode_set(rs_mode m)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.rs = m;
    pthread_mutex_unlock(&g_tk.mu);
}

/* The resource server stops accepting the current token. */
static void rs_revoke(void)
{
    pthread_mutex_lock(&g_tk.mu);
    g_tk.rs_accept[0] = '\0';
    pthread_mutex_unlock(&g_tk.mu);
}

static int tk_count(void)
{
    return atomic_load(&g_tk_requests);
}

/* The n-th token issued (0-based); "" when none. */
static void issued_get(size_t n, issued_tok *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_tk.mu);
    if (n < g_tk.nissued)
        *out = g_tk.issued[n];
    pthread_mutex_unlock(&g_tk.mu);
}

static size_t issued_count(void)
{
    size_t n;

    pthread_mutex_lock(&g_tk.mu);
    n = g_tk.nissued;
    pthread_mutex_unlock(&g_tk.mu);
    return n;
}

/* When the token was issued (monotonic ms), -1 when it never was. */
static int64_t issued_at(const char *tok)
{
    int64_t at = -1;

    pthread_mutex_lock(&g_tk.mu);
    for (size_t i = 0; i < g_tk.nissued; i++)
        if (strcmp(g_tk.issued[i].tok, tok) == 0)
            at = g_tk.issued[i].at_ms;
    pthread_mutex_unlock(&g_tk.mu);
    return at;
}

/* Every request the endpoint saw was well-formed. */
static void assert_requests_ok(void)
{
    char bad[TEXT_MAX];

    pthread_mutex_lock(&g_tk.mu);
    copy_str(bad, sizeof bad, g_tk.bad);
    pthread_mutex_unlock(&g_tk.mu);
    if (bad[0])
        fail_msg("%s", bad);
}

static m2m_tokens_cfg base_cfg(void)
{
    m2m_tokens_cfg c = {.token_url = g_token_url,
                        .client_id = CLIENT_ID,
                        .client_secret = CLIENT_SECRET,
                        .renew_percent = 50,
                        .renew_skew_s = 0,
                        .backoff_min_ms = 100,
                        .backoff_max_ms = 400,
                        .timeout_ms = 3000};

    return c;
}

static m2m_tokens *tnew(const m2m_tokens_cfg *c)
{
    m2m_tokens *t = NULL;

    assert_int_equal(m2m_tokens_new(c, &t), M2M_OK);
    assert_non_null(t);
    return t;
}

static m2m_err tget(m2m_tokens *t, char *buf)
{
    return m2m_tokens_get(t, buf, TOKBUF, NULL);
}

static void tstatus(m2m_tokens *t, m2m_tokens_status *s)
{
    memset(s, 0xA5, sizeof *s); /* garbage, so that unset fields show */
    m2m_tokens_status_get(t, s);
    assert_non_null(memchr(s->scope, '\0', sizeof s->scope));
    assert_non_null(memchr(s->last_error_text, '\0', sizeof s->last_error_text));
}

/* A port with nothing listening on it (bound then closed at once). */
static unsigned closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned p;

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* A socket that listens but never accepts: requests to it time out. */
static int silent_listener(unsigned *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int setup(void **state)
{
    m2m_http_cfg cfg = {.service = "test-fake-as",
                        .bind_addr = "127.0.0.1",
                        .port = 0,
                        .threads = 2,
                        .blocking_threads = 8,
                        .conn_timeout = 10,
                        .max_body = 8192,
                        .routes = g_routes,
                        .nroutes = sizeof g_routes / sizeof g_routes[0]};
    unsigned port;

    (void)state;
    if (m2m_http_server_start(&cfg, &g_srv) != M2M_OK)
        return -1;
    port = m2m_http_server_port(g_srv);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%u", port);
    snprintf(g_token_url, sizeof g_token_url, "%s/token", g_base);
    snprintf(g_res_url, sizeof g_res_url, "%s/res", g_base);
    tk_reset();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    m2m_http_server_stop(g_srv);
    g_srv = NULL;
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    m2m_log_init("test_tokens", M2M_LOG_ERROR);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    return m2m_httpc_global_init() == M2M_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    m2m_httpc_global_cleanup();
    return 0;
}

/* ---- tests: getting and reusing ------------------------------------------- */

static void test_basic_get(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF], again[TOKBUF];
    time_t exp = 0, exp2 = 0, before;
    issued_tok it;

    (void)state;
    tk_expires_set(600);
    t = tnew(&c);
    sleep_ms(100);
    assert_int_equal(tk_count(), 0); /* m2m_tokens_new makes no request */
    tstatus(t, &s);
    assert_false(s.has_token);
    assert_int_equal(s.expires_at, 0);
    assert_int_equal(s.last_renewal, 0);
    assert_int_equal(s.token_requests, 0);
    assert_false(s.credentials_refused);

    before = time(NULL);
    assert_int_equal(m2m_tokens_get(t, buf, sizeof buf, &exp), M2M_OK);
    assert_int_equal(tk_count(), 1);
    issued_get(0, &it);
    assert_string_equal(buf, it.tok);
    assert_true(exp >= before + 600 - 1 && exp <= time(NULL) + 600 + 1);

    /* within the lifetime: the same token, no request */
    assert_int_equal(m2m_tokens_get(t, again, sizeof again, &exp2), M2M_OK);
    assert_string_equal(again, buf);
    assert_int_equal(exp2, exp);
    assert_int_equal(m2m_tokens_get(t, again, sizeof again, NULL), M2M_OK);
    assert_string_equal(again, buf);
    assert_int_equal(tk_count(), 1);

    tstatus(t, &s);
    assert_true(s.has_token);
    assert_int_equal(s.expires_at, exp);
    /* renew_percent 50 of 600 s: 300 s before exp; skew 0 */
    assert_true(s.renew_at >= exp - 300 - 1 && s.renew_at <= exp - 300 + 1);
    assert_true(s.last_renewal >= before && s.last_renewal <= time(NULL));
    assert_string_equal(s.scope, SCOPE_DEFAULT);
    assert_int_equal(s.last_error, M2M_OK);
    assert_false(s.credentials_refused);
    assert_int_equal(s.token_requests, 1);
    assert_int_equal(s.token_failures, 0);
    assert_int_equal(s.api_calls, 0);
    assert_int_equal(s.api_retries, 0);
    assert_requests_ok();
    m2m_tokens_free(t);
}

/* renew_percent 0 means 80, renew_skew_s < 0 means 30; the earlier wins. */
static void test_defaults(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF];

    (void)state;
    tk_expires_set(100);
    c.renew_percent = 0;
    c.renew_skew_s = -1; /* 30 s before exp (70 s) is earlier than 80 % (80 s) */
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    tstatus(t, &s);
    assert_true(s.renew_at >= s.expires_at - 30 - 1 && s.renew_at <= s.expires_at - 30 + 1);
    m2m_tokens_free(t);

    c.renew_skew_s = 0; /* 0 is allowed: 80 % of 100 s, 20 s before exp */
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    tstatus(t, &s);
    assert_true(s.renew_at >= s.expires_at - 20 - 1 && s.renew_at <= s.expires_at - 20 + 1);
    m2m_tokens_free(t);
    assert_int_equal(tk_count(), 2);
    assert_requests_ok();
}

static void test_request_shape(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF];

    (void)state;
    /* scope and resource, when configured, are sent exactly */
    pthread_mutex_lock(&g_tk.mu);
    g_tk.expect_scope = "currency:read currency:write";
    g_tk.expect_resource = AUD;
    pthread_mutex_unlock(&g_tk.mu);
    c.scope = "currency:read currency:write";
    c.resource = AUD;
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_requests_ok();
    pthread_mutex_lock(&g_tk.mu);
    assert_string_equal(g_tk.seen_path, "/token");
    assert_string_equal(g_tk.seen_id, CLIENT_ID);
    assert_string_equal(g_tk.seen_secret, CLIENT_SECRET);
    assert_true(g_tk.seen_has_scope);
    assert_string_equal(g_tk.seen_scope, "currency:read currency:write");
    assert_true(g_tk.seen_has_resource);
    assert_string_equal(g_tk.seen_resource, AUD);
    pthread_mutex_unlock(&g_tk.mu);
    tstatus(t, &s);
    assert_string_equal(s.scope, "currency:read currency:write");
    m2m_tokens_free(t);

    /* "" is the same as NULL: neither is sent */
    pthread_mutex_lock(&g_tk.mu);
    g_tk.expect_scope = NULL;
    g_tk.expect_resource = NULL;
    pthread_mutex_unlock(&g_tk.mu);
    c.scope = "";
    c.resource = "";
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_requests_ok();
    pthread_mutex_lock(&g_tk.mu);
    assert_false(g_tk.seen_has_scope);
    assert_false(g_tk.seen_has_resource);
    pthread_mutex_unlock(&g_tk.mu);
    m2m_tokens_free(t);
    assert_int_equal(tk_count(), 2);
}

/* RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic. */
static void test_basic_auth_encoding(void **state)
{
    static const char id[] = "svc:one two";
    static const char secret[] = "p@ss:w+rd%/\xc3\xa9&=~ x";
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char buf[TOKBUF];
    m2m_err rc;

    (void)state;
    pthread_mutex_lock(&g_tk.mu);
    copy_str(g_tk.good_id, sizeof g_tk.good_id, id);
    copy_str(g_tk.good_secret, sizeof g_tk.good_secret, secret);
    pthread_mutex_unlock(&g_tk.mu);
    c.client_id = id;
    c.client_secret = secret;
    t = tnew(&c);
    rc = tget(t, buf);
    pthread_mutex_lock(&g_tk.mu);
    if (strcmp(g_tk.seen_id, id) != 0 || strcmp(g_tk.seen_secret, secret) != 0) {
        pthread_mutex_unlock(&g_tk.mu);
        fail_msg("Basic credentials decoded as id \"%s\" (want \"%s\"), %s secret", g_tk.seen_id,
                 id, strcmp(g_tk.seen_secret, secret) ? "a wrong" : "the right");
    }
    pthread_mutex_unlock(&g_tk.mu);
    assert_int_equal(rc, M2M_OK);
    assert_requests_ok();
    m2m_tokens_free(t);
}

/* ---- tests: renewal ------------------------------------------------------------ */

static void test_renewal_window(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char tok1[TOKBUF], tok2[TOKBUF], buf[TOKBUF];
    int64_t t0;
    time_t wall0;
    int gets = 0;

    (void)state;
    /* 4 s tokens renewed at 50 %: renewal time 2 s after issue */
    tk_expires_set(4);
    c.renew_percent = 50;
    c.renew_skew_s = 0;
    t = tnew(&c);
    t0 = now_ms();
    wall0 = time(NULL);
    assert_int_equal(tget(t, tok1), M2M_OK);
    assert_int_equal(tk_count(), 1);
    tstatus(t, &s);
    assert_true(s.expires_at >= wall0 + 4 - 1 && s.expires_at <= wall0 + 4 + 1);
    assert_true(s.renew_at >= wall0 + 2 - 1 && s.renew_at <= wall0 + 2 + 1);

    sleep_until(t0 + 900);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, tok1);
    assert_int_equal(tk_count(), 1);

    sleep_until(t0 + 2200);
    assert_int_equal(tget(t, tok2), M2M_OK);
    assert_int_equal(tk_count(), 2);
    assert_string_not_equal(tok2, tok1);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, tok2);
    assert_int_equal(tk_count(), 2);

    /* keep asking: no token is ever handed out past its renewal time */
    while (now_ms() < t0 + 4800) {
        int64_t asked = now_ms(), at;

        assert_int_equal(tget(t, buf), M2M_OK);
        at = issued_at(buf);
        assert_true(at >= 0);
        if (asked > at + 2000 + 100)
            fail_msg("token issued at +%lld ms handed out at +%lld ms (renewal at +2000)",
                     (long long)(at - t0), (long long)(asked - t0));
        gets++;
        sleep_ms(20);
    }
    assert_true(gets > 50);
    /* renewed at ~2.2 s and ~4.2 s; never before half the lifetime */
    assert_in_range(tk_count(), 3, 4);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* The renewal time is the earlier of renew_percent of the lifetime and
 * renew_skew_s before exp. Two managers run side by side:
 * a: 4 s tokens, 90 % (3.6 s), skew 2 s (at 2 s): the skew, 2 s.
 * b: 6 s tokens, 90 % (5.4 s), skew 4 s (at 2 s): the skew, 2 s. */
static void test_renewal_skew(void **state)
{
    m2m_tokens_cfg ca = base_cfg(), cb = base_cfg();
    m2m_tokens *a, *b;
    m2m_tokens_status s;
    char a1[TOKBUF], b1[TOKBUF], buf[TOKBUF];
    int64_t t0;
    time_t wall0;

    (void)state;
    /* a: 4 s at 90% (3.6 s) or 2 s before exp (2 s): the skew is earlier
     * and leaves half the lifetime, so it decides. */
    ca.renew_percent = 90;
    ca.renew_skew_s = 2;
    /* b: 6 s at 90% (5.4 s) or 4 s before exp (2 s): the skew would leave
     * less than half the lifetime, so the percentage alone decides. */
    cb.renew_percent = 90;
    cb.renew_skew_s = 4;
    a = tnew(&ca);
    b = tnew(&cb);
    t0 = now_ms();
    wall0 = time(NULL);
    tk_expires_set(4);
    assert_int_equal(tget(a, a1), M2M_OK);
    tk_expires_set(6);
    assert_int_equal(tget(b, b1), M2M_OK);
    tstatus(a, &s);
    assert_true(s.expires_at >= wall0 + 4 - 1 && s.expires_at <= wall0 + 4 + 1);
    assert_true(s.renew_at >= wall0 + 2 - 1 && s.renew_at <= wall0 + 2 + 1);
    tstatus(b, &s);
    assert_true(s.expires_at >= wall0 + 6 - 1 && s.expires_at <= wall0 + 6 + 1);
    assert_true(s.renew_at >= wall0 + 5 - 1 && s.renew_at <= wall0 + 5 + 1);

    sleep_until(t0 + 900);
    assert_int_equal(tget(a, buf), M2M_OK);
    assert_string_equal(buf, a1);
    assert_int_equal(tget(b, buf), M2M_OK);
    assert_string_equal(buf, b1);
    assert_int_equal(tk_count(), 2);

    sleep_until(t0 + 2200);
    tk_expires_set(60);
    assert_int_equal(tget(a, buf), M2M_OK);
    assert_string_not_equal(buf, a1); /* a renewed at the skew */
    assert_int_equal(tget(b, buf), M2M_OK);
    assert_string_equal(buf, b1); /* b not yet */
    assert_int_equal(tk_count(), 3);

    sleep_until(t0 + 5600);
    assert_int_equal(tget(b, buf), M2M_OK);
    assert_string_not_equal(buf, b1); /* b at 90% */
    assert_int_equal(tk_count(), 4);
    m2m_tokens_free(a);
    m2m_tokens_free(b);
    assert_requests_ok();
}

/* ---- tests: single flight ---------------------------------------------------- */

#define SF_THREADS 64

typedef struct {
    m2m_tokens *t;
    pthread_barrier_t *bar;
    m2m_err rc;
    char tok[128];
    int64_t ms;
} sf_arg;

static void *sf_thread(void *p)
{
    sf_arg *a = p;
    char buf[128];
    int64_t start;

    pthread_barrier_wait(a->bar);
    start = now_ms();
    a->rc = m2m_tokens_get(a->t, buf, sizeof buf, NULL);
    a->ms = now_ms() - start;
    copy_str(a->tok, sizeof a->tok, a->rc == M2M_OK ? buf : "");
    return NULL;
}

static void sf_run(m2m_tokens *t, sf_arg *args)
{
    pthread_t th[SF_THREADS];
    pthread_barrier_t bar;

    assert_int_equal(pthread_barrier_init(&bar, NULL, SF_THREADS), 0);
    for (int i = 0; i < SF_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].t = t;
        args[i].bar = &bar;
        args[i].rc = M2M_ERR__COUNT;
        assert_int_equal(pthread_create(&th[i], NULL, sf_thread, &args[i]), 0);
    }
    for (int i = 0; i < SF_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
}

static void test_single_flight(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    sf_arg args[SF_THREADS];
    issued_tok first, second;

    (void)state;
    tk_expires_set(2);
    tk_delay_set(200);
    c.renew_percent = 50;
    c.renew_skew_s = 0;
    t = tnew(&c);

    sf_run(t, args);
    assert_int_equal(tk_count(), 1);
    issued_get(0, &first);
    for (int i = 0; i < SF_THREADS; i++) {
        assert_int_equal(args[i].rc, M2M_OK);
        assert_string_equal(args[i].tok, first.tok);
    }

    /* at the renewal time (1 s after issue): again one request for all */
    sleep_until(first.at_ms + 1200);
    sf_run(t, args);
    assert_int_equal(tk_count(), 2);
    issued_get(1, &second);
    assert_string_not_equal(second.tok, first.tok);
    for (int i = 0; i < SF_THREADS; i++) {
        assert_int_equal(args[i].rc, M2M_OK);
        /* nobody got the old token past its renewal time */
        assert_string_equal(args[i].tok, second.tok);
    }
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* ---- tests: invalidate, reconfigure ----------------------------------------- */

static void test_invalidate(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char tok1[TOKBUF], tok2[TOKBUF], buf[TOKBUF], prefix[TOKBUF];

    (void)state;
    t = tnew(&c);
    assert_int_equal(tget(t, tok1), M2M_OK);
    assert_int_equal(tk_count(), 1);

    /* another token, or a prefix of the current one: nothing */
    m2m_tokens_invalidate(t, "AT-9999-not-a-token-we-hold");
    copy_str(prefix, sizeof prefix, tok1);
    prefix[strlen(prefix) - 1] = '\0';
    m2m_tokens_invalidate(t, prefix);
    m2m_tokens_invalidate(t, "");
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, tok1);
    assert_int_equal(tk_count(), 1);

    /* the current one (a copy, not the caller's pointer): a new request */
    copy_str(buf, sizeof buf, tok1);
    m2m_tokens_invalidate(t, buf);
    assert_int_equal(tget(t, tok2), M2M_OK);
    assert_int_equal(tk_count(), 2);
    assert_string_not_equal(tok2, tok1);

    /* the old one again: it was already replaced */
    m2m_tokens_invalidate(t, tok1);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, tok2);
    assert_int_equal(tk_count(), 2);

    /* reconfigure drops the current token */
    assert_int_equal(m2m_tokens_reconfigure(t, &c), M2M_OK);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_int_equal(tk_count(), 3);
    assert_string_not_equal(buf, tok2);

    /* renew asks even when the token is fresh; get then uses its token */
    assert_int_equal(m2m_tokens_renew(t), M2M_OK);
    assert_int_equal(tk_count(), 4);
    assert_int_equal(tget(t, tok2), M2M_OK);
    assert_int_equal(tk_count(), 4);
    assert_string_not_equal(tok2, buf);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* ---- tests: m2m_tokens_call ------------------------------------------------- */

static json_t *resp_json(const m2m_httpc_resp *resp)
{
    json_t *j;

    assert_non_null(resp->body.data);
    j = json_loads(resp->body.data, 0, NULL);
    assert_non_null(j);
    return j;
}

static void rs_auth_at(size_t n, char *out, size_t cap)
{
    pthread_mutex_lock(&g_tk.mu);
    copy_str(out, cap, g_tk.rs_auth[n % RS_KEEP]);
    pthread_mutex_unlock(&g_tk.mu);
}

static void test_call(void **state)
{
    static const char *const hdrs[] = {"X-Caller: unit-42", "Accept: application/json", NULL};
    static const char body[] = "{\"x\":1}";
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    m2m_httpc_req req = {.method = "POST",
                         .url = g_res_url,
                         .headers = hdrs,
                         .body = body,
                         .body_len = sizeof body - 1,
                         .timeout_ms = 3000};
    m2m_httpc_resp resp;
    issued_tok t1, t2;
    char want[160], seen[160];
    json_t *j;

    (void)state;
    t = tnew(&c);

    /* a plain call: the Bearer header is added, the caller's kept */
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    issued_get(0, &t1);
    snprintf(want, sizeof want, "Bearer %s", t1.tok);
    j = resp_json(&resp);
    assert_string_equal(json_string_value(json_object_get(j, "auth")), want);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_non_null(json_string_value(json_object_get(j, "caller")));
    assert_string_equal(json_string_value(json_object_get(j, "caller")), "unit-42");
    assert_int_equal(json_integer_value(json_object_get(j, "body_len")), sizeof body - 1);
    json_decref(j);
    m2m_httpc_resp_free(&resp);
    assert_int_equal(tk_count(), 1);
    assert_int_equal(atomic_load(&g_rs_requests), 1);
    /* the caller's request is not changed */
    assert_ptr_equal(req.headers, hdrs);
    assert_string_equal(hdrs[0], "X-Caller: unit-42");
    assert_null(hdrs[2]);
    tstatus(t, &s);
    assert_int_equal(s.api_calls, 1);
    assert_int_equal(s.api_retries, 0);

    /* the resource server refuses the token: one retry with a fresh one */
    rs_revoke();
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(tk_count(), 2);
    assert_int_equal(atomic_load(&g_rs_requests), 3);
    issued_get(1, &t2);
    assert_string_not_equal(t2.tok, t1.tok);
    rs_auth_at(1, seen, sizeof seen);
    assert_string_equal(seen, want); /* first with the stale token */
    snprintf(want, sizeof want, "Bearer %s", t2.tok);
    rs_auth_at(2, seen, sizeof seen);
    assert_string_equal(seen, want); /* then with the new one */
    j = resp_json(&resp);
    assert_string_equal(json_string_value(json_object_get(j, "caller")), "unit-42");
    assert_int_equal(json_integer_value(json_object_get(j, "body_len")), sizeof body - 1);
    json_decref(j);
    m2m_httpc_resp_free(&resp);
    tstatus(t, &s);
    assert_int_equal(s.api_calls, 3); /* requests sent */
    assert_int_equal(s.api_retries, 1);

    /* a resource that refuses every token: two sends, then its 401 */
    rs_mode_set(RS_ALWAYS_401);
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
    assert_int_equal(resp.status, 401);
    assert_int_equal(atomic_load(&g_rs_requests), 5);
    assert_int_equal(tk_count(), 3);
    m2m_httpc_resp_free(&resp);
    tstatus(t, &s);
    assert_int_equal(s.api_calls, 5);
    assert_int_equal(s.api_retries, 2);
    /* that fresh token was refused too: later calls with it are not
     * retried, so the token endpoint sees one request per renewal, not two
     * per call */
    for (int i = 0; i < 3; i++) {
        memset(&resp, 0, sizeof resp);
        assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
        assert_int_equal(resp.status, 401);
        m2m_httpc_resp_free(&resp);
    }
    assert_int_equal(atomic_load(&g_rs_requests), 8);
    assert_int_equal(tk_count(), 3);
    tstatus(t, &s);
    assert_int_equal(s.api_calls, 8);
    assert_int_equal(s.api_retries, 2);

    /* the token endpoint out of reach: UNAVAILABLE (the call's own failure
     * would be UPSTREAM), and the resource is not called */
    tk_status_set(503, "{\"error\":\"temporarily_unavailable\"}");
    m2m_tokens_invalidate(t, t2.tok); /* not current: nothing changes */
    {
        char cur[TOKBUF];
        assert_int_equal(tget(t, cur), M2M_OK);
        m2m_tokens_invalidate(t, cur);
    }
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_ERR_UNAVAILABLE);
    m2m_httpc_resp_free(&resp);
    assert_int_equal(atomic_load(&g_rs_requests), 8);
    tk_mode_set(TK_OK);
    assert_int_equal(m2m_tokens_renew(t), M2M_OK); /* clears the backoff */

    /* 403 is not a token problem: no retry, no token request */
    rs_mode_set(RS_403);
    int before = tk_count();
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
    assert_int_equal(resp.status, 403);
    m2m_httpc_resp_free(&resp);
    assert_int_equal(atomic_load(&g_rs_requests), 9);
    assert_int_equal(tk_count(), before);
    tstatus(t, &s);
    assert_int_equal(s.api_calls, 9);
    assert_int_equal(s.api_retries, 2);

    /* no token to be had: the error, and the resource is not called */
    rs_mode_set(RS_NEWEST);
    m2m_tokens_free(t);
    c.client_secret = WRONG_SECRET;
    t = tnew(&c);
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_ERR_INVALID_CLIENT);
    m2m_httpc_resp_free(&resp);
    assert_int_equal(atomic_load(&g_rs_requests), 9);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* ---- tests: backoff ------------------------------------------------------------ */

static void req_times(int64_t *out, size_t cap, size_t *n)
{
    pthread_mutex_lock(&g_tk.mu);
    *n = g_tk.nreq < cap ? g_tk.nreq : cap;
    memcpy(out, g_tk.req_ms, *n * sizeof *out);
    pthread_mutex_unlock(&g_tk.mu);
}

static void test_backoff(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF];
    int64_t start, t0, times[MAX_REQS];
    size_t n;
    int gets = 0;

    (void)state;
    c.backoff_min_ms = 100;
    c.backoff_max_ms = 400;
    tk_status_set(503, "{\"error\":\"temporarily_unavailable\"}");
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    assert_int_equal(tk_count(), 1);
    /* backing off: the last error at once, no request */
    start = now_ms();
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    assert_true(now_ms() - start < 50);
    assert_int_equal(tk_count(), 1);
    tstatus(t, &s);
    assert_false(s.has_token);
    assert_int_equal(s.last_error, M2M_ERR_UPSTREAM);
    assert_true(s.last_error_at > 0);
    assert_true(s.last_error_text[0] != '\0');
    assert_false(s.credentials_refused);
    assert_int_equal(s.token_requests, 1);
    assert_int_equal(s.token_failures, 1);

    /* callers keep asking for 2 s: requests come at the backoff's pace */
    t0 = now_ms();
    while (now_ms() < t0 + 2000) {
        assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
        gets++;
        sleep_ms(10);
    }
    assert_true(gets > 50);
    req_times(times, MAX_REQS, &n);
    assert_int_equal(n, (size_t)tk_count());
    /* gaps at least half backoff_min_ms (jitter) and at most backoff_max_ms
     * plus the callers' 10 ms polling and slack */
    for (size_t i = 1; i < n; i++) {
        int64_t gap = times[i] - times[i - 1];

        if (gap < 50 || gap > 400 + 150)
            fail_msg("gap %zu between token requests: %lld ms (backoff 100..400 ms)", i,
                     (long long)gap);
    }
    /* over ~2.0 s after the first failure: at least one request per max
     * delay, at most one per half the min delay */
    assert_in_range(n, 1 + 2000 / 550, 1 + 2100 / 50);
    tstatus(t, &s);
    assert_int_equal(s.token_requests, n);
    assert_int_equal(s.token_failures, n);

    /* the endpoint recovers: a get succeeds once the wait is over */
    tk_mode_set(TK_OK);
    t0 = now_ms();
    for (;;) {
        m2m_err rc = tget(t, buf);

        if (rc == M2M_OK)
            break;
        assert_int_equal(rc, M2M_ERR_UPSTREAM);
        if (now_ms() - t0 > 400 + 300)
            fail_msg("no token %lld ms after the endpoint recovered", (long long)(now_ms() - t0));
        sleep_ms(10);
    }
    assert_int_equal((size_t)tk_count(), n + 1);
    tstatus(t, &s);
    assert_true(s.has_token);
    assert_int_equal(s.last_error, M2M_OK);
    assert_int_equal(s.token_failures, n);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* 5xx and 429 all back off, and none is a refusal of the credentials. */
static void test_transient_statuses(void **state)
{
    static const struct {
        int status;
        const char *body;
    } cases[] = {
        {503, "{\"error\":\"temporarily_unavailable\"}"},
        {500, "{\"error\":\"server_error\"}"},
        {502, "<html>bad gateway</html>"},
        {504, ""},
        {429, "{\"error\":\"rate_limited\"}"},
    };
    m2m_tokens_cfg c = base_cfg();
    char buf[TOKBUF];

    (void)state;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        m2m_tokens *t;
        m2m_tokens_status s;
        int base = tk_count();

        tk_status_set(cases[i].status, cases[i].body);
        t = tnew(&c);
        assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
        assert_int_equal(tk_count(), base + 1);
        assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
        assert_int_equal(tk_count(), base + 1); /* backing off */
        tstatus(t, &s);
        assert_false(s.credentials_refused);
        assert_false(s.has_token);
        sleep_ms(100 + 150);
        assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
        assert_int_equal(tk_count(), base + 2); /* retried after the wait */
        /* recovered */
        tk_mode_set(TK_OK);
        sleep_ms(100 + 150);
        assert_int_equal(tget(t, buf), M2M_OK);
        assert_int_equal(tk_count(), base + 3);
        m2m_tokens_free(t);
    }
    assert_requests_ok();
}

static void test_network_errors(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF], url[96];
    unsigned port;
    int fd;
    int64_t start, took;
    uint64_t reqs;

    (void)state;
    /* nothing listening */
    snprintf(url, sizeof url, "http://127.0.0.1:%u/token", closed_port());
    c.token_url = url;
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    tstatus(t, &s);
    reqs = s.token_requests;
    assert_int_equal(s.token_failures, 1);
    assert_int_equal(s.last_error, M2M_ERR_UPSTREAM);
    assert_false(s.credentials_refused);
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    tstatus(t, &s);
    assert_int_equal(s.token_requests, reqs); /* backing off, no attempt */
    assert_int_equal(s.token_failures, 1);
    m2m_tokens_free(t);

    /* a peer that never answers: timeout_ms bounds the request, then the
     * next get fails at once */
    fd = silent_listener(&port);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/token", port);
    c.timeout_ms = 300;
    c.backoff_min_ms = 1000;
    c.backoff_max_ms = 2000;
    t = tnew(&c);
    start = now_ms();
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    took = now_ms() - start;
    if (took < 250 || took > 2500)
        fail_msg("a request to a silent peer took %lld ms (timeout_ms 300)", (long long)took);
    start = now_ms();
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    assert_true(now_ms() - start < 100);
    tstatus(t, &s);
    assert_int_equal(s.token_failures, 1);
    m2m_tokens_free(t);
    close(fd);
    assert_int_equal(tk_count(), 0);
}

/* Not handing out a token past its renewal time holds when the renewal fails. */
static void test_no_stale_token_on_failure(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char tok1[TOKBUF], buf[TOKBUF];
    issued_tok first;

    (void)state;
    tk_expires_set(2);
    c.renew_percent = 50;
    t = tnew(&c);
    assert_int_equal(tget(t, tok1), M2M_OK);
    issued_get(0, &first);
    tk_status_set(503, "{\"error\":\"temporarily_unavailable\"}");
    sleep_until(first.at_ms + 1200); /* renewal time passed, not yet expired */
    memset(buf, 0, sizeof buf);
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    assert_null(strstr(buf, tok1));
    assert_int_equal(tk_count(), 2);
    tstatus(t, &s);
    assert_false(s.has_token);
    m2m_tokens_free(t);
}

/* ---- tests: refused credentials ---------------------------------------------- */

static void test_invalid_client(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_tokens_status s;
    char buf[TOKBUF];
    int64_t start;

    (void)state;
    c.client_secret = WRONG_SECRET;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    t = tnew(&c);
    memset(buf, 0, sizeof buf);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tk_count(), 1);
    /* permanent: at once, no request, even after any backoff would be over */
    start = now_ms();
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_true(now_ms() - start < 50);
    sleep_ms(300);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tk_count(), 1);

    tstatus(t, &s);
    assert_true(s.credentials_refused);
    assert_false(s.has_token);
    assert_int_equal(s.last_error, M2M_ERR_INVALID_CLIENT);
    assert_true(s.last_error_at > 0);
    assert_int_equal(s.token_requests, 1);
    assert_int_equal(s.token_failures, 1);
    if (!strstr(s.last_error_text, "invalid_client"))
        fail_msg("last_error_text does not name invalid_client: \"%s\"", s.last_error_text);
    assert_null(strstr(s.last_error_text, WRONG_SECRET));
    assert_null(strstr(s.last_error_text, CLIENT_SECRET));

    /* renew tries once more */
    assert_int_equal(m2m_tokens_renew(t), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tk_count(), 2);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tk_count(), 2);

    /* new credentials */
    c.client_secret = CLIENT_SECRET;
    assert_int_equal(m2m_tokens_reconfigure(t, &c), M2M_OK);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_int_equal(tk_count(), 3);
    tstatus(t, &s);
    assert_false(s.credentials_refused);
    assert_true(s.has_token);
    assert_int_equal(s.last_error, M2M_OK);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* Every refusal the header names is permanent, with its own error. */
static void test_permanent_refusals(void **state)
{
    static const struct {
        int status;
        const char *body;
        m2m_err want;
        const char *code;
    } cases[] = {
        {401, "{\"error\":\"invalid_client\"}", M2M_ERR_INVALID_CLIENT, "invalid_client"},
        {400, "{\"error\":\"unauthorized_client\"}", M2M_ERR_UNAUTHORIZED_CLIENT,
         "unauthorized_client"},
        {400, "{\"error\":\"invalid_scope\",\"error_description\":\"no such scope\"}",
         M2M_ERR_INVALID_SCOPE, "invalid_scope"},
        {400, "{\"error\":\"invalid_target\"}", M2M_ERR_INVALID_TARGET, "invalid_target"},
    };
    m2m_tokens_cfg c = base_cfg();
    char buf[TOKBUF];

    (void)state;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        m2m_tokens *t;
        m2m_tokens_status s;
        int base = tk_count();

        tk_status_set(cases[i].status, cases[i].body);
        t = tnew(&c);
        assert_int_equal(tget(t, buf), cases[i].want);
        sleep_ms(250);
        assert_int_equal(tget(t, buf), cases[i].want);
        assert_int_equal(tk_count(), base + 1);
        tstatus(t, &s);
        assert_true(s.credentials_refused);
        assert_int_equal(s.last_error, cases[i].want);
        if (!strstr(s.last_error_text, cases[i].code))
            fail_msg("last_error_text does not name %s: \"%s\"", cases[i].code, s.last_error_text);
        /* renew clears the refused state and asks again */
        tk_mode_set(TK_OK);
        assert_int_equal(m2m_tokens_renew(t), M2M_OK);
        assert_int_equal(tk_count(), base + 2);
        assert_int_equal(tget(t, buf), M2M_OK);
        assert_int_equal(tk_count(), base + 2);
        tstatus(t, &s);
        assert_false(s.credentials_refused);
        m2m_tokens_free(t);
    }
    assert_requests_ok();
}

/* ---- tests: malformed replies, buffers ------------------------------------- */

static void test_malformed_replies(void **state)
{
    static const tk_mode modes[] = {TK_NOT_JSON,  TK_TYPE_MAC,   TK_NO_TOKEN,
                                    TK_TOKEN_INT, TK_NOT_OBJECT, TK_BIG};
    m2m_tokens_cfg c = base_cfg();
    char buf[TOKBUF];

    (void)state;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    pthread_mutex_lock(&g_tk.mu);
    g_tk.big_len = M2M_TOKENS_MAX_TOKEN + 1;
    pthread_mutex_unlock(&g_tk.mu);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        m2m_tokens *t;
        m2m_tokens_status s;
        m2m_err rc;

        tk_mode_set(modes[i]);
        t = tnew(&c);
        memset(buf, 0, sizeof buf);
        rc = tget(t, buf);
        if (rc == M2M_OK)
            fail_msg("reply mode %d: a token was handed out: \"%.40s\"", (int)modes[i], buf);
        assert_null(strstr(buf, "AT-"));
        assert_null(strstr(buf, "BIGAAAA"));
        tstatus(t, &s);
        assert_false(s.has_token);
        assert_false(s.credentials_refused);
        assert_int_equal(s.last_error, rc);
        assert_int_equal(s.token_failures, 1);
        m2m_tokens_free(t);
    }
    assert_int_equal(tk_count(), (int)(sizeof modes / sizeof modes[0]));

    /* token_type is case-insensitive (RFC 6749 §5.1) */
    tk_mode_set(TK_TYPE_LOWER);
    {
        m2m_tokens *t = tnew(&c);
        issued_tok it;
        size_t n = issued_count();

        assert_int_equal(tget(t, buf), M2M_OK);
        issued_get(n, &it);
        assert_string_equal(buf, it.tok);
        m2m_tokens_free(t);
    }
    assert_requests_ok();
}

static void test_token_size_limits(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char *big;
    char small[8];
    size_t len;
    issued_tok it;

    (void)state;
    big = malloc(TOKBUF + 16);
    assert_non_null(big);

    /* a buffer too small for the token */
    t = tnew(&c);
    assert_int_equal(m2m_tokens_get(t, small, sizeof small, NULL), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_true(tk_count() <= 1);
    assert_int_equal(m2m_tokens_get(t, big, TOKBUF, NULL), M2M_OK);
    assert_int_equal(tk_count(), 1);
    issued_get(0, &it);
    assert_string_equal(big, it.tok);
    len = strlen(it.tok);
    assert_int_equal(m2m_tokens_get(t, big, len, NULL), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(m2m_tokens_get(t, big, len + 1, NULL), M2M_OK);
    assert_string_equal(big, it.tok);
    assert_int_equal(tk_count(), 1);
    m2m_tokens_free(t);

    /* exactly M2M_TOKENS_MAX_TOKEN bytes is kept */
    pthread_mutex_lock(&g_tk.mu);
    g_tk.mode = TK_BIG;
    g_tk.big_len = M2M_TOKENS_MAX_TOKEN;
    pthread_mutex_unlock(&g_tk.mu);
    t = tnew(&c);
    memset(big, 0, TOKBUF + 16);
    assert_int_equal(m2m_tokens_get(t, big, TOKBUF, NULL), M2M_OK);
    assert_int_equal(strlen(big), M2M_TOKENS_MAX_TOKEN);
    assert_memory_equal(big, "BIGAAA", 6);
    assert_int_equal(m2m_tokens_get(t, big, TOKBUF - 1, NULL), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(tk_count(), 2);
    m2m_tokens_free(t);
    free(big);
}

/* RFC 6749 §5.1 only recommends expires_in; the header says nothing: any
 * answer is fine but a crash, a token in the past or a renewal loop. */
static void test_missing_expires_in(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char buf[TOKBUF];
    time_t exp = 0;
    m2m_err rc;

    (void)state;
    tk_expires_set(-1);
    t = tnew(&c);
    rc = m2m_tokens_get(t, buf, sizeof buf, &exp);
    if (rc == M2M_OK) {
        issued_tok it;

        issued_get(0, &it);
        assert_string_equal(buf, it.tok);
        assert_true(exp > time(NULL));
        assert_int_equal(tget(t, buf), M2M_OK);
        assert_string_equal(buf, it.tok);
        assert_int_equal(tk_count(), 1);
    } else {
        m2m_tokens_status s;

        tstatus(t, &s);
        assert_false(s.has_token);
    }
    m2m_tokens_free(t);
}

/* ---- tests: discovery ------------------------------------------------------- */

static void test_discovery(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char buf[TOKBUF], tok1[TOKBUF];

    (void)state;
    c.token_url = NULL;
    c.issuer = g_base;
    t = tnew(&c);
    assert_int_equal(atomic_load(&g_md_requests), 0);
    assert_int_equal(tget(t, tok1), M2M_OK);
    assert_int_equal(atomic_load(&g_md_requests), 1);
    assert_int_equal(tk_count(), 1);
    pthread_mutex_lock(&g_tk.mu);
    assert_string_equal(g_tk.seen_path, "/md/token");
    pthread_mutex_unlock(&g_tk.mu);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, tok1);
    /* a new token from the endpoint already discovered */
    m2m_tokens_invalidate(t, tok1);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_not_equal(buf, tok1);
    assert_int_equal(tk_count(), 2);
    assert_int_equal(atomic_load(&g_md_requests), 1);
    m2m_tokens_free(t);

    /* token_url "" is the same as NULL */
    c.token_url = "";
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_int_equal(atomic_load(&g_md_requests), 2);
    assert_int_equal(tk_count(), 3);
    m2m_tokens_free(t);

    /* metadata of another issuer: refused, no token request */
    pthread_mutex_lock(&g_tk.mu);
    copy_str(g_tk.md_issuer, sizeof g_tk.md_issuer, "http://evil.example");
    pthread_mutex_unlock(&g_tk.mu);
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    t = tnew(&c);
    memset(buf, 0, sizeof buf);
    assert_int_not_equal(tget(t, buf), M2M_OK);
    assert_int_equal(atomic_load(&g_md_requests), 3);
    sleep_ms(250);
    assert_int_not_equal(tget(t, buf), M2M_OK);
    assert_null(strstr(buf, "AT-"));
    assert_int_equal(tk_count(), 3);
    m2m_tokens_free(t);

    /* with a trailing slash it is another issuer (RFC 8414 §3.3: identical) */
    pthread_mutex_lock(&g_tk.mu);
    snprintf(g_tk.md_issuer, sizeof g_tk.md_issuer, "%s/", g_base);
    pthread_mutex_unlock(&g_tk.mu);
    t = tnew(&c);
    assert_int_not_equal(tget(t, buf), M2M_OK);
    assert_int_equal(tk_count(), 3);
    m2m_tokens_free(t);

    /* metadata unavailable: an upstream error, no token request */
    pthread_mutex_lock(&g_tk.mu);
    copy_str(g_tk.md_issuer, sizeof g_tk.md_issuer, g_base);
    g_tk.md_status = 503;
    pthread_mutex_unlock(&g_tk.mu);
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_ERR_UPSTREAM);
    assert_int_equal(tk_count(), 3);
    /* and once it is back, after the backoff */
    pthread_mutex_lock(&g_tk.mu);
    g_tk.md_status = 200;
    pthread_mutex_unlock(&g_tk.mu);
    sleep_ms(250);
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_int_equal(tk_count(), 4);
    m2m_tokens_free(t);
    assert_requests_ok();
}

/* ---- tests: background renewal ------------------------------------------- */

static void test_background(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    char buf[TOKBUF];
    issued_tok first, last;
    int n, before;
    int64_t start, took;

    (void)state;
    c.background = true;
    c.renew_percent = 50;
    tk_expires_set(2);
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    issued_get(0, &first);
    assert_string_equal(buf, first.tok);
    /* no get for 2.6 s: renewed at ~1 s and ~2 s by the manager itself */
    sleep_until(first.at_ms + 2600);
    n = tk_count();
    assert_in_range(n, 3, 5);
    issued_get((size_t)n - 1, &last);
    before = tk_count();
    assert_int_equal(tget(t, buf), M2M_OK);
    assert_string_equal(buf, last.tok);
    assert_int_equal(tk_count(), before);
    /* the thread sleeps until the next renewal: free does not wait for it */
    start = now_ms();
    m2m_tokens_free(t);
    took = now_ms() - start;
    if (took > 300)
        fail_msg("m2m_tokens_free took %lld ms", (long long)took);
    sleep_ms(1200);
    assert_int_equal(tk_count(), before); /* and the thread is gone */

    /* a long-lived token: free is just as prompt */
    tk_expires_set(3600);
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    start = now_ms();
    m2m_tokens_free(t);
    took = now_ms() - start;
    if (took > 300)
        fail_msg("m2m_tokens_free took %lld ms", (long long)took);

    /* failing renewals in the background back off too */
    tk_expires_set(2);
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    before = tk_count();
    issued_get((size_t)before - 1, &first);
    tk_status_set(503, "{\"error\":\"temporarily_unavailable\"}");
    sleep_until(first.at_ms + 3000);
    n = tk_count() - before;
    if (n < 1 || n > 1 + 2100 / 50)
        fail_msg("%d background requests in 2 s of failures (backoff 100..400 ms)", n);
    start = now_ms();
    m2m_tokens_free(t);
    took = now_ms() - start;
    if (took > 500)
        fail_msg("m2m_tokens_free took %lld ms while backing off", (long long)took);
    assert_requests_ok();
}

/* ---- tests: secrets are never logged -------------------------------------- */

static bool contains(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);

    if (n == 0 || n > len)
        return false;
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

static void basic_value(const char *id, const char *secret, char *out, size_t cap)
{
    char raw[256];
    unsigned char enc[512];
    int n = snprintf(raw, sizeof raw, "%s:%s", id, secret);

    assert_true(n > 0 && (size_t)n < sizeof raw);
    assert_true(EVP_EncodeBlock(enc, (const unsigned char *)raw, n) > 0);
    copy_str(out, cap, (const char *)enc);
}

static void test_secrets_not_logged(void **state)
{
    static const char *const hdrs[] = {"X-Caller: log-test", NULL};
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t;
    m2m_httpc_req req = {.url = g_res_url, .headers = hdrs, .timeout_ms = 3000};
    m2m_httpc_resp resp;
    char *logbuf = NULL;
    size_t loglen = 0, ntok;
    FILE *f;
    char buf[TOKBUF], basic_good[256], basic_wrong[256];

    (void)state;
    f = open_memstream(&logbuf, &loglen);
    assert_non_null(f);
    m2m_log_init("test_tokens", M2M_LOG_DEBUG);
    m2m_log_set_stream(f);
    M2M_INFO("unit_log_marker", "capture works");

    c.backoff_min_ms = 50;
    c.backoff_max_ms = 100;
    c.scope = SCOPE_DEFAULT;
    pthread_mutex_lock(&g_tk.mu);
    g_tk.expect_scope = SCOPE_DEFAULT;
    pthread_mutex_unlock(&g_tk.mu);
    /* refused credentials */
    c.client_secret = WRONG_SECRET;
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(tget(t, buf), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(m2m_tokens_renew(t), M2M_ERR_INVALID_CLIENT);
    /* good ones, a few tokens, a refused token retried */
    c.client_secret = CLIENT_SECRET;
    assert_int_equal(m2m_tokens_reconfigure(t, &c), M2M_OK);
    assert_int_equal(tget(t, buf), M2M_OK);
    m2m_tokens_invalidate(t, buf);
    assert_int_equal(m2m_tokens_renew(t), M2M_OK);
    rs_revoke();
    memset(&resp, 0, sizeof resp);
    assert_int_equal(m2m_tokens_call(t, &req, &resp), M2M_OK);
    assert_int_equal(resp.status, 200);
    m2m_httpc_resp_free(&resp);
    /* a failing endpoint */
    tk_status_set(503, "{\"error\":\"temporarily_unavailable\"}");
    assert_int_equal(m2m_tokens_renew(t), M2M_ERR_UPSTREAM);
    m2m_tokens_free(t);
    /* a background manager */
    tk_mode_set(TK_OK);
    tk_expires_set(2);
    c.background = true;
    t = tnew(&c);
    assert_int_equal(tget(t, buf), M2M_OK);
    sleep_ms(1300);
    m2m_tokens_free(t);

    m2m_log_set_stream(NULL);
    m2m_log_init("test_tokens", M2M_LOG_ERROR);
    fclose(f);
    assert_non_null(logbuf);
    assert_true(contains(logbuf, loglen, "unit_log_marker"));

    assert_false(contains(logbuf, loglen, CLIENT_SECRET));
    assert_false(contains(logbuf, loglen, WRONG_SECRET));
    basic_value(CLIENT_ID, CLIENT_SECRET, basic_good, sizeof basic_good);
    basic_value(CLIENT_ID, WRONG_SECRET, basic_wrong, sizeof basic_wrong);
    assert_false(contains(logbuf, loglen, basic_good));
    assert_false(contains(logbuf, loglen, basic_wrong));
    ntok = issued_count();
    assert_true(ntok >= 4);
    for (size_t i = 0; i < ntok; i++) {
        issued_tok it;

        issued_get(i, &it);
        if (contains(logbuf, loglen, it.tok))
            fail_msg("issued token %zu appears in the log", i);
    }
    free(logbuf);
    assert_requests_ok();
}

/* ---- tests: configuration ------------------------------------------------- */

static void test_bad_config(void **state)
{
    m2m_tokens_cfg c = base_cfg();
    m2m_tokens *t = NULL;

    (void)state;
    assert_int_not_equal(m2m_tokens_new(NULL, &t), M2M_OK);
    assert_null(t);

    c.client_id = NULL;
    assert_int_not_equal(m2m_tokens_new(&c, &t), M2M_OK);
    assert_null(t);
    c.client_id = "";
    assert_int_not_equal(m2m_tokens_new(&c, &t), M2M_OK);
    assert_null(t);

    c = base_cfg();
    c.token_url = NULL;
    c.issuer = NULL;
    assert_int_not_equal(m2m_tokens_new(&c, &t), M2M_OK);
    assert_null(t);
    c.token_url = "";
    c.issuer = "";
    assert_int_not_equal(m2m_tokens_new(&c, &t), M2M_OK);
    assert_null(t);

    m2m_tokens_free(NULL);

    /* a good manager refuses a bad reconfiguration and keeps working */
    c = base_cfg();
    t = tnew(&c);
    {
        m2m_tokens_cfg bad = base_cfg();
        char buf[TOKBUF];

        bad.client_id = NULL;
        assert_int_not_equal(m2m_tokens_reconfigure(t, &bad), M2M_OK);
        assert_int_equal(tget(t, buf), M2M_OK);
    }
    m2m_tokens_free(t);
    assert_int_equal(tk_count(), 1);
    assert_requests_ok();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basic_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_basic_auth_encoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal_skew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_network_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_stale_token_on_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_expires_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
