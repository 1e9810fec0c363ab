/*
 * bench-ceiling-json: the ceiling for any HTTP JSON reply on this machine.
 *
 * A bare libmicrohttpd server that answers every GET with one fixed JSON body
 * of about 100 bytes, shaped like crypto-server's GET /api/currency/{SYM}
 * reply, and nothing else: no routing, no token, no JSON library, no
 * logging. crypto-server's reused-token figure is measured against this (see
 * bench/README.md).
 *
 * Usage: bench-ceiling-json PORT [THREADS]
 *   PORT     TCP port on 127.0.0.1; 0 picks a free one.
 *   THREADS  MHD worker threads; default: number of online CPUs.
 * Prints "port N" on stdout once listening; runs until SIGINT/SIGTERM.
 *
 * Per request: nothing on the first handler call (headers only: libmicrohttpd
 * 0.9.75 closes the connection when a response is queued then, design.md §7),
 * then on the next one a response over the static body with a Content-Type
 * header, created, queued and released, as a real handler whose body changes
 * would do. Any other method gets 405.
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ceiling_serve.h"

static const char g_body[] = "{\"symbol\":\"BTC\",\"name\":\"Bitcoin\",\"rate\":67250.12,"
                             "\"last_updated\":\"2026-11-22T10:00:00.000Z\"}";

/* A marker for "headers seen". Stateless otherwise. */
static int g_seen;

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *body,
                             size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;

    /* The bodies are static: no copy. */
    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    (void)upload_data;

    /* First call: headers only. Queuing now would close the connection. */
    if (*con_cls == NULL) {
        *con_cls = &g_seen;
        return MHD_YES;
    }
    /* A body (there should be none on a GET): read and discard. */
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        static const char e[] = "{\"error\":\"method_not_allowed\"}";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, e, sizeof e - 1);
    }
    return reply(conn, MHD_HTTP_OK, g_body, sizeof g_body - 1);
}

int main(int argc, char **argv)
{
    long port, threads;

    if (argc < 2 || argc > 3 || parse_uint(argv[1], 65535, &port)) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    if (argc == 3 && (parse_uint(argv[2], 256, &threads) || threads < 1)) {
        fprintf(stderr, "%s: THREADS must be 1..256\n", argv[0]);
        return 2;
    }

    return ceiling_serve(argv[0], port, threads, handle);
}
