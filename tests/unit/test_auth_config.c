/* auth-service configuration: the documented defaults (README "Configuration"
 * table), overrides from the environment, errors that name the key, and the
 * table itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "auth_config.h"
#include "readme_table.h"

/* Every test starts and ends with no AUTH_* variable of the table set. */
static int clean_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < auth_config_table_len; i++)
        unsetenv(auth_config_table[i].key);
    return 0;
}

static void assert_all_null(const auth_config *c)
{
    assert_null(c->listen_addr);
    assert_null(c->database_url);
    assert_null(c->issuer);
    assert_null(c->default_audience);
    assert_null(c->resources);
    assert_null(c->key_dir);
    assert_null(c->register_scopes);
    assert_null(c->log_level);
}

/* Loads with one variable set and expects a failure naming it. */
static void assert_bad(const char *key, const char *value)
{
    auth_config c;
    char err[256] = "";

    assert_int_equal(setenv(key, value, 1), 0);
    m2m_err rc = auth_config_load(&c, err, sizeof(err));
    if (rc != M2M_ERR_CONFIG) {
        if (rc == M2M_OK)
            auth_config_free(&c);
        fail_msg("%s=\"%s\": load = %s, want CONFIG", key, value, m2m_err_name(rc));
    }
    if (!strstr(err, key))
        fail_msg("%s=\"%s\": error \"%s\" does not name the key", key, value, err);
    /* all or nothing: no string left allocated */
    assert_all_null(&c);
    unsetenv(key);
}

static void documented_defaults(void **state)
{
    (void)state;
    auth_config c;
    char err[256] = "stale";

    assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_string_equal(err, "");
    assert_string_equal(c.listen_addr, "127.0.0.1");
    assert_int_equal(c.port, 9001);
    assert_int_equal(c.metrics_port, 9101);
    assert_int_equal(c.threads, 0); /* one per CPU */
    assert_int_equal(c.blocking_threads, 4);
    assert_string_equal(c.database_url, "host=127.0.0.1 port=5433 dbname=m2m user=auth_service");
    assert_string_equal(c.issuer, "http://localhost:8000");
    assert_string_equal(c.default_audience, "http://localhost:8000/api/currency");
    assert_string_equal(c.resources, "");
    assert_int_equal(c.access_token_ttl, 900);
    assert_string_equal(c.key_dir, "var/auth-keys");
    assert_true(c.registration_open);
    assert_string_equal(c.register_scopes, "currency:read");
    assert_string_equal(c.log_level, "info");
    assert_false(c.access_log);
    assert_int_equal(c.max_body, 16384);
    assert_int_equal(c.conn_timeout, 30);
    assert_int_equal(c.max_conns, 1024);
    assert_int_equal(c.kdf_log_n, 15);
    assert_int_equal(c.kdf_parallel, 1);
    assert_int_equal(c.kdf_concurrency, 2);
    assert_int_equal(c.secret_cache_size, 4096);
    assert_int_equal(c.client_cache_size, 4096);
    assert_int_equal(c.client_cache_ttl, 60);
    auth_config_free(&c);
    assert_all_null(&c);
    auth_config_free(&c); /* twice is harmless */
}

/* The README's configuration table is the documentation (readme_table.h). */
static void readme_documents_every_key_and_default(void **state)
{
    (void)state;
    assert_readme_documents(auth_config_table, auth_config_table_len);
}

static void empty_variable_means_default(void **state)
{
    (void)state;
    auth_config c;
    char err[256];

    setenv("AUTH_PORT", "", 1);
    setenv("AUTH_ISSUER", "", 1);
    setenv("AUTH_REGISTRATION_OPEN", "", 1);
    assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.port, 9001);
    assert_string_equal(c.issuer, "http://localhost:8000");
    assert_true(c.registration_open);
    auth_config_free(&c);
}

