/*
 * bench-ceiling-verify: the ceiling for a token-protected JSON reply.
 *
 * A bare libmicrohttpd server that, on every GET, checks the ES256 signature
 * of the bearer token it is given, once, and answers the same fixed JSON body
 * as bench-ceiling-json, or 401. Nothing else: no claims (alg, typ, kid, iss,
 * aud, exp, scope are not looked at), no verified-token cache, no JSON
 * library, no logging. crypto-server's fresh-token figure is measured against
 * this (see bench/README.md).
 *
 * Usage: bench-ceiling-verify PORT PUBKEY.pem [THREADS]
 *   PORT        TCP port on 127.0.0.1; 0 picks a free one.
 *   PUBKEY.pem  the P-256 public key the tokens are signed with (PEM,
 *               SubjectPublicKeyInfo; bench/currency.sh makes it from the
 *               auth-service's JWKS).
 *   THREADS     MHD worker threads; default: number of online CPUs.
 * Prints "port N" on stdout once listening; runs until SIGINT/SIGTERM.
 *
 * Per request (on the second handler call: libmicrohttpd 0.9.75 closes the
 * connection when a response is queued on the headers-only first call,
 * design.md §7): read "Authorization: Bearer <jwt>", find the two dots,
 * base64url-decode the signature (exactly 64 bytes: raw r||s, RFC 7518
 * §3.4), re-encode it as a DER ECDSA-Sig-Value, and EVP_DigestVerify it with
 * SHA-256 over "header.payload". The key is parsed once at start; each
 * request copies a digest-verify context initialised once on it (what
 * common/src/jwt.c does, and cheaper than EVP_DigestVerifyInit per call).
 * 200 with the body when the signature holds, 401 with
 * WWW-Authenticate: Bearer error="invalid_token" when it does not or the
 * header is missing or malformed.
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ceiling_serve.h"

#define TOKEN_MAX   8192 /* longer Authorization values are refused */
#define SIG_LEN     64   /* raw r||s */
#define SIG_B64_LEN 86   /* base64url of 64 bytes, no padding */

static const char g_body[] = "{\"symbol\":\"BTC\",\"name\":\"Bitcoin\",\"rate\":67250.12,"
                             "\"last_updated\":\"2026-11-22T10:00:00.000Z\"}";

static EVP_PKEY *g_key;
static EVP_MD_CTX *g_verify_tmpl; /* EVP_DigestVerifyInit'ed once; copied per request */
static signed char g_b64[256];    /* base64url alphabet -> 0..63, -1 otherwise */

/* A marker for "headers seen". Stateless otherwise. */
static int g_seen;

static void b64_init(void)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    memset(g_b64, -1, sizeof g_b64);
    for (int i = 0; i < 64; i++)
        g_b64[(unsigned char)a[i]] = (signed char)i;
}

/* base64url without padding, exactly SIG_B64_LEN characters -> SIG_LEN bytes.
 * Returns 0 on success. */
static int sig_decode(unsigned char out[SIG_LEN], const char *in, size_t n)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    if (n != SIG_B64_LEN)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = g_b64[(unsigned char)in[i]];
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == SIG_LEN)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* 86 characters carry 516 bits: the 4 left over must be zero. */
    if (o != SIG_LEN || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return 0;
}

/* One DER INTEGER from a 32-byte big-endian unsigned value. Returns its length. */
static size_t der_int(unsigned char *out, const unsigned char v[32])
{
    size_t skip = 0, len, pos = 0;

    while (skip < 31 && v[skip] == 0) /* minimal encoding, but 0 keeps one byte */
        skip++;
    len = 32 - skip;
    out[pos++] = 0x02;
    if (v[skip] & 0x80) { /* positive: a leading 0x00 when the top bit is set */
        out[pos++] = (unsigned char)(len + 1);
        out[pos++] = 0x00;
    } else {
        out[pos++] = (unsigned char)len;
    }
    memcpy(out + pos, v + skip, len);
    return pos + len;
}

