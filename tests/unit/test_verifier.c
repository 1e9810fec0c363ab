/* Unit tests for m2m/verifier.h against a JWKS server run inside the test
 * with m2m_http on 127.0.0.1 and a kernel-chosen port. The test controls
 * which keys the server publishes, how it fails (status, bodies, delay,
 * stopped) and counts its requests, so refetch limits and single flight are
 * checked by counting. Tokens are signed with m2m_jwt_sign, forgeries with a
 * small ES256 signer of this file over JSON text chosen byte by byte.
 * The same server serves /bearer, /challenge and /protected to drive
 * m2m_bearer_token and m2m_reply_bearer_error through real HTTP (libcurl). */
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

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "m2m/b64.h"
#include "m2m/buf.h"
#include "m2m/err.h"
#include "m2m/http.h"
#include "m2m/httpc.h"
#include "m2m/jwt.h"
#include "m2m/log.h"
#include "m2m/verifier.h"

#define ISS   "http://127.0.0.1:9001"
#define AUD   "http://localhost:8000/api/currency"
#define REALM "currency"
#define TYP   "at+jwt"

/* an RSA key as another authorization server would publish it (RFC 7517 A.1) */
#define RSA_JWK                                                                                    \
    "{\"kty\":\"RSA\",\"kid\":\"rsa-1\",\"use\":\"sig\",\"alg\":\"RS256\",\"e\":\"AQAB\","         \
    "\"n\":"                                                                                       \
    "\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"      \
    "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD" \
    "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh" \
    "6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\"}"

static m2m_key *g_a, *g_b, *g_c, *g_d; /* d is never published */
static m2m_key *g_many[20];

/* ---- allocation tracking: every string a test builds is freed after it -- */

static void **g_alloc;
static size_t g_nalloc, g_alloc_cap;
static pthread_mutex_t g_alloc_mu = PTHREAD_MUTEX_INITIALIZER;

static void *track(void *p)
{
    if (!p)
        abort(); /* also called from threads: no cmocka assert there */
    pthread_mutex_lock(&g_alloc_mu);
    if (g_nalloc == g_alloc_cap) {
        size_t cap = g_alloc_cap ? 2 * g_alloc_cap : 1024;
        void **a = realloc(g_alloc, cap * sizeof *a);

        if (!a)
            abort();
        g_alloc = a;
        g_alloc_cap = cap;
    }
    g_alloc[g_nalloc++] = p;
    pthread_mutex_unlock(&g_alloc_mu);
    return p;
}

