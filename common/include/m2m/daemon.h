/* Process plumbing shared by the daemons (design.md §6.6: signals only set
 * flags). SIGTERM and SIGINT are blocked in every thread and taken
 * synchronously by the main loop, so no handler ever runs async code. */
#ifndef M2M_DAEMON_H
#define M2M_DAEMON_H

#include <stddef.h>
#include "m2m/err.h"
#include "m2m/http.h"

/* Call before any thread starts: blocks SIGTERM/SIGINT (threads inherit the
 * mask) and ignores SIGPIPE. */
void m2m_daemon_signals(void);
/* Waits up to ms milliseconds for SIGTERM or SIGINT; returns the signal
 * number, or 0 when the time passed. */
int m2m_daemon_wait(long ms);

/* A daemon's serving life: its API server, an internal server for /metrics
 * and /health on another port (same address), a preparation step retried
 * every second until it succeeds (migrations: the database may come up
 * after the daemon), and an orderly stop on SIGTERM/SIGINT. */
typedef struct {
    m2m_http_cfg api; /* its ctx is also the internal routes' ctx */
    const m2m_route *internal_routes;
    size_t ninternal;
    const char *internal_addr; /* loopback unless the operator says otherwise */
    unsigned internal_port;
    m2m_err (*prepare)(void *arg);   /* NULL: nothing to prepare */
    void (*before_stop)(void *arg);  /* e.g. end streams; may be NULL */
    void *arg;
} m2m_service;

/* Call m2m_daemon_signals() first. Returns 0 after a signal, 1 when a
 * server could not start. */
int m2m_service_run(const m2m_service *svc);

#endif
