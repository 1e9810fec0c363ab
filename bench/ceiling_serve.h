/* What every ceiling server shares: argument parsing and the serving loop
 * (MHD with an internal polling thread + epoll and a thread pool, bound to
 * 127.0.0.1, "port N" on stdout, stop on SIGINT/SIGTERM). Each ceiling
 * brings only its request handler. */
#ifndef BENCH_CEILING_SERVE_H
#define BENCH_CEILING_SERVE_H

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_uint(const char *s, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Serves until SIGINT/SIGTERM; 0 on a clean stop, 1 if it cannot listen. */
static int ceiling_serve(const char *prog, long port, long threads,
                         MHD_AccessHandlerCallback handle)
{
    struct sockaddr_in addr;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    sigset_t set;
    int sig;

    /* Block the stop signals in every thread (MHD's inherit the mask); we wait. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
                         (uint16_t)port, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
                         (unsigned int)threads, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned int)1024, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "%s: cannot start the server on 127.0.0.1:%ld\n", prog, port);
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", info ? (unsigned int)info->port : (unsigned int)port);
    fflush(stdout);

    if (sigwait(&set, &sig) == 0)
        fprintf(stderr, "%s: signal %d, stopping\n", prog, sig);
    MHD_stop_daemon(d);
    return 0;
}

#endif
