/* ES256 JWS/JWT on cached EVP_PKEYs (design.md §4, §7).
 *
 * Not libjwt: it takes the algorithm from the token (alg=HS256 keyed with the
 * public PEM text verifies), forces typ=JWT and parses the PEM on every call.
 * Here the algorithm is pinned to ES256, the header is checked before any
 * crypto, the signature before any claim, and a key is parsed once and then
 * shared read-only by every thread (each call has its own EVP_MD_CTX). */
#include "m2m/jwt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "m2m/b64.h"

#define COORD_LEN     32 /* P-256 field element, big-endian */
#define COORD_B64_LEN M2M_B64URL_LEN(COORD_LEN)
#define SIG_LEN       64 /* raw r||s (RFC 7518 §3.4) */
#define SIG_B64_LEN   M2M_B64URL_LEN(SIG_LEN)
/* A DER ECDSA-Sig-Value for P-256 is at most 72 bytes
 * (SEQUENCE header 2 + two INTEGERs of 2 + 33). */
#define SIG_DER_MAX 72
/* Largest decoded segment of a token that fits in M2M_JWT_MAX_LEN. */
#define SEG_MAX (M2M_JWT_MAX_LEN / 4 * 3 + 2)
/* Key files are a few hundred bytes; refuse to feed megabytes to the parser. */
#define PEM_MAX (64 * 1024)
/* {"alg":"ES256","typ":"…","kid":"…"} with typ capped like kid. */
#define HEADER_MAX (48 + 2 * M2M_KID_MAX)

/* ---- keys ---------------------------------------------------------------- */

/* Never prompt on a terminal for an encrypted PEM: refuse it instead. */
static int pem_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static m2m_err key_coords(EVP_PKEY *pkey, uint8_t x[COORD_LEN], uint8_t y[COORD_LEN])
{
    BIGNUM *bx = NULL, *by = NULL;
    m2m_err rc = M2M_ERR_CRYPTO;

    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1)
        goto out;
    if (BN_bn2binpad(bx, x, COORD_LEN) != COORD_LEN || BN_bn2binpad(by, y, COORD_LEN) != COORD_LEN)
        goto out;
    rc = M2M_OK;
out:
    BN_free(bx);
    BN_free(by);
    return rc;
}

/* base64url of both coordinates, as the JWK and its thumbprint spell them. */
static m2m_err key_coords_b64(EVP_PKEY *pkey, char xs[COORD_B64_LEN + 1],
                              char ys[COORD_B64_LEN + 1])
{
    uint8_t x[COORD_LEN], y[COORD_LEN];
    m2m_err rc;

    rc = key_coords(pkey, x, y);
    if (rc)
        goto out;
    rc = m2m_b64url_encode(x, sizeof x, xs, COORD_B64_LEN + 1, NULL);
    if (rc)
        goto out;
    rc = m2m_b64url_encode(y, sizeof y, ys, COORD_B64_LEN + 1, NULL);
out:
    return rc;
}

/* RFC 7638: SHA-256 over the required members in lexicographic order, no
 * whitespace, base64url. */
static m2m_err key_thumbprint(EVP_PKEY *pkey, char kid[M2M_KID_MAX])
{
    char xs[COORD_B64_LEN + 1], ys[COORD_B64_LEN + 1], json[160];
    uint8_t digest[32];
    unsigned int dlen = 0;
    int n;
    m2m_err rc;

    rc = key_coords_b64(pkey, xs, ys);
    if (rc)
        goto out;
    n = snprintf(json, sizeof json, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 xs, ys);
    if (n < 0 || (size_t)n >= sizeof json) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    if (EVP_Digest(json, (size_t)n, digest, &dlen, EVP_sha256(), NULL) != 1 ||
        dlen != sizeof digest) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    rc = m2m_b64url_encode(digest, sizeof digest, kid, M2M_KID_MAX, NULL);
out:
    return rc;
}

