/* The auth-service process: shared state for handlers and the serve loop. */
#ifndef AUTH_SERVER_H
#define AUTH_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include "auth_config.h"
#include "client_cache.h"
#include "keystore.h"
#include "m2m/db.h"
#include "m2m/http.h"
#include "m2m/metrics.h"
#include "secret_hash.h"

typedef struct {
    const auth_config *cfg;
    m2m_db *db;
    auth_keystore *keys;
    auth_secrets *secrets;
    auth_client_cache *clients; /* NULL: no cache */
    m2m_metrics *metrics;
    m2m_counter *tokens_issued;
    m2m_counter *token_failures;
    m2m_counter *clients_registered;
    char *metadata_json; /* RFC 8414 document, built once */
    char *issuer_json;   /* AUTH_ISSUER as a JSON string, quotes included */
    char *audience_json; /* AUTH_DEFAULT_AUDIENCE likewise */
    char *resources;     /* allowed RFC 8707 resources, space-separated */
    atomic_bool schema_ready;
} auth_ctx;

/* Builds everything a handler needs (no network listeners). */
m2m_err auth_ctx_init(auth_ctx *ctx, const auth_config *cfg);
void auth_ctx_free(auth_ctx *ctx);
/* Applies migrations; sets schema_ready on success. */
m2m_err auth_ctx_migrate(auth_ctx *ctx);
/* 503 for handlers that need the database before the schema is in place. */
bool auth_require_schema(auth_ctx *ctx, m2m_req *req);

/* Route handlers. */
void auth_handle_token(m2m_req *req, void *ctx);
void auth_handle_register(m2m_req *req, void *ctx);
void auth_handle_metadata(m2m_req *req, void *ctx);
void auth_handle_jwks(m2m_req *req, void *ctx);
void auth_handle_health(m2m_req *req, void *ctx);
void auth_handle_metrics(m2m_req *req, void *ctx);

/* Runs the daemon until SIGTERM/SIGINT. Returns the exit status. */
int auth_serve(const auth_config *cfg);
/* `auth-service client create ...`, `auth-service migrate`. */
int auth_cli(const auth_config *cfg, int argc, char **argv);

#endif
