#include "auth_config.h"

#include <stddef.h>
#include <string.h>

#define OFF(f) offsetof(auth_config, f)

const m2m_cfg_entry auth_config_table[] = {
    {"AUTH_LISTEN_ADDR", M2M_CFG_STR, "127.0.0.1", "IPv4 address to listen on", OFF(listen_addr),
     0, 0, false},
    {"AUTH_PORT", M2M_CFG_INT, "9001", "HTTP port of the API", OFF(port), 0, 65535, false},
    {"AUTH_METRICS_ADDR", M2M_CFG_STR, "127.0.0.1",
     "IPv4 address of the internal port (keep it private even when the API is not)",
     OFF(metrics_addr), 0, 0, false},
    {"AUTH_METRICS_PORT", M2M_CFG_INT, "9101",
     "internal port serving /metrics and /health (never exposed by nginx)", OFF(metrics_port), 0,
     65535, false},
    {"AUTH_THREADS", M2M_CFG_INT, "0",
     "HTTP event threads, which never block (0: one per CPU)", OFF(threads), 0, 256, false},
    {"AUTH_BLOCKING_THREADS", M2M_CFG_INT, "4",
     "threads for database and scrypt work; each holds one PostgreSQL connection",
     OFF(blocking_threads), 1, 256, false},
    {"AUTH_DATABASE_URL", M2M_CFG_STR, "host=127.0.0.1 port=5433 dbname=m2m user=auth_service",
     "libpq connection string or URI (use passfile= for the password)", OFF(database_url), 0, 0,
     true},
    {"AUTH_ISSUER", M2M_CFG_STR, "http://localhost:8000",
     "public base URL: the iss claim and the metadata issuer", OFF(issuer), 0, 0, false},
    {"AUTH_DEFAULT_AUDIENCE", M2M_CFG_STR, "http://localhost:8000/api/currency",
     "aud of tokens requested without a resource parameter", OFF(default_audience), 0, 0, false},
    {"AUTH_RESOURCES", M2M_CFG_STR, "",
     "space-separated resource URIs clients may ask for (RFC 8707); the default audience is "
     "always allowed",
     OFF(resources), 0, 0, false},
    {"AUTH_ACCESS_TOKEN_TTL", M2M_CFG_INT, "900",
     "access token lifetime in seconds (a client's own setting wins)", OFF(access_token_ttl), 5,
     86400, false},
    {"AUTH_KEY_DIR", M2M_CFG_STR, "var/auth-keys",
     "directory of the signing keys (created 0700, keys 0600)", OFF(key_dir), 0, 0, false},
    {"AUTH_REGISTRATION_OPEN", M2M_CFG_BOOL, "true",
     "allow POST /api/auth/register without credentials (self-registered clients get only "
     "AUTH_REGISTER_SCOPES)",
     OFF(registration_open), 0, 0, false},
    {"AUTH_REGISTER_SCOPES", M2M_CFG_STR, "currency:read",
     "scopes a self-registered client receives", OFF(register_scopes), 0, 0, false},
    {"AUTH_LOG_LEVEL", M2M_CFG_STR, "info", "debug, info, warn or error", OFF(log_level), 0, 0,
     false},
    {"AUTH_ACCESS_LOG", M2M_CFG_BOOL, "false",
     "log every request (false: only 4xx, 5xx and aborted ones; nginx logs them all)",
     OFF(access_log), 0, 0, false},
    {"AUTH_MAX_BODY", M2M_CFG_INT, "16384", "largest request body in bytes", OFF(max_body), 256,
     1048576, false},
    {"AUTH_CONN_TIMEOUT", M2M_CFG_INT, "30", "idle connection timeout in seconds",
     OFF(conn_timeout), 1, 3600, false},
    {"AUTH_MAX_CONNECTIONS", M2M_CFG_INT, "1024", "concurrent HTTP connections",
     OFF(max_conns), 16, 65536, false},
    {"AUTH_KDF_LOG_N", M2M_CFG_INT, "15", "scrypt cost: N = 2^value (memory = 128 * r * N)",
     OFF(kdf_log_n), 10, 20, false},
    {"AUTH_KDF_PARALLEL", M2M_CFG_INT, "1", "scrypt p parameter", OFF(kdf_parallel), 1, 16,
     false},
    {"AUTH_KDF_CONCURRENCY", M2M_CFG_INT, "2",
     "scrypt computations allowed at once (bounds memory; others wait)", OFF(kdf_concurrency), 1,
     64, false},
    {"AUTH_SECRET_CACHE_SIZE", M2M_CFG_INT, "4096",
     "verified-secret cache slots (0 disables the cache: every request pays scrypt)",
     OFF(secret_cache_size), 0, 1048576, false},
    {"AUTH_CLIENT_CACHE_SIZE", M2M_CFG_INT, "4096",
     "cached client rows (0: every token request reads the database)", OFF(client_cache_size),
     0, 1048576, false},
    {"AUTH_CLIENT_CACHE_TTL", M2M_CFG_INT, "60",
     "seconds a cached client row may live; changes invalidate it at once via NOTIFY",
     OFF(client_cache_ttl), 1, 3600, false},
};

const size_t auth_config_table_len = sizeof(auth_config_table) / sizeof(auth_config_table[0]);

m2m_err auth_config_load(auth_config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    return m2m_config_load(auth_config_table, auth_config_table_len, cfg, errbuf, errlen);
}

void auth_config_free(auth_config *cfg)
{
    m2m_config_free(auth_config_table, auth_config_table_len, cfg);
}
