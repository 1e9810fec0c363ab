/* crypto-server configuration: one table, read from CURRENCY_* variables. */
#ifndef CURRENCY_CONFIG_H
#define CURRENCY_CONFIG_H

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
    char *jwks_url;
    char *issuer;
    char *audience;
    long leeway;
    long token_cache_size;
    long tick_ms;
    long max_step_bp; /* basis points: 50 = 0.5% */
    long history_retention;
    long history_max_limit;
    long max_streams;
    long ping_interval;
    char *log_level;
    bool access_log;
    long max_body;
    long conn_timeout;
    long max_conns;
} currency_config;

extern const m2m_cfg_entry currency_config_table[];
extern const size_t currency_config_table_len;

m2m_err currency_config_load(currency_config *cfg, char *errbuf, size_t errlen);
void currency_config_free(currency_config *cfg);

#endif
