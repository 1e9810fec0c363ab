#include "m2m/db.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m2m/log.h"

/* After a failed connect a thread answers 503 at once for this long instead
 * of blocking every request on a connect timeout. */
#define DB_RETRY_BACKOFF_MS 500

struct m2m_db {
    char *conninfo;
    pthread_key_t key;
};

typedef struct {
    PGconn *conn;
    struct timespec retry_after;
} db_thread;

static void db_thread_free(void *p)
{
    db_thread *t = p;
    if (!t)
        return;
    if (t->conn)
        PQfinish(t->conn);
    free(t);
}

m2m_err m2m_db_open(const char *conninfo, m2m_db **out)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    m2m_db *db = NULL;

    *out = NULL;
    if (!opts) {
        /* err may echo the connection string (passwords): don't log it. */
        M2M_ERROR("db_config", "the database connection string cannot be parsed");
        PQfreemem(err);
        return M2M_ERR_CONFIG;
    }
    PQconninfoFree(opts);
    db = calloc(1, sizeof(*db));
    if (!db)
        return M2M_ERR_NOMEM;
    db->conninfo = strdup(conninfo);
    if (!db->conninfo || pthread_key_create(&db->key, db_thread_free) != 0) {
        free(db->conninfo);
        free(db);
        return M2M_ERR_NOMEM;
    }
    *out = db;
    return M2M_OK;
}

void m2m_db_close(m2m_db *db)
{
    if (!db)
        return;
    db_thread_free(pthread_getspecific(db->key));
    pthread_setspecific(db->key, NULL);
    pthread_key_delete(db->key);
    free(db->conninfo);
    free(db);
}

static bool backoff_active(const db_thread *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec < t->retry_after.tv_sec ||
           (now.tv_sec == t->retry_after.tv_sec && now.tv_nsec < t->retry_after.tv_nsec);
}

static void backoff_start(db_thread *t)
{
    clock_gettime(CLOCK_MONOTONIC, &t->retry_after);
    t->retry_after.tv_nsec += (long)DB_RETRY_BACKOFF_MS * 1000000L;
    t->retry_after.tv_sec += t->retry_after.tv_nsec / 1000000000L;
    t->retry_after.tv_nsec %= 1000000000L;
}

static void drop_conn(db_thread *t)
{
    if (t->conn) {
        PQfinish(t->conn);
        t->conn = NULL;
    }
}

/* Server notices ("relation already exists, skipping") are not errors: keep
 * them out of stderr and in the JSON log at debug level. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    M2M_DEBUG("db_notice", "%.*s", (int)strcspn(message, "\n"), message);
}

PGconn *m2m_db_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", conn ? PQerrorMessage(conn) : "out of memory");
        msg[strcspn(msg, "\n")] = '\0';
        M2M_WARN("db_connect_failed", "%s", msg);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, on_notice, NULL);
    return conn;
}

/* This thread's connection, connected if need be. */
static m2m_err get_conn(m2m_db *db, db_thread **out)
{
    db_thread *t = pthread_getspecific(db->key);

    if (!t) {
        t = calloc(1, sizeof(*t));
        if (!t || pthread_setspecific(db->key, t) != 0) {
            free(t);
            return M2M_ERR_NOMEM;
        }
    }
    *out = t;
    if (t->conn && PQstatus(t->conn) == CONNECTION_OK)
        return M2M_OK;
    drop_conn(t);
    if (backoff_active(t))
        return M2M_ERR_DB_UNAVAILABLE;
    t->conn = m2m_db_connect(db->conninfo);
    if (!t->conn) {
        backoff_start(t);
        return M2M_ERR_DB_UNAVAILABLE;
    }
    return M2M_OK;
}

/* Maps a failed result to the error table by SQLSTATE class. */
static m2m_err map_failure(db_thread *t, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(t->conn) != CONNECTION_OK || !state)
        return M2M_ERR_DB_UNAVAILABLE;
    if (strcmp(state, "08P01") == 0) /* protocol violation: our bug, not a lost server */
        return M2M_ERR_INTERNAL;
    if (strcmp(state, "23505") == 0)
        return M2M_ERR_CONFLICT;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0)
        return M2M_ERR_DB_UNAVAILABLE;
    /* Data exceptions and check violations: input that validation let through. */
    if (strncmp(state, "22", 2) == 0 || strcmp(state, "23514") == 0)
        return M2M_ERR_INVALID_REQUEST;
    return M2M_ERR_INTERNAL;
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

m2m_err m2m_db_query(m2m_db *db, const char *sql, int nparams, const char *const *params,
                     PGresult **res)
{
    m2m_err rc = M2M_OK;
    db_thread *t = NULL;
    PGresult *r = NULL;

    *res = NULL;
    /* A connection that died while idle (server restart) is only noticed when
     * used: reconnect once and retry. */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = get_conn(db, &t);
        if (rc)
            goto out;
        r = PQexecParams(t->conn, sql, nparams, NULL, params, NULL, NULL, 0);
        if (r && result_ok(r)) {
            *res = r;
            r = NULL;
            rc = M2M_OK;
            goto out;
        }
        rc = map_failure(t, r);
        if (rc != M2M_ERR_DB_UNAVAILABLE)
            break;
        PQclear(r);
        r = NULL;
        drop_conn(t);
    }
    if (rc == M2M_ERR_INTERNAL || rc == M2M_ERR_INVALID_REQUEST) {
        char msg[256];
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* Data exceptions quote the offending input (a parameter, maybe a
         * secret): log the class, not the message. */
        if (st && strncmp(st, "22", 2) == 0)
            snprintf(msg, sizeof(msg), "invalid input (SQLSTATE %s)", st);
        else
            snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        /* Only the statement's text and the server's message: never the parameters. */
        m2m_log_event(M2M_LOG_ERROR, "db_query_failed",
                      json_pack("{s:s, s:s?, s:s}", "msg", msg, "sqlstate",
                                PQresultErrorField(r, PG_DIAG_SQLSTATE), "statement", sql));
    }
