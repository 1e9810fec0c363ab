/* crypto-client: the OAuth2 client agent (design.md §1). */
#include <stdio.h>
#include <string.h>

#include "agent_config.h"
#include "m2m/httpc.h"
#include "m2m/log.h"
#include "server.h"

int main(int argc, char **argv)
{
    agent_config cfg;
    char err[256];

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("crypto-client: OAuth2 client agent for the currency API\n\n"
               "Configuration (environment variables):\n");
        m2m_config_print_help(stdout, agent_config_table, agent_config_table_len);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: crypto-client [--help]\n");
        return 2;
    }
    if (agent_config_load(&cfg, err, sizeof(err))) {
        fprintf(stderr, "crypto-client: configuration: %s\n", err);
        return 2;
    }
    int level = m2m_log_level_parse(cfg.log_level);
    if (level < 0) {
        fprintf(stderr, "crypto-client: configuration: AGENT_LOG_LEVEL: expected debug, info, "
                        "warn or error\n");
        agent_config_free(&cfg);
        return 2;
    }
    m2m_log_init("crypto-client", (m2m_log_level)level);
    if (m2m_httpc_global_init()) { /* libcurl, before any thread */
        fprintf(stderr, "crypto-client: cannot initialise libcurl\n");
        agent_config_free(&cfg);
        return 1;
    }
    int status = agent_serve(&cfg);
    m2m_httpc_global_cleanup();
    agent_config_free(&cfg);
    return status;
}