static m2m_err check_p256(EVP_PKEY *pkey)
{
    char group[64];

    /* Named curves only: a key with explicit parameters has no group name. */
    if (!EVP_PKEY_is_a(pkey, "EC") ||
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       NULL) != 1 ||
        OBJ_txt2nid(group) != NID_X9_62_prime256v1)
        return M2M_ERR_CRYPTO;
    return M2M_OK;
}

/* Wraps *pkey into a new m2m_key; takes it (sets *pkey = NULL) on success.
 * kid NULL: the RFC 7638 thumbprint. */
static m2m_err key_wrap(EVP_PKEY **pkey, bool has_private, const char *kid, m2m_key **out)
{
    m2m_key *k = NULL;
    m2m_err rc;

    k = calloc(1, sizeof *k);
    if (!k) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    if (kid) {
        size_t n = strlen(kid);

        if (n == 0 || n >= sizeof k->kid) {
            rc = M2M_ERR_CRYPTO;
            goto out;
        }
        memcpy(k->kid, kid, n + 1);
    } else {
        rc = key_thumbprint(*pkey, k->kid);
        if (rc)
            goto out;
    }
    k->has_private = has_private;
    k->pkey = *pkey;
    *pkey = NULL;
    k->verify_tmpl = EVP_MD_CTX_new();
    if (!k->verify_tmpl ||
        EVP_DigestVerifyInit(k->verify_tmpl, NULL, EVP_sha256(), NULL, k->pkey) != 1) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    if (has_private) {
        k->sign_tmpl = EVP_MD_CTX_new();
        if (!k->sign_tmpl ||
            EVP_DigestSignInit(k->sign_tmpl, NULL, EVP_sha256(), NULL, k->pkey) != 1) {
            rc = M2M_ERR_CRYPTO;
            goto out;
        }
    }
    *out = k;
    k = NULL;
    rc = M2M_OK;
out:
    m2m_key_free(k);
    return rc;
}

m2m_err m2m_key_generate(m2m_key **out)
{
    EVP_PKEY *pkey = NULL;
    m2m_err rc;

    if (!out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    *out = NULL;
    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!pkey) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    rc = key_wrap(&pkey, true, NULL, out);
out:
    EVP_PKEY_free(pkey);
    if (rc)
        ERR_clear_error();
    return rc;
}

m2m_err m2m_key_from_pem(const char *pem, size_t len, m2m_key **out)
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    bool has_private = true;
    m2m_err rc;

    if (!out || !pem) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    *out = NULL;
    if (len == 0 || len > PEM_MAX) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, pem_no_password, NULL);
    if (!pkey) {
        /* Not a private key: read the same text again as a public one. */
        has_private = false;
        BIO_free(bio);
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
        pkey = PEM_read_bio_PUBKEY(bio, NULL, pem_no_password, NULL);
        if (!pkey) {
            rc = M2M_ERR_CRYPTO;
            goto out;
        }
    }
    rc = check_p256(pkey);
    if (rc)
        goto out;
    rc = key_wrap(&pkey, has_private, NULL, out);
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    /* A failed first attempt leaves errors even when the second succeeds;
     * nothing here reports through the queue, so never leave it dirty. */
    ERR_clear_error();
    return rc;
}