static void free_tracked(void)
{
    while (g_nalloc)
        free(g_alloc[--g_nalloc]);
    free(g_alloc);
    g_alloc = NULL;
    g_alloc_cap = 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    int n;
    char *s;

    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    if (n < 0)
        abort();
    s = track(malloc((size_t)n + 1));
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- the JWKS server ------------------------------------------------------ */

typedef enum {
    JW_KEYS,        /* {"keys":[published...]} */
    JW_STATUS_500,  /* a valid document, but status 500 */
    JW_HTML,        /* 200 text/html */
    JW_NOT_JSON,    /* 200 garbage */
    JW_ARRAY,       /* [] */
    JW_NO_KEYS,     /* {} */
    JW_KEYS_STRING, /* {"keys":"x"} */
    JW_EMPTY_KEYS,  /* {"keys":[]} */
    JW_RSA_ONLY,    /* {"keys":[RSA]} */
    JW_BAD_POINT,   /* an EC key whose point is not on the curve */
    JW_HUGE,        /* a valid document padded past 64 KiB */
} jw_mode;

#define JW_MAX 24

static struct {
    pthread_mutex_t mu;
    char *jwk[JW_MAX]; /* published JWKs as JSON text */
    size_t n;
    jw_mode mode;
    unsigned delay_ms;
} g_jw = {.mu = PTHREAD_MUTEX_INITIALIZER};
static atomic_int g_jw_requests;
static m2m_http_server *g_srv;
static unsigned g_port;
static char g_url[128];
static m2m_verifier *g_pv; /* the verifier behind /protected */

static char *jwk_text(const m2m_key *k, const char *kid_override)
{
    json_t *j = m2m_key_public_jwk(k);
    char *s;

    if (!j)
        abort();
    if (kid_override)
        json_object_set_new(j, "kid", json_string(kid_override));
    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void jw_clear_locked(void)
{
    for (size_t i = 0; i < g_jw.n; i++)
        free(g_jw.jwk[i]);
    g_jw.n = 0;
}

/* Publishes exactly these keys (NULL-terminated). */
static void jw_publish(const m2m_key *k, ...)
{
    va_list ap;

    pthread_mutex_lock(&g_jw.mu);
    jw_clear_locked();
    va_start(ap, k);
    for (; k; k = va_arg(ap, const m2m_key *))
        g_jw.jwk[g_jw.n++] = jwk_text(k, NULL);
    va_end(ap);
    g_jw.mode = JW_KEYS;
    pthread_mutex_unlock(&g_jw.mu);
}

/* Adds one JWK given as text (copied). */
static void jw_add_text(const char *text)
{
    pthread_mutex_lock(&g_jw.mu);
    if (g_jw.n < JW_MAX)
        g_jw.jwk[g_jw.n++] = strdup(text);
    pthread_mutex_unlock(&g_jw.mu);
}

static void jw_add_key(const m2m_key *k)
{
    char *text = jwk_text(k, NULL);

    jw_add_text(text);
    free(text);
}

static void jw_mode_set(jw_mode m)
{
    pthread_mutex_lock(&g_jw.mu);
    g_jw.mode = m;
    pthread_mutex_unlock(&g_jw.mu);
}

static void jw_delay(unsigned ms)
{
    pthread_mutex_lock(&g_jw.mu);
    g_jw.delay_ms = ms;
    pthread_mutex_unlock(&g_jw.mu);
}

static void keys_doc(m2m_buf *b)
{
    m2m_buf_appends(b, "{\"keys\":[");
    for (size_t i = 0; i < g_jw.n; i++) {
        if (i)
            m2m_buf_appends(b, ",");
        m2m_buf_appends(b, g_jw.jwk[i]);
    }
    m2m_buf_appends(b, "]");
}

static void h_jwks(m2m_req *r, void *ctx)
{
    m2m_buf b;
    int status = 200;
    const char *ctype = "application/json";
    unsigned delay;
    jw_mode mode;

    (void)ctx;
    atomic_fetch_add(&g_jw_requests, 1);
    m2m_buf_init(&b, 1u << 20);
    pthread_mutex_lock(&g_jw.mu);
    mode = g_jw.mode;
    delay = g_jw.delay_ms;
    switch (mode) {
    case JW_KEYS:
    case JW_STATUS_500:
        keys_doc(&b);
        m2m_buf_appends(&b, "}");
        status = mode == JW_STATUS_500 ? 500 : 200;
        break;
    case JW_HTML:
        ctype = "text/html";
        m2m_buf_appends(&b, "<html><body>502 Bad Gateway</body></html>");
        break;
    case JW_NOT_JSON:
        m2m_buf_appends(&b, "{\"keys\":[");
        break;
    case JW_ARRAY:
        m2m_buf_appends(&b, "[]");
        break;
    case JW_NO_KEYS:
        m2m_buf_appends(&b, "{}");
        break;
    case JW_KEYS_STRING:
        m2m_buf_appends(&b, "{\"keys\":\"x\"}");
        break;
    case JW_EMPTY_KEYS:
        m2m_buf_appends(&b, "{\"keys\":[]}");
        break;
    case JW_RSA_ONLY:
        m2m_buf_appends(&b, "{\"keys\":[" RSA_JWK "]}");
        break;
    case JW_BAD_POINT:
        /* x = 1, y = 1 is not on P-256 */
        m2m_buf_appends(&b, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"bad\","
                            "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\","
                            "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}");
        break;
    case JW_HUGE:
        keys_doc(&b);
        m2m_buf_appends(&b, ",\"pad\":\"");
        for (int i = 0; i < 70; i++) {
            char pad[1024];

            memset(pad, 'x', sizeof pad);
            m2m_buf_append(&b, pad, sizeof pad);
        }
        m2m_buf_appends(&b, "\"}");
        break;
    }
    pthread_mutex_unlock(&g_jw.mu);
    if (delay)
        sleep_ms((long)delay);
    m2m_reply_raw(r, b.data ? status : 503, ctype, b.data ? b.data : "", b.len);
    m2m_buf_free(&b);
}

/* GET /bearer: what m2m_bearer_token makes of the Authorization header. */
static void h_bearer(m2m_req *r, void *ctx)
{
    const char *tok = NULL;
    size_t len = 0;
    m2m_err rc = m2m_bearer_token(r, &tok, &len);

    (void)ctx;
    m2m_reply_json(r, 200,
                   json_pack("{s:s, s:o}", "rc", m2m_err_name(rc), "token",
                             rc == M2M_OK ? json_stringn(tok, len) : json_null()));
}

static m2m_err err_by_name(const char *name)
{
    for (int e = 0; e < M2M_ERR__COUNT; e++)
        if (strcmp(m2m_err_name((m2m_err)e), name) == 0)
            return (m2m_err)e;
    return M2M_ERR_INTERNAL;
}

/* GET /challenge?e=NAME[&desc=..][&scope=..][&realm=..|-] */
static void h_challenge(m2m_req *r, void *ctx)
{
    const char *e = m2m_req_query(r, "e"), *realm = m2m_req_query(r, "realm");

    (void)ctx;
    if (!realm)
        realm = REALM;
    else if (strcmp(realm, "-") == 0)
        realm = NULL;
    m2m_reply_bearer_error(r, realm, err_by_name(e ? e : ""), m2m_req_query(r, "desc"),
                           m2m_req_query(r, "scope"));
}

/* GET /protected: how a resource server uses the verifier, deferring itself
 * to a blocking thread when the token names a kid worth refetching. */
static void h_protected(m2m_req *r, void *ctx)
{
    m2m_token_info info;
    const char *tok = NULL, *why = NULL;
    size_t len = 0;
    m2m_err rc;

    (void)ctx;
    rc = m2m_bearer_token(r, &tok, &len);
    if (rc) {
        m2m_reply_bearer_error(r, REALM, rc, "malformed Authorization header", NULL);
        return;
    }
    rc = m2m_verifier_check(g_pv, tok, len, m2m_req_may_block(r), &info, &why);
    if (rc == M2M_ERR_WOULD_BLOCK) {
        m2m_req_defer(r, h_protected);
        return;
    }
    if (rc) {
        m2m_reply_bearer_error(r, REALM, rc, why, NULL);
        return;
    }
    if (!m2m_token_has_scope(&info, "currency:read")) {
        m2m_reply_bearer_error(r, REALM, M2M_ERR_INSUFFICIENT_SCOPE, NULL, "currency:read");
        return;
    }
    m2m_reply_json(r, 200,
                   json_pack("{s:s, s:b}", "sub", info.sub, "deferred", m2m_req_may_block(r)));
}

static const m2m_route g_routes[] = {
    {"GET", "/jwks.json", h_jwks, 0},
    {"GET", "/bearer", h_bearer, 0},
    {"GET", "/challenge", h_challenge, 0},
    {"GET", "/protected", h_protected, 0},
};

static m2m_http_server *jw_start(unsigned port)
{
    m2m_http_cfg cfg = {.service = "test-jwks",
                        .bind_addr = "127.0.0.1",
                        .port = port,
                        .threads = 2,
                        .blocking_threads = 2,
                        .conn_timeout = 10,
                        .max_body = 4096,
                        .routes = g_routes,
                        .nroutes = sizeof g_routes / sizeof g_routes[0]};
    m2m_http_server *s = NULL;

    assert_int_equal(m2m_http_server_start(&cfg, &s), M2M_OK);
    return s;
}

/* ---- tokens ----------------------------------------------------------------- */

static atomic_long g_jti;

static char *b64u(const void *p, size_t n)
{
    size_t cap = M2M_B64URL_LEN(n) + 1;
    char *s = track(malloc(cap));

    if (m2m_b64url_encode(p, n, s, cap, NULL))
        abort();
    return s;
}

static char *b64u_str(const char *s)
{
    return b64u(s, strlen(s));
}

/* The test's own ES256 over any header and payload text. */
static char *signed_token(const m2m_key *k, const char *hdr, const char *payload)
{
    char *input = fmt("%s.%s", b64u_str(hdr), b64u_str(payload));
    uint8_t der[80], raw[64];
    size_t dlen = sizeof der;
    const unsigned char *p = der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *sig;
    const BIGNUM *r, *s;

    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
        EVP_DigestSign(md, der, &dlen, (const uint8_t *)input, strlen(input)) != 1)
        abort();
    EVP_MD_CTX_free(md);
    sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    if (!sig)
        abort();
    ECDSA_SIG_get0(sig, &r, &s);
    BN_bn2binpad(r, raw, 32);
    BN_bn2binpad(s, raw + 32, 32);
    ECDSA_SIG_free(sig);
    return fmt("%s.%s", input, b64u(raw, sizeof raw));
}

static char *hdr_for(const char *kid)
{
    return fmt("{\"alg\":\"ES256\",\"typ\":\"" TYP "\",\"kid\":\"%s\"}", kid);
}

/* Standard claims text, valid for `ttl` seconds, unique by jti. */
static char *payload_ttl(long ttl)
{
    long now = (long)time(NULL);

    return fmt("{\"iss\":\"" ISS "\",\"sub\":\"client-1\",\"client_id\":\"client-1\","
               "\"aud\":\"" AUD "\",\"iat\":%ld,\"exp\":%ld,\"jti\":\"j%ld\","
               "\"scope\":\"currency:read currency:write\",\"role\":\"admin\"}",
               now, now + ttl, atomic_fetch_add(&g_jti, 1));
}

/* A token as the auth-service makes it, through m2m_jwt_sign. */
static char *token_claims(const m2m_key *k, json_t *claims)
{
    m2m_buf b;
    m2m_err rc;

    m2m_buf_init(&b, M2M_JWT_MAX_LEN);
    rc = m2m_jwt_sign(k, TYP, claims, &b);
    json_decref(claims);
    if (rc)
        abort();
    return track(m2m_buf_steal(&b));
}

static json_t *std_claims(long ttl)
{
    long now = (long)time(NULL);
    json_t *c =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "iss", ISS, "sub", "client-1",
                  "client_id", "client-1", "aud", AUD, "iat", (json_int_t)now, "exp",
                  (json_int_t)(now + ttl), "jti", fmt("j%ld", atomic_fetch_add(&g_jti, 1)), "scope",
                  "currency:read currency:write", "role", "admin");

    if (!c)
        abort();
    return c;
}

static char *token(const m2m_key *k)
{
    return token_claims(k, std_claims(900));
}

/* A well-signed token naming a kid nobody publishes. */
static char *random_kid_token(void)
{
    return signed_token(g_d, hdr_for(fmt("forged-%ld-%d", atomic_fetch_add(&g_jti, 1), rand())),
                        payload_ttl(900));
}

/* ---- verifier helpers ------------------------------------------------------- */

static m2m_verifier *vnew(long refresh, long refetch_ms, size_t slots, long leeway)
{
    m2m_verifier_cfg cfg = {.jwks_url = g_url,
                            .issuer = ISS,
                            .audience = AUD,
                            .leeway = leeway,
                            .refresh_interval = refresh,
                            .refetch_min_ms = refetch_ms,
                            .fetch_timeout_ms = 5000, /* generous: the box may be loaded */
                            .cache_slots = slots};
    m2m_verifier *v = NULL;

    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_OK);
    assert_non_null(v);
    return v;
}

