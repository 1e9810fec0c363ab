#include "streams.h"

#include <pthread.h>
#include <stdlib.h>

#include "m2m/log.h"

struct streams {
    pthread_mutex_t lock;
    m2m_stream **v;
    size_t n, max;
    size_t reserved; /* places promised by streams_reserve, not filled yet */
};

streams *streams_new(size_t max)
{
    streams *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max = max;
    s->v = calloc(max ? max : 1, sizeof(*s->v));
    if (!s->v) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void streams_close_all(streams *s)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n; i++) {
        m2m_stream_close(s->v[i]);
        m2m_stream_release(s->v[i]);
    }
    s->n = 0;
    pthread_mutex_unlock(&s->lock);
}

void streams_free(streams *s)
{
    if (!s)
        return;
    streams_close_all(s);
    pthread_mutex_destroy(&s->lock);
    free(s->v);
    free(s);
}

bool streams_reserve(streams *s)
{
    pthread_mutex_lock(&s->lock);
    bool ok = s->n + s->reserved < s->max;
    if (ok)
        s->reserved++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void streams_unreserve(streams *s)
{
    pthread_mutex_lock(&s->lock);
    s->reserved--;
    pthread_mutex_unlock(&s->lock);
}

void streams_add(streams *s, m2m_stream *st)
{
    pthread_mutex_lock(&s->lock);
    s->reserved--;
    s->v[s->n++] = st; /* n + reserved <= max held this place */
    pthread_mutex_unlock(&s->lock);
}

void streams_broadcast(streams *s, const char *data, size_t len)
{
    size_t dropped = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n;) {
        if (m2m_stream_send(s->v[i], data, len) != M2M_OK) {
            /* gone, or too slow to keep up: let it go (the client reconnects) */
            m2m_stream_close(s->v[i]);
            m2m_stream_release(s->v[i]);
            s->v[i] = s->v[--s->n];
            dropped++;
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&s->lock);
    if (dropped)
        M2M_DEBUG("streams_dropped", "%zu subscriber(s) gone", dropped);
}

size_t streams_count(streams *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}
