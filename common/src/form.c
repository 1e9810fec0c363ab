/* application/x-www-form-urlencoded parsing. The token endpoint reads client
 * credentials from here, so anything ambiguous (a bad escape, an embedded NUL
 * that would truncate a C string) is refused rather than repaired. */
#include "m2m/form.h"

#include <stdlib.h>
#include <string.h>

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

m2m_err m2m_pct_decode(const char *in, size_t n, int plus_is_space, char **out, size_t *outlen)
{
    m2m_err rc = M2M_OK;
    char *dst = NULL;
    size_t i, j = 0;

    *out = NULL;
    if (outlen)
        *outlen = 0;
    /* Decoding never lengthens the text, so n + 1 bytes always suffice. */
    dst = malloc(n + 1);
    if (!dst) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c == '%') {
            int hi, lo;

            if (n - i < 3) {
                rc = M2M_ERR_INVALID_REQUEST; /* truncated escape */
                goto out;
            }
            hi = hex_value((unsigned char)in[i + 1]);
            lo = hex_value((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0) {
                rc = M2M_ERR_INVALID_REQUEST;
                goto out;
            }
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        /* A NUL, raw or escaped, would silently cut the C string short. */
        if (c == '\0') {
            rc = M2M_ERR_INVALID_REQUEST;
            goto out;
        }
        dst[j++] = (char)c;
    }
    dst[j] = '\0';
    *out = dst;
    dst = NULL;
    if (outlen)
        *outlen = j;
out:
    free(dst);
    return rc;
}

void m2m_form_free(m2m_form *f)
{
    size_t i;

    if (!f)
        return;
    /* Walk every slot, not just n: a parse that failed half-way may have
     * filled a slot before counting it, and free(NULL) is harmless. */
    for (i = 0; i < M2M_FORM_MAX_FIELDS; i++) {
        free(f->fields[i].key);
        free(f->fields[i].value);
        f->fields[i].key = NULL;
        f->fields[i].value = NULL;
    }
    f->n = 0;
}

m2m_err m2m_form_parse(const char *body, size_t len, m2m_form *out)
{
    m2m_err rc = M2M_OK;
    size_t pos = 0;

    memset(out, 0, sizeof(*out));
    while (pos < len) {
        const char *seg = body + pos;
        const char *amp = memchr(seg, '&', len - pos);
        size_t seglen = amp ? (size_t)(amp - seg) : len - pos;
        const char *eq;
        size_t klen;
        m2m_form_field *fld;

        pos += seglen + 1; /* past the '&' (or past the end, which ends the loop) */
        if (seglen == 0)
            continue; /* "a=1&&b=2" and a trailing '&' carry no field */
        if (out->n == M2M_FORM_MAX_FIELDS) {
            rc = M2M_ERR_INVALID_REQUEST;
            goto out;
        }
        fld = &out->fields[out->n];
        eq = memchr(seg, '=', seglen);
        klen = eq ? (size_t)(eq - seg) : seglen;
        rc = m2m_pct_decode(seg, klen, 1, &fld->key, NULL);
        if (rc)
            goto out;
        /* "flag" without '=' is a key with an empty value (HTML's rule). */
        if (eq)
            rc = m2m_pct_decode(eq + 1, seglen - klen - 1, 1, &fld->value, NULL);
        else
            rc = m2m_pct_decode("", 0, 1, &fld->value, NULL);
        if (rc)
            goto out;
        out->n++;
    }
out:
    if (rc)
        m2m_form_free(out);
    return rc;
}

const char *m2m_form_get(const m2m_form *f, const char *key, size_t *count)
{
    const char *first = NULL;
    size_t i, c = 0;

    /* Counting lets callers refuse a repeated parameter (RFC 6749 §3.2:
     * "parameters MUST NOT be included more than once"). */
    for (i = 0; f && i < f->n; i++) {
        if (strcmp(f->fields[i].key, key) == 0) {
            if (!first)
                first = f->fields[i].value;
            c++;
        }
    }
    if (count)
        *count = c;
    return first;
}

m2m_err m2m_pct_encode(m2m_buf *b, const char *in, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    m2m_err rc = M2M_OK;
    size_t i;

    for (i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)in[i];
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '*')
            rc = m2m_buf_append(b, in + i, 1);
        else if (c == ' ')
            rc = m2m_buf_append(b, "+", 1);
        else
            rc = m2m_buf_append(b, esc, 3);
    }
    return rc;
}
