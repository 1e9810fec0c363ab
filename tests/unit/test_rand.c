/* m2m_rand: bytes and base64url tokens for secrets, jti and request ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "m2m/b64.h"
#include "m2m/rand.h"

static void test_bytes_differ_and_fill(void **state)
{
    uint8_t a[32], b[32], zero[32] = {0};
    (void)state;
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    assert_int_equal(m2m_rand_bytes(a, sizeof(a)), M2M_OK);
    assert_int_equal(m2m_rand_bytes(b, sizeof(b)), M2M_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, zero, sizeof(a));
    assert_int_equal(m2m_rand_bytes(NULL, 0), M2M_OK);
    assert_int_equal(m2m_rand_bytes(NULL, 4), M2M_ERR_INTERNAL);
}

/* Every length gives exactly M2M_B64URL_LEN(n) base64url characters, which
 * decode back to n bytes. */
static void test_token_lengths(void **state)
{
    char tok[256];
    uint8_t raw[160];
    size_t rawlen;
    (void)state;
    for (size_t n = 0; n <= 150; n++) {
        assert_int_equal(m2m_rand_token(n, tok, sizeof(tok)), M2M_OK);
        assert_int_equal(strlen(tok), M2M_B64URL_LEN(n));
        assert_int_equal(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                         strlen(tok));
        assert_int_equal(m2m_b64url_decode(tok, strlen(tok), raw, sizeof(raw), &rawlen), M2M_OK);
        assert_int_equal(rawlen, n);
    }
}

static void test_token_capacity(void **state)
{
    char tok[M2M_B64URL_LEN(32) + 1];
    (void)state;
    /* 32 bytes need 43 characters and a NUL: 44 fits, 43 does not. */
    assert_int_equal(m2m_rand_token(32, tok, sizeof(tok)), M2M_OK);
    assert_int_equal(m2m_rand_token(32, tok, sizeof(tok) - 1), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(m2m_rand_token(32, NULL, 64), M2M_ERR_INTERNAL);
}

/* 1000 jti-sized tokens, no repeats. */
static void test_tokens_unique(void **state)
{
    static char toks[1000][M2M_B64URL_LEN(16) + 1];
    (void)state;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(m2m_rand_token(16, toks[i], sizeof(toks[i])), M2M_OK);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(toks[i], toks[j]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_differ_and_fill),
        cmocka_unit_test(test_token_lengths),
        cmocka_unit_test(test_token_capacity),
        cmocka_unit_test(test_tokens_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