/* raw r||s -> DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs, at most 72 bytes). */
static size_t sig_raw_to_der(unsigned char der[72], const unsigned char raw[SIG_LEN])
{
    unsigned char body[70];
    size_t n = der_int(body, raw);

    n += der_int(body + n, raw + 32);
    der[0] = 0x30;
    der[1] = (unsigned char)n; /* n <= 70: short form */
    memcpy(der + 2, body, n);
    return n + 2;
}

/* Returns 1 when the value is "Bearer <jwt>" and the jwt's ES256 signature holds. */
static int token_ok(const char *auth)
{
    const char *tok, *d1, *d2;
    unsigned char raw[SIG_LEN], der[72];
    size_t len, der_len;
    EVP_MD_CTX *md;
    int ok;

    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    tok = auth + 7;
    while (*tok == ' ')
        tok++;
    len = strnlen(tok, TOKEN_MAX + 1);
    if (len == 0 || len > TOKEN_MAX)
        return 0;
    d1 = memchr(tok, '.', len);
    if (!d1)
        return 0;
    d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
    if (!d2 || d1 == tok || d2 == d1 + 1 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return 0;
    if (sig_decode(raw, d2 + 1, len - (size_t)(d2 + 1 - tok)))
        return 0;
    der_len = sig_raw_to_der(der, raw);

    md = EVP_MD_CTX_new();
    ok = md && EVP_MD_CTX_copy_ex(md, g_verify_tmpl) == 1 &&
         EVP_DigestVerify(md, der, der_len, (const unsigned char *)tok, (size_t)(d2 - tok)) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        ERR_clear_error();
    return ok;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *body,
                             size_t len, const char *www_authenticate)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;

    /* The bodies are static: no copy. */
    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, www_authenticate);
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    static const char unauthorized[] = "{\"error\":\"invalid_token\"}";

    (void)cls;
    (void)url;
    (void)version;
    (void)upload_data;

    /* First call: headers only. Queuing now would close the connection. */
    if (*con_cls == NULL) {
        *con_cls = &g_seen;
        return MHD_YES;
    }
    /* A body (there should be none on a GET): read and discard. */
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        static const char e[] = "{\"error\":\"method_not_allowed\"}";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, e, sizeof e - 1, NULL);
    }
    if (!token_ok(
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
        return reply(conn, MHD_HTTP_UNAUTHORIZED, unauthorized, sizeof unauthorized - 1,
                     "Bearer error=\"invalid_token\"");
    return reply(conn, MHD_HTTP_OK, g_body, sizeof g_body - 1, NULL);
}

/* Loads a P-256 public key from a PEM file; NULL (with a message) otherwise. */
static EVP_PKEY *load_key(const char *path)
{
    char group[32] = "";
    EVP_PKEY *k;
    FILE *f = fopen(path, "r");

    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!k) {
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "%s: not a PEM public key\n", path);
        return NULL;
    }
    if (!EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) !=
            1 ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        fprintf(stderr, "%s: not a P-256 key (group '%s')\n", path, group);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

int main(int argc, char **argv)
{
    long port, threads;
    int rc = 1;

    if (argc < 3 || argc > 4 || parse_uint(argv[1], 65535, &port)) {
        fprintf(stderr, "usage: %s PORT PUBKEY.pem [THREADS]\n", argv[0]);
        return 2;
    }
    threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    if (argc == 4 && (parse_uint(argv[3], 256, &threads) || threads < 1)) {
        fprintf(stderr, "%s: THREADS must be 1..256\n", argv[0]);
        return 2;
    }

    b64_init();
    g_key = load_key(argv[2]);
    if (!g_key)
        return 1;
    g_verify_tmpl = EVP_MD_CTX_new();
    if (!g_verify_tmpl ||
        EVP_DigestVerifyInit(g_verify_tmpl, NULL, EVP_sha256(), NULL, g_key) != 1) {
        ERR_print_errors_fp(stderr);
        goto out;
    }

    rc = ceiling_serve(argv[0], port, threads, handle);
out:
    EVP_MD_CTX_free(g_verify_tmpl);
    EVP_PKEY_free(g_key);
    return rc;
}
