"""crypto-server's token verification against forged tokens, and its key
handling: the JWKS fetched with back-off at start, unknown kids rate-limited,
cached keys while the auth-service is down."""

import concurrent.futures
import json
import os
import subprocess
import time

import harness
import jwtforge as jf
from harness import DEFAULT_AUDIENCE, EXTRA_RESOURCE, CryptoServer, http, wait_port

from .currency_base import CurrencyBase, FakeJwks, bearer, random_kid


def jwks_fetches(auth):
    """JWKS requests the auth-service has answered, from its /metrics."""
    m = auth.metrics()
    return sum(v for k, v in m.items()
               if k.startswith('auth_http_requests_total{route="/api/auth/jwks.json"'))


class CurrencyForgedTokens(CurrencyBase):
    """Tokens built here, signed with nothing, an HMAC, an attacker's key or
    the auth-service's own key (read from its key directory) with a header or
    claim that must still refuse them."""

    @classmethod
    def setUpClass(cls):
        s = harness.STACK
        if s.currency is None:
            return
        r = s.auth.get("/api/auth/jwks.json")
        cls.jwks_raw = r.body
        cls.jwks = r.json()
        cls.kid, cls.key = jf.signing_key_for(s.key_dir, cls.jwks)
        cls.jwk = next(k for k in cls.jwks["keys"] if k["kid"] == cls.kid)
        cls.pem = jf.jwk_to_pem(cls.jwk)
        cls.evil_key = jf.gen_key(s.workdir / "attacker-p256.pem")
        cls.evil_jwk = jf.public_jwk(cls.evil_key, "attacker")
        # staticmethod: plain functions stored on the class would become methods
        cls.real = staticmethod(jf.es256(cls.key))
        cls.evil = staticmethod(jf.es256(cls.evil_key))
        cls.issued = cls.read_token("cur-forge")

    def claims(self, **kw):
        return jf.claims(self.s.issuer, DEFAULT_AUDIENCE, **kw)

    def header(self, **kw):
        h = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        for k, v in kw.items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        return h

    def forge(self, header, claims, signer):
        tok = jf.token(header, claims, signer)
        self.s.currency_tokens.add(tok)
        return tok

    def assertRefused(self, token, what):
        for target in (self.cs, self.s.nginx):
            with self.subTest(what, via=type(target).__name__):
                r = http("GET", target.port, "/api/currency/BTC", headers=bearer(token))
                self.assertChallenge(r, 401, "invalid_token", ctx=what)

    def test_01_controls_signed_with_the_real_key_are_accepted(self):
        """The forging machinery is sound: the same construction with nothing
        wrong is accepted, so each refusal below is for its one defect."""
        for what, header, claims in [
            ("plain", self.header(), self.claims()),
            ("typ application/at+jwt (RFC 9068 §4)", self.header(typ="application/at+jwt"),
             self.claims()),
            ("aud as an array holding ours", self.header(),
             self.claims(aud=[EXTRA_RESOURCE, DEFAULT_AUDIENCE])),
        ]:
            with self.subTest(what):
                tok = self.forge(header, claims, self.real)
                self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(tok)), "BTC", what)

    def test_02_algorithm_confusion(self):
        c = self.claims()
        jwk_text = json.dumps(self.jwk, separators=(",", ":"))
        cases = {
            "alg none, empty signature": (self.header(alg="none"), jf.no_signature),
            "alg None, empty signature": (self.header(alg="None"), jf.no_signature),
            "alg none, no kid": (self.header(alg="none", kid=None), jf.no_signature),
            "alg none with the real signature": (self.header(alg="none"), self.real),
            "no alg, real signature": (self.header(alg=None), self.real),
            "HS256 keyed with the public key PEM": (self.header(alg="HS256"), jf.hs256(self.pem)),
            "HS256 keyed with the PEM, no final newline": (self.header(alg="HS256"),
                                                          jf.hs256(self.pem.strip())),
            "hs256 keyed with the PEM": (self.header(alg="hs256"), jf.hs256(self.pem)),
            "HS256 keyed with the JWK JSON": (self.header(alg="HS256"), jf.hs256(jwk_text)),
            "HS256 keyed with the JWKS document": (self.header(alg="HS256"),
                                                   jf.hs256(self.jwks_raw)),
            "HS256 keyed with the x coordinate": (self.header(alg="HS256"),
                                                  jf.hs256(jf.unb64u(self.jwk["x"]))),
            "HS512 keyed with the PEM": (self.header(alg="HS512"), jf.hs256(self.pem)),
            "ES384 header, ES256 signature": (self.header(alg="ES384"), self.real),
            "RS256 header, ES256 signature": (self.header(alg="RS256"), self.real),
        }
        for what, (header, signer) in cases.items():
            self.assertRefused(self.forge(header, c, signer), what)

    def test_03_wrong_typ_and_forbidden_headers(self):
        c = self.claims()
        attacker_jwks = FakeJwks()
        attacker_jwks.down = False
        attacker_jwks.body = json.dumps({"keys": [self.evil_jwk]}).encode()
        try:
            cases = {
                "typ JWT, real signature": (self.header(typ="JWT"), self.real),
                "typ application/jwt, real signature": (self.header(typ="application/jwt"),
                                                        self.real),
                "no typ, real signature": (self.header(typ=None), self.real),
                "typ at+jwt2": (self.header(typ="at+jwt2"), self.real),
                "embedded jwk (attacker's key and signature)": (
                    {"alg": "ES256", "typ": "at+jwt", "kid": "attacker", "jwk": self.evil_jwk},
                    self.evil),
                "embedded jwk under the real kid, attacker's signature": (
                    self.header(jwk=self.evil_jwk), self.evil),
                "embedded jwk (the real key) with the real signature": (
                    self.header(jwk=self.jwk), self.real),
                "jku to the attacker's JWKS": (
                    {"alg": "ES256", "typ": "at+jwt", "kid": "attacker",
                     "jku": attacker_jwks.url}, self.evil),
                "jku under the real kid, attacker's signature": (
                    self.header(jku=attacker_jwks.url), self.evil),
                "x5u to the attacker": (self.header(x5u=attacker_jwks.url), self.evil),
                "crit exp, real signature": (self.header(crit=["exp"]), self.real),
                "attacker's key, real kid": (self.header(), self.evil),
            }
            for what, (header, signer) in cases.items():
                self.assertRefused(self.forge(header, c, signer), what)
            self.assertEqual(attacker_jwks.count(), 0, "the server fetched a jku/x5u URL")
        finally:
            attacker_jwks.close()

    def test_04_tampered_real_tokens(self):
        h, p, sig = self.issued.split(".")
        raw = jf.unb64u(sig)
        flipped = jf.b64u(raw[:7] + bytes([raw[7] ^ 0x01]) + raw[8:])
        payload = json.loads(jf.unb64u(p))
        escalated = dict(payload, scope="currency:read currency:write", role="admin")
        ok_si = jf.b64u_json(self.header()) + "." + jf.b64u_json(self.claims())
        cases = {
            "a flipped signature bit": f"{h}.{p}.{flipped}",
            "the last signature byte changed": f"{h}.{p}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'AQ'}",
            "a truncated signature": f"{h}.{p}.{sig[:-4]}",
            "a signature twice as long": f"{h}.{p}.{sig}{sig}",
            "the claims escalated, signature kept": f"{h}.{jf.b64u_json(escalated)}.{sig}",
            "the header changed, signature kept": f"{jf.b64u_json(self.header(x='1'))}.{p}.{sig}",
            "DER signature instead of r||s": ok_si + "." + jf.b64u(self._der_sig(ok_si)),
            "all-zero signature": f"{h}.{p}.{jf.b64u(bytes(64))}",
        }
        for what, tok in cases.items():
            self.s.currency_tokens.add(tok)
            self.assertRefused(tok, what)
        # the genuine one still works: nothing above poisoned the cache
        self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(self.issued)), "BTC")

    def _der_sig(self, signing_input):
        p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key), "-binary"],
                           input=signing_input.encode(), capture_output=True, check=True,
                           timeout=30)
        return p.stdout

    def test_05_bad_claims_with_a_real_signature(self):
        now = int(time.time())
        cases = {
            "wrong issuer": self.claims(iss="http://evil.example"),
            "issuer with a trailing slash": self.claims(iss=self.s.issuer + "/"),
            "no issuer": {k: v for k, v in self.claims().items() if k != "iss"},
            "another audience": self.claims(aud=EXTRA_RESOURCE),
            "audience array without ours": self.claims(aud=[EXTRA_RESOURCE]),
            "no audience": {k: v for k, v in self.claims().items() if k != "aud"},
            "expired an hour ago": self.claims(exp=now - 3600, iat=now - 4000),
            "no exp": {k: v for k, v in self.claims().items() if k != "exp"},
            "exp as a string": self.claims(exp=str(now + 600)),
            "not valid for an hour": self.claims(nbf=now + 3600),
            "issued in an hour": self.claims(iat=now + 3600),
            "no sub": {k: v for k, v in self.claims().items() if k != "sub"},
            "scope not a string": self.claims(scope=["currency:read"]),
        }
        for what, c in cases.items():
            self.assertRefused(self.forge(self.header(), c, self.real), what)

    def test_06_unknown_kids(self):
        c = self.claims()
        for what, header, signer in [
            ("unknown kid, real signature", self.header(kid=random_kid()), self.real),
            ("unknown kid, attacker's signature", self.header(kid=random_kid()), self.evil),
            ("no kid, real signature", self.header(kid=None), self.real),
            ("kid not a string", self.header(kid=7), self.real),
        ]:
            self.assertRefused(self.forge(header, c, signer), what)
        self.assertTrue(self.cs.alive())

    def test_07_burst_of_unknown_kids_fetches_the_jwks_at_most_twice(self):
        s = self.s
        c = self.claims()
        tokens = [self.forge(self.header(kid=random_kid()), c,
                             lambda si: os.urandom(64)) for _ in range(50)]
        before = jwks_fetches(s.auth)

        def one(tok):
            return http("GET", self.cs.port, "/api/currency/BTC", headers=bearer(tok))
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(one, tokens))
        took = time.monotonic() - t0
        for r in replies:
            self.assertChallenge(r, 401, "invalid_token", ctx="burst of unknown kids")
        self.assertLess(took, 15, "50 unknown-kid requests took too long")
        time.sleep(0.3)
        fetched = jwks_fetches(s.auth) - before
        self.assertLessEqual(fetched, 2, f"50 unknown kids made {fetched:.0f} JWKS fetches")

    def test_99_still_up(self):
        self.assertTrue(self.cs.alive(), "crypto-server died under forged tokens")
        self.assertEqual(self.cs.get("/api/currency/health").status, 200)
        self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(self.issued)), "BTC")
        self.assertEqual(self.cs.sanitizer_findings(), [])


