/* The agent: its settings, its token manager, the cache of the last good
 * data, and the calls it makes to the auth-service and the crypto-server on
 * a caller's behalf. Handlers and the background fetcher share it. */
#ifndef AGENT_H
#define AGENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <jansson.h>
#include "agent_config.h"
#include "cache.h"
#include "m2m/metrics.h"
#include "m2m/tokens.h"
#include "settings.h"

typedef struct fetcher fetcher;
typedef struct agent_ctx agent_ctx;

struct agent_ctx {
    const agent_config *cfg;
    m2m_metrics *metrics;
    m2m_counter *stale_served, *upstream_failures, *registrations;
    agent_cache *cache;
    fetcher *fetch;

    pthread_mutex_t save_mu; /* held by whoever changes the settings (file, then memory) */
    pthread_mutex_t mu;      /* settings, tokens, upstream_ok: short holds only */
    agent_settings settings;
    m2m_tokens *tokens; /* NULL until a client id and secret are known */
    bool upstream_ok;   /* the last call to the crypto-server succeeded */
    char upstream_error[320];
};

m2m_err agent_init(agent_ctx *a, const agent_config *cfg, char *errbuf, size_t errlen);
void agent_free(agent_ctx *a);

/* POST /api/configure: validated by the caller; persisted, then applied. */
m2m_err agent_configure(agent_ctx *a, const agent_settings *s, char *errbuf, size_t errlen);

/* What a call on the caller's behalf produced: the error to answer with (or
 * M2M_OK), and a description naming the cause. */
typedef struct {
    m2m_err rc;
    char desc[320];
} agent_outcome;

/* POST /api/register: registers the configured client at the auth-service;
 * a secret the auth-service generated is kept. On success *reply gets the
 * auth-service's answer without the secret. */
agent_outcome agent_register(agent_ctx *a, json_t **reply);
/* POST /api/login: a new token now. */
agent_outcome agent_login(agent_ctx *a, m2m_tokens_status *st);
/* GET /api/currencies[/SYM] (sym NULL: all): fresh data from the
 * crypto-server, stored in the cache; *body gets its JSON text. On failure
 * the outcome says why (and the caller may answer from the cache). */
agent_outcome agent_fetch(agent_ctx *a, const char *sym, char **body);

/* Snapshot for /api/status and /api/health. */
typedef struct {
    bool configured, has_secret;
    char client_id[AGENT_CLIENT_ID_MAX + 1];
    char server_url[AGENT_URL_MAX + 1];
    bool has_tokens;
    m2m_tokens_status tokens;
    bool upstream_ok;
    char upstream_error[320];
} agent_snapshot;
void agent_snapshot_get(agent_ctx *a, agent_snapshot *out);

#endif
