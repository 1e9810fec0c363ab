/* PostgreSQL access against a real server (design.md §6.8: no mock of the
 * database where the database is the point): parameters, SQLSTATE mapping,
 * migrations under an advisory lock, reconnect after a killed backend,
 * back-off when the server is unreachable, per-thread connections.
 *
 * Needs M2M_TEST_DATABASE_URL (a libpq conninfo for the auth_service role,
 * which owns schema auth); see need_db() for how to get one. Tables are
 * auth.unit_<pid>*, migration versions >= MIG_BASE; both are removed at the
 * end (and stale versions at the start). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "m2m/db.h"
#include "m2m/log.h"

#define MIG_BASE 2000000000
#define HOW_TO_RUN                                                                                 \
    "M2M_TEST_DATABASE_URL is not set: test_db needs a real PostgreSQL.\n"                         \
    "Run scripts/test.sh (it starts a throwaway cluster), or by hand:\n"                           \
    "  bash scripts/pg.sh init /tmp/pgunit 55477 && bash scripts/pg.sh start /tmp/pgunit &&\n"     \
    "  bash scripts/pg.sh bootstrap /tmp/pgunit\n"                                                 \
    "  export M2M_TEST_DATABASE_URL=\"$(bash scripts/pg.sh conninfo /tmp/pgunit auth_service)\"\n" \
    "  ctest --test-dir build -R test_db --output-on-failure\n"                                    \
    "  bash scripts/pg.sh stop /tmp/pgunit"

static const char *dburl;
static m2m_db *db;
static int pid;
static char log_path[] = "/tmp/test_db_log.XXXXXX";
static FILE *log_file;

static void need_db(void)
{
    if (!dburl || !*dburl)
        fail_msg("M2M_TEST_DATABASE_URL is not set: this test needs a real PostgreSQL "
                 "(how to run it is printed at the top of this output)");
    assert_non_null(db);
}

/* "auth.unit_<pid><suffix>" */
static const char *tbl(const char *suffix)
{
    static char names[8][64];
    static int next;
    char *s = names[next++ % 8];
    snprintf(s, sizeof(names[0]), "auth.unit_%d%s", pid, suffix);
    return s;
}

static double since_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- SQL helpers -------------------------------------------------------- */

static void exec_ok(m2m_db *d, const char *sql, int n, const char *const *p)
{
    m2m_err rc = m2m_db_exec(d, sql, n, p);
    if (rc != M2M_OK)
        fail_msg("%s: %s", sql, m2m_err_name(rc));
}

static void execf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void execf(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    exec_ok(db, sql, 0, NULL);
}

/* The single value of a one-row, one-column query (malloc'd; NULL for SQL
 * NULL). */
static char *scalar(m2m_db *d, const char *sql, int n, const char *const *p)
{
    PGresult *res = NULL;
    m2m_err rc = m2m_db_query(d, sql, n, p, &res);
    if (rc != M2M_OK)
        fail_msg("%s: %s", sql, m2m_err_name(rc));
    assert_non_null(res);
    assert_int_equal(PQntuples(res), 1);
    assert_int_equal(PQnfields(res), 1);
    char *v = PQgetisnull(res, 0, 0) ? NULL : strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static long scalar_long(m2m_db *d, const char *sql, int n, const char *const *p)
{
    char *v = scalar(d, sql, n, p);
    assert_non_null(v);
    long x = strtol(v, NULL, 10);
    free(v);
    return x;
}

static long scalarf_long(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long scalarf_long(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return scalar_long(db, sql, 0, NULL);
}

static int backend_pid(m2m_db *d)
{
    return (int)scalar_long(d, "SELECT pg_backend_pid()", 0, NULL);
}

static bool table_exists(const char *name)
{
    const char *p[1] = {name};
    char *v = scalar(db, "SELECT to_regclass($1) IS NOT NULL", 1, p);
    bool yes = v && strcmp(v, "t") == 0;
    free(v);
    return yes;
}

/* Waits up to 5 s for a backend to be gone. */
static bool backend_gone(int which)
{
    char s[16];
    snprintf(s, sizeof(s), "%d", which);
    const char *p[1] = {s};
    for (int i = 0; i < 500; i++) {
        if (scalar_long(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1, p) == 0)
            return true;
        usleep(10000);
    }
    return false;
}

static void reset_versions(void)
{
    if (table_exists("auth.schema_migrations"))
        execf("DELETE FROM auth.schema_migrations WHERE version >= %d", MIG_BASE);
}

/* ---- log inspection ----------------------------------------------------- */

static long log_mark(void)
{
    fflush(log_file);
    return ftell(log_file);
}

/* Log text written since `mark` (malloc'd). */
static char *log_since(long mark)
{
    fflush(log_file);
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    assert_true(end >= mark);
    char *buf = calloc(1, (size_t)(end - mark) + 1);
    fseek(f, mark, SEEK_SET);
    assert_int_equal(fread(buf, 1, (size_t)(end - mark), f), (size_t)(end - mark));
    fclose(f);
    return buf;
}

/* The first line with this event in text, parsed (NULL if none). */
static json_t *log_find(const char *text, const char *event)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        if (!j)
            fail_msg("log line is not JSON: %.*s", (int)(nl - p), p);
        json_t *ev = json_object_get(j, "event");
        if (json_is_string(ev) && strcmp(json_string_value(ev), event) == 0)
            return j;
        json_decref(j);
        p = nl + 1;
    }
    return NULL;
}

