/* Process plumbing shared by the daemons (design.md §6.6: signals only set
 * flags). SIGTERM and SIGINT are blocked in every thread and taken
 * synchronously by the main loop, so no handler ever runs async code. */
#ifndef M2M_DAEMON_H
#define M2M_DAEMON_H

/* Call before any thread starts: blocks SIGTERM/SIGINT (threads inherit the
 * mask) and ignores SIGPIPE. */
void m2m_daemon_signals(void);
/* Waits up to ms milliseconds for SIGTERM or SIGINT; returns the signal
 * number, or 0 when the time passed. */
int m2m_daemon_wait(long ms);

#endif
