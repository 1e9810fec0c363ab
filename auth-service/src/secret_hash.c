#include "secret_hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2m/b64.h"
#include "m2m/log.h"
#include "m2m/rand.h"

#define SALT_LEN 16
#define DK_LEN 32
#define CACHE_STRIPES 64
#define CLIENT_ID_MAX 128

typedef struct {
    bool used;
    char client_id[CLIENT_ID_MAX + 1];
    uint8_t stored_digest[SHA256_DIGEST_LENGTH]; /* which stored hash this verified */
    uint8_t tag[SHA256_DIGEST_LENGTH];           /* HMAC(pepper, id || 0 || secret) */
} cache_slot;

struct auth_secrets {
    auth_secrets_params params;
    uint8_t pepper[32];
    EVP_MAC_CTX *tag_tmpl; /* HMAC-SHA256 keyed with the pepper, copied per use */
    EVP_MD *sha256;        /* fetched once */
    sem_t kdf_slots;
    cache_slot *slots;
    pthread_mutex_t stripes[CACHE_STRIPES];
};

/* One keyed HMAC context made at start: the per-request tag then costs a
 * context copy and the hash, with no algorithm fetch (global locks in
 * OpenSSL 3). */
static m2m_err tag_init(auth_secrets *s)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    m2m_err rc = M2M_ERR_CRYPTO;

    s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    s->tag_tmpl = mac && s->sha256 ? EVP_MAC_CTX_new(mac) : NULL;
    if (s->tag_tmpl && EVP_MAC_init(s->tag_tmpl, s->pepper, sizeof(s->pepper), params) == 1)
        rc = M2M_OK;
    EVP_MAC_free(mac);
    return rc;
}

m2m_err auth_secrets_new(const auth_secrets_params *params, auth_secrets **out)
{
    m2m_err rc = M2M_OK;
    auth_secrets *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (!s)
        return M2M_ERR_NOMEM;
    s->params = *params;
    rc = m2m_rand_bytes(s->pepper, sizeof(s->pepper));
    if (rc)
        goto fail;
    rc = tag_init(s);
    if (rc)
        goto fail;
    if (sem_init(&s->kdf_slots, 0, (unsigned)(params->concurrency > 0 ? params->concurrency : 1))) {
        rc = M2M_ERR_INTERNAL;
        goto fail;
    }
    if (params->cache_slots) {
        s->slots = calloc(params->cache_slots, sizeof(cache_slot));
        if (!s->slots) {
            sem_destroy(&s->kdf_slots);
            rc = M2M_ERR_NOMEM;
            goto fail;
        }
    }
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_init(&s->stripes[i], NULL);
    *out = s;
    return M2M_OK;
fail:
    EVP_MAC_CTX_free(s->tag_tmpl);
    EVP_MD_free(s->sha256);
    free(s);
    return rc;
}

void auth_secrets_free(auth_secrets *s)
{
    if (!s)
        return;
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_destroy(&s->stripes[i]);
    sem_destroy(&s->kdf_slots);
    EVP_MAC_CTX_free(s->tag_tmpl);
    EVP_MD_free(s->sha256);
    if (s->slots)
        OPENSSL_cleanse(s->slots, s->params.cache_slots * sizeof(cache_slot));
    free(s->slots);
    OPENSSL_cleanse(s->pepper, sizeof(s->pepper));
    free(s);
}

static m2m_err scrypt(auth_secrets *s, const char *secret, size_t len, const uint8_t *salt,
                      size_t saltlen, int log_n, int r, int p, uint8_t *dk)
{
    uint64_t n = (uint64_t)1 << log_n;
    /* V is 128*r*N bytes; allow it plus headroom (OpenSSL's default cap is 32 MiB). */
    uint64_t maxmem = 128ULL * (uint64_t)r * (n + (uint64_t)p + 2) + (1ULL << 20);
    int ok;

    /* Bound concurrent scrypt runs: each takes 128*r*N bytes. */
    while (sem_wait(&s->kdf_slots) != 0)
        ;
    ok = EVP_PBE_scrypt(secret, len, salt, saltlen, n, (uint64_t)r, (uint64_t)p, maxmem, dk,
                        DK_LEN);
    sem_post(&s->kdf_slots);
    return ok == 1 ? M2M_OK : M2M_ERR_CRYPTO;
}

