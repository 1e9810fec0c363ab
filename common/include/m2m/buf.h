/* A growable byte buffer with a hard cap (curl's dynbuf): every buffer that
 * holds peer-controlled data has a maximum and appending past it fails. */
#ifndef M2M_BUF_H
#define M2M_BUF_H

#include <stddef.h>
#include "m2m/err.h"

typedef struct {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max; /* maximum len; appending beyond gives M2M_ERR_PAYLOAD_TOO_LARGE */
} m2m_buf;

void m2m_buf_init(m2m_buf *b, size_t max);
m2m_err m2m_buf_append(m2m_buf *b, const void *p, size_t n);
m2m_err m2m_buf_appends(m2m_buf *b, const char *s);
m2m_err m2m_buf_appendf(m2m_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void m2m_buf_reset(m2m_buf *b);
/* Hands the data to the caller (free() it) and leaves the buffer empty. */
char *m2m_buf_steal(m2m_buf *b);
void m2m_buf_free(m2m_buf *b);

#endif
