#include "fetcher.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "m2m/log.h"

struct fetcher {
    agent_ctx *agent;
    long interval_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, kicked;
    pthread_t thread;
};

/* One line per rate: {"event":"rate","symbol":"BTC","rate":"43250.12",...},
 * the rate as the server's exact text. */
static m2m_err log_rate(const char *el, size_t n, void *arg)
{
    size_t sn = 0, rn = 0, un = 0;
    const char *sym = agent_json_member(el, n, "symbol", &sn);
    const char *rate = agent_json_member(el, n, "rate", &rn);
    const char *upd = agent_json_member(el, n, "last_updated", &un);
    (void)arg;
    if (!sym || !rate || sn < 2)
        return M2M_OK;
    /* strings come with their quotes; the rate is a bare number */
    json_t *fields = json_pack("{s:s%, s:s%, s:s%}", "symbol", sym + 1, sn - 2, "rate", rate, rn,
                               "last_updated", upd && un >= 2 ? upd + 1 : "",
                               upd && un >= 2 ? un - 2 : (size_t)0);
    if (fields)
        m2m_log_event(M2M_LOG_INFO, "rate", fields); /* consumes fields */
    return M2M_OK;
}

static void fetch_once(fetcher *f, bool *was_ok)
{
    char *body = NULL;
    agent_outcome o = agent_fetch(f->agent, NULL, &body);
    if (o.rc == M2M_OK) {
        if (m2m_log_enabled(M2M_LOG_INFO))
            agent_json_elements(body, strlen(body), log_rate, NULL);
        if (!*was_ok)
            M2M_INFO("fetch_recovered", "the crypto-server answers again");
        *was_ok = true;
    } else if (o.rc != M2M_ERR_NOT_CONFIGURED) {
        /* the first failure is a warning, its repeats debug: no log flood */
        if (*was_ok)
            M2M_WARN("fetch_failed", "%s", o.desc);
        else
            M2M_DEBUG("fetch_failed", "%s", o.desc);
        *was_ok = false;
    }
    free(body);
}

static void *fetch_loop(void *arg)
{
    fetcher *f = arg;
    bool was_ok = true;
    struct timespec next;

    pthread_mutex_lock(&f->mu);
    while (!f->stopping) {
        f->kicked = false;
        pthread_mutex_unlock(&f->mu);
        fetch_once(f, &was_ok);
        pthread_mutex_lock(&f->mu);
        clock_gettime(CLOCK_MONOTONIC, &next);
        next.tv_sec += f->interval_s;
        while (!f->stopping && !f->kicked &&
               pthread_cond_timedwait(&f->cv, &f->mu, &next) == 0)
            ;
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

m2m_err fetcher_start(agent_ctx *a, fetcher **out)
{
    pthread_condattr_t ca;
    fetcher *f;

    *out = NULL;
    if (a->cfg->fetch_interval <= 0)
        return M2M_OK;
    f = calloc(1, sizeof(*f));
    if (!f)
        return M2M_ERR_NOMEM;
    f->agent = a;
    f->interval_s = a->cfg->fetch_interval;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&f->thread, NULL, fetch_loop, f) != 0) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return M2M_ERR_NOMEM;
    }
    *out = f;
    return M2M_OK;
}

void fetcher_kick(fetcher *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->kicked = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void fetcher_stop(fetcher *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
