/* Prometheus text metrics: per-route request counters by status and a latency
 * histogram, plus named counters. Updates are lock-free atomics so the hot
 * path pays a few nanoseconds. */
#ifndef M2M_METRICS_H
#define M2M_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "m2m/buf.h"

#define M2M_METRICS_MAX_ROUTES 64
#define M2M_METRICS_MAX_COUNTERS 32
#define M2M_METRICS_LAT_BUCKETS 12

typedef struct m2m_metrics m2m_metrics;
typedef struct {
    const char *name; /* e.g. auth_tokens_issued_total */
    const char *help;
    atomic_uint_fast64_t value;
} m2m_counter;

m2m_metrics *m2m_metrics_new(const char *prefix);
void m2m_metrics_free(m2m_metrics *m);
/* Registers a route label; returns its index (or -1 when full). */
int m2m_metrics_route(m2m_metrics *m, const char *route);
void m2m_metrics_observe(m2m_metrics *m, int route, int status, double seconds);
/* Registers a named counter (name and help must outlive m). */
m2m_counter *m2m_metrics_counter(m2m_metrics *m, const char *name, const char *help);
static inline void m2m_counter_add(m2m_counter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
m2m_err m2m_metrics_render(m2m_metrics *m, m2m_buf *out);

#endif
