/* Access-token verification for resource servers (design.md §4, issue 3).
 *
 * Three pieces share one struct:
 * - the keyset: an immutable snapshot of the JWKS keys behind a rwlock.
 *   Readers hold the read lock for one m2m_jwt_verify; a refresh builds a new
 *   snapshot outside any lock, swaps the pointer under the write lock and
 *   frees the old one after unlocking, when no reader can still hold it.
 * - the fetcher: a background thread that loads the JWKS with back-off until
 *   the first success and then every refresh_interval, plus on-demand
 *   refetches for unknown kids. Fetches are single-flight: whoever finds one
 *   in progress waits for its result instead of starting another.
 * - the verified-token cache: direct-mapped slots keyed by the SHA-256 of the
 *   whole token, behind striped mutexes (auth-service/src/secret_hash.c). A
 *   hit costs a hash, a lock and a copy: no JSON, no ECDSA and no allocation
 *   of ours (EVP_Digest makes its own short-lived context).
 *
 * Every key loaded gets a serial number that identifies (kid, public key)
 * across refreshes; a cached token remembers the serial of the key that
 * verified it and is only accepted while that serial is live, so a key
 * removed from the JWKS - or replaced under the same kid - stops its tokens
 * at the next refresh. */
#include "m2m/verifier.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "m2m/b64.h"
#include "m2m/httpc.h"
#include "m2m/jwt.h"
#include "m2m/log.h"
#include "m2m/rand.h"

#define VERIFIER_MAX_KEYS  16
#define JWKS_MAX_BYTES     (64 * 1024)
#define HASH_LEN           32 /* SHA-256 */
#define CACHE_STRIPES      64
#define NLOCKS             (CACHE_STRIPES + 4) /* stripes, ks_lock, mu, wake, done */
#define BACKOFF_MIN_MS     100L
#define BACKOFF_MAX_MS     5000L
#define DEFAULT_TYP        "at+jwt"
#define DEFAULT_REFRESH_S  300L
#define DEFAULT_REFETCH_MS 10000L
#define DEFAULT_TIMEOUT_MS 3000L
/* Far enough for any real token; keeps a huge exp (1e300) inside time_t. */
#define EXP_CLAMP 253402300799.0 /* 9999-12-31T23:59:59Z */
/* WWW-Authenticate parameter caps: the header stays well under any limit. */
#define CHALLENGE_MAX 2048
#define CH_SCHEME     "Bearer"
#define REALM_CAP     128
#define DESC_CAP      256
#define SCOPE_CAP     (M2M_TOKEN_SCOPE_MAX - 1)

typedef struct {
    m2m_keyset ks; /* ks.keys points at keys */
    m2m_key *keys[VERIFIER_MAX_KEYS];
    uint64_t serial[VERIFIER_MAX_KEYS];
} key_snap;

typedef struct {
    uint8_t hash[HASH_LEN];
    uint64_t serial; /* key that verified the token; 0 = empty slot */
    double exp;      /* as the token says, for the same rule as m2m_jwt_verify */
    m2m_token_info info;
} cache_slot;

/* One cache line per stripe: neighbouring stripes taken by different threads
 * must not bounce the same line. */
typedef struct {
    _Alignas(64) pthread_mutex_t mu;
} stripe;

struct m2m_verifier {
    char *jwks_url, *issuer, *audience, *typ;
    long leeway, refresh_ms, refetch_min_ms, fetch_timeout_ms;

    EVP_MD *sha256; /* fetched once: EVP_Digest would otherwise look it up per call */

    /* verified-token cache */
    size_t nslots;
    cache_slot *slots;
    stripe stripes[CACHE_STRIPES];

    /* the keyset */
    pthread_rwlock_t ks_lock;
    key_snap *snap; /* NULL until the first JWKS */
    atomic_bool ready;
    /* Serials of the live keys, readable without a lock: the cache's hit path
     * checks them with plain atomic loads instead of taking ks_lock, which
     * every thread would otherwise write on every hit. Updated on each swap;
     * a hit racing a swap may still see an old serial for that instant, as a
     * verify that started just before the swap still uses the old keys. */
    _Atomic uint64_t live[VERIFIER_MAX_KEYS];

    /* Fetch state, under mu. Only the thread that set `fetching` touches the
     * fields marked (F); mu hands them from one fetch to the next. */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the fetcher thread: time to stop */
    pthread_cond_t done; /* a fetch finished */
    bool stop, fetching, last_ok, outage;
    _Atomic uint64_t attempts; /* finished fetches, read without mu by checks */
    int64_t last_attempt_ms, last_ok_ms;
    long backoff_ms, retry_ms;
    uint64_t next_serial;        /* (F) */
    uint8_t good_hash[HASH_LEN]; /* (F) body of the JWKS in use */
    uint8_t seen_hash[HASH_LEN]; /* (F) last body whose skipped keys were reported */
    bool have_good;              /* (F) */
    pthread_t thread;
    bool thread_started;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec mono_deadline(int64_t ms)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    return ts;
}

