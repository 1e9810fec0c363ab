/* crypto-client configuration: one table, read from AGENT_* variables. The
 * credentials given here are the defaults; POST /api/configure overrides
 * them and persists the override in the state file. */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "m2m/config.h"

typedef struct {
    char *listen_addr;
    long port;
    char *metrics_addr;
    long metrics_port;
    long threads;
    long blocking_threads;
    char *server_url;
    char *token_url;
    char *register_url;
    char *currency_url;
    char *client_id;
    char *client_secret;
    char *app_name;
    char *scope;
    char *resource;
    char *state_file;
    long fetch_interval;
    long renew_percent;
    long renew_skew;
    long backoff_min_ms;
    long backoff_max_ms;
    long upstream_timeout_ms;
    char *log_level;
    bool access_log;
    long max_body;
    long conn_timeout;
    long max_conns;
} agent_config;

extern const m2m_cfg_entry agent_config_table[];
extern const size_t agent_config_table_len;

m2m_err agent_config_load(agent_config *cfg, char *errbuf, size_t errlen);
void agent_config_free(agent_config *cfg);

#endif
