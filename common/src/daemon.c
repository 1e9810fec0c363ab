#include "m2m/daemon.h"

#include "m2m/log.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

static sigset_t stop_signals(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    return s;
}

void m2m_daemon_signals(void)
{
    sigset_t s = stop_signals();
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int m2m_daemon_wait(long ms)
{
    sigset_t s = stop_signals();
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    int sig = sigtimedwait(&s, NULL, &ts);
    return sig == SIGTERM || sig == SIGINT ? sig : 0;
}

int m2m_service_run(const m2m_service *svc)
{
    m2m_http_server *api = NULL, *internal = NULL;
    bool prepared = svc->prepare == NULL;
    int status = 1;

    m2m_http_cfg ic = {.service = svc->api.service,
                       .bind_addr = svc->internal_addr ? svc->internal_addr : "127.0.0.1",
                       .port = svc->internal_port,
                       .threads = 1,
                       .blocking_threads = 1,
                       .conn_timeout = 10,
                       .max_conns = 64,
                       .max_body = 1024,
                       .routes = svc->internal_routes,
                       .nroutes = svc->ninternal,
                       .ctx = svc->api.ctx};
    if (m2m_http_server_start(&svc->api, &api) || m2m_http_server_start(&ic, &internal))
        goto out;
    m2m_log_event(M2M_LOG_INFO, "listening",
                  json_pack("{s:s, s:i, s:i}", "addr", svc->api.bind_addr, "port",
                            (int)m2m_http_server_port(api), "metrics_port",
                            (int)m2m_http_server_port(internal)));
    for (;;) {
        if (!prepared) {
            m2m_err rc = svc->prepare(svc->arg);
            prepared = rc == M2M_OK;
            if (prepared)
                M2M_INFO("ready", "prepared; serving");
            else if (rc != M2M_ERR_DB_UNAVAILABLE)
                M2M_ERROR("prepare_failed", "%s (retrying)", m2m_err_text(rc));
        }
        int sig = m2m_daemon_wait(1000);
        if (sig) {
            M2M_INFO("stopping", "signal %d: finishing in-flight requests", sig);
            break;
        }
    }
    status = 0;
out:
    if (svc->before_stop)
        svc->before_stop(svc->arg);
    m2m_http_server_stop(internal);
    m2m_http_server_stop(api);
    return status;
}
