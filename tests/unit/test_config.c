/* Configuration tables: defaults, overrides, errors naming the key, secrets
 * kept out of messages, and --help output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "m2m/config.h"

typedef struct {
    char *db_url;
    long port;
    bool debug;
    char *name;
    long pin;
    char *secret;
} test_cfg;

static const m2m_cfg_entry table[] = {
    {"T_DB_URL", M2M_CFG_STR, NULL, "database connection string", offsetof(test_cfg, db_url), 0, 0,
     false},
    {"T_PORT", M2M_CFG_INT, "9001", "listen port", offsetof(test_cfg, port), 1, 65535, false},
    {"T_DEBUG", M2M_CFG_BOOL, "false", "verbose logging", offsetof(test_cfg, debug), 0, 0, false},
    {"T_NAME", M2M_CFG_STR, "svc", "service name", offsetof(test_cfg, name), 0, 0, false},
    {"T_PIN", M2M_CFG_INT, "0", "a secret number", offsetof(test_cfg, pin), 0, 9999, true},
    {"T_SECRET", M2M_CFG_STR, "s3cr3t-default", "client secret", offsetof(test_cfg, secret), 0, 0,
     true},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

/* A fake environment: NULL-terminated list of "KEY=value". */
typedef struct {
    const char *const *vars;
    int calls;
} fake_env;

static const char *fake_lookup(const char *key, void *arg)
{
    fake_env *env = arg;
    size_t klen = strlen(key);

    env->calls++;
    for (const char *const *p = env->vars; *p; p++) {
        if (strncmp(*p, key, klen) == 0 && (*p)[klen] == '=')
            return *p + klen + 1;
    }
    return NULL;
}

static m2m_err load(const char *const *vars, test_cfg *c, char *err, size_t errlen)
{
    fake_env env = {vars, 0};

    return m2m_config_load_with(table, NTABLE, c, fake_lookup, &env, err, errlen);
}

static void assert_clean(const test_cfg *c)
{
    assert_null(c->db_url);
    assert_null(c->name);
    assert_null(c->secret);
}

static void test_defaults(void **state)
{
    const char *const vars[] = {"T_DB_URL=postgres://localhost/m2m", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_OK);
    assert_string_equal(c.db_url, "postgres://localhost/m2m");
    assert_int_equal(c.port, 9001);
    assert_false(c.debug);
    assert_string_equal(c.name, "svc");
    assert_int_equal(c.pin, 0);
    assert_string_equal(c.secret, "s3cr3t-default");
    m2m_config_free(table, NTABLE, &c);
    assert_clean(&c);
    m2m_config_free(table, NTABLE, &c); /* twice is fine */
}

static void test_overrides(void **state)
{
    const char *const vars[] = {
        "T_DB_URL=postgres://db/x", "T_PORT=8080", "T_DEBUG=YES", "T_NAME=auth", "T_PIN=1234",
        "T_SECRET=other",           NULL,
    };
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_OK);
    assert_string_equal(c.db_url, "postgres://db/x");
    assert_int_equal(c.port, 8080);
    assert_true(c.debug);
    assert_string_equal(c.name, "auth");
    assert_int_equal(c.pin, 1234);
    assert_string_equal(c.secret, "other");

    /* Loading again replaces (and frees) the previous strings. */
    {
        const char *const vars2[] = {"T_DB_URL=postgres://db/y", NULL};

        assert_int_equal(load(vars2, &c, err, sizeof(err)), M2M_OK);
        assert_string_equal(c.db_url, "postgres://db/y");
        assert_string_equal(c.name, "svc");
        assert_int_equal(c.port, 9001);
    }
    m2m_config_free(table, NTABLE, &c);
}

static void test_int_bounds_and_forms(void **state)
{
    static const struct {
        const char *port;
        long want;
    } ok[] = {{"T_PORT=1", 1}, {"T_PORT=65535", 65535}, {"T_PORT=+80", 80}, {"T_PORT=0080", 80}};
    test_cfg c = {0};
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *const vars[] = {"T_DB_URL=x", ok[i].port, NULL};

        assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_OK);
        assert_int_equal(c.port, ok[i].want);
        m2m_config_free(table, NTABLE, &c);
    }
}

static void assert_port_refused(const char *value)
{
    char var[128], want[256], err[256];
    const char *const vars[] = {"T_DB_URL=x", var, NULL};
    test_cfg c = {0};

    snprintf(var, sizeof(var), "T_PORT=%s", value);
    snprintf(want, sizeof(want), "T_PORT: expected an integer in [1, 65535], got '%s'", value);
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_string_equal(err, want);
    /* T_DB_URL was loaded before the failure: it must be freed again. */
    assert_clean(&c);
}

static void test_int_errors(void **state)
{
    (void)state;
    assert_port_refused("0");
    assert_port_refused("65536");
    assert_port_refused("-1");
    assert_port_refused("80x");
    assert_port_refused("x80");
    assert_port_refused(" 80");
    assert_port_refused("80 ");
    assert_port_refused("8.0");
    assert_port_refused("0x50");
    assert_port_refused("-");
    assert_port_refused("99999999999999999999999");
}

