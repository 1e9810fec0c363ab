/* auth-service client secrets: scrypt at rest, the verified-secret cache on
 * the hot path, malformed stored hashes, and concurrent verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <time.h>

#include "m2m/b64.h"
#include "m2m/log.h"
#include "secret_hash.h"

#define FAST_LOG_N 10

/* Every auth_secrets a test makes is tracked, so a failing assertion (which
 * longjmps out of the test) does not turn into a leak report. */
#define MAX_LIVE 4
static auth_secrets *live[MAX_LIVE];

static auth_secrets *track(auth_secrets *s)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        if (!live[i]) {
            live[i] = s;
            return s;
        }
    }
    auth_secrets_free(s);
    fail_msg("test helper: too many live auth_secrets");
    return NULL;
}

static void release(auth_secrets *s)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == s)
            live[i] = NULL;
    auth_secrets_free(s);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_LIVE; i++) {
        auth_secrets_free(live[i]);
        live[i] = NULL;
    }
    return 0;
}

static auth_secrets *new_secrets(int log_n, int concurrency, size_t slots)
{
    auth_secrets_params p = {
        .log_n = log_n, .r = 8, .p = 1, .concurrency = concurrency, .cache_slots = slots};
    auth_secrets *s = NULL;
    assert_int_equal(auth_secrets_new(&p, &s), M2M_OK);
    assert_non_null(s);
    return track(s);
}

static void hash(auth_secrets *s, const char *secret, size_t len, char out[AUTH_SECRET_HASH_MAX])
{
    memset(out, 0, AUTH_SECRET_HASH_MAX);
    assert_int_equal(auth_secret_hash(s, secret, len, out, AUTH_SECRET_HASH_MAX), M2M_OK);
}

static void hashs(auth_secrets *s, const char *secret, char out[AUTH_SECRET_HASH_MAX])
{
    hash(s, secret, strlen(secret), out);
}