/* Equal jitter: somewhere in [d/2, d], so verifiers restarted together do
 * not retry in lockstep against a recovering authorization server. */
static long jitter_ms(long d)
{
    uint32_t r = 0;

    if (m2m_rand_bytes((uint8_t *)&r, sizeof r))
        return d;
    return d / 2 + (long)(r % (uint32_t)(d / 2 + 1));
}

static bool sha256(const m2m_verifier *v, const void *p, size_t n, uint8_t out[HASH_LEN])
{
    unsigned int len = 0;

    if (EVP_Digest(p, n, out, &len, v->sha256, NULL) != 1 || len != HASH_LEN) {
        ERR_clear_error();
        return false;
    }
    return true;
}

/* ---- keyset snapshots --------------------------------------------------- */

static void snap_free(key_snap *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ks.n; i++)
        m2m_key_free(s->keys[i]);
    free(s);
}

/* A JWK member as a loggable string: only short printable ASCII, since the
 * document comes from the network. */
static const char *jwk_label(const json_t *jwk, const char *name)
{
    const json_t *m = json_object_get(jwk, name);
    const char *s;
    size_t i;

    if (!json_is_string(m))
        return "-";
    s = json_string_value(m);
    for (i = 0; s[i]; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || i >= M2M_KID_MAX)
            return "?";
    return s;
}

static bool snap_has_kid(const key_snap *s, const char *kid)
{
    for (size_t i = 0; i < s->ks.n; i++)
        if (strcmp(s->keys[i]->kid, kid) == 0)
            return true;
    return false;
}

/* Builds a snapshot from a JWKS body. Keys m2m_key_from_jwk refuses (RSA,
 * other curves, bad points) are skipped so that one foreign key does not
 * take the others down; a document without a single usable key is refused
 * so that it cannot replace a good keyset. `loud`: report skipped keys as
 * warnings (a body not seen before) rather than debug lines. */
static m2m_err jwks_parse(const char *body, size_t len, bool loud, key_snap **out, const char **why)
{
    const m2m_log_level lvl = loud ? M2M_LOG_WARN : M2M_LOG_DEBUG;
    json_t *root = NULL;
    const json_t *keys;
    key_snap *s = NULL;
    m2m_key *k = NULL;
    m2m_err rc = M2M_ERR_UPSTREAM;
    size_t i;

    *out = NULL;
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        *why = "not a JSON object";
        goto out;
    }
    keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        *why = "no keys array";
        goto out;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        rc = M2M_ERR_NOMEM;
        *why = "out of memory";
        goto out;
    }
    s->ks.keys = s->keys;
    for (i = 0; i < json_array_size(keys); i++) {
        const json_t *jwk = json_array_get(keys, i);

        if (s->ks.n == VERIFIER_MAX_KEYS) {
            M2M_LOG(lvl, "jwks_too_many_keys", "JWKS has %zu keys, using the first %d usable",
                    json_array_size(keys), VERIFIER_MAX_KEYS);
            break;
        }
        if (m2m_key_from_jwk(jwk, &k)) {
            M2M_LOG(lvl, "jwks_key_skipped",
                    "JWKS key %zu (kid %s, kty %s) is not a P-256 ES256 key", i,
                    jwk_label(jwk, "kid"), jwk_label(jwk, "kty"));
            continue;
        }
        /* Two keys under one kid would make the verdict depend on order. */
        if (snap_has_kid(s, k->kid)) {
            M2M_LOG(lvl, "jwks_key_skipped", "JWKS key %zu repeats kid %s", i, k->kid);
            m2m_key_free(k);
            k = NULL;
            continue;
        }
        s->keys[s->ks.n++] = k;
        k = NULL;
    }
    if (s->ks.n == 0) {
        *why = "no usable key";
        goto out;
    }
    *out = s;
    s = NULL;
    rc = M2M_OK;
out:
    snap_free(s);
    json_decref(root);
    return rc;
}

/* Gives every key of `s` the serial of the same key (kid and public key) in
 * the snapshot in use, or a new one. Returns whether the set changed. */
static bool snap_assign_serials(m2m_verifier *v, key_snap *s)
{
    const key_snap *old = v->snap; /* stable: only the fetching thread swaps it */
    bool changed = !old || old->ks.n != s->ks.n;

    for (size_t i = 0; i < s->ks.n; i++) {
        s->serial[i] = 0;
        for (size_t j = 0; old && j < old->ks.n; j++) {
            if (strcmp(old->keys[j]->kid, s->keys[i]->kid) == 0 &&
                EVP_PKEY_eq(old->keys[j]->pkey, s->keys[i]->pkey) == 1) {
                s->serial[i] = old->serial[j];
                break;
            }
        }
        if (!s->serial[i]) {
            s->serial[i] = ++v->next_serial;
            changed = true;
        }
    }
    ERR_clear_error(); /* EVP_PKEY_eq may leave a note for mismatched types */
    return changed;
}

