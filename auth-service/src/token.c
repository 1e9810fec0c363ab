/* POST /api/auth/token — RFC 6749 §4.4 client credentials, RFC 8707
 * resource indicators, RFC 9068 access tokens. Also the seeds' forms: a JSON
 * body {client_id, client_secret} and form username/password. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_auth.h"
#include "clients.h"
#include "m2m/buf.h"
#include "m2m/json.h"
#include "m2m/jwt.h"
#include "m2m/log.h"
#include "m2m/rand.h"
#include "scope.h"
#include "server.h"

#define TOKEN_MAX_RESOURCES 4

/* Token-endpoint errors: RFC 6749 §5.2 JSON, no caching, and for
 * invalid_client a 401 with a challenge (§5.2 requires it after Basic). */
static void token_error(m2m_req *req, auth_ctx *ctx, m2m_err e, const char *desc)
{
    m2m_counter_add(ctx->token_failures, 1);
    m2m_reply_header(req, "Pragma", "no-cache");
    if (e == M2M_ERR_INVALID_CLIENT)
        m2m_reply_header(req, "WWW-Authenticate", "Basic realm=\"auth-service\", charset=\"UTF-8\"");
    if (e == M2M_ERR_DB_UNAVAILABLE || e == M2M_ERR_UNAVAILABLE)
        m2m_reply_header(req, "Retry-After", "1");
    m2m_reply_error(req, e, desc);
}

/* Reads a JSON body into the same shape as a form: string members only. */
static m2m_err json_to_params(const char *body, size_t len, m2m_form *params, char *desc,
                              size_t desclen)
{
    json_t *obj = NULL, *v;
    const char *key;
    m2m_err rc = m2m_json_parse_object(body, len, &obj, desc, desclen);
    if (rc)
        return rc;
    json_object_foreach(obj, key, v)
    {
        if (json_is_null(v))
            continue;
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            snprintf(desc, desclen, "%.64s: must be a string", key);
            rc = M2M_ERR_INVALID_REQUEST;
            goto out;
        }
        if (params->n >= M2M_FORM_MAX_FIELDS) {
            snprintf(desc, desclen, "too many parameters");
            rc = M2M_ERR_INVALID_REQUEST;
            goto out;
        }
        m2m_form_field *f = &params->fields[params->n];
        f->key = strdup(key);
        f->value = strdup(json_string_value(v));
        params->n++;
        if (!f->key || !f->value) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
    }
out:
    json_decref(obj);
    return rc;
}

static m2m_err read_params(m2m_req *req, m2m_form *params, bool *is_json, char *desc,
                           size_t desclen)
{
    size_t len;
    const char *body = m2m_req_body(req, &len);
    const char *ct = m2m_req_content_type(req);

    *is_json = false;
    if (strcmp(ct, "application/x-www-form-urlencoded") == 0) {
        m2m_err rc = m2m_form_parse(body, len, params);
        if (rc)
            snprintf(desc, desclen, "malformed form body");
        return rc;
    }
    if (strcmp(ct, "application/json") == 0) {
        *is_json = true;
        return json_to_params(body, len, params, desc, desclen);
    }
    snprintf(desc, desclen,
             "Content-Type must be application/x-www-form-urlencoded (or application/json)");
    return M2M_ERR_INVALID_REQUEST;
}

/* RFC 6749 §3.2: request parameters must not be repeated (resource may be). */
static m2m_err check_repeats(const m2m_form *params, char *desc, size_t desclen)
{
    for (size_t i = 0; i < params->n; i++) {
        size_t count = 0;
        m2m_form_get(params, params->fields[i].key, &count);
        if (count > 1 && strcmp(params->fields[i].key, "resource") != 0) {
            snprintf(desc, desclen, "%.64s: parameter repeated", params->fields[i].key);
            return M2M_ERR_INVALID_REQUEST;
        }
    }
    return M2M_OK;
}