static m2m_err verify(auth_secrets *s, const char *id, const char *stored, const char *secret)
{
    return auth_secret_verify(s, id, stored, secret, strlen(secret));
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Verifies and returns the elapsed milliseconds. */
static double timed_verify(auth_secrets *s, const char *id, const char *stored, const char *secret,
                           m2m_err want)
{
    double t0 = now_ms();
    m2m_err rc = verify(s, id, stored, secret);
    double dt = now_ms() - t0;
    if (rc != want)
        fail_msg("verify(%s) = %s, want %s", id, m2m_err_name(rc), m2m_err_name(want));
    return dt;
}

static bool b64url_chars(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- hashing ------------------------------------------------------------ */

static void default_params_encoding(void **state)
{
    (void)state;
    const char prefix[] = "$scrypt$ln=15,r=8,p=1$";
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(15, 2, 16);

    hashs(s, "secret", h);
    /* "$scrypt$ln=15,r=8,p=1$" <22 chars> "$" <43 chars> */
    assert_int_equal(strncmp(h, prefix, strlen(prefix)), 0);
    const char *salt = h + strlen(prefix);
    assert_int_equal(strlen(h), strlen(prefix) + 22 + 1 + 43);
    assert_true(b64url_chars(salt, 22));
    assert_int_equal(salt[22], '$');
    assert_true(b64url_chars(salt + 23, 43));

    assert_int_equal(verify(s, "seed-client", h, "secret"), M2M_OK);
    assert_int_equal(verify(s, "other-client", h, "secreT"), M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void small_params_encoding(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 2, 16);
    hashs(s, "x", h);
    assert_int_equal(strncmp(h, "$scrypt$ln=10,r=8,p=1$", 22), 0);
    assert_int_equal(strlen(h), 22 + 22 + 1 + 43);
    release(s);
}

static void hash_then_verify(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 2, 0); /* no cache: every call runs scrypt */

    hashs(s, "correct horse battery staple", h);
    assert_int_equal(verify(s, "c1", h, "correct horse battery staple"), M2M_OK);
    assert_int_equal(verify(s, "c1", h, "correct horse battery stapl"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, "correct horse battery staplee"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, "Correct horse battery staple"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, ""), M2M_ERR_INVALID_CLIENT);
    /* The length argument counts, not the NUL. */
    assert_int_equal(auth_secret_verify(s, "c1", h, "correct horse battery staple!", 28), M2M_OK);
    assert_int_equal(auth_secret_verify(s, "c1", h, "correct horse battery staple", 27),
                     M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void wrong_secret_with_cache(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 2, 64);

    hashs(s, "right", h);
    /* Wrong first (nothing cached), then right, then wrong again (cached). */
    assert_int_equal(verify(s, "c1", h, "wrong"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, "right"), M2M_OK);
    assert_int_equal(verify(s, "c1", h, "wrong"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, "righ"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "c1", h, "right"), M2M_OK);
    release(s);
}

static void empty_secret_hashes_and_verifies(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 8);
    hash(s, "", 0, h);
    assert_int_equal(verify(s, "c1", h, ""), M2M_OK);
    assert_int_equal(verify(s, "c1", h, "x"), M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void salt_makes_hashes_differ(void **state)
{
    (void)state;
    char a[AUTH_SECRET_HASH_MAX], b[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 2, 0);

    hashs(s, "same secret", a);
    hashs(s, "same secret", b);
    assert_string_not_equal(a, b);
    /* the salts differ, not only the digests */
    assert_int_not_equal(memcmp(a + 22, b + 22, 22), 0);
    assert_int_equal(verify(s, "c1", a, "same secret"), M2M_OK);
    assert_int_equal(verify(s, "c1", b, "same secret"), M2M_OK);
    release(s);
}

static void stored_params_win_over_configured(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *old = new_secrets(FAST_LOG_N, 1, 0);
    auth_secrets *cur = new_secrets(12, 1, 0);

    hashs(old, "s", h);
    /* Raising the cost must not invalidate hashes stored with the old one. */
    assert_int_equal(verify(cur, "c1", h, "s"), M2M_OK);
    assert_int_equal(verify(cur, "c1", h, "t"), M2M_ERR_INVALID_CLIENT);
    release(old);
    release(cur);
}

static void hash_output_too_small(void **state)
{
    (void)state;
    char out[40];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 0);
    m2m_err rc = auth_secret_hash(s, "s", 1, out, sizeof(out));
    assert_int_not_equal(rc, M2M_OK);
    assert_int_equal(rc, M2M_ERR_INTERNAL);
    release(s);
}

static void hash_with_invalid_params_fails(void **state)
{
    (void)state;
    char out[AUTH_SECRET_HASH_MAX];
    auth_secrets_params p = {
        .log_n = FAST_LOG_N, .r = 0, .p = 1, .concurrency = 1, .cache_slots = 0};
    auth_secrets *s = NULL;
    assert_int_equal(auth_secrets_new(&p, &s), M2M_OK);
    track(s);
    assert_int_equal(auth_secret_hash(s, "s", 1, out, sizeof(out)), M2M_ERR_CRYPTO);
    release(s);
}

/* ---- the verified-secret cache ------------------------------------------ */

static void cache_makes_second_verify_fast(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(14, 1, 64);

    hashs(s, "hot path secret", h);
    double first = timed_verify(s, "fast-client", h, "hot path secret", M2M_OK);
    if (!(first > 5.0))
        fail_msg("first verify (scrypt, log_n 14) took %.3f ms: expected > 5 ms", first);
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double dt = timed_verify(s, "fast-client", h, "hot path secret", M2M_OK);
        if (dt < best)
            best = dt;
    }
    if (!(best < 1.0))
        fail_msg("cached verify took %.3f ms (first %.3f ms): expected < 1 ms", best, first);
    print_message("scrypt log_n 14: %.2f ms; cached: %.4f ms\n", first, best);
    release(s);
}

static void cache_wrong_after_right_is_refused_fast(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(14, 1, 64);

    hashs(s, "the right one", h);
    timed_verify(s, "c1", h, "the right one", M2M_OK);
    double best = 1e9;
    const char *wrong[] = {"the wrong one", "the right on", "the right one ", "", "x"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        double dt = timed_verify(s, "c1", h, wrong[i], M2M_ERR_INVALID_CLIENT);
        if (dt < best)
            best = dt;
    }
    if (!(best < 1.0))
        fail_msg("refusing a wrong secret after a cached right one took %.3f ms", best);
    /* The right one still passes afterwards. */
    timed_verify(s, "c1", h, "the right one", M2M_OK);
    release(s);
}

static void cache_rotation_not_served_from_cache(void **state)
{
    (void)state;
    char oldh[AUTH_SECRET_HASH_MAX], newh[AUTH_SECRET_HASH_MAX], again[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 64);

    hashs(s, "old secret", oldh);
    hashs(s, "new secret", newh);
    assert_int_equal(verify(s, "rot", oldh, "old secret"), M2M_OK);
    assert_int_equal(verify(s, "rot", oldh, "old secret"), M2M_OK); /* cached */
    /* The client's stored hash changes: the cached old secret is not enough. */
    assert_int_equal(verify(s, "rot", newh, "old secret"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "rot", newh, "new secret"), M2M_OK);
    assert_int_equal(verify(s, "rot", newh, "new secret"), M2M_OK);
    assert_int_equal(verify(s, "rot", newh, "old secret"), M2M_ERR_INVALID_CLIENT);
    /* Rotating back to a fresh hash of the old secret works. */
    hashs(s, "old secret", again);
    assert_int_equal(verify(s, "rot", again, "new secret"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "rot", again, "old secret"), M2M_OK);
    assert_int_equal(verify(s, "rot", again, "new secret"), M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void cache_is_per_client(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 64);

    /* Two clients that (oddly) share a stored hash: a cached success for one
     * says nothing about the other's presented secret. */
    hashs(s, "shared", h);
    assert_int_equal(verify(s, "one", h, "shared"), M2M_OK);
    assert_int_equal(verify(s, "two", h, "not shared"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "two", h, "shared"), M2M_OK);
    assert_int_equal(verify(s, "one", h, "not shared"), M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void cache_disabled_still_verifies(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    /* concurrency 0 is taken as 1 */
    auth_secrets *s = new_secrets(FAST_LOG_N, 0, 0);

    hashs(s, "pw", h);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(verify(s, "c1", h, "pw"), M2M_OK);
        assert_int_equal(verify(s, "c1", h, "pW"), M2M_ERR_INVALID_CLIENT);
    }
    release(s);
}

static void one_slot_collisions(void **state)
{
    (void)state;
    char ha[AUTH_SECRET_HASH_MAX], hb[AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 1);

    hashs(s, "alice-secret", ha);
    hashs(s, "bob-secret", hb);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(verify(s, "alice", ha, "alice-secret"), M2M_OK);
        assert_int_equal(verify(s, "bob", hb, "bob-secret"), M2M_OK);
    }
    /* With alice's entry in the only slot, neither secret crosses over. */
    assert_int_equal(verify(s, "alice", ha, "alice-secret"), M2M_OK);
    assert_int_equal(verify(s, "bob", hb, "alice-secret"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "alice", ha, "bob-secret"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "alice", hb, "bob-secret"), M2M_OK); /* hash decides */
    assert_int_equal(verify(s, "bob", ha, "bob-secret"), M2M_ERR_INVALID_CLIENT);
    assert_int_equal(verify(s, "bob", hb, "bob-secret"), M2M_OK);
    assert_int_equal(verify(s, "alice", ha, "alice-secret"), M2M_OK);
    release(s);
}

/* ---- malformed stored hashes -------------------------------------------- */

static void check_malformed(auth_secrets *s, const char *stored, const char *secret)
{
    m2m_err rc = verify(s, "mal", stored, secret);
    if (rc != M2M_ERR_INTERNAL)
        fail_msg("verify against stored \"%s\" = %s, want INTERNAL", stored, m2m_err_name(rc));
}

static void malformed_stored_hashes(void **state)
{
    (void)state;
    char good[AUTH_SECRET_HASH_MAX], buf[2 * AUTH_SECRET_HASH_MAX];
    char salt[23], dk[44];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 16);

    m2m_log_init("test", M2M_LOG_ERROR);
    hashs(s, "pw", good);
    /* good = "$scrypt$ln=10,r=8,p=1$" salt(22) "$" dk(43) */
    memcpy(salt, good + 22, 22);
    salt[22] = '\0';
    memcpy(dk, good + 45, 43);
    dk[43] = '\0';
    assert_int_equal(verify(s, "mal", good, "pw"), M2M_OK);

    /* Each twice: the first and again after a success was cached for the id. */
    for (int round = 0; round < 2; round++) {
        check_malformed(s, "", "pw");
        check_malformed(s, "$scrypt$", "pw");
        check_malformed(s, "$scrypt$ln=10,r=8,p=1$", "pw");
        check_malformed(s, "$scrypt$ln=10,r=8,p=1$$", "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s", salt);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$", salt);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$$%s", dk);
        check_malformed(s, buf, "pw");
        /* bad base64: characters outside the alphabet */
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$%.42s!", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$!!!!%s$%s", salt + 4, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$%.40s+/==", salt, dk);
        check_malformed(s, buf, "pw");
        /* bad base64: impossible lengths (1 char), wrong digest length */
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$A$%s", dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$%.42s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$%.22s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=1$%s$%s%s", salt, dk, dk);
        check_malformed(s, buf, "pw");
        /* parameters out of range */
        snprintf(buf, sizeof(buf), "$scrypt$ln=99,r=8,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=0,r=8,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=-1,r=8,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=0,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=8,p=0$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$ln=10,r=999,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$scrypt$N=1024,r=8,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        snprintf(buf, sizeof(buf), "$SCRYPT$ln=10,r=8,p=1$%s$%s", salt, dk);
        check_malformed(s, buf, "pw");
        /* other schemes and plain text */
        check_malformed(s, "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "pw");
        check_malformed(s, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "pw");
        check_malformed(s, "pw", "pw");
        check_malformed(s, "$scrypt$ln=10,r=8,p=1$pw$pw", "pw");
        assert_int_equal(verify(s, "mal", good, "pw"), M2M_OK);
    }
    release(s);
}

/* Parameters inside the parser's ranges that scrypt itself refuses
 * (N >= 2^(16 r)): still "a hash we do not understand", so INTERNAL as the
 * header promises, not another code. */
static void stored_params_scrypt_refuses(void **state)
{
    (void)state;
    char good[AUTH_SECRET_HASH_MAX], buf[2 * AUTH_SECRET_HASH_MAX];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 0);

    m2m_log_init("test", M2M_LOG_ERROR);
    hashs(s, "pw", good);
    snprintf(buf, sizeof(buf), "$scrypt$ln=16,r=1,p=1$%s", good + 22);
    m2m_err rc = verify(s, "mal", buf, "pw");
    assert_int_not_equal(rc, M2M_OK);
    if (rc != M2M_ERR_INTERNAL)
        fail_msg("verify against \"%s\" = %s, want INTERNAL", buf, m2m_err_name(rc));
    release(s);
}

/* The stored string must be exactly "$scrypt$ln=L,r=R,p=P$salt$hash".
 * Numbers that do not fit an int are undefined behaviour for sscanf's %d
 * (glibc wraps 2^32 + 10 to 10), and text after the hash is a format we do
 * not know: both must be refused, not read as the valid hash they contain. */
static void stored_string_must_match_exactly(void **state)
{
    (void)state;
    static const char *const forms[] = {
        "$scrypt$ln=4294967306,r=8,p=1$%s",  "$scrypt$ln=10,r=4294967304,p=1$%s",
        "$scrypt$ln=10,r=8,p=4294967297$%s", "$scrypt$ln=10,r=8,p=1$%s$trailing",
        "$scrypt$ln=10,r=8,p=1$%s junk",
    };
    char good[AUTH_SECRET_HASH_MAX], buf[2 * AUTH_SECRET_HASH_MAX], report[2048] = "";
    size_t used = 0;
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 0);

    m2m_log_init("test", M2M_LOG_ERROR);
    hashs(s, "pw", good);
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        snprintf(buf, sizeof(buf), forms[i], good + 22);
        m2m_err rc = verify(s, "mal", buf, "pw");
        if (rc != M2M_ERR_INTERNAL && used < sizeof(report))
            used += (size_t)snprintf(report + used, sizeof(report) - used,
                                     "\n  \"%s\" = %s, want INTERNAL", buf, m2m_err_name(rc));
    }
    if (used)
        fail_msg("stored strings that are not exactly our format were accepted:%s", report);
    release(s);
}

