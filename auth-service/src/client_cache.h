/* A cache of client rows for the token endpoint, so that issuing a token
 * costs no database round trip (design.md §7: the round trip and the
 * backend's CPU would halve throughput on this machine).
 *
 * Staleness is bounded by LISTEN/NOTIFY, not by guessing: a trigger
 * (sql/002) announces every change on channel auth_clients and a listener
 * thread drops the entry at once. While the listener is not connected the
 * cache is bypassed (nothing can be trusted); entries also expire after
 * ttl seconds as a second line of defence. Only found clients are cached. */
#ifndef AUTH_CLIENT_CACHE_H
#define AUTH_CLIENT_CACHE_H

#include <stddef.h>
#include "clients.h"
#include "m2m/db.h"

typedef struct auth_client_cache auth_client_cache;

/* slots == 0 gives a NULL cache: every lookup goes to the database. */
m2m_err auth_client_cache_new(const char *conninfo, size_t slots, long ttl_seconds,
                              auth_client_cache **out);
/* Stops the listener and frees. NULL is fine. */
void auth_client_cache_free(auth_client_cache *c);

/* The client from the cache, else from the database (then cached). */
m2m_err auth_client_lookup(auth_client_cache *c, m2m_db *db, const char *client_id,
                           auth_client *out);
/* The client from the cache only: M2M_ERR_WOULD_BLOCK on a miss (or with no
 * cache), for event threads that must not wait for the database. */
m2m_err auth_client_peek(auth_client_cache *c, const char *client_id, auth_client *out);
void auth_client_cache_invalidate(auth_client_cache *c, const char *client_id);
/* True while change notifications are being received. */
bool auth_client_cache_listening(auth_client_cache *c);

#endif