static void overrides(void **state)
{
    (void)state;
    auth_config c;
    char err[256];

    setenv("AUTH_LISTEN_ADDR", "0.0.0.0", 1);
    setenv("AUTH_PORT", "8080", 1);
    setenv("AUTH_METRICS_PORT", "0", 1);
    setenv("AUTH_THREADS", "16", 1);
    setenv("AUTH_DATABASE_URL", "postgresql://auth@db/m2m", 1);
    setenv("AUTH_ISSUER", "https://auth.example.com", 1);
    setenv("AUTH_DEFAULT_AUDIENCE", "https://api.example.com", 1);
    setenv("AUTH_RESOURCES", "https://a.example https://b.example", 1);
    setenv("AUTH_ACCESS_TOKEN_TTL", "300", 1);
    setenv("AUTH_KEY_DIR", "/var/lib/auth/keys", 1);
    setenv("AUTH_REGISTRATION_OPEN", "false", 1);
    setenv("AUTH_REGISTER_SCOPES", "currency:read currency:write", 1);
    setenv("AUTH_LOG_LEVEL", "debug", 1);
    setenv("AUTH_ACCESS_LOG", "off", 1);
    setenv("AUTH_MAX_BODY", "256", 1);
    setenv("AUTH_CONN_TIMEOUT", "3600", 1);
    setenv("AUTH_MAX_CONNECTIONS", "16", 1);
    setenv("AUTH_KDF_LOG_N", "10", 1);
    setenv("AUTH_KDF_PARALLEL", "2", 1);
    setenv("AUTH_KDF_CONCURRENCY", "1", 1);
    setenv("AUTH_SECRET_CACHE_SIZE", "0", 1);
    setenv("AUTH_CLIENT_CACHE_SIZE", "0", 1);
    setenv("AUTH_CLIENT_CACHE_TTL", "1", 1);

    assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_string_equal(c.listen_addr, "0.0.0.0");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.metrics_port, 0);
    assert_int_equal(c.threads, 16);
    assert_string_equal(c.database_url, "postgresql://auth@db/m2m");
    assert_string_equal(c.issuer, "https://auth.example.com");
    assert_string_equal(c.default_audience, "https://api.example.com");
    assert_string_equal(c.resources, "https://a.example https://b.example");
    assert_int_equal(c.access_token_ttl, 300);
    assert_string_equal(c.key_dir, "/var/lib/auth/keys");
    assert_false(c.registration_open);
    assert_string_equal(c.register_scopes, "currency:read currency:write");
    assert_string_equal(c.log_level, "debug");
    assert_false(c.access_log);
    assert_int_equal(c.max_body, 256);
    assert_int_equal(c.conn_timeout, 3600);
    assert_int_equal(c.max_conns, 16);
    assert_int_equal(c.kdf_log_n, 10);
    assert_int_equal(c.kdf_parallel, 2);
    assert_int_equal(c.kdf_concurrency, 1);
    assert_int_equal(c.secret_cache_size, 0);
    assert_int_equal(c.client_cache_size, 0);
    assert_int_equal(c.client_cache_ttl, 1);
    auth_config_free(&c);
}

static void boolean_spellings(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "1", "yes", "on", "On"};
    static const char *const no[] = {"false", "False", "0", "no", "off", "OFF"};
    auth_config c;
    char err[256];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        setenv("AUTH_REGISTRATION_OPEN", no[i], 1);
        setenv("AUTH_ACCESS_LOG", yes[i], 1);
        assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
        assert_false(c.registration_open);
        assert_true(c.access_log);
        auth_config_free(&c);
        setenv("AUTH_REGISTRATION_OPEN", yes[i], 1);
        setenv("AUTH_ACCESS_LOG", no[i], 1);
        assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
        assert_true(c.registration_open);
        assert_false(c.access_log);
        auth_config_free(&c);
    }
}

static void bad_values_name_the_key(void **state)
{
    (void)state;
    assert_bad("AUTH_PORT", "70000");
    assert_bad("AUTH_PORT", "65536");
    assert_bad("AUTH_PORT", "-1");
    assert_bad("AUTH_PORT", "80a");
    assert_bad("AUTH_PORT", " 80");
    assert_bad("AUTH_PORT", "0x50");
    assert_bad("AUTH_PORT", "99999999999999999999999");
    assert_bad("AUTH_ACCESS_TOKEN_TTL", "abc");
    assert_bad("AUTH_ACCESS_TOKEN_TTL", "4");
    assert_bad("AUTH_ACCESS_TOKEN_TTL", "86401");
    assert_bad("AUTH_ACCESS_TOKEN_TTL", "900s");
    assert_bad("AUTH_ACCESS_TOKEN_TTL", "15m");
    assert_bad("AUTH_REGISTRATION_OPEN", "maybe");
    assert_bad("AUTH_REGISTRATION_OPEN", "truee");
    assert_bad("AUTH_REGISTRATION_OPEN", "2");
    assert_bad("AUTH_ACCESS_LOG", "y");
    assert_bad("AUTH_THREADS", "-1");
    assert_bad("AUTH_BLOCKING_THREADS", "0");
    assert_bad("AUTH_THREADS", "257");
    assert_bad("AUTH_MAX_BODY", "255");
    assert_bad("AUTH_MAX_CONNECTIONS", "15");
    assert_bad("AUTH_KDF_LOG_N", "9");
    assert_bad("AUTH_KDF_LOG_N", "21");
    assert_bad("AUTH_KDF_PARALLEL", "0");
    assert_bad("AUTH_KDF_CONCURRENCY", "0");
    assert_bad("AUTH_SECRET_CACHE_SIZE", "-1");
    assert_bad("AUTH_CLIENT_CACHE_TTL", "0");
    assert_bad("AUTH_CONN_TIMEOUT", "3601");
    assert_bad("AUTH_METRICS_PORT", "65536");
}