/* ---- odd secrets and ids ------------------------------------------------ */

static void binary_and_long_secrets(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX];
    char bin[255], max[AUTH_SECRET_MAX], over[AUTH_SECRET_MAX + 44];
    auth_secrets *s = new_secrets(FAST_LOG_N, 2, 16);

    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (char)(i + 1); /* every byte value but NUL */
    hash(s, bin, sizeof(bin), h);
    for (int i = 0; i < 2; i++) /* scrypt, then the cache */
        assert_int_equal(auth_secret_verify(s, "bin", h, bin, sizeof(bin)), M2M_OK);
    bin[200] ^= 0x01;
    assert_int_equal(auth_secret_verify(s, "bin", h, bin, sizeof(bin)), M2M_ERR_INVALID_CLIENT);
    bin[200] ^= 0x01;
    assert_int_equal(auth_secret_verify(s, "bin", h, bin, sizeof(bin) - 1), M2M_ERR_INVALID_CLIENT);

    /* exactly AUTH_SECRET_MAX bytes: the largest cacheable secret */
    for (size_t i = 0; i < sizeof(max); i++)
        max[i] = (char)(0x80 | (i * 7 % 127 + 1));
    hash(s, max, sizeof(max), h);
    for (int i = 0; i < 2; i++)
        assert_int_equal(auth_secret_verify(s, "max", h, max, sizeof(max)), M2M_OK);
    assert_int_equal(auth_secret_verify(s, "max", h, max, sizeof(max) - 1), M2M_ERR_INVALID_CLIENT);
    max[0] ^= 0x40;
    assert_int_equal(auth_secret_verify(s, "max", h, max, sizeof(max)), M2M_ERR_INVALID_CLIENT);
    max[0] ^= 0x40;

    /* longer than AUTH_SECRET_MAX: not cacheable, still checked correctly */
    memset(over, 'o', sizeof(over));
    hash(s, over, sizeof(over), h);
    for (int i = 0; i < 2; i++)
        assert_int_equal(auth_secret_verify(s, "over", h, over, sizeof(over)), M2M_OK);
    assert_int_equal(auth_secret_verify(s, "over", h, over, sizeof(over) - 1),
                     M2M_ERR_INVALID_CLIENT);
    over[sizeof(over) - 1] = 'p';
    assert_int_equal(auth_secret_verify(s, "over", h, over, sizeof(over)), M2M_ERR_INVALID_CLIENT);
    release(s);
}