/* ---- fixture ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    pid = (int)getpid();
    int fd = mkstemp(log_path);
    if (fd < 0 || !(log_file = fdopen(fd, "w")))
        return -1;
    m2m_log_init("unit-db", M2M_LOG_INFO);
    m2m_log_set_stream(log_file);
    if (!dburl || !*dburl)
        return 0; /* every test that needs the database fails with HOW_TO_RUN */
    if (m2m_db_open(dburl, &db) != M2M_OK)
        return -1;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE auth.unit_%d (k text PRIMARY KEY, v text,"
             " n integer CONSTRAINT unit_n_nonneg CHECK (n >= 0))",
             pid);
    if (m2m_db_exec(db, sql, 0, NULL) != M2M_OK) {
        fprintf(stderr,
                "test_db: cannot create %s in schema auth (is M2M_TEST_DATABASE_URL for "
                "the auth_service role?)\n",
                tbl(""));
        return -1;
    }
    PGresult *res = NULL;
    if (m2m_db_query(db, "SELECT to_regclass('auth.schema_migrations') IS NOT NULL", 0, NULL,
                     &res) != M2M_OK)
        return -1;
    bool have = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (have) {
        snprintf(sql, sizeof(sql), "DELETE FROM auth.schema_migrations WHERE version >= %d",
                 MIG_BASE);
        if (m2m_db_exec(db, sql, 0, NULL) != M2M_OK)
            return -1;
    }
    return 0;
}

static const char *const created[] = {"",    "_m1", "_m2", "_m3", "_m4",
                                      "_d1", "_d2", "_c1", "_c2", "_r"};

static int group_teardown(void **state)
{
    (void)state;
    if (db) {
        char sql[256];
        for (size_t i = 0; i < sizeof(created) / sizeof(created[0]); i++) {
            snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS auth.unit_%d%s", pid, created[i]);
            m2m_db_exec(db, sql, 0, NULL);
        }
        snprintf(sql, sizeof(sql),
                 "DO $$ BEGIN IF to_regclass('auth.schema_migrations') IS NOT NULL THEN "
                 "DELETE FROM auth.schema_migrations WHERE version >= %d; END IF; END $$",
                 MIG_BASE);
        m2m_db_exec(db, sql, 0, NULL);
        m2m_db_close(db);
        db = NULL;
    }
    m2m_log_set_stream(NULL);
    fclose(log_file);
    unlink(log_path);
    return 0;
}

/* ---- open --------------------------------------------------------------- */

static void test_open_invalid_conninfo(void **state)
{
    static const char *const bad[] = {
        "host=localhost port",        "nosuchoption=1",
        "host='unterminated",         "postgresql://[::1:5432/m2m",
        "postgresql://h/db?nosuch=1", "password=hunter2-secret nosuchoption=1",
    };
    (void)state;

    long mark = log_mark();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m2m_db *d = (m2m_db *)&d; /* must be reset */
        m2m_err rc = m2m_db_open(bad[i], &d);
        if (rc != M2M_ERR_CONFIG)
            fail_msg("'%s': %s, want CONFIG", bad[i], m2m_err_name(rc));
        assert_null(d);
    }
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_config");
    assert_non_null(line);
    json_decref(line);
    /* the connection string (it may hold a password) is never logged */
    assert_null(strstr(text, "hunter2"));
    free(text);

    /* valid strings open without connecting */
    m2m_db *d = NULL;
    assert_int_equal(m2m_db_open("host=127.0.0.1 port=1 dbname=x user=y", &d), M2M_OK);
    assert_non_null(d);
    m2m_db_close(d);
    m2m_db_close(NULL);
}

/* ---- queries ------------------------------------------------------------ */

