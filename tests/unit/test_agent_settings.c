/* The agent's settings: the validation rules (the auth-service's), and the
 * state file - written atomically with mode 0600, read back exactly,
 * refused with a message naming the file when it is not a valid state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "settings.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/m2m-agent-settings-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void test_validation(void **state)
{
    char long_id[200], long_url[600];
    (void)state;
    assert_true(agent_client_id_valid("crypto-client"));
    assert_true(agent_client_id_valid("a.b_c:d@e-f9"));
    assert_false(agent_client_id_valid(""));
    assert_false(agent_client_id_valid("-leading"));
    assert_false(agent_client_id_valid("x'; DROP TABLE clients;--"));
    assert_false(agent_client_id_valid("sp ace"));
    assert_false(agent_client_id_valid("caf\xc3\xa9"));
    memset(long_id, 'a', 128);
    long_id[128] = '\0';
    assert_true(agent_client_id_valid(long_id));
    long_id[128] = 'a';
    long_id[129] = '\0';
    assert_false(agent_client_id_valid(long_id));

    assert_true(agent_secret_valid("secret"));
    assert_false(agent_secret_valid("short"));
    assert_false(agent_secret_valid("tab\there!"));
    assert_false(agent_secret_valid(NULL));

    assert_true(agent_url_valid("http://localhost:8000"));
    assert_true(agent_url_valid("https://auth.example/base/"));
    assert_false(agent_url_valid("ftp://x"));
    assert_false(agent_url_valid("http://"));
    assert_false(agent_url_valid("http:///path"));
    assert_false(agent_url_valid("http://a b"));
    assert_false(agent_url_valid("http://a/?q=1"));
    assert_false(agent_url_valid("http://a/#f"));
    assert_false(agent_url_valid("http://a\r\nX-Injected: 1"));
    memcpy(long_url, "http://", 7);
    memset(long_url + 7, 'h', 520);
    long_url[527] = '\0';
    assert_false(agent_url_valid(long_url));

    char out[AGENT_URL_MAX + 1];
    agent_url_set(out, "http://a/b///");
    assert_string_equal(out, "http://a/b");
}

static void test_round_trip(void **state)
{
    char path[300], errbuf[256];
    agent_settings s = {0}, back = {0};
    struct stat st;
    (void)state;

    snprintf(path, sizeof(path), "%s/sub/deeper/state.json", dir); /* parents are created */
    snprintf(s.client_id, sizeof(s.client_id), "agent-1");
    snprintf(s.client_secret, sizeof(s.client_secret), "p\"a\\ss w0rd");
    snprintf(s.server_url, sizeof(s.server_url), "http://127.0.0.1:8000");
    snprintf(s.app_name, sizeof(s.app_name), "Agent \"one\"");
    assert_int_equal(agent_settings_save(path, &s, errbuf, sizeof(errbuf)), M2M_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char parent[300];
    snprintf(parent, sizeof(parent), "%s/sub", dir);
    assert_int_equal(stat(parent, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(parent, sizeof(parent), "%s/sub/deeper", dir);
    assert_int_equal(stat(parent, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char tmp[310];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0); /* renamed away */

    assert_int_equal(agent_settings_load(path, &back, errbuf, sizeof(errbuf)), M2M_OK);
    assert_string_equal(back.client_id, s.client_id);
    assert_string_equal(back.client_secret, s.client_secret);
    assert_string_equal(back.server_url, s.server_url);
    assert_string_equal(back.app_name, s.app_name);

    agent_settings_wipe(&back);
    assert_string_equal(back.client_secret, "");
    assert_string_equal(back.client_id, "agent-1");
}

static void test_load_errors(void **state)
{
    char path[300], errbuf[256];
    agent_settings s = {0};
    struct stat st;
    (void)state;

    snprintf(path, sizeof(path), "%s/none.json", dir);
    assert_int_equal(agent_settings_load(path, &s, errbuf, sizeof(errbuf)), M2M_ERR_NOT_FOUND);

    static const char *const bad[] = {
        "not json",
        "[]",
        "{\"version\":2,\"client_id\":\"a\"}",
        "{\"client_id\":\"a\"}",
        "{\"version\":1,\"client_id\":\"bad id\"}",
        "{\"version\":1,\"client_id\":\"a\",\"client_secret\":\"123\"}",
        "{\"version\":1,\"client_id\":\"a\",\"server_url\":\"ftp://x\"}",
        "{\"version\":1,\"client_id\":7}",
        "{\"version\":1,\"client_id\":\"a\",\"client_id\":\"b\"}",
    };
    snprintf(path, sizeof(path), "%s/bad.json", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i], 0600);
        memset(&s, 0, sizeof(s));
        errbuf[0] = '\0';
        assert_int_equal(agent_settings_load(path, &s, errbuf, sizeof(errbuf)), M2M_ERR_CONFIG);
        assert_non_null(strstr(errbuf, path)); /* the message names the file */
    }

    /* a state others may read is made private, then read */
    write_file(path, "{\"version\":1,\"client_id\":\"ok\",\"client_secret\":\"secret\"}", 0644);
    assert_int_equal(agent_settings_load(path, &s, errbuf, sizeof(errbuf)), M2M_OK);
    assert_string_equal(s.client_id, "ok");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* a symlink is not followed; a directory is not a state */
    char link[300];
    snprintf(link, sizeof(link), "%s/link.json", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(agent_settings_load(link, &s, errbuf, sizeof(errbuf)), M2M_ERR_CONFIG);
    assert_int_equal(agent_settings_load(dir, &s, errbuf, sizeof(errbuf)), M2M_ERR_CONFIG);

    /* too large */
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, ' ', 19999);
    big[19999] = '\0';
    write_file(path, big, 0600);
    free(big);
    assert_int_equal(agent_settings_load(path, &s, errbuf, sizeof(errbuf)), M2M_ERR_CONFIG);

    /* a file that cannot be written is an error, not a crash */
    agent_settings w = {0};
    snprintf(w.client_id, sizeof(w.client_id), "x");
    snprintf(path, sizeof(path), "/proc/m2m-no/such/state.json");
    assert_int_not_equal(agent_settings_save(path, &w, errbuf, sizeof(errbuf)), M2M_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
