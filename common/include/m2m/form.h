/* application/x-www-form-urlencoded bodies (HTML 5 / RFC 6749 appendix B).
 * Strict: a malformed percent-escape or a NUL byte is an error, not a guess. */
#ifndef M2M_FORM_H
#define M2M_FORM_H

#include <stddef.h>
#include "m2m/buf.h"
#include "m2m/err.h"

#define M2M_FORM_MAX_FIELDS 32

typedef struct {
    char *key;
    char *value;
} m2m_form_field;

typedef struct {
    m2m_form_field fields[M2M_FORM_MAX_FIELDS];
    size_t n;
} m2m_form;

m2m_err m2m_form_parse(const char *body, size_t len, m2m_form *out);
/* First value of key (NULL if absent); *count gets the number of occurrences. */
const char *m2m_form_get(const m2m_form *f, const char *key, size_t *count);
void m2m_form_free(m2m_form *f);
/* Percent-decodes (and '+' -> ' ' when plus_is_space) into a new string. */
m2m_err m2m_pct_decode(const char *in, size_t n, int plus_is_space, char **out, size_t *outlen);

/* Appends n bytes percent-encoded for a form body or HTTP Basic (RFC 6749
 * appendix B): A-Z a-z 0-9 - . _ * stay, a space becomes '+', every other
 * byte %XX. */
m2m_err m2m_pct_encode(m2m_buf *b, const char *in, size_t n);

#endif
