/* HTTP server scaffolding over libmicrohttpd: a route table, capped bodies,
 * timeouts and connection limits, request ids, JSON replies from the error
 * table, an access log line and metrics for every request.
 *
 * A handler runs once the whole body is in memory (or refused with 413) and
 * must queue exactly one reply with one of the m2m_reply_* functions. */
#ifndef M2M_HTTP_H
#define M2M_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "m2m/err.h"
#include "m2m/metrics.h"

typedef struct m2m_req m2m_req;
typedef struct m2m_http_server m2m_http_server;
typedef void (*m2m_handler)(m2m_req *req, void *ctx);

/* Path patterns: literal segments and "*" matching one non-empty segment,
 * e.g. "/api/currency/ *" (no space). Captures are read with m2m_req_param(). */
typedef struct {
    const char *method;
    const char *pattern;
    m2m_handler fn;
    size_t max_body; /* 0 = server default */
} m2m_route;

typedef struct {
    const char *service;   /* for logs and the Server header */
    const char *bind_addr; /* "127.0.0.1" */
    unsigned port;         /* 0 = pick a free port (see m2m_http_server_port) */
    unsigned threads;      /* event threads (MHD pool); 0 = one per CPU */
    unsigned blocking_threads; /* threads for deferred handlers; 0 = 4 */
    unsigned blocking_queue;   /* deferred requests waiting at most; 0 = 256 */
    unsigned conn_timeout; /* seconds of inactivity before a connection is closed */
    unsigned max_conns;
    unsigned per_ip_limit;   /* 0 = unlimited (behind nginx every peer is 127.0.0.1) */
    size_t max_body;         /* default body cap */
    m2m_metrics *metrics;    /* may be NULL */
    bool access_log;         /* one JSON line per request (else only 4xx, 5xx, aborted) */
    const m2m_route *routes;
    size_t nroutes;
    void *ctx; /* passed to handlers */
} m2m_http_cfg;

m2m_err m2m_http_server_start(const m2m_http_cfg *cfg, m2m_http_server **out);
unsigned m2m_http_server_port(const m2m_http_server *s);
/* Stops accepting, closes open streams, waits for in-flight requests (up to
 * 10 s; up to 2 s for closed streams whose peer does not read the rest,
 * which are then cut), frees. NULL is fine. */
void m2m_http_server_stop(m2m_http_server *s);

/* Request accessors; strings live as long as the request. */
const char *m2m_req_method(const m2m_req *r);
const char *m2m_req_path(const m2m_req *r);
const char *m2m_req_header(const m2m_req *r, const char *name);
const char *m2m_req_query(const m2m_req *r, const char *name);
const char *m2m_req_body(const m2m_req *r, size_t *len);
const char *m2m_req_id(const m2m_req *r);
/* n-th "*" capture of the route pattern (0-based), NULL if none. */
const char *m2m_req_param(const m2m_req *r, unsigned n);
/* The media type of Content-Type, lower-cased, without parameters ("" if none). */
const char *m2m_req_content_type(const m2m_req *r);

/* Event threads must never block (design.md §7: one slow call stalls every
 * connection of its thread). A handler that needs the database, scrypt or
 * any other slow call defers itself: it returns right after
 * m2m_req_defer(req, fn) without replying, and fn(req, ctx) runs later on a
 * blocking thread and replies there. m2m_req_may_block() tells which kind of
 * thread a handler is on. A full queue answers 503 by itself. */
void m2m_req_defer(m2m_req *r, m2m_handler fn);
bool m2m_req_may_block(const m2m_req *r);

/* Adds a header to the reply about to be queued (copied; up to 8). */
void m2m_reply_header(m2m_req *r, const char *name, const char *value);
/* Replies with a JSON value (consumed). */
void m2m_reply_json(m2m_req *r, int status, json_t *body);
/* Replies {"error": code, "error_description": desc or the table's text}
 * with the table's status. Extra members may be given in `extra` (consumed). */
void m2m_reply_error(m2m_req *r, m2m_err e, const char *desc);
void m2m_reply_error_extra(m2m_req *r, m2m_err e, const char *desc, json_t *extra);
/* Replies with raw bytes (copied). */
void m2m_reply_raw(m2m_req *r, int status, const char *content_type, const char *data,
                   size_t len);

/* ---- streaming replies (Server-Sent Events) -------------------------------
 *
 * A handler (on an event thread or a deferred one on a blocking thread)
 * replies with m2m_reply_stream() instead of another m2m_reply_*: 200 with a
 * body of unknown length, sent chunked (HTTP/1.1) as the application queues
 * bytes from any thread. While nothing is queued the connection is suspended:
 * an idle subscriber costs no CPU, but it also never times out and a peer
 * that went away is only noticed when something is sent. Send a periodic
 * ": ping\n\n" comment: once it is written the connection checks for the
 * peer's close, ends, and later sends return M2M_ERR_IO, so that the owner
 * drops the subscriber.
 * m2m_http_server_stop() closes every open stream (clients see the body end
 * cleanly after what was queued) before stopping. The access log and metrics
 * see the request when the stream ends, with status 200. */
typedef struct m2m_stream m2m_stream;

/* Bytes queued and not yet handed to the connection, at most. */
#define M2M_STREAM_MAX_PENDING (64u * 1024u)

/* Replies 200 with a body of unknown length and Content-Type content_type
 * (copied; NULL = "text/event-stream"), Cache-Control: no-store and
 * X-Accel-Buffering: no (unless set with m2m_reply_header). The returned
 * stream is referenced by the caller until m2m_stream_release(); the
 * connection keeps a reference of its own until it ends. Bytes may be sent
 * at once, even from the handler itself. NULL when no stream could be made
 * (out of memory: a 503 was queued instead; or a reply was already given). */
m2m_stream *m2m_reply_stream(m2m_req *r, const char *content_type);
/* Queues bytes (copied); any thread. M2M_OK when queued; M2M_ERR_IO once the
 * peer is gone or the stream was closed (or s is NULL);
 * M2M_ERR_PAYLOAD_TOO_LARGE when this would leave more than
 * M2M_STREAM_MAX_PENDING bytes waiting unsent (a slow consumer): the stream
 * is then aborted - what is queued is dropped and the connection is closed
 * without ending the body cleanly, as soon as the peer reads what the
 * connection already holds, or after conn_timeout if it never does.
 * M2M_ERR_NOMEM: nothing queued, the stream stays open. */
m2m_err m2m_stream_send(m2m_stream *s, const char *data, size_t len);
/* Ends the body after what is queued has been sent; later sends return
 * M2M_ERR_IO. Any thread; closing twice is harmless. */
void m2m_stream_close(m2m_stream *s);
/* Bytes queued that the connection has not taken yet: a subscriber whose
 * backlog keeps growing is not keeping up (0 once the stream has ended). */
size_t m2m_stream_pending(m2m_stream *s);
/* False once closed, aborted or the peer is gone. */
bool m2m_stream_is_open(m2m_stream *s);
/* Drops the caller's reference (closing the stream if still open: nobody
 * could send on it any more). NULL is fine. The stream may outlive its
 * server; release it after m2m_http_server_stop() if convenient. */
void m2m_stream_release(m2m_stream *s);

#endif
