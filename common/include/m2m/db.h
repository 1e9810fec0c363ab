/* PostgreSQL over libpq: one connection per worker thread (MHD pool threads
 * each get their own, lazily), parameterised queries only, reconnect with a
 * short back-off, and errors mapped to the error table: a lost database is
 * M2M_ERR_DB_UNAVAILABLE (503), a unique violation M2M_ERR_CONFLICT (409). */
#ifndef M2M_DB_H
#define M2M_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include "m2m/err.h"

typedef struct m2m_db m2m_db;

typedef struct {
    int version;
    const char *name;
    const char *sql;
} m2m_migration;

/* conninfo: a libpq connection string or URI. Does not connect yet. */
m2m_err m2m_db_open(const char *conninfo, m2m_db **out);
void m2m_db_close(m2m_db *db);

/* A connection of its own, for what the per-thread ones cannot do (LISTEN,
 * session-level locks): connected, with server notices routed to the JSON
 * log instead of stderr; NULL (and a warning logged) when the server cannot
 * be reached. PQfinish() it. */
PGconn *m2m_db_connect(const char *conninfo);

/* Runs one statement with text parameters ($1..$n, NULL = SQL NULL).
 * On success *res holds the result (PQclear it); on failure *res is NULL.
 * A broken connection is re-established once before giving up. */
m2m_err m2m_db_query(m2m_db *db, const char *sql, int nparams, const char *const *params,
                     PGresult **res);
/* Same, for statements whose result is not needed. */
m2m_err m2m_db_exec(m2m_db *db, const char *sql, int nparams, const char *const *params);
/* SELECT 1 on this thread's connection. */
m2m_err m2m_db_ping(m2m_db *db);

/* Applies the migrations newer than <schema>.schema_migrations under an
 * advisory lock, each in its own transaction. */
m2m_err m2m_db_migrate(m2m_db *db, const char *schema, const m2m_migration *list, size_t n);

#endif
