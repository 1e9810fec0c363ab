/* auth-service scope strings (RFC 6749 §3.3): normalisation, membership,
 * subset with the offending token copied out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "scope.h"

/* Normalises into a buffer pre-filled with junk so "wrote nothing" shows. */
static m2m_err norm(const char *in, char *out, size_t outcap)
{
    memset(out, 'Z', outcap);
    return auth_scope_normalize(in, out, outcap);
}

static void assert_norm(const char *in, const char *want)
{
    char out[AUTH_SCOPE_MAX + 1];
    m2m_err rc = norm(in, out, sizeof(out));
    if (rc != M2M_OK)
        fail_msg("normalize(\"%s\") = %s, want OK", in, m2m_err_name(rc));
    assert_string_equal(out, want);
}

static void assert_norm_fails(const char *in)
{
    char out[AUTH_SCOPE_MAX + 1];
    m2m_err rc = norm(in, out, sizeof(out));
    if (rc != M2M_ERR_INVALID_SCOPE)
        fail_msg("normalize of a bad scope (first byte 0x%02x, len %zu) = %s, want INVALID_SCOPE",
                 (unsigned)(unsigned char)in[0], strlen(in), m2m_err_name(rc));
}

/* ---- normalize ---------------------------------------------------------- */

static void normalize_plain(void **state)
{
    (void)state;
    assert_norm("currency:read", "currency:read");
    assert_norm("currency:read currency:write", "currency:read currency:write");
    assert_norm("a", "a");
}

static void normalize_removes_duplicates_keeps_order(void **state)
{
    (void)state;
    assert_norm("b a b c a", "b a c");
    assert_norm("z y x", "z y x");
    assert_norm("a a a a", "a");
    /* A prefix of an earlier token is a different token, and vice versa. */
    assert_norm("read readx read", "read readx");
    assert_norm("readx read readx", "readx read");
}

static void normalize_collapses_spaces(void **state)
{
    (void)state;
    assert_norm("a  b", "a b");
    assert_norm("   a    b   ", "a b");
    assert_norm(" a", "a");
    assert_norm("a ", "a");
    assert_norm("x  x   y    x", "x y");
}

static void normalize_empty_is_valid(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(norm("", out, sizeof(out)), M2M_OK);
    assert_string_equal(out, "");
    /* Even a one-byte buffer holds the empty result. */
    assert_int_equal(norm("", out, 1), M2M_OK);
    assert_string_equal(out, "");
}

/* Every byte value, alone and inside a token: only %x21 / %x23-5B / %x5D-7E
 * are scope-token characters (space separates tokens). */
static void normalize_every_byte(void **state)
{
    (void)state;
    for (int c = 1; c < 256; c++) {
        if (c == ' ')
            continue;
        bool ok = c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
        char in[8], out[16];
        snprintf(in, sizeof(in), "a%cb", c);
        m2m_err rc = norm(in, out, sizeof(out));
        if (ok) {
            if (rc != M2M_OK)
                fail_msg("byte 0x%02x inside a token refused (%s)", c, m2m_err_name(rc));
            assert_string_equal(out, in);
        } else if (rc != M2M_ERR_INVALID_SCOPE) {
            fail_msg("byte 0x%02x inside a token: %s, want INVALID_SCOPE", c, m2m_err_name(rc));
        }
        snprintf(in, sizeof(in), "%c", c);
        rc = norm(in, out, sizeof(out));
        if (rc != (ok ? M2M_OK : M2M_ERR_INVALID_SCOPE))
            fail_msg("byte 0x%02x as a whole scope: %s", c, m2m_err_name(rc));
        /* A bad byte in a later token poisons the whole string. */
        snprintf(in, sizeof(in), "good %c", c);
        rc = norm(in, out, sizeof(out));
        if (rc != (ok ? M2M_OK : M2M_ERR_INVALID_SCOPE))
            fail_msg("byte 0x%02x in a second token: %s", c, m2m_err_name(rc));
    }
}

