/* Unit tests for m2m/jwt.h: keys (generate, PEM, JWK, RFC 7638 kid), ES256
 * sign/verify, and a catalogue of forged tokens, each refused for its own
 * reason. Forgeries are built here from base64url of chosen JSON text and,
 * where the point is a check that comes before or after the signature, signed
 * correctly by a signer written independently in this file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "m2m/b64.h"
#include "m2m/buf.h"
#include "m2m/jwt.h"

#define NOW    1700000000L
#define ISS    "https://auth.example"
#define AUD    "currency-api"
#define TYP    "at+jwt"
#define LEEWAY 30

static m2m_key *g_key;   /* the issuer's key, the only one in g_ks */
static m2m_key *g_other; /* an unrelated key with its own kid */
static m2m_key *g_ks_keys[1];
static m2m_keyset g_ks = {g_ks_keys, 1};

/* ---- allocation tracking: every string a test builds is freed after it -- */

static void *g_alloc[1024];
static size_t g_nalloc;

static void *track(void *p)
{
    assert_non_null(p);
    assert_true(g_nalloc < sizeof g_alloc / sizeof g_alloc[0]);
    g_alloc[g_nalloc++] = p;
    return p;
}

static int free_tracked(void **state)
{
    (void)state;
    while (g_nalloc)
        free(g_alloc[--g_nalloc]);
    ERR_clear_error();
    return 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    int n;
    char *s;

    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    assert_true(n >= 0);
    s = track(malloc((size_t)n + 1));
    va_start(ap, f);
    assert_int_equal(vsnprintf(s, (size_t)n + 1, f, ap), n);
    va_end(ap);
    return s;
}

/* ---- token building blocks ------------------------------------------- */

static char *b64u(const void *p, size_t n)
{
    size_t cap = M2M_B64URL_LEN(n) + 1;
    char *s = track(malloc(cap));

    assert_int_equal(m2m_b64url_encode(p, n, s, cap, NULL), M2M_OK);
    return s;
}

static char *b64u_str(const char *s)
{
    return b64u(s, strlen(s));
}

/* base64url(header) "." base64url(payload), from JSON text chosen byte by byte. */
static char *signing_input(const char *hdr, const char *payload)
{
    return fmt("%s.%s", b64u_str(hdr), b64u_str(payload));
}

static char *with_sig(const char *input, const void *sig, size_t n)
{
    return fmt("%s.%s", input, b64u(sig, n));
}