static bool wait_until_ready(m2m_verifier *v, long ms)
{
    int64_t end = now_ms() + ms;

    while (!m2m_verifier_ready(v) && now_ms() < end)
        sleep_ms(10);
    return m2m_verifier_ready(v);
}

static m2m_verifier *vready(long refresh, long refetch_ms, size_t slots, long leeway)
{
    m2m_verifier *v = vnew(refresh, refetch_ms, slots, leeway);

    assert_true(wait_until_ready(v, 5000));
    return v;
}

static void check_verdict(m2m_verifier *v, const char *name, const char *tok, size_t len,
                          bool may_block, m2m_err want_rc, const char *want_why)
{
    m2m_token_info info;
    const char *why = "unset";
    m2m_err rc = m2m_verifier_check(v, tok, len, may_block, &info, &why);

    if (rc != want_rc || (want_rc == M2M_OK && why != NULL) ||
        (want_why && (!why || strcmp(why, want_why) != 0))) {
        print_error("case '%s': got %s (%s), want %s (%s)\n", name, m2m_err_name(rc),
                    why ? why : "null", m2m_err_name(want_rc), want_why ? want_why : "-");
        fail();
    }
}

/* Functions, not macros: tok is often an expression that builds a token. */
static void accepted(m2m_verifier *v, const char *name, const char *tok)
{
    check_verdict(v, name, tok, strlen(tok), true, M2M_OK, NULL);
}

static void refused(m2m_verifier *v, const char *name, const char *tok, const char *why)
{
    check_verdict(v, name, tok, strlen(tok), true, M2M_ERR_INVALID_TOKEN, why);
}

#define ACCEPTED(v, name, tok)     accepted(v, name, tok)
#define REFUSED(v, name, tok, why) refused(v, name, tok, why)

/* ---- fixtures --------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    jw_publish(g_a, NULL);
    jw_delay(0);
    atomic_store(&g_jw_requests, 0);
    g_srv = jw_start(0);
    g_port = m2m_http_server_port(g_srv);
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%u/jwks.json", g_port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    m2m_http_server_stop(g_srv);
    g_srv = NULL;
    pthread_mutex_lock(&g_jw.mu);
    jw_clear_locked();
    pthread_mutex_unlock(&g_jw.mu);
    free_tracked();
    ERR_clear_error();
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    m2m_log_init("test_verifier", M2M_LOG_ERROR);
    srand((unsigned)time(NULL));
    if (m2m_httpc_global_init())
        return -1;
    if (m2m_key_generate(&g_a) || m2m_key_generate(&g_b) || m2m_key_generate(&g_c) ||
        m2m_key_generate(&g_d))
        return -1;
    for (size_t i = 0; i < sizeof g_many / sizeof g_many[0]; i++)
        if (m2m_key_generate(&g_many[i]))
            return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    m2m_key_free(g_a);
    m2m_key_free(g_b);
    m2m_key_free(g_c);
    m2m_key_free(g_d);
    for (size_t i = 0; i < sizeof g_many / sizeof g_many[0]; i++)
        m2m_key_free(g_many[i]);
    m2m_httpc_global_cleanup();
    return 0;
}

/* ---- tests: accepting ----------------------------------------------------------- */

static void test_valid_token(void **state)
{
    m2m_verifier *v = vready(3600, 60000, 64, 30);
    long before = (long)time(NULL);
    json_t *c = std_claims(900);
    json_int_t exp = json_integer_value(json_object_get(c, "exp"));
    char *t = token_claims(g_a, c);
    m2m_token_info info, again;
    const char *why = "unset";

    (void)state;
    assert_int_equal(m2m_verifier_key_count(v), 1);
    memset(&info, 0x55, sizeof info);
    assert_int_equal(m2m_verifier_check(v, t, strlen(t), false, &info, &why), M2M_OK);
    assert_null(why);
    assert_string_equal(info.sub, "client-1");
    assert_string_equal(info.scope, "currency:read currency:write");
    assert_string_equal(info.role, "admin");
    assert_int_equal((long long)info.exp, (long long)exp);
    assert_true(info.exp >= before + 900);
    assert_true(m2m_token_has_scope(&info, "currency:read"));
    assert_true(m2m_token_has_scope(&info, "currency:write"));
    assert_false(m2m_token_has_scope(&info, "currency"));
    assert_false(m2m_token_has_scope(&info, "currency:rea"));
    assert_false(m2m_token_has_scope(&info, "read currency:write"));
    assert_false(m2m_token_has_scope(&info, ""));
    assert_false(m2m_token_has_scope(&info, NULL));

    /* the second time comes from the cache, with the same answer */
    memset(&again, 0x33, sizeof again);
    assert_int_equal(m2m_verifier_check(v, t, strlen(t), false, &again, &why), M2M_OK);
    assert_null(why);
    assert_memory_equal(&info, &again, sizeof info);

    /* no scope, no role; aud as an array holding ours; typ with its prefix */
    c = std_claims(900);
    json_object_del(c, "scope");
    json_object_del(c, "role");
    json_object_set_new(c, "aud", json_pack("[s, s]", "other", AUD));
    t = token_claims(g_a, c);
    assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_OK);
    assert_string_equal(info.scope, "");
    assert_string_equal(info.role, "");
    assert_false(m2m_token_has_scope(&info, "currency:read"));
    t = signed_token(
        g_a, fmt("{\"alg\":\"ES256\",\"typ\":\"application/at+jwt\",\"kid\":\"%s\"}", g_a->kid),
        payload_ttl(60));
    ACCEPTED(v, "typ application/at+jwt", t);
    /* only the one startup fetch */
    assert_int_equal(atomic_load(&g_jw_requests), 1);
    m2m_verifier_free(v);
}

static void test_claims_shape(void **state)
{
    m2m_verifier *v = vready(3600, 60000, 64, 30);
    char sub128[129], sub129[130], role32[33], role33[34], scope1024[1025], scope1025[1026];
    json_t *c;
    m2m_token_info info;
    const char *why;

    (void)state;
    memset(sub128, 's', 128);
    sub128[128] = '\0';
    memset(sub129, 's', 129);
    sub129[129] = '\0';
    memset(role32, 'r', 32);
    role32[32] = '\0';
    memset(role33, 'r', 33);
    role33[33] = '\0';
    memset(scope1024, 'x', 1024);
    scope1024[1024] = '\0';
    memset(scope1025, 'x', 1025);
    scope1025[1025] = '\0';

#define WITH(member, value)                                                                        \
    (c = std_claims(900), json_object_set_new(c, member, value), token_claims(g_a, c))
#define WITHOUT(member) (c = std_claims(900), json_object_del(c, member), token_claims(g_a, c))
    /* limits, inclusive */
    {
        char *t = WITH("sub", json_string(sub128));

        assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_OK);
        assert_string_equal(info.sub, sub128);
        t = WITH("role", json_string(role32));
        assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_OK);
        assert_string_equal(info.role, role32);
        t = WITH("scope", json_string(scope1024));
        assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_OK);
        assert_string_equal(info.scope, scope1024);
    }
    /* everything else: malformed, twice (never cached) */
    for (int round = 0; round < 2; round++) {
        static const char sub_nul[] = "client\0evil";
        char *t;

        REFUSED(v, "sub too long", WITH("sub", json_string(sub129)), "malformed");
        REFUSED(v, "sub missing", WITHOUT("sub"), "malformed");
        REFUSED(v, "sub number", WITH("sub", json_integer(7)), "malformed");
        REFUSED(v, "sub null", WITH("sub", json_null()), "malformed");
        REFUSED(v, "sub empty", WITH("sub", json_string("")), "malformed");
        REFUSED(v, "sub with NUL", WITH("sub", json_stringn(sub_nul, sizeof sub_nul - 1)),
                "malformed");
        REFUSED(v, "scope too long", WITH("scope", json_string(scope1025)), "malformed");
        REFUSED(v, "scope array", WITH("scope", json_pack("[s]", "currency:read")), "malformed");
        REFUSED(v, "role too long", WITH("role", json_string(role33)), "malformed");
        REFUSED(v, "role number", WITH("role", json_integer(1)), "malformed");
        REFUSED(v, "role bool", WITH("role", json_true()), "malformed");
        REFUSED(v, "exp string", WITH("exp", json_string("tomorrow")), "malformed");
        REFUSED(v, "exp missing", WITHOUT("exp"), "missing exp");
        /* the same refused token twice in a row */
        t = WITH("sub", json_integer(7));
        REFUSED(v, "sub number (1)", t, "malformed");
        REFUSED(v, "sub number (2)", t, "malformed");
    }
    /* a fractional, far-future exp stays representable */
    {
        char *t = WITH("exp", json_real(1e300));

        assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_OK);
        assert_true(info.exp > (time_t)time(NULL) + 86400L * 365 * 100);
    }