static void log_loaded(const key_snap *s, bool changed)
{
    char kids[VERIFIER_MAX_KEYS * (M2M_KID_MAX + 1)];
    size_t pos = 0;

    if (!m2m_log_enabled(changed ? M2M_LOG_INFO : M2M_LOG_DEBUG))
        return;
    kids[0] = '\0';
    for (size_t i = 0; i < s->ks.n; i++) {
        int n = snprintf(kids + pos, sizeof kids - pos, "%s%s", i ? " " : "", s->keys[i]->kid);

        if (n < 0 || (size_t)n >= sizeof kids - pos)
            break;
        pos += (size_t)n;
    }
    M2M_LOG(changed ? M2M_LOG_INFO : M2M_LOG_DEBUG, "jwks_loaded", "%zu key(s): %s", s->ks.n, kids);
}

/* Swaps in a new snapshot; the old one is freed once no reader holds it,
 * which the write lock guarantees. */
static void snap_install(m2m_verifier *v, key_snap *s)
{
    key_snap *old;
    size_t i;

    pthread_rwlock_wrlock(&v->ks_lock);
    old = v->snap;
    v->snap = s;
    for (i = 0; i < VERIFIER_MAX_KEYS; i++)
        atomic_store(&v->live[i], i < s->ks.n ? s->serial[i] : 0);
    pthread_rwlock_unlock(&v->ks_lock);
    atomic_store(&v->ready, true);
    snap_free(old);
}

/* ---- fetching ----------------------------------------------------------- */

/* One JWKS request, parsed and installed. Runs without mu, by the one
 * thread that set v->fetching. */
static m2m_err jwks_fetch(m2m_verifier *v, const char **why, long *status)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    m2m_httpc_req req = {.url = v->jwks_url,
                         .headers = headers,
                         .timeout_ms = v->fetch_timeout_ms,
                         .max_response = JWKS_MAX_BYTES};
    m2m_httpc_resp resp;
    uint8_t hash[HASH_LEN];
    key_snap *s = NULL;
    bool loud;
    m2m_err rc;

    *status = 0;
    rc = m2m_httpc_do(&req, &resp);
    if (rc) {
        *why = "request failed (unreachable, timeout or larger than 64 KiB)";
        goto out;
    }
    *status = resp.status;
    if (resp.status != 200) {
        rc = M2M_ERR_UPSTREAM;
        *why = "unexpected HTTP status";
        goto out;
    }
    if (!sha256(v, resp.body.data, resp.body.len, hash)) {
        rc = M2M_ERR_CRYPTO;
        *why = "hash failed";
        goto out;
    }
    /* The same document as the keyset in use: nothing to parse or swap, and
     * cached tokens keep their serials without comparing keys. */
    if (v->have_good && memcmp(hash, v->good_hash, HASH_LEN) == 0)
        goto out;
    loud = memcmp(hash, v->seen_hash, HASH_LEN) != 0;
    memcpy(v->seen_hash, hash, HASH_LEN);
    rc = jwks_parse(resp.body.data, resp.body.len, loud, &s, why);
    if (rc)
        goto out;
    log_loaded(s, snap_assign_serials(v, s));
    snap_install(v, s);
    s = NULL;
    memcpy(v->good_hash, hash, HASH_LEN);
    v->have_good = true;
out:
    snap_free(s);
    m2m_httpc_resp_free(&resp);
    return rc;
}

/* Bookkeeping after a fetch, under mu: back-off, and one warning per outage
 * (not one per retry) with one info line when it ends. */
static void fetch_note(m2m_verifier *v, m2m_err rc, const char *why, long status)
{
    int64_t now = mono_ms();

    v->last_ok = rc == M2M_OK;
    if (rc == M2M_OK) {
        v->last_ok_ms = now;
        v->backoff_ms = BACKOFF_MIN_MS;
        if (v->outage)
            M2M_INFO("jwks_recovered", "JWKS fetch from %s works again", v->jwks_url);
        v->outage = false;
        return;
    }
    v->retry_ms = jitter_ms(v->backoff_ms);
    v->backoff_ms *= 2;
    if (v->backoff_ms > BACKOFF_MAX_MS)
        v->backoff_ms = BACKOFF_MAX_MS;
    /* Once keys are loaded a failed refresh is not urgent: never retry more
     * often than a scheduled refresh would happen anyway. */
    if (atomic_load(&v->ready) && v->backoff_ms > v->refresh_ms)
        v->backoff_ms = v->refresh_ms;
    if (!v->outage) {
        if (m2m_log_enabled(M2M_LOG_WARN)) {
            json_t *f =
                json_pack("{s:s, s:s, s:s, s:I, s:b}", "msg",
                          atomic_load(&v->ready) ? "JWKS refresh failed, keeping the loaded keys"
                                                 : "JWKS not available yet, retrying",
                          "url", v->jwks_url, "reason", why ? why : m2m_err_name(rc), "status",
                          (json_int_t)status, "ready", atomic_load(&v->ready));
            m2m_log_event(M2M_LOG_WARN, "jwks_fetch_failed", f);
        }
        v->outage = true;
    } else {
        M2M_DEBUG("jwks_fetch_failed", "JWKS fetch from %s failed again: %s", v->jwks_url,
                  why ? why : m2m_err_name(rc));
    }
}

