/* auth-service configuration: one table, read from AUTH_* variables. */
#ifndef AUTH_CONFIG_H
#define AUTH_CONFIG_H

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
    char *database_url;
    char *issuer;
    char *default_audience;
    char *resources;
    long access_token_ttl;
    char *key_dir;
    bool registration_open;
    char *register_scopes;
    char *log_level;
    bool access_log;
    long max_body;
    long conn_timeout;
    long max_conns;
    long kdf_log_n;
    long kdf_parallel;
    long kdf_concurrency;
    long secret_cache_size;
    long client_cache_size;
    long client_cache_ttl;
} auth_config;

extern const m2m_cfg_entry auth_config_table[];
extern const size_t auth_config_table_len;

m2m_err auth_config_load(auth_config *cfg, char *errbuf, size_t errlen);
void auth_config_free(auth_config *cfg);

#endif
