/* HTTP client over libcurl for daemon-to-daemon calls (JWKS, token endpoint,
 * resource APIs): bounded time, bounded response size, connection reuse per
 * thread. */
#ifndef M2M_HTTPC_H
#define M2M_HTTPC_H

#include <stddef.h>
#include "m2m/buf.h"
#include "m2m/err.h"

typedef struct {
    const char *method; /* "GET" when NULL */
    const char *url;
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL.
                                 * X-Request-Id is added from the calling
                                 * thread's request id (m2m/log.h) unless
                                 * given here: one id follows a request
                                 * across the daemons it reaches. */
    const char *body;
    size_t body_len;
    long timeout_ms;     /* whole request; 0 = 5000 */
    size_t max_response; /* 0 = 1 MiB */
} m2m_httpc_req;

typedef struct {
    long status;
    m2m_buf body;
    char content_type[128];
} m2m_httpc_resp;

/* Call once before threads start (curl_global_init). */
m2m_err m2m_httpc_global_init(void);
void m2m_httpc_global_cleanup(void);
/* Network failure, timeout or oversize reply -> M2M_ERR_UPSTREAM; any HTTP
 * status is a success of this call (look at resp->status). */
m2m_err m2m_httpc_do(const m2m_httpc_req *req, m2m_httpc_resp *resp);
void m2m_httpc_resp_free(m2m_httpc_resp *resp);

#endif
