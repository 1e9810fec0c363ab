#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m2m/daemon.h"
#include "m2m/log.h"
#include "scope.h"

extern const m2m_migration auth_migrations[];
extern const size_t auth_migrations_count;

static const m2m_route api_routes[] = {
    {"POST", "/api/auth/token", auth_handle_token, 0},
    {"POST", "/api/auth/register", auth_handle_register, 0},
    {"GET", "/api/auth/jwks.json", auth_handle_jwks, 0},
    {"GET", "/.well-known/oauth-authorization-server", auth_handle_metadata, 0},
    {"GET", "/api/auth/health", auth_handle_health, 0},
};

static const m2m_route internal_routes[] = {
    {"GET", "/metrics", auth_handle_metrics, 0},
    {"GET", "/health", auth_handle_health, 0},
};

static char *join_url(const char *base, const char *path)
{
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    char *out = NULL;
    if (asprintf(&out, "%.*s%s", (int)n, base, path) < 0)
        return NULL;
    return out;
}

static m2m_err build_metadata(auth_ctx *ctx)
{
    const auth_config *cfg = ctx->cfg;
    char *token = join_url(cfg->issuer, "/api/auth/token");
    char *jwks = join_url(cfg->issuer, "/api/auth/jwks.json");
    char *reg = join_url(cfg->issuer, "/api/auth/register");
    char *docs = join_url(cfg->issuer, "/docs/");
    json_t *doc = NULL;
    m2m_err rc = M2M_ERR_NOMEM;

    if (!token || !jwks || !reg || !docs)
        goto out;
    /* RFC 8414 §2; an M2M server has no authorization endpoint, hence no
     * response types. */
    doc = json_pack("{s:s, s:s, s:s, s:[s], s:[s,s], s:[], s:[s], s:s}", "issuer", cfg->issuer,
                    "token_endpoint", token, "jwks_uri", jwks, "grant_types_supported",
                    "client_credentials", "token_endpoint_auth_methods_supported",
                    "client_secret_basic", "client_secret_post", "response_types_supported",
                    "scopes_supported", "currency:read", "service_documentation", docs);
    if (!doc)
        goto out;
    json_t *scopes = json_object_get(doc, "scopes_supported");
    json_array_clear(scopes);
    /* Scopes this deployment knows: what self-registration hands out plus the
     * resource server's write scope. */
    const char *known[] = {"currency:read", "currency:write"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        json_array_append_new(scopes, json_string(known[i]));
    if (cfg->registration_open)
        json_object_set_new(doc, "registration_endpoint", json_string(reg));
    json_object_set_new(doc, "access_token_signing_alg_values_supported",
                        json_pack("[s]", "ES256"));
    ctx->metadata_json = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (ctx->metadata_json)
        rc = M2M_OK;
out:
    json_decref(doc);
    free(token);
    free(jwks);
    free(reg);
    free(docs);
    return rc;
}

static m2m_err build_resources(auth_ctx *ctx)
{
    char *all = NULL;
    if (asprintf(&all, "%s %s", ctx->cfg->default_audience, ctx->cfg->resources) < 0)
        return M2M_ERR_NOMEM;
    ctx->resources = malloc(strlen(all) + 1);
    m2m_err rc = ctx->resources ? auth_scope_normalize(all, ctx->resources, strlen(all) + 1)
                                : M2M_ERR_NOMEM;
    free(all);
    if (rc)
        M2M_ERROR("config", "AUTH_RESOURCES / AUTH_DEFAULT_AUDIENCE: malformed URI list");
    return rc ? M2M_ERR_CONFIG : M2M_OK;
}

m2m_err auth_ctx_init(auth_ctx *ctx, const auth_config *cfg)
{
    m2m_err rc;
    char scope[AUTH_SCOPE_MAX + 1];

    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = cfg;
    if (auth_scope_normalize(cfg->register_scopes, scope, sizeof(scope))) {
        M2M_ERROR("config", "AUTH_REGISTER_SCOPES: not a valid scope list");
        return M2M_ERR_CONFIG;
    }
    ctx->metrics = m2m_metrics_new("auth");
    if (!ctx->metrics)
        return M2M_ERR_NOMEM;
    ctx->tokens_issued =
        m2m_metrics_counter(ctx->metrics, "auth_tokens_issued_total", "Access tokens issued.");
    ctx->token_failures = m2m_metrics_counter(ctx->metrics, "auth_token_failures_total",
                                              "Token requests refused.");
    ctx->clients_registered = m2m_metrics_counter(ctx->metrics, "auth_clients_registered_total",
                                                  "Clients registered through the API.");
    auth_secrets_params sp = {.log_n = (int)cfg->kdf_log_n,
                              .r = 8,
                              .p = (int)cfg->kdf_parallel,
                              .concurrency = (int)cfg->kdf_concurrency,
                              .cache_slots = (size_t)cfg->secret_cache_size};
    rc = auth_secrets_new(&sp, &ctx->secrets);
    if (!rc)
        rc = m2m_db_open(cfg->database_url, &ctx->db);
    if (!rc)
        rc = auth_client_cache_new(cfg->database_url, (size_t)cfg->client_cache_size,
                                   cfg->client_cache_ttl, &ctx->clients);
    if (!rc)
        rc = auth_keystore_open(cfg->key_dir, &ctx->keys);
    if (!rc)
        rc = build_resources(ctx);
    if (!rc)
        rc = build_metadata(ctx);
    if (!rc) {
        json_t *iss = json_string(cfg->issuer), *aud = json_string(cfg->default_audience);
        ctx->issuer_json = iss ? json_dumps(iss, JSON_ENCODE_ANY) : NULL;
        ctx->audience_json = aud ? json_dumps(aud, JSON_ENCODE_ANY) : NULL;
        json_decref(iss);
        json_decref(aud);
        if (!ctx->issuer_json || !ctx->audience_json) {
            M2M_ERROR("config", "AUTH_ISSUER and AUTH_DEFAULT_AUDIENCE must be UTF-8 text");
            rc = M2M_ERR_CONFIG;
        }
    }
    return rc;
}

void auth_ctx_free(auth_ctx *ctx)
{
    auth_client_cache_free(ctx->clients);
    m2m_db_close(ctx->db);
    auth_keystore_free(ctx->keys);
    auth_secrets_free(ctx->secrets);
    m2m_metrics_free(ctx->metrics);
    free(ctx->metadata_json);
    free(ctx->issuer_json);
    free(ctx->audience_json);
    free(ctx->resources);
    memset(ctx, 0, sizeof(*ctx));
}

m2m_err auth_ctx_migrate(auth_ctx *ctx)
{
    m2m_err rc = m2m_db_migrate(ctx->db, "auth", auth_migrations, auth_migrations_count);
    if (!rc)
        atomic_store(&ctx->schema_ready, true);
    return rc;
}

bool auth_require_schema(auth_ctx *ctx, m2m_req *req)
{
    if (atomic_load_explicit(&ctx->schema_ready, memory_order_relaxed))
        return true;
    m2m_reply_header(req, "Retry-After", "1");
    m2m_reply_error(req, M2M_ERR_DB_UNAVAILABLE, "database unavailable (schema not ready)");
    return false;
}

static m2m_err prepare(void *arg)
{
    return auth_ctx_migrate(arg);
}

int auth_serve(const auth_config *cfg)
{
    auth_ctx ctx;
    int status = 1;
    m2m_err rc;

    m2m_daemon_signals();
    rc = auth_ctx_init(&ctx, cfg);
    if (rc) {
        M2M_ERROR("startup_failed", "cannot initialise: %s", m2m_err_text(rc));
        goto out;
    }
    m2m_service svc = {
        .api = {.service = "auth-service",
                .bind_addr = cfg->listen_addr,
                .port = (unsigned)cfg->port,
                .threads = (unsigned)cfg->threads,
                .blocking_threads = (unsigned)cfg->blocking_threads,
                .conn_timeout = (unsigned)cfg->conn_timeout,
                .max_conns = (unsigned)cfg->max_conns,
                .max_body = (size_t)cfg->max_body,
                .metrics = ctx.metrics,
                .access_log = cfg->access_log,
                .routes = api_routes,
                .nroutes = sizeof(api_routes) / sizeof(api_routes[0]),
                .ctx = &ctx},
        .internal_routes = internal_routes,
        .ninternal = sizeof(internal_routes) / sizeof(internal_routes[0]),
        .internal_addr = cfg->metrics_addr,
        .internal_port = (unsigned)cfg->metrics_port,
        .prepare = prepare,
        .arg = &ctx};
    status = m2m_service_run(&svc);
out:
    auth_ctx_free(&ctx);
    M2M_INFO("stopped", "exit %d", status);
    return status;
}