m2m_err auth_secret_hash(auth_secrets *s, const char *secret, size_t len, char *out,
                         size_t outcap)
{
    uint8_t salt[SALT_LEN], dk[DK_LEN];
    char salt64[M2M_B64URL_LEN(SALT_LEN) + 1], dk64[M2M_B64URL_LEN(DK_LEN) + 1];
    m2m_err rc;
    const auth_secrets_params *pp = &s->params;

    rc = m2m_rand_bytes(salt, sizeof(salt));
    if (rc)
        goto out;
    rc = scrypt(s, secret, len, salt, sizeof(salt), pp->log_n, pp->r, pp->p, dk);
    if (rc)
        goto out;
    rc = m2m_b64url_encode(salt, sizeof(salt), salt64, sizeof(salt64), NULL);
    if (rc)
        goto out;
    rc = m2m_b64url_encode(dk, sizeof(dk), dk64, sizeof(dk64), NULL);
    if (rc)
        goto out;
    int n = snprintf(out, outcap, "$scrypt$ln=%d,r=%d,p=%d$%s$%s", pp->log_n, pp->r, pp->p,
                     salt64, dk64);
    if (n < 0 || (size_t)n >= outcap)
        rc = M2M_ERR_INTERNAL;
out:
    OPENSSL_cleanse(dk, sizeof(dk));
    return rc;
}

/* Parses "$scrypt$ln=L,r=R,p=P$salt$hash". */
/* Reads "<prefix><1-2 digit number>" and advances; false if absent. */
static bool take_param(const char **s, const char *prefix, int lo, int hi, int *out)
{
    size_t n = strlen(prefix);
    int v = 0, digits = 0;

    if (strncmp(*s, prefix, n) != 0)
        return false;
    const char *p = *s + n;
    while (*p >= '0' && *p <= '9' && digits < 3) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || digits > 2 || v < lo || v > hi)
        return false;
    *s = p;
    *out = v;
    return true;
}

/* Parses exactly "$scrypt$ln=L,r=R,p=P$<salt>$<hash>" with bounded
 * parameters: a hash from a dump or a bug must never make us allocate
 * gigabytes or accept trailing junk. */
static m2m_err parse_stored(const char *stored, int *log_n, int *r, int *p, uint8_t *salt,
                            size_t *saltlen, uint8_t *dk)
{
    const char *s = stored;
    size_t dklen = 0;

    if (!take_param(&s, "$scrypt$ln=", 10, 20, log_n) || !take_param(&s, ",r=", 1, 16, r) ||
        !take_param(&s, ",p=", 1, 16, p) || *s++ != '$')
        return M2M_ERR_INTERNAL;
    /* scrypt requires N < 2^(16 r) */
    if (*log_n >= 16 * *r)
        return M2M_ERR_INTERNAL;
    const char *dollar = strchr(s, '$');
    if (!dollar || dollar == s)
        return M2M_ERR_INTERNAL;
    if (m2m_b64url_decode(s, (size_t)(dollar - s), salt, 32, saltlen) ||
        m2m_b64url_decode(dollar + 1, strlen(dollar + 1), dk, DK_LEN, &dklen) || dklen != DK_LEN)
        return M2M_ERR_INTERNAL;
    return M2M_OK;
}

