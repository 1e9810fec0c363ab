/* application/x-www-form-urlencoded parsing: the seeds' bodies, RFC 6749
 * token requests, and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "m2m/form.h"

static m2m_err parse(const char *body, m2m_form *f)
{
    return m2m_form_parse(body, strlen(body), f);
}

/* A failed parse must leave nothing allocated and the form empty. */
static void assert_refused(const char *body)
{
    m2m_form f;
    size_t i;

    memset(&f, 0xAB, sizeof(f)); /* garbage in: parse must not trust it */
    assert_int_equal(parse(body, &f), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(f.n, 0);
    for (i = 0; i < M2M_FORM_MAX_FIELDS; i++) {
        assert_null(f.fields[i].key);
        assert_null(f.fields[i].value);
    }
    m2m_form_free(&f); /* still safe */
}

static void test_seed_username_password(void **state)
{
    m2m_form f;
    size_t count;

    (void)state;
    /* The seed's curl line: -d "username=test_client&password=test_secret" */
    assert_int_equal(parse("username=test_client&password=test_secret", &f), M2M_OK);
    assert_int_equal(f.n, 2);
    assert_string_equal(m2m_form_get(&f, "username", &count), "test_client");
    assert_int_equal(count, 1);
    assert_string_equal(m2m_form_get(&f, "password", &count), "test_secret");
    assert_int_equal(count, 1);
    assert_null(m2m_form_get(&f, "grant_type", &count));
    assert_int_equal(count, 0);
    m2m_form_free(&f);
}

static void test_client_credentials_grant(void **state)
{
    m2m_form f;

    (void)state;
    assert_int_equal(parse("grant_type=client_credentials&scope=currency%3Aread+currency%3Awrite"
                           "&resource=https%3A%2F%2Fapi.example.com%2Fcurrency",
                           &f),
                     M2M_OK);
    assert_int_equal(f.n, 3);
    assert_string_equal(m2m_form_get(&f, "grant_type", NULL), "client_credentials");
    assert_string_equal(m2m_form_get(&f, "scope", NULL), "currency:read currency:write");
    assert_string_equal(m2m_form_get(&f, "resource", NULL), "https://api.example.com/currency");
    m2m_form_free(&f);
}

static void test_encoded_basic_like_values(void **state)
{
    m2m_form f;

    (void)state;
    /* RFC 6749 §2.3.1 form-encodes client ids and secrets; a secret may
     * hold any byte, including '+', '&', '=', '%' and UTF-8. */
    assert_int_equal(parse("client_id=svc%3Aone&client_secret=a%2Bb%26c%3Dd%25e+f%C3%A9", &f),
                     M2M_OK);
    assert_string_equal(m2m_form_get(&f, "client_id", NULL), "svc:one");
    assert_string_equal(m2m_form_get(&f, "client_secret", NULL), "a+b&c=d%e f\xc3\xa9");
    m2m_form_free(&f);

    /* Lower-case hex and base64 padding. */
    assert_int_equal(parse("token=abc%2fdef%3d%3D", &f), M2M_OK);
    assert_string_equal(m2m_form_get(&f, "token", NULL), "abc/def==");
    m2m_form_free(&f);
}

static void test_plus_and_encoded_key(void **state)
{
    m2m_form f;

    (void)state;
    assert_int_equal(parse("a+b=c+d&%61%62=x%20y", &f), M2M_OK);
    assert_string_equal(m2m_form_get(&f, "a b", NULL), "c d");
    assert_string_equal(m2m_form_get(&f, "ab", NULL), "x y");
    m2m_form_free(&f);
}

static void test_empty_body(void **state)
{
    m2m_form f;

    (void)state;
    assert_int_equal(m2m_form_parse("", 0, &f), M2M_OK);
    assert_int_equal(f.n, 0);
    m2m_form_free(&f);
    assert_int_equal(m2m_form_parse(NULL, 0, &f), M2M_OK);
    assert_int_equal(f.n, 0);
    m2m_form_free(&f);
}

static void test_key_without_value(void **state)
{
    m2m_form f;
    size_t count;

    (void)state;
    assert_int_equal(parse("a&b=&c=3", &f), M2M_OK);
    assert_int_equal(f.n, 3);
    assert_string_equal(m2m_form_get(&f, "a", &count), "");
    assert_int_equal(count, 1);
    assert_string_equal(m2m_form_get(&f, "b", NULL), "");
    assert_string_equal(m2m_form_get(&f, "c", NULL), "3");
    m2m_form_free(&f);
}

static void test_value_with_equals(void **state)
{
    m2m_form f;

    (void)state;
    /* Only the first '=' splits; the rest belongs to the value. */
    assert_int_equal(parse("k=a=b=c", &f), M2M_OK);
    assert_string_equal(m2m_form_get(&f, "k", NULL), "a=b=c");
    m2m_form_free(&f);
}

static void test_empty_pairs_skipped(void **state)
{
    m2m_form f;

    (void)state;
    assert_int_equal(parse("&&a=1&&&b=2&", &f), M2M_OK);
    assert_int_equal(f.n, 2);
    assert_string_equal(f.fields[0].key, "a");
    assert_string_equal(f.fields[1].key, "b");
    m2m_form_free(&f);

    assert_int_equal(parse("&&&", &f), M2M_OK);
    assert_int_equal(f.n, 0);
    m2m_form_free(&f);
}

static void test_length_is_respected(void **state)
{
    m2m_form f;
    const char *body = "a=1&b=2";

    (void)state;
    /* Only the first len bytes count: the body is not NUL-terminated in
     * general (it comes straight from the HTTP layer). */
    assert_int_equal(m2m_form_parse(body, 5, &f), M2M_OK);
    assert_int_equal(f.n, 2);
    assert_string_equal(m2m_form_get(&f, "b", NULL), "");
    m2m_form_free(&f);
}

static void test_duplicates_counted(void **state)
{
    m2m_form f;
    size_t count = 99;

    (void)state;
    assert_int_equal(parse("scope=a&grant_type=client_credentials&scope=b&scope=c", &f), M2M_OK);
    assert_string_equal(m2m_form_get(&f, "scope", &count), "a"); /* the first one */
    assert_int_equal(count, 3);
    assert_string_equal(m2m_form_get(&f, "grant_type", &count), "client_credentials");
    assert_int_equal(count, 1);
    /* Keys are case-sensitive. */
    assert_null(m2m_form_get(&f, "SCOPE", &count));
    assert_int_equal(count, 0);
    m2m_form_free(&f);
}

static void test_refusals(void **state)
{
    (void)state;
    assert_refused("a=%");        /* truncated */
    assert_refused("a=%4");       /* truncated */
    assert_refused("a=b%4");      /* truncated at the end */
    assert_refused("a=%zz");      /* not hex */
    assert_refused("a=%4g");      /* second digit not hex */
    assert_refused("a=%g4");      /* first digit not hex */
    assert_refused("a=% 1");      /* space is not hex */
    assert_refused("a=%+1");      /* neither is '+' */
    assert_refused("%=1");        /* in a key */
    assert_refused("ok=1&a=%00"); /* decoded NUL, after a good field */
    assert_refused("a%00=1");     /* decoded NUL in a key */
}

static void test_raw_nul_refused(void **state)
{
    m2m_form f;

    (void)state;
    assert_int_equal(m2m_form_parse("a=1&b=x\0y", 9, &f), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(f.n, 0);
    assert_null(f.fields[0].key);
    m2m_form_free(&f);
}

static void build_fields(char *buf, size_t len, int nfields)
{
    size_t pos = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; i < nfields; i++) {
        int w = snprintf(buf + pos, len - pos, "%sk%d=v%d", i ? "&" : "", i, i);

        assert_true(w > 0 && (size_t)w < len - pos);
        pos += (size_t)w;
    }
}

static void test_many_fields(void **state)
{
    char body[1024];
    char key[16];
    m2m_form f;
    int i;

    (void)state;
    build_fields(body, sizeof(body), M2M_FORM_MAX_FIELDS);
    assert_int_equal(parse(body, &f), M2M_OK);
    assert_int_equal(f.n, M2M_FORM_MAX_FIELDS);
    for (i = 0; i < M2M_FORM_MAX_FIELDS; i++) {
        char val[16];

        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        assert_string_equal(m2m_form_get(&f, key, NULL), val);
    }
    m2m_form_free(&f);

    /* Empty pairs do not count towards the limit. */
    snprintf(body + strlen(body), sizeof(body) - strlen(body), "&&&");
    assert_int_equal(parse(body, &f), M2M_OK);
    m2m_form_free(&f);

    /* One more real field is refused, with everything freed. */
    build_fields(body, sizeof(body), M2M_FORM_MAX_FIELDS + 1);
    assert_refused(body);
}

static void test_free_zeroed_and_partial(void **state)
{
    m2m_form f;

    (void)state;
    memset(&f, 0, sizeof(f));
    m2m_form_free(&f);
    m2m_form_free(NULL);

    /* A slot filled but not yet counted (as a parse interrupted mid-field
     * would leave it) is still released. */
    memset(&f, 0, sizeof(f));
    f.fields[0].key = strdup("k");
    f.fields[0].value = strdup("v");
    f.fields[1].key = strdup("half");
    f.n = 1;
    m2m_form_free(&f);
    assert_int_equal(f.n, 0);
    assert_null(f.fields[1].key);
    m2m_form_free(&f); /* twice */
}

static void test_get_on_null_form(void **state)
{
    size_t count = 5;

    (void)state;
    assert_null(m2m_form_get(NULL, "a", &count));
    assert_int_equal(count, 0);
}

static void test_pct_decode(void **state)
{
    char *out = NULL;
    size_t n = 99;

    (void)state;
    assert_int_equal(m2m_pct_decode("a+b%20c", 7, 0, &out, &n), M2M_OK);
    assert_string_equal(out, "a+b c"); /* '+' kept when not form-encoded */
    assert_int_equal(n, 5);
    free(out);
    assert_int_equal(m2m_pct_decode("a+b", 3, 1, &out, NULL), M2M_OK);
    assert_string_equal(out, "a b");
    free(out);
    assert_int_equal(m2m_pct_decode("", 0, 1, &out, &n), M2M_OK);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    free(out);
    out = (char *)1;
    assert_int_equal(m2m_pct_decode("%0", 2, 1, &out, &n), M2M_ERR_INVALID_REQUEST);
    assert_null(out);
    assert_int_equal(m2m_pct_decode("%00", 3, 1, &out, &n), M2M_ERR_INVALID_REQUEST);
    assert_null(out);
    /* All 255 non-NUL bytes round-trip through upper-case escapes. */
    {
        char enc[256 * 3 + 1], *p = enc;
        int c;

        for (c = 1; c < 256; c++) {
            snprintf(p, 4, "%%%02X", c);
            p += 3;
        }
        assert_int_equal(m2m_pct_decode(enc, (size_t)(p - enc), 1, &out, &n), M2M_OK);
        assert_int_equal(n, 255);
        for (c = 1; c < 256; c++)
            assert_int_equal((unsigned char)out[c - 1], c);
        free(out);
    }
}

/* The encoder's output decodes back to the input, and only the unreserved
 * characters stay as they are. */
static void test_pct_encode(void **state)
{
    static const char mixed[] = "a Z-._*~:/%+&=\xc3\xa9";
    m2m_buf b;
    char *back = NULL, all[255];
    size_t blen, i;
    (void)state;

    m2m_buf_init(&b, 4096);
    assert_int_equal(m2m_pct_encode(&b, mixed, sizeof(mixed) - 1), M2M_OK);
    assert_string_equal(b.data, "a+Z-._*%7E%3A%2F%25%2B%26%3D%C3%A9");
    for (i = 0; i < sizeof(all); i++)
        all[i] = (char)(i + 1); /* every byte but NUL */
    m2m_buf_reset(&b);
    assert_int_equal(m2m_pct_encode(&b, all, sizeof(all)), M2M_OK);
    assert_int_equal(m2m_pct_decode(b.data, b.len, 1, &back, &blen), M2M_OK);
    assert_int_equal(blen, sizeof(all));
    assert_memory_equal(back, all, sizeof(all));
    free(back);
    m2m_buf_free(&b);
    /* the cap holds */
    m2m_buf_init(&b, 8);
    assert_int_equal(m2m_pct_encode(&b, "\x01\x02\x03", 3), M2M_ERR_PAYLOAD_TOO_LARGE);
    m2m_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_username_password),
        cmocka_unit_test(test_client_credentials_grant),
        cmocka_unit_test(test_encoded_basic_like_values),
        cmocka_unit_test(test_plus_and_encoded_key),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_key_without_value),
        cmocka_unit_test(test_value_with_equals),
        cmocka_unit_test(test_empty_pairs_skipped),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_duplicates_counted),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_raw_nul_refused),
        cmocka_unit_test(test_many_fields),
        cmocka_unit_test(test_free_zeroed_and_partial),
        cmocka_unit_test(test_get_on_null_form),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_pct_encode),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