static void long_client_id(void **state)
{
    (void)state;
    char h[AUTH_SECRET_HASH_MAX], id128[129], id300[301];
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, 16);

    memset(id128, 'i', 128);
    id128[128] = '\0';
    memset(id300, 'j', 300);
    id300[300] = '\0';
    hashs(s, "pw", h);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(verify(s, id128, h, "pw"), M2M_OK);
        assert_int_equal(verify(s, id128, h, "pv"), M2M_ERR_INVALID_CLIENT);
        assert_int_equal(verify(s, id300, h, "pw"), M2M_OK);
        assert_int_equal(verify(s, id300, h, "pv"), M2M_ERR_INVALID_CLIENT);
    }
    release(s);
}

/* ---- concurrency -------------------------------------------------------- */

#define NTHREADS 8

typedef struct {
    auth_secrets *s;
    char id[32];
    char secret[32];
    char stored[AUTH_SECRET_HASH_MAX];
    m2m_err right[3];
    m2m_err wrong;
    pthread_barrier_t *start;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (int i = 0; i < 3; i++)
        w->right[i] = verify(w->s, w->id, w->stored, w->secret);
    w->wrong = verify(w->s, w->id, w->stored, "definitely wrong");
    return NULL;
}

static void run_threads(size_t slots)
{
    worker w[NTHREADS];
    pthread_t t[NTHREADS];
    pthread_barrier_t start;
    auth_secrets *s = new_secrets(FAST_LOG_N, 1, slots);

    assert_int_equal(pthread_barrier_init(&start, NULL, NTHREADS), 0);
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].s = s;
        w[i].start = &start;
        w[i].wrong = M2M_OK;
        for (int j = 0; j < 3; j++)
            w[i].right[j] = M2M_ERR__COUNT;
        snprintf(w[i].id, sizeof(w[i].id), "thread-%d", i);
        snprintf(w[i].secret, sizeof(w[i].secret), "secret-of-%d", i);
        hashs(s, w[i].secret, w[i].stored);
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < NTHREADS; i++) {
        for (int j = 0; j < 3; j++)
            if (w[i].right[j] != M2M_OK)
                fail_msg("thread %d verify %d: %s", i, j, m2m_err_name(w[i].right[j]));
        if (w[i].wrong != M2M_ERR_INVALID_CLIENT)
            fail_msg("thread %d wrong secret: %s", i, m2m_err_name(w[i].wrong));
    }
    release(s);
}