static void normalize_forbidden_named(void **state)
{
    (void)state;
    assert_norm_fails("\"");
    assert_norm_fails("currency:\"read\"");
    assert_norm_fails("\\");
    assert_norm_fails("currency\\read");
    assert_norm_fails("a\tb");         /* tab is not a separator */
    assert_norm_fails("a\nb");         /* newline */
    assert_norm_fails("a\rb");         /* carriage return */
    assert_norm_fails("a\x7f");        /* DEL */
    assert_norm_fails("\x01");         /* control */
    assert_norm_fails("caf\xc3\xa9");  /* UTF-8 é */
    assert_norm_fails("\xe2\x80\x8b"); /* zero-width space */
    assert_norm_fails("a \xff");
}

/* RFC 6749 §3.3: scope = scope-token *( SP scope-token ): a string of spaces
 * only holds no scope-token and is not a valid scope (unlike ""). */
static void normalize_space_only_refused(void **state)
{
    (void)state;
    assert_norm_fails(" ");
    assert_norm_fails("   ");
}

static void normalize_length_limit(void **state)
{
    (void)state;
    char in[AUTH_SCOPE_MAX + 2], out[AUTH_SCOPE_MAX + 8];

    /* Exactly AUTH_SCOPE_MAX bytes: accepted. */
    memset(in, 'a', AUTH_SCOPE_MAX);
    in[AUTH_SCOPE_MAX] = '\0';
    assert_int_equal(norm(in, out, sizeof(out)), M2M_OK);
    assert_int_equal(strlen(out), AUTH_SCOPE_MAX);
    /* One more byte: refused. */
    memset(in, 'a', AUTH_SCOPE_MAX + 1);
    in[AUTH_SCOPE_MAX + 1] = '\0';
    assert_int_equal(norm(in, out, sizeof(out)), M2M_ERR_INVALID_SCOPE);
    /* The limit is on the input, even when it would normalise to little. */
    memset(in, ' ', AUTH_SCOPE_MAX + 1);
    in[0] = 'a';
    in[AUTH_SCOPE_MAX + 1] = '\0';
    assert_int_equal(norm(in, out, sizeof(out)), M2M_ERR_INVALID_SCOPE);
}

static void normalize_output_capacity(void **state)
{
    (void)state;
    char out[16];

    assert_int_equal(auth_scope_normalize("a", out, 0), M2M_ERR_INVALID_SCOPE);
    assert_int_equal(norm("abc", out, 3), M2M_ERR_INVALID_SCOPE); /* no room for NUL */
    assert_int_equal(norm("abc", out, 4), M2M_OK);
    assert_string_equal(out, "abc");
    assert_int_equal(norm("a b", out, 3), M2M_ERR_INVALID_SCOPE);
    assert_int_equal(norm("a b", out, 4), M2M_OK);
    assert_string_equal(out, "a b");
    /* What counts is the normalised size, not the input's. */
    assert_int_equal(norm("  a    a   b  ", out, 4), M2M_OK);
    assert_string_equal(out, "a b");
    assert_int_equal(norm("a a a a a", out, 2), M2M_OK);
    assert_string_equal(out, "a");
    assert_int_equal(norm("ab cd", out, 5), M2M_ERR_INVALID_SCOPE);
    assert_int_equal(norm("ab cd", out, 6), M2M_OK);
    assert_string_equal(out, "ab cd");
}

/* ---- has ---------------------------------------------------------------- */

static bool has(const char *list, const char *tok)
{
    return auth_scope_has(list, tok, strlen(tok));
}