/* grant_type; the seeds' shapes (JSON, username/password) may omit it. */
static m2m_err check_grant(const m2m_form *params, bool is_json, char *desc, size_t desclen)
{
    const char *gt = m2m_form_get(params, "grant_type", NULL);
    bool seed_password = m2m_form_get(params, "username", NULL) != NULL;

    if (!gt) {
        if (is_json || seed_password)
            return M2M_OK;
        snprintf(desc, desclen, "grant_type: required");
        return M2M_ERR_INVALID_REQUEST;
    }
    if (strcmp(gt, "client_credentials") == 0)
        return M2M_OK;
    if (strcmp(gt, "password") == 0 && seed_password)
        return M2M_OK; /* the seed's form: username/password are the client's credentials */
    snprintf(desc, desclen, "grant_type '%.64s' is not supported", gt);
    return M2M_ERR_UNSUPPORTED_GRANT_TYPE;
}

/* RFC 8707 §2: absolute URI without fragment, and one this server knows. */
/* *aud_json gets the aud claim as JSON text: the pre-encoded default, or
 * an allocated string/array for the requested resources (*owned). */
static m2m_err check_resources(auth_ctx *ctx, const m2m_form *params, const char **aud_json,
                               char **owned, char *desc, size_t desclen)
{
    size_t n = 0;
    json_t *list = NULL, *aud = NULL;

    *owned = NULL;
    m2m_form_get(params, "resource", &n);
    if (n == 0) {
        *aud_json = ctx->audience_json;
        return M2M_OK;
    }
    if (n > TOKEN_MAX_RESOURCES) {
        snprintf(desc, desclen, "at most %d resource parameters", TOKEN_MAX_RESOURCES);
        return M2M_ERR_INVALID_TARGET;
    }
    list = json_array();
    for (size_t i = 0; i < params->n; i++) {
        const m2m_form_field *f = &params->fields[i];
        if (strcmp(f->key, "resource") != 0)
            continue;
        const char *v = f->value;
        if (!strstr(v, "://") || strchr(v, '#') || !auth_scope_has(ctx->resources, v, strlen(v))) {
            snprintf(desc, desclen, "resource '%.128s' is not known to this server", v);
            json_decref(list);
            return M2M_ERR_INVALID_TARGET;
        }
        bool seen = false; /* resource=X&resource=X is one audience, not two */
        for (size_t k = 0; k < json_array_size(list); k++)
            seen = seen || strcmp(json_string_value(json_array_get(list, k)), v) == 0;
        if (!seen)
            json_array_append_new(list, json_string(v));
    }
    aud = json_array_size(list) == 1 ? json_incref(json_array_get(list, 0)) : json_incref(list);
    json_decref(list);
    *owned = aud ? json_dumps(aud, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(aud);
    *aud_json = *owned;
    return *owned ? M2M_OK : M2M_ERR_NOMEM;
}

static m2m_err choose_scope(const auth_client *client, const m2m_form *params, char *out,
                            size_t outcap, char *desc, size_t desclen)
{
    const char *requested = m2m_form_get(params, "scope", NULL);
    char bad[72];
    m2m_err rc;

    if (!requested || !*requested) /* default: everything the client may have */
        return auth_scope_normalize(client->scopes, out, outcap);
    rc = auth_scope_normalize(requested, out, outcap);
    if (rc) {
        snprintf(desc, desclen, "scope: malformed");
        return rc;
    }
    if (!auth_scope_subset(out, client->scopes, bad, sizeof(bad))) {
        snprintf(desc, desclen, "scope '%s' is not allowed for this client", bad);
        return M2M_ERR_INVALID_SCOPE;
    }
    return M2M_OK;
}

/* True when s can sit between JSON quotes as it is. Every string that goes
 * into a token here is validated to a narrow alphabet long before (client
 * ids, scope tokens, role names, base64url); this is the belt to those
 * braces, since the claims are formatted rather than built as a tree. */
static bool json_plain(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

/* The claims of design.md §4, formatted straight into a buffer: a JSON tree
 * per token cost ~10% of the endpoint's throughput. iss and aud come
 * pre-encoded as JSON values. */
static m2m_err issue(auth_ctx *ctx, const auth_client *client, const char *scope,
                     const char *aud_json, m2m_buf *token, long *ttl)
{
    char jti[M2M_B64URL_LEN(16) + 1], claims[4096];
    long long now = (long long)time(NULL);
    m2m_err rc;

    *ttl = client->access_token_ttl > 0 ? client->access_token_ttl : ctx->cfg->access_token_ttl;
    rc = m2m_rand_token(16, jti, sizeof(jti));
    if (rc)
        return rc;
    if (!json_plain(client->client_id) || !json_plain(scope) ||
        (client->role && !json_plain(client->role)))
        return M2M_ERR_INTERNAL;
    int n = snprintf(claims, sizeof(claims),
                     "{\"iss\":%s,\"sub\":\"%s\",\"client_id\":\"%s\",\"aud\":%s,"
                     "\"scope\":\"%s\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"jti\":\"%s\"%s%s%s}",
                     ctx->issuer_json, client->client_id, client->client_id, aud_json, scope, now,
                     now, now + *ttl, jti, client->role ? ",\"role\":\"" : "",
                     client->role ? client->role : "", client->role ? "\"" : "");
    if (n < 0 || (size_t)n >= sizeof(claims))
        return M2M_ERR_INTERNAL;
    return m2m_jwt_sign_json(ctx->keys->signing, "at+jwt", claims, (size_t)n, token);
}

void auth_handle_token(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    m2m_form params = {0};
    auth_creds creds = {0};
    auth_client client = {0};
    m2m_buf token;
    const char *aud_json = NULL;
    char *aud_owned = NULL, reply[M2M_JWT_MAX_LEN + AUTH_SCOPE_MAX + 128];
    char desc[256] = "", scope[AUTH_SCOPE_MAX + 1];
    bool is_json = false;
    long ttl = 0;
    m2m_err rc;

    m2m_buf_init(&token, M2M_JWT_MAX_LEN);
    if (!auth_require_schema(ctx, req))
        goto out;
    rc = read_params(req, &params, &is_json, desc, sizeof(desc));
    if (!rc)
        rc = check_repeats(&params, desc, sizeof(desc));
    if (!rc)
        rc = check_grant(&params, is_json, desc, sizeof(desc));
    if (!rc)
        rc = auth_creds_extract(req, &params, &creds, desc, sizeof(desc));
    if (rc)
        goto fail;
    rc = auth_authenticate(ctx, &creds, &client, m2m_req_may_block(req));
    if (rc == M2M_ERR_WOULD_BLOCK) {
        /* First sight of this client (or its secret) since start: the
         * database and scrypt run on a blocking thread, not this one. */
        m2m_req_defer(req, auth_handle_token);
        goto out;
    }
    if (rc) {
        if (rc == M2M_ERR_INVALID_CLIENT) {
            snprintf(desc, sizeof(desc), "client authentication failed");
            M2M_INFO("token_client_auth_failed", "client authentication failed");
        }
        goto fail;
    }
    if (!auth_scope_has(client.grant_types, "client_credentials", 18)) {
        rc = M2M_ERR_UNAUTHORIZED_CLIENT;
        snprintf(desc, sizeof(desc), "this client may not use the client_credentials grant");
        goto fail;
    }
    rc = choose_scope(&client, &params, scope, sizeof(scope), desc, sizeof(desc));
    if (!rc)
        rc = check_resources(ctx, &params, &aud_json, &aud_owned, desc, sizeof(desc));
    if (!rc)
        rc = issue(ctx, &client, scope, aud_json, &token, &ttl);
    if (rc)
        goto fail;

    m2m_counter_add(ctx->tokens_issued, 1);
    m2m_reply_header(req, "Pragma", "no-cache");
    /* token is base64url and scope plain (checked in issue()): no escaping. */
    int n = snprintf(reply, sizeof(reply),
                     "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%ld,"
                     "\"scope\":\"%s\"}",
                     token.data, ttl, scope);
    if (n < 0 || (size_t)n >= sizeof(reply)) {
        rc = M2M_ERR_INTERNAL;
        goto fail;
    }
    m2m_reply_raw(req, 200, "application/json", reply, (size_t)n);
    goto out;
fail:
    token_error(req, ctx, rc, desc[0] ? desc : NULL);
out:
    free(aud_owned);
    auth_client_clear(&client);
    auth_creds_clear(&creds);
    m2m_form_free(&params);
    m2m_buf_free(&token);
}
