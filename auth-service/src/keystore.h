/* Signing keys on disk: AUTH_KEY_DIR holds one PKCS#8 PEM per key, named
 * "<created-unix-time>-<kid>.pem", mode 0600 in a 0700 directory. The newest
 * key signs; every key in the directory is published in the JWKS so tokens
 * signed by an older key keep verifying. A key is created on first start and
 * never regenerated: tokens survive restarts. */
#ifndef AUTH_KEYSTORE_H
#define AUTH_KEYSTORE_H

#include <stddef.h>
#include "m2m/err.h"
#include "m2m/jwt.h"

#define AUTH_KEYSTORE_MAX_KEYS 16

typedef struct {
    m2m_key *keys[AUTH_KEYSTORE_MAX_KEYS]; /* oldest first */
    size_t n;
    const m2m_key *signing; /* the newest */
    char *jwks_json;        /* {"keys":[...]} served as is */
} auth_keystore;

/* Loads the directory, creating it and a first key when empty. Refuses key
 * files that group or others can read. */
m2m_err auth_keystore_open(const char *dir, auth_keystore **out);
void auth_keystore_free(auth_keystore *ks);

#endif
