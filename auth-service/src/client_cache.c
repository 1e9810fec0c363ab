#include "client_cache.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m2m/log.h"

#define STRIPES 64
#define LISTEN_CHANNEL "auth_clients"

typedef struct {
    auth_client client; /* owned copy; client_id NULL when empty */
    uint64_t gen;       /* cache generation when stored */
    uint64_t version;   /* bumped by every invalidation of this slot */
    time_t stored_at;
} slot;

struct auth_client_cache {
    char *conninfo;
    size_t nslots;
    long ttl;
    slot *slots;
    pthread_mutex_t stripes[STRIPES];
    atomic_uint_fast64_t gen; /* bumped to drop everything at once */
    atomic_bool listening;
    atomic_bool stop;
    pthread_t listener;
    bool listener_started;
};

static size_t slot_of(const auth_client_cache *c, const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    return (size_t)(h % c->nslots);
}

static void flush_all(auth_client_cache *c)
{
    atomic_fetch_add(&c->gen, 1);
}

void auth_client_cache_invalidate(auth_client_cache *c, const char *client_id)
{
    if (!c)
        return;
    size_t i = slot_of(c, client_id);
    pthread_mutex_t *lock = &c->stripes[i % STRIPES];
    pthread_mutex_lock(lock);
    /* Even an empty or other-client slot is bumped: a lookup of client_id
     * that read the database before this change must not store its row. */
    c->slots[i].version++;
    if (c->slots[i].client.client_id && strcmp(c->slots[i].client.client_id, client_id) == 0)
        auth_client_clear(&c->slots[i].client);
    pthread_mutex_unlock(lock);
}

bool auth_client_cache_listening(auth_client_cache *c)
{
    return c && atomic_load(&c->listening);
}

/* ---- the listener ------------------------------------------------------ */

static PGconn *listen_connect(auth_client_cache *c)
{
    PGconn *conn = m2m_db_connect(c->conninfo);
    PGresult *r = NULL;
    if (!conn)
        return NULL;
    r = PQexec(conn, "LISTEN " LISTEN_CHANNEL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(r);
    return conn;
fail:
    PQclear(r);
    PQfinish(conn);
    return NULL;
}

static void *listener_main(void *arg)
{
    auth_client_cache *c = arg;
    PGconn *conn = NULL;

    while (!atomic_load(&c->stop)) {
        if (!conn) {
            conn = listen_connect(c);
            if (!conn) {
                struct timespec ts = {0, 500 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            /* Changes made while we were not listening are unknown. */
            flush_all(c);
            atomic_store(&c->listening, true);
            M2M_INFO("client_cache_listening", "receiving client change notifications");
        }
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        int n = poll(&pfd, 1, 250);
        if (n > 0 && !PQconsumeInput(conn)) {
            goto lost;
        }
        PGnotify *note;
        while ((note = PQnotifies(conn)) != NULL) {
            auth_client_cache_invalidate(c, note->extra);
            PQfreemem(note);
        }
        if (PQstatus(conn) != CONNECTION_OK)
            goto lost;
        continue;
    lost:
        atomic_store(&c->listening, false);
        flush_all(c);
        M2M_WARN("client_cache_deaf", "lost the notification connection; cache bypassed");
        PQfinish(conn);
        conn = NULL;
    }
    atomic_store(&c->listening, false);
    PQfinish(conn);
    return NULL;
}

/* ---- life cycle and lookups ------------------------------------------- */

m2m_err auth_client_cache_new(const char *conninfo, size_t slots, long ttl_seconds,
                              auth_client_cache **out)
{
    auth_client_cache *c = NULL;

    *out = NULL;
    if (slots == 0)
        return M2M_OK;
    c = calloc(1, sizeof(*c));
    if (!c)
        return M2M_ERR_NOMEM;
    c->nslots = slots;
    c->ttl = ttl_seconds;
    c->conninfo = strdup(conninfo);
    c->slots = calloc(slots, sizeof(slot));
    if (!c->conninfo || !c->slots)
        goto nomem;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&c->stripes[i], NULL);
    if (pthread_create(&c->listener, NULL, listener_main, c) != 0)
        goto nomem;
    c->listener_started = true;
    *out = c;
    return M2M_OK;
nomem:
    free(c->slots);
    free(c->conninfo);
    free(c);
    return M2M_ERR_NOMEM;
}

void auth_client_cache_free(auth_client_cache *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    if (c->listener_started)
        pthread_join(c->listener, NULL);
    for (size_t i = 0; i < c->nslots; i++)
        auth_client_clear(&c->slots[i].client);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&c->stripes[i]);
    free(c->slots);
    free(c->conninfo);
    free(c);
}

/* Copies a live entry into out (M2M_OK), else M2M_ERR_WOULD_BLOCK; gives
 * the generation and slot version seen, for a later store. */
static m2m_err cache_get(auth_client_cache *c, const char *client_id, auth_client *out,
                         uint64_t *gen, uint64_t *version)
{
    size_t i = slot_of(c, client_id);
    pthread_mutex_t *lock = &c->stripes[i % STRIPES];
    m2m_err rc = M2M_ERR_WOULD_BLOCK;

    *gen = atomic_load(&c->gen);
    pthread_mutex_lock(lock);
    slot *s = &c->slots[i];
    if (s->client.client_id && s->gen == *gen && time(NULL) - s->stored_at < c->ttl &&
        strcmp(s->client.client_id, client_id) == 0)
        rc = auth_client_copy(&s->client, out);
    *version = s->version;
    pthread_mutex_unlock(lock);
    return rc;
}

m2m_err auth_client_peek(auth_client_cache *c, const char *client_id, auth_client *out)
{
    uint64_t gen, version;
    memset(out, 0, sizeof(*out));
    if (!auth_client_cache_listening(c))
        return M2M_ERR_WOULD_BLOCK;
    return cache_get(c, client_id, out, &gen, &version);
}

m2m_err auth_client_lookup(auth_client_cache *c, m2m_db *db, const char *client_id,
                           auth_client *out)
{
    m2m_err rc;
    uint64_t gen = 0, version = 0;
    bool usable = auth_client_cache_listening(c);
    size_t i = 0;
    pthread_mutex_t *lock = NULL;
    time_t now = time(NULL);

    if (usable) {
        i = slot_of(c, client_id);
        lock = &c->stripes[i % STRIPES];
        rc = cache_get(c, client_id, out, &gen, &version);
        if (rc != M2M_ERR_WOULD_BLOCK)
            return rc;
    }
    rc = auth_client_get(db, client_id, out);
    if (rc || !usable)
        return rc;
    /* Store unless something changed since we looked (see invalidate). */
    auth_client copy;
    if (auth_client_copy(out, &copy))
        return M2M_OK;
    pthread_mutex_lock(lock);
    slot *s = &c->slots[i];
    if (s->version == version && atomic_load(&c->gen) == gen && atomic_load(&c->listening)) {
        auth_client_clear(&s->client);
        s->client = copy;
        s->gen = gen;
        s->stored_at = now;
        copy.owned = NULL;
    }
    pthread_mutex_unlock(lock);
    auth_client_clear(&copy);
    return M2M_OK;
}