#undef WITH
#undef WITHOUT
    m2m_verifier_free(v);
}

/* ---- tests: refusing -------------------------------------------------------- */

static char *flip_sig(const char *tok)
{
    const char *dot = strrchr(tok, '.');
    uint8_t raw[64];
    size_t n = 0;

    if (m2m_b64url_decode(dot + 1, strlen(dot + 1), raw, sizeof raw, &n) || n != 64)
        abort();
    raw[10] ^= 0x01;
    return fmt("%.*s.%s", (int)(dot - tok), tok, b64u(raw, n));
}

static char *public_pem(const m2m_key *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *s;
    long n;

    if (!bio || PEM_write_bio_PUBKEY(bio, k->pkey) != 1)
        abort();
    n = BIO_get_mem_data(bio, &data);
    s = fmt("%.*s", (int)n, data);
    BIO_free(bio);
    return s;
}

static void test_forged_tokens(void **state)
{
    m2m_verifier *v = vready(3600, 1000, 256, 30);
    const char *kid = g_a->kid;
    char *pay = payload_ttl(900), *good = signed_token(g_a, hdr_for(kid), pay);
    const char *good_sig = strrchr(good, '.') + 1;
    char *pem = public_pem(g_a), *input, *huge, *other;
    json_t *jwk = m2m_key_public_jwk(g_d);
    char *jwk_d = track(json_dumps(jwk, JSON_COMPACT));
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    long now = (long)time(NULL);
    int fetches;

    (void)state;
    json_decref(jwk);
    ACCEPTED(v, "baseline", good);
    sleep_ms(1100); /* past refetch_min_ms: the unknown kid below may refetch */
    fetches = atomic_load(&g_jw_requests);

    struct {
        const char *name;
        const char *tok;
        const char *why;
    } cases[32];
    size_t n = 0;
#define CASE(nm, t, w) (cases[n].name = nm, cases[n].tok = t, cases[n].why = w, n++)

    input = fmt("%s.%s", b64u_str(fmt("{\"alg\":\"none\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid)),
                b64u_str(pay));
    CASE("alg none, empty signature", fmt("%s.", input), "malformed");
    CASE("alg none, a valid signature pasted", fmt("%s.%s", input, good_sig), "unsupported alg");
    input =
        fmt("%s.%s", b64u_str(fmt("{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid)),
            b64u_str(pay));
    if (!HMAC(EVP_sha256(), pem, (int)strlen(pem), (const uint8_t *)input, strlen(input), mac,
              &maclen))
        abort();
    CASE("HS256 keyed with the public key PEM", fmt("%s.%s", input, b64u(mac, maclen)),
         "unsupported alg");
    CASE("typ JWT",
         signed_token(g_a, fmt("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid), pay),
         "wrong typ");
    CASE("no typ", signed_token(g_a, fmt("{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid), pay),
         "wrong typ");
    CASE("expired",
         signed_token(
             g_a, hdr_for(kid),
             fmt("{\"iss\":\"" ISS "\",\"sub\":\"c\",\"aud\":\"" AUD "\",\"exp\":%ld}", now - 31)),
         "expired");
    CASE("not yet valid",
         signed_token(g_a, hdr_for(kid),
                      fmt("{\"iss\":\"" ISS "\",\"sub\":\"c\",\"aud\":\"" AUD
                          "\",\"exp\":%ld,\"nbf\":%ld}",
                          now + 900, now + 600)),
         "not yet valid");
    CASE("wrong iss",
         signed_token(g_a, hdr_for(kid),
                      fmt("{\"iss\":\"https://evil.example\",\"sub\":\"c\",\"aud\":\"" AUD
                          "\",\"exp\":%ld}",
                          now + 900)),
         "wrong issuer");
    CASE("wrong aud",
         signed_token(g_a, hdr_for(kid),
                      fmt("{\"iss\":\"" ISS "\",\"sub\":\"c\",\"aud\":\"http://other/api\","
                          "\"exp\":%ld}",
                          now + 900)),
         "wrong audience");
    CASE("flipped signature byte", flip_sig(good), "bad signature");
    other = fmt("%.*s.%s.%s", (int)(strchr(good, '.') - good), good,
                b64u_str(fmt("{\"iss\":\"" ISS "\",\"sub\":\"admin\",\"aud\":\"" AUD
                             "\",\"exp\":%ld,\"role\":\"admin\"}",
                             now + 900)),
                good_sig);
    CASE("cached token's signature under another payload", other, "bad signature");
    CASE("embedded jwk header",
         signed_token(
             g_d,
             fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",\"jwk\":%s}", kid, jwk_d),
             pay),
         "forbidden header");
    CASE("jku header",
         signed_token(g_a,
                      fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\","
                          "\"jku\":\"https://evil.example/jwks.json\"}",
                          kid),
                      pay),
         "forbidden header");
    huge = track(malloc(M2M_JWT_MAX_LEN + 2));
    memset(huge, 'a', M2M_JWT_MAX_LEN + 1);
    huge[M2M_JWT_MAX_LEN + 1] = '\0';
    CASE("oversized", huge, "too long");
    CASE("bad base64 (padding)", fmt("%s==", good), "malformed");
    CASE("bad base64 (character)", fmt("%s.%s.%s", b64u_str(hdr_for(kid)), "e30*", good_sig),
         "malformed");
    CASE("two segments", fmt("%.*s", (int)(strrchr(good, '.') - good), good), "malformed");
#undef CASE
    assert_true(n <= sizeof cases / sizeof cases[0]);

    for (size_t i = 0; i < n; i++) {
        /* twice each, non-blocking and blocking: never remembered as good */
        check_verdict(v, cases[i].name, cases[i].tok, strlen(cases[i].tok), false,
                      M2M_ERR_INVALID_TOKEN, cases[i].why);
        check_verdict(v, cases[i].name, cases[i].tok, strlen(cases[i].tok), true,
                      M2M_ERR_INVALID_TOKEN, cases[i].why);
    }
    /* none of those made us fetch */
    assert_int_equal(atomic_load(&g_jw_requests), fetches);

    /* unknown kid: non-blocking first asks for a blocking thread, the
     * blocking call refetches once, then it is simply unknown */
    input = signed_token(g_d, hdr_for(g_d->kid), pay);
    check_verdict(v, "unknown kid", input, strlen(input), false, M2M_ERR_WOULD_BLOCK,
                  "unknown kid");
    assert_int_equal(atomic_load(&g_jw_requests), fetches);
    REFUSED(v, "unknown kid (after the refetch)", input, "unknown kid");
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    check_verdict(v, "unknown kid (within the interval)", input, strlen(input), false,
                  M2M_ERR_INVALID_TOKEN, "unknown kid");
    REFUSED(v, "unknown kid (within the interval, blocking)", input, "unknown kid");
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);

    /* the baseline is still good (and was never displaced by a forgery) */
    ACCEPTED(v, "baseline again", good);
    m2m_verifier_free(v);
}

/* ---- tests: the cache ------------------------------------------------------- */

static void test_cache_hit_cost(void **state)
{
    m2m_verifier *cached = vready(3600, 60000, 1024, 30);
    m2m_verifier *plain = vready(3600, 60000, 0, 30);
    char *t = token(g_a);
    size_t len = strlen(t);
    const int hits = 10000, fulls = 2000;
    m2m_token_info info;
    const char *why;
    double t0, hit_us, full_us;
    int bad = 0;

    (void)state;
    ACCEPTED(cached, "first check", t);
    t0 = now_s();
    for (int i = 0; i < hits; i++)
        bad += m2m_verifier_check(cached, t, len, false, &info, &why) != M2M_OK;
    hit_us = (now_s() - t0) / hits * 1e6;
    t0 = now_s();
    for (int i = 0; i < fulls; i++)
        bad += m2m_verifier_check(plain, t, len, false, &info, &why) != M2M_OK;
    full_us = (now_s() - t0) / fulls * 1e6;
    assert_int_equal(bad, 0);
    print_message("verifier: cache hit %.2f us/check, full verify %.2f us/check (%.1f%%)\n", hit_us,
                  full_us, 100.0 * hit_us / full_us);
    /* generous: a hit does no ECDSA, so it is a small fraction of a verify */
    assert_true(hit_us < 0.2 * full_us);
    m2m_verifier_free(cached);
    m2m_verifier_free(plain);
}

/* A cached token stops at the very second m2m_jwt_verify would refuse it:
 * now < exp + leeway, without and with leeway. */
static void test_cache_expiry(void **state)
{
    m2m_verifier *strict = vready(3600, 60000, 64, 0);
    m2m_verifier *lenient = vready(3600, 60000, 64, 30);
    time_t end = time(NULL) + 2;
    json_t *c = std_claims(0);
    char *ts, *tl;

    (void)state;
    json_object_set_new(c, "exp", json_integer((json_int_t)end));
    ts = token_claims(g_a, json_deep_copy(c));
    /* past its exp already, but inside the 30 s leeway until the same second */
    json_object_set_new(c, "exp", json_integer((json_int_t)(end - 30)));
    tl = token_claims(g_a, c);
    ACCEPTED(strict, "fresh", ts);
    ACCEPTED(strict, "fresh, from the cache", ts);
    ACCEPTED(lenient, "in the leeway", tl);
    ACCEPTED(lenient, "in the leeway, from the cache", tl);
    while (time(NULL) < end)
        sleep_ms(5);
    REFUSED(strict, "expired while cached (the exp second)", ts, "expired");
    REFUSED(lenient, "leeway over while cached (the exp + leeway second)", tl, "expired");
    sleep_ms(500);
    REFUSED(strict, "expired while cached, 2.5 s", ts, "expired");
    REFUSED(lenient, "leeway over while cached, later", tl, "expired");
    m2m_verifier_free(strict);
    m2m_verifier_free(lenient);
}

static bool wait_key_count(m2m_verifier *v, size_t want, long ms)
{
    int64_t end = now_ms() + ms;

    while (m2m_verifier_key_count(v) != want && now_ms() < end)
        sleep_ms(10);
    return m2m_verifier_key_count(v) == want;
}

static void test_key_removed(void **state)
{
    m2m_verifier *v;
    char *ta, *tb, *ta2;
    char *replaced;

    (void)state;
    jw_publish(g_a, g_b, NULL);
    v = vready(1, 60000, 64, 30);
    assert_int_equal(m2m_verifier_key_count(v), 2);
    ta = token(g_a);
    tb = token(g_b);
    ACCEPTED(v, "token of a", ta);
    ACCEPTED(v, "token of b", tb);
    ACCEPTED(v, "token of b, cached", tb);

    /* b leaves the JWKS: the periodic refresh drops it and its cached token */
    jw_publish(g_a, NULL);
    assert_true(wait_key_count(v, 1, 4000));
    check_verdict(v, "b's cached token, non-blocking", tb, strlen(tb), false, M2M_ERR_INVALID_TOKEN,
                  "unknown kid");
    REFUSED(v, "b's cached token", tb, "unknown kid");
    ACCEPTED(v, "a's cached token", ta);
    ta2 = token(g_a);
    ACCEPTED(v, "a fresh token of a", ta2);

    /* a different key published under a's kid: a's tokens stop too, even
     * from the cache (the kid alone does not make a key) */
    replaced = jwk_text(g_c, g_a->kid);
    jw_publish(NULL);
    jw_add_text(replaced);
    free(replaced);
    {
        int64_t end = now_ms() + 4000;
        m2m_token_info info;
        const char *why = NULL;

        while (m2m_verifier_check(v, ta, strlen(ta), false, &info, &why) == M2M_OK &&
               now_ms() < end)
            sleep_ms(20);
    }
    REFUSED(v, "a's token after its kid changed key", ta, "bad signature");
    REFUSED(v, "a's other token after its kid changed key", ta2, "bad signature");
    m2m_verifier_free(v);
}

static void test_rotation(void **state)
{
    m2m_verifier *v = vready(3600, 300, 64, 30);
    char *tc = token(g_c);
    int fetches;

    (void)state;
    sleep_ms(350);
    fetches = atomic_load(&g_jw_requests);
    /* the next key is published before it signs */
    jw_publish(g_a, g_c, NULL);
    check_verdict(v, "new kid, event thread", tc, strlen(tc), false, M2M_ERR_WOULD_BLOCK,
                  "unknown kid");
    assert_int_equal(atomic_load(&g_jw_requests), fetches);
    ACCEPTED(v, "new kid, blocking thread", tc);
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    assert_int_equal(m2m_verifier_key_count(v), 2);
    ACCEPTED(v, "new kid, again", tc);
    ACCEPTED(v, "a fresh token of the new key", token(g_c));
    tc = token(g_c);
    check_verdict(v, "a fresh token of the new key, non-blocking", tc, strlen(tc), false, M2M_OK,
                  NULL);
    ACCEPTED(v, "old key still there", token(g_a));
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    m2m_verifier_free(v);
}

/* ---- tests: availability -------------------------------------------------- */

static void test_server_down_at_start(void **state)
{
    m2m_verifier *v;
    m2m_token_info info;
    const char *why = NULL;
    char *t = token(g_a);
    int64_t t0;

    (void)state;
    m2m_http_server_stop(g_srv); /* the port is free now, nothing listens */
    g_srv = NULL;
    v = vnew(3600, 60000, 64, 30);
    sleep_ms(400);
    assert_false(m2m_verifier_ready(v));
    assert_int_equal(m2m_verifier_key_count(v), 0);
    assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, &why), M2M_ERR_UNAVAILABLE);
    assert_non_null(why);
    assert_int_equal(m2m_verifier_check(v, t, strlen(t), false, &info, &why), M2M_ERR_UNAVAILABLE);

    g_srv = jw_start(g_port);
    t0 = now_ms();
    assert_true(wait_until_ready(v, 5000));
    print_message("verifier: ready %lld ms after the JWKS server came up\n",
                  (long long)(now_ms() - t0));
    assert_true(now_ms() - t0 < 3000);
    ACCEPTED(v, "after the server came up", t);
    m2m_verifier_free(v);
}

/* Lines of the log holding needle and naming this test's JWKS URL (a
 * verifier leaked by an earlier failed test must not change the count). */
static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle) && strstr(line, g_url))
            n++;
    fclose(f);
    return n;
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char *buf = track(calloc(1, 1 << 20));
    size_t n;

    if (!f)
        return false;
    n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_server_down_after_start(void **state)
{
    char path[] = "/tmp/test_verifier_log_XXXXXX";
    int fd = mkstemp(path);
    FILE *log = fd >= 0 ? fdopen(fd, "w") : NULL;
    m2m_verifier *v;
    char *t1, *t2;
    int64_t end;

    (void)state;
    assert_non_null(log);
    m2m_log_init("test_verifier", M2M_LOG_INFO);
    m2m_log_set_stream(log);
    v = vready(1, 60000, 64, 30);
    t1 = token(g_a);
    ACCEPTED(v, "before the outage", t1);

    m2m_http_server_stop(g_srv);
    g_srv = NULL;
    sleep_ms(2500); /* a failed refresh and several retries */
    assert_true(m2m_verifier_ready(v));
    assert_int_equal(m2m_verifier_key_count(v), 1);
    ACCEPTED(v, "cached token during the outage", t1);
    t2 = token(g_a);
    ACCEPTED(v, "fresh token during the outage", t2);
    /* one warning for the whole outage, not one per retry */
    assert_int_equal(count_lines(path, "\"event\":\"jwks_fetch_failed\""), 1);
    assert_int_equal(count_lines(path, "\"event\":\"jwks_recovered\""), 0);

    g_srv = jw_start(g_port);
    end = now_ms() + 4000;
    while (count_lines(path, "\"event\":\"jwks_recovered\"") < 1 && now_ms() < end)
        sleep_ms(20);
    assert_int_equal(count_lines(path, "\"event\":\"jwks_recovered\""), 1);
    assert_int_equal(count_lines(path, "\"event\":\"jwks_fetch_failed\""), 1);
    ACCEPTED(v, "after the outage", t2);
    m2m_verifier_free(v);

    m2m_log_set_stream(NULL);
    m2m_log_init("test_verifier", M2M_LOG_ERROR);
    fclose(log);
    /* the log names keys, never tokens */
    assert_true(file_contains(path, g_a->kid));
    assert_false(file_contains(path, strrchr(t1, '.') + 1));
    assert_false(file_contains(path, strrchr(t2, '.') + 1));
    unlink(path);
}

/* While the JWKS keeps failing, retries back off: 100 ms doubling (with
 * jitter) gives 5 or 6 attempts in 1.6 s, not 16. */
static void test_backoff(void **state)
{
    m2m_verifier *v;
    int n;
    int64_t t0;

    (void)state;
    jw_mode_set(JW_STATUS_500);
    v = vnew(3600, 60000, 16, 30);
    sleep_ms(1600);
    n = atomic_load(&g_jw_requests);
    print_message("verifier: %d JWKS attempts in 1.6 s while it fails\n", n);
    assert_true(n >= 3 && n <= 8);
    assert_false(m2m_verifier_ready(v));
    jw_mode_set(JW_KEYS);
    t0 = now_ms();
    assert_true(wait_until_ready(v, 4000));
    assert_true(now_ms() - t0 < 3000);
    /* then quiet until the refresh is due */
    n = atomic_load(&g_jw_requests);
    sleep_ms(300);
    assert_int_equal(atomic_load(&g_jw_requests), n);
    m2m_verifier_free(v);
}

static void test_stops_promptly(void **state)
{
    m2m_verifier *v;
    int64_t t0;

    (void)state;
    /* waiting for a 1 h refresh */
    v = vready(3600, 60000, 16, 30);
    t0 = now_ms();
    m2m_verifier_free(v);
    assert_true(now_ms() - t0 < 500);

    /* in back-off against a server that is not there */
    m2m_http_server_stop(g_srv);
    g_srv = NULL;
    v = vnew(3600, 60000, 16, 30);
    sleep_ms(1500);
    t0 = now_ms();
    m2m_verifier_free(v);
    assert_true(now_ms() - t0 < 500);
    g_srv = jw_start(g_port);
}

/* ---- tests: refetch limits ------------------------------------------------ */

static void test_refetch_rate_limit(void **state)
{
    m2m_verifier *v = vready(3600, 1500, 64, 30);
    char *forged[100];
    int fetches, refused = 0;
    char *t;

    (void)state;
    for (int i = 0; i < 100; i++)
        forged[i] = random_kid_token();
    sleep_ms(1600);
    fetches = atomic_load(&g_jw_requests);
    t = random_kid_token();
    check_verdict(v, "random kid, non-blocking", t, strlen(t), false, M2M_ERR_WOULD_BLOCK,
                  "unknown kid");
    for (int i = 0; i < 100; i++) {
        m2m_token_info info;
        const char *why = NULL;

        t = forged[i];
        refused +=
            m2m_verifier_check(v, t, strlen(t), true, &info, &why) == M2M_ERR_INVALID_TOKEN &&
            strcmp(why, "unknown kid") == 0;
    }
    assert_int_equal(refused, 100);
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    /* and within the interval nobody is even sent to a blocking thread */
    t = random_kid_token();
    check_verdict(v, "random kid within the interval", t, strlen(t), false, M2M_ERR_INVALID_TOKEN,
                  "unknown kid");
    ACCEPTED(v, "known kid meanwhile", token(g_a));
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    m2m_verifier_free(v);
}

typedef struct {
    m2m_verifier *v;
    char *tokens[25];
    int refused;
} sf_arg;

static void *sf_main(void *p)
{
    sf_arg *a = p;

    for (int i = 0; i < 25; i++) {
        m2m_token_info info;
        const char *why = NULL;

        a->refused += m2m_verifier_check(a->v, a->tokens[i], strlen(a->tokens[i]), true, &info,
                                         &why) == M2M_ERR_INVALID_TOKEN &&
                      strcmp(why, "unknown kid") == 0;
    }
    return NULL;
}

/* 8 threads x 25 forged kids while the one refetch is slow: one fetch. */
static void test_refetch_single_flight(void **state)
{
    m2m_verifier *v = vready(3600, 2000, 64, 30);
    pthread_t th[8];
    sf_arg args[8];
    int fetches, refused = 0;
    int64_t t0;

    (void)state;
    for (int i = 0; i < 8; i++) {
        args[i].v = v;
        args[i].refused = 0;
        for (int j = 0; j < 25; j++)
            args[i].tokens[j] = random_kid_token();
    }
    sleep_ms(2100);
    jw_delay(300);
    fetches = atomic_load(&g_jw_requests);
    t0 = now_ms();
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sf_main, &args[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        refused += args[i].refused;
    }
    assert_int_equal(refused, 200);
    assert_int_equal(atomic_load(&g_jw_requests), fetches + 1);
    /* the waiters waited for the one fetch, not for one each */
    assert_true(now_ms() - t0 < 3000);
    jw_delay(0);
    m2m_verifier_free(v);
}

/* ---- tests: bad JWKS documents -------------------------------------------- */

static void test_malformed_jwks(void **state)
{
    static const struct {
        jw_mode mode;
        const char *name;
    } bad[] = {
        {JW_STATUS_500, "status 500"},
        {JW_HTML, "HTML page"},
        {JW_NOT_JSON, "not JSON"},
        {JW_ARRAY, "a JSON array"},
        {JW_NO_KEYS, "no keys member"},
        {JW_KEYS_STRING, "keys not an array"},
        {JW_EMPTY_KEYS, "empty keys"},
        {JW_RSA_ONLY, "RSA key only"},
        {JW_BAD_POINT, "point off the curve"},
        {JW_HUGE, "larger than 64 KiB"},
    };
    m2m_verifier *v = vready(3600, 1, 64, 30);
    char *cached = token(g_a), *t;
    int fetches;

    (void)state;
    ACCEPTED(v, "cached before", cached);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jw_mode_set(bad[i].mode);
        sleep_ms(3);
        fetches = atomic_load(&g_jw_requests);
        t = random_kid_token(); /* makes the verifier refetch now */
        REFUSED(v, bad[i].name, t, "unknown kid");
        /* at least ours; the fetcher's back-off retries may add some */
        assert_true(atomic_load(&g_jw_requests) >= fetches + 1);
        if (m2m_verifier_key_count(v) != 1) {
            print_error("'%s' replaced the keyset\n", bad[i].name);
            fail();
        }
        ACCEPTED(v, "cached token", cached);
        ACCEPTED(v, "fresh token", token(g_a));
    }

    /* an RSA key beside ours is skipped, not fatal */
    jw_publish(NULL);
    jw_add_text(RSA_JWK);
    jw_add_key(g_a);
    jw_add_key(g_b);
    sleep_ms(3);
    REFUSED(v, "refetch", random_kid_token(), "unknown kid");
    assert_int_equal(m2m_verifier_key_count(v), 2);
    ACCEPTED(v, "b, beside an RSA key", token(g_b));

    /* the same kid twice: the second is ignored */
    jw_publish(g_a, NULL);
    {
        char *dup = jwk_text(g_c, g_a->kid);

        jw_add_text(dup);
        free(dup);
    }
    sleep_ms(3);
    REFUSED(v, "refetch", random_kid_token(), "unknown kid");
    assert_int_equal(m2m_verifier_key_count(v), 1);
    ACCEPTED(v, "a, first under its kid", token(g_a));

    /* at most 16 keys */
    jw_publish(NULL);
    for (size_t i = 0; i < sizeof g_many / sizeof g_many[0]; i++)
        jw_add_key(g_many[i]);
    sleep_ms(3);
    REFUSED(v, "refetch", random_kid_token(), "unknown kid");
    assert_int_equal(m2m_verifier_key_count(v), 16);
    ACCEPTED(v, "the 16th key", token(g_many[15]));
    REFUSED(v, "the 17th key", token(g_many[16]), "unknown kid");
    REFUSED(v, "a's cached token, a gone", cached, "unknown kid");
    m2m_verifier_free(v);
}

