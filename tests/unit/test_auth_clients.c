/* auth-service client registry and client-row cache.
 *
 * The validators and auth_client_copy need nothing. The rest runs against a
 * real PostgreSQL given by M2M_TEST_DATABASE_URL (a libpq conninfo for the
 * auth_service role); without it those tests FAIL, they are not skipped:
 *
 *   bash scripts/pg.sh init /tmp/pgauthunit 55488
 *   bash scripts/pg.sh start /tmp/pgauthunit
 *   bash scripts/pg.sh bootstrap /tmp/pgauthunit
 *   export M2M_TEST_DATABASE_URL="$(bash scripts/pg.sh conninfo /tmp/pgauthunit auth_service)"
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <time.h>
#include <unistd.h>

#include "client_cache.h"
#include "clients.h"
#include "m2m/db.h"
#include "m2m/log.h"

extern const m2m_migration auth_migrations[];
extern const size_t auth_migrations_count;

#define ENV_URL "M2M_TEST_DATABASE_URL"
/* Nothing listens on port 1: a handle whose every query fails, to tell a
 * cache hit (no query) from a database read. */
#define DEAD_CONNINFO "host=127.0.0.1 port=1 dbname=none user=none connect_timeout=1"

/* ---- auth_client_id_valid / auth_role_valid ---------------------------- */

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void client_id_valid_table(void **state)
{
    (void)state;
    static const char *const good[] = {
        "a",           "Z",
        "0",           "9",
        "client",      "Client-1",
        "svc.billing", "svc_billing",
        "svc:billing", "svc@example.com",
        "a-b.c_d:e@f", "0-",
        "a.",          "a..b",
        "A1b2C3",      "crypto-client",
    };
    static const char *const bad[] = {
        "",
        "-a",
        ".a",
        "_a",
        ":a",
        "@a",
        " a",
        "a ",
        "a b",
        "a\tb",
        "a\nb",
        "a'b",
        "a\"b",
        "a;b",
        "a--'",
        "x'; DROP TABLE auth.clients; --",
        "a%b",
        "a%27",
        "a/b",
        "a\\b",
        "a,b",
        "a+b",
        "a=b",
        "a*",
        "a?",
        "a#",
        "a&b",
        "a(b)",
        "a<b>",
        "a|b",
        "a$",
        "a!",
        "a~",
        "a`",
        "a[0]",
        "a{b}",
        "caf\xc3\xa9",       /* é */
        "\xc3\xa9t\xc3\xa9", /* leading non-ASCII */
        "a\xe2\x80\x8b",     /* zero-width space */
        "\xd0\xb0",          /* Cyrillic a */
        "a\x7f",
        "a\x01",
        "a\xff",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!auth_client_id_valid(good[i]))
            fail_msg("client id \"%s\" refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (auth_client_id_valid(bad[i]))
            fail_msg("client id \"%s\" accepted", bad[i]);
    assert_false(auth_client_id_valid(NULL));

    char *s128 = repeat('a', 128), *s129 = repeat('a', 129), *s1000 = repeat('b', 1000);
    bool v128 = auth_client_id_valid(s128), v129 = auth_client_id_valid(s129);
    bool v1000 = auth_client_id_valid(s1000);
    s128[127] = '-';
    bool v128dash = auth_client_id_valid(s128);
    s128[0] = '-';
    bool v128lead = auth_client_id_valid(s128);
    free(s128);
    free(s129);
    free(s1000);
    assert_true(v128);
    assert_false(v129);
    assert_false(v1000);
    assert_true(v128dash);
    assert_false(v128lead);
}

static void role_valid_table(void **state)
{
    (void)state;
    static const char *const good[] = {"a",        "admin", "user", "read_only",
                                       "ops-team", "a1",    "z9_-", "service2"};
    static const char *const bad[] = {
        "",          "Admin",        "ADMIN",    "aDmin",
        "1admin",    "_admin",       "-admin",   " admin",
        "admin ",    "ad min",       "admin.x",  "admin:x",
        "admin@x",   "admin'",       "admin;",   "a'; DROP TABLE x; --",
        "admin\n",   "adm\xc3\xadn", "\xc3\xa1", "r\xc3\xb4le",
        "admin\x7f",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!auth_role_valid(good[i]))
            fail_msg("role \"%s\" refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (auth_role_valid(bad[i]))
            fail_msg("role \"%s\" accepted", bad[i]);
    assert_false(auth_role_valid(NULL));

    char *r32 = repeat('r', 32), *r33 = repeat('r', 33);
    bool v32 = auth_role_valid(r32), v33 = auth_role_valid(r33);
    free(r32);
    free(r33);
    assert_true(v32);
    assert_false(v33);
}

/* ---- auth_client_copy ---------------------------------------------------- */

static void copy_is_deep(void **state)
{
    (void)state;
    char *id = strdup("copy-client"), *hash = strdup("$scrypt$ln=10,r=8,p=1$s$h");
    char *app = strdup("Copy App"), *scopes = strdup("a b"), *role = strdup("admin");
    char *grants = strdup("client_credentials refresh_token");
    auth_client src = {.client_id = id,
                       .secret_hash = hash,
                       .app_name = app,
                       .scopes = scopes,
                       .role = role,
                       .grant_types = grants,
                       .access_token_ttl = 321,
                       .active = false};
    auth_client dst, dst2;

    assert_int_equal(auth_client_copy(&src, &dst), M2M_OK);
    assert_non_null(dst.owned);
    assert_null(dst.res);
    /* overwrite and free every source string */
    char *all[] = {id, hash, app, scopes, role, grants};
    for (size_t i = 0; i < 6; i++) {
        memset(all[i], 'X', strlen(all[i]));
        free(all[i]);
    }
    memset(&src, 0, sizeof(src));
    assert_string_equal(dst.client_id, "copy-client");
    assert_string_equal(dst.secret_hash, "$scrypt$ln=10,r=8,p=1$s$h");
    assert_string_equal(dst.app_name, "Copy App");
    assert_string_equal(dst.scopes, "a b");
    assert_string_equal(dst.role, "admin");
    assert_string_equal(dst.grant_types, "client_credentials refresh_token");
    assert_int_equal(dst.access_token_ttl, 321);
    assert_false(dst.active);

    /* a copy of a copy survives clearing its source */
    assert_int_equal(auth_client_copy(&dst, &dst2), M2M_OK);
    assert_ptr_not_equal(dst2.client_id, dst.client_id);
    auth_client_clear(&dst);
    assert_null(dst.client_id);
    assert_null(dst.owned);
    assert_string_equal(dst2.client_id, "copy-client");
    assert_string_equal(dst2.secret_hash, "$scrypt$ln=10,r=8,p=1$s$h");
    assert_string_equal(dst2.app_name, "Copy App");
    assert_string_equal(dst2.scopes, "a b");
    assert_string_equal(dst2.role, "admin");
    assert_string_equal(dst2.grant_types, "client_credentials refresh_token");
    assert_int_equal(dst2.access_token_ttl, 321);
    assert_false(dst2.active);
    auth_client_clear(&dst2);
}

static void copy_keeps_null_role(void **state)
{
    (void)state;
    auth_client src = {.client_id = "c",
                       .secret_hash = "h",
                       .app_name = "",
                       .scopes = "",
                       .role = NULL,
                       .grant_types = "client_credentials",
                       .active = true};
    auth_client dst;

    assert_int_equal(auth_client_copy(&src, &dst), M2M_OK);
    assert_null(dst.role);
    assert_string_equal(dst.client_id, "c");
    assert_string_equal(dst.app_name, "");
    assert_string_equal(dst.scopes, "");
    assert_true(dst.active);
    assert_int_equal(dst.access_token_ttl, 0);
    auth_client_clear(&dst);

    /* every field NULL */
    auth_client none = {0};
    assert_int_equal(auth_client_copy(&none, &dst), M2M_OK);
    assert_null(dst.client_id);
    assert_null(dst.secret_hash);
    assert_null(dst.app_name);
    assert_null(dst.scopes);
    assert_null(dst.role);
    assert_null(dst.grant_types);
    auth_client_clear(&dst);
}

/* ---- database fixture ---------------------------------------------------- */

static m2m_db *db;    /* the "service" connection */
static m2m_db *other; /* another handle, as another instance or an operator */
static m2m_db *dead;  /* never reaches a database */
static const char *conninfo;
static auth_client_cache *cache; /* freed by teardown */
static auth_client got;          /* cleared by teardown */

static void need_db(void)
{
    static bool migrated;
    conninfo = getenv(ENV_URL);
    if (!conninfo || !conninfo[0])
        fail_msg(
            ENV_URL
            " is not set: these tests need a real PostgreSQL. Start one with "
            "`bash scripts/pg.sh init /tmp/pgauthunit 55488 && bash scripts/pg.sh start "
            "/tmp/pgauthunit && bash scripts/pg.sh bootstrap /tmp/pgauthunit` and export " ENV_URL
            "=\"$(bash scripts/pg.sh conninfo /tmp/pgauthunit auth_service)\"");
    if (!db) {
        assert_int_equal(m2m_db_open(conninfo, &db), M2M_OK);
        assert_int_equal(m2m_db_open(conninfo, &other), M2M_OK);
        assert_int_equal(m2m_db_open(DEAD_CONNINFO, &dead), M2M_OK);
    }
    if (!migrated) {
        m2m_err rc = m2m_db_migrate(db, "auth", auth_migrations, auth_migrations_count);
        if (rc)
            fail_msg("auth migrations failed on %s: %s", ENV_URL, m2m_err_name(rc));
        /* idempotent */
        assert_int_equal(m2m_db_migrate(db, "auth", auth_migrations, auth_migrations_count),
                         M2M_OK);
        migrated = true;
    }
}

/* ids this test inserted (or may have), deleted by teardown */
static char made[8][96];
static size_t nmade;

static int teardown(void **state)
{
    (void)state;
    auth_client_clear(&got);
    auth_client_cache_free(cache);
    cache = NULL;
    if (nmade && other) {
        char list[8 * 100] = "{";
        for (size_t i = 0; i < nmade; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "",
                     made[i]);
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "}");
        const char *params[1] = {list};
        if (m2m_db_exec(other, "DELETE FROM auth.clients WHERE client_id = ANY($1::text[])", 1,
                        params) != M2M_OK)
            fprintf(stderr, "teardown: could not delete test clients %s\n", list);
    }
    nmade = 0;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    m2m_db_close(db);
    m2m_db_close(other);
    m2m_db_close(dead);
    return 0;
}

/* A client id no other run or test uses. */
static void unique_id(char *out, size_t cap, const char *tag)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, cap, "ut-%s-%ld-%lld%09ld-%u", tag, (long)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec, counter++);
    assert_true(nmade < sizeof(made) / sizeof(made[0]));
    snprintf(made[nmade++], sizeof(made[0]), "%s", out);
}

