#include "server.h"

#include <string.h>

#include "agent.h"
#include "fetcher.h"
#include "handlers.h"
#include "m2m/daemon.h"
#include "m2m/log.h"

/* Literal routes come before "*" ones: the first match wins. */
static const m2m_route api_routes[] = {
    {"POST", "/api/configure", agent_handle_configure, 0},
    {"POST", "/api/register", agent_handle_register, 0},
    {"POST", "/api/login", agent_handle_login, 0},
    {"GET", "/api/status", agent_handle_status, 0},
    {"GET", "/api/health", agent_handle_health, 0},
    {"GET", "/api/currencies", agent_handle_currencies, 0},
    {"GET", "/api/currencies/*", agent_handle_currency, 0},
};

static const m2m_route internal_routes[] = {
    {"GET", "/metrics", agent_handle_metrics, 0},
    {"GET", "/health", agent_handle_health, 0},
};

/* The fetcher stops first: no calls on behalf of nobody while draining. */
static void before_stop(void *arg)
{
    agent_ctx *a = arg;
    fetcher_stop(a->fetch);
    a->fetch = NULL;
}

int agent_serve(const agent_config *cfg)
{
    agent_ctx a;
    char err[512];
    int status = 1;

    m2m_daemon_signals(); /* before the fetcher thread starts */
    m2m_err rc = agent_init(&a, cfg, err, sizeof(err));
    if (rc) {
        M2M_ERROR("startup_failed", "%s", err);
        status = rc == M2M_ERR_CONFIG ? 2 : 1; /* 2: a configuration error, like main() */
        goto out;
    }
    m2m_service svc = {
        .api = {.service = "crypto-client",
                .bind_addr = cfg->listen_addr,
                .port = (unsigned)cfg->port,
                .threads = (unsigned)cfg->threads,
                .blocking_threads = (unsigned)cfg->blocking_threads,
                .conn_timeout = (unsigned)cfg->conn_timeout,
                .max_conns = (unsigned)cfg->max_conns,
                .max_body = (size_t)cfg->max_body,
                .metrics = a.metrics,
                .access_log = cfg->access_log,
                .routes = api_routes,
                .nroutes = sizeof(api_routes) / sizeof(api_routes[0]),
                .ctx = &a},
        .internal_routes = internal_routes,
        .ninternal = sizeof(internal_routes) / sizeof(internal_routes[0]),
        .internal_addr = cfg->metrics_addr,
        .internal_port = (unsigned)cfg->metrics_port,
        .before_stop = before_stop,
        .arg = &a,
    };
    status = m2m_service_run(&svc);
out:
    agent_free(&a);
    M2M_INFO("stopped", "exit %d", status);
    return status;
}
