#include "m2m/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Status codes we count individually; anything else lands in "other". */
static const int tracked_status[] = {200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429,
                                     431, 500, 502, 503, 504};
#define NSTATUS (sizeof(tracked_status) / sizeof(tracked_status[0]) + 1)

static const double lat_bounds[M2M_METRICS_LAT_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

typedef struct {
    const char *label;
    atomic_uint_fast64_t by_status[NSTATUS];
    atomic_uint_fast64_t lat[M2M_METRICS_LAT_BUCKETS]; /* non-cumulative */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
} route_metrics;

struct m2m_metrics {
    const char *prefix;
    route_metrics routes[M2M_METRICS_MAX_ROUTES];
    atomic_int nroutes;
    m2m_counter counters[M2M_METRICS_MAX_COUNTERS];
    atomic_int ncounters;
};

m2m_metrics *m2m_metrics_new(const char *prefix)
{
    m2m_metrics *m = calloc(1, sizeof(*m));
    if (m)
        m->prefix = prefix;
    return m;
}

void m2m_metrics_free(m2m_metrics *m)
{
    free(m);
}

/* Registration happens before the server threads start. */
int m2m_metrics_route(m2m_metrics *m, const char *route)
{
    int n = atomic_load(&m->nroutes);
    for (int i = 0; i < n; i++)
        if (strcmp(m->routes[i].label, route) == 0)
            return i;
    if (n >= M2M_METRICS_MAX_ROUTES)
        return -1;
    m->routes[n].label = route;
    atomic_store(&m->nroutes, n + 1);
    return n;
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i < NSTATUS - 1; i++)
        if (tracked_status[i] == status)
            return i;
    return NSTATUS - 1;
}

void m2m_metrics_observe(m2m_metrics *m, int route, int status, double seconds)
{
    if (!m || route < 0 || route >= atomic_load(&m->nroutes))
        return;
    route_metrics *r = &m->routes[route];
    atomic_fetch_add_explicit(&r->by_status[status_slot(status)], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < M2M_METRICS_LAT_BUCKETS - 1 && seconds > lat_bounds[b])
        b++;
    if (seconds <= lat_bounds[b])
        atomic_fetch_add_explicit(&r->lat[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

m2m_counter *m2m_metrics_counter(m2m_metrics *m, const char *name, const char *help)
{
    int n = atomic_load(&m->ncounters);
    /* One name, one series: Prometheus rejects a second # TYPE line. */
    for (int i = 0; i < n; i++)
        if (strcmp(m->counters[i].name, name) == 0)
            return &m->counters[i];
    if (n >= M2M_METRICS_MAX_COUNTERS)
        return NULL;
    m->counters[n].name = name;
    m->counters[n].help = help;
    atomic_store(&m->counters[n].value, 0);
    atomic_store(&m->ncounters, n + 1);
    return &m->counters[n];
}

m2m_err m2m_metrics_render(m2m_metrics *m, m2m_buf *out)
{
    m2m_err rc = M2M_OK;
    const char *p = m->prefix;
    int nroutes = atomic_load(&m->nroutes);

    rc = m2m_buf_appendf(out,
                         "# HELP %s_http_requests_total HTTP requests by route and status.\n"
                         "# TYPE %s_http_requests_total counter\n",
                         p, p);
    if (rc)
        goto out;
    for (int i = 0; i < nroutes; i++) {
        route_metrics *r = &m->routes[i];
        for (size_t s = 0; s < NSTATUS; s++) {
            uint64_t v = atomic_load_explicit(&r->by_status[s], memory_order_relaxed);
            if (!v)
                continue;
            char status[8];
            if (s < NSTATUS - 1)
                snprintf(status, sizeof(status), "%d", tracked_status[s]);
            else
                snprintf(status, sizeof(status), "other");
            rc = m2m_buf_appendf(out, "%s_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                                 p, r->label, status, (unsigned long long)v);
            if (rc)
                goto out;
        }
    }
    rc = m2m_buf_appendf(out,
                         "# HELP %s_http_request_duration_seconds Time from request to reply.\n"
                         "# TYPE %s_http_request_duration_seconds histogram\n",
                         p, p);
    if (rc)
        goto out;
    for (int i = 0; i < nroutes; i++) {
        route_metrics *r = &m->routes[i];
        uint64_t count = atomic_load_explicit(&r->count, memory_order_relaxed);
        if (!count)
            continue;
        uint64_t cum = 0;
        for (size_t b = 0; b < M2M_METRICS_LAT_BUCKETS; b++) {
            cum += atomic_load_explicit(&r->lat[b], memory_order_relaxed);
            rc = m2m_buf_appendf(out,
                                 "%s_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                                 "%llu\n",
                                 p, r->label, lat_bounds[b], (unsigned long long)cum);
            if (rc)
                goto out;
        }
        rc = m2m_buf_appendf(
            out,
            "%s_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
            "%s_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
            "%s_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
            p, r->label, (unsigned long long)count, p, r->label,
            (double)atomic_load_explicit(&r->sum_us, memory_order_relaxed) / 1e6, p, r->label,
            (unsigned long long)count);
        if (rc)
            goto out;
    }
    int ncounters = atomic_load(&m->ncounters);
    for (int i = 0; i < ncounters; i++) {
        m2m_counter *c = &m->counters[i];
        rc = m2m_buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", c->name, c->help,
                             c->name, c->name,
                             (unsigned long long)atomic_load_explicit(&c->value,
                                                                      memory_order_relaxed));
        if (rc)
            goto out;
    }
out:
    return rc;
}