static void insert_client(const char *id, const char *scopes, const char *role)
{
    auth_client c = {.client_id = id,
                     .secret_hash = "$scrypt$ln=10,r=8,p=1$c2FsdA$aGFzaA",
                     .app_name = "unit test",
                     .scopes = scopes,
                     .role = role,
                     .grant_types = "client_credentials",
                     .access_token_ttl = 0};
    m2m_err rc = auth_client_insert(db, &c, "operator");
    if (rc)
        fail_msg("insert %s: %s", id, m2m_err_name(rc));
}

static void sql(const char *stmt, const char *id)
{
    const char *params[1] = {id};
    m2m_err rc = m2m_db_exec(other, stmt, 1, params);
    if (rc)
        fail_msg("%s [%s]: %s", stmt, id, m2m_err_name(rc));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static auth_client_cache *new_cache(const char *ci, size_t slots, long ttl)
{
    auth_client_cache *c = NULL;
    assert_int_equal(auth_client_cache_new(ci, slots, ttl, &c), M2M_OK);
    assert_non_null(c);
    return c;
}

static void wait_listening(auth_client_cache *c)
{
    double t0 = now_s();
    while (!auth_client_cache_listening(c)) {
        if (now_s() - t0 > 5.0)
            fail_msg("client cache not listening after 5 s");
        usleep(10 * 1000);
    }
}

/* Looks id up through the database until the cache answers it without one.
 * A notification still in flight (e.g. for the INSERT that created the row)
 * rightly stops a lookup from storing what it read, so this may take more
 * than one round; it must not take more than 1 s. Returns the rounds. */
static int populate(const char *id)
{
    double t0 = now_s();
    for (int round = 1;; round++) {
        m2m_err rc = auth_client_lookup(cache, db, id, &got);
        if (rc)
            fail_msg("lookup of %s through the database: %s", id, m2m_err_name(rc));
        assert_string_equal(got.client_id, id);
        auth_client_clear(&got);
        rc = auth_client_lookup(cache, dead, id, &got);
        auth_client_clear(&got);
        if (rc == M2M_OK)
            return round;
        if (rc != M2M_ERR_DB_UNAVAILABLE)
            fail_msg("lookup of %s without database: %s", id, m2m_err_name(rc));
        if (now_s() - t0 > 1.0)
            fail_msg("%s still not served from the cache after %d lookups (1 s)", id, round);
        usleep(5 * 1000);
    }
}

/* ---- registry ------------------------------------------------------------ */

static void insert_get_round_trip(void **state)
{
    (void)state;
    char id[96];
    need_db();
    unique_id(id, sizeof(id), "rt");
    auth_client c = {.client_id = id,
                     .secret_hash = "$scrypt$ln=15,r=8,p=1$abc$def",
                     .app_name = "Round Trip",
                     .scopes = "currency:read currency:write",
                     .role = "admin",
                     .grant_types = "client_credentials refresh_token",
                     .access_token_ttl = 600,
                     .active = true};
    assert_int_equal(auth_client_insert(db, &c, "operator"), M2M_OK);

    assert_int_equal(auth_client_get(db, id, &got), M2M_OK);
    assert_non_null(got.res);
    assert_string_equal(got.client_id, id);
    assert_string_equal(got.secret_hash, "$scrypt$ln=15,r=8,p=1$abc$def");
    assert_string_equal(got.app_name, "Round Trip");
    assert_string_equal(got.scopes, "currency:read currency:write");
    assert_non_null(got.role);
    assert_string_equal(got.role, "admin");
    assert_string_equal(got.grant_types, "client_credentials refresh_token");
    assert_int_equal(got.access_token_ttl, 600);
    assert_true(got.active);
    auth_client_clear(&got);
    assert_null(got.res);
    assert_null(got.client_id);
}

static void insert_defaults_round_trip(void **state)
{
    (void)state;
    char id[96];
    need_db();
    unique_id(id, sizeof(id), "def");
    /* NULL app, scopes, role and grant types; ttl 0 = the server default */
    auth_client c = {.client_id = id, .secret_hash = "h"};
    assert_int_equal(auth_client_insert(db, &c, "self"), M2M_OK);
    assert_int_equal(auth_client_get(db, id, &got), M2M_OK);
    assert_string_equal(got.client_id, id);
    assert_string_equal(got.app_name, "");
    assert_string_equal(got.scopes, "");
    assert_null(got.role);
    assert_string_equal(got.grant_types, "client_credentials");
    assert_int_equal(got.access_token_ttl, 0);
    assert_true(got.active);
}

static void insert_duplicate_conflicts(void **state)
{
    (void)state;
    char id[96];
    need_db();
    unique_id(id, sizeof(id), "dup");
    insert_client(id, "a", NULL);
    auth_client c = {.client_id = id, .secret_hash = "other", .scopes = "b"};
    assert_int_equal(auth_client_insert(db, &c, "self"), M2M_ERR_CONFLICT);
    /* the first row is untouched */
    assert_int_equal(auth_client_get(db, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "a");
    assert_string_not_equal(got.secret_hash, "other");
}

static void insert_invalid_rows_refused(void **state)
{
    (void)state;
    char id[96];
    need_db();
    /* ids and roles the validators refuse are refused by the table too */
    auth_client c = {.client_id = "-bad", .secret_hash = "h"};
    assert_int_equal(auth_client_insert(db, &c, "self"), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(auth_client_get(db, "-bad", &got), M2M_ERR_NOT_FOUND);

    unique_id(id, sizeof(id), "badrole");
    auth_client r = {.client_id = id, .secret_hash = "h", .role = "Admin"};
    assert_int_equal(auth_client_insert(db, &r, "self"), M2M_ERR_INVALID_REQUEST);
    auth_client t = {.client_id = id, .secret_hash = "h", .access_token_ttl = 4};
    assert_int_equal(auth_client_insert(db, &t, "self"), M2M_ERR_INVALID_REQUEST);
    auth_client w = {.client_id = id, .secret_hash = "h"};
    assert_int_equal(auth_client_insert(db, &w, "somebody"), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(auth_client_get(db, id, &got), M2M_ERR_NOT_FOUND);
}

static void get_unknown_not_found(void **state)
{
    (void)state;
    char id[96];
    need_db();
    unique_id(id, sizeof(id), "none");
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(auth_client_get(db, id, &got), M2M_ERR_NOT_FOUND);
    assert_null(got.res);
    assert_null(got.client_id);
    /* SQL in the id is only data */
    assert_int_equal(auth_client_get(db, "x' OR '1'='1", &got), M2M_ERR_NOT_FOUND);
}

static void get_without_database(void **state)
{
    (void)state;
    need_db();
    assert_int_equal(auth_client_get(dead, "anyone", &got), M2M_ERR_DB_UNAVAILABLE);
    assert_null(got.res);
}

/* ---- client cache ------------------------------------------------------- */

static void cache_lookup_populates(void **state)
{
    (void)state;
    char id[96];
    need_db();
    /* inserted before the cache listens: no notification of it is pending */
    unique_id(id, sizeof(id), "pop");
    insert_client(id, "currency:read", "admin");
    cache = new_cache(conninfo, 64, 60);
    wait_listening(cache);

    /* not cached yet: a lookup without a database fails */
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
    int rounds = populate(id);
    if (rounds > 1)
        print_message("cached after %d lookups\n", rounds);
    /* now it is: the same lookup needs no database */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_OK);
        assert_string_equal(got.client_id, id);
        assert_string_equal(got.scopes, "currency:read");
        assert_string_equal(got.role, "admin");
        assert_string_equal(got.app_name, "unit test");
        assert_true(got.active);
        auth_client_clear(&got);
    }
}

static void cache_unknown_not_found_and_not_cached(void **state)
{
    (void)state;
    char id[96];
    need_db();
    cache = new_cache(conninfo, 64, 60);
    wait_listening(cache);
    unique_id(id, sizeof(id), "unk");
    assert_int_equal(auth_client_lookup(cache, db, id, &got), M2M_ERR_NOT_FOUND);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
    /* created afterwards: found at once */
    insert_client(id, "x", NULL);
    assert_int_equal(auth_client_lookup(cache, db, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "x");
}

/* Polls lookups through the live database for up to 1 s until `done`. */
typedef bool (*seen_fn)(m2m_err rc, const auth_client *c);

static double poll_until(const char *id, seen_fn done)
{
    double t0 = now_s();
    for (;;) {
        m2m_err rc = auth_client_lookup(cache, db, id, &got);
        bool ok = done(rc, &got);
        auth_client_clear(&got);
        double dt = now_s() - t0;
        if (ok)
            return dt;
        if (dt > 1.0)
            fail_msg("change to %s not seen by lookups after %.3f s (last rc %s)", id, dt,
                     m2m_err_name(rc));
        usleep(5 * 1000);
    }
}

static bool seen_inactive(m2m_err rc, const auth_client *c)
{
    return rc == M2M_OK && !c->active && strcmp(c->scopes, "currency:read") == 0;
}

static bool seen_scopes(m2m_err rc, const auth_client *c)
{
    return rc == M2M_OK && strcmp(c->scopes, "currency:read currency:write") == 0;
}

static bool seen_gone(m2m_err rc, const auth_client *c)
{
    (void)c;
    return rc == M2M_ERR_NOT_FOUND;
}

static void cache_sees_update_and_delete(void **state)
{
    (void)state;
    char id[96];
    need_db();
    cache = new_cache(conninfo, 64, 60); /* ttl far beyond the 1 s we allow */
    wait_listening(cache);
    unique_id(id, sizeof(id), "upd");
    insert_client(id, "currency:read", NULL);
    populate(id);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_OK); /* cached */
    assert_true(got.active);
    auth_client_clear(&got);

    sql("UPDATE auth.clients SET active = false WHERE client_id = $1", id);
    double dt = poll_until(id, seen_inactive);
    print_message("disable seen after %.1f ms\n", dt * 1e3);
    /* the new row is cached in turn */
    populate(id);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_OK);
    assert_false(got.active);
    auth_client_clear(&got);

    sql("UPDATE auth.clients SET scopes = 'currency:read currency:write' WHERE client_id = $1", id);
    dt = poll_until(id, seen_scopes);
    print_message("scope change seen after %.1f ms\n", dt * 1e3);
    populate(id);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "currency:read currency:write");
    auth_client_clear(&got);

    sql("DELETE FROM auth.clients WHERE client_id = $1", id);
    dt = poll_until(id, seen_gone);
    print_message("delete seen after %.1f ms\n", dt * 1e3);
    /* and nothing of it stays in the cache */
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
}

