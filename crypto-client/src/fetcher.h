/* The background fetcher (the seed's background_currency_fetcher): every
 * AGENT_FETCH_INTERVAL seconds it gets all rates through the agent - so the
 * cache stays warm and the token stays fresh - and logs one line per rate. */
#ifndef AGENT_FETCHER_H
#define AGENT_FETCHER_H

#include "m2m/err.h"

typedef struct fetcher fetcher;
typedef struct agent_ctx agent_ctx;

/* Does nothing (and succeeds) when the interval is 0. */
m2m_err fetcher_start(agent_ctx *agent, fetcher **out);
/* Fetch now (new credentials), without waiting for the interval. */
void fetcher_kick(fetcher *f);
/* Stops and frees; NULL is fine. */
void fetcher_stop(fetcher *f);

#endif
