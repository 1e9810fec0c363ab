"""JWS compact tokens built by hand for the forgery cases: base64url, HMAC,
and ES256 signatures made with `openssl` (the standard library has no ECDSA)
on the auth-service's own key file or on a key of ours. Python 3 stdlib only."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from pathlib import Path

# DER SubjectPublicKeyInfo of a P-256 key, up to the uncompressed point.
SPKI_P256_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def b64u(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u_json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")))


def jwk_to_pem(jwk):
    """The PEM text of a P-256 public JWK, as openssl would write it."""
    der = SPKI_P256_PREFIX + b"\x04" + unb64u(jwk["x"]) + unb64u(jwk["y"])
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def _der_int(buf, i):
    if buf[i] != 0x02:
        raise ValueError("not a DER INTEGER")
    n = buf[i + 1]
    return int.from_bytes(buf[i + 2:i + 2 + n], "big"), i + 2 + n


def der_sig_to_raw(der):
    """ECDSA-Sig-Value (DER) -> r || s, 32 bytes each (JWS ES256)."""
    if der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    r, i = _der_int(der, i)
    s, _ = _der_int(der, i)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def gen_key(path):
    """A fresh P-256 private key (PEM) at path."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(path)], check=True,
                   capture_output=True, timeout=30)
    os.chmod(path, 0o600)
    return Path(path)


def public_xy(key_path):
    """(x, y) of a P-256 private or public key file, 32 bytes each."""
    p = subprocess.run(["openssl", "pkey", "-in", str(key_path), "-pubout", "-outform", "DER"],
                       check=True, capture_output=True, timeout=30)
    point = p.stdout[-65:]
    if point[0] != 4:
        raise ValueError(f"{key_path}: not an uncompressed P-256 point")
    return point[1:33], point[33:]


def public_jwk(key_path, kid):
    x, y = public_xy(key_path)
    return {"kty": "EC", "crv": "P-256", "x": b64u(x), "y": b64u(y), "kid": kid,
            "alg": "ES256", "use": "sig"}


def es256(key_path):
    """A signer: signing input (str) -> raw ES256 signature bytes."""
    def sign(signing_input):
        p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_path), "-binary"],
                           input=signing_input.encode("ascii"), check=True, capture_output=True,
                           timeout=30)
        return der_sig_to_raw(p.stdout)
    return sign


def hs256(key):
    if isinstance(key, str):
        key = key.encode("utf-8")
    return lambda si: hmac.new(key, si.encode("ascii"), hashlib.sha256).digest()


def no_signature(_si):
    return b""


def token(header, claims, signer):
    si = b64u_json(header) + "." + b64u_json(claims)
    return si + "." + b64u(signer(si))


def claims(issuer, audience, sub="forged-client", scope="currency:read", ttl=300, **extra):
    now = int(time.time())
    c = {"iss": issuer, "sub": sub, "client_id": sub, "aud": audience, "scope": scope,
         "iat": now, "exp": now + ttl, "jti": os.urandom(12).hex()}
    c.update(extra)
    return c


def signing_key_for(key_dir, jwks):
    """(kid, key file) of the first JWKS key whose private key is in key_dir."""
    by_xy = {(k["x"], k["y"]): k["kid"] for k in jwks["keys"] if k.get("kty") == "EC"}
    for path in sorted(Path(key_dir).glob("*.pem")):
        x, y = public_xy(path)
        kid = by_xy.get((b64u(x), b64u(y)))
        if kid:
            return kid, path
    raise AssertionError(f"no key in {key_dir} matches the JWKS {jwks}")