static void cache_invalidate_drops_entry(void **state)
{
    (void)state;
    char a[96], b[96];
    need_db();
    cache = new_cache(conninfo, 64, 60);
    wait_listening(cache);
    unique_id(a, sizeof(a), "inv");
    unique_id(b, sizeof(b), "inv");
    insert_client(a, "a", NULL);
    insert_client(b, "b", NULL);
    populate(a);
    populate(b);
    auth_client_cache_invalidate(cache, a);
    assert_int_equal(auth_client_lookup(cache, dead, a, &got), M2M_ERR_DB_UNAVAILABLE);
    assert_int_equal(auth_client_lookup(cache, dead, b, &got), M2M_OK); /* untouched */
    assert_string_equal(got.client_id, b);
    auth_client_clear(&got);
    /* invalidating an id never cached is harmless */
    auth_client_cache_invalidate(cache, "never-seen");
    assert_int_equal(auth_client_lookup(cache, dead, b, &got), M2M_OK);
}

static void cache_entries_expire(void **state)
{
    (void)state;
    char id[96];
    need_db();
    cache = new_cache(conninfo, 64, 1);
    wait_listening(cache);
    unique_id(id, sizeof(id), "ttl");
    insert_client(id, "a", NULL);
    populate(id);
    sleep(2);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
}

