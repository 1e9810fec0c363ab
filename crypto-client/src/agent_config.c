#include "agent_config.h"

#include <string.h>

#define OFF(f) offsetof(agent_config, f)

const m2m_cfg_entry agent_config_table[] = {
    {"AGENT_LISTEN_ADDR", M2M_CFG_STR, "127.0.0.1", "IPv4 address to listen on",
     OFF(listen_addr), 0, 0, false},
    {"AGENT_PORT", M2M_CFG_INT, "9003", "HTTP port of the agent's API", OFF(port), 0, 65535,
     false},
    {"AGENT_METRICS_ADDR", M2M_CFG_STR, "127.0.0.1",
     "IPv4 address of the internal port (keep it private even when the API is not)",
     OFF(metrics_addr), 0, 0, false},
    {"AGENT_METRICS_PORT", M2M_CFG_INT, "9103",
     "internal port serving /metrics and /health (never exposed by nginx)", OFF(metrics_port), 0,
     65535, false},
    {"AGENT_THREADS", M2M_CFG_INT, "0", "HTTP event threads (0: one per CPU)", OFF(threads), 0,
     256, false},
    {"AGENT_BLOCKING_THREADS", M2M_CFG_INT, "8",
     "threads for calls to the auth-service and the crypto-server", OFF(blocking_threads), 1, 256,
     false},
    {"AGENT_SERVER_URL", M2M_CFG_STR, "http://127.0.0.1:8000",
     "base URL of the suite (nginx); POST /api/configure may change it", OFF(server_url), 0, 0,
     false},
    {"AGENT_TOKEN_URL", M2M_CFG_STR, "",
     "token endpoint (empty: <server_url>/api/auth/token)", OFF(token_url), 0, 0, false},
    {"AGENT_REGISTER_URL", M2M_CFG_STR, "",
     "registration endpoint (empty: <server_url>/api/auth/register)", OFF(register_url), 0, 0,
     false},
    {"AGENT_CURRENCY_URL", M2M_CFG_STR, "",
     "currency API (empty: <server_url>/api/currency)", OFF(currency_url), 0, 0, false},
    {"AGENT_CLIENT_ID", M2M_CFG_STR, "",
     "client id used until POST /api/configure sets one (empty: unconfigured)", OFF(client_id),
     0, 0, false},
    {"AGENT_CLIENT_SECRET", M2M_CFG_STR, "",
     "its secret (empty: POST /api/register has the auth-service generate one)",
     OFF(client_secret), 0, 0, true},
    {"AGENT_APP_NAME", M2M_CFG_STR, "crypto-client", "app_name sent when registering",
     OFF(app_name), 0, 0, false},
    {"AGENT_SCOPE", M2M_CFG_STR, "currency:read", "scope requested with every token",
     OFF(scope), 0, 0, false},
    {"AGENT_RESOURCE", M2M_CFG_STR, "",
     "RFC 8707 resource requested with every token (empty: the server's default audience)",
     OFF(resource), 0, 0, false},
    {"AGENT_STATE_FILE", M2M_CFG_STR, "var/agent/state.json",
     "where POST /api/configure persists credentials (created 0600)", OFF(state_file), 0, 0,
     false},
    {"AGENT_FETCH_INTERVAL", M2M_CFG_INT, "10",
     "seconds between background fetches of all rates (0: no background fetch)",
     OFF(fetch_interval), 0, 86400, false},
    {"AGENT_RENEW_PERCENT", M2M_CFG_INT, "80",
     "renew a token at this share of its lifetime (or AGENT_RENEW_SKEW before exp, if earlier)",
     OFF(renew_percent), 10, 100, false},
    {"AGENT_RENEW_SKEW", M2M_CFG_INT, "30", "seconds before exp a token is renewed at the latest",
     OFF(renew_skew), 0, 3600, false},
    {"AGENT_BACKOFF_MIN_MS", M2M_CFG_INT, "500",
     "first wait after a failed token request (doubles, with jitter)", OFF(backoff_min_ms), 10,
     600000, false},
    {"AGENT_BACKOFF_MAX_MS", M2M_CFG_INT, "30000", "longest wait between failed token requests",
     OFF(backoff_max_ms), 10, 3600000, false},
    {"AGENT_UPSTREAM_TIMEOUT_MS", M2M_CFG_INT, "5000",
     "time allowed for each call to the auth-service or the crypto-server",
     OFF(upstream_timeout_ms), 100, 120000, false},
    {"AGENT_LOG_LEVEL", M2M_CFG_STR, "info", "debug, info, warn or error", OFF(log_level), 0, 0,
     false},
    {"AGENT_ACCESS_LOG", M2M_CFG_BOOL, "false",
     "log every request (false: only 4xx, 5xx and aborted ones; nginx logs them all)",
     OFF(access_log), 0, 0, false},
    {"AGENT_MAX_BODY", M2M_CFG_INT, "4096", "largest request body in bytes", OFF(max_body), 256,
     1048576, false},
    {"AGENT_CONN_TIMEOUT", M2M_CFG_INT, "30", "idle connection timeout in seconds",
     OFF(conn_timeout), 1, 3600, false},
    {"AGENT_MAX_CONNECTIONS", M2M_CFG_INT, "1024", "concurrent HTTP connections",
     OFF(max_conns), 16, 65536, false},
};

const size_t agent_config_table_len = sizeof(agent_config_table) / sizeof(agent_config_table[0]);

m2m_err agent_config_load(agent_config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    return m2m_config_load(agent_config_table, agent_config_table_len, cfg, errbuf, errlen);
}

void agent_config_free(agent_config *cfg)
{
    m2m_config_free(agent_config_table, agent_config_table_len, cfg);
}