static void test_bool_forms(void **state)
{
    static const struct {
        const char *v;
        bool want;
    } forms[] = {{"T_DEBUG=true", true},   {"T_DEBUG=TRUE", true}, {"T_DEBUG=1", true},
                 {"T_DEBUG=yes", true},    {"T_DEBUG=On", true},   {"T_DEBUG=false", false},
                 {"T_DEBUG=False", false}, {"T_DEBUG=0", false},   {"T_DEBUG=no", false},
                 {"T_DEBUG=OFF", false}};
    test_cfg c = {0};
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        const char *const vars[] = {"T_DB_URL=x", forms[i].v, NULL};

        c.debug = !forms[i].want;
        assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_OK);
        assert_int_equal(c.debug, forms[i].want);
        m2m_config_free(table, NTABLE, &c);
    }
}

static void test_bool_error(void **state)
{
    const char *const vars[] = {"T_DB_URL=x", "T_DEBUG=maybe", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_true(strncmp(err, "T_DEBUG: ", 9) == 0);
    assert_non_null(strstr(err, "'maybe'"));
    assert_clean(&c);
}

static void test_required_missing(void **state)
{
    const char *const none[] = {"T_PORT=80", NULL};
    const char *const empty[] = {"T_DB_URL=", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(none, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_string_equal(err, "T_DB_URL is required");
    assert_clean(&c);
    /* KEY= (as compose passes an unset variable) does not satisfy it. */
    assert_int_equal(load(empty, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_string_equal(err, "T_DB_URL is required");
}

static void test_empty_uses_default(void **state)
{
    const char *const vars[] = {"T_DB_URL=x", "T_PORT=", "T_NAME=", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.port, 9001);
    assert_string_equal(c.name, "svc");
    m2m_config_free(table, NTABLE, &c);
}

static void test_error_frees_everything(void **state)
{
    /* The failing entry comes after three strings... */
    const char *const vars[] = {"T_DB_URL=x", "T_NAME=n", "T_PIN=abc", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    /* ...including strings left by a previous successful load. */
    c.secret = strdup("previous");
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_clean(&c);
}

static void test_secret_not_echoed(void **state)
{
    const char *const vars[] = {"T_DB_URL=x", "T_PIN=hunter2", NULL};
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(load(vars, &c, err, sizeof(err)), M2M_ERR_CONFIG);
    assert_string_equal(err, "T_PIN: expected an integer in [0, 9999]");
    assert_null(strstr(err, "hunter2"));
    assert_clean(&c);
}

static void test_bad_default_names_key(void **state)
{
    static const m2m_cfg_entry bad[] = {
        {"T_BAD", M2M_CFG_INT, "ten", "broken default", 0, 0, 100, false},
    };
    long v = 0;
    char err[256];
    fake_env env = {(const char *const[]){NULL}, 0};

    (void)state;
    assert_int_equal(m2m_config_load_with(bad, 1, &v, fake_lookup, &env, err, sizeof(err)),
                     M2M_ERR_CONFIG);
    assert_string_equal(err, "T_BAD: expected an integer in [0, 100], got 'ten'");
}

static void test_errbuf_optional(void **state)
{
    const char *const vars[] = {NULL};
    test_cfg c = {0};

    (void)state;
    assert_int_equal(load(vars, &c, NULL, 0), M2M_ERR_CONFIG);
}

static void test_load_from_environment(void **state)
{
    test_cfg c = {0};
    char err[256];

    (void)state;
    assert_int_equal(setenv("T_DB_URL", "postgres://env/db", 1), 0);
    assert_int_equal(setenv("T_PORT", "7000", 1), 0);
    assert_int_equal(m2m_config_load(table, NTABLE, &c, err, sizeof(err)), M2M_OK);
    assert_string_equal(c.db_url, "postgres://env/db");
    assert_int_equal(c.port, 7000);
    m2m_config_free(table, NTABLE, &c);
    unsetenv("T_DB_URL");
    unsetenv("T_PORT");
}

static void test_help(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    size_t i;
    char *line, *save = NULL;
    long desc_col = -1;

    (void)state;
    assert_non_null(f);
    m2m_config_print_help(f, table, NTABLE);
    assert_int_equal(fclose(f), 0);

    for (i = 0; i < NTABLE; i++) {
        assert_non_null(strstr(text, table[i].key));
        assert_non_null(strstr(text, table[i].desc));
    }
    assert_non_null(strstr(text, "(required)"));
    assert_non_null(strstr(text, "9001"));
    assert_non_null(strstr(text, "1..65535"));
    /* The secret's default never appears. */
    assert_null(strstr(text, "s3cr3t-default"));

    /* Aligned: every description starts in the same column. */
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *d = NULL;

        if (strncmp(line, "VARIABLE", 8) == 0)
            d = strstr(line, "DESCRIPTION");
        for (i = 0; !d && i < NTABLE; i++) {
            if (strncmp(line, table[i].key, strlen(table[i].key)) == 0 &&
                line[strlen(table[i].key)] == ' ')
                d = strstr(line, table[i].desc);
        }
        assert_non_null(d);
        if (desc_col < 0)
            desc_col = d - line;
        assert_int_equal(d - line, desc_col);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_int_bounds_and_forms),
        cmocka_unit_test(test_int_errors),
        cmocka_unit_test(test_bool_forms),
        cmocka_unit_test(test_bool_error),
        cmocka_unit_test(test_required_missing),
        cmocka_unit_test(test_empty_uses_default),
        cmocka_unit_test(test_error_frees_everything),
        cmocka_unit_test(test_secret_not_echoed),
        cmocka_unit_test(test_bad_default_names_key),
        cmocka_unit_test(test_errbuf_optional),
        cmocka_unit_test(test_load_from_environment),
        cmocka_unit_test(test_help),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
