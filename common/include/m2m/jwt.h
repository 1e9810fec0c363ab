/* JWS/JWT with OpenSSL EVP on cached keys (design.md §7: libjwt takes the
 * algorithm from the token, rewrites typ and re-parses PEM per call, so it is
 * not used for access tokens). ES256 only; the verifier pins the algorithm
 * and checks typ, kid, iss, aud, exp, nbf itself. */
#ifndef M2M_JWT_H
#define M2M_JWT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include "m2m/buf.h"
#include "m2m/err.h"

#define M2M_KID_MAX 64
#define M2M_JWT_MAX_LEN 8192

typedef struct {
    char kid[M2M_KID_MAX]; /* RFC 7638 thumbprint, base64url */
    EVP_PKEY *pkey;        /* P-256 */
    bool has_private;
    /* Digest contexts initialised once per key and copied per operation:
     * OpenSSL 3's DigestSign/VerifyInit fetches algorithms under global
     * locks, which showed in the token endpoint's profile. */
    EVP_MD_CTX *sign_tmpl;   /* NULL without a private key */
    EVP_MD_CTX *verify_tmpl;
} m2m_key;

m2m_err m2m_key_generate(m2m_key **out);
/* PEM: PKCS#8 private key or SubjectPublicKeyInfo public key. */
m2m_err m2m_key_from_pem(const char *pem, size_t len, m2m_key **out);
m2m_err m2m_key_private_pem(const m2m_key *k, m2m_buf *out);
/* Public JWK {kty, crv, x, y, kid, use:"sig", alg:"ES256"}; NULL on failure. */
json_t *m2m_key_public_jwk(const m2m_key *k);
/* Public key from a JWK; refuses anything but kty=EC crv=P-256 (and alg ES256
 * when present) and points not on the curve. kid comes from the JWK when
 * given, else the thumbprint. */
m2m_err m2m_key_from_jwk(const json_t *jwk, m2m_key **out);
void m2m_key_free(m2m_key *k);

/* Signs header {"alg":"ES256","typ":typ,"kid":key->kid} + claims (not consumed). */
m2m_err m2m_jwt_sign(const m2m_key *key, const char *typ, const json_t *claims, m2m_buf *out);
/* Same with claims already serialised as one JSON object (the caller
 * guarantees it is valid JSON): the token endpoint's path, without a JSON
 * tree per token. */
m2m_err m2m_jwt_sign_json(const m2m_key *key, const char *typ, const char *claims, size_t len,
                          m2m_buf *out);

typedef struct {
    m2m_key **keys;
    size_t n;
} m2m_keyset;

typedef struct {
    const char *typ;      /* required header typ, e.g. "at+jwt" */
    const char *issuer;   /* required iss (NULL: not checked) */
    const char *audience; /* must equal aud or be one of its members (NULL: not checked) */
    long leeway;          /* seconds allowed on exp/nbf/iat */
    time_t now;           /* 0 = time(NULL) */
} m2m_jwt_expect;

/* Verifies a compact JWS and returns its claims (caller json_decref()s).
 * On failure returns M2M_ERR_INVALID_TOKEN and, if why != NULL, a static
 * reason ("expired", "bad signature", ...) safe to log and return. */
m2m_err m2m_jwt_verify(const char *token, size_t len, const m2m_keyset *ks,
                       const m2m_jwt_expect *exp, json_t **claims, const char **why);

#endif
