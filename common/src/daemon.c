#include "m2m/daemon.h"

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
