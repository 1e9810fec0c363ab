/* Client secrets at rest and on the hot path.
 *
 * At rest: scrypt (memory-hard; OpenSSL's EVP_PBE_scrypt, no new dependency),
 * encoded "$scrypt$ln=15,r=8,p=1$<salt>$<hash>" so parameters can change
 * without invalidating stored hashes. A dump of auth.clients does not give
 * away a weak secret such as the seed's "secret" in seconds.
 *
 * On the hot path: the token endpoint would pay ~50-100 ms of scrypt per
 * request (Hydra's and Spring's best-known failure). After one successful
 * scrypt check the process remembers HMAC-SHA256(pepper, id || 0 || secret)
 * for that client and stored hash; later requests cost one HMAC and a
 * constant-time compare. The pepper is random per process and never leaves
 * memory, so the cache adds nothing to what a database dump reveals. A slot
 * is tied to the stored hash: rotating a secret invalidates it. */
#ifndef AUTH_SECRET_HASH_H
#define AUTH_SECRET_HASH_H

#include <stddef.h>
#include "m2m/err.h"

#define AUTH_SECRET_HASH_MAX 160
#define AUTH_SECRET_MAX 256 /* bytes of a presented secret */

typedef struct auth_secrets auth_secrets;

typedef struct {
    int log_n;          /* scrypt N = 2^log_n */
    int r;              /* block size */
    int p;              /* parallelism */
    int concurrency;    /* scrypt runs allowed at once */
    size_t cache_slots; /* 0 disables the cache */
} auth_secrets_params;

m2m_err auth_secrets_new(const auth_secrets_params *params, auth_secrets **out);
void auth_secrets_free(auth_secrets *s);

/* Hashes a secret with fresh salt and the configured parameters. */
m2m_err auth_secret_hash(auth_secrets *s, const char *secret, size_t len, char *out,
                         size_t outcap);
/* M2M_OK when `secret` matches `stored`, M2M_ERR_INVALID_CLIENT when not,
 * M2M_ERR_INTERNAL when `stored` is not a hash we understand. */
m2m_err auth_secret_verify(auth_secrets *s, const char *client_id, const char *stored,
                           const char *secret, size_t len);

/* The cache alone: M2M_OK or M2M_ERR_INVALID_CLIENT when it knows the
 * answer, M2M_ERR_WOULD_BLOCK when only scrypt can tell. */
m2m_err auth_secret_verify_cached(auth_secrets *s, const char *client_id, const char *stored,
                                  const char *secret, size_t len);

#endif
