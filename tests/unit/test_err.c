/* The error table: every row complete, out-of-range values safe, and the
 * rows the OAuth endpoints depend on exactly as RFC 6749/6750 name them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "m2m/err.h"

static void test_every_row_complete(void **state)
{
    int e;

    (void)state;
    for (e = 0; e < M2M_ERR__COUNT; e++) {
        int status = m2m_err_status((m2m_err)e);

        assert_in_range(status, 200, 599);
        assert_non_null(m2m_err_code((m2m_err)e));
        assert_true(strlen(m2m_err_code((m2m_err)e)) > 0);
        assert_non_null(m2m_err_name((m2m_err)e));
        assert_true(strlen(m2m_err_name((m2m_err)e)) > 0);
        assert_non_null(m2m_err_text((m2m_err)e));
        assert_true(strlen(m2m_err_text((m2m_err)e)) > 0);
        /* Only OK is a success status; every error is 4xx or 5xx. */
        if (e == M2M_OK)
            assert_int_equal(status, 200);
        else
            assert_in_range(status, 400, 599);
    }
}

static void test_names_unique(void **state)
{
    int a, b;

    (void)state;
    for (a = 0; a < M2M_ERR__COUNT; a++)
        for (b = a + 1; b < M2M_ERR__COUNT; b++)
            assert_string_not_equal(m2m_err_name((m2m_err)a), m2m_err_name((m2m_err)b));
}

static void test_out_of_range(void **state)
{
    const m2m_err bad[] = {M2M_ERR__COUNT, (m2m_err)(M2M_ERR__COUNT + 100), (m2m_err)-1,
                           (m2m_err)0x7fffffff};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(m2m_err_status(bad[i]), 500);
        assert_string_equal(m2m_err_code(bad[i]), "server_error");
        assert_string_equal(m2m_err_name(bad[i]), "UNKNOWN");
        assert_non_null(m2m_err_text(bad[i]));
    }
}

static void test_specific_rows(void **state)
{
    (void)state;
    assert_int_equal(M2M_OK, 0); /* `if (rc)` relies on it */
    assert_int_equal(m2m_err_status(M2M_OK), 200);
    assert_string_equal(m2m_err_name(M2M_OK), "OK");

    assert_int_equal(m2m_err_status(M2M_ERR_INVALID_CLIENT), 401);
    assert_string_equal(m2m_err_code(M2M_ERR_INVALID_CLIENT), "invalid_client");
    assert_string_equal(m2m_err_name(M2M_ERR_INVALID_CLIENT), "INVALID_CLIENT");

    assert_int_equal(m2m_err_status(M2M_ERR_DB_UNAVAILABLE), 503);
    assert_string_equal(m2m_err_code(M2M_ERR_DB_UNAVAILABLE), "temporarily_unavailable");

    assert_int_equal(m2m_err_status(M2M_ERR_INVALID_REQUEST), 400);
    assert_string_equal(m2m_err_code(M2M_ERR_INVALID_REQUEST), "invalid_request");
    assert_int_equal(m2m_err_status(M2M_ERR_INVALID_GRANT), 400);
    assert_string_equal(m2m_err_code(M2M_ERR_INVALID_GRANT), "invalid_grant");
    assert_string_equal(m2m_err_code(M2M_ERR_UNAUTHORIZED_CLIENT), "unauthorized_client");
    assert_string_equal(m2m_err_code(M2M_ERR_UNSUPPORTED_GRANT_TYPE), "unsupported_grant_type");
    assert_string_equal(m2m_err_code(M2M_ERR_INVALID_SCOPE), "invalid_scope");
    assert_int_equal(m2m_err_status(M2M_ERR_INVALID_TOKEN), 401);
    assert_string_equal(m2m_err_code(M2M_ERR_INVALID_TOKEN), "invalid_token");
    assert_int_equal(m2m_err_status(M2M_ERR_INSUFFICIENT_SCOPE), 403);
    assert_string_equal(m2m_err_code(M2M_ERR_INSUFFICIENT_SCOPE), "insufficient_scope");
    assert_int_equal(m2m_err_status(M2M_ERR_NOT_FOUND), 404);
    assert_int_equal(m2m_err_status(M2M_ERR_PAYLOAD_TOO_LARGE), 413);
    assert_int_equal(m2m_err_status(M2M_ERR_UPSTREAM), 502);
    assert_int_equal(m2m_err_status(M2M_ERR_INTERNAL), 500);
    assert_string_equal(m2m_err_code(M2M_ERR_INTERNAL), "server_error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row_complete),
        cmocka_unit_test(test_names_unique),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_specific_rows),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
