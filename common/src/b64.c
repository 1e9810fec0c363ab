/* Base64 (RFC 4648 §4) and base64url (§5), strict both ways.
 *
 * Hand-rolled rather than EVP_EncodeBlock/EVP_DecodeBlock: OpenSSL's decoder
 * skips whitespace, accepts padding anywhere near the end and ignores
 * non-zero trailing bits, so one token would have several spellings. Here a
 * decoded value has exactly one accepted encoding.
 *
 * Characters are mapped with arithmetic masks instead of table lookups or
 * branches on the value: client secrets (HTTP Basic) and random tokens go
 * through here, and a data-dependent branch or table index can leak them
 * through timing. Only the validity of the input as a whole is branched on. */
#include "m2m/b64.h"

#include <string.h>

/* All helpers take values below 256 and return 0xFF for true, 0 for false. */
static unsigned ct_lt(unsigned x, unsigned y)
{
    return ((x - y) >> 8) & 0xFF; /* x < y wraps and sets the high bits */
}

static unsigned ct_ge(unsigned x, unsigned y)
{
    return ct_lt(x, y) ^ 0xFF;
}

static unsigned ct_eq(unsigned x, unsigned y)
{
    return (((0U - (x ^ y)) >> 8) & 0xFF) ^ 0xFF;
}

/* 6-bit value -> character; c62/c63 pick the alphabet. */
static char b64_char(unsigned v, unsigned c62, unsigned c63)
{
    return (char)((ct_lt(v, 26) & (v + 'A')) | (ct_ge(v, 26) & ct_lt(v, 52) & (v + 'a' - 26)) |
                  (ct_ge(v, 52) & ct_lt(v, 62) & (v + '0' - 52)) | (ct_eq(v, 62) & c62) |
                  (ct_eq(v, 63) & c63));
}

/* Character -> 6-bit value, or 0xFF when c is outside the alphabet. */
static unsigned b64_value(unsigned c, unsigned c62, unsigned c63)
{
    unsigned v = (ct_ge(c, 'A') & ct_lt(c, 'Z' + 1) & (c - 'A')) |
                 (ct_ge(c, 'a') & ct_lt(c, 'z' + 1) & (c - 'a' + 26)) |
                 (ct_ge(c, '0') & ct_lt(c, '9' + 1) & (c - '0' + 52)) | (ct_eq(c, c62) & 62) |
                 (ct_eq(c, c63) & 63);

    /* 'A' is the only character whose value is 0: any other 0 is a miss. */
    return v | (ct_eq(v, 0) & (ct_eq(c, 'A') ^ 0xFF));
}

/* Encodes with the alphabet ending in c62, c63; pad adds '=' to a multiple
 * of four characters. */
static m2m_err b64_encode_raw(const uint8_t *in, size_t n, char *out, size_t outcap,
                              size_t *outlen, unsigned c62, unsigned c63, int pad)
{
    size_t i, o = 0, need;
    uint32_t acc;
    m2m_err rc = M2M_OK;

    if (outlen)
        *outlen = 0;
    if (!out || (n && !in)) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    /* The first test keeps the length arithmetic from wrapping. */
    need = pad ? M2M_B64_LEN(n) : M2M_B64URL_LEN(n);
    if (n > (SIZE_MAX - 3) / 4 || outcap < need + 1) {
        rc = M2M_ERR_PAYLOAD_TOO_LARGE;
        goto out;
    }
    for (i = 0; i + 3 <= n; i += 3) {
        acc = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_char(acc >> 18, c62, c63);
        out[o++] = b64_char((acc >> 12) & 63, c62, c63);
        out[o++] = b64_char((acc >> 6) & 63, c62, c63);
        out[o++] = b64_char(acc & 63, c62, c63);
    }
    if (n - i == 1) {
        acc = (uint32_t)in[i] << 16;
        out[o++] = b64_char(acc >> 18, c62, c63);
        out[o++] = b64_char((acc >> 12) & 63, c62, c63);
    } else if (n - i == 2) {
        acc = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_char(acc >> 18, c62, c63);
        out[o++] = b64_char((acc >> 12) & 63, c62, c63);
        out[o++] = b64_char((acc >> 6) & 63, c62, c63);
    }
    while (pad && o % 4)
        out[o++] = '=';
    out[o] = '\0';
    if (outlen)
        *outlen = o;
out:
    return rc;
}

m2m_err m2m_b64url_encode(const uint8_t *in, size_t n, char *out, size_t outcap, size_t *outlen)
{
    return b64_encode_raw(in, n, out, outcap, outlen, '-', '_', 0);
}

m2m_err m2m_b64_encode(const uint8_t *in, size_t n, char *out, size_t outcap, size_t *outlen)
{
    return b64_encode_raw(in, n, out, outcap, outlen, '+', '/', 1);
}

/* Decodes n unpadded characters of the alphabet ending in c62, c63. */
static m2m_err b64_decode_raw(const char *in, size_t n, uint8_t *out, size_t outcap, size_t *outlen,
                              unsigned c62, unsigned c63)
{
    size_t i, o = 0, need;
    uint32_t acc = 0;
    unsigned bad = 0, v;
    m2m_err rc = M2M_OK;

    if (outlen)
        *outlen = 0;
    if ((n && !in) || (n > 1 && !out)) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    /* One leftover character carries 6 bits: not even one byte. */
    if (n % 4 == 1) {
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > outcap) {
        rc = M2M_ERR_PAYLOAD_TOO_LARGE;
        goto out;
    }
    /* Decode everything and look at `bad` once at the end, so the time taken
     * does not depend on where an invalid character sits. */
    for (i = 0; i < n; i++) {
        v = b64_value((unsigned char)in[i], c62, c63);
        bad |= v & 0xC0;
        acc = acc << 6 | (v & 63);
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    /* Trailing bits that no output byte uses must be zero, or "Zg" and "Zh"
     * would both decode to "f". */
    if (n % 4 == 2) {
        bad |= acc & 0x0F;
        out[o++] = (uint8_t)(acc >> 4);
    } else if (n % 4 == 3) {
        bad |= acc & 0x03;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    if (bad) {
        /* Do not leave a half-decoded secret behind. */
        memset(out, 0, need);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    if (outlen)
        *outlen = o;
out:
    return rc;
}

m2m_err m2m_b64url_decode(const char *in, size_t n, uint8_t *out, size_t outcap, size_t *outlen)
{
    /* '=' is outside the url alphabet, so padding is refused here. */
    return b64_decode_raw(in, n, out, outcap, outlen, '-', '_');
}

m2m_err m2m_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap, size_t *outlen)
{
    size_t pad = 0;

    if (outlen)
        *outlen = 0;
    if (n && !in)
        return M2M_ERR_INTERNAL;
    if (n % 4 != 0)
        return M2M_ERR_INVALID_REQUEST;
    /* At most two '=' and only at the very end; any other '=' is then an
     * invalid character for the decoder below. A group of four that keeps
     * 2 or 3 characters is exactly what the unpadded decoder accepts. */
    while (pad < 2 && n - pad > 0 && in[n - pad - 1] == '=')
        pad++;
    return b64_decode_raw(in, n - pad, out, outcap, outlen, '+', '/');
}
