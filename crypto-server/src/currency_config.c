#include "currency_config.h"

#include <string.h>

#define OFF(f) offsetof(currency_config, f)

const m2m_cfg_entry currency_config_table[] = {
    {"CURRENCY_LISTEN_ADDR", M2M_CFG_STR, "127.0.0.1", "IPv4 address to listen on",
     OFF(listen_addr), 0, 0, false},
    {"CURRENCY_PORT", M2M_CFG_INT, "9002", "HTTP port of the API", OFF(port), 0, 65535, false},
    {"CURRENCY_METRICS_ADDR", M2M_CFG_STR, "127.0.0.1",
     "IPv4 address of the internal port (keep it private even when the API is not)",
     OFF(metrics_addr), 0, 0, false},
    {"CURRENCY_METRICS_PORT", M2M_CFG_INT, "9102",
     "internal port serving /metrics and /health (never exposed by nginx)", OFF(metrics_port), 0,
     65535, false},
    {"CURRENCY_THREADS", M2M_CFG_INT, "0", "HTTP event threads (0: one per CPU)", OFF(threads), 0,
     256, false},
    {"CURRENCY_BLOCKING_THREADS", M2M_CFG_INT, "4",
     "threads for database work; each holds one PostgreSQL connection", OFF(blocking_threads), 1,
     256, false},
    {"CURRENCY_DATABASE_URL", M2M_CFG_STR,
     "host=127.0.0.1 port=5433 dbname=m2m user=currency_service",
     "libpq connection string or URI (use passfile= for the password)", OFF(database_url), 0, 0,
     true},
    {"CURRENCY_JWKS_URL", M2M_CFG_STR, "http://127.0.0.1:9001/api/auth/jwks.json",
     "where the authorization server publishes its keys", OFF(jwks_url), 0, 0, false},
    {"CURRENCY_ISSUER", M2M_CFG_STR, "http://localhost:8000", "required iss of access tokens",
     OFF(issuer), 0, 0, false},
    {"CURRENCY_AUDIENCE", M2M_CFG_STR, "http://localhost:8000/api/currency",
     "this server's resource identifier: required aud", OFF(audience), 0, 0, false},
    {"CURRENCY_LEEWAY", M2M_CFG_INT, "5", "seconds of clock skew allowed on exp/nbf/iat",
     OFF(leeway), 0, 300, false},
    {"CURRENCY_TOKEN_CACHE_SIZE", M2M_CFG_INT, "8192",
     "verified-token cache slots (0: verify the signature on every request)",
     OFF(token_cache_size), 0, 1048576, false},
    {"CURRENCY_TICK_MS", M2M_CFG_INT, "3000", "milliseconds between rate updates", OFF(tick_ms),
     100, 3600000, false},
    {"CURRENCY_MAX_STEP_BP", M2M_CFG_INT, "50",
     "largest move of a rate per tick, in basis points (50 = 0.5%)", OFF(max_step_bp), 0, 1000,
     false},
    {"CURRENCY_HISTORY_RETENTION", M2M_CFG_INT, "86400", "seconds of history kept",
     OFF(history_retention), 60, 31536000, false},
    {"CURRENCY_HISTORY_MAX_LIMIT", M2M_CFG_INT, "1000", "largest ?limit= of a history query",
     OFF(history_max_limit), 1, 100000, false},
    {"CURRENCY_MAX_STREAMS", M2M_CFG_INT, "1000", "concurrent /stream subscribers",
     OFF(max_streams), 0, 100000, false},
    {"CURRENCY_PING_INTERVAL", M2M_CFG_INT, "15",
     "seconds between SSE keep-alive comments (they also find dead peers)", OFF(ping_interval), 1,
     3600, false},
    {"CURRENCY_LOG_LEVEL", M2M_CFG_STR, "info", "debug, info, warn or error", OFF(log_level), 0,
     0, false},
    {"CURRENCY_ACCESS_LOG", M2M_CFG_BOOL, "false",
     "log every request (false: only 4xx, 5xx and aborted ones; nginx logs them all)",
     OFF(access_log), 0, 0, false},
    {"CURRENCY_MAX_BODY", M2M_CFG_INT, "4096", "largest request body in bytes", OFF(max_body),
     256, 1048576, false},
    {"CURRENCY_CONN_TIMEOUT", M2M_CFG_INT, "30", "idle connection timeout in seconds",
     OFF(conn_timeout), 1, 3600, false},
    {"CURRENCY_MAX_CONNECTIONS", M2M_CFG_INT, "4096", "concurrent HTTP connections",
     OFF(max_conns), 16, 65536, false},
};

const size_t currency_config_table_len =
    sizeof(currency_config_table) / sizeof(currency_config_table[0]);

m2m_err currency_config_load(currency_config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    return m2m_config_load(currency_config_table, currency_config_table_len, cfg, errbuf, errlen);
}

void currency_config_free(currency_config *cfg)
{
    m2m_config_free(currency_config_table, currency_config_table_len, cfg);
}
