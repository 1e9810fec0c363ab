/* The client registry (auth.clients). */
#ifndef AUTH_CLIENTS_H
#define AUTH_CLIENTS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include "m2m/db.h"

#define AUTH_CLIENT_ID_MAX 128
#define AUTH_APP_NAME_MAX 128

typedef struct {
    const char *client_id;
    const char *secret_hash;
    const char *app_name;
    const char *scopes;      /* space-separated */
    const char *role;        /* NULL: none */
    const char *grant_types; /* space-separated */
    long access_token_ttl;   /* 0: the server default */
    bool active;
    PGresult *res; /* owns the strings above when read from the database */
    char *owned;   /* or this block, for a copy (client_cache.c) */
} auth_client;

/* [A-Za-z0-9][A-Za-z0-9._:@-]{0,127}: safe in URLs, logs and Basic auth. */
bool auth_client_id_valid(const char *id);
/* A role name: [a-z][a-z0-9_-]{0,31}. */
bool auth_role_valid(const char *role);
/* M2M_ERR_NOT_FOUND when there is no such client. */
m2m_err auth_client_get(m2m_db *db, const char *client_id, auth_client *out);
/* M2M_ERR_CONFLICT when the id is taken. registered_by: "self" or "operator". */
m2m_err auth_client_insert(m2m_db *db, const auth_client *c, const char *registered_by);
void auth_client_clear(auth_client *c);
/* Deep copy into one allocation owned by dst. */
m2m_err auth_client_copy(const auth_client *src, auth_client *dst);

#endif