/* Single flight, called and returning with mu held: if a fetch is already
 * running, waits for it and takes its result; else runs one with mu
 * released. Returns whether the fetch succeeded. */
static bool fetch_locked(m2m_verifier *v)
{
    const char *why = NULL;
    long status = 0;
    uint64_t n0;
    m2m_err rc;

    if (v->fetching) {
        n0 = atomic_load(&v->attempts);
        while (atomic_load(&v->attempts) == n0)
            pthread_cond_wait(&v->done, &v->mu);
        return v->last_ok;
    }
    v->fetching = true;
    v->last_attempt_ms = mono_ms();
    pthread_mutex_unlock(&v->mu);
    rc = jwks_fetch(v, &why, &status);
    pthread_mutex_lock(&v->mu);
    v->fetching = false;
    fetch_note(v, rc, why, status);
    atomic_fetch_add(&v->attempts, 1);
    pthread_cond_broadcast(&v->done);
    return rc == M2M_OK;
}

/* The background fetcher: first fetch at once, retries with back-off while
 * the last attempt failed, else a refresh refresh_interval after the last
 * success (whoever made it). Sleeps on a condition variable so that
 * m2m_verifier_free wakes it at once. */
static void *fetcher_main(void *arg)
{
    m2m_verifier *v = arg;
    int64_t due;
    struct timespec ts;

    pthread_mutex_lock(&v->mu);
    while (!v->stop) {
        if (atomic_load(&v->attempts) == 0)
            due = 0;
        else if (v->last_ok)
            due = v->last_ok_ms + v->refresh_ms;
        else
            due = v->last_attempt_ms + v->retry_ms;
        if (mono_ms() >= due) {
            fetch_locked(v);
            continue;
        }
        ts = mono_deadline(due);
        pthread_cond_timedwait(&v->wake, &v->mu, &ts);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

static m2m_err cfg_check(const m2m_verifier_cfg *cfg)
{
    const char *bad = NULL;

    if (!cfg->jwks_url || !*cfg->jwks_url)
        bad = "jwks_url";
    else if (!cfg->issuer || !*cfg->issuer)
        bad = "issuer";
    else if (!cfg->audience || !*cfg->audience)
        bad = "audience";
    else if (cfg->typ && !*cfg->typ)
        bad = "typ";
    else if (cfg->leeway < 0)
        bad = "leeway";
    else if (cfg->refresh_interval < 0 || cfg->refresh_interval > 86400L * 365)
        bad = "refresh_interval";
    else if (cfg->refetch_min_ms < 0)
        bad = "refetch_min_ms";
    else if (cfg->fetch_timeout_ms < 0)
        bad = "fetch_timeout_ms";
    if (bad) {
        M2M_ERROR("verifier_config", "invalid verifier setting '%s'", bad);
        return M2M_ERR_CONFIG;
    }
    return M2M_OK;
}

/* Initialises the locks; *n counts what needs destroying on failure. */
static m2m_err locks_init(m2m_verifier *v, int *n)
{
    pthread_rwlockattr_t rwa;
    pthread_condattr_t ca;
    m2m_err rc = M2M_ERR_INTERNAL;

    *n = 0;
    for (int i = 0; i < CACHE_STRIPES; i++) {
        if (pthread_mutex_init(&v->stripes[i].mu, NULL))
            goto out;
        (*n)++;
    }
    /* Writer preference: under constant verification load glibc's default
     * (readers first) could keep a refresh waiting forever. */
    if (pthread_rwlockattr_init(&rwa))
        goto out;
    pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&v->ks_lock, &rwa)) {
        pthread_rwlockattr_destroy(&rwa);
        goto out;
    }
    pthread_rwlockattr_destroy(&rwa);
    (*n)++;
    if (pthread_mutex_init(&v->mu, NULL))
        goto out;
    (*n)++;
    /* Monotonic: a wall-clock step must not stretch or skip a refresh. */
    if (pthread_condattr_init(&ca))
        goto out;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&v->wake, &ca)) {
        pthread_condattr_destroy(&ca);
        goto out;
    }
    (*n)++;
    if (pthread_cond_init(&v->done, &ca)) {
        pthread_condattr_destroy(&ca);
        goto out;
    }
    pthread_condattr_destroy(&ca);
    (*n)++;
    rc = M2M_OK;
