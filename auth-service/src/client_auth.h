/* Client authentication at the token endpoint (RFC 6749 §2.3.1): HTTP Basic
 * or client_id/client_secret in the body, plus the seeds' forms (JSON body,
 * form username/password). Exactly one method per request. */
#ifndef AUTH_CLIENT_AUTH_H
#define AUTH_CLIENT_AUTH_H

#include <stddef.h>
#include "clients.h"
#include "m2m/form.h"
#include "m2m/http.h"
#include "server.h"

typedef enum {
    AUTH_CRED_BASIC,
    AUTH_CRED_POST,     /* client_id + client_secret in the body (form or JSON) */
    AUTH_CRED_PASSWORD, /* the seed's OAuth2PasswordRequestForm: username/password */
} auth_cred_method;

typedef struct {
    char *client_id;
    char *secret;
    size_t secret_len;
    auth_cred_method method;
} auth_creds;

/* Extracts credentials. Errors: M2M_ERR_INVALID_REQUEST (malformed, several
 * methods) or M2M_ERR_INVALID_CLIENT (none, unsupported scheme); desc gets a
 * message safe to return. */
m2m_err auth_creds_extract(m2m_req *req, const m2m_form *params, auth_creds *out, char *desc,
                           size_t desclen);
void auth_creds_clear(auth_creds *c);

/* Looks the client up and checks the secret. Unknown id, wrong secret and a
 * disabled client are all M2M_ERR_INVALID_CLIENT (one message: no oracle).
 * Without may_block only the caches are used, and M2M_ERR_WOULD_BLOCK says
 * the database or scrypt is needed: defer the request and call again. */
m2m_err auth_authenticate(auth_ctx *ctx, const auth_creds *creds, auth_client *client,
                          bool may_block);

#endif
