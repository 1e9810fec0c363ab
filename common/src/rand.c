/* Random bytes and tokens from OpenSSL's CSPRNG (RAND_bytes, thread-safe and
 * fork-safe in OpenSSL 3). */
#include "m2m/rand.h"

#include <limits.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "m2m/b64.h"

/* Bytes drawn per round in m2m_rand_token: a multiple of 3 so that the
 * base64url of each chunk concatenates into the base64url of the whole. */
#define TOKEN_CHUNK 48

m2m_err m2m_rand_bytes(uint8_t *out, size_t n)
{
    size_t done = 0, step;
    m2m_err rc = M2M_OK;

    if (n && !out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    /* RAND_bytes takes an int. */
    while (done < n) {
        step = n - done > INT_MAX ? INT_MAX : n - done;
        if (RAND_bytes(out + done, (int)step) != 1) {
            ERR_clear_error();
            rc = M2M_ERR_CRYPTO;
            goto out;
        }
        done += step;
    }
out:
    return rc;
}

m2m_err m2m_rand_token(size_t nbytes, char *out, size_t outcap)
{
    uint8_t chunk[TOKEN_CHUNK];
    size_t done = 0, pos = 0, step, len;
    m2m_err rc;

    if (!out) {
        rc = M2M_ERR_INTERNAL;
        goto out;
    }
    if (nbytes > (SIZE_MAX - 3) / 4 || outcap < M2M_B64URL_LEN(nbytes) + 1) {
        rc = M2M_ERR_PAYLOAD_TOO_LARGE;
        goto out;
    }
    out[0] = '\0';
    /* A fixed stack chunk instead of a heap copy of the raw secret. */
    rc = M2M_OK;
    while (done < nbytes) {
        step = nbytes - done > sizeof chunk ? sizeof chunk : nbytes - done;
        rc = m2m_rand_bytes(chunk, step);
        if (rc)
            goto out;
        rc = m2m_b64url_encode(chunk, step, out + pos, outcap - pos, &len);
        if (rc)
            goto out;
        done += step;
        pos += len;
    }
out:
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (rc && out && outcap)
        out[0] = '\0';
    return rc;
}