/* ---- tests: threads --------------------------------------------------------- */

typedef struct {
    m2m_verifier *v;
    char *good[16];
    char *bad;
    atomic_bool *stop;
    long checks, failures;
} th_arg;

static void *th_main(void *p)
{
    th_arg *a = p;
    m2m_token_info info;
    const char *why;
    unsigned seed = (unsigned)(uintptr_t)p;

    while (!atomic_load(a->stop)) {
        int r = rand_r(&seed) % 64;
        const char *t;
        m2m_err rc;

        if (r == 0) {
            /* unknown kid: refetch (limit 1 ms) -> another keyset swap */
            t = random_kid_token();
            rc = m2m_verifier_check(a->v, t, strlen(t), true, &info, &why);
            a->failures += rc != M2M_ERR_INVALID_TOKEN;
        } else if (r == 1) {
            rc = m2m_verifier_check(a->v, a->bad, strlen(a->bad), r & 1, &info, &why);
            a->failures += rc != M2M_ERR_INVALID_TOKEN || strcmp(why, "bad signature") != 0;
        } else if (r == 2) {
            t = token(rand_r(&seed) & 1 ? g_a : g_b); /* never seen: a full verify */
            rc = m2m_verifier_check(a->v, t, strlen(t), false, &info, &why);
            a->failures += rc != M2M_OK;
        } else {
            t = a->good[r % 16];
            rc = m2m_verifier_check(a->v, t, strlen(t), false, &info, &why);
            a->failures += rc != M2M_OK || strcmp(info.sub, "client-1") != 0;
        }
        a->checks++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    m2m_verifier *v;
    pthread_t th[8];
    th_arg args[8];
    atomic_bool stop = false;
    long checks = 0, failures = 0;
    int64_t t0;
    int swaps = 0;

    (void)state;
    jw_publish(g_a, g_b, NULL);
    v = vready(1, 1, 512, 30);
    for (int i = 0; i < 8; i++) {
        args[i].v = v;
        args[i].stop = &stop;
        args[i].checks = args[i].failures = 0;
        for (int j = 0; j < 16; j++)
            args[i].good[j] = token(j & 1 ? g_a : g_b);
        args[i].bad = flip_sig(args[i].good[0]);
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, th_main, &args[i]), 0);
    /* the published document changes (order, an extra key) under them, for
     * 2.5 s and at least a dozen fetches (a loaded box fetches slowly) */
    t0 = now_ms();
    while (now_ms() - t0 < 20000 && (now_ms() - t0 < 2500 || atomic_load(&g_jw_requests) <= 12)) {
        switch (swaps++ % 3) {
        case 0:
            jw_publish(g_b, g_a, NULL);
            break;
        case 1:
            jw_publish(g_a, g_c, g_b, NULL);
            break;
        default:
            jw_publish(g_a, g_b, NULL);
            break;
        }
        sleep_ms(15);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        checks += args[i].checks;
        failures += args[i].failures;
    }
    print_message("verifier: %ld checks from 8 threads, %d JWKS changes, %d fetches\n", checks,
                  swaps, atomic_load(&g_jw_requests));
    assert_int_equal(failures, 0);
    assert_true(checks > 1000);
    assert_true(atomic_load(&g_jw_requests) > 10);
    m2m_verifier_free(v);
}