static void cache_one_slot_no_crosstalk(void **state)
{
    (void)state;
    char a[96], b[96];
    need_db();
    cache = new_cache(conninfo, 1, 60);
    wait_listening(cache);
    unique_id(a, sizeof(a), "one");
    unique_id(b, sizeof(b), "one");
    insert_client(a, "scope-a", NULL);
    insert_client(b, "scope-b", "admin");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(auth_client_lookup(cache, db, a, &got), M2M_OK);
        assert_string_equal(got.client_id, a);
        assert_string_equal(got.scopes, "scope-a");
        assert_null(got.role);
        auth_client_clear(&got);
        assert_int_equal(auth_client_lookup(cache, db, b, &got), M2M_OK);
        assert_string_equal(got.client_id, b);
        assert_string_equal(got.scopes, "scope-b");
        assert_string_equal(got.role, "admin");
        auth_client_clear(&got);
    }
    /* Whoever holds the only slot, neither id is answered with the other's
     * row from the cache (other processes' notifications may bump the slot,
     * so which one is cached is not fixed). */
    for (int i = 0; i < 2; i++) {
        const char *id = i ? b : a;
        m2m_err rc = auth_client_lookup(cache, dead, id, &got);
        if (rc == M2M_OK) {
            assert_string_equal(got.client_id, id);
            assert_string_equal(got.scopes, i ? "scope-b" : "scope-a");
        } else {
            assert_int_equal(rc, M2M_ERR_DB_UNAVAILABLE);
        }
        auth_client_clear(&got);
    }
    /* and the slot does serve: the last one looked up is answered */
    populate(a);
    assert_int_equal(auth_client_lookup(cache, dead, a, &got), M2M_OK);
    assert_string_equal(got.scopes, "scope-a");
    auth_client_clear(&got);
    assert_int_equal(auth_client_lookup(cache, dead, b, &got), M2M_ERR_DB_UNAVAILABLE);
}

