/* Capped growable buffer (curl's dynbuf). `cap` counts allocated bytes,
 * including the room for the terminating NUL, so len < cap whenever data is
 * non-NULL and data[len] is always a valid place for the terminator. */
#include "m2m/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Small first allocation: most buffers hold one short JSON reply. */
#define BUF_MIN_CAP 64

void m2m_buf_init(m2m_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* Makes room for `n` more bytes plus the NUL. Growth is geometric so appending
 * byte by byte stays linear, but never allocates beyond max + 1: a buffer
 * fed by a peer must not reserve more memory than it may ever hold. */
static m2m_err buf_reserve(m2m_buf *b, size_t n)
{
    size_t need, ncap;
    char *p;

    /* Written as a subtraction so that a huge n cannot wrap around. */
    if (b->len > b->max || n > b->max - b->len)
        return M2M_ERR_PAYLOAD_TOO_LARGE;
    need = b->len + n + 1; /* cannot overflow: len + n <= max < SIZE_MAX */
    if (b->data && need <= b->cap)
        return M2M_OK;

    ncap = b->cap ? b->cap : BUF_MIN_CAP;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    if (ncap < need) /* only reachable if max == SIZE_MAX; be safe anyway */
        ncap = need;

    p = realloc(b->data, ncap);
    if (!p)
        return M2M_ERR_NOMEM;
    if (!b->data)
        p[0] = '\0';
    b->data = p;
    b->cap = ncap;
    return M2M_OK;
}

m2m_err m2m_buf_append(m2m_buf *b, const void *p, size_t n)
{
    m2m_err rc;

    /* Even a zero-length append allocates, so that afterwards data is a valid
     * (possibly empty) string callers can use without a NULL check. */
    rc = buf_reserve(b, n);
    if (rc)
        goto out;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
out:
    return rc;
}

m2m_err m2m_buf_appends(m2m_buf *b, const char *s)
{
    return m2m_buf_append(b, s, strlen(s));
}

m2m_err m2m_buf_appendf(m2m_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;
    m2m_err rc;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    /* First pass measures, second writes: one exact reservation instead of
     * retrying on truncation. */
    n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    rc = buf_reserve(b, (size_t)n);
    if (rc)
        goto out;
    if (vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2) != n) {
        /* The arguments changed under us; keep the old content intact. */
        b->data[b->len] = '\0';
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    b->len += (size_t)n;
out:
    va_end(ap2);
    va_end(ap);
    return rc;
}

void m2m_buf_reset(m2m_buf *b)
{
    /* Keep the allocation: reset is for reusing a buffer in a loop. */
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *m2m_buf_steal(m2m_buf *b)
{
    char *p = b->data;

    if (!p)
        p = strdup(""); /* callers always get something they can free() */
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

void m2m_buf_free(m2m_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
