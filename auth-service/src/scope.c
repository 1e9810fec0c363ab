#include "scope.h"

#include <stdio.h>
#include <string.h>

static bool scope_char_ok(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

bool auth_scope_has(const char *list, const char *tok, size_t len)
{
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (n == len && memcmp(p, tok, len) == 0)
            return true;
        p += n;
        while (*p == ' ')
            p++;
    }
    return false;
}

m2m_err auth_scope_normalize(const char *in, char *out, size_t outcap)
{
    size_t used = 0;
    const char *p = in;

    if (outcap == 0 || strlen(in) > AUTH_SCOPE_MAX)
        return M2M_ERR_INVALID_SCOPE;
    out[0] = '\0';
    while (*p) {
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t n = 0;
        while (p[n] && p[n] != ' ') {
            if (!scope_char_ok((unsigned char)p[n]))
                return M2M_ERR_INVALID_SCOPE;
            n++;
        }
        if (!auth_scope_has(out, p, n)) {
            if (used + (used ? 1 : 0) + n + 1 > outcap)
                return M2M_ERR_INVALID_SCOPE;
            if (used)
                out[used++] = ' ';
            memcpy(out + used, p, n);
            used += n;
            out[used] = '\0';
        }
        p += n;
    }
    /* Spaces only: RFC 6749 §3.3 has no empty scope-token. */
    if (used == 0 && *in)
        return M2M_ERR_INVALID_SCOPE;
    return M2M_OK;
}

bool auth_scope_subset(const char *requested, const char *allowed, char *bad, size_t badcap)
{
    const char *p = requested;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (n && !auth_scope_has(allowed, p, n)) {
            if (badcap)
                snprintf(bad, badcap, "%.*s", (int)n, p);
            return false;
        }
        p += n;
        while (*p == ' ')
            p++;
    }
    return true;
}