class CurrencyKeysAvailability(CurrencyBase):
    """The JWKS at start (retry with back-off) and the auth-service stopped
    (cached keys keep verifying)."""

    def test_01_auth_service_stopped_cached_keys_still_verify(self):
        s = self.s
        used = self.read_token("cur-down-used")
        fresh = self.read_token("cur-down-fresh")  # first shown after the stop
        self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(used)), "BTC")
        jwks = s.auth.get("/api/auth/jwks.json").json()

        old = s.auth
        code = old.stop()
        self.assertCleanExit(old, code)
        fake = None
        try:
            for what, tok in [("a token verified before", used),
                              ("a token never shown before", fresh)]:
                for target in (self.cs, s.nginx):
                    with self.subTest(what, via=type(target).__name__):
                        r = http("GET", target.port, "/api/currency/BTC", headers=bearer(tok))
                        self.assertOne(r, "BTC", f"{what}, auth-service stopped")
            self.rates(fresh)
            r = self.cs.get("/api/currency/health")
            self.assertEqual(r.status, 200, r)
            self.assertIs(r.json().get("keys_loaded"), True, r)
            self.assertEqual(http("GET", self.cs.metrics_port, "/health").status, 200)

            # A key published since the last fetch (a rotation): its first
            # token names an unknown kid, which makes the server refetch the
            # JWKS - here from a stand-in on the auth-service's port.
            rot_kid = "rotated-" + os.urandom(6).hex()
            rot_key = jf.gen_key(s.workdir / f"{rot_kid}.pem")
            fake = FakeJwks(port=old.port)
            fake.body = json.dumps({"keys": jwks["keys"] + [jf.public_jwk(rot_key, rot_kid)]
                                    }).encode()
            fake.down = False
            rotated = jf.token({"alg": "ES256", "typ": "at+jwt", "kid": rot_kid},
                               jf.claims(s.issuer, DEFAULT_AUDIENCE), jf.es256(rot_key))
            s.currency_tokens.add(rotated)
            last = {}

            def accepted():
                # Refetches are limited to one per 10 s: with -k this case may
                # come soon after the start's fetch.
                last["r"] = self.cs.get("/api/currency/BTC", headers=bearer(rotated))
                return last["r"].status == 200
            ok, took = self.wait_for(accepted, 12.0, 0.5)
            self.assertTrue(ok, f"a token of a newly published key: {last['r']!r}")
            self.assertOne(last["r"], "BTC", "rotated key")
            self.assertEqual(fake.count(), 1, "one refetch for the new kid")
            # another unknown kid at once: refused without another fetch
            unknown = jf.token({"alg": "ES256", "typ": "at+jwt", "kid": random_kid()},
                               jf.claims(s.issuer, DEFAULT_AUDIENCE), jf.es256(rot_key))
            s.currency_tokens.add(unknown)
            t0 = time.monotonic()
            r = self.cs.get("/api/currency/BTC", headers=bearer(unknown))
            self.assertChallenge(r, 401, "invalid_token", ctx="unknown kid")
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(fake.count(), 1, "a second refetch within 10 s")
            self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(fresh)), "BTC")
        finally:
            if fake:
                fake.close()
            s.start_main_again(old)
        # back: a token from the new process verifies, and the old ones still do
        self.assertOne(self.cs.get("/api/currency/BTC",
                                   headers=bearer(self.read_token("cur-down-after"))), "BTC")
        self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(used)), "BTC")

    def test_02_start_before_the_jwks_is_available(self):
        s = self.s
        token = self.read_token("cur-late-jwks")
        jwks = s.auth.get("/api/auth/jwks.json").body
        fake = FakeJwks()
        cs2 = CryptoServer(s, "late-jwks", {"CURRENCY_JWKS_URL": fake.url})
        t0 = time.monotonic()
        cs2.spawn()
        try:
            self.assertTrue(wait_port(cs2.port, 20), f"not listening; log:\n"
                                                     f"{cs2.log_text()[-2000:]}")
            r = cs2.get("/api/currency/health")
            doc = self.assertJsonError(r, 503, "temporarily_unavailable", "health, no keys yet")
            self.assertIs(doc.get("keys_loaded"), False, doc)
            self.assertIsNotNone(r.header("Retry-After"), r)
            # no keys is the server's problem, not the token's: 503, not 401
            r = cs2.get("/api/currency/BTC", headers=bearer(token))
            self.assertJsonError(r, 503, "temporarily_unavailable", "token before the keys")
            self.assertIsNotNone(r.header("Retry-After"), r)
            self.assertIsNone(r.header("WWW-Authenticate"), r)

            time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
            hits = fake.count()
            self.assertGreaterEqual(hits, 2, "no retry while the JWKS was unavailable")
            self.assertLessEqual(hits, 10, f"{hits} JWKS requests in the first 3 s: "
                                           f"retries without back-off")

            fake.body = jwks
            fake.down = False
            ok, took = self.wait_for(lambda: cs2.get("/api/currency/health").status == 200,
                                     8.0, 0.1)
            self.assertTrue(ok, f"not ready {took:.1f} s after the JWKS came up")
            self.assertOne(cs2.get("/api/currency/BTC", headers=bearer(token)), "BTC")
        finally:
            code = cs2.stop()
            fake.close()
        self.assertCleanExit(cs2, code)