/* ---- tests: RFC 6750 over HTTP ---------------------------------------------- */

typedef struct {
    long status;
    char www[2048];
    m2m_buf body;
} http_result;

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_result *r = ud;
    size_t len = size * n;
    static const char name[] = "WWW-Authenticate:";

    if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        const char *v = p + sizeof name - 1;
        size_t vl = len - (sizeof name - 1);

        while (vl && (*v == ' '))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        snprintf(r->www, sizeof r->www, "%.*s", (int)vl, v);
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_result *r = ud;

    return m2m_buf_append(&r->body, p, size * n) ? 0 : size * n;
}

/* GET path with an optional Authorization header value (raw bytes). */
static void http_get(const char *path, const char *authz, http_result *out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char url[512];
    char *line = NULL;

    assert_non_null(h);
    memset(out, 0, sizeof *out);
    m2m_buf_init(&out->body, 1 << 16);
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", g_port, path);
    if (authz) {
        size_t cap = strlen(authz) + 32;

        line = malloc(cap);
        assert_non_null(line);
        snprintf(line, cap, "Authorization: %s", authz);
        hdrs = curl_slist_append(hdrs, line);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    if (!out->body.data)
        m2m_buf_append(&out->body, "", 0);
    curl_slist_free_all(hdrs);
    free(line);
    curl_easy_cleanup(h);
}

static void expect_bearer(const char *authz, const char *want_rc, const char *want_token)
{
    http_result r;
    json_t *j;
    const char *rc, *tok;

    http_get("/bearer", authz, &r);
    assert_int_equal(r.status, 200);
    j = json_loads(r.body.data, 0, NULL);
    assert_non_null(j);
    rc = json_string_value(json_object_get(j, "rc"));
    tok = json_string_value(json_object_get(j, "token"));
    if (!rc || strcmp(rc, want_rc) != 0 || (want_token && (!tok || strcmp(tok, want_token))) ||
        (!want_token && tok)) {
        print_error("Authorization '%.60s': got %s '%.60s', want %s '%.60s'\n",
                    authz ? authz : "(none)", rc ? rc : "?", tok ? tok : "-", want_rc,
                    want_token ? want_token : "-");
        fail();
    }
    json_decref(j);
    m2m_buf_free(&r.body);
}

static void test_bearer_token(void **state)
{
    char *longest = track(malloc(M2M_JWT_MAX_LEN + 16));

    (void)state;
    expect_bearer(NULL, "NOT_FOUND", NULL);
    expect_bearer("Basic dXNlcjpwYXNz", "NOT_FOUND", NULL);
    expect_bearer("Token abc", "NOT_FOUND", NULL);
    expect_bearer("Bearerabc def", "NOT_FOUND", NULL);
    expect_bearer("Bearer abc.DEF-ghi_jkl~mno+pqr/stu==", "OK", "abc.DEF-ghi_jkl~mno+pqr/stu==");
    expect_bearer("bearer abc", "OK", "abc");
    expect_bearer("BEARER abc", "OK", "abc");
    expect_bearer("BeArEr a", "OK", "a");
    expect_bearer("Bearer    abc", "OK", "abc");
    expect_bearer("Bearer a=", "OK", "a=");
    expect_bearer("Bearer", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer a b", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer a=b", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer =abc", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer ==", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer abc,def", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer \"abc\"", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer abc;def", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer\tabc", "INVALID_REQUEST", NULL);
    expect_bearer("Bearer abc\xc3\xa9", "INVALID_REQUEST", NULL);
    /* the length cap */
    memcpy(longest, "Bearer ", 7);
    memset(longest + 7, 'a', M2M_JWT_MAX_LEN);
    longest[7 + M2M_JWT_MAX_LEN] = '\0';
    expect_bearer(longest, "OK", longest + 7);
    longest[7 + M2M_JWT_MAX_LEN] = 'a';
    longest[8 + M2M_JWT_MAX_LEN] = '\0';
    expect_bearer(longest, "INVALID_REQUEST", NULL);
}

static void expect_challenge(const char *query, long status, const char *www, const char *error,
                             const char *desc)
{
    http_result r;
    json_t *j;
    char path[1024];

    snprintf(path, sizeof path, "/challenge?%s", query);
    http_get(path, NULL, &r);
    if (r.status != status || strcmp(r.www, www) != 0) {
        print_error("%s: got %ld [%s], want %ld [%s]\n", query, r.status, r.www, status, www);
        fail();
    }
    j = json_loads(r.body.data, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "error")), error);
    if (desc)
        assert_string_equal(json_string_value(json_object_get(j, "error_description")), desc);
    json_decref(j);
    m2m_buf_free(&r.body);
}