out:
    return rc;
}

static void locks_destroy(m2m_verifier *v, int n)
{
    int stripes = n < CACHE_STRIPES ? n : CACHE_STRIPES;

    for (int i = 0; i < stripes; i++)
        pthread_mutex_destroy(&v->stripes[i].mu);
    if (n > CACHE_STRIPES)
        pthread_rwlock_destroy(&v->ks_lock);
    if (n > CACHE_STRIPES + 1)
        pthread_mutex_destroy(&v->mu);
    if (n > CACHE_STRIPES + 2)
        pthread_cond_destroy(&v->wake);
    if (n > CACHE_STRIPES + 3)
        pthread_cond_destroy(&v->done);
}

static void verifier_release(m2m_verifier *v, int nlocks)
{
    locks_destroy(v, nlocks);
    snap_free(v->snap);
    free(v->slots);
    EVP_MD_free(v->sha256);
    free(v->jwks_url);
    free(v->issuer);
    free(v->audience);
    free(v->typ);
    free(v);
}

m2m_err m2m_verifier_new(const m2m_verifier_cfg *cfg, m2m_verifier **out)
{
    m2m_verifier *v = NULL;
    int nlocks = 0;
    m2m_err rc;

    if (!cfg || !out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    *out = NULL;
    rc = cfg_check(cfg);
    if (rc)
        goto out;
    /* aligned_alloc: the stripes are cache-line aligned, which calloc's
     * 16 bytes do not honour. sizeof is a multiple of the alignment. */
    v = aligned_alloc(_Alignof(m2m_verifier), sizeof *v);
    if (!v) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    memset(v, 0, sizeof *v);
    v->jwks_url = strdup(cfg->jwks_url);
    v->issuer = strdup(cfg->issuer);
    v->audience = strdup(cfg->audience);
    v->typ = cfg->typ ? strdup(cfg->typ) : strdup(DEFAULT_TYP);
    v->leeway = cfg->leeway;
    v->refresh_ms = (cfg->refresh_interval ? cfg->refresh_interval : DEFAULT_REFRESH_S) * 1000L;
    v->refetch_min_ms = cfg->refetch_min_ms ? cfg->refetch_min_ms : DEFAULT_REFETCH_MS;
    v->fetch_timeout_ms = cfg->fetch_timeout_ms ? cfg->fetch_timeout_ms : DEFAULT_TIMEOUT_MS;
    v->backoff_ms = BACKOFF_MIN_MS;
    v->nslots = cfg->cache_slots;
    if (!v->jwks_url || !v->issuer || !v->audience || !v->typ) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    v->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!v->sha256) {
        ERR_clear_error();
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    if (v->nslots) {
        v->slots = calloc(v->nslots, sizeof *v->slots);
        if (!v->slots) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
    }
    rc = locks_init(v, &nlocks);
    if (rc)
        goto out;
    if (pthread_create(&v->thread, NULL, fetcher_main, v)) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    v->thread_started = true;
    *out = v;
    v = NULL;
out:
    if (v)
        verifier_release(v, nlocks);
    return rc;
}

void m2m_verifier_free(m2m_verifier *v)
{
    if (!v)
        return;
    if (v->thread_started) {
        pthread_mutex_lock(&v->mu);
        v->stop = true;
        pthread_cond_broadcast(&v->wake);
        pthread_mutex_unlock(&v->mu);
        /* Prompt unless a fetch is in flight: then at most fetch_timeout_ms. */
        pthread_join(v->thread, NULL);
    }
    verifier_release(v, NLOCKS);
}

bool m2m_verifier_ready(m2m_verifier *v)
{
    return v && atomic_load(&v->ready);
}

size_t m2m_verifier_key_count(m2m_verifier *v)
{
    size_t n = 0;

    if (!v)
        return 0;
    pthread_rwlock_rdlock(&v->ks_lock);
    if (v->snap)
        n = v->snap->ks.n;
    pthread_rwlock_unlock(&v->ks_lock);
    return n;
}

/* ---- the verified-token cache ------------------------------------------- */

static cache_slot *slot_of(m2m_verifier *v, const uint8_t hash[HASH_LEN], stripe **lock)
{
    uint64_t h;
    size_t i;

    memcpy(&h, hash, sizeof h); /* a SHA-256 is already uniformly spread */
    i = (size_t)(h % v->nslots);
    *lock = &v->stripes[i % CACHE_STRIPES];
    return &v->slots[i];
}

static bool serial_live(m2m_verifier *v, uint64_t serial)
{
    for (size_t i = 0; i < VERIFIER_MAX_KEYS; i++)
        if (atomic_load_explicit(&v->live[i], memory_order_acquire) == serial)
            return true;
    return false;
}

/* exp as m2m_jwt_verify checks it: now < exp + leeway, never past it. */
static bool exp_ok(const m2m_verifier *v, double exp)
{
    return (double)time(NULL) < exp + (double)v->leeway;
}

/* The hit path: no JSON, no ECDSA, nothing allocated. A stale entry (expired,
 * or its key gone from the JWKS) is dropped, and the caller then verifies
 * in full, which gives the precise reason. */
static bool cache_get(m2m_verifier *v, const uint8_t hash[HASH_LEN], m2m_token_info *info)
{
    stripe *lock;
    cache_slot *s = slot_of(v, hash, &lock);
    uint64_t serial = 0;
    double exp = 0;

    pthread_mutex_lock(&lock->mu);
    /* The whole hash, not a prefix: a hit stands for this exact token. */
    if (s->serial && memcmp(s->hash, hash, HASH_LEN) == 0) {
        serial = s->serial;
        exp = s->exp;
        memcpy(info, &s->info, sizeof *info);
    }
    pthread_mutex_unlock(&lock->mu);
    if (!serial)
        return false;
    if (exp_ok(v, exp) && serial_live(v, serial))
        return true;
    pthread_mutex_lock(&lock->mu);
    if (s->serial == serial && memcmp(s->hash, hash, HASH_LEN) == 0)
        s->serial = 0;
    pthread_mutex_unlock(&lock->mu);
    return false;
}

static void cache_put(m2m_verifier *v, const uint8_t hash[HASH_LEN], uint64_t serial, double exp,
                      const m2m_token_info *info)
{
    stripe *lock;
    cache_slot *s = slot_of(v, hash, &lock);

    pthread_mutex_lock(&lock->mu);
    memcpy(s->hash, hash, HASH_LEN);
    s->serial = serial;
    s->exp = exp;
    memcpy(&s->info, info, sizeof *info);
    pthread_mutex_unlock(&lock->mu);
}

/* ---- verification ------------------------------------------------------- */

/* Copies an optional string claim; false when present with the wrong type,
 * an embedded NUL or more than cap - 1 bytes. */
static bool claim_str(const json_t *c, const char *name, bool required, char *out, size_t cap)
{
    const json_t *v = json_object_get(c, name);
    size_t n;

    out[0] = '\0';
    if (!v)
        return !required;
    if (!json_is_string(v))
        return false;
    n = json_string_length(v);
    if (n >= cap || strlen(json_string_value(v)) != n)
        return false;
    memcpy(out, json_string_value(v), n + 1);
    return true;
}

static const char *claims_to_info(const json_t *c, m2m_token_info *info, double *exp)
{
    const json_t *e = json_object_get(c, "exp");

    /* Whole struct: the cache hands copies of it to other callers, which must
     * not see what this caller's stack held after each string's NUL. */
    memset(info, 0, sizeof *info);
    if (!claim_str(c, "sub", true, info->sub, sizeof info->sub) || info->sub[0] == '\0' ||
        !claim_str(c, "scope", false, info->scope, sizeof info->scope) ||
        !claim_str(c, "role", false, info->role, sizeof info->role) || !json_is_number(e))
        return "malformed";
    *exp = json_number_value(e);
    /* m2m_jwt_verify has checked exp against now; clamp only so that the
     * conversion to time_t is defined for any double. */
    info->exp = (time_t)(*exp > EXP_CLAMP ? EXP_CLAMP : *exp > 0 ? *exp : 0);
    return NULL;
}

/* The serial of the key named by the token's kid in `s`. Called after
 * m2m_jwt_verify accepted the token against the same snapshot, so the
 * header is a JSON object with a string kid; 0 (not cacheable) otherwise. */
static uint64_t token_key_serial(const key_snap *s, const char *token, size_t len)
{
    uint8_t hdr[M2M_JWT_MAX_LEN];
    const char *dot = memchr(token, '.', len);
    const json_t *kid;
    json_t *j = NULL;
    size_t n = 0;
    uint64_t serial = 0;

    if (!dot || m2m_b64url_decode(token, (size_t)(dot - token), hdr, sizeof hdr, &n))
        goto out;
    j = json_loadb((const char *)hdr, n, JSON_REJECT_DUPLICATES, NULL);
    kid = json_object_get(j, "kid");
    if (!json_is_string(kid))
        goto out;
    for (size_t i = 0; i < s->ks.n; i++)
        if (strcmp(s->keys[i]->kid, json_string_value(kid)) == 0)
            serial = s->serial[i];
out:
    json_decref(j);
    return serial;
}

/* The full path: signature and claims against the current keyset. */
static m2m_err verify_full(m2m_verifier *v, const char *token, size_t len, m2m_token_info *info,
                           const char **reason, uint64_t *serial, double *exp)
{
    m2m_jwt_expect e = {
        .typ = v->typ, .issuer = v->issuer, .audience = v->audience, .leeway = v->leeway};
    json_t *claims = NULL;
    m2m_err rc;

    *serial = 0;
    pthread_rwlock_rdlock(&v->ks_lock);
    if (!v->snap) {
        pthread_rwlock_unlock(&v->ks_lock);
        rc = M2M_ERR_UNAVAILABLE;
        *reason = "signing keys not loaded yet";
        goto out;
    }
    rc = m2m_jwt_verify(token, len, &v->snap->ks, &e, &claims, reason);
    /* Under the same lock: the serial must be that of the key that verified. */
    if (rc == M2M_OK)
        *serial = token_key_serial(v->snap, token, len);
    pthread_rwlock_unlock(&v->ks_lock);
    if (rc)
        goto out;
    *reason = claims_to_info(claims, info, exp);
    if (*reason)
        rc = M2M_ERR_INVALID_TOKEN;
out:
    json_decref(claims);
    return rc;
}

/* The token names a kid the keyset lacks: maybe a key published since the
 * last fetch. Refetch at most once per refetch_min_ms (forged kids must not
 * make us hammer the authorization server), single flight, then verify
 * once more. `seen` is the fetch count before the first verify. */
static m2m_err on_unknown_kid(m2m_verifier *v, const char *token, size_t len, bool may_block,
                              uint64_t seen, m2m_token_info *info, const char **reason,
                              uint64_t *serial, double *exp)
{
    m2m_err rc = M2M_ERR_INVALID_TOKEN;
    bool again = false;

    pthread_mutex_lock(&v->mu);
    if (atomic_load(&v->attempts) != seen) {
        /* A fetch finished after our verify began: its keys may know it. */
        again = true;
    } else if (!may_block && v->fetching) {
        /* A fetch is under way: deferring would park a blocking thread on it
         * for up to the fetch timeout, and forged kids could park them all. */
        *reason = "unknown kid";
    } else if (v->fetching || mono_ms() - v->last_attempt_ms >= v->refetch_min_ms) {
        if (!may_block) {
            rc = M2M_ERR_WOULD_BLOCK;
            *reason = "unknown kid";
        } else {
            M2M_DEBUG("jwks_refetch", "token names an unknown kid: refetching the JWKS");
            fetch_locked(v);
            again = true;
        }
    }
    pthread_mutex_unlock(&v->mu);
    if (again)
        rc = verify_full(v, token, len, info, reason, serial, exp);
    return rc;
}

m2m_err m2m_verifier_check(m2m_verifier *v, const char *token, size_t len, bool may_block,
                           m2m_token_info *info, const char **why)
{
    uint8_t hash[HASH_LEN];
    const char *reason = "malformed";
    bool cacheable = false;
    uint64_t seen, serial = 0;
    double exp = 0;
    m2m_err rc = M2M_ERR_INVALID_TOKEN;

    if (!v || !info) {
        rc = M2M_ERR_INTERNAL;
        reason = "internal error";
        goto out;
    }
    if (!token || len == 0)
        goto out;
    if (len > M2M_JWT_MAX_LEN) {
        reason = "too long"; /* before hashing megabytes */
        goto out;
    }
    if (!atomic_load(&v->ready)) {
        rc = M2M_ERR_UNAVAILABLE;
        reason = "signing keys not loaded yet";
        goto out;
    }
    if (v->nslots) {
        cacheable = sha256(v, token, len, hash);
        if (cacheable && cache_get(v, hash, info)) {
            rc = M2M_OK;
            goto out;
        }
    }
    seen = atomic_load(&v->attempts);
    rc = verify_full(v, token, len, info, &reason, &serial, &exp);
    if (rc == M2M_ERR_INVALID_TOKEN && strcmp(reason, "unknown kid") == 0)
        rc = on_unknown_kid(v, token, len, may_block, seen, info, &reason, &serial, &exp);
    /* Only successes are remembered, and only with the key that made them. */
    if (rc == M2M_OK && cacheable && serial)
        cache_put(v, hash, serial, exp, info);
out:
    if (why)
        *why = rc ? reason : NULL;
    return rc;
}

bool m2m_token_has_scope(const m2m_token_info *info, const char *want)
{
    size_t n;
    const char *p;

    if (!info || !want || !*want)
        return false;
    n = strlen(want);
    for (p = info->scope; *p;) {
        size_t t = strcspn(p, " ");

        if (t == n && memcmp(p, want, n) == 0)
            return true;
        p += t;
        p += strspn(p, " ");
    }
    return false;
}

/* ---- RFC 6750 ----------------------------------------------------------- */

/* b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool is_b64token(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        char c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'))
            break;
        i++;
    }
    if (i == 0)
        return false;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

m2m_err m2m_bearer_token(const m2m_req *req, const char **token, size_t *len)
{
    static const char scheme[] = "Bearer";
    const size_t slen = sizeof scheme - 1;
    const char *h, *t;
    size_t n;
    m2m_err rc = M2M_ERR_NOT_FOUND;

    if (token)
        *token = NULL;
    if (len)
        *len = 0;
    if (!req || !token || !len) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    h = m2m_req_header(req, "Authorization");
    if (!h)
        goto out;
    /* The scheme ends at the first space or tab; another scheme (Basic, ...)
     * is "no bearer credentials", answered with a bare challenge. */
    n = strcspn(h, " \t");
    if (n == 0) {
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    if (n != slen || strncasecmp(h, scheme, slen) != 0)
        goto out;
    rc = M2M_ERR_INVALID_REQUEST;
    /* RFC 7235 credentials: scheme 1*SP token68. Several spaces are
     * tolerated, a tab is not. */
    t = h + n;
    if (*t != ' ')
        goto out;
    t += strspn(t, " ");
    n = strlen(t);
    if (n == 0 || n > M2M_JWT_MAX_LEN || !is_b64token(t, n))
        goto out;
    *token = t;
    *len = n;
    rc = M2M_OK;
out:
    return rc;
}

/* Appends s, stopping at the buffer's end (always NUL-terminated). */
static void ch_append(char *buf, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);

    if (*pos >= cap)
        return;
    if (n > cap - 1 - *pos)
        n = cap - 1 - *pos;
    memcpy(buf + *pos, s, n);
    *pos += n;
    buf[*pos] = '\0';
}

