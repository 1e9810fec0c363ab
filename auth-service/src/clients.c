#include "clients.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool auth_client_id_valid(const char *id)
{
    size_t n = 0;
    if (!id || !isalnum((unsigned char)id[0]))
        return false;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '@' || c == '-') ||
            n >= AUTH_CLIENT_ID_MAX)
            return false;
    }
    return true;
}

bool auth_role_valid(const char *role)
{
    size_t n = 0;
    if (!role || !islower((unsigned char)role[0]))
        return false;
    for (; role[n]; n++) {
        unsigned char c = (unsigned char)role[n];
        if (!(islower(c) || isdigit(c) || c == '_' || c == '-') || n >= 32)
            return false;
    }
    return true;
}

m2m_err auth_client_get(m2m_db *db, const char *client_id, auth_client *out)
{
    const char *params[1] = {client_id};
    PGresult *res = NULL;
    m2m_err rc;

    memset(out, 0, sizeof(*out));
    rc = m2m_db_query(db,
                      "SELECT client_id, secret_hash, app_name, scopes, role, grant_types,"
                      " coalesce(access_token_ttl, 0), active"
                      " FROM auth.clients WHERE client_id = $1",
                      1, params, &res);
    if (rc)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return M2M_ERR_NOT_FOUND;
    }
    out->res = res;
    out->client_id = PQgetvalue(res, 0, 0);
    out->secret_hash = PQgetvalue(res, 0, 1);
    out->app_name = PQgetvalue(res, 0, 2);
    out->scopes = PQgetvalue(res, 0, 3);
    out->role = PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4);
    out->grant_types = PQgetvalue(res, 0, 5);
    out->access_token_ttl = strtol(PQgetvalue(res, 0, 6), NULL, 10);
    out->active = PQgetvalue(res, 0, 7)[0] == 't';
    return M2M_OK;
}

m2m_err auth_client_insert(m2m_db *db, const auth_client *c, const char *registered_by)
{
    char ttl[24];
    if (c->access_token_ttl > 0)
        snprintf(ttl, sizeof(ttl), "%ld", c->access_token_ttl);
    const char *params[8] = {c->client_id,
                             c->secret_hash,
                             c->app_name ? c->app_name : "",
                             c->scopes ? c->scopes : "",
                             c->role,
                             c->grant_types ? c->grant_types : "client_credentials",
                             c->access_token_ttl > 0 ? ttl : NULL,
                             registered_by};
    return m2m_db_exec(db,
                       "INSERT INTO auth.clients (client_id, secret_hash, app_name, scopes, role,"
                       " grant_types, access_token_ttl, registered_by)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7::integer, $8)",
                       8, params);
}

void auth_client_clear(auth_client *c)
{
    if (c->res)
        PQclear(c->res);
    free(c->owned);
    memset(c, 0, sizeof(*c));
}

static const char *copy_field(char **at, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*at, s, n);
    const char *out = *at;
    *at += n;
    return out;
}

m2m_err auth_client_copy(const auth_client *src, auth_client *dst)
{
    const char *f[6] = {src->client_id, src->secret_hash, src->app_name,
                        src->scopes,    src->role,        src->grant_types};
    size_t total = 0;
    for (size_t i = 0; i < 6; i++)
        total += f[i] ? strlen(f[i]) + 1 : 0;
    memset(dst, 0, sizeof(*dst));
    dst->owned = malloc(total ? total : 1);
    if (!dst->owned)
        return M2M_ERR_NOMEM;
    char *at = dst->owned;
    dst->client_id = copy_field(&at, src->client_id);
    dst->secret_hash = copy_field(&at, src->secret_hash);
    dst->app_name = copy_field(&at, src->app_name);
    dst->scopes = copy_field(&at, src->scopes);
    dst->role = copy_field(&at, src->role);
    dst->grant_types = copy_field(&at, src->grant_types);
    dst->access_token_ttl = src->access_token_ttl;
    dst->active = src->active;
    return M2M_OK;
}
