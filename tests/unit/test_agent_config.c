/* crypto-client configuration: defaults documented in the README, values
 * from the environment, errors that name the key, the secret never in
 * --help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent_config.h"
#include "readme_table.h"

static int clean_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < agent_config_table_len; i++)
        unsetenv(agent_config_table[i].key);
    return 0;
}

static void readme_documents_every_key_and_default(void **state)
{
    (void)state;
    assert_readme_documents(agent_config_table, agent_config_table_len);
}

static void defaults(void **state)
{
    agent_config c;
    char err[256];
    (void)state;
    assert_int_equal(agent_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.port, 9003);
    assert_int_equal(c.metrics_port, 9103);
    assert_string_equal(c.server_url, "http://127.0.0.1:8000");
    assert_string_equal(c.client_id, "");
    assert_string_equal(c.scope, "currency:read");
    assert_int_equal(c.fetch_interval, 10);
    assert_int_equal(c.renew_percent, 80);
    assert_int_equal(c.renew_skew, 30);
    agent_config_free(&c);
}

static void overrides_and_errors(void **state)
{
    agent_config c;
    char err[256];
    (void)state;
    setenv("AGENT_FETCH_INTERVAL", "0", 1);
    setenv("AGENT_CLIENT_SECRET", "s3cret-value", 1);
    assert_int_equal(agent_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_int_equal(c.fetch_interval, 0);
    assert_string_equal(c.client_secret, "s3cret-value");
    agent_config_free(&c);

    setenv("AGENT_RENEW_PERCENT", "101", 1);
    assert_int_not_equal(agent_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_non_null(strstr(err, "AGENT_RENEW_PERCENT"));
    agent_config_free(&c);
    setenv("AGENT_RENEW_PERCENT", "5", 1); /* below 10: renewing constantly */
    assert_int_not_equal(agent_config_load(&c, err, sizeof(err)), M2M_OK);
    agent_config_free(&c);
    unsetenv("AGENT_RENEW_PERCENT");
    setenv("AGENT_PORT", "http", 1);
    assert_int_not_equal(agent_config_load(&c, err, sizeof(err)), M2M_OK);
    assert_non_null(strstr(err, "AGENT_PORT"));
    agent_config_free(&c);
}

/* --help shows the secret's key but never a value given for it. */
static void help_hides_the_secret(void **state)
{
    char *text = NULL;
    size_t len = 0;
    (void)state;
    setenv("AGENT_CLIENT_SECRET", "do-not-print-me", 1);
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    m2m_config_print_help(f, agent_config_table, agent_config_table_len);
    fclose(f);
    assert_non_null(strstr(text, "AGENT_CLIENT_SECRET"));
    assert_null(strstr(text, "do-not-print-me"));
    free(text);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, clean_env, clean_env)
    const struct CMUnitTest tests[] = {
        T(readme_documents_every_key_and_default),
        T(defaults),
        T(overrides_and_errors),
        T(help_hides_the_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