/* The test's own ES256: EVP DER signature -> raw r||s. */
static void es256_raw(EVP_PKEY *pkey, const char *input, uint8_t raw[64])
{
    uint8_t der[80];
    size_t dlen = sizeof der;
    const unsigned char *p = der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *sig;
    const BIGNUM *r, *s;

    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(md, der, &dlen, (const uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    assert_non_null(sig);
    ECDSA_SIG_get0(sig, &r, &s);
    assert_int_equal(BN_bn2binpad(r, raw, 32), 32);
    assert_int_equal(BN_bn2binpad(s, raw + 32, 32), 32);
    ECDSA_SIG_free(sig);
}

/* A correctly signed token for any header and payload text. */
static char *signed_token(const m2m_key *k, const char *hdr, const char *payload)
{
    char *input = signing_input(hdr, payload);
    uint8_t raw[64];

    es256_raw(k->pkey, input, raw);
    return with_sig(input, raw, sizeof raw);
}

static char *std_header(const m2m_key *k)
{
    return fmt("{\"alg\":\"ES256\",\"typ\":\"" TYP "\",\"kid\":\"%s\"}", k->kid);
}

/* Standard claims with the time claims and iss/aud given as raw JSON text
 * (NULL leaves the claim out). */
static char *payload(const char *exp, const char *nbf, const char *iat, const char *iss,
                     const char *aud)
{
    return fmt("{\"sub\":\"client-1\",\"scope\":\"currency:read\"%s%s%s%s%s%s%s%s%s%s}",
               exp ? ",\"exp\":" : "", exp ? exp : "", nbf ? ",\"nbf\":" : "", nbf ? nbf : "",
               iat ? ",\"iat\":" : "", iat ? iat : "", iss ? ",\"iss\":" : "", iss ? iss : "",
               aud ? ",\"aud\":" : "", aud ? aud : "");
}

static char *std_payload(void)
{
    return payload(fmt("%ld", NOW + 900), NULL, fmt("%ld", NOW), "\"" ISS "\"", "\"" AUD "\"");
}

static json_t *std_claims(void)
{
    json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "iss", ISS, "sub", "client-1",
                          "client_id", "client-1", "aud", AUD, "iat", (json_int_t)NOW, "exp",
                          (json_int_t)(NOW + 900), "jti", "4f1c2a", "scope", "currency:read");

    assert_non_null(c);
    return c;
}

static m2m_jwt_expect std_expect(void)
{
    m2m_jwt_expect e = {
        .typ = TYP, .issuer = ISS, .audience = AUD, .leeway = LEEWAY, .now = (time_t)NOW};

    return e;
}

static char *sign_claims(const m2m_key *k, const char *typ, const json_t *claims)
{
    m2m_buf b;

    m2m_buf_init(&b, M2M_JWT_MAX_LEN);
    assert_int_equal(m2m_jwt_sign(k, typ, claims, &b), M2M_OK);
    return track(m2m_buf_steal(&b));
}

/* ---- verdicts --------------------------------------------------------- */

static void check_verdict(const char *name, const char *tok, size_t len, const m2m_keyset *ks,
                          const char *want)
{
    m2m_jwt_expect e = std_expect();
    json_t *claims = NULL;
    const char *why = NULL;
    m2m_err rc = m2m_jwt_verify(tok, len, ks, &e, &claims, &why);

    if (want) {
        if (rc != M2M_ERR_INVALID_TOKEN || !why || strcmp(why, want) != 0) {
            print_error("case '%s': got rc=%s why=%s, want '%s'\n", name, m2m_err_name(rc),
                        why ? why : "(null)", want);
            json_decref(claims);
            fail();
        }
        assert_null(claims);
    } else {
        if (rc != M2M_OK) {
            print_error("case '%s': refused (%s), want accepted\n", name, why ? why : "?");
            fail();
        }
        assert_null(why);
        assert_true(json_is_object(claims));
        json_decref(claims);
    }
    /* verification never leaves OpenSSL errors behind for someone else */
    assert_int_equal(ERR_peek_error(), 0);
}

#define REFUSED(name, tok, reason) check_verdict(name, tok, strlen(tok), &g_ks, reason)
#define ACCEPTED(name, tok)        check_verdict(name, tok, strlen(tok), &g_ks, NULL)

/* ---- setup ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    if (m2m_key_generate(&g_key) || m2m_key_generate(&g_other))
        return -1;
    g_ks_keys[0] = g_key;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    m2m_key_free(g_key);
    m2m_key_free(g_other);
    return 0;
}

/* ---- keys ------------------------------------------------------------- */

/* Standard base64 from OpenSSL turned into base64url: independent of m2m_b64. */
static void openssl_b64url(const uint8_t *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

/* RFC 7638 recomputed from the key's encoded point and compared with the kid
 * and with the JWK's x and y. */
static void assert_kid_is_thumbprint(const m2m_key *k)
{
    uint8_t point[65], digest[32];
    size_t plen = 0;
    unsigned int dlen = 0;
    char x[64], y[64], kid[64], json[200];
    json_t *jwk;

    assert_int_equal(EVP_PKEY_get_octet_string_param(k->pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                     point, sizeof point, &plen),
                     1);
    assert_int_equal(plen, 65);
    assert_int_equal(point[0], 0x04);
    openssl_b64url(point + 1, 32, x);
    openssl_b64url(point + 33, 32, y);
    snprintf(json, sizeof json, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x,
             y);
    assert_int_equal(EVP_Digest(json, strlen(json), digest, &dlen, EVP_sha256(), NULL), 1);
    openssl_b64url(digest, dlen, kid);
    assert_string_equal(k->kid, kid);
    assert_int_equal(strlen(k->kid), 43);

    jwk = m2m_key_public_jwk(k);
    assert_non_null(jwk);
    assert_string_equal(json_string_value(json_object_get(jwk, "x")), x);
    assert_string_equal(json_string_value(json_object_get(jwk, "y")), y);
    json_decref(jwk);
}

static void test_kid_thumbprint(void **state)
{
    m2m_key *a = NULL, *b = NULL;

    (void)state;
    assert_int_equal(m2m_key_generate(&a), M2M_OK);
    assert_int_equal(m2m_key_generate(&b), M2M_OK);
    assert_true(a->has_private);
    assert_string_not_equal(a->kid, b->kid);
    assert_kid_is_thumbprint(a);
    assert_kid_is_thumbprint(b);
    assert_kid_is_thumbprint(g_key);
    m2m_key_free(a);
    m2m_key_free(b);
    m2m_key_free(NULL);
}

static char *public_pem(const m2m_key *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    char *s;

    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, k->pkey), 1);
    n = BIO_get_mem_data(bio, &data);
    s = track(malloc((size_t)n + 1));
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(bio);
    return s;
}

static void test_pem_round_trip(void **state)
{
    m2m_buf pem, pem2;
    m2m_key *priv = NULL, *pub = NULL;
    m2m_keyset ks = {&pub, 1};
    char *pubpem, *tok;
    json_t *claims = std_claims();

    (void)state;
    m2m_buf_init(&pem, 4096);
    m2m_buf_init(&pem2, 4096);
    assert_int_equal(m2m_key_private_pem(g_key, &pem), M2M_OK);
    assert_true(strncmp(pem.data, "-----BEGIN PRIVATE KEY-----\n", 28) == 0); /* PKCS#8 */

    /* private PEM -> same kid, can sign, g_key verifies it */
    assert_int_equal(m2m_key_from_pem(pem.data, pem.len, &priv), M2M_OK);
    assert_true(priv->has_private);
    assert_string_equal(priv->kid, g_key->kid);
    tok = sign_claims(priv, TYP, claims);
    ACCEPTED("signed by the reloaded private key", tok);
    /* and writes the same PEM back */
    assert_int_equal(m2m_key_private_pem(priv, &pem2), M2M_OK);
    assert_string_equal(pem.data, pem2.data);

    /* public PEM -> verifies, cannot sign or export a private key */
    pubpem = public_pem(g_key);
    assert_int_equal(m2m_key_from_pem(pubpem, strlen(pubpem), &pub), M2M_OK);
    assert_false(pub->has_private);
    assert_string_equal(pub->kid, g_key->kid);
    tok = sign_claims(g_key, TYP, claims);
    check_verdict("public-only key", tok, strlen(tok), &ks, NULL);
    m2m_buf_reset(&pem2);
    assert_int_equal(m2m_jwt_sign(pub, TYP, claims, &pem2), M2M_ERR_CRYPTO);
    assert_int_equal(m2m_key_private_pem(pub, &pem2), M2M_ERR_CRYPTO);
    assert_int_equal(pem2.len, 0);

    m2m_key_free(priv);
    m2m_key_free(pub);
    m2m_buf_free(&pem);
    m2m_buf_free(&pem2);
    json_decref(claims);
}

