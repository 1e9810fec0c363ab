/* m2m_buf: caps, growth, formatting, steal and reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "m2m/buf.h"

static void test_init_is_empty(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 100);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 100);
    m2m_buf_free(&b); /* freeing a never-used buffer is fine */
    m2m_buf_free(&b); /* and twice */
}

static void test_append_terminates(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 100);
    assert_int_equal(m2m_buf_append(&b, "abc", 3), M2M_OK);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_int_equal(m2m_buf_appends(&b, "def"), M2M_OK);
    assert_string_equal(b.data, "abcdef");
    assert_int_equal(b.len, 6);
    assert_true(b.cap > b.len);
    m2m_buf_free(&b);
}

static void test_empty_append_allocates(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 10);
    assert_int_equal(m2m_buf_append(&b, NULL, 0), M2M_OK);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    m2m_buf_free(&b);
}

static void test_binary_data(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 10);
    assert_int_equal(m2m_buf_append(&b, "a\0b", 3), M2M_OK);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 4); /* plus the terminator */
    m2m_buf_free(&b);
}

static void test_cap_exact(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 5);
    assert_int_equal(m2m_buf_append(&b, "12345", 5), M2M_OK);
    assert_string_equal(b.data, "12345");
    assert_true(b.cap <= b.max + 1);
    /* One byte more is refused and the content is left as it was. */
    assert_int_equal(m2m_buf_append(&b, "6", 1), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_string_equal(b.data, "12345");
    assert_int_equal(b.len, 5);
    /* Zero bytes still fit. */
    assert_int_equal(m2m_buf_append(&b, "", 0), M2M_OK);
    m2m_buf_free(&b);
}

static void test_cap_single_append(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 4);
    assert_int_equal(m2m_buf_append(&b, "12345", 5), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(b.len, 0);
    assert_int_equal(m2m_buf_appends(&b, "12"), M2M_OK);
    assert_int_equal(m2m_buf_appends(&b, "345"), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_string_equal(b.data, "12");
    m2m_buf_free(&b);
}

static void test_cap_zero(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 0);
    assert_int_equal(m2m_buf_appends(&b, "x"), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(m2m_buf_append(&b, "", 0), M2M_OK);
    assert_string_equal(b.data, "");
    m2m_buf_free(&b);
}

static void test_huge_length_no_wrap(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 100);
    assert_int_equal(m2m_buf_appends(&b, "ab"), M2M_OK);
    /* len + SIZE_MAX would wrap; it must be refused, not overflow. */
    assert_int_equal(m2m_buf_append(&b, "x", SIZE_MAX), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_int_equal(m2m_buf_append(&b, "x", SIZE_MAX - 1), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_string_equal(b.data, "ab");
    m2m_buf_free(&b);
}

static void test_growth_geometric_and_capped(void **state)
{
    m2m_buf b;
    size_t i, reallocs = 0, last_cap = 0;

    (void)state;
    m2m_buf_init(&b, 100000);
    for (i = 0; i < 100000; i++) {
        assert_int_equal(m2m_buf_append(&b, "z", 1), M2M_OK);
        if (b.cap != last_cap) {
            reallocs++;
            last_cap = b.cap;
        }
        assert_true(b.cap > b.len);
        assert_true(b.cap <= b.max + 1);
    }
    assert_int_equal(b.len, 100000);
    assert_int_equal(b.cap, 100001); /* the last step is clamped to max + 1 */
    assert_true(reallocs < 20);      /* doubling, not one realloc per byte */
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(b.data[0], 'z');
    assert_int_equal(b.data[99999], 'z');
    assert_int_equal(m2m_buf_append(&b, "z", 1), M2M_ERR_PAYLOAD_TOO_LARGE);
    m2m_buf_free(&b);
}

static void test_appendf(void **state)
{
    m2m_buf b;
    char big[300];

    (void)state;
    m2m_buf_init(&b, 1000);
    assert_int_equal(m2m_buf_appendf(&b, "%s=%d", "n", 42), M2M_OK);
    assert_string_equal(b.data, "n=42");
    assert_int_equal(m2m_buf_appendf(&b, "&%s", "x"), M2M_OK);
    assert_string_equal(b.data, "n=42&x");
    assert_int_equal(b.len, 6);
    /* Longer than the first allocation: needs a grow between the passes. */
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(m2m_buf_appendf(&b, "[%s]", big), M2M_OK);
    assert_int_equal(b.len, 6 + 2 + 299);
    assert_int_equal(b.data[b.len - 1], ']');
    assert_int_equal(strlen(b.data), b.len);
    /* Empty format result. */
    assert_int_equal(m2m_buf_appendf(&b, "%s", ""), M2M_OK);
    assert_int_equal(b.len, 307);
    m2m_buf_free(&b);
}

static void test_appendf_cap(void **state)
{
    m2m_buf b;

    (void)state;
    m2m_buf_init(&b, 8);
    assert_int_equal(m2m_buf_appendf(&b, "%d", 1234), M2M_OK);
    assert_int_equal(m2m_buf_appendf(&b, "%d", 56789), M2M_ERR_PAYLOAD_TOO_LARGE);
    assert_string_equal(b.data, "1234");
    assert_int_equal(m2m_buf_appendf(&b, "%d", 5678), M2M_OK);
    assert_string_equal(b.data, "12345678");
    m2m_buf_free(&b);
}

static void test_steal(void **state)
{
    m2m_buf b;
    char *s;

    (void)state;
    m2m_buf_init(&b, 50);
    assert_int_equal(m2m_buf_appends(&b, "hello"), M2M_OK);
    s = m2m_buf_steal(&b);
    assert_string_equal(s, "hello");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 50); /* still usable with the same cap */
    free(s);

    /* Stealing an empty buffer gives an allocated "". */
    s = m2m_buf_steal(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);

    /* And the buffer works again after a steal. */
    assert_int_equal(m2m_buf_appends(&b, "again"), M2M_OK);
    assert_string_equal(b.data, "again");
    m2m_buf_free(&b);
}

static void test_reset(void **state)
{
    m2m_buf b;
    size_t cap;

    (void)state;
    m2m_buf_init(&b, 50);
    m2m_buf_reset(&b); /* on an unallocated buffer */
    assert_null(b.data);
    assert_int_equal(m2m_buf_appends(&b, "hello world"), M2M_OK);
    cap = b.cap;
    m2m_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(b.cap, cap); /* the allocation is kept for reuse */
    assert_int_equal(m2m_buf_appends(&b, "x"), M2M_OK);
    assert_string_equal(b.data, "x");
    m2m_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_append_terminates),
        cmocka_unit_test(test_empty_append_allocates),
        cmocka_unit_test(test_binary_data),
        cmocka_unit_test(test_cap_exact),
        cmocka_unit_test(test_cap_single_append),
        cmocka_unit_test(test_cap_zero),
        cmocka_unit_test(test_huge_length_no_wrap),
        cmocka_unit_test(test_growth_geometric_and_capped),
        cmocka_unit_test(test_appendf),
        cmocka_unit_test(test_appendf_cap),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
