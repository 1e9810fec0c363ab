#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2m/daemon.h"
#include "m2m/log.h"

extern const m2m_migration currency_migrations[];
extern const size_t currency_migrations_count;

/* Literal routes come before "*" ones: the first match wins. */
static const m2m_route api_routes[] = {
    {"GET", "/api/currency/", currency_handle_all, 0},
    {"GET", "/api/currency", currency_handle_all, 0},
    {"GET", "/api/currency/health", currency_handle_health, 0},
    {"GET", "/api/currency/stream", currency_handle_stream, 0},
    {"GET", "/api/currency/*/history", currency_handle_history, 0},
    {"GET", "/api/currency/*", currency_handle_one, 0},
    {"PUT", "/api/currency/*", currency_handle_set, 0},
};

static const m2m_route internal_routes[] = {
    {"GET", "/metrics", currency_handle_metrics, 0},
    {"GET", "/health", currency_handle_health, 0},
};

static m2m_err ctx_init(currency_ctx *ctx, const currency_config *cfg)
{
    m2m_err rc;

    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = cfg;
    ctx->metrics = m2m_metrics_new("currency");
    ctx->rates = rates_new();
    ctx->subs = streams_new((size_t)cfg->max_streams);
    if (!ctx->metrics || !ctx->rates || !ctx->subs)
        return M2M_ERR_NOMEM;
    ctx->tokens_refused = m2m_metrics_counter(ctx->metrics, "currency_tokens_refused_total",
                                              "Requests refused for their bearer token.");
    ctx->rates_set =
        m2m_metrics_counter(ctx->metrics, "currency_rates_set_total", "Rates set by admins.");
    rc = m2m_db_open(cfg->database_url, &ctx->db);
    if (rc)
        return rc;
    m2m_verifier_cfg vc = {.jwks_url = cfg->jwks_url,
                           .issuer = cfg->issuer,
                           .audience = cfg->audience,
                           .typ = "at+jwt",
                           .leeway = cfg->leeway,
                           .cache_slots = (size_t)cfg->token_cache_size};
    rc = m2m_verifier_new(&vc, &ctx->verifier);
    if (rc)
        return rc;
    return updater_start(cfg, ctx->rates, ctx->subs, &ctx->schema_ready, &ctx->upd);
}

static void ctx_free(currency_ctx *ctx)
{
    updater_free(ctx->upd);
    m2m_verifier_free(ctx->verifier);
    streams_free(ctx->subs);
    m2m_db_close(ctx->db);
    rates_free(ctx->rates);
    m2m_metrics_free(ctx->metrics);
    memset(ctx, 0, sizeof(*ctx));
}

static m2m_err prepare(void *arg)
{
    currency_ctx *ctx = arg;
    m2m_err rc =
        m2m_db_migrate(ctx->db, "currency", currency_migrations, currency_migrations_count);
    if (!rc)
        atomic_store(&ctx->schema_ready, true); /* the updater starts moving rates */
    return rc;
}

/* The updater stops broadcasting, then streams end so their suspended
 * connections resume and finish before the servers stop. */
static void before_stop(void *arg)
{
    currency_ctx *ctx = arg;
    updater_stop(ctx->upd);
    if (ctx->subs)
        streams_close_all(ctx->subs);
}

int currency_serve(const currency_config *cfg)
{
    currency_ctx ctx;
    int status = 1;
    m2m_err rc;

    m2m_daemon_signals();
    rc = ctx_init(&ctx, cfg);
    if (rc) {
        M2M_ERROR("startup_failed", "cannot initialise: %s", m2m_err_text(rc));
        goto out;
    }
    m2m_service svc = {
        .api = {.service = "crypto-server",
                .bind_addr = cfg->listen_addr,
                .port = (unsigned)cfg->port,
                .threads = (unsigned)cfg->threads,
                .blocking_threads = (unsigned)cfg->blocking_threads,
                .conn_timeout = (unsigned)cfg->conn_timeout,
                .max_conns = (unsigned)cfg->max_conns,
                .max_body = (size_t)cfg->max_body,
                .metrics = ctx.metrics,
                .access_log = cfg->access_log,
                .routes = api_routes,
                .nroutes = sizeof(api_routes) / sizeof(api_routes[0]),
                .ctx = &ctx},
        .internal_routes = internal_routes,
        .ninternal = sizeof(internal_routes) / sizeof(internal_routes[0]),
        .internal_addr = cfg->metrics_addr,
        .internal_port = (unsigned)cfg->metrics_port,
        .prepare = prepare,
        .before_stop = before_stop,
        .arg = &ctx};
    status = m2m_service_run(&svc);
out:
    before_stop(&ctx);
    ctx_free(&ctx);
    M2M_INFO("stopped", "exit %d", status);
    return status;
}