static char *pkey_pem(EVP_PKEY *pkey, bool private_key, const EVP_CIPHER *enc)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *s;
    long n;

    assert_non_null(bio);
    if (private_key && enc)
        assert_int_equal(PEM_write_bio_PKCS8PrivateKey(bio, pkey, enc, "secret", 6, NULL, NULL), 1);
    else if (private_key)
        assert_int_equal(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    n = BIO_get_mem_data(bio, &data);
    s = track(malloc((size_t)n + 1));
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(bio);
    return s;
}

static void assert_pem_refused(const char *what, const char *pem, size_t len)
{
    m2m_key *k = (m2m_key *)&k; /* must be reset to NULL */

    if (m2m_key_from_pem(pem, len, &k) != M2M_ERR_CRYPTO) {
        print_error("PEM '%s' was not refused with CRYPTO\n", what);
        fail();
    }
    assert_null(k);
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_pem_refusals(void **state)
{
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    /* 32-byte coordinates too: only the curve name tells them from P-256 */
    EVP_PKEY *k1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
    EVP_PKEY *bp = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "brainpoolP256r1");
    char *s;

    (void)state;
    assert_non_null(p384);
    assert_non_null(ed);
    assert_non_null(rsa);
    assert_non_null(k1);
    assert_non_null(bp);
    assert_pem_refused("empty", "", 0);
    assert_pem_refused("garbage", "not a pem", 9);
    s = pkey_pem(p384, true, NULL);
    assert_pem_refused("P-384 private", s, strlen(s));
    s = pkey_pem(p384, false, NULL);
    assert_pem_refused("P-384 public", s, strlen(s));
    s = pkey_pem(k1, true, NULL);
    assert_pem_refused("secp256k1 private", s, strlen(s));
    s = pkey_pem(k1, false, NULL);
    assert_pem_refused("secp256k1 public", s, strlen(s));
    s = pkey_pem(bp, false, NULL);
    assert_pem_refused("brainpoolP256r1 public", s, strlen(s));
    s = pkey_pem(ed, true, NULL);
    assert_pem_refused("Ed25519 private", s, strlen(s));
    s = pkey_pem(ed, false, NULL);
    assert_pem_refused("Ed25519 public", s, strlen(s));
    s = pkey_pem(rsa, true, NULL);
    assert_pem_refused("RSA private", s, strlen(s));
    s = pkey_pem(rsa, false, NULL);
    assert_pem_refused("RSA public", s, strlen(s));
    /* encrypted: refused without prompting for a passphrase */
    s = pkey_pem(g_key->pkey, true, EVP_aes_256_cbc());
    assert_true(strstr(s, "ENCRYPTED PRIVATE KEY") != NULL);
    assert_pem_refused("encrypted P-256", s, strlen(s));
    /* truncated */
    s = pkey_pem(g_key->pkey, true, NULL);
    assert_pem_refused("truncated P-256", s, strlen(s) / 2);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(bp);
}

static void test_jwk_round_trip(void **state)
{
    json_t *jwk = m2m_key_public_jwk(g_key), *copy;
    m2m_key *k = NULL;
    m2m_keyset ks = {&k, 1};
    char *tok;
    json_t *claims = std_claims();

    (void)state;
    assert_non_null(jwk);
    assert_int_equal(json_object_size(jwk), 7);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(jwk, "kid")), g_key->kid);
    assert_null(json_object_get(jwk, "d"));
    assert_null(m2m_key_public_jwk(NULL));

    assert_int_equal(m2m_key_from_jwk(jwk, &k), M2M_OK);
    assert_false(k->has_private);
    assert_string_equal(k->kid, g_key->kid);
    tok = sign_claims(g_key, TYP, claims);
    check_verdict("JWK key verifies", tok, strlen(tok), &ks, NULL);
    /* it cannot sign */
    {
        m2m_buf b;

        m2m_buf_init(&b, 100);
        assert_int_equal(m2m_jwt_sign(k, TYP, claims, &b), M2M_ERR_CRYPTO);
        m2m_buf_free(&b);
    }
    m2m_key_free(k);
    k = NULL;

    /* no kid: the thumbprint */
    copy = json_deep_copy(jwk);
    json_object_del(copy, "kid");
    json_object_del(copy, "use");
    json_object_del(copy, "alg");
    assert_int_equal(m2m_key_from_jwk(copy, &k), M2M_OK);
    assert_string_equal(k->kid, g_key->kid);
    m2m_key_free(k);
    k = NULL;

    /* a given kid is kept; "d" is ignored, never loaded */
    json_object_set_new(copy, "kid", json_string("rotation-2"));
    json_object_set_new(copy, "d", json_string("870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"));
    assert_int_equal(m2m_key_from_jwk(copy, &k), M2M_OK);
    assert_string_equal(k->kid, "rotation-2");
    assert_false(k->has_private);
    m2m_key_free(k);

    json_decref(copy);
    json_decref(jwk);
    json_decref(claims);
}

static void assert_jwk_refused(const char *what, const json_t *jwk)
{
    m2m_key *k = (m2m_key *)&k;

    if (m2m_key_from_jwk(jwk, &k) != M2M_ERR_CRYPTO) {
        print_error("JWK '%s' was not refused with CRYPTO\n", what);
        fail();
    }
    assert_null(k);
    assert_int_equal(ERR_peek_error(), 0);
}

