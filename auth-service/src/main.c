/* auth-service: the OAuth2 authorization server (design.md §1). */
#include <stdio.h>
#include <string.h>

#include "auth_config.h"
#include "m2m/log.h"
#include "server.h"

int main(int argc, char **argv)
{
    auth_config cfg;
    char err[256];
    int status;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("auth-service: OAuth2 authorization server for machine clients\n\n"
               "usage: auth-service [serve | migrate | client create ...]\n\n"
               "Configuration (environment variables):\n");
        m2m_config_print_help(stdout, auth_config_table, auth_config_table_len);
        return 0;
    }
    if (auth_config_load(&cfg, err, sizeof(err))) {
        fprintf(stderr, "auth-service: configuration: %s\n", err);
        return 2;
    }
    int level = m2m_log_level_parse(cfg.log_level);
    if (level < 0) {
        fprintf(stderr, "auth-service: configuration: AUTH_LOG_LEVEL: expected debug, info, "
                        "warn or error\n");
        auth_config_free(&cfg);
        return 2;
    }
    m2m_log_init("auth-service", (m2m_log_level)level);
    if (argc == 1 || strcmp(argv[1], "serve") == 0)
        status = auth_serve(&cfg);
    else
        status = auth_cli(&cfg, argc - 1, argv + 1);
    auth_config_free(&cfg);
    return status;
}