m2m_err m2m_key_private_pem(const m2m_key *k, m2m_buf *out)
{
    BIO *bio = NULL;
    char *data = NULL;
    long n;
    m2m_err rc;

    if (!k || !k->pkey || !out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    if (!k->has_private) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    /* A memory BIO clears its buffer when it grows and when it is freed. */
    bio = BIO_new(BIO_s_mem());
    if (!bio) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    /* Without a cipher this writes unencrypted PKCS#8 ("PRIVATE KEY"). */
    if (PEM_write_bio_PrivateKey(bio, k->pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || !data) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    rc = m2m_buf_append(out, data, (size_t)n);
out:
    BIO_free(bio);
    if (rc)
        ERR_clear_error();
    return rc;
}

json_t *m2m_key_public_jwk(const m2m_key *k)
{
    char xs[COORD_B64_LEN + 1], ys[COORD_B64_LEN + 1];
    json_t *jwk = NULL;

    if (!k || !k->pkey)
        goto out;
    if (key_coords_b64(k->pkey, xs, ys)) {
        ERR_clear_error();
        goto out;
    }
    jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", xs,
                    "y", ys, "kid", k->kid, "use", "sig", "alg", "ES256");
out:
    return jwk;
}

/* name is absent (and not required) or a string equal to want. */
static bool jwk_member_is(const json_t *jwk, const char *name, const char *want, bool required)
{
    const json_t *v = json_object_get(jwk, name);

    if (!v)
        return !required;
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/* A coordinate: exactly 32 bytes, strictly encoded (RFC 7518 §6.2.1.2 says
 * full length, leading zeros kept). */
static m2m_err jwk_coord(const json_t *jwk, const char *name, uint8_t out[COORD_LEN])
{
    const json_t *v = json_object_get(jwk, name);
    size_t n = 0;

    if (!json_is_string(v) || json_string_length(v) != COORD_B64_LEN)
        return M2M_ERR_CRYPTO;
    if (m2m_b64url_decode(json_string_value(v), COORD_B64_LEN, out, COORD_LEN, &n) ||
        n != COORD_LEN)
        return M2M_ERR_CRYPTO;
    return M2M_OK;
}

m2m_err m2m_key_from_jwk(const json_t *jwk, m2m_key **out)
{
    static char group[] = "prime256v1";
    uint8_t pub[1 + 2 * COORD_LEN];
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *pkey = NULL;
    const json_t *v;
    const char *kid = NULL;
    m2m_err rc = M2M_ERR_CRYPTO;

    if (!out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    *out = NULL;
    /* "d" is ignored on purpose: a JWK only ever gives a verification key. */
    if (!json_is_object(jwk) || !jwk_member_is(jwk, "kty", "EC", true) ||
        !jwk_member_is(jwk, "crv", "P-256", true) || !jwk_member_is(jwk, "alg", "ES256", false) ||
        !jwk_member_is(jwk, "use", "sig", false))
        goto out;
    pub[0] = 0x04; /* SEC1 uncompressed point: 04 || x || y */
    rc = jwk_coord(jwk, "x", pub + 1);
    if (rc)
        goto out;
    rc = jwk_coord(jwk, "y", pub + 1 + COORD_LEN);
    if (rc)
        goto out;
    rc = M2M_ERR_CRYPTO;
    v = json_object_get(jwk, "kid");
    if (v) {
        /* strlen check: a string built with json_stringn may hold a NUL. */
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            goto out;
        kid = json_string_value(v); /* length checked by key_wrap */
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub);
    params[2] = OSSL_PARAM_construct_end();
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    /* fromdata already refuses points off the curve; the full check also
     * covers the point at infinity and the order, once per key. */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!check || EVP_PKEY_public_check(check) != 1)
        goto out;
    rc = key_wrap(&pkey, false, kid, out);
out:
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    if (rc)
        ERR_clear_error();
    return rc;
}

void m2m_key_free(m2m_key *k)
{
    if (!k)
        return;
    EVP_MD_CTX_free(k->sign_tmpl);
    EVP_MD_CTX_free(k->verify_tmpl);
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* ---- signing ------------------------------------------------------------- */

/* typ and kid are pasted into the header without JSON escaping: allow only
 * printable ASCII that needs none. */
static bool header_value_ok(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return false;
    return i > 0 && i < M2M_KID_MAX;
}

/* EVP gives ECDSA signatures as DER; JWS wants the raw 64-byte r||s. */
static m2m_err sig_der_to_raw(const uint8_t *der, size_t len, uint8_t raw[SIG_LEN])
{
    const unsigned char *p = der;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG *sig;
    m2m_err rc = M2M_ERR_CRYPTO;

    sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!sig)
        goto out;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, SIG_LEN / 2) != SIG_LEN / 2 ||
        BN_bn2binpad(s, raw + SIG_LEN / 2, SIG_LEN / 2) != SIG_LEN / 2)
        goto out;
    rc = M2M_OK;
out:
    ECDSA_SIG_free(sig);
    return rc;
}

