/* JSON bodies: only objects, no duplicate keys or trailing bytes, bounded
 * depth, and string accessors whose errors name the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "m2m/json.h"

static m2m_err parse(const char *body, json_t **out, char *err, size_t errlen)
{
    return m2m_json_parse_object(body, strlen(body), out, err, errlen);
}

static void assert_invalid_json(const char *body)
{
    char err[256];
    json_t *o = (json_t *)1;

    assert_int_equal(parse(body, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
    assert_null(o);
    assert_true(strncmp(err, "invalid JSON at line ", 21) == 0);
}

static void assert_not_object(const char *body)
{
    char err[256];
    json_t *o = (json_t *)1;

    assert_int_equal(parse(body, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
    assert_null(o);
    assert_string_equal(err, "body must be a JSON object");
}

/* `depth` copies of open, then `inner`, then `depth` copies of close. */
static char *nested(int depth, const char *open, const char *inner, const char *close)
{
    size_t lo = strlen(open), li = strlen(inner), lc = strlen(close);
    size_t len = (size_t)depth * (lo + lc) + li + 1;
    char *s = malloc(len);
    size_t pos = 0;
    int i;

    assert_non_null(s);
    for (i = 0; i < depth; i++, pos += lo)
        memcpy(s + pos, open, lo);
    memcpy(s + pos, inner, li);
    pos += li;
    for (i = 0; i < depth; i++, pos += lc)
        memcpy(s + pos, close, lc);
    s[pos] = '\0';
    return s;
}

static void test_seed_objects(void **state)
{
    char err[256];
    json_t *o;
    const char *s;

    (void)state;
    assert_int_equal(
        parse("{\"client_id\":\"test\",\"client_secret\":\"secret\",\"app_name\":\"Test\"}", &o,
              err, sizeof(err)),
        M2M_OK);
    assert_int_equal(m2m_json_get_string(o, "client_id", true, 64, &s, err, sizeof(err)), M2M_OK);
    assert_string_equal(s, "test");
    assert_int_equal(m2m_json_get_string(o, "app_name", false, 64, &s, err, sizeof(err)), M2M_OK);
    assert_string_equal(s, "Test");
    json_decref(o);

    assert_int_equal(parse(" {\"refresh_token\": \"YOUR_REFRESH_TOKEN\"}\n", &o, err, sizeof(err)),
                     M2M_OK);
    json_decref(o);
    assert_int_equal(parse("{}", &o, err, sizeof(err)), M2M_OK);
    assert_int_equal(json_object_size(o), 0);
    json_decref(o);
}

