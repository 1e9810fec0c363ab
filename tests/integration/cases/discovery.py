"""RFC 8414 discovery through nginx, a standard client library, and /metrics."""

import re

from harness import DEFAULT_AUDIENCE, FORM, form, http, node

from .base import Base


class Discovery(Base):
    def test_metadata_through_nginx(self):
        r = self.s.nginx.get("/.well-known/oauth-authorization-server")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("application/json"), r)
        m = r.json()
        iss = self.s.issuer
        self.assertEqual(m["issuer"], iss)
        self.assertEqual(m["token_endpoint"], iss + "/api/auth/token")
        self.assertEqual(m["jwks_uri"], iss + "/api/auth/jwks.json")
        self.assertIn("client_credentials", m["grant_types_supported"])
        for method in ("client_secret_basic", "client_secret_post"):
            self.assertIn(method, m["token_endpoint_auth_methods_supported"])
        self.assertIn("currency:read", m.get("scopes_supported", []))
        if "registration_endpoint" in m:
            self.assertEqual(m["registration_endpoint"], iss + "/api/auth/register")
        # every advertised endpoint answers through nginx
        self.assertEqual(self.s.nginx.get("/api/auth/jwks.json").status, 200)
        r = self.s.nginx.post("/api/auth/token", form({"grant_type": "client_credentials"}), FORM)
        self.assertEqual(r.status, 401, r)

    def test_jwks_through_nginx(self):
        r = self.s.nginx.get("/api/auth/jwks.json")
        self.assertEqual(r.status, 200, r)
        keys = r.json()["keys"]
        self.assertGreaterEqual(len(keys), 1)
        for k in keys:
            self.assertEqual(k["kty"], "EC")
            self.assertEqual(k["crv"], "P-256")
            self.assertIn("kid", k)
            self.assertNotIn("d", k)
            if "alg" in k:
                self.assertEqual(k["alg"], "ES256")
            if "use" in k:
                self.assertEqual(k["use"], "sig")

    def test_openid_client_discovers_and_gets_a_token(self):
        cid, secret = self.s.new_client("oidclib")
        code, doc, err = node("discover.mjs", self.s.issuer, cid, secret, "currency:read")
        self.assertEqual(code, 0, f"{doc} {err[-2000:]}")
        self.assertEqual(doc["metadata"]["issuer"], self.s.issuer)
        tok = doc["token"]
        self.s.tokens.add(tok["access_token"])
        self.assertEqual(tok["token_type"].lower(), "bearer")
        self.assertEqual(tok["scope"], "currency:read")
        self.assertEqual(tok["expires_in"], 900)
        v = doc["verified"]
        self.assertEqual(v["header"]["alg"], "ES256")
        self.assertEqual(v["header"]["typ"], "at+jwt")
        self.assertEqual(v["payload"]["sub"], cid)
        self.assertEqual(v["payload"]["aud"], DEFAULT_AUDIENCE)

    def test_openid_client_wrong_secret_is_an_oauth_error(self):
        cid, _ = self.s.new_client("oidclib-bad")
        code, doc, err = node("discover.mjs", self.s.issuer, cid, "wrong-secret-123")
        self.assertEqual(code, 1, f"{doc} {err[-2000:]}")
        self.assertEqual(doc["stage"], "client_credentials", doc)
        self.assertEqual(doc.get("status"), 401, doc)
        # openid-client surfaces the 401's challenge (RFC 6749 §5.2: Basic)
        # and, where it parsed it, the JSON error.
        schemes = [c.get("scheme", "").lower() for c in doc.get("challenges") or []]
        self.assertTrue("basic" in schemes or
                        (doc.get("body") or {}).get("error") == "invalid_client", doc)
        self.assertEqual((doc.get("response_body") or {}).get("error"), "invalid_client", doc)


class Metrics(Base):
    def test_metrics_on_internal_port(self):
        # make sure there is at least one 200 on the token route
        cid, secret = self.s.new_client("metrics")
        self.assertToken(self.s.token_post(cid, secret))
        r = http("GET", self.s.auth.metrics_port, "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain"), r.header("Content-Type"))
        text = r.body.decode()
        m = re.search(r'^auth_http_requests_total\{route="/api/auth/token",status="200"\} (\d+)$',
                      text, re.M)
        self.assertIsNotNone(m, text[:3000])
        self.assertGreaterEqual(int(m.group(1)), 1)
        m = re.search(r"^auth_tokens_issued_total (\d+)$", text, re.M)
        self.assertIsNotNone(m, text[:3000])
        self.assertGreaterEqual(int(m.group(1)), 1)
        self.assertIn("# TYPE auth_tokens_issued_total counter", text)
        self.assertRegex(text, r'auth_http_requests_total\{route="/api/auth/token",status="401"\}')
        self.assertIn("auth_http_request_duration_seconds_bucket", text)
        # internal health is there too
        self.assertEqual(http("GET", self.s.auth.metrics_port, "/health").status, 200)

    def test_metrics_never_exposed_through_nginx(self):
        for path in ["/metrics", "/metrics/", "/metricsx"]:
            with self.subTest(path):
                r = self.s.nginx.get(path)
                self.assertJsonError(r, 404, "not_found", f"nginx {path}")
                self.assertNotIn(b"auth_http_requests_total", r.body)
        r = self.s.auth.get("/metrics")
        self.assertJsonError(r, 404, "not_found", "API port /metrics")