static void cache_zero_slots_is_null(void **state)
{
    (void)state;
    char id[96];
    need_db();
    assert_int_equal(auth_client_cache_new(conninfo, 0, 60, &cache), M2M_OK);
    assert_null(cache);
    assert_false(auth_client_cache_listening(cache));
    unique_id(id, sizeof(id), "zero");
    insert_client(id, "z", NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(auth_client_lookup(NULL, db, id, &got), M2M_OK);
        assert_string_equal(got.client_id, id);
        assert_string_equal(got.scopes, "z");
        auth_client_clear(&got);
        /* every lookup reads the database */
        assert_int_equal(auth_client_lookup(NULL, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
    }
    sql("UPDATE auth.clients SET scopes = 'y' WHERE client_id = $1", id);
    assert_int_equal(auth_client_lookup(NULL, db, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "y");
    auth_client_clear(&got);
    assert_int_equal(auth_client_lookup(NULL, db, "ut-no-such-client", &got), M2M_ERR_NOT_FOUND);
    auth_client_cache_invalidate(NULL, id);
    auth_client_cache_free(NULL);
}

static void cache_deaf_listener_bypasses(void **state)
{
    (void)state;
    char id[96];
    need_db();
    /* the listener can never connect: nothing may be served from the cache */
    cache = new_cache(DEAD_CONNINFO, 64, 60);
    unique_id(id, sizeof(id), "deaf");
    insert_client(id, "d", NULL);
    usleep(300 * 1000);
    assert_false(auth_client_cache_listening(cache));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(auth_client_lookup(cache, db, id, &got), M2M_OK);
        assert_string_equal(got.scopes, "d");
        auth_client_clear(&got);
        assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
    }
    sql("UPDATE auth.clients SET scopes = 'e' WHERE client_id = $1", id);
    assert_int_equal(auth_client_lookup(cache, db, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "e");
}

/* The listener's connection is killed: while it is gone the cache is
 * bypassed, and a change made meanwhile (its notification is lost) is not
 * served stale once the listener is back. */
static void cache_survives_listener_loss(void **state)
{
    (void)state;
    char id[96], appname[64], ci[1024];
    const char *params[1];
    PGresult *res = NULL;
    need_db();
    snprintf(appname, sizeof(appname), "ut_cache_%ld", (long)getpid());
    snprintf(ci, sizeof(ci), "%s application_name=%s", conninfo, appname);
    cache = new_cache(ci, 64, 60);
    wait_listening(cache);
    unique_id(id, sizeof(id), "loss");
    insert_client(id, "before", NULL);
    populate(id);

    params[0] = appname;
    assert_int_equal(m2m_db_query(other,
                                  "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)"
                                  " FROM pg_stat_activity WHERE application_name = $1) t",
                                  1, params, &res),
                     M2M_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    double t0 = now_s();
    while (auth_client_cache_listening(cache)) {
        if (now_s() - t0 > 2.0)
            fail_msg("listener did not notice its connection was terminated within 2 s");
        usleep(5 * 1000);
    }
    /* deaf: nothing served from the cache */
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_ERR_DB_UNAVAILABLE);
    sql("UPDATE auth.clients SET scopes = 'after' WHERE client_id = $1", id);
    wait_listening(cache); /* reconnects by itself */
    assert_int_equal(auth_client_lookup(cache, db, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "after");
    auth_client_clear(&got);
    /* and caches again */
    populate(id);
    assert_int_equal(auth_client_lookup(cache, dead, id, &got), M2M_OK);
    assert_string_equal(got.scopes, "after");
}

int main(void)
{
    m2m_log_init("test_auth_clients", M2M_LOG_WARN);
#define T(fn) cmocka_unit_test_teardown(fn, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(client_id_valid_table),
        cmocka_unit_test(role_valid_table),
        cmocka_unit_test(copy_is_deep),
        cmocka_unit_test(copy_keeps_null_role),
        T(insert_get_round_trip),
        T(insert_defaults_round_trip),
        T(insert_duplicate_conflicts),
        T(insert_invalid_rows_refused),
        T(get_unknown_not_found),
        T(get_without_database),
        T(cache_lookup_populates),
        T(cache_unknown_not_found_and_not_cached),
        T(cache_sees_update_and_delete),
        T(cache_invalidate_drops_entry),
        T(cache_entries_expire),
        T(cache_one_slot_no_crosstalk),
        T(cache_zero_slots_is_null),
        T(cache_deaf_listener_bypasses),
        T(cache_survives_listener_loss),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