/* Appends name="value" as an RFC 7235 quoted-string. RFC 6750 §3 allows only
 * %x20-21 / %x23-5B / %x5D-7E in these values, so '"', '\' and anything
 * outside printable ASCII are dropped rather than escaped; at most `max`
 * bytes of value are kept. */
static void ch_param(char *buf, size_t cap, size_t *pos, const char *name, const char *value,
                     size_t max)
{
    char q[SCOPE_CAP + 1];
    size_t n = 0;

    for (const char *p = value; *p && n < max && n < sizeof q - 1; p++)
        if (*p >= 0x20 && *p <= 0x7e && *p != '"' && *p != '\\')
            q[n++] = *p;
    q[n] = '\0';
    /* The first parameter follows "Bearer" after a space, later ones ", ". */
    ch_append(buf, cap, pos, *pos > sizeof CH_SCHEME - 1 ? ", " : " ");
    ch_append(buf, cap, pos, name);
    ch_append(buf, cap, pos, "=\"");
    ch_append(buf, cap, pos, q);
    ch_append(buf, cap, pos, "\"");
}

void m2m_reply_bearer_error(m2m_req *req, const char *realm, m2m_err e, const char *desc,
                            const char *scope)
{
    char ch[CHALLENGE_MAX];
    size_t pos = 0;
    json_t *extra = NULL;

    if (!req)
        return;
    if (e != M2M_ERR_INVALID_TOKEN && e != M2M_ERR_INVALID_REQUEST &&
        e != M2M_ERR_INSUFFICIENT_SCOPE && e != M2M_ERR_NOT_FOUND) {
        /* Not about the credentials (503 while keys load, 500, ...): no
         * challenge, the usual error. */
        m2m_reply_error(req, e, desc);
        return;
    }
    ch[0] = '\0';
    ch_append(ch, sizeof ch, &pos, CH_SCHEME);
    if (realm)
        ch_param(ch, sizeof ch, &pos, "realm", realm, REALM_CAP);
    if (e == M2M_ERR_NOT_FOUND) {
        /* RFC 6750 §3.1: a request without credentials gets no error code. */
        m2m_reply_header(req, "WWW-Authenticate", ch);
        m2m_reply_json(req, 401,
                       json_pack("{s:s, s:s}", "error", "unauthorized", "error_description",
                                 "bearer token required"));
        return;
    }
    ch_param(ch, sizeof ch, &pos, "error", m2m_err_code(e), DESC_CAP);
    if (desc)
        ch_param(ch, sizeof ch, &pos, "error_description", desc, DESC_CAP);
    if (e == M2M_ERR_INSUFFICIENT_SCOPE && scope) {
        ch_param(ch, sizeof ch, &pos, "scope", scope, SCOPE_CAP);
        extra = json_pack("{s:s}", "scope", scope); /* NULL if not UTF-8: left out */
    }
    m2m_reply_header(req, "WWW-Authenticate", ch);
    m2m_reply_error_extra(req, e, desc, extra);
}
