/* The agent's cache of the last good data and its JSON slicing: values come
 * back byte for byte (exact decimals), per symbol from the list, with their
 * age. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cache.h"

static const char LIST[] =
    " [ {\"symbol\":\"BTC\",\"name\":\"Bitcoin\",\"rate\":67501.9302287997,"
    "\"last_updated\":\"2026-11-22T07:48:43.435Z\"},\n"
    "{\"symbol\":\"X,]}\\\"Y\",\"name\":\"odd [name] {with} \\\"quotes\\\", commas\","
    "\"rate\":1e-7,\"nested\":{\"a\":[1,{\"b\":\"]\"}]}} ,"
    "{\"name\":\"no symbol\",\"rate\":1} ] ";

typedef struct {
    char texts[8][256];
    size_t n;
} collected;

static m2m_err collect(const char *el, size_t n, void *arg)
{
    collected *c = arg;
    if (c->n == 8 || n >= 256)
        return M2M_ERR_PAYLOAD_TOO_LARGE;
    memcpy(c->texts[c->n], el, n);
    c->texts[c->n++][n] = '\0';
    return M2M_OK;
}

static void test_elements(void **state)
{
    collected c = {0};
    (void)state;
    assert_int_equal(agent_json_elements(LIST, strlen(LIST), collect, &c), M2M_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.texts[0], "{\"symbol\":\"BTC\",\"name\":\"Bitcoin\",\"rate\":"
                                    "67501.9302287997,\"last_updated\":\"2026-11-22T07:48:43.435Z\"}");
    assert_string_equal(c.texts[2], "{\"name\":\"no symbol\",\"rate\":1}");
    /* scalars and an empty list */
    memset(&c, 0, sizeof(c));
    assert_int_equal(agent_json_elements("[1, \"a,b\" ,true,null]", 22, collect, &c), M2M_OK);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.texts[0], "1");
    assert_string_equal(c.texts[1], "\"a,b\"");
    assert_string_equal(c.texts[3], "null");
    memset(&c, 0, sizeof(c));
    assert_int_equal(agent_json_elements(" [ ] ", 5, collect, &c), M2M_OK);
    assert_int_equal(c.n, 0);
    /* not a list; and the callback's error stops the walk */
    assert_int_equal(agent_json_elements("{\"a\":1}", 7, collect, &c), M2M_ERR_INVALID_REQUEST);
    c.n = 8;
    assert_int_equal(agent_json_elements("[1]", 3, collect, &c), M2M_ERR_PAYLOAD_TOO_LARGE);
}

static void test_member(void **state)
{
    collected c = {0};
    size_t n = 0;
    const char *v;
    (void)state;

    assert_int_equal(agent_json_elements(LIST, strlen(LIST), collect, &c), M2M_OK);
    v = agent_json_member(c.texts[0], strlen(c.texts[0]), "rate", &n);
    assert_non_null(v);
    assert_int_equal(n, strlen("67501.9302287997"));
    assert_memory_equal(v, "67501.9302287997", n);
    v = agent_json_member(c.texts[1], strlen(c.texts[1]), "symbol", &n);
    assert_non_null(v);
    assert_memory_equal(v, "\"X,]}\\\"Y\"", n);
    v = agent_json_member(c.texts[1], strlen(c.texts[1]), "nested", &n);
    assert_non_null(v);
    assert_memory_equal(v, "{\"a\":[1,{\"b\":\"]\"}]}", n);
    v = agent_json_member(c.texts[1], strlen(c.texts[1]), "rate", &n);
    assert_memory_equal(v, "1e-7", n);
    /* a key is matched decoded, and only as a key */
    assert_null(agent_json_member("{\"x\":\"rate\"}", 12, "rate", &n));
    v = agent_json_member("{\"r\\u0061te\":5}", 15, "rate", &n);
    assert_non_null(v);
    assert_memory_equal(v, "5", n);
    assert_null(agent_json_member("[1]", 3, "rate", &n));
    assert_null(agent_json_member("{}", 2, "rate", &n));
}

