/* OAuth scope strings (RFC 6749 §3.3): space-delimited scope-tokens of
 * %x21 / %x23-5B / %x5D-7E. */
#ifndef AUTH_SCOPE_H
#define AUTH_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include "m2m/err.h"

#define AUTH_SCOPE_MAX 1024 /* bytes of a whole scope string */

/* Checks syntax and rewrites `in` into `out` with single spaces and no
 * duplicates, in first-seen order. "" is valid (no scope). */
m2m_err auth_scope_normalize(const char *in, char *out, size_t outcap);
/* True when the token (len bytes) is one of the space-separated list. */
bool auth_scope_has(const char *list, const char *tok, size_t len);
/* True when every token of `requested` is in `allowed`; otherwise copies the
 * first offending token to bad. */
bool auth_scope_subset(const char *requested, const char *allowed, char *bad, size_t badcap);

#endif
