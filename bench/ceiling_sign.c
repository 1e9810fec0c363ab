/*
 * bench-ceiling-sign: the ceiling for the token endpoint.
 *
 * A bare libmicrohttpd server that answers every POST with one freshly signed
 * ES256 JWT and nothing else: no client lookup, no secret check, no database,
 * no JSON library, no logging. Whatever the real token endpoint reaches is
 * measured against this (see bench/README.md).
 *
 * Usage: bench-ceiling-sign PORT [THREADS]
 *   PORT     TCP port on 127.0.0.1; 0 picks a free one.
 *   THREADS  MHD worker threads; default: number of online CPUs.
 * Prints "port N" on stdout once listening, and the public key (PEM) on
 * stderr so that a token can be checked by hand; runs until SIGINT/SIGTERM.
 *
 * Per request: read and discard the body, then (only after the body is
 * consumed, never on the first handler call: libmicrohttpd 0.9.75 closes the
 * connection when a response is queued on the headers-only call) build the
 * claims with snprintf, base64url header and claims, EVP_DigestSign with
 * SHA-256 on a P-256 key created at start, convert the DER signature to the
 * raw 64-byte r||s form of RFC 7518 §3.4, and reply
 * {"access_token":"...","token_type":"Bearer","expires_in":900}.
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ceiling_serve.h"

#define TOKEN_LIFETIME 900

/* base64url("{"alg":"ES256","typ":"at+jwt","kid":"bench"}"), computed at start. */
static char g_header_b64[96];
static size_t g_header_b64_len;
static EVP_PKEY *g_key;

/* A marker for "headers seen, body not yet consumed". Stateless otherwise. */
static int g_seen;

/* base64url without padding. out must hold 4 * ceil(n / 3) + 1 bytes.
 * Returns the length written (without the NUL). */
static size_t b64url(char *out, const unsigned char *in, size_t n)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return (size_t)len;
}

/* DER ECDSA signature -> 64-byte r||s. Returns 0 on success. */
static int der_to_raw(unsigned char raw[64], const unsigned char *der, size_t der_len)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r = NULL, *s = NULL;
    int rc = -1;

    if (!sig)
        return -1;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32)
        rc = 0;
    ECDSA_SIG_free(sig);
    return rc;
}

/* Builds one signed token into out (size cap out_size).
 * Returns its length, 0 on failure. */
static size_t make_token(char *out, size_t out_size)
{
    unsigned char jti_raw[16];
    char jti[32];
    char claims[512];
    char claims_b64[700];
    unsigned char der[80]; /* a P-256 DER signature is at most 72 bytes */
    size_t der_len = sizeof der;
    unsigned char raw[64];
    char sig_b64[90];
    EVP_MD_CTX *md = NULL;
    size_t pos, n, ret = 0;
    long long now = (long long)time(NULL);
    int len;

    if (RAND_bytes(jti_raw, sizeof jti_raw) != 1)
        goto out;
    b64url(jti, jti_raw, sizeof jti_raw);

    len = snprintf(claims, sizeof claims,
                   "{\"iss\":\"http://127.0.0.1:9001\",\"sub\":\"bench-client\","
                   "\"aud\":\"bench-api\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"%s\"}",
                   now, now + TOKEN_LIFETIME, jti);
    if (len < 0 || (size_t)len >= sizeof claims)
        goto out;
    n = b64url(claims_b64, (const unsigned char *)claims, (size_t)len);

    /* signing input = header_b64 "." claims_b64, built in out */
    if (g_header_b64_len + 1 + n + 1 + 86 + 1 > out_size)
        goto out;
    memcpy(out, g_header_b64, g_header_b64_len);
    pos = g_header_b64_len;
    out[pos++] = '.';
    memcpy(out + pos, claims_b64, n);
    pos += n;

    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, g_key) != 1 ||
        EVP_DigestSign(md, der, &der_len, (const unsigned char *)out, pos) != 1)
        goto out;
    if (der_to_raw(raw, der, der_len))
        goto out;
    n = b64url(sig_b64, raw, sizeof raw);
    out[pos++] = '.';
    memcpy(out + pos, sig_b64, n);
    pos += n;
    out[pos] = '\0';
    ret = pos;
out:
    EVP_MD_CTX_free(md);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *body,
                             size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;

    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    char token[1024];
    char body[1200];
    size_t tlen;
    int len;

    (void)cls;
    (void)url;
    (void)version;
    (void)upload_data;

    /* First call: headers only. Queuing now would close the connection. */
    if (*con_cls == NULL) {
        *con_cls = &g_seen;
        return MHD_YES;
    }
    /* Body chunks: read and discard. */
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* Body consumed. */
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        static const char e[] = "{\"error\":\"method_not_allowed\"}";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, e, sizeof e - 1);
    }
    tlen = make_token(token, sizeof token);
    if (tlen == 0) {
        static const char e[] = "{\"error\":\"server_error\"}";
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, e, sizeof e - 1);
    }
    len = snprintf(body, sizeof body,
                   "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%d}", token,
                   TOKEN_LIFETIME);
    if (len < 0 || (size_t)len >= sizeof body) {
        static const char e[] = "{\"error\":\"server_error\"}";
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, e, sizeof e - 1);
    }
    return reply(conn, MHD_HTTP_OK, body, (size_t)len);
}

int main(int argc, char **argv)
{
    static const char header[] = "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"bench\"}";
    long port, threads;
    int rc = 1;

    if (argc < 2 || argc > 3 || parse_uint(argv[1], 65535, &port)) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    if (argc == 3 && (parse_uint(argv[2], 256, &threads) || threads < 1)) {
        fprintf(stderr, "%s: THREADS must be 1..256\n", argv[0]);
        return 2;
    }

    g_key = EVP_EC_gen("P-256");
    if (!g_key) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    PEM_write_PUBKEY(stderr, g_key);
    g_header_b64_len = b64url(g_header_b64, (const unsigned char *)header, sizeof header - 1);

    rc = ceiling_serve(argv[0], port, threads, handle);
    EVP_PKEY_free(g_key);
    return rc;
}