/* The public JWK of g_key with one member replaced (value NULL: removed). */
static void refuse_with(const char *what, const char *member, json_t *value)
{
    json_t *jwk = m2m_key_public_jwk(g_key);

    assert_non_null(jwk);
    if (value)
        json_object_set_new(jwk, member, value);
    else
        json_object_del(jwk, member);
    assert_jwk_refused(what, jwk);
    json_decref(jwk);
}

static void test_jwk_refusals(void **state)
{
    json_t *jwk = m2m_key_public_jwk(g_key);
    uint8_t y[33], x[32];
    size_t n = 0;

    (void)state;
    assert_int_equal(
        m2m_b64url_decode(json_string_value(json_object_get(jwk, "y")), 43, y, sizeof y, &n),
        M2M_OK);
    assert_int_equal(n, 32);

    refuse_with("kty RSA", "kty", json_string("RSA"));
    refuse_with("kty OKP", "kty", json_string("OKP"));
    refuse_with("kty missing", "kty", NULL);
    refuse_with("kty number", "kty", json_integer(1));
    refuse_with("crv P-384", "crv", json_string("P-384"));
    refuse_with("crv secp256k1", "crv", json_string("secp256k1"));
    refuse_with("crv missing", "crv", NULL);
    refuse_with("alg RS256", "alg", json_string("RS256"));
    refuse_with("alg ES384", "alg", json_string("ES384"));
    refuse_with("use enc", "use", json_string("enc"));
    refuse_with("x of 31 bytes", "x", json_string(b64u(y, 31)));
    refuse_with("x of 33 bytes", "x", json_string(b64u(y, 33)));
    refuse_with("x padded", "x",
                json_string(fmt("%s=", json_string_value(json_object_get(jwk, "x")))));
    refuse_with("x missing", "x", NULL);
    refuse_with("y missing", "y", NULL);
    refuse_with("x number", "x", json_integer(7));
    /* (x, y with one bit flipped) is not on the curve */
    y[31] ^= 1;
    refuse_with("point not on curve", "y", json_string(b64u(y, 32)));
    memset(x, 0, sizeof x);
    refuse_with("zero point x", "x", json_string(b64u(x, 32)));
    memset(x, 0xFF, sizeof x); /* not even a field element (>= p) */
    refuse_with("x >= p", "x", json_string(b64u(x, 32)));
    refuse_with("kid empty", "kid", json_string(""));
    refuse_with("kid too long", "kid", json_string(fmt("%064d", 0)));
    refuse_with("kid number", "kid", json_integer(3));
    refuse_with("kid with NUL", "kid", json_stringn("a\0b", 3));
    {
        json_t *arr = json_array();

        assert_jwk_refused("array", arr);
        assert_jwk_refused("NULL", NULL);
        json_decref(arr);
    }
    json_decref(jwk);
}

/* ---- sign / verify ---------------------------------------------------- */

static void test_round_trip(void **state)
{
    json_t *claims = std_claims(), *got = NULL;
    m2m_jwt_expect e = std_expect();
    const char *why = "x", *dot;
    char *tok, hdr[256];
    uint8_t raw[256];
    size_t n = 0;

    (void)state;
    tok = sign_claims(g_key, TYP, claims);
    assert_true(strlen(tok) < M2M_JWT_MAX_LEN);
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &g_ks, &e, &got, &why), M2M_OK);
    assert_null(why);
    assert_true(json_equal(claims, got));
    json_decref(got);

    /* the header is exactly this text */
    dot = strchr(tok, '.');
    assert_int_equal(m2m_b64url_decode(tok, (size_t)(dot - tok), raw, sizeof raw, &n), M2M_OK);
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", g_key->kid);
    assert_int_equal(n, strlen(hdr));
    assert_memory_equal(raw, hdr, n);
    /* the signature is 64 raw bytes */
    assert_int_equal(strlen(strrchr(tok, '.') + 1), 86);

    /* claims may be left out; the keyset may hold several keys */
    {
        m2m_key *keys[2] = {g_other, g_key};
        m2m_keyset ks = {keys, 2};

        assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &ks, &e, NULL, NULL), M2M_OK);
        tok = sign_claims(g_other, TYP, claims);
        assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &ks, &e, NULL, NULL), M2M_OK);
        REFUSED("g_other not in g_ks", tok, "unknown kid");
    }
    /* now = 0 means the clock: these claims expired long ago */
    e.now = 0;
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &g_ks, &e, &got, &why),
                     M2M_ERR_INVALID_TOKEN);
    json_decref(claims);
}

