/* Token manager: an OAuth2 client's access tokens, obtained with the client
 * credentials grant (RFC 6749 §4.4) and renewed before they expire, so that
 * a program calling a protected API never handles OAuth itself.
 *
 * - A token is handed out only before its renewal time: the earlier of
 *   `renew_percent` of its lifetime and `renew_skew_s` seconds before it
 *   expires - except that the skew is ignored when it would leave less than
 *   half the lifetime (a 5 s token and a 30 s skew renew at 80%, not at
 *   once). After that every caller waits for the renewal.
 * - Without expires_in in the reply, the lifetime is the JWT's exp (read,
 *   not verified: only for scheduling), else 60 s.
 * - Single flight: however many threads ask at once, one token request is in
 *   flight; the others wait for its result.
 * - Network errors, 429 and 5xx from the token endpoint back off
 *   exponentially with jitter (bounded by backoff_max_ms); while backing off
 *   callers get the last error at once instead of another request.
 * - A refusal of the credentials (invalid_client, unauthorized_client,
 *   invalid_scope, invalid_target) is permanent: reported, never retried,
 *   until m2m_tokens_reconfigure() or m2m_tokens_renew().
 * - The secret is never logged; the token is logged by no function here.
 *
 * Every function is thread-safe. Call m2m_httpc_global_init() once before. */
#ifndef M2M_TOKENS_H
#define M2M_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "m2m/err.h"
#include "m2m/httpc.h"

/* Longest access token kept (bytes, without the NUL). */
#define M2M_TOKENS_MAX_TOKEN 8192
#define M2M_TOKENS_MAX_SCOPE 1024
#define M2M_TOKENS_MAX_ERROR 256

typedef struct {
    /* Where tokens come from: token_url, or (when it is NULL or "") the
     * issuer, whose RFC 8414 metadata names the token endpoint: fetched from
     * /.well-known/oauth-authorization-server inserted between the issuer's
     * host and path (RFC 8414 §3.1), its "issuer" member must equal this one
     * exactly (§3.3). */
    const char *token_url;
    const char *issuer;
    const char *client_id;
    const char *client_secret;
    const char *scope;    /* NULL or "": the client's default scope */
    const char *resource; /* RFC 8707 resource indicator; NULL or "": none */
    unsigned renew_percent; /* of the lifetime; 0: 80 */
    long renew_skew_s;      /* seconds before exp; < 0: 30 (0 is allowed) */
    long backoff_min_ms;    /* first wait after a failure; 0: 500 */
    long backoff_max_ms;    /* largest wait; 0: 30000 */
    long timeout_ms;        /* each HTTP request; 0: 5000 */
    /* Renew in a thread of the manager's own at the renewal time, so that a
     * caller rarely waits for a token request. Off: renewal happens on the
     * first m2m_tokens_get() after the renewal time. */
    bool background;
} m2m_tokens_cfg;

typedef struct m2m_tokens m2m_tokens;

/* What m2m_tokens_status() reports: no token, no secret. */
typedef struct {
    bool has_token;         /* a token that may still be handed out */
    time_t expires_at;      /* wall clock, of the current token (0: none) */
    time_t renew_at;        /* wall clock */
    time_t last_renewal;    /* wall clock of the last token obtained (0: never) */
    char scope[M2M_TOKENS_MAX_SCOPE];
    m2m_err last_error;     /* M2M_OK when the last request succeeded */
    char last_error_text[M2M_TOKENS_MAX_ERROR];
    time_t last_error_at;   /* 0: never */
    bool credentials_refused; /* permanent until new credentials or a renew */
    uint64_t token_requests;  /* sent to the token endpoint */
    uint64_t token_failures;
    uint64_t api_calls;       /* m2m_tokens_call() requests sent */
    uint64_t api_retries;     /* calls repeated after a 401 */
} m2m_tokens_status;

/* Copies the configuration (strings included). Makes no request. */
m2m_err m2m_tokens_new(const m2m_tokens_cfg *cfg, m2m_tokens **out);
/* Stops the background thread; waits for a request in flight. NULL is fine. */
void m2m_tokens_free(m2m_tokens *t);

/* Replaces the configuration (new credentials, a new endpoint): drops the
 * current token, the discovered endpoint, the backoff and the refused state.
 * cfg->background is ignored (fixed at m2m_tokens_new). */
m2m_err m2m_tokens_reconfigure(m2m_tokens *t, const m2m_tokens_cfg *cfg);

/* A token that is valid outside the renewal window, copied into buf (NUL
 * terminated). Requests one when needed (single flight). Errors:
 * M2M_ERR_INVALID_CLIENT (or the OAuth error the endpoint gave) when the
 * credentials are refused, M2M_ERR_UPSTREAM when the endpoint is unreachable
 * or failing (also while backing off), M2M_ERR_PAYLOAD_TOO_LARGE when cap is
 * too small. `expires_at` (may be NULL) receives the token's exp. */
m2m_err m2m_tokens_get(m2m_tokens *t, char *buf, size_t cap, time_t *expires_at);

/* Requests a new token now (single flight with any other request), even if
 * the current one is fresh; clears the refused state and the backoff first.
 * For an operator's "log in now". */
m2m_err m2m_tokens_renew(m2m_tokens *t);

/* The resource server refused `token` (401): forget it, so that the next
 * m2m_tokens_get() requests a new one. A token other than the current one
 * (already replaced) changes nothing. */
void m2m_tokens_invalidate(m2m_tokens *t, const char *token);

/* Sends req with "Authorization: Bearer <token>" added to its headers. On a
 * 401 the token is invalidated and the request sent once more with a fresh
 * one - but a token that was itself refused on such a retry is not renewed
 * again before its time (the resource server refuses our tokens, whatever
 * their age). resp is the last reply (any HTTP status is M2M_OK here); free
 * it with m2m_httpc_resp_free() whatever the result. Errors: those of
 * m2m_tokens_get(), except that a token endpoint out of reach is
 * M2M_ERR_UNAVAILABLE; M2M_ERR_UPSTREAM is the call itself failing (network,
 * timeout, oversized reply). */
m2m_err m2m_tokens_call(m2m_tokens *t, const m2m_httpc_req *req, m2m_httpc_resp *resp);

void m2m_tokens_status_get(m2m_tokens *t, m2m_tokens_status *out);

#endif