static void test_reply_bearer_error(void **state)
{
    http_result r;
    json_t *j;

    (void)state;
    expect_challenge("e=INVALID_TOKEN&desc=expired", 401,
                     "Bearer realm=\"currency\", error=\"invalid_token\", "
                     "error_description=\"expired\"",
                     "invalid_token", "expired");
    /* quotes and backslashes never reach the header; the body keeps them */
    expect_challenge("e=INVALID_TOKEN&desc=say%20%22hi%22%20%5Cnow", 401,
                     "Bearer realm=\"currency\", error=\"invalid_token\", "
                     "error_description=\"say hi now\"",
                     "invalid_token", "say \"hi\" \\now");
    expect_challenge("e=INVALID_TOKEN&realm=-", 401, "Bearer error=\"invalid_token\"",
                     "invalid_token", NULL);
    expect_challenge("e=INVALID_TOKEN&realm=a%22b", 401,
                     "Bearer realm=\"ab\", error=\"invalid_token\"", "invalid_token", NULL);
    expect_challenge("e=INSUFFICIENT_SCOPE&scope=currency%3Awrite", 403,
                     "Bearer realm=\"currency\", error=\"insufficient_scope\", "
                     "scope=\"currency:write\"",
                     "insufficient_scope", NULL);
    expect_challenge("e=INVALID_REQUEST&desc=two%20tokens", 400,
                     "Bearer realm=\"currency\", error=\"invalid_request\", "
                     "error_description=\"two tokens\"",
                     "invalid_request", "two tokens");
    expect_challenge("e=NOT_FOUND", 401, "Bearer realm=\"currency\"", "unauthorized",
                     "bearer token required");
    /* not about credentials: no challenge */
    expect_challenge("e=UNAVAILABLE&desc=keys%20not%20loaded", 503, "", "temporarily_unavailable",
                     "keys not loaded");

    /* the scope also in the body */
    http_get("/challenge?e=INSUFFICIENT_SCOPE&scope=currency%3Aread", NULL, &r);
    j = json_loads(r.body.data, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "scope")), "currency:read");
    json_decref(j);
    m2m_buf_free(&r.body);
}

