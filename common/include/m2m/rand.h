#ifndef M2M_RAND_H
#define M2M_RAND_H

#include <stddef.h>
#include <stdint.h>
#include "m2m/b64.h" /* M2M_B64URL_LEN for token buffers */
#include "m2m/err.h"

m2m_err m2m_rand_bytes(uint8_t *out, size_t n);
/* n random bytes as base64url in out (outcap >= M2M_B64URL_LEN(n) + 1). */
m2m_err m2m_rand_token(size_t nbytes, char *out, size_t outcap);

#endif