m2m_err m2m_jwt_sign_json(const m2m_key *key, const char *typ, const char *claims, size_t blen,
                          m2m_buf *out)
{
    /* Everything is built on the stack and appended to out once: the only
     * heap traffic on this hot path is OpenSSL's own and the buffer's. */
    char tok[M2M_JWT_MAX_LEN + 1];
    char hdr[HEADER_MAX];
    uint8_t der[SIG_DER_MAX], raw[SIG_LEN];
    size_t der_len = sizeof der, pos = 0, n;
    EVP_MD_CTX *md = NULL;
    int hlen;
    m2m_err rc;

    if (!key || !key->pkey || !typ || !claims || blen < 2 || claims[0] != '{' || !out ||
        !header_value_ok(typ) ||
        !header_value_ok(key->kid)) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    if (!key->has_private) {
        rc = M2M_ERR_CRYPTO;
        goto out;
    }
    hlen = snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"typ\":\"%s\",\"kid\":\"%s\"}", typ,
                    key->kid);
    if (hlen < 0 || (size_t)hlen >= sizeof hdr) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    /* Never issue what m2m_jwt_verify would refuse as "too long". */
    if (blen > SEG_MAX ||
        M2M_B64URL_LEN((size_t)hlen) + M2M_B64URL_LEN(blen) + 2 + SIG_B64_LEN > M2M_JWT_MAX_LEN) {
        rc = M2M_ERR_PAYLOAD_TOO_LARGE;
        goto out;
    }
    rc = m2m_b64url_encode((const uint8_t *)hdr, (size_t)hlen, tok, sizeof tok, &n);
    if (rc)
        goto out;
    pos = n;
    tok[pos++] = '.';
    rc = m2m_b64url_encode((const uint8_t *)claims, blen, tok + pos, sizeof tok - pos, &n);
    if (rc)
        goto out;
    pos += n;

    rc = M2M_ERR_CRYPTO;
    md = EVP_MD_CTX_new();
    if (!md || EVP_MD_CTX_copy_ex(md, key->sign_tmpl) != 1 ||
        EVP_DigestSign(md, der, &der_len, (const uint8_t *)tok, pos) != 1)
        goto out;
    rc = sig_der_to_raw(der, der_len, raw);
    if (rc)
        goto out;
    tok[pos++] = '.';
    rc = m2m_b64url_encode(raw, sizeof raw, tok + pos, sizeof tok - pos, &n);
    if (rc)
        goto out;
    pos += n;
    rc = m2m_buf_append(out, tok, pos);
out:
    EVP_MD_CTX_free(md);
    if (rc)
        ERR_clear_error();
    return rc;
}

m2m_err m2m_jwt_sign(const m2m_key *key, const char *typ, const json_t *claims, m2m_buf *out)
{
    char body[SEG_MAX];
    size_t blen;

    if (!json_is_object(claims))
        return M2M_ERR_INTERNAL;
    /* Returns the size it needed when that exceeds the buffer, 0 on error. */
    blen = json_dumpb(claims, body, sizeof body, JSON_COMPACT);
    if (blen == 0)
        return M2M_ERR_INTERNAL;
    if (blen > sizeof body)
        return M2M_ERR_PAYLOAD_TOO_LARGE;
    return m2m_jwt_sign_json(key, typ, body, blen, out);
}

/* ---- verification -------------------------------------------------------- */

static bool is_b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Exactly three non-empty segments of base64url characters; d1, d2 are the
 * offsets of the two dots. */
static bool split_token(const char *t, size_t len, size_t *d1, size_t *d2)
{
    size_t i, dots = 0, at[2] = {0, 0};

    for (i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (dots == 2)
                return false;
            at[dots++] = i;
        } else if (!is_b64url_char(t[i])) {
            return false;
        }
    }
    if (dots != 2 || at[0] == 0 || at[1] == at[0] + 1 || at[1] + 1 == len)
        return false;
    *d1 = at[0];
    *d2 = at[1];
    return true;
}

/* A segment that must be one JSON object, duplicate keys refused (two
 * parsers could otherwise read two different values). */
