/* POST /api/auth/register — self-registration of a machine client (the
 * seed's call, in the spirit of RFC 7591). A self-registered client gets only
 * AUTH_REGISTER_SCOPES and no role: privileged clients are made by an
 * operator with `auth-service client create`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"
#include "m2m/json.h"
#include "m2m/log.h"
#include "m2m/rand.h"
#include "scope.h"
#include "secret_hash.h"
#include "server.h"

#define SECRET_MIN 6

static bool printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static void reject(m2m_req *req, m2m_err e, const char *field, const char *desc)
{
    m2m_reply_error_extra(req, e, desc, field ? json_pack("{s:s}", "field", field) : NULL);
}

void auth_handle_register(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    json_t *body = NULL;
    const char *client_id = NULL, *secret = NULL, *app_name = NULL, *scope_req = NULL;
    char gen_id[48], gen_secret[M2M_B64URL_LEN(32) + 1], hash[AUTH_SECRET_HASH_MAX];
    char scope[AUTH_SCOPE_MAX + 1], desc[256], bad[72];
    bool generated_secret = false;
    size_t len;
    const char *raw;
    auth_client existing = {0};
    m2m_err rc;

    if (!m2m_req_may_block(req)) { /* scrypt and the database: not on an event thread */
        m2m_req_defer(req, auth_handle_register);
        return;
    }
    if (!ctx->cfg->registration_open) {
        m2m_reply_error(req, M2M_ERR_FORBIDDEN, "self-registration is disabled on this server");
        goto out;
    }
    if (strcmp(m2m_req_content_type(req), "application/json") != 0) {
        m2m_reply_error(req, M2M_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        goto out;
    }
    if (!auth_require_schema(ctx, req))
        goto out;
    raw = m2m_req_body(req, &len);
    rc = m2m_json_parse_object(raw, len, &body, desc, sizeof(desc));
    if (rc) {
        reject(req, M2M_ERR_INVALID_REQUEST, NULL, desc);
        goto out;
    }
    /* Privileges are never self-granted: refuse rather than silently ignore. */
    if (json_object_get(body, "role") || json_object_get(body, "roles")) {
        reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "role",
               "role: cannot be chosen at registration; ask an operator");
        goto out;
    }
    if (m2m_json_get_string(body, "client_id", false, 128, &client_id, desc, sizeof(desc)) ||
        (client_id && !auth_client_id_valid(client_id))) {
        if (client_id)
            snprintf(desc, sizeof(desc),
                     "client_id: 1-128 characters of A-Z a-z 0-9 . _ : @ -, starting with a "
                     "letter or digit");
        reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "client_id", desc);
        goto out;
    }
    if (m2m_json_get_string(body, "client_secret", false, AUTH_SECRET_MAX, &secret, desc,
                            sizeof(desc)) ||
        (secret && (strlen(secret) < SECRET_MIN || !printable(secret)))) {
        if (secret)
            snprintf(desc, sizeof(desc),
                     "client_secret: %d to %d printable characters (omit it to get a generated "
                     "one)",
                     SECRET_MIN, AUTH_SECRET_MAX);
        reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "client_secret", desc);
        goto out;
    }
    if (m2m_json_get_string(body, "app_name", false, AUTH_APP_NAME_MAX, &app_name, desc,
                            sizeof(desc)) ||
        (app_name && !printable(app_name))) {
        if (app_name)
            snprintf(desc, sizeof(desc), "app_name: printable text of at most %d bytes",
                     AUTH_APP_NAME_MAX);
        reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "app_name", desc);
        goto out;
    }
    if (m2m_json_get_string(body, "scope", false, AUTH_SCOPE_MAX, &scope_req, desc,
                            sizeof(desc))) {
        reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "scope", desc);
        goto out;
    }
    if (scope_req && *scope_req) {
        if (auth_scope_normalize(scope_req, scope, sizeof(scope)) ||
            !auth_scope_subset(scope, ctx->cfg->register_scopes, bad, sizeof(bad))) {
            snprintf(desc, sizeof(desc), "scope: self-registered clients may only have '%s'",
                     ctx->cfg->register_scopes);
            reject(req, M2M_ERR_INVALID_CLIENT_METADATA, "scope", desc);
            goto out;
        }
    } else if (auth_scope_normalize(ctx->cfg->register_scopes, scope, sizeof(scope))) {
        m2m_reply_error(req, M2M_ERR_CONFIG, NULL);
        goto out;
    }

    if (!client_id) {
        char rnd[M2M_B64URL_LEN(12) + 1];
        if (m2m_rand_token(12, rnd, sizeof(rnd))) {
            m2m_reply_error(req, M2M_ERR_INTERNAL, NULL);
            goto out;
        }
        snprintf(gen_id, sizeof(gen_id), "c-%s", rnd);
        client_id = gen_id;
    }
    /* Cheap duplicate check before paying for scrypt; the insert still
     * decides under concurrency. */
    rc = auth_client_get(ctx->db, client_id, &existing);
    if (rc == M2M_OK) {
        snprintf(desc, sizeof(desc), "client_id '%s' is already registered", client_id);
        reject(req, M2M_ERR_CONFLICT, "client_id", desc);
        goto out;
    }
    if (rc != M2M_ERR_NOT_FOUND) {
        m2m_reply_error(req, rc, NULL);
        goto out;
    }
    if (!secret) {
        if (m2m_rand_token(32, gen_secret, sizeof(gen_secret))) {
            m2m_reply_error(req, M2M_ERR_INTERNAL, NULL);
            goto out;
        }
        secret = gen_secret;
        generated_secret = true;
    }
    rc = auth_secret_hash(ctx->secrets, secret, strlen(secret), hash, sizeof(hash));
    if (rc) {
        m2m_reply_error(req, M2M_ERR_INTERNAL, NULL);
        goto out;
    }
    auth_client c = {.client_id = client_id,
                     .secret_hash = hash,
                     .app_name = app_name ? app_name : "",
                     .scopes = scope,
                     .grant_types = "client_credentials"};
    rc = auth_client_insert(ctx->db, &c, "self");
    if (rc == M2M_ERR_CONFLICT) {
        snprintf(desc, sizeof(desc), "client_id '%s' is already registered", client_id);
        reject(req, M2M_ERR_CONFLICT, "client_id", desc);
        goto out;
    }
    if (rc) {
        m2m_reply_error(req, rc, NULL);
        goto out;
    }
    m2m_counter_add(ctx->clients_registered, 1);
    M2M_INFO("client_registered", "client %s registered itself", client_id);
    json_t *reply = json_pack("{s:s, s:s, s:s, s:[s], s:s}", "client_id", client_id, "app_name",
                              app_name ? app_name : "", "scope", scope, "grant_types",
                              "client_credentials", "token_endpoint_auth_method",
                              "client_secret_basic");
    if (reply && generated_secret) {
        /* Shown once: only the hash is kept. */
        json_object_set_new(reply, "client_secret", json_string(secret));
        json_object_set_new(reply, "client_secret_expires_at", json_integer(0));
    }
    m2m_reply_json(req, 201, reply);
out:
    explicit_bzero(gen_secret, sizeof(gen_secret));
    auth_client_clear(&existing);
    json_decref(body);
}