static void test_sign_refusals(void **state)
{
    json_t *claims = std_claims(), *arr = json_array(), *big;
    m2m_buf b;
    char *pad;
    size_t lo, hi;

    (void)state;
    m2m_buf_init(&b, M2M_JWT_MAX_LEN);
    assert_int_equal(m2m_jwt_sign(g_key, "at\"jwt", claims, &b), M2M_ERR_INTERNAL);
    assert_int_equal(m2m_jwt_sign(g_key, "", claims, &b), M2M_ERR_INTERNAL);
    assert_int_equal(m2m_jwt_sign(g_key, NULL, claims, &b), M2M_ERR_INTERNAL);
    assert_int_equal(m2m_jwt_sign(g_key, TYP, arr, &b), M2M_ERR_INTERNAL);
    assert_int_equal(m2m_jwt_sign(NULL, TYP, claims, &b), M2M_ERR_INTERNAL);
    assert_int_equal(b.len, 0);

    /* never issues a token the verifier would call too long: find the
     * largest padding that signs, it verifies; one more byte is refused */
    pad = track(malloc(M2M_JWT_MAX_LEN));
    lo = 0;
    hi = M2M_JWT_MAX_LEN - 1;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        m2m_err rc;

        memset(pad, 'a', mid);
        pad[mid] = '\0';
        big = json_deep_copy(claims);
        json_object_set_new(big, "pad", json_string(pad));
        m2m_buf_reset(&b);
        rc = m2m_jwt_sign(g_key, TYP, big, &b);
        json_decref(big);
        if (rc == M2M_OK) {
            lo = mid;
        } else {
            assert_int_equal(rc, M2M_ERR_PAYLOAD_TOO_LARGE);
            hi = mid - 1;
        }
    }
    memset(pad, 'a', lo);
    pad[lo] = '\0';
    big = json_deep_copy(claims);
    json_object_set_new(big, "pad", json_string(pad));
    m2m_buf_reset(&b);
    assert_int_equal(m2m_jwt_sign(g_key, TYP, big, &b), M2M_OK);
    assert_true(b.len <= M2M_JWT_MAX_LEN);
    assert_true(b.len > M2M_JWT_MAX_LEN - 8);
    ACCEPTED("largest token", b.data);
    json_decref(big);

    m2m_buf_free(&b);
    json_decref(arr);
    json_decref(claims);
}

