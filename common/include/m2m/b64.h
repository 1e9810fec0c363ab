/* Base64 and base64url (RFC 4648 §4/§5). Decoders are strict: characters
 * outside the alphabet, bad padding or non-zero trailing bits are refused,
 * so one token has one encoding. */
#ifndef M2M_B64_H
#define M2M_B64_H

#include <stddef.h>
#include <stdint.h>
#include "m2m/err.h"

#define M2M_B64URL_LEN(n) (((n) * 4 + 2) / 3) /* unpadded, without NUL */
#define M2M_B64_LEN(n) (((n) + 2) / 3 * 4)       /* padded, without NUL */

/* Writes unpadded base64url + NUL; needs outcap >= M2M_B64URL_LEN(n) + 1. */
m2m_err m2m_b64url_encode(const uint8_t *in, size_t n, char *out, size_t outcap, size_t *outlen);
/* Unpadded base64url. */
m2m_err m2m_b64url_decode(const char *in, size_t n, uint8_t *out, size_t outcap, size_t *outlen);
/* Standard padded base64 (HTTP Basic); outcap >= M2M_B64_LEN(n) + 1. */
m2m_err m2m_b64_encode(const uint8_t *in, size_t n, char *out, size_t outcap, size_t *outlen);
/* Standard padded base64 (HTTP Basic). */
m2m_err m2m_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap, size_t *outlen);

#endif