static void test_params_roundtrip(void **state)
{
    static const char *const values[] = {
        "'; DROP TABLE auth.schema_migrations; --",
        "Robert'); DELETE FROM auth.x; --",
        "back\\slash \\x00 \\\\ E'\\n'",
        "$1 $2 ? :name %s %n",
        "double \"quotes\" and 'single' ''",
        "line\nbreak\ttab\rcr",
        "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91",
        "",
        " leading and trailing ",
        "/* comment */ -- comment",
    };
    char sql_ins[256], sql_sel[256], key[32];
    (void)state;
    need_db();

    snprintf(sql_ins, sizeof(sql_ins), "INSERT INTO %s (k, v) VALUES ($1, $2)", tbl(""));
    snprintf(sql_sel, sizeof(sql_sel), "SELECT v FROM %s WHERE k = $1", tbl(""));
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        snprintf(key, sizeof(key), "meta-%zu", i);
        const char *p[2] = {key, values[i]};
        exec_ok(db, sql_ins, 2, p);
        char *v = scalar(db, sql_sel, 1, p);
        assert_non_null(v);
        assert_string_equal(v, values[i]);
        free(v);
        /* as a key too */
        const char *p2[2] = {values[i], key};
        exec_ok(db, sql_ins, 2, p2);
        v = scalar(db, sql_sel, 1, p2);
        assert_string_equal(v, key);
        free(v);
    }
    /* a large value */
    size_t big = 200000;
    char *large = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        large[i] = (char)('a' + i % 26);
    large[big] = '\0';
    const char *p[2] = {"large", large};
    exec_ok(db, sql_ins, 2, p);
    char *v = scalar(db, sql_sel, 1, p);
    assert_string_equal(v, large);
    free(v);
    free(large);
    /* the table is intact */
    assert_true(table_exists(tbl("")));
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s", tbl("")), 21);
}

static void test_null_param(void **state)
{
    char sql[256];
    (void)state;
    need_db();

    const char *p[2] = {NULL, ""};
    PGresult *res = NULL;
    assert_int_equal(
        m2m_db_query(db, "SELECT $1::text IS NULL, $2::text IS NULL, $2::text = ''", 2, p, &res),
        M2M_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    assert_string_equal(PQgetvalue(res, 0, 1), "f");
    assert_string_equal(PQgetvalue(res, 0, 2), "t");
    PQclear(res);

    snprintf(sql, sizeof(sql), "INSERT INTO %s (k, v, n) VALUES ($1, $2, $3)", tbl(""));
    const char *ins[3] = {"null-1", NULL, NULL};
    exec_ok(db, sql, 3, ins);
    snprintf(sql, sizeof(sql), "SELECT v, n FROM %s WHERE k = $1", tbl(""));
    assert_int_equal(m2m_db_query(db, sql, 1, ins, &res), M2M_OK);
    assert_int_equal(PQntuples(res), 1);
    assert_true(PQgetisnull(res, 0, 0));
    assert_true(PQgetisnull(res, 0, 1));
    PQclear(res);
}

static void test_unique_violation(void **state)
{
    char sql[256];
    (void)state;
    need_db();

    snprintf(sql, sizeof(sql), "INSERT INTO %s (k, v) VALUES ($1, $2) RETURNING k", tbl(""));
    const char *p[2] = {"dup", "first"};
    PGresult *res = NULL;
    assert_int_equal(m2m_db_query(db, sql, 2, p, &res), M2M_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "dup");
    PQclear(res);
    int before = backend_pid(db);

    const char *p2[2] = {"dup", "second"};
    res = (PGresult *)&res; /* must be reset to NULL */
    assert_int_equal(m2m_db_query(db, sql, 2, p2, &res), M2M_ERR_CONFLICT);
    assert_null(res);
    assert_int_equal(m2m_db_exec(db, sql, 2, p2), M2M_ERR_CONFLICT);

    /* nothing changed, and the same connection is still fine */
    char sel[256];
    snprintf(sel, sizeof(sel), "SELECT v FROM %s WHERE k = $1", tbl(""));
    char *v = scalar(db, sel, 1, p);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(backend_pid(db), before);
}

static void test_invalid_input_errors(void **state)
{
    char sql[256];
    (void)state;
    need_db();

    int before = backend_pid(db);
    snprintf(sql, sizeof(sql), "INSERT INTO %s (k, n) VALUES ($1, $2)", tbl(""));
    /* check violation */
    const char *neg[2] = {"neg", "-1"};
    PGresult *res = (PGresult *)&res;
    long mark = log_mark();
    assert_int_equal(m2m_db_query(db, sql, 2, neg, &res), M2M_ERR_INVALID_REQUEST);
    assert_null(res);
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_query_failed");
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "sqlstate")), "23514");
    assert_string_equal(json_string_value(json_object_get(line, "statement")), sql);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "error");
    json_decref(line);
    free(text);

    /* invalid integer text */
    const char *txt[2] = {"txt", "abc"};
    mark = log_mark();
    assert_int_equal(m2m_db_exec(db, sql, 2, txt), M2M_ERR_INVALID_REQUEST);
    text = log_since(mark);
    line = log_find(text, "db_query_failed");
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "sqlstate")), "22P02");
    json_decref(line);
    free(text);

    /* out of range, division by zero: data exceptions too */
    const char *big[2] = {"big", "99999999999"};
    assert_int_equal(m2m_db_exec(db, sql, 2, big), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(m2m_db_exec(db, "SELECT 1 / $1::int", 1, (const char *const[]){"0"}),
                     M2M_ERR_INVALID_REQUEST);

    /* no row was written, the connection was kept */
    assert_int_equal(
        scalarf_long("SELECT count(*) FROM %s WHERE k IN ('neg', 'txt', 'big')", tbl("")), 0);
    assert_int_equal(backend_pid(db), before);
}

