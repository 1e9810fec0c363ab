/* The crypto-client process: the agent behind its HTTP API. */
#ifndef AGENT_SERVER_H
#define AGENT_SERVER_H

#include "agent_config.h"

/* Runs until SIGTERM/SIGINT; the exit status. */
int agent_serve(const agent_config *cfg);

#endif
