/* crypto-server: the protected currency-rates API (design.md §1). */
#include <stdio.h>
#include <string.h>

#include "currency_config.h"
#include "m2m/httpc.h"
#include "m2m/log.h"
#include "server.h"

int main(int argc, char **argv)
{
    currency_config cfg;
    char err[256];

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("crypto-server: protected cryptocurrency-rates API\n\n"
               "Configuration (environment variables):\n");
        m2m_config_print_help(stdout, currency_config_table, currency_config_table_len);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: crypto-server [--help]\n");
        return 2;
    }
    if (currency_config_load(&cfg, err, sizeof(err))) {
        fprintf(stderr, "crypto-server: configuration: %s\n", err);
        return 2;
    }
    int level = m2m_log_level_parse(cfg.log_level);
    if (level < 0) {
        fprintf(stderr, "crypto-server: configuration: CURRENCY_LOG_LEVEL: expected debug, "
                        "info, warn or error\n");
        currency_config_free(&cfg);
        return 2;
    }
    m2m_log_init("crypto-server", (m2m_log_level)level);
    if (m2m_httpc_global_init()) { /* libcurl, before any thread: the JWKS fetcher */
        fprintf(stderr, "crypto-server: cannot initialise libcurl\n");
        currency_config_free(&cfg);
        return 1;
    }
    int status = currency_serve(&cfg);
    m2m_httpc_global_cleanup();
    currency_config_free(&cfg);
    return status;
}