static void test_refuse_alg(void **state)
{
    const char *kid = g_key->kid;
    char *pay = std_payload(), *good = signed_token(g_key, std_header(g_key), pay);
    const char *good_sig = strrchr(good, '.') + 1;
    char *pem = public_pem(g_key), *input;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    (void)state;
    ACCEPTED("baseline", good);

    input = signing_input(fmt("{\"alg\":\"none\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid), pay);
    REFUSED("alg none, empty signature", fmt("%s.", input), "malformed");
    REFUSED("alg none, original signature", fmt("%s.%s", input, good_sig), "unsupported alg");
    input = signing_input(fmt("{\"alg\":\"none\",\"typ\":\"at+jwt\"}"), pay);
    REFUSED("alg none, no kid, empty signature", fmt("%s.", input), "malformed");

    /* the libjwt forgery: HMAC keyed with the public key's PEM text */
    input = signing_input(fmt("{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid), pay);
    assert_non_null(HMAC(EVP_sha256(), pem, (int)strlen(pem), (const uint8_t *)input, strlen(input),
                         mac, &maclen));
    assert_int_equal(maclen, 32);
    REFUSED("HS256 keyed with public PEM", with_sig(input, mac, maclen), "unsupported alg");
    /* a 64-byte MAC has the length of an ES256 signature */
    input = signing_input(fmt("{\"alg\":\"HS512\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid), pay);
    assert_non_null(HMAC(EVP_sha512(), pem, (int)strlen(pem), (const uint8_t *)input, strlen(input),
                         mac, &maclen));
    assert_int_equal(maclen, 64);
    REFUSED("HS512 keyed with public PEM", with_sig(input, mac, maclen), "unsupported alg");

    REFUSED("alg es256",
            signed_token(g_key,
                         fmt("{\"alg\":\"es256\",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             kid),
                         pay),
            "unsupported alg");
    REFUSED("alg ES384",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES384\",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             kid),
                         pay),
            "unsupported alg");
    REFUSED("alg RS256",
            signed_token(g_key,
                         fmt("{\"alg\":\"RS256\",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             kid),
                         pay),
            "unsupported alg");
    REFUSED("alg 'ES256 '",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES256 \",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             kid),
                         pay),
            "unsupported alg");
    REFUSED("alg missing",
            signed_token(g_key, fmt("{\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid), pay), "malformed");
    REFUSED("alg number",
            signed_token(g_key, fmt("{\"alg\":256,\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid), pay),
            "malformed");
}

static void test_refuse_typ(void **state)
{
    const char *kid = g_key->kid;
    char *pay = std_payload();
    json_t *claims = std_claims();

    (void)state;
#define WITH_TYP(t)                                                                                \
    signed_token(g_key, fmt("{\"alg\":\"ES256\",\"typ\":" t ",\"kid\":\"%s\"}", kid), pay)
    REFUSED("typ JWT", WITH_TYP("\"JWT\""), "wrong typ");
    REFUSED("typ at+jwt with space", WITH_TYP("\"at+jwt \""), "wrong typ");
    REFUSED("typ application/jwt", WITH_TYP("\"application/jwt\""), "wrong typ");
    REFUSED("typ number", WITH_TYP("1"), "wrong typ");
    REFUSED("typ null", WITH_TYP("null"), "wrong typ");
    REFUSED("typ missing", signed_token(g_key, fmt("{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid), pay),
            "wrong typ");
    /* media types are case-insensitive and "application/" is optional */
    ACCEPTED("typ application/at+jwt", WITH_TYP("\"application/at+jwt\""));
    ACCEPTED("typ AT+JWT", WITH_TYP("\"AT+JWT\""));
    ACCEPTED("typ Application/At+Jwt", WITH_TYP("\"Application/At+Jwt\""));
    ACCEPTED("signed with typ application/at+jwt",
             sign_claims(g_key, "application/at+jwt", claims));
#undef WITH_TYP
    json_decref(claims);
}

static void test_refuse_headers(void **state)
{
    const char *kid = g_key->kid;
    char *pay = std_payload();
    json_t *jwk = m2m_key_public_jwk(g_other);
    char *jwk_text = track(json_dumps(jwk, JSON_COMPACT));

    (void)state;
    /* an embedded key, signed by that key, naming it by its own kid and by ours */
    REFUSED("jwk header (attacker's kid)",
            signed_token(g_other,
                         fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\","
                             "\"jwk\":%s}",
                             g_other->kid, jwk_text),
                         pay),
            "forbidden header");
    REFUSED("jwk header (our kid)",
            signed_token(g_other,
                         fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\","
                             "\"jwk\":%s}",
                             kid, jwk_text),
                         pay),
            "forbidden header");
    /* the rest are signed by our own key: refused for the header alone */
#define WITH_EXTRA(x)                                                                              \
    signed_token(g_key, fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"," x "}", kid),   \
                 pay)
    REFUSED("jku header", WITH_EXTRA("\"jku\":\"https://evil.example/jwks.json\""),
            "forbidden header");
    REFUSED("x5u header", WITH_EXTRA("\"x5u\":\"https://evil.example/cert.pem\""),
            "forbidden header");
    REFUSED("x5c header", WITH_EXTRA("\"x5c\":[\"MIIB\"]"), "forbidden header");
    REFUSED("crit header", WITH_EXTRA("\"crit\":[\"exp\"]"), "forbidden header");
    REFUSED("crit b64", WITH_EXTRA("\"b64\":false,\"crit\":[\"b64\"]"), "forbidden header");
    REFUSED("crit null", WITH_EXTRA("\"crit\":null"), "forbidden header");
    ACCEPTED("unknown harmless header", WITH_EXTRA("\"cty\":\"x\""));
#undef WITH_EXTRA

    /* kid */
    REFUSED("unknown kid",
            signed_token(g_key, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"nope\"}", pay),
            "unknown kid");
    REFUSED("kid missing", signed_token(g_key, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", pay),
            "unknown kid");
    REFUSED("kid number",
            signed_token(g_key, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":1}", pay),
            "malformed");
    REFUSED("kid with a suffix",
            signed_token(g_key, fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%sA\"}", kid),
                         pay),
            "unknown kid");
    REFUSED("kid prefix",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%.42s\"}", kid), pay),
            "unknown kid");
    json_decref(jwk);
}

static void test_refuse_time(void **state)
{
    const char *h = std_header(g_key), *iss = "\"" ISS "\"", *aud = "\"" AUD "\"";

#define T(v)               fmt("%ld", (long)(v))
#define TOK(exp, nbf, iat) signed_token(g_key, h, payload(exp, nbf, iat, iss, aud))
    (void)state;
    REFUSED("expired (exp = now - 120, leeway 30)", TOK(T(NOW - 120), NULL, NULL), "expired");
    REFUSED("expired at exactly the leeway", TOK(T(NOW - LEEWAY), NULL, NULL), "expired");
    ACCEPTED("expired within the leeway", TOK(T(NOW - LEEWAY + 1), NULL, NULL));
    REFUSED("fractional exp", TOK("1699999969.5", NULL, NULL), "expired");
    ACCEPTED("fractional exp within leeway", TOK("1699999970.5", NULL, NULL));
    REFUSED("exp as string", TOK(fmt("\"%ld\"", NOW + 900), NULL, NULL), "malformed");
    REFUSED("exp true", TOK("true", NULL, NULL), "malformed");
    REFUSED("exp null", TOK("null", NULL, NULL), "malformed");
    REFUSED("missing exp", TOK(NULL, NULL, T(NOW)), "missing exp");
    REFUSED("exp = 1", TOK("1", NULL, NULL), "expired");
    ACCEPTED("exp far away", TOK("1e300", NULL, NULL));

    REFUSED("not yet valid", TOK(T(NOW + 900), T(NOW + 60), NULL), "not yet valid");
    ACCEPTED("nbf within the leeway", TOK(T(NOW + 900), T(NOW + LEEWAY), NULL));
    REFUSED("nbf as string", TOK(T(NOW + 900), "\"0\"", NULL), "malformed");

    REFUSED("iat in the future", TOK(T(NOW + 900), NULL, T(NOW + 60)), "issued in the future");
    ACCEPTED("iat within the leeway", TOK(T(NOW + 900), NULL, T(NOW + LEEWAY)));
    REFUSED("iat as string", TOK(T(NOW + 900), NULL, "\"now\""), "malformed");
#undef TOK
#undef T
}

static void test_refuse_iss_aud(void **state)
{
    const char *h = std_header(g_key), *exp = fmt("%ld", NOW + 900);

#define TOK(iss, aud) signed_token(g_key, h, payload(exp, NULL, NULL, iss, aud))
    (void)state;
    REFUSED("wrong iss", TOK("\"https://evil.example\"", "\"" AUD "\""), "wrong issuer");
    REFUSED("iss with trailing slash", TOK("\"" ISS "/\"", "\"" AUD "\""), "wrong issuer");
    REFUSED("iss missing", TOK(NULL, "\"" AUD "\""), "wrong issuer");
    REFUSED("iss number", TOK("1", "\"" AUD "\""), "malformed");
    REFUSED("wrong aud (string)", TOK("\"" ISS "\"", "\"other-api\""), "wrong audience");
    REFUSED("wrong aud (array)", TOK("\"" ISS "\"", "[\"other-api\",\"x\"]"), "wrong audience");
    REFUSED("aud empty array", TOK("\"" ISS "\"", "[]"), "wrong audience");
    REFUSED("aud missing", TOK("\"" ISS "\"", NULL), "wrong audience");
    REFUSED("aud prefix", TOK("\"" ISS "\"", "\"currency-ap\""), "wrong audience");
    REFUSED("aud number", TOK("\"" ISS "\"", "7"), "malformed");
    REFUSED("aud array with a number", TOK("\"" ISS "\"", "[1,\"" AUD "\"]"), "malformed");
    ACCEPTED("aud array containing it", TOK("\"" ISS "\"", "[\"other-api\",\"" AUD "\"]"));
    ACCEPTED("aud array of one", TOK("\"" ISS "\"", "[\"" AUD "\"]"));

    /* unchecked when not expected */
    {
        m2m_jwt_expect e = std_expect();
        const char *tok = TOK(NULL, NULL);

        e.issuer = NULL;
        e.audience = NULL;
        assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &g_ks, &e, NULL, NULL), M2M_OK);
    }
#undef TOK
}

static void test_refuse_signature(void **state)
{
    char *pay = std_payload(), *input = signing_input(std_header(g_key), pay), *tok, *other;
    uint8_t raw[65];
    json_t *claims = std_claims();
    m2m_key *imp = NULL;
    size_t i;

    (void)state;
    es256_raw(g_key->pkey, input, raw);
    ACCEPTED("baseline", with_sig(input, raw, 64));
    /* every byte of the signature */
    for (i = 0; i < 64; i++) {
        raw[i] ^= 0x01;
        REFUSED(fmt("signature byte %zu flipped", i), with_sig(input, raw, 64), "bad signature");
        raw[i] ^= 0x01;
    }
    raw[64] = 0;
    REFUSED("signature of 63 bytes", with_sig(input, raw, 63), "bad signature");
    REFUSED("signature of 65 bytes", with_sig(input, raw, 65), "bad signature");
    REFUSED("signature of 32 bytes", with_sig(input, raw, 32), "bad signature");
    REFUSED("signature all zero", with_sig(input, memset(raw, 0, 64), 64), "bad signature");
    memset(raw, 0xFF, 64); /* r, s >= n */
    REFUSED("signature all ones", with_sig(input, raw, 64), "bad signature");

    /* payload changed under a valid signature */
    es256_raw(g_key->pkey, input, raw);
    tok = with_sig(
        signing_input(std_header(g_key), payload(fmt("%ld", NOW + 901), NULL, fmt("%ld", NOW),
                                                 "\"" ISS "\"", "\"" AUD "\"")),
        raw, 64);
    REFUSED("payload changed (exp + 1)", tok, "bad signature");
    tok = with_sig(input, raw, 64);
    {
        char *dot = strchr(tok, '.');

        dot[5] = dot[5] == 'A' ? 'B' : 'A'; /* one character of the payload */
        REFUSED("payload character flipped", tok, "bad signature");
    }
    /* the header counts too: same claims, equivalent header text */
    tok =
        with_sig(signing_input(
                     fmt("{\"typ\":\"at+jwt\",\"alg\":\"ES256\",\"kid\":\"%s\"}", g_key->kid), pay),
                 raw, 64);
    REFUSED("header reordered under a valid signature", tok, "bad signature");

    /* a different key that claims our kid */
    assert_int_equal(m2m_key_generate(&imp), M2M_OK);
    memcpy(imp->kid, g_key->kid, sizeof imp->kid);
    REFUSED("signed by another key with our kid", sign_claims(imp, TYP, claims), "bad signature");
    m2m_key_free(imp);
    /* and a token of g_other relabelled with our kid */
    other = sign_claims(g_other, TYP, claims);
    tok = fmt("%s.%s", b64u_str(std_header(g_key)), strchr(other, '.') + 1);
    REFUSED("g_other's signature under our kid", tok, "bad signature");
    json_decref(claims);
}

static void test_refuse_structure(void **state)
{
    char *pay = std_payload(), *h = std_header(g_key), *good = signed_token(g_key, h, pay);
    char *hb = b64u_str(h), *pb = b64u_str(pay), *sb = strrchr(good, '.') + 1, *big, *t;

    (void)state;
    ACCEPTED("baseline", good);
    /* segments */
    REFUSED("2 segments", fmt("%s.%s", hb, pb), "malformed");
    REFUSED("1 segment", hb, "malformed");
    REFUSED("4 segments", fmt("%s.AAAA", good), "malformed");
    REFUSED("5 segments (JWE-like)", fmt("%s.%s.%s.%s.%s", hb, pb, sb, pb, sb), "malformed");
    REFUSED("empty header", fmt(".%s.%s", pb, sb), "malformed");
    REFUSED("empty payload", fmt("%s..%s", hb, sb), "malformed");
    REFUSED("empty signature", fmt("%s.%s.", hb, pb), "malformed");
    REFUSED("only dots", "..", "malformed");
    REFUSED("empty", "", "malformed");
    REFUSED("trailing dot", fmt("%s.", good), "malformed");
    REFUSED("leading dot", fmt(".%s", good), "malformed");
    /* alphabet */
    REFUSED("padding in header", fmt("%s=.%s.%s", hb, pb, sb), "malformed");
    REFUSED("padding in signature", fmt("%s==", good), "malformed");
    REFUSED("'+' in payload", fmt("%s.+%s.%s", hb, pb + 1, sb), "malformed");
    REFUSED("'/' in signature", fmt("%s.%s./%s", hb, pb, sb + 1), "malformed");
    REFUSED("space", fmt("%s .%s.%s", hb, pb, sb), "malformed");
    REFUSED("newline at end", fmt("%s\n", good), "malformed");
    REFUSED("bearer prefix", fmt("Bearer %s", good), "malformed");
    check_verdict("NUL inside", fmt("%s", good), strlen(good) + 1, &g_ks, "malformed");
    REFUSED("non-ASCII", fmt("%s\xc3\xa9", good), "malformed");
    /* non-zero trailing bits in the last signature character: 86 chars carry
     * 516 bits, the last 4 must be zero */
    t = fmt("%s", good);
    {
        char *last = t + strlen(t) - 1;

        *last = *last == 'B' ? 'C' : 'B';
        REFUSED("signature trailing bits", t, "malformed");
    }
    REFUSED("signature 85 characters", fmt("%.*s", (int)strlen(good) - 1, good), "malformed");
    /* the header as JSON */
    REFUSED("header not JSON", signed_token(g_key, "not json", pay), "malformed");
    REFUSED("header JSON array",
            signed_token(g_key, fmt("[\"alg\",\"ES256\",\"kid\",\"%s\"]", g_key->kid), pay),
            "malformed");
    REFUSED("header JSON string", signed_token(g_key, "\"ES256\"", pay), "malformed");
    REFUSED("header duplicate alg",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES256\",\"alg\":\"none\",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             g_key->kid),
                         pay),
            "malformed");
    REFUSED("header duplicate kid",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"x\","
                             "\"kid\":\"%s\"}",
                             g_key->kid),
                         pay),
            "malformed");
    REFUSED("header trailing garbage", signed_token(g_key, fmt("%s}", h), pay), "malformed");
    REFUSED("header with NUL escape",
            signed_token(g_key,
                         fmt("{\"alg\":\"ES256\\u0000\",\"typ\":\"at+jwt\","
                             "\"kid\":\"%s\"}",
                             g_key->kid),
                         pay),
            "malformed");
    /* the claims as JSON (correctly signed) */
    REFUSED("claims not JSON", signed_token(g_key, h, "{\"exp\":"), "malformed");
    REFUSED("claims JSON array", signed_token(g_key, h, "[1,2]"), "malformed");
    REFUSED("claims duplicate exp",
            signed_token(
                g_key, h,
                fmt("{\"exp\":1,\"exp\":%ld,\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}", NOW + 900)),
            "malformed");
    /* length */
    big = track(malloc(M2M_JWT_MAX_LEN + 2));
    memset(big, 'A', M2M_JWT_MAX_LEN + 1);
    big[100] = '.';
    big[200] = '.';
    big[M2M_JWT_MAX_LEN + 1] = '\0';
    REFUSED("oversized token", big, "too long");
    big[M2M_JWT_MAX_LEN] = '\0';
    REFUSED("token of exactly the maximum length", big, "malformed");
    check_verdict("huge length", good, SIZE_MAX, &g_ks, "too long");
    check_verdict("NULL token", NULL, 0, &g_ks, "malformed");
}

static void test_verify_arguments(void **state)
{
    json_t *claims = std_claims(), *got = (json_t *)&got;
    char *tok = sign_claims(g_key, TYP, claims);
    m2m_jwt_expect e = std_expect();
    m2m_keyset empty = {NULL, 0};
    const char *why = NULL;

    (void)state;
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), NULL, &e, &got, &why), M2M_ERR_INTERNAL);
    assert_null(got);
    assert_non_null(why);
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &g_ks, NULL, &got, &why), M2M_ERR_INTERNAL);
    e.typ = NULL;
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &g_ks, &e, &got, &why), M2M_ERR_INTERNAL);
    e = std_expect();
    why = NULL;
    assert_int_equal(m2m_jwt_verify(tok, strlen(tok), &empty, &e, &got, &why),
                     M2M_ERR_INVALID_TOKEN);
    assert_string_equal(why, "unknown kid");
    /* why may be NULL */
    assert_int_equal(m2m_jwt_verify("x.y.z", 5, &g_ks, &e, &got, NULL), M2M_ERR_INVALID_TOKEN);
    json_decref(claims);
}