static json_t *segment_object(const char *b64, size_t n, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    json_t *j = NULL;

    if (m2m_b64url_decode(b64, n, buf, cap, &len))
        goto out;
    j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
out:
    return j;
}

/* Compares media types case-insensitively, with the "application/" prefix
 * optional on either side (RFC 7515 §4.1.9). */
static bool typ_matches(const char *got, const char *want)
{
    static const char prefix[] = "application/";
    const size_t plen = sizeof prefix - 1;

    if (strncasecmp(got, prefix, plen) == 0)
        got += plen;
    if (strncasecmp(want, prefix, plen) == 0)
        want += plen;
    return strcasecmp(got, want) == 0;
}

/* Returns NULL when the header is acceptable, else the reason. */
static const char *check_header(const json_t *hdr, const char *typ, const char **kid)
{
    /* Headers that would let the token pick its own key or add semantics
     * this verifier does not implement (RFC 8725 §3.10, RFC 7515 §4.1.11). */
    static const char *const forbidden[] = {"crit", "jku", "jwk", "x5u", "x5c"};
    const json_t *v;
    size_t i;

    v = json_object_get(hdr, "alg");
    if (!json_is_string(v))
        return "malformed";
    /* Pinned: the token's alg is checked, never used to choose. */
    if (strcmp(json_string_value(v), "ES256") != 0)
        return "unsupported alg";
    for (i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++)
        if (json_object_get(hdr, forbidden[i]))
            return "forbidden header";
    v = json_object_get(hdr, "typ");
    if (!json_is_string(v) || !typ_matches(json_string_value(v), typ))
        return "wrong typ";
    v = json_object_get(hdr, "kid");
    if (!v)
        return "unknown kid";
    if (!json_is_string(v))
        return "malformed";
    *kid = json_string_value(v);
    return NULL;
}

static const m2m_key *find_key(const m2m_keyset *ks, const char *kid)
{
    size_t i;

    for (i = 0; i < ks->n; i++)
        if (ks->keys[i] && ks->keys[i]->pkey && strcmp(ks->keys[i]->kid, kid) == 0)
            return ks->keys[i];
    return NULL;
}

/* JWS raw r||s back to DER for EVP. */
static bool sig_verify(const m2m_key *key, const char *input, size_t n, const uint8_t raw[SIG_LEN])
{
    uint8_t der[SIG_DER_MAX];
    unsigned char *p = der;
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    EVP_MD_CTX *md = NULL;
    int dlen;
    bool ok = false;

    sig = ECDSA_SIG_new();
    r = BN_bin2bn(raw, SIG_LEN / 2, NULL);
    s = BN_bin2bn(raw + SIG_LEN / 2, SIG_LEN / 2, NULL);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by sig now */
    dlen = i2d_ECDSA_SIG(sig, NULL);
    if (dlen <= 0 || (size_t)dlen > sizeof der || i2d_ECDSA_SIG(sig, &p) != dlen)
        goto out;
    md = EVP_MD_CTX_new();
    if (!md || EVP_MD_CTX_copy_ex(md, key->verify_tmpl) != 1)
        goto out;
    ok = EVP_DigestVerify(md, der, (size_t)dlen, (const uint8_t *)input, n) == 1;
out:
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(sig);
    BN_free(r);
    BN_free(s);
    if (!ok)
        ERR_clear_error();
    return ok;
}

/* Optional NumericDate claim: *present false when absent; "malformed" for
 * any other JSON type. */
static const char *get_time(const json_t *c, const char *name, bool *present, double *t)
{
    const json_t *v = json_object_get(c, name);

    *present = v != NULL;
    if (!v)
        return NULL;
    if (!json_is_number(v))
        return "malformed";
    *t = json_number_value(v);
    return NULL;
}