static m2m_err cache_tag(const auth_secrets *s, const char *client_id, const char *secret,
                         size_t len, uint8_t *tag)
{
    static const uint8_t zero = 0;
    size_t taglen = 0;
    EVP_MAC_CTX *m = EVP_MAC_CTX_dup(s->tag_tmpl);
    int ok = m && EVP_MAC_update(m, (const uint8_t *)client_id, strlen(client_id)) == 1 &&
             EVP_MAC_update(m, &zero, 1) == 1 &&
             EVP_MAC_update(m, (const uint8_t *)secret, len) == 1 &&
             EVP_MAC_final(m, tag, &taglen, SHA256_DIGEST_LENGTH) == 1 &&
             taglen == SHA256_DIGEST_LENGTH;
    EVP_MAC_CTX_free(m);
    return ok ? M2M_OK : M2M_ERR_CRYPTO;
}

static size_t slot_index(const auth_secrets *s, const char *client_id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = client_id; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    return (size_t)(h % s->params.cache_slots);
}

static m2m_err verify(auth_secrets *s, const char *client_id, const char *stored,
                      const char *secret, size_t len, bool may_block)
{
    uint8_t stored_digest[SHA256_DIGEST_LENGTH], tag[SHA256_DIGEST_LENGTH];
    uint8_t salt[32], want[DK_LEN], got[DK_LEN];
    size_t saltlen = 0;
    int log_n, r, p;
    m2m_err rc = M2M_OK;
    bool cacheable = s->slots && strlen(client_id) <= CLIENT_ID_MAX && len <= AUTH_SECRET_MAX;

    if (cacheable) {
        if (EVP_Digest(stored, strlen(stored), stored_digest, NULL, s->sha256, NULL) != 1 ||
            cache_tag(s, client_id, secret, len, tag) != M2M_OK)
            cacheable = false; /* fall back to scrypt; correctness over speed */
    }
    if (cacheable) {
        size_t i = slot_index(s, client_id);
        pthread_mutex_t *lock = &s->stripes[i % CACHE_STRIPES];
        pthread_mutex_lock(lock);
        cache_slot *slot = &s->slots[i];
        bool hit = slot->used && strcmp(slot->client_id, client_id) == 0 &&
                   memcmp(slot->stored_digest, stored_digest, sizeof(stored_digest)) == 0;
        bool match = hit && CRYPTO_memcmp(slot->tag, tag, sizeof(tag)) == 0;
        pthread_mutex_unlock(lock);
        /* A hit knows the right secret for this stored hash: a different
         * presented secret is wrong without running scrypt again. */
        if (hit) {
            rc = match ? M2M_OK : M2M_ERR_INVALID_CLIENT;
            goto out;
        }
    }
    if (!may_block) {
        rc = M2M_ERR_WOULD_BLOCK;
        goto out;
    }
    rc = parse_stored(stored, &log_n, &r, &p, salt, &saltlen, want);
    if (rc) {
        M2M_ERROR("secret_hash_unreadable", "stored secret hash of a client is not understood");
        goto out;
    }
    rc = scrypt(s, secret, len, salt, saltlen, log_n, r, p, got);
    if (rc) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    if (CRYPTO_memcmp(want, got, sizeof(got)) != 0) {
        rc = M2M_ERR_INVALID_CLIENT;
        goto out;
    }
    if (cacheable) {
        size_t i = slot_index(s, client_id);
        pthread_mutex_t *lock = &s->stripes[i % CACHE_STRIPES];
        pthread_mutex_lock(lock);
        cache_slot *slot = &s->slots[i];
        slot->used = true;
        snprintf(slot->client_id, sizeof(slot->client_id), "%s", client_id);
        memcpy(slot->stored_digest, stored_digest, sizeof(stored_digest));
        memcpy(slot->tag, tag, sizeof(tag));
        pthread_mutex_unlock(lock);
    }
out:
    OPENSSL_cleanse(got, sizeof(got));
    OPENSSL_cleanse(tag, sizeof(tag));
    return rc;
}

m2m_err auth_secret_verify(auth_secrets *s, const char *client_id, const char *stored,
                           const char *secret, size_t len)
{
    return verify(s, client_id, stored, secret, len, true);
}

m2m_err auth_secret_verify_cached(auth_secrets *s, const char *client_id, const char *stored,
                                  const char *secret, size_t len)
{
    return verify(s, client_id, stored, secret, len, false);
}