static void has_exact_tokens_only(void **state)
{
    (void)state;
    assert_true(has("currency:read", "currency:read"));
    assert_true(has("a currency:read b", "currency:read"));
    assert_true(has("currency:read b", "currency:read"));
    assert_true(has("b currency:read", "currency:read"));
    assert_true(has("  b   currency:read  ", "currency:read"));

    /* prefix / suffix / substring of a listed token */
    assert_false(has("currency:readx", "currency:read"));
    assert_false(has("xcurrency:read", "currency:read"));
    assert_false(has("currency:read", "currency:readx"));
    assert_false(has("currency:read", "currency:rea"));
    assert_false(has("currency:read", "urrency:read"));
    assert_false(has("currency", "currency:read"));
    assert_false(has("a currency:readx b", "currency:read"));
    /* a token spanning two list entries */
    assert_false(has("a b", "a b"));
    assert_false(has("", "a"));
    assert_false(has("   ", "a"));
}

static void has_uses_len_not_nul(void **state)
{
    (void)state;
    /* tok need not be NUL-terminated at len */
    assert_true(auth_scope_has("currency:read", "currency:read currency:write", 13));
    assert_false(auth_scope_has("currency:read", "currency:read currency:write", 12));
    assert_false(auth_scope_has("currency:read", "currency:read currency:write", 14));
}

/* ---- subset ------------------------------------------------------------- */

static void subset_true_cases(void **state)
{
    (void)state;
    char bad[32] = "untouched";
    assert_true(auth_scope_subset("a b", "b c a", bad, sizeof(bad)));
    assert_true(auth_scope_subset("a", "a", bad, sizeof(bad)));
    assert_true(auth_scope_subset("", "a", bad, sizeof(bad)));
    assert_true(auth_scope_subset("", "", bad, sizeof(bad)));
    assert_true(auth_scope_subset("  a   a ", "a", bad, sizeof(bad)));
    assert_string_equal(bad, "untouched");
}

static void subset_copies_first_bad_token(void **state)
{
    (void)state;
    char bad[32];

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("a d", "a b c", bad, sizeof(bad)));
    assert_string_equal(bad, "d");

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("q a r", "a", bad, sizeof(bad)));
    assert_string_equal(bad, "q");

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("currency:read", "currency:readx", bad, sizeof(bad)));
    assert_string_equal(bad, "currency:read");

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("currency:readx", "currency:read", bad, sizeof(bad)));
    assert_string_equal(bad, "currency:readx");

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("a", "", bad, sizeof(bad)));
    assert_string_equal(bad, "a");

    snprintf(bad, sizeof(bad), "x");
    assert_false(auth_scope_subset("   a    zz  ", "a", bad, sizeof(bad)));
    assert_string_equal(bad, "zz");
}

static void subset_bad_buffer_limits(void **state)
{
    (void)state;
    char bad[8];

    /* Truncated to the buffer, always NUL-terminated. */
    memset(bad, 'Z', sizeof(bad));
    assert_false(auth_scope_subset("a deltadeltadelta", "a", bad, 4));
    assert_string_equal(bad, "del");
    assert_int_equal(bad[4], 'Z');

    /* badcap 0: nothing written, answer unchanged. */
    memset(bad, 'Z', sizeof(bad));
    assert_false(auth_scope_subset("nope", "a", bad, 0));
    assert_int_equal(bad[0], 'Z');
    assert_false(auth_scope_subset("nope", "a", NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normalize_plain),
        cmocka_unit_test(normalize_removes_duplicates_keeps_order),
        cmocka_unit_test(normalize_collapses_spaces),
        cmocka_unit_test(normalize_empty_is_valid),
        cmocka_unit_test(normalize_every_byte),
        cmocka_unit_test(normalize_forbidden_named),
        cmocka_unit_test(normalize_space_only_refused),
        cmocka_unit_test(normalize_length_limit),
        cmocka_unit_test(normalize_output_capacity),
        cmocka_unit_test(has_exact_tokens_only),
        cmocka_unit_test(has_uses_len_not_nul),
        cmocka_unit_test(subset_true_cases),
        cmocka_unit_test(subset_copies_first_bad_token),
        cmocka_unit_test(subset_bad_buffer_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