static const char *check_audience(const json_t *c, const char *want)
{
    const json_t *v = json_object_get(c, "aud");
    size_t i;
    bool found = false;

    if (json_is_string(v)) {
        found = strcmp(json_string_value(v), want) == 0;
    } else if (json_is_array(v)) {
        for (i = 0; i < json_array_size(v); i++) {
            const json_t *m = json_array_get(v, i);

            if (!json_is_string(m))
                return "malformed";
            if (strcmp(json_string_value(m), want) == 0)
                found = true;
        }
    } else if (v) {
        return "malformed";
    }
    return found ? NULL : "wrong audience";
}

static const char *check_claims(const json_t *c, const m2m_jwt_expect *exp)
{
    /* Doubles: NumericDate may be fractional and a huge integer must not
     * overflow when the leeway is added. */
    const double now = (double)(exp->now ? exp->now : time(NULL));
    const double leeway = exp->leeway > 0 ? (double)exp->leeway : 0.0;
    const char *why;
    const json_t *v;
    bool present;
    double t = 0;

    why = get_time(c, "exp", &present, &t);
    if (why)
        return why;
    if (!present)
        return "missing exp";
    if (!(now < t + leeway))
        return "expired";
    why = get_time(c, "nbf", &present, &t);
    if (why)
        return why;
    if (present && now + leeway < t)
        return "not yet valid";
    why = get_time(c, "iat", &present, &t);
    if (why)
        return why;
    if (present && t > now + leeway)
        return "issued in the future";
    if (exp->issuer) {
        v = json_object_get(c, "iss");
        if (v && !json_is_string(v))
            return "malformed";
        if (!v || strcmp(json_string_value(v), exp->issuer) != 0)
            return "wrong issuer";
    }
    if (exp->audience)
        return check_audience(c, exp->audience);
    return NULL;
}

m2m_err m2m_jwt_verify(const char *token, size_t len, const m2m_keyset *ks,
                       const m2m_jwt_expect *exp, json_t **claims, const char **why)
{
    /* One buffer serves the header, then the claims: the header is parsed
     * into its own json_t before the claims are decoded. */
    uint8_t seg[SEG_MAX];
    uint8_t raw[SIG_LEN];
    const char *reason = "malformed", *kid = NULL;
    const m2m_key *key;
    json_t *hdr = NULL, *body = NULL;
    size_t d1, d2, n = 0;
    m2m_err rc = M2M_ERR_INVALID_TOKEN;

    if (claims)
        *claims = NULL;
    if (why)
        *why = NULL;
    if (!ks || (ks->n && !ks->keys) || !exp || !exp->typ) {
        rc = M2M_ERR_INTERNAL;
        reason = "internal error";
        goto out;
    }
    if (!token)
        goto out;
    if (len > M2M_JWT_MAX_LEN) {
        reason = "too long";
        goto out;
    }
    if (!split_token(token, len, &d1, &d2))
        goto out;
    hdr = segment_object(token, d1, seg, sizeof seg);
    if (!hdr)
        goto out;
    reason = check_header(hdr, exp->typ, &kid);
    if (reason)
        goto out;
    key = find_key(ks, kid);
    if (!key) {
        reason = "unknown kid";
        goto out;
    }
    reason = "malformed";
    switch (m2m_b64url_decode(token + d2 + 1, len - d2 - 1, raw, sizeof raw, &n)) {
    case M2M_OK:
        break;
    case M2M_ERR_PAYLOAD_TOO_LARGE:
        reason = "bad signature"; /* longer than 64 bytes */
        goto out;
    default:
        goto out;
    }
    if (n != SIG_LEN) {
        reason = "bad signature";
        goto out;
    }
    /* The signing input is the text up to the second dot, as received. */
    if (!sig_verify(key, token, d2, raw)) {
        reason = "bad signature";
        goto out;
    }
    /* Only now is the payload worth parsing. */
    body = segment_object(token + d1 + 1, d2 - d1 - 1, seg, sizeof seg);
    if (!body)
        goto out;
    reason = check_claims(body, exp);
    if (reason)
        goto out;
    if (claims) {
        *claims = body;
        body = NULL;
    }
    rc = M2M_OK;
out:
    json_decref(hdr);
    json_decref(body);
    if (rc && why)
        *why = reason;
    return rc;
}