static void bad_value_after_good_strings_frees_them(void **state)
{
    (void)state;
    /* AUTH_KDF_LOG_N comes after most strings in the table: they were
     * already loaded when it fails (ASan checks they are freed). */
    setenv("AUTH_ISSUER", "https://issuer.example", 1);
    setenv("AUTH_KEY_DIR", "/tmp/keys", 1);
    assert_bad("AUTH_KDF_LOG_N", "abc");
}

static void bounds_are_inclusive(void **state)
{
    (void)state;
    auth_config c;
    char err[256];

    setenv("AUTH_ACCESS_TOKEN_TTL", "5", 1);
    setenv("AUTH_PORT", "65535", 1);
    setenv("AUTH_KDF_LOG_N", "20", 1);
    assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.access_token_ttl, 5);
    assert_int_equal(c.port, 65535);
    assert_int_equal(c.kdf_log_n, 20);
    auth_config_free(&c);

    setenv("AUTH_ACCESS_TOKEN_TTL", "86400", 1);
    setenv("AUTH_PORT", "0", 1);
    setenv("AUTH_KDF_LOG_N", "10", 1);
    assert_int_equal(auth_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.access_token_ttl, 86400);
    assert_int_equal(c.port, 0);
    assert_int_equal(c.kdf_log_n, 10);
    auth_config_free(&c);
}

static void table_is_well_formed(void **state)
{
    (void)state;
    assert_true(auth_config_table_len > 0);
    for (size_t i = 0; i < auth_config_table_len; i++) {
        const m2m_cfg_entry *e = &auth_config_table[i];
        assert_non_null(e->key);
        if (strncmp(e->key, "AUTH_", 5) != 0)
            fail_msg("entry %zu: key %s is not AUTH_*", i, e->key);
        if (!e->desc || e->desc[0] == '\0')
            fail_msg("%s has no description", e->key);
        if (!e->def)
            fail_msg("%s has no default", e->key);
        if (e->type == M2M_CFG_INT) {
            char *end;
            long d = strtol(e->def, &end, 10);
            if (e->min > e->max || *end != '\0' || d < e->min || d > e->max)
                fail_msg("%s: default %s outside [%ld, %ld]", e->key, e->def, e->min, e->max);
        }
        assert_true(e->offset < sizeof(auth_config));
        for (size_t j = i + 1; j < auth_config_table_len; j++) {
            if (strcmp(e->key, auth_config_table[j].key) == 0)
                fail_msg("duplicate key %s (entries %zu and %zu)", e->key, i, j);
            if (e->offset == auth_config_table[j].offset)
                fail_msg("%s and %s write the same field", e->key, auth_config_table[j].key);
        }
    }
    /* the database URL may carry a password: it is marked secret */
    bool found = false;
    for (size_t i = 0; i < auth_config_table_len; i++) {
        if (strcmp(auth_config_table[i].key, "AUTH_DATABASE_URL") == 0) {
            found = true;
            assert_true(auth_config_table[i].secret);
        }
    }
    assert_true(found);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, clean_env, clean_env)
    const struct CMUnitTest tests[] = {
        T(documented_defaults),
        T(readme_documents_every_key_and_default),
        T(empty_variable_means_default),
        T(overrides),
        T(boolean_spellings),
        T(bad_values_name_the_key),
        T(bad_value_after_good_strings_frees_them),
        T(bounds_are_inclusive),
        T(table_is_well_formed),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