static void concurrent_verify_kdf_concurrency_1(void **state)
{
    (void)state;
    run_threads(64); /* each thread: one scrypt, then cache hits */
    run_threads(0);  /* every call queues for the single scrypt slot */
    run_threads(1);  /* all threads fighting over one cache slot */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(default_params_encoding, teardown),
        cmocka_unit_test_teardown(small_params_encoding, teardown),
        cmocka_unit_test_teardown(hash_then_verify, teardown),
        cmocka_unit_test_teardown(wrong_secret_with_cache, teardown),
        cmocka_unit_test_teardown(empty_secret_hashes_and_verifies, teardown),
        cmocka_unit_test_teardown(salt_makes_hashes_differ, teardown),
        cmocka_unit_test_teardown(stored_params_win_over_configured, teardown),
        cmocka_unit_test_teardown(hash_output_too_small, teardown),
        cmocka_unit_test_teardown(hash_with_invalid_params_fails, teardown),
        cmocka_unit_test_teardown(cache_makes_second_verify_fast, teardown),
        cmocka_unit_test_teardown(cache_wrong_after_right_is_refused_fast, teardown),
        cmocka_unit_test_teardown(cache_rotation_not_served_from_cache, teardown),
        cmocka_unit_test_teardown(cache_is_per_client, teardown),
        cmocka_unit_test_teardown(cache_disabled_still_verifies, teardown),
        cmocka_unit_test_teardown(one_slot_collisions, teardown),
        cmocka_unit_test_teardown(malformed_stored_hashes, teardown),
        cmocka_unit_test_teardown(stored_params_scrypt_refuses, teardown),
        cmocka_unit_test_teardown(stored_string_must_match_exactly, teardown),
        cmocka_unit_test_teardown(binary_and_long_secrets, teardown),
        cmocka_unit_test_teardown(long_client_id, teardown),
        cmocka_unit_test_teardown(concurrent_verify_kdf_concurrency_1, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