static void test_length_is_respected(void **state)
{
    char err[256];
    json_t *o;
    const char *body = "{\"a\":1}garbage";

    (void)state;
    assert_int_equal(m2m_json_parse_object(body, 7, &o, err, sizeof(err)), M2M_OK);
    json_decref(o);
    assert_int_equal(m2m_json_parse_object(body, strlen(body), &o, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
}

static void test_not_objects(void **state)
{
    (void)state;
    assert_not_object("[]");
    assert_not_object("[{\"a\":1}]");
    assert_not_object("\"string\"");
    assert_not_object("42");
    assert_not_object("true");
    assert_not_object("null");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    assert_invalid_json("");
    assert_invalid_json("   ");
    assert_invalid_json("{");
    assert_invalid_json("{\"a\":}");
    assert_invalid_json("{'a':1}");
    assert_invalid_json("{\"a\":1,}");
    assert_invalid_json("{\"a\":\"\\u0000\"}"); /* NUL refused by jansson */
    assert_invalid_json("{\"a\":\"\xff\"}");    /* not UTF-8 */
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    assert_invalid_json("{\"a\":1} x");
    assert_invalid_json("{\"a\":1}{\"b\":2}");
    assert_invalid_json("{}}");
}

static void test_duplicate_keys(void **state)
{
    char err[256];
    json_t *o = (json_t *)1;

    (void)state;
    assert_int_equal(parse("{\"client_id\":\"a\",\"client_id\":\"b\"}", &o, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_null(o);
    assert_non_null(strstr(err, "duplicate"));
}

static void test_error_position(void **state)
{
    char err[256];
    json_t *o;

    (void)state;
    assert_int_equal(parse("{\n  \"a\": 1,\n  \"b\": ?\n}", &o, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_true(strncmp(err, "invalid JSON at line 3 column ", 30) == 0);
}

static void test_depth(void **state)
{
    char err[256];
    json_t *o;
    char *doc;

    (void)state;
    /* {"a":{"a":...{}...}}: the empty object is the innermost level. */
    doc = nested(M2M_JSON_MAX_DEPTH - 1, "{\"a\":", "{}", "}"); /* 16 levels */
    assert_int_equal(parse(doc, &o, err, sizeof(err)), M2M_OK);
    json_decref(o);
    free(doc);

    doc = nested(M2M_JSON_MAX_DEPTH, "{\"a\":", "{}", "}"); /* 17 levels */
    o = (json_t *)1;
    assert_int_equal(parse(doc, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
    assert_null(o);
    assert_string_equal(err, "JSON nested deeper than 16 levels");
    free(doc);

    /* Scalars at the bottom do not add a level. */
    doc = nested(M2M_JSON_MAX_DEPTH - 1, "{\"a\":", "{\"b\":1}", "}");
    assert_int_equal(parse(doc, &o, err, sizeof(err)), M2M_OK);
    json_decref(o);
    free(doc);

    /* Arrays count as levels too. */
    doc = nested(M2M_JSON_MAX_DEPTH - 1, "[", "[]", "]");
    {
        size_t n = strlen(doc) + 8;
        char *obj = malloc(n);

        assert_non_null(obj);
        snprintf(obj, n, "{\"a\":%s}", doc); /* 1 + 16 levels */
        assert_int_equal(parse(obj, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
        free(obj);
    }
    free(doc);
    doc = nested(M2M_JSON_MAX_DEPTH - 2, "[", "[]", "]");
    {
        size_t n = strlen(doc) + 8;
        char *obj = malloc(n);

        assert_non_null(obj);
        snprintf(obj, n, "{\"a\":%s}", doc); /* 1 + 15 levels */
        assert_int_equal(parse(obj, &o, err, sizeof(err)), M2M_OK);
        json_decref(o);
        free(obj);
    }
    free(doc);

    /* Depth is the deepest branch, found even after shallow siblings. */
    doc = nested(M2M_JSON_MAX_DEPTH, "{\"a\":", "{}", "}");
    {
        size_t n = strlen(doc) + 64;
        char *obj = malloc(n);

        assert_non_null(obj);
        snprintf(obj, n, "{\"x\":[1,2,{}],\"y\":{\"z\":[]},\"deep\":%s}", doc);
        assert_int_equal(parse(obj, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
        free(obj);
    }
    free(doc);

    /* Far beyond the limit (jansson's own cap is 2048): refused, no crash. */
    doc = nested(5000, "{\"a\":", "{}", "}");
    assert_int_equal(parse(doc, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
    free(doc);
    doc = nested(1500, "{\"a\":", "{}", "}");
    assert_int_equal(parse(doc, &o, err, sizeof(err)), M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "JSON nested deeper than 16 levels");
    free(doc);
}

static void test_errbuf_optional_and_truncated(void **state)
{
    char small[8];
    json_t *o;

    (void)state;
    assert_int_equal(parse("[]", &o, NULL, 0), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(parse("[]", &o, small, sizeof(small)), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_int_equal(m2m_json_parse_object(NULL, 0, &o, small, sizeof(small)),
                     M2M_ERR_INVALID_REQUEST);
}

static void test_get_string(void **state)
{
    char err[256];
    json_t *o;
    const char *s;

    (void)state;
    assert_int_equal(parse("{\"s\":\"hello\",\"n\":5,\"b\":true,\"arr\":[],\"obj\":{},"
                           "\"nul\":null,\"empty\":\"\",\"utf\":\"\\u00e9\"}",
                           &o, err, sizeof(err)),
                     M2M_OK);

    /* Present and within bounds. */
    assert_int_equal(m2m_json_get_string(o, "s", true, 5, &s, err, sizeof(err)), M2M_OK);
    assert_string_equal(s, "hello");
    assert_int_equal(m2m_json_get_string(o, "empty", true, 0, &s, err, sizeof(err)), M2M_OK);
    assert_string_equal(s, "");
    /* maxlen counts bytes, not characters: é is 2 bytes in UTF-8. */
    assert_int_equal(m2m_json_get_string(o, "utf", true, 2, &s, err, sizeof(err)), M2M_OK);
    assert_int_equal(m2m_json_get_string(o, "utf", true, 1, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "utf: at most 1 bytes");

    /* Too long. */
    s = "x";
    assert_int_equal(m2m_json_get_string(o, "s", true, 4, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_null(s);
    assert_string_equal(err, "s: at most 4 bytes");

    /* Absent: required vs optional. */
    assert_int_equal(m2m_json_get_string(o, "missing", true, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "missing: required");
    s = "x";
    assert_int_equal(m2m_json_get_string(o, "missing", false, 10, &s, err, sizeof(err)), M2M_OK);
    assert_null(s);

    /* null is treated as absent. */
    assert_int_equal(m2m_json_get_string(o, "nul", true, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "nul: required");
    s = "x";
    assert_int_equal(m2m_json_get_string(o, "nul", false, 10, &s, err, sizeof(err)), M2M_OK);
    assert_null(s);

    /* Wrong types, required or not. */
    assert_int_equal(m2m_json_get_string(o, "n", true, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "n: must be a string");
    assert_int_equal(m2m_json_get_string(o, "b", false, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "b: must be a string");
    assert_int_equal(m2m_json_get_string(o, "arr", false, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "arr: must be a string");
    assert_int_equal(m2m_json_get_string(o, "obj", false, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "obj: must be a string");

    /* Embedded NUL: only possible in an object built in code. */
    assert_int_equal(json_object_set_new(o, "z", json_stringn("a\0b", 3)), 0);
    assert_int_equal(m2m_json_get_string(o, "z", true, 10, &s, err, sizeof(err)),
                     M2M_ERR_INVALID_REQUEST);
    assert_string_equal(err, "z: must not contain NUL");
    assert_null(s);

    /* A NULL object behaves like an empty one; errbuf may be absent. */
    assert_int_equal(m2m_json_get_string(NULL, "k", true, 10, &s, NULL, 0),
                     M2M_ERR_INVALID_REQUEST);
    assert_int_equal(m2m_json_get_string(NULL, "k", false, 10, &s, NULL, 0), M2M_OK);
    json_decref(o);
}

static void test_dump(void **state)
{
    json_t *o = json_pack("{s:s, s:i, s:[i,i]}", "a", "x y", "b", 2, "c", 1, 2);
    json_t *str = json_string("z");
    char *s;

    (void)state;
    assert_non_null(o);
    s = m2m_json_dump(o);
    assert_string_equal(s, "{\"a\":\"x y\",\"b\":2,\"c\":[1,2]}");
    free(s);
    s = m2m_json_dump(str);
    assert_string_equal(s, "\"z\"");
    free(s);
    assert_null(m2m_json_dump(NULL));
    json_decref(o);
    json_decref(str);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_objects),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_not_objects),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_error_position),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_errbuf_optional_and_truncated),
        cmocka_unit_test(test_get_string),
        cmocka_unit_test(test_dump),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
