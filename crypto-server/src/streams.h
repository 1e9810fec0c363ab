/* Subscribers of GET /api/currency/stream (Server-Sent Events). Idle
 * subscribers cost nothing: each is a suspended connection (common/src/http.c)
 * woken only when the updater broadcasts a tick or a keep-alive comment. */
#ifndef CURRENCY_STREAMS_H
#define CURRENCY_STREAMS_H

#include <stddef.h>
#include "m2m/err.h"
#include "m2m/http.h"

typedef struct streams streams;

streams *streams_new(size_t max);
/* Closes every stream and frees. */
void streams_free(streams *s);
/* Holds a place for one subscriber before its reply goes out, so a full
 * house answers 503 rather than a stream that ends at once. false: full. */
bool streams_reserve(streams *s);
void streams_unreserve(streams *s);
/* Fills a reserved place, taking a reference to st. */
void streams_add(streams *s, m2m_stream *st);
/* Sends to every subscriber; drops those that are gone or too slow. */
/* Ends every stream (their connections finish) and forgets them. */
void streams_close_all(streams *s);
void streams_broadcast(streams *s, const char *data, size_t len);
size_t streams_count(streams *s);

#endif
