#include "m2m/err.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
    int status;
    const char *code;
    const char *text;
    const char *name;
} err_table[] = {
#define M2M_ERR_ROW(name, status, code, text) {status, code, text, #name},
    M2M_ERR_TABLE(M2M_ERR_ROW)
#undef M2M_ERR_ROW
};

_Static_assert(sizeof(err_table) / sizeof(err_table[0]) == M2M_ERR__COUNT, "error table size");

static int err_valid(m2m_err e)
{
    return (int)e >= 0 && e < M2M_ERR__COUNT;
}

int m2m_err_status(m2m_err e)
{
    return err_valid(e) ? err_table[e].status : 500;
}

const char *m2m_err_code(m2m_err e)
{
    return err_valid(e) ? err_table[e].code : "server_error";
}

const char *m2m_err_text(m2m_err e)
{
    return err_valid(e) ? err_table[e].text : "unknown error";
}

const char *m2m_err_name(m2m_err e)
{
    return err_valid(e) ? err_table[e].name : "UNKNOWN";
}

void m2m_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!errbuf || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}
