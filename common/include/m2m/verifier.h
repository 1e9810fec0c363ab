/* Access-token verification for resource servers (RFC 9068 + RFC 6750).
 *
 * Keys come from the authorization server's JWKS over HTTP (libcurl),
 * fetched by a background thread with retry and back-off until the first
 * success, then refreshed periodically; while the authorization server is
 * down the cached keys keep verifying. A token naming an unknown kid asks for
 * a refetch, at most once per refetch interval, so forged kids cannot make us
 * hammer the authorization server.
 *
 * Verification is the hot path of the whole system (a token is signed once
 * per 15 minutes and verified on every call): a token verified once is
 * remembered by its SHA-256 until its exp, so accepting it again costs a hash
 * and a lookup, never an ECDSA verify - and never past exp. */
#ifndef M2M_VERIFIER_H
#define M2M_VERIFIER_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include "m2m/err.h"
#include "m2m/http.h"

#define M2M_TOKEN_SUB_MAX 129
#define M2M_TOKEN_SCOPE_MAX 1025
#define M2M_TOKEN_ROLE_MAX 33

typedef struct m2m_verifier m2m_verifier;

typedef struct {
    const char *jwks_url;  /* e.g. http://127.0.0.1:9001/api/auth/jwks.json */
    const char *issuer;    /* required iss */
    const char *audience;  /* required aud (string or member of the array) */
    const char *typ;       /* required header typ; NULL = "at+jwt" */
    long leeway;           /* seconds of clock skew allowed on exp/nbf/iat */
    long refresh_interval; /* seconds between background JWKS refreshes; 0 = 300 */
    long refetch_min_ms;   /* unknown-kid refetches at most this often; 0 = 10000 */
    long fetch_timeout_ms; /* one JWKS request; 0 = 3000 */
    size_t cache_slots;    /* verified-token cache; 0 disables it */
} m2m_verifier_cfg;

typedef struct {
    char sub[M2M_TOKEN_SUB_MAX];     /* sub (client_id) */
    char scope[M2M_TOKEN_SCOPE_MAX]; /* space-separated, "" if none */
    char role[M2M_TOKEN_ROLE_MAX];   /* "" if none */
    time_t exp;
} m2m_token_info;

/* Copies the configuration and starts the background fetcher. */
m2m_err m2m_verifier_new(const m2m_verifier_cfg *cfg, m2m_verifier **out);
/* Stops the fetcher and frees. NULL is fine. */
void m2m_verifier_free(m2m_verifier *v);
/* True once a JWKS has been loaded. */
bool m2m_verifier_ready(m2m_verifier *v);
/* Number of keys currently loaded. */
size_t m2m_verifier_key_count(m2m_verifier *v);

/* Verifies a compact JWS access token. M2M_OK fills *info.
 * M2M_ERR_INVALID_TOKEN: refused; *why is a static reason safe to return.
 * M2M_ERR_WOULD_BLOCK (only when !may_block): the token names a kid we do
 * not know and a refetch is allowed now - defer the request (m2m_req_defer)
 * and call again with may_block, which refetches (single flight) and
 * verifies. M2M_ERR_UNAVAILABLE: no keys loaded yet (503). */
m2m_err m2m_verifier_check(m2m_verifier *v, const char *token, size_t len, bool may_block,
                           m2m_token_info *info, const char **why);

/* True when the space-separated scope list contains `want`. */
bool m2m_token_has_scope(const m2m_token_info *info, const char *want);

/* Extracts the token of "Authorization: Bearer <b64token>" (RFC 6750 §2.1).
 * M2M_ERR_NOT_FOUND: no Authorization header or another scheme (answer 401
 * with a bare challenge); M2M_ERR_INVALID_REQUEST: malformed. */
m2m_err m2m_bearer_token(const m2m_req *req, const char **token, size_t *len);

/* RFC 6750 §3 replies: 401 with WWW-Authenticate: Bearer realm=..., and
 * error="invalid_token" (e = M2M_ERR_INVALID_TOKEN), 400 invalid_request,
 * 403 insufficient_scope with scope="..." (e = M2M_ERR_INSUFFICIENT_SCOPE),
 * or a bare challenge (e = M2M_ERR_NOT_FOUND: no credentials). The body is
 * the usual JSON error. */
void m2m_reply_bearer_error(m2m_req *req, const char *realm, m2m_err e, const char *desc,
                            const char *scope);

#endif