/* A resource route end to end: bearer extraction, the verifier (deferring
 * itself for a new kid), scope, and the RFC 6750 replies. */
static void test_protected_route(void **state)
{
    http_result r;
    json_t *c;
    char *authz;

    (void)state;
    g_pv = vready(3600, 300, 64, 30);

    http_get("/protected", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.www, "Bearer realm=\"currency\"");
    m2m_buf_free(&r.body);

    http_get("/protected", fmt("Bearer %s", token(g_a)), &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"deferred\":false"));
    m2m_buf_free(&r.body);

    http_get("/protected", fmt("Bearer %s", flip_sig(token(g_a))), &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.www, "Bearer realm=\"currency\", error=\"invalid_token\", "
                               "error_description=\"bad signature\"");
    m2m_buf_free(&r.body);

    http_get("/protected", "Bearer a b", &r);
    assert_int_equal(r.status, 400);
    m2m_buf_free(&r.body);

    c = std_claims(900);
    json_object_set_new(c, "scope", json_string("currency:write"));
    http_get("/protected", fmt("Bearer %s", token_claims(g_a, c)), &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.www, "Bearer realm=\"currency\", error=\"insufficient_scope\", "
                               "scope=\"currency:read\"");
    m2m_buf_free(&r.body);

    /* rotation: the event thread defers, the blocking thread refetches */
    sleep_ms(350);
    jw_publish(g_a, g_c, NULL);
    authz = fmt("Bearer %s", token(g_c));
    http_get("/protected", authz, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"deferred\":true"));
    m2m_buf_free(&r.body);
    http_get("/protected", authz, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"deferred\":false"));
    m2m_buf_free(&r.body);

    m2m_verifier_free(g_pv);
    g_pv = NULL;
}

/* ---- tests: arguments ------------------------------------------------------- */

static void test_arguments(void **state)
{
    m2m_verifier_cfg cfg = {.jwks_url = g_url, .issuer = ISS, .audience = AUD};
    m2m_verifier *v = NULL;
    m2m_token_info info;
    const char *why = NULL;

    (void)state;
    assert_int_equal(m2m_verifier_new(NULL, &v), M2M_ERR_INTERNAL);
    cfg.jwks_url = NULL;
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_ERR_CONFIG);
    assert_null(v);
    cfg.jwks_url = g_url;
    cfg.issuer = "";
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_ERR_CONFIG);
    cfg.issuer = ISS;
    cfg.audience = NULL;
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_ERR_CONFIG);
    cfg.audience = AUD;
    cfg.leeway = -1;
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_ERR_CONFIG);
    cfg.leeway = 0;
    cfg.refetch_min_ms = -5;
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_ERR_CONFIG);
    cfg.refetch_min_ms = 0;

    m2m_verifier_free(NULL);
    assert_false(m2m_verifier_ready(NULL));
    assert_int_equal(m2m_verifier_key_count(NULL), 0);
    assert_int_equal(m2m_verifier_check(NULL, "a.b.c", 5, true, &info, &why), M2M_ERR_INTERNAL);

    /* all defaults (cache off) */
    assert_int_equal(m2m_verifier_new(&cfg, &v), M2M_OK);
    assert_true(wait_until_ready(v, 5000));
    assert_int_equal(m2m_verifier_check(v, NULL, 0, true, &info, &why), M2M_ERR_INVALID_TOKEN);
    assert_string_equal(why, "malformed");
    assert_int_equal(m2m_verifier_check(v, "", 0, true, &info, &why), M2M_ERR_INVALID_TOKEN);
    assert_int_equal(m2m_verifier_check(v, "a.b.c", 5, true, NULL, &why), M2M_ERR_INTERNAL);
    {
        char *t = token(g_a);

        assert_int_equal(m2m_verifier_check(v, t, strlen(t), true, &info, NULL), M2M_OK);
        /* len is honoured: a prefix is not the token */
        assert_int_equal(m2m_verifier_check(v, t, strlen(t) - 1, true, &info, &why),
                         M2M_ERR_INVALID_TOKEN);
    }
    m2m_verifier_free(v);

    /* has_scope splits on spaces only */
    memset(&info, 0, sizeof info);
    snprintf(info.scope, sizeof info.scope, "%s", "a  b c:d ");
    assert_true(m2m_token_has_scope(&info, "a"));
    assert_true(m2m_token_has_scope(&info, "b"));
    assert_true(m2m_token_has_scope(&info, "c:d"));
    assert_false(m2m_token_has_scope(&info, "c"));
    assert_false(m2m_token_has_scope(&info, "a b"));
    assert_false(m2m_token_has_scope(NULL, "a"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_hit_cost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_down_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_down_after_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stops_promptly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refetch_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refetch_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_jwks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bearer_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_bearer_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protected_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