/* design.md §6.5 and db.c's own comment: the parameters of a failed query
 * are never logged (they may be secrets or tokens). */
static void test_failed_query_log_omits_parameters(void **state)
{
    (void)state;
    need_db();

    static const char *const secret[1] = {"tok_SECRET-4f1d2c9a7b"};
    static const char *const sqls[] = {
        "SELECT $1::integer",
        "SELECT $1::uuid",
        "SELECT $1::jsonb",
    };
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
        long mark = log_mark();
        assert_int_equal(m2m_db_exec(db, sqls[i], 1, secret), M2M_ERR_INVALID_REQUEST);
        char *text = log_since(mark);
        json_t *line = log_find(text, "db_query_failed");
        assert_non_null(line);
        json_decref(line);
        if (strstr(text, "SECRET-4f1d2c9a7b"))
            fail_msg("the parameter of '%s' was logged: %s", sqls[i], text);
        free(text);
    }
}

static void test_syntax_error_is_internal(void **state)
{
    (void)state;
    need_db();

    int before = backend_pid(db);
    PGresult *res = (PGresult *)&res;
    long mark = log_mark();
    assert_int_equal(m2m_db_query(db, "SELEC 1", 0, NULL, &res), M2M_ERR_INTERNAL);
    assert_null(res);
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_query_failed");
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "sqlstate")), "42601");
    assert_string_equal(json_string_value(json_object_get(line, "statement")), "SELEC 1");
    json_decref(line);
    free(text);

    assert_int_equal(m2m_db_exec(db, "SELECT * FROM auth.unit_no_such_table_x", 0, NULL),
                     M2M_ERR_INTERNAL);
    /* errors are not connection failures: no reconnect */
    assert_int_equal(backend_pid(db), before);
    assert_int_equal(m2m_db_ping(db), M2M_OK);
}

/* More parameters than the statement has: the server answers 08P01
 * (protocol_violation) on a healthy connection. A programming error: 500,
 * and no reason to drop the connection. */
static void test_param_count_mismatch_is_internal(void **state)
{
    (void)state;
    need_db();

    int before = backend_pid(db);
    m2m_err rc = m2m_db_exec(db, "SELECT $1::text", 2, (const char *const[]){"a", "b"});
    if (rc != M2M_ERR_INTERNAL)
        fail_msg("2 parameters for 1 placeholder: %s, want INTERNAL", m2m_err_name(rc));
    assert_int_equal(backend_pid(db), before);
}

/* ---- reconnect ---------------------------------------------------------- */

static void terminate_from_second_connection(int victim)
{
    PGconn *c = PQconnectdb(dburl);
    char s[16];
    snprintf(s, sizeof(s), "%d", victim);
    const char *p[1] = {s};

    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("second connection: %s", PQerrorMessage(c));
    /* waits (up to 5 s) until the backend is gone */
    PGresult *r =
        PQexecParams(c, "SELECT pg_terminate_backend($1::int, 5000)", 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("pg_terminate_backend: %s", PQresultErrorMessage(r));
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    PQfinish(c);
}

static void test_reconnect_after_terminated_backend(void **state)
{
    char sql[256];
    (void)state;
    need_db();

    /* a query */
    int p1 = backend_pid(db);
    terminate_from_second_connection(p1);
    int p2 = backend_pid(db); /* transparently reconnected */
    assert_int_not_equal(p1, p2);

    /* a write: the dead connection never ran it, the retry runs it once */
    snprintf(sql, sizeof(sql), "INSERT INTO %s (k, v) VALUES ($1, $2)", tbl(""));
    terminate_from_second_connection(p2);
    const char *p[2] = {"after-reconnect", "v"};
    assert_int_equal(m2m_db_exec(db, sql, 2, p), M2M_OK);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s WHERE k = 'after-reconnect'", tbl("")),
                     1);

    /* ping */
    int p3 = backend_pid(db);
    assert_int_not_equal(p3, p2);
    terminate_from_second_connection(p3);
    assert_int_equal(m2m_db_ping(db), M2M_OK);
    assert_int_not_equal(backend_pid(db), p3);
}

