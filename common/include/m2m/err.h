/* One error space for the whole suite (curl's CURLcode, libuv's X-macro).
 * Each row gives the HTTP status a handler answers with and the `error` string
 * of the JSON body (RFC 6749 §5.2 / RFC 6750 §3.1 names where one applies). */
#ifndef M2M_ERR_H
#define M2M_ERR_H

#include <stddef.h>

#define M2M_ERR_TABLE(X)                                                                           \
    X(OK, 200, "ok", "success")                                                                    \
    X(INVALID_REQUEST, 400, "invalid_request", "the request is malformed")                        \
    X(INVALID_CLIENT, 401, "invalid_client", "client authentication failed")                      \
    X(INVALID_GRANT, 400, "invalid_grant", "the grant is invalid, expired or revoked")            \
    X(UNAUTHORIZED_CLIENT, 400, "unauthorized_client", "the client may not use this grant type")  \
    X(UNSUPPORTED_GRANT_TYPE, 400, "unsupported_grant_type", "unsupported grant_type")            \
    X(INVALID_SCOPE, 400, "invalid_scope", "the requested scope is invalid or not allowed")       \
    X(INVALID_TARGET, 400, "invalid_target", "the requested resource is unknown")                 \
    X(INVALID_CLIENT_METADATA, 400, "invalid_client_metadata", "invalid client metadata")         \
    X(INVALID_TOKEN, 401, "invalid_token", "the access token is invalid")                         \
    X(INSUFFICIENT_SCOPE, 403, "insufficient_scope", "the token lacks the required scope")        \
    X(FORBIDDEN, 403, "forbidden", "not allowed")                                                  \
    X(NOT_FOUND, 404, "not_found", "no such resource")                                             \
    X(METHOD_NOT_ALLOWED, 405, "method_not_allowed", "method not allowed on this route")           \
    X(CONFLICT, 409, "conflict", "the resource already exists")                                    \
    X(NOT_CONFIGURED, 409, "not_configured", "not configured yet")                                 \
    X(CREDENTIALS_REFUSED, 409, "invalid_client", "the configured client credentials were refused")\
    X(PAYLOAD_TOO_LARGE, 413, "payload_too_large", "request body too large")                      \
    X(UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type", "unsupported Content-Type")          \
    X(RATE_LIMITED, 429, "rate_limited", "too many requests")                                     \
    X(INTERNAL, 500, "server_error", "internal error")                                             \
    X(NOMEM, 503, "temporarily_unavailable", "out of memory")                                      \
    X(DB_UNAVAILABLE, 503, "temporarily_unavailable", "database unavailable")                     \
    X(UNAVAILABLE, 503, "temporarily_unavailable", "service temporarily unavailable")             \
    X(WOULD_BLOCK, 503, "temporarily_unavailable", "needs a blocking thread (m2m_req_defer)")    \
    X(UPSTREAM, 502, "bad_gateway", "upstream service failed")                                     \
    X(CONFIG, 500, "server_error", "invalid configuration")                                        \
    X(IO, 500, "server_error", "I/O error")                                                        \
    X(CRYPTO, 500, "server_error", "cryptographic operation failed")

typedef enum {
#define M2M_ERR_ENUM(name, status, code, text) M2M_ERR_##name,
    M2M_ERR_TABLE(M2M_ERR_ENUM)
#undef M2M_ERR_ENUM
        M2M_ERR__COUNT
} m2m_err;

#define M2M_OK M2M_ERR_OK

/* HTTP status for an error (500 for an out-of-range value). */
int m2m_err_status(m2m_err e);
/* The JSON `error` string, e.g. "invalid_client". */
const char *m2m_err_code(m2m_err e);
/* A default human description. */
const char *m2m_err_text(m2m_err e);
/* The enum name without prefix, e.g. "INVALID_CLIENT" (for logs). */
const char *m2m_err_name(m2m_err e);

/* Formats a message into a caller's error buffer (NULL or 0 size: nothing);
 * truncation is fine for a message. */
void m2m_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
