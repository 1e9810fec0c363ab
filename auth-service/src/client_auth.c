#include "client_auth.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "m2m/b64.h"
#include "m2m/log.h"
#include "secret_hash.h"

#define BASIC_MAX 1024

static m2m_err from_basic(const char *value, auth_creds *out, char *desc, size_t desclen)
{
    uint8_t raw[BASIC_MAX];
    size_t rawlen = 0;
    const char *b64 = value + 6; /* after "Basic " */
    m2m_err rc;

    while (*b64 == ' ')
        b64++;
    rc = m2m_b64_decode(b64, strlen(b64), raw, sizeof(raw) - 1, &rawlen);
    if (rc) {
        snprintf(desc, desclen, "Authorization: malformed Basic credentials");
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    raw[rawlen] = '\0';
    char *colon = memchr(raw, ':', rawlen);
    if (!colon || colon == (char *)raw) {
        snprintf(desc, desclen, "Authorization: Basic credentials must be client_id:secret");
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    /* RFC 6749 §2.3.1: both parts are form-urlencoded before base64. */
    rc = m2m_pct_decode((const char *)raw, (size_t)(colon - (char *)raw), 1, &out->client_id,
                        NULL);
    if (!rc)
        rc = m2m_pct_decode(colon + 1, rawlen - (size_t)(colon + 1 - (char *)raw), 1,
                            &out->secret, &out->secret_len);
    if (rc) {
        snprintf(desc, desclen, "Authorization: malformed percent-encoding in Basic credentials");
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    out->method = AUTH_CRED_BASIC;
out:
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

static m2m_err take(const m2m_form *params, const char *id_key, const char *secret_key,
                    auth_cred_method method, auth_creds *out)
{
    const char *id = m2m_form_get(params, id_key, NULL);
    const char *secret = m2m_form_get(params, secret_key, NULL);
    out->client_id = strdup(id);
    out->secret = strdup(secret);
    if (!out->client_id || !out->secret)
        return M2M_ERR_NOMEM;
    out->secret_len = strlen(secret);
    out->method = method;
    return M2M_OK;
}

m2m_err auth_creds_extract(m2m_req *req, const m2m_form *params, auth_creds *out, char *desc,
                           size_t desclen)
{
    const char *authz = m2m_req_header(req, "Authorization");
    const char *body_id = m2m_form_get(params, "client_id", NULL);
    bool has_post = m2m_form_get(params, "client_secret", NULL) != NULL;
    bool has_password = m2m_form_get(params, "username", NULL) != NULL ||
                        m2m_form_get(params, "password", NULL) != NULL;
    bool has_basic = authz && strncasecmp(authz, "Basic ", 6) == 0;
    m2m_err rc = M2M_OK;

    memset(out, 0, sizeof(*out));
    if (authz && !has_basic) {
        snprintf(desc, desclen, "unsupported Authorization scheme: use Basic");
        return M2M_ERR_INVALID_CLIENT;
    }
    if (has_basic + has_post + has_password > 1) {
        snprintf(desc, desclen, "use exactly one client authentication method");
        return M2M_ERR_INVALID_REQUEST;
    }
    if (has_basic) {
        rc = from_basic(authz, out, desc, desclen);
        /* client_id may repeat the Basic id in the body, but must agree. */
        if (!rc && body_id && strcmp(body_id, out->client_id) != 0) {
            snprintf(desc, desclen, "client_id in the body differs from the Basic credentials");
            rc = M2M_ERR_INVALID_REQUEST;
        }
    } else if (has_post) {
        if (!body_id) {
            snprintf(desc, desclen, "client_id: required with client_secret");
            return M2M_ERR_INVALID_REQUEST;
        }
        rc = take(params, "client_id", "client_secret", AUTH_CRED_POST, out);
    } else if (has_password) {
        if (!m2m_form_get(params, "username", NULL) || !m2m_form_get(params, "password", NULL)) {
            snprintf(desc, desclen, "username and password go together");
            return M2M_ERR_INVALID_REQUEST;
        }
        rc = take(params, "username", "password", AUTH_CRED_PASSWORD, out);
    } else {
        snprintf(desc, desclen, "client authentication required");
        return M2M_ERR_INVALID_CLIENT;
    }
    if (rc)
        auth_creds_clear(out);
    return rc;
}

void auth_creds_clear(auth_creds *c)
{
    free(c->client_id);
    if (c->secret) {
        OPENSSL_cleanse(c->secret, c->secret_len);
        free(c->secret);
    }
    memset(c, 0, sizeof(*c));
}

m2m_err auth_authenticate(auth_ctx *ctx, const auth_creds *creds, auth_client *client,
                          bool may_block)
{
    m2m_err rc;

    memset(client, 0, sizeof(*client));
    if (!auth_client_id_valid(creds->client_id) || creds->secret_len == 0 ||
        creds->secret_len > AUTH_SECRET_MAX)
        return M2M_ERR_INVALID_CLIENT;
    rc = may_block ? auth_client_lookup(ctx->clients, ctx->db, creds->client_id, client)
                   : auth_client_peek(ctx->clients, creds->client_id, client);
    if (rc == M2M_ERR_NOT_FOUND)
        return M2M_ERR_INVALID_CLIENT;
    if (rc)
        return rc;
    rc = may_block ? auth_secret_verify(ctx->secrets, client->client_id, client->secret_hash,
                                        creds->secret, creds->secret_len)
                   : auth_secret_verify_cached(ctx->secrets, client->client_id,
                                               client->secret_hash, creds->secret,
                                               creds->secret_len);
    if (rc == M2M_OK && !client->active)
        rc = M2M_ERR_INVALID_CLIENT;
    if (rc) {
        if (rc != M2M_ERR_INVALID_CLIENT && rc != M2M_ERR_WOULD_BLOCK)
            rc = M2M_ERR_INTERNAL;
        auth_client_clear(client);
    }
    return rc;
}