/* ---- unreachable server ------------------------------------------------- */

static unsigned closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd); /* nothing listens there now */
    return ntohs(sa.sin_port);
}

static void test_unreachable_server(void **state)
{
    char ci[256];
    m2m_db *d = NULL;
    struct timespec t0;
    (void)state;

    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%u dbname=m2m user=nobody connect_timeout=1 sslmode=disable",
             closed_port());
    assert_int_equal(m2m_db_open(ci, &d), M2M_OK);
    long mark = log_mark();
    PGresult *res = (PGresult *)&res;
    assert_int_equal(m2m_db_query(d, "SELECT 1", 0, NULL, &res), M2M_ERR_DB_UNAVAILABLE);
    assert_null(res);
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_connect_failed");
    assert_non_null(line);
    json_decref(line);
    free(text);

    /* within the back-off: answered at once, without trying to connect */
    mark = log_mark();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(m2m_db_exec(d, "SELECT 1", 0, NULL), M2M_ERR_DB_UNAVAILABLE);
    assert_int_equal(m2m_db_ping(d), M2M_ERR_DB_UNAVAILABLE);
    assert_int_equal(m2m_db_migrate(d, "auth", NULL, 0), M2M_ERR_DB_UNAVAILABLE);
    assert_true(since_ms(&t0) < 50);
    text = log_since(mark);
    assert_null(strstr(text, "db_connect_failed"));
    free(text);
    m2m_db_close(d);
}

/* A listener that never accepts: the TCP handshake completes (backlog) and
 * libpq waits for the server's answer until connect_timeout (libpq makes 1
 * second at least 2). */
static void test_backoff_timing(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    char ci[256];
    m2m_db *d = NULL;
    struct timespec t0;
    (void)state;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%u dbname=m2m user=nobody connect_timeout=1 sslmode=disable "
             "gssencmode=disable",
             ntohs(sa.sin_port));
    assert_int_equal(m2m_db_open(ci, &d), M2M_OK);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(m2m_db_ping(d), M2M_ERR_DB_UNAVAILABLE);
    double first = since_ms(&t0);
    assert_true(first >= 900); /* it really waited for the server */

    clock_gettime(CLOCK_MONOTONIC, &t0);
    PGresult *res = (PGresult *)&res;
    assert_int_equal(m2m_db_query(d, "SELECT 1", 0, NULL, &res), M2M_ERR_DB_UNAVAILABLE);
    double second = since_ms(&t0);
    assert_null(res);
    if (second >= 100)
        fail_msg("second call took %.0f ms (first %.0f ms): no back-off", second, first);
    m2m_db_close(d);
    close(fd);
}

/* Counts the connections a listener accepts (and closes at once) to see when
 * the library tries to connect again. */
typedef struct {
    int fd;
    atomic_int accepted;
    atomic_int stop;
} counter_srv;

static void *accept_loop(void *arg)
{
    counter_srv *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        atomic_fetch_add(&s->accepted, 1);
        close(c);
    }
    return NULL;
}

static void test_backoff_expires(void **state)
{
    counter_srv s = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    pthread_t th;
    char ci[256];
    m2m_db *d = NULL;
    (void)state;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s.fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(s.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s.fd, 16), 0);
    assert_int_equal(getsockname(s.fd, (struct sockaddr *)&sa, &len), 0);
    struct timeval tv = {.tv_usec = 50000};
    setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* accept wakes up to see stop */
    assert_int_equal(pthread_create(&th, NULL, accept_loop, &s), 0);
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%u dbname=m2m user=nobody connect_timeout=2 sslmode=disable "
             "gssencmode=disable",
             ntohs(sa.sin_port));
    assert_int_equal(m2m_db_open(ci, &d), M2M_OK);

    assert_int_equal(m2m_db_ping(d), M2M_ERR_DB_UNAVAILABLE);
    int n1 = atomic_load(&s.accepted);
    assert_true(n1 >= 1);
    /* within 500 ms: no new attempt */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(m2m_db_ping(d), M2M_ERR_DB_UNAVAILABLE);
        usleep(50000);
    }
    assert_int_equal(atomic_load(&s.accepted), n1);
    /* after it: one new attempt */
    usleep(300000);
    assert_int_equal(m2m_db_ping(d), M2M_ERR_DB_UNAVAILABLE);
    assert_true(atomic_load(&s.accepted) > n1);

    atomic_store(&s.stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    close(s.fd);
    m2m_db_close(d);
}