out:
    PQclear(r);
    return rc;
}

m2m_err m2m_db_exec(m2m_db *db, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = NULL;
    m2m_err rc = m2m_db_query(db, sql, nparams, params, &res);
    PQclear(res);
    return rc;
}

m2m_err m2m_db_ping(m2m_db *db)
{
    return m2m_db_exec(db, "SELECT 1", 0, NULL);
}

/* ---- migrations ------------------------------------------------------- */

static bool ident_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 63)
        return false;
    for (const char *p = s; *p; p++)
        if (!(islower((unsigned char)*p) || *p == '_' || (p != s && isdigit((unsigned char)*p))))
            return false;
    return true;
}

static m2m_err simple_exec(db_thread *t, const char *sql, const char *what)
{
    PGresult *r = PQexec(t->conn, sql);
    m2m_err rc = M2M_OK;
    if (!r || !result_ok(r)) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(t->conn));
        msg[strcspn(msg, "\n")] = '\0';
        M2M_ERROR("db_migrate_failed", "%s: %s", what, msg);
        rc = map_failure(t, r);
        if (rc == M2M_ERR_CONFLICT || rc == M2M_ERR_INVALID_REQUEST)
            rc = M2M_ERR_INTERNAL;
    }
    PQclear(r);
    return rc;
}

static bool version_recorded(const PGresult *applied, int version)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (atoi(PQgetvalue(applied, i, 0)) == version)
            return true;
    return false;
}

m2m_err m2m_db_migrate(m2m_db *db, const char *schema, const m2m_migration *list, size_t n)
{
    m2m_err rc = M2M_OK;
    db_thread *t = NULL;
    PGresult *r = NULL;
    char sql[512], lockname[96];
    const char *lp[1] = {lockname};
    bool locked = false;
    PGresult *applied = NULL;

    if (!ident_ok(schema))
        return M2M_ERR_CONFIG;
    rc = get_conn(db, &t);
    if (rc)
        goto out;
    snprintf(lockname, sizeof(lockname), "m2m.migrate.%s", schema);
    r = PQexecParams(t->conn, "SELECT pg_advisory_lock(hashtext($1))", 1, NULL, lp, NULL, NULL,
                     0);
    if (!result_ok(r)) {
        rc = map_failure(t, r);
        goto out;
    }
    PQclear(r);
    r = NULL;
    locked = true;

    /* The schema is normally made by the bootstrap (owned by the service's
     * role); CREATE SCHEMA needs database rights the role may lack, so try it
     * only when missing. schema is a checked identifier from code, never input. */
    const char *sp[1] = {schema};
    r = PQexecParams(t->conn, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL, sp, NULL,
                     NULL, 0);
    if (!result_ok(r)) {
        rc = map_failure(t, r);
        goto out;
    }
    bool have_schema = PQntuples(r) == 1;
    PQclear(r);
    r = NULL;
    if (!have_schema) {
        snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", schema);
        rc = simple_exec(t, sql, "create schema");
        if (rc)
            goto out;
    }
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
             " version integer PRIMARY KEY, name text NOT NULL,"
             " applied_at timestamptz NOT NULL DEFAULT now())",
             schema);
    rc = simple_exec(t, sql, "schema_migrations");
    if (rc)
        goto out;
    /* A migration is skipped when its own version is recorded, not when a
     * higher one is: a branch merged late, or a stray row, cannot hide one. */
    snprintf(sql, sizeof(sql), "SELECT version FROM %s.schema_migrations", schema);
    r = PQexec(t->conn, sql);
    if (!result_ok(r)) {
        rc = map_failure(t, r);
        goto out;
    }
    applied = r;
    r = NULL;

    for (size_t i = 0; i < n; i++) {
        if (version_recorded(applied, list[i].version))
            continue;
        rc = simple_exec(t, "BEGIN", "begin");
        if (rc)
            goto out;
        rc = simple_exec(t, list[i].sql, list[i].name);
        if (!rc) {
            char ver[16];
            snprintf(ver, sizeof(ver), "%d", list[i].version);
            snprintf(sql, sizeof(sql),
                     "INSERT INTO %s.schema_migrations (version, name) VALUES ($1, $2)", schema);
            const char *p[2] = {ver, list[i].name};
            r = PQexecParams(t->conn, sql, 2, NULL, p, NULL, NULL, 0);
            if (!result_ok(r))
                rc = M2M_ERR_INTERNAL;
            PQclear(r);
            r = NULL;
        }
        if (rc) {
            simple_exec(t, "ROLLBACK", "rollback");
            goto out;
        }
        rc = simple_exec(t, "COMMIT", "commit");
        if (rc)
            goto out;
        M2M_INFO("db_migrated", "applied %s.%s", schema, list[i].name);
    }
out:
    PQclear(r);
    PQclear(applied);
    if (locked) {
        r = PQexecParams(t->conn, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, lp, NULL,
                         NULL, 0);
        PQclear(r);
    }
    return rc;
}
