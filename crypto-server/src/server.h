/* The crypto-server process: shared state for handlers and the serve loop. */
#ifndef CURRENCY_SERVER_H
#define CURRENCY_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include "currency_config.h"
#include "m2m/db.h"
#include "m2m/http.h"
#include "m2m/metrics.h"
#include "m2m/verifier.h"
#include "rates.h"
#include "streams.h"
#include "updater.h"

#define CURRENCY_REALM "crypto-server"
#define SCOPE_READ "currency:read"
#define SCOPE_WRITE "currency:write"
#define ROLE_ADMIN "admin"

typedef struct {
    const currency_config *cfg;
    m2m_db *db;
    rates_store *rates;
    streams *subs;
    m2m_verifier *verifier;
    updater *upd;
    m2m_metrics *metrics;
    m2m_counter *tokens_refused;
    m2m_counter *rates_set;
    atomic_bool schema_ready;
} currency_ctx;

void currency_handle_all(m2m_req *req, void *ctx);
void currency_handle_one(m2m_req *req, void *ctx);
void currency_handle_history(m2m_req *req, void *ctx);
void currency_handle_stream(m2m_req *req, void *ctx);
void currency_handle_set(m2m_req *req, void *ctx);
void currency_handle_health(m2m_req *req, void *ctx);
void currency_handle_metrics(m2m_req *req, void *ctx);

int currency_serve(const currency_config *cfg);

#endif