/* One key shared by threads, each with its own calls (design.md §7). */
static void *thread_main(void *arg)
{
    json_t *claims = arg;
    m2m_jwt_expect e = std_expect();
    m2m_buf b;
    long ok = 0;

    m2m_buf_init(&b, M2M_JWT_MAX_LEN);
    for (int i = 0; i < 100; i++) {
        json_t *got = NULL;

        m2m_buf_reset(&b);
        if (m2m_jwt_sign(g_key, TYP, claims, &b) == M2M_OK &&
            m2m_jwt_verify(b.data, b.len, &g_ks, &e, &got, NULL) == M2M_OK &&
            json_equal(got, claims))
            ok++;
        json_decref(got);
    }
    m2m_buf_free(&b);
    return (void *)(intptr_t)ok;
}

static void test_threads(void **state)
{
    pthread_t th[4];
    json_t *claims[4];
    void *ok;
    int i;

    (void)state;
    for (i = 0; i < 4; i++) {
        /* jansson values are not shared between threads: one copy each */
        claims[i] = std_claims();
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, claims[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], &ok), 0);
        assert_int_equal((intptr_t)ok, 100);
        json_decref(claims[i]);
    }
}

#define T(f) cmocka_unit_test_teardown(f, free_tracked)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_kid_thumbprint),   T(test_pem_round_trip),   T(test_pem_refusals),
        T(test_jwk_round_trip),   T(test_jwk_refusals),     T(test_round_trip),
        T(test_sign_refusals),    T(test_refuse_alg),       T(test_refuse_typ),
        T(test_refuse_headers),   T(test_refuse_time),      T(test_refuse_iss_aud),
        T(test_refuse_signature), T(test_refuse_structure), T(test_verify_arguments),
        T(test_threads),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