/* ---- per-thread connections --------------------------------------------- */

typedef struct {
    pthread_barrier_t *barrier;
    int pid1, pid2;
    m2m_err rc;
} pid_arg;

static void *thread_pids(void *p)
{
    pid_arg *a = p;
    PGresult *res = NULL;
    a->rc = m2m_db_query(db, "SELECT pg_backend_pid()", 0, NULL, &res);
    if (!a->rc) {
        a->pid1 = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
        a->rc = m2m_db_query(db, "SELECT pg_backend_pid()", 0, NULL, &res);
    }
    if (!a->rc) {
        a->pid2 = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    /* both threads hold their connection until both have asked */
    pthread_barrier_wait(a->barrier);
    return NULL;
}

static void test_per_thread_connections(void **state)
{
    pthread_barrier_t barrier;
    pthread_t th[2];
    pid_arg args[2] = {{&barrier, 0, 0, M2M_OK}, {&barrier, 0, 0, M2M_OK}};
    (void)state;
    need_db();

    int mine = backend_pid(db);
    assert_int_equal(backend_pid(db), mine); /* one connection per thread, reused */
    pthread_barrier_init(&barrier, NULL, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_pids, &args[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(args[i].rc, M2M_OK);
        assert_true(args[i].pid1 > 0);
        assert_int_equal(args[i].pid1, args[i].pid2);
        assert_int_not_equal(args[i].pid1, mine);
    }
    assert_int_not_equal(args[0].pid1, args[1].pid1);
    /* a thread's connection is closed when the thread exits */
    assert_true(backend_gone(args[0].pid1));
    assert_true(backend_gone(args[1].pid1));
    assert_int_equal(backend_pid(db), mine);
}

static void test_close_closes_connection(void **state)
{
    m2m_db *d = NULL;
    (void)state;
    need_db();

    assert_int_equal(m2m_db_open(dburl, &d), M2M_OK);
    int p = backend_pid(d);
    assert_int_not_equal(p, backend_pid(db)); /* another m2m_db, another connection */
    m2m_db_close(d);
    assert_true(backend_gone(p));
}

/* ---- migrations --------------------------------------------------------- */

static long versions_count(void)
{
    return scalarf_long("SELECT count(*) FROM auth.schema_migrations WHERE version >= %d",
                        MIG_BASE);
}

static char *applied_at(int version)
{
    char sql[160], v[16];
    snprintf(v, sizeof(v), "%d", version);
    const char *p[1] = {v};
    snprintf(sql, sizeof(sql),
             "SELECT name || ' ' || applied_at::text FROM auth.schema_migrations WHERE version = "
             "$1::int");
    return scalar(db, sql, 1, p);
}

static bool advisory_lock_free(void)
{
    PGconn *c = PQconnectdb(dburl);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT pg_try_advisory_lock(hashtext('m2m.migrate.auth'))");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    PQfinish(c); /* releases it */
    return got;
}

/* Not inside a transaction block (nor an aborted one): SAVEPOINT is only
 * allowed in a block and fails with 25P01 outside one. */
static bool no_open_transaction(void)
{
    if (m2m_db_ping(db) != M2M_OK)
        return false;
    long mark = log_mark();
    m2m_err rc = m2m_db_exec(db, "SAVEPOINT unit_probe", 0, NULL);
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_query_failed");
    bool ok = rc == M2M_ERR_INTERNAL && line &&
              strcmp(json_string_value(json_object_get(line, "sqlstate")), "25P01") == 0;
    json_decref(line);
    free(text);
    return ok;
}

static void test_transaction_probe(void **state)
{
    (void)state;
    need_db();
    assert_true(no_open_transaction());
    exec_ok(db, "BEGIN", 0, NULL);
    assert_false(no_open_transaction());
    exec_ok(db, "ROLLBACK", 0, NULL);
    assert_true(no_open_transaction());
}

static void test_migrations(void **state)
{
    char s1[160], s2[256], s3[256], s4bad[320], s4[160];
    (void)state;
    need_db();
    reset_versions();

    snprintf(s1, sizeof(s1), "CREATE TABLE %s (id integer PRIMARY KEY, note text)", tbl("_m1"));
    snprintf(s2, sizeof(s2), "CREATE TABLE %s (x integer); INSERT INTO %s VALUES (2, 'from m2')",
             tbl("_m2"), tbl("_m1"));
    snprintf(s3, sizeof(s3), "CREATE TABLE %s (y integer); INSERT INTO %s VALUES (3, 'from m3')",
             tbl("_m3"), tbl("_m1"));
    snprintf(s4bad, sizeof(s4bad),
             "CREATE TABLE %s (z integer); INSERT INTO %s VALUES (4, 'from m4'); SELECT 1 / 0",
             tbl("_m4"), tbl("_m1"));
    snprintf(s4, sizeof(s4), "CREATE TABLE %s (z integer)", tbl("_m4"));
    const m2m_migration list[] = {
        {MIG_BASE + 1, "unit_m1", s1},
        {MIG_BASE + 2, "unit_m2", s2},
        {MIG_BASE + 3, "unit_m3", s3},
        {MIG_BASE + 4, "unit_m4", s4bad},
    };

    /* two migrations, applied once */
    assert_int_equal(m2m_db_migrate(db, "auth", list, 2), M2M_OK);
    assert_true(table_exists(tbl("_m1")));
    assert_true(table_exists(tbl("_m2")));
    assert_int_equal(versions_count(), 2);
    char *a1 = applied_at(MIG_BASE + 1), *a2 = applied_at(MIG_BASE + 2);
    assert_non_null(a1);
    assert_non_null(a2);
    assert_true(strncmp(a1, "unit_m1 ", 8) == 0);
    assert_true(strncmp(a2, "unit_m2 ", 8) == 0);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s", tbl("_m1")), 1);
    assert_true(no_open_transaction());

    /* again: nothing to do (re-running m1/m2 would fail or add a row) */
    assert_int_equal(m2m_db_migrate(db, "auth", list, 2), M2M_OK);
    assert_int_equal(versions_count(), 2);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s", tbl("_m1")), 1);
    char *b1 = applied_at(MIG_BASE + 1), *b2 = applied_at(MIG_BASE + 2);
    assert_string_equal(a1, b1);
    assert_string_equal(a2, b2);
    free(b1);
    free(b2);

    /* a third added later: applied alone */
    assert_int_equal(m2m_db_migrate(db, "auth", list, 3), M2M_OK);
    assert_true(table_exists(tbl("_m3")));
    assert_int_equal(versions_count(), 3);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s", tbl("_m1")), 2);
    b1 = applied_at(MIG_BASE + 1);
    b2 = applied_at(MIG_BASE + 2);
    assert_string_equal(a1, b1);
    assert_string_equal(a2, b2);
    free(b1);
    free(b2);
    char *a3 = applied_at(MIG_BASE + 3);
    assert_true(strncmp(a3, "unit_m3 ", 8) == 0);
    free(a3);

    /* a failing one: rolled back entirely, not recorded, an error returned */
    long mark = log_mark();
    assert_int_equal(m2m_db_migrate(db, "auth", list, 4), M2M_ERR_INTERNAL);
    char *text = log_since(mark);
    json_t *line = log_find(text, "db_migrate_failed");
    assert_non_null(line);
    json_decref(line);
    free(text);
    assert_false(table_exists(tbl("_m4")));
    assert_int_equal(versions_count(), 3);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s WHERE id = 4", tbl("_m1")), 0);
    assert_true(no_open_transaction());
    assert_true(advisory_lock_free());
    assert_int_equal(m2m_db_ping(db), M2M_OK);

    /* fixed, it goes in */
    const m2m_migration fixed[] = {list[0], list[1], list[2], {MIG_BASE + 4, "unit_m4", s4}};
    assert_int_equal(m2m_db_migrate(db, "auth", fixed, 4), M2M_OK);
    assert_true(table_exists(tbl("_m4")));
    assert_int_equal(versions_count(), 4);
    assert_true(advisory_lock_free());
    free(a1);
    free(a2);
}

/* Two entries with one version: the second's version row cannot be written,
 * so its migration is rolled back and the run fails. */
static void test_migration_version_clash(void **state)
{
    char d1[128], d2[128];
    (void)state;
    need_db();
    reset_versions();

    snprintf(d1, sizeof(d1), "CREATE TABLE %s (a integer)", tbl("_d1"));
    snprintf(d2, sizeof(d2), "CREATE TABLE %s (a integer)", tbl("_d2"));
    const m2m_migration list[] = {
        {MIG_BASE + 11, "dup_a", d1},
        {MIG_BASE + 11, "dup_b", d2},
    };
    assert_int_equal(m2m_db_migrate(db, "auth", list, 2), M2M_ERR_INTERNAL);
    assert_true(table_exists(tbl("_d1")));
    assert_false(table_exists(tbl("_d2")));
    assert_int_equal(versions_count(), 1);
    char *a = applied_at(MIG_BASE + 11);
    assert_true(strncmp(a, "dup_a ", 6) == 0);
    free(a);
    assert_true(no_open_transaction());
    assert_true(advisory_lock_free());
}

static void test_migration_bad_schema(void **state)
{
    static const char *const bad[] = {
        NULL,
        "",
        "Auth",
        "1abc",
        "a-b",
        "auth;drop",
        "a b",
        "auth.x",
        "\"auth\"",
        "auth\xc3\xa9",
        "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd", /* 64 */
    };
    const m2m_migration m = {MIG_BASE + 99, "never", "SELECT 1"};
    (void)state;

    /* checked before anything else: no database needed */
    m2m_db *d = NULL;
    assert_int_equal(m2m_db_open("host=127.0.0.1 port=1 dbname=x user=y", &d), M2M_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m2m_err rc = m2m_db_migrate(d, bad[i], &m, 1);
        if (rc != M2M_ERR_CONFIG)
            fail_msg("schema '%s': %s, want CONFIG", bad[i] ? bad[i] : "(null)", m2m_err_name(rc));
    }
    m2m_db_close(d);
}

typedef struct {
    pthread_barrier_t *barrier;
    const m2m_migration *list;
    size_t n;
    m2m_err rc;
} mig_arg;

static void *migrate_thread(void *p)
{
    mig_arg *a = p;
    /* connect first so that both threads reach the lock together */
    a->rc = m2m_db_ping(db);
    pthread_barrier_wait(a->barrier);
    if (!a->rc)
        a->rc = m2m_db_migrate(db, "auth", a->list, a->n);
    return NULL;
}

static void test_concurrent_migrations(void **state)
{
    char c1[200], c2[200];
    pthread_barrier_t barrier;
    pthread_t th[2];
    (void)state;
    need_db();
    reset_versions();

    snprintf(c1, sizeof(c1), "CREATE TABLE %s (a integer); SELECT pg_sleep(0.3)", tbl("_c1"));
    snprintf(c2, sizeof(c2), "CREATE TABLE %s (b integer); INSERT INTO %s VALUES (1)", tbl("_c2"),
             tbl("_c1"));
    const m2m_migration list[] = {
        {MIG_BASE + 21, "conc_a", c1},
        {MIG_BASE + 22, "conc_b", c2},
    };
    mig_arg args[2] = {{&barrier, list, 2, M2M_OK}, {&barrier, list, 2, M2M_OK}};
    pthread_barrier_init(&barrier, NULL, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, migrate_thread, &args[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&barrier);

    assert_int_equal(args[0].rc, M2M_OK);
    assert_int_equal(args[1].rc, M2M_OK);
    assert_int_equal(versions_count(), 2);
    assert_int_equal(scalarf_long("SELECT count(*) FROM %s", tbl("_c1")), 1);
    assert_true(table_exists(tbl("_c2")));
    assert_true(advisory_lock_free());
}

int main(void)
{
    dburl = getenv("M2M_TEST_DATABASE_URL");
    if (!dburl || !*dburl)
        fprintf(stderr, "test_db: %s\n", HOW_TO_RUN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_invalid_conninfo),
        cmocka_unit_test(test_params_roundtrip),
        cmocka_unit_test(test_null_param),
        cmocka_unit_test(test_unique_violation),
        cmocka_unit_test(test_invalid_input_errors),
        cmocka_unit_test(test_failed_query_log_omits_parameters),
        cmocka_unit_test(test_syntax_error_is_internal),
        cmocka_unit_test(test_param_count_mismatch_is_internal),
        cmocka_unit_test(test_reconnect_after_terminated_backend),
        cmocka_unit_test(test_unreachable_server),
        cmocka_unit_test(test_backoff_timing),
        cmocka_unit_test(test_backoff_expires),
        cmocka_unit_test(test_per_thread_connections),
        cmocka_unit_test(test_close_closes_connection),
        cmocka_unit_test(test_transaction_probe),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_migration_version_clash),
        cmocka_unit_test(test_migration_bad_schema),
        cmocka_unit_test(test_concurrent_migrations),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (failed) {
        /* A failed assertion longjmps past the test's own cleanup: skip the
         * leak check (LeakSanitizer runs from exit()) so that the report
         * shows the failures rather than the leaks they cause. */
        fflush(stdout);
        fflush(stderr);
        _exit(1);
    }
    return 0;
}