static void test_cache(void **state)
{
    agent_cache *c = agent_cache_new();
    agent_cached got;
    double age;
    (void)state;

    assert_non_null(c);
    assert_int_equal(agent_cache_get(c, NULL, &got), M2M_ERR_NOT_FOUND);
    assert_int_equal(agent_cache_get(c, "BTC", &got), M2M_ERR_NOT_FOUND);
    assert_int_equal(agent_cache_last_fetch(c, &age), 0);

    assert_int_equal(agent_cache_put_all(c, LIST, strlen(LIST)), M2M_OK);
    assert_int_equal(agent_cache_get(c, NULL, &got), M2M_OK);
    assert_string_equal(got.json, LIST);
    assert_true(got.age >= 0 && got.age < 1);
    assert_true(got.fetched_at > 0);
    free(got.json);
    /* each element under its symbol, byte for byte */
    assert_int_equal(agent_cache_get(c, "BTC", &got), M2M_OK);
    assert_non_null(strstr(got.json, "\"rate\":67501.9302287997,"));
    assert_int_equal(got.json[0], '{');
    assert_int_equal(got.json[strlen(got.json) - 1], '}');
    free(got.json);
    assert_int_equal(agent_cache_get(c, "X,]}\"Y", &got), M2M_OK);
    free(got.json);
    assert_int_equal(agent_cache_get(c, "ETH", &got), M2M_ERR_NOT_FOUND);

    /* one symbol replaced by itself; the list keeps its own copy */
    assert_int_equal(agent_cache_put_one(c, "BTC", "{\"symbol\":\"BTC\",\"rate\":2}", 25), M2M_OK);
    assert_int_equal(agent_cache_get(c, "BTC", &got), M2M_OK);
    assert_string_equal(got.json, "{\"symbol\":\"BTC\",\"rate\":2}");
    free(got.json);
    assert_int_equal(agent_cache_get(c, NULL, &got), M2M_OK);
    assert_string_equal(got.json, LIST);
    free(got.json);

    /* clear forgets everything, and the cache works again after */
    agent_cache_clear(c);
    assert_int_equal(agent_cache_get(c, NULL, &got), M2M_ERR_NOT_FOUND);
    assert_int_equal(agent_cache_get(c, "BTC", &got), M2M_ERR_NOT_FOUND);
    assert_int_equal(agent_cache_last_fetch(c, &age), 0);
    assert_int_equal(agent_cache_put_all(c, LIST, strlen(LIST)), M2M_OK);

    /* the age grows */
    usleep(300 * 1000);
    assert_true(agent_cache_last_fetch(c, &age) > 0);
    assert_true(age >= 0.25 && age < 5);
    /* a symbol too long is refused, not truncated */
    assert_int_equal(agent_cache_put_one(c, "ABCDEFGHIJK", "{}", 2), M2M_ERR_PAYLOAD_TOO_LARGE);
    agent_cache_free(c);
    agent_cache_free(NULL);
}

/* The table is bounded: symbol number AGENT_CACHE_SYMBOLS + 1 is refused. */
static void test_cache_bounded(void **state)
{
    agent_cache *c = agent_cache_new();
    char sym[16];
    (void)state;
    for (int i = 0; i < AGENT_CACHE_SYMBOLS; i++) {
        snprintf(sym, sizeof(sym), "S%d", i);
        assert_int_equal(agent_cache_put_one(c, sym, "{}", 2), M2M_OK);
    }
    assert_int_equal(agent_cache_put_one(c, "ONEMORE", "{}", 2), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(agent_cache_put_one(c, "S0", "{\"a\":1}", 7), M2M_OK); /* replacing is fine */
    agent_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elements),
        cmocka_unit_test(test_member),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_cache_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
