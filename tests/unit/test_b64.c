/* Unit tests for m2m/b64.h and m2m/rand.h: RFC 4648 vectors, round trips and
 * every strictness refusal (one value, one accepted spelling). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "m2m/b64.h"
#include "m2m/rand.h"

/* RFC 4648 §10. */
static const struct {
    const char *plain, *b64, *b64url;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void assert_url_decodes(const char *in, const void *want, size_t wantlen)
{
    uint8_t out[128];
    size_t n = 99;

    assert_int_equal(m2m_b64url_decode(in, strlen(in), out, sizeof out, &n), M2M_OK);
    assert_int_equal(n, wantlen);
    if (wantlen)
        assert_memory_equal(out, want, wantlen);
}

static void assert_url_refused(const char *in, size_t len)
{
    uint8_t out[128];
    size_t n = 99;

    assert_int_equal(m2m_b64url_decode(in, len, out, sizeof out, &n), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(n, 0);
}

static void assert_std_refused(const char *in, size_t len)
{
    uint8_t out[128];
    size_t n = 99;

    assert_int_equal(m2m_b64_decode(in, len, out, sizeof out, &n), M2M_ERR_INVALID_REQUEST);
    assert_int_equal(n, 0);
}

static void test_rfc4648_vectors(void **state)
{
    char enc[32];
    uint8_t dec[32];
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const char *p = vectors[i].plain;
        size_t plen = strlen(p);

        n = 99;
        assert_int_equal(m2m_b64url_encode((const uint8_t *)p, plen, enc, sizeof enc, &n), M2M_OK);
        assert_string_equal(enc, vectors[i].b64url);
        assert_int_equal(n, strlen(vectors[i].b64url));
        assert_int_equal(n, M2M_B64URL_LEN(plen));

        n = 99;
        assert_int_equal(
            m2m_b64url_decode(vectors[i].b64url, strlen(vectors[i].b64url), dec, sizeof dec, &n),
            M2M_OK);
        assert_int_equal(n, plen);
        assert_true(memcmp(dec, p, plen) == 0);

        n = 99;
        assert_int_equal(
            m2m_b64_decode(vectors[i].b64, strlen(vectors[i].b64), dec, sizeof dec, &n), M2M_OK);
        assert_int_equal(n, plen);
        assert_true(memcmp(dec, p, plen) == 0);
    }
}

/* 0xFB 0xFF 0xBF is 62 63 62 63: the two alphabets differ exactly there. */
static void test_alphabets(void **state)
{
    static const uint8_t bytes[] = {0xFB, 0xFF, 0xBF};
    char enc[8];
    uint8_t dec[8];
    size_t n = 0;

    (void)state;
    assert_int_equal(m2m_b64url_encode(bytes, sizeof bytes, enc, sizeof enc, &n), M2M_OK);
    assert_string_equal(enc, "-_-_");
    assert_url_decodes("-_-_", bytes, sizeof bytes);
    assert_int_equal(m2m_b64_decode("+/+/", 4, dec, sizeof dec, &n), M2M_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(dec, bytes, 3);
    /* Each decoder refuses the other's two characters. */
    assert_url_refused("+/+/", 4);
    assert_std_refused("-_-_", 4);
}

/* Standard padded spelling of an unpadded base64url string. */
static void url_to_std(const char *url, char *out)
{
    size_t i, n = strlen(url);

    for (i = 0; i < n; i++)
        out[i] = url[i] == '-' ? '+' : url[i] == '_' ? '/' : url[i];
    while (i % 4)
        out[i++] = '=';
    out[i] = '\0';
}

static void test_round_trips(void **state)
{
    uint8_t in[64], dec[64];
    char enc[M2M_B64URL_LEN(64) + 1], std[M2M_B64URL_LEN(64) + 4];
    size_t len, n, d;

    (void)state;
    for (len = 0; len <= 64; len++) {
        assert_int_equal(m2m_rand_bytes(in, len), M2M_OK);
        assert_int_equal(m2m_b64url_encode(in, len, enc, M2M_B64URL_LEN(len) + 1, &n), M2M_OK);
        assert_int_equal(n, M2M_B64URL_LEN(len));
        assert_int_equal(strlen(enc), n);
        assert_true(strspn(enc, url_alphabet) == n);

        d = 999;
        assert_int_equal(m2m_b64url_decode(enc, n, dec, len, &d), M2M_OK); /* exact cap */
        assert_int_equal(d, len);
        assert_true(memcmp(in, dec, len) == 0);

        url_to_std(enc, std);
        d = 999;
        assert_int_equal(m2m_b64_decode(std, strlen(std), dec, len, &d), M2M_OK);
        assert_int_equal(d, len);
        assert_true(memcmp(in, dec, len) == 0);

        /* One byte short of room is refused, for either side. */
        if (len) {
            assert_int_equal(m2m_b64url_decode(enc, n, dec, len - 1, &d),
                             M2M_ERR_PAYLOAD_TOO_LARGE);
            assert_int_equal(m2m_b64_decode(std, strlen(std), dec, len - 1, &d),
                             M2M_ERR_PAYLOAD_TOO_LARGE);
        }
        assert_int_equal(m2m_b64url_encode(in, len, enc, M2M_B64URL_LEN(len), &n),
                         M2M_ERR_PAYLOAD_TOO_LARGE);
    }
}

/* Every 2- and 3-character string: accepted exactly when it is the encoding
 * of what it decodes to. */
static void test_canonical_exhaustive(void **state)
{
    char s[4], enc[8];
    uint8_t dec[4];
    size_t n, e, accepted2 = 0, accepted3 = 0;
    unsigned a, b, c;

    (void)state;
    for (a = 0; a < 64; a++) {
        for (b = 0; b < 256; b++) {
            s[0] = url_alphabet[a];
            s[1] = (char)b;
            if (m2m_b64url_decode(s, 2, dec, sizeof dec, &n) == M2M_OK) {
                accepted2++;
                assert_int_equal(n, 1);
                assert_int_equal(m2m_b64url_encode(dec, n, enc, sizeof enc, &e), M2M_OK);
                assert_memory_equal(enc, s, 2);
            }
        }
    }
    assert_int_equal(accepted2, 256); /* one spelling per byte value */

    for (a = 0; a < 64; a += 7) {
        for (b = 0; b < 64; b++) {
            for (c = 0; c < 256; c++) {
                s[0] = url_alphabet[a];
                s[1] = url_alphabet[b];
                s[2] = (char)c;
                if (m2m_b64url_decode(s, 3, dec, sizeof dec, &n) == M2M_OK) {
                    accepted3++;
                    assert_int_equal(n, 2);
                    assert_int_equal(m2m_b64url_encode(dec, n, enc, sizeof enc, &e), M2M_OK);
                    assert_memory_equal(enc, s, 3);
                }
            }
        }
    }
    assert_int_equal(accepted3, 10 * 64 * 16); /* 16 valid last characters */
}

static void test_url_refusals(void **state)
{
    char s[8];
    unsigned c;

    (void)state;
    /* padding */
    assert_url_refused("Zg==", 4);
    assert_url_refused("Zg=", 3);
    assert_url_refused("Zm8=", 4);
    assert_url_refused("=", 1);
    assert_url_refused("====", 4);
    /* n % 4 == 1 */
    assert_url_refused("Z", 1);
    assert_url_refused("Zm9vY", 5);
    assert_url_refused("Zm9vYmFyZ", 9);
    /* non-zero trailing bits: "Zh" and "Zm9" spell 'f' and "fo" wrongly */
    assert_url_refused("Zh", 2);
    assert_url_refused("Zm9", 3);
    assert_url_refused("Zm9vYh", 6);
    assert_url_refused("Zm9vYmF", 7);
    /* characters outside the alphabet, in every position of a quantum */
    assert_url_refused("Zm9v Zm9v", 9);
    assert_url_refused("Zm9v\nZm9v", 9);
    assert_url_refused("Zm9.", 4);
    assert_url_refused("Zm9vYmFy\0", 9);
    assert_url_refused("Zm\0v", 4);
    for (c = 0; c < 256; c++) {
        if (c && strchr(url_alphabet, (int)c))
            continue;
        for (size_t pos = 0; pos < 4; pos++) {
            memcpy(s, "Zm9v", 4);
            s[pos] = (char)c;
            assert_url_refused(s, 4);
        }
    }
    /* a refused decode does not leave partial output behind */
    {
        uint8_t out[8];
        size_t n = 7;

        memset(out, 0xAA, sizeof out);
        assert_int_equal(m2m_b64url_decode("Zm9vYm!y", 8, out, sizeof out, &n),
                         M2M_ERR_INVALID_REQUEST);
        assert_int_equal(out[0], 0);
        assert_int_equal(out[5], 0);
        assert_int_equal(n, 0);
    }
}

static void test_std_refusals(void **state)
{
    (void)state;
    /* missing or wrong padding */
    assert_std_refused("Zg", 2);
    assert_std_refused("Zg=", 3);
    assert_std_refused("Zm8", 3);
    assert_std_refused("Zg===", 5);
    assert_std_refused("Z===", 4);
    assert_std_refused("====", 4);
    assert_std_refused("=Zm9", 4);
    assert_std_refused("Zm=v", 4);
    assert_std_refused("Zg==Zg==", 8); /* padding in the middle */
    assert_std_refused("Zm8=Zm9v", 8);
    assert_std_refused("Zm9vZg=a", 8);
    /* non-zero trailing bits */
    assert_std_refused("Zh==", 4);
    assert_std_refused("Zm9=", 4);
    /* outside the alphabet */
    assert_std_refused("Zm9v\n", 5);
    assert_std_refused("Zm9 ", 4);
    assert_std_refused("Zm-_", 4);
    assert_std_refused("Zm\0v", 4);
    assert_std_refused("Zm9\xff", 4);
}

/* Padded standard base64 (HTTP Basic): the RFC 4648 §10 vectors, and every
 * length round-trips through the strict decoder. */
static void test_std_encode(void **state)
{
    static const char *const vec[][2] = {{"", ""},         {"f", "Zg=="},
                                         {"fo", "Zm8="},   {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    char out[M2M_B64_LEN(48) + 1];
    uint8_t back[64], raw[48];
    size_t len, blen, i;
    (void)state;

    for (i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        assert_int_equal(m2m_b64_encode((const uint8_t *)vec[i][0], strlen(vec[i][0]), out,
                                        sizeof(out), &len),
                         M2M_OK);
        assert_string_equal(out, vec[i][1]);
        assert_int_equal(len, strlen(vec[i][1]));
    }
    for (i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(0xFB - i * 7); /* hits '+' and '/' */
    for (i = 0; i <= sizeof(raw); i++) {
        assert_int_equal(m2m_b64_encode(raw, i, out, sizeof(out), &len), M2M_OK);
        assert_int_equal(len, M2M_B64_LEN(i));
        assert_int_equal(m2m_b64_decode(out, len, back, sizeof(back), &blen), M2M_OK);
        assert_int_equal(blen, i);
        assert_memory_equal(back, raw, i);
    }
    /* exactly enough room, then one byte short */
    assert_int_equal(m2m_b64_encode((const uint8_t *)"foob", 4, out, 9, &len), M2M_OK);
    assert_int_equal(m2m_b64_encode((const uint8_t *)"foob", 4, out, 8, &len),
                     M2M_ERR_PAYLOAD_TOO_LARGE);
}

static void test_rand_token(void **state)
{
    char a[M2M_B64URL_LEN(100) + 1], b[M2M_B64URL_LEN(100) + 1];
    size_t sizes[] = {0, 1, 16, 32, 47, 48, 49, 100};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t want = M2M_B64URL_LEN(sizes[i]);

        assert_int_equal(m2m_rand_token(sizes[i], a, want + 1), M2M_OK);
        assert_int_equal(strlen(a), want);
        assert_int_equal(strspn(a, url_alphabet), want);
        /* and it decodes back to the right number of bytes */
        {
            uint8_t raw[100];
            size_t n = 0;

            assert_int_equal(m2m_b64url_decode(a, want, raw, sizeof raw, &n), M2M_OK);
            assert_int_equal(n, sizes[i]);
        }
        assert_int_equal(m2m_rand_token(sizes[i], a, want), M2M_ERR_PAYLOAD_TOO_LARGE);
    }
    assert_int_equal(m2m_rand_token(32, a, sizeof a), M2M_OK);
    assert_int_equal(m2m_rand_token(32, b, sizeof b), M2M_OK);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors), cmocka_unit_test(test_alphabets),
        cmocka_unit_test(test_round_trips),     cmocka_unit_test(test_canonical_exhaustive),
        cmocka_unit_test(test_url_refusals),    cmocka_unit_test(test_std_refusals),
        cmocka_unit_test(test_rand_token),      cmocka_unit_test(test_std_encode),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
