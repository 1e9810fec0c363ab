"""POST /api/auth/token: the four client-authentication forms and every error."""

import base64

from harness import DEFAULT_AUDIENCE, EXTRA_RESOURCE, FORM, basic, form, http, jwt_parts

from .base import Base

CC = ("grant_type", "client_credentials")


class ClientAuthentication(Base):
    @classmethod
    def setUpClass(cls):
        import harness
        s = harness.STACK
        # An id and a secret that both need percent-encoding inside Basic.
        cls.odd_id = s.uid("odd:id@x")
        cls.odd_secret = "p@ss:w+rd/\u00e9"
        r = s.register({"client_id": cls.odd_id, "client_secret": cls.odd_secret,
                        "app_name": "odd"})
        assert r.status == 201, r
        cls.cid, cls.secret = s.new_client("forms")

    def check_claims(self, doc, cid):
        _, claims = jwt_parts(doc["access_token"])
        self.assertEqual(claims["sub"], cid)
        self.assertEqual(claims["client_id"], cid)
        self.assertEqual(claims["scope"], doc["scope"])

    def test_basic_with_percent_encoded_credentials(self):
        r = self.s.token(form([CC]), {**FORM, "Authorization": basic(self.odd_id, self.odd_secret)})
        doc = self.assertToken(r, "client_secret_basic", scope="currency:read")
        self.assertEqual(doc["expires_in"], 900)
        self.check_claims(doc, self.odd_id)

    def test_basic_plain(self):
        r = self.s.token(form([CC]), {**FORM, "Authorization": basic(self.cid, self.secret)})
        self.check_claims(self.assertToken(r, "basic"), self.cid)
        # the scheme name is case-insensitive (RFC 7235 §2.1)
        auth = basic(self.cid, self.secret).replace("Basic", "basic")
        self.assertToken(self.s.token(form([CC]), {**FORM, "Authorization": auth}), "basic lc")
        # client_id may repeat the Basic id in the body
        r = self.s.token(form([CC, ("client_id", self.cid)]),
                         {**FORM, "Authorization": basic(self.cid, self.secret)})
        self.assertToken(r, "basic + same client_id in body")

    def test_basic_secret_not_form_encoded_is_refused(self):
        # RFC 6749 §2.3.1: the server decodes; a raw "+" is a space, so the
        # raw secret is not this client's secret.
        raw = base64.b64encode(f"{self.odd_id.replace(':', '%3A')}:{self.odd_secret}"
                               .encode()).decode()
        r = self.s.token(form([CC]), {**FORM, "Authorization": "Basic " + raw})
        self.assertOAuthError(r, 401, "invalid_client", "raw '+' in Basic secret")

    def test_client_secret_post(self):
        r = self.s.token_post(self.odd_id, self.odd_secret)
        self.check_claims(self.assertToken(r, "client_secret_post", scope="currency:read"),
                          self.odd_id)

    def test_seed_json_body(self):
        r = self.s.token({"client_id": self.cid, "client_secret": self.secret})
        self.check_claims(self.assertToken(r, "seed JSON", scope="currency:read"), self.cid)
        r = self.s.token({"grant_type": "client_credentials", "client_id": self.odd_id,
                          "client_secret": self.odd_secret})
        self.check_claims(self.assertToken(r, "JSON with grant_type"), self.odd_id)

    def test_seed_form_username_password(self):
        r = self.s.token(form({"username": self.cid, "password": self.secret}), FORM)
        self.check_claims(self.assertToken(r, "seed username/password"), self.cid)
        r = self.s.token(form({"grant_type": "password", "username": self.cid,
                               "password": self.secret}), FORM)
        self.check_claims(self.assertToken(r, "grant_type=password username/password"), self.cid)


class TokenErrors(Base):
    @classmethod
    def setUpClass(cls):
        import harness
        cls.cid, cls.secret = harness.STACK.new_client("errors")

    def post(self, params, headers=None):
        return self.s.token(form(params), {**FORM, **(headers or {})})

    def good(self, *extra):
        return [CC, ("client_id", self.cid), ("client_secret", self.secret), *extra]

    def test_no_credentials_401(self):
        self.assertOAuthError(self.post([CC]), 401, "invalid_client", "no credentials")
        self.assertOAuthError(self.post([CC, ("client_id", self.cid)]), 401, "invalid_client",
                              "client_id without secret")

    def test_wrong_secret_401(self):
        self.assertOAuthError(self.post([CC, ("client_id", self.cid),
                                         ("client_secret", "not-the-secret")]),
                              401, "invalid_client", "post, wrong secret")
        self.assertOAuthError(self.post([CC], {"Authorization": basic(self.cid, "wrong!")}),
                              401, "invalid_client", "basic, wrong secret")
        self.assertOAuthError(self.s.token({"client_id": self.cid, "client_secret": "nope"}),
                              401, "invalid_client", "json, wrong secret")
        # and the right one still works afterwards (no lockout by a cached failure)
        self.assertToken(self.post(self.good()), "right secret after wrong ones")

    def test_unknown_client_401(self):
        self.assertOAuthError(self.post([CC, ("client_id", self.s.uid("nobody")),
                                         ("client_secret", self.secret)]),
                              401, "invalid_client", "unknown client")
        self.assertOAuthError(self.post([CC], {"Authorization": basic("no-such-client", "x")}),
                              401, "invalid_client", "unknown client basic")

    def test_bearer_scheme_401(self):
        r = self.post([CC], {"Authorization": "Bearer abc.def.ghi"})
        self.assertOAuthError(r, 401, "invalid_client", "Bearer scheme")

    def test_two_auth_methods_400(self):
        r = self.post(self.good(), {"Authorization": basic(self.cid, self.secret)})
        self.assertOAuthError(r, 400, "invalid_request", "basic + client_secret_post")
        r = self.post([CC, ("username", self.cid), ("password", self.secret)],
                      {"Authorization": basic(self.cid, self.secret)})
        self.assertOAuthError(r, 400, "invalid_request", "basic + username/password")
        r = self.post(self.good(("username", self.cid), ("password", self.secret)))
        self.assertOAuthError(r, 400, "invalid_request", "post + username/password")
        # Basic and a different client_id in the body
        other = self.s.uid("other")
        r = self.post([CC, ("client_id", other)], {"Authorization": basic(self.cid, self.secret)})
        self.assertOAuthError(r, 400, "invalid_request", "basic + different body client_id")

    def test_missing_grant_type_400(self):
        r = self.post([("client_id", self.cid), ("client_secret", self.secret)])
        self.assertOAuthError(r, 400, "invalid_request", "form without grant_type")
        r = self.post([], {"Authorization": basic(self.cid, self.secret)})
        self.assertOAuthError(r, 400, "invalid_request", "empty form with Basic")

    def test_unsupported_grant_type_400(self):
        for gt in ["authorization_code", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer",
                   "CLIENT_CREDENTIALS", ""]:
            with self.subTest(gt):
                r = self.post([("grant_type", gt), ("client_id", self.cid),
                               ("client_secret", self.secret), ("code", "x")])
                if gt == "":
                    # an empty grant_type is no grant_type: invalid_request or unsupported
                    doc = self.assertOAuthError(r, 400, None, "grant_type=")
                    self.assertIn(doc["error"], ("invalid_request", "unsupported_grant_type"))
                else:
                    self.assertOAuthError(r, 400, "unsupported_grant_type", f"grant_type={gt}")

    def test_repeated_parameter_400(self):
        # RFC 6749 §3.2: parameters must not be included more than once
        # (good() already holds grant_type, client_id and client_secret once).
        for name, extra in [("grant_type", [CC]),
                            ("scope", [("scope", "currency:read")] * 2),
                            ("scope, different values", [("scope", "currency:read"),
                                                         ("scope", "currency:write")]),
                            ("client_id", [("client_id", self.cid)]),
                            ("client_secret", [("client_secret", self.secret)])]:
            with self.subTest(name):
                self.assertOAuthError(self.post(self.good(*extra)), 400, "invalid_request",
                                      f"{name} twice")

    def test_malformed_form_400(self):
        for body in ["grant_type=client_credentials&client_id=%zz&client_secret=x",
                     f"grant_type=client_credentials&client_id={self.cid}&client_secret=%4",
                     f"grant_type=client_credentials&client_id={self.cid}%00&client_secret=x"]:
            with self.subTest(body):
                r = self.s.token(body, FORM)
                self.assertOAuthError(r, 400, "invalid_request", body)

    def test_malformed_basic_400(self):
        for value in ["Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                      "Basic " + base64.b64encode(b":secretonly").decode(),
                      "Basic " + base64.b64encode(b"id%zz:secret").decode()]:
            with self.subTest(value):
                self.assertOAuthError(self.post([CC], {"Authorization": value}), 400,
                                      "invalid_request", value)

    def test_scope_not_allowed_400(self):
        for scope in ["currency:write", "admin", "currency:read currency:write", "openid"]:
            with self.subTest(scope):
                self.assertOAuthError(self.post(self.good(("scope", scope))), 400,
                                      "invalid_scope", f"scope={scope}")

    def test_malformed_scope_400(self):
        for scope in ['currency:read "x', 'a\\b', "caf\u00e9"]:
            with self.subTest(scope):
                self.assertOAuthError(self.post(self.good(("scope", scope))), 400,
                                      "invalid_scope", f"scope={scope!r}")

    def test_scope_subset_and_normalised(self):
        doc = self.assertToken(self.post(self.good(("scope", "  currency:read  currency:read "))),
                               "duplicate/space scope")
        self.assertEqual(doc["scope"], "currency:read")

    def test_unknown_resource_invalid_target(self):
        for res in ["https://unknown.example/api", "not-a-uri", EXTRA_RESOURCE + "#frag",
                    EXTRA_RESOURCE + "/sub", "/api/currency"]:
            with self.subTest(res):
                self.assertOAuthError(self.post(self.good(("resource", res))), 400,
                                      "invalid_target", f"resource={res}")

    def test_known_resource_sets_aud(self):
        doc = self.assertToken(self.post(self.good(("resource", EXTRA_RESOURCE))), "resource")
        self.assertEqual(jwt_parts(doc["access_token"])[1]["aud"], EXTRA_RESOURCE)
        doc = self.assertToken(self.post(self.good(("resource", DEFAULT_AUDIENCE))), "resource")
        self.assertEqual(jwt_parts(doc["access_token"])[1]["aud"], DEFAULT_AUDIENCE)
        doc = self.assertToken(self.post(self.good()), "no resource")
        self.assertEqual(jwt_parts(doc["access_token"])[1]["aud"], DEFAULT_AUDIENCE)

    def test_two_resources_give_aud_array(self):
        doc = self.assertToken(self.post(self.good(("resource", DEFAULT_AUDIENCE),
                                                   ("resource", EXTRA_RESOURCE))), "2 resources")
        self.assertEqual(jwt_parts(doc["access_token"])[1]["aud"],
                         [DEFAULT_AUDIENCE, EXTRA_RESOURCE])

    def test_unsupported_content_type_400(self):
        body = form(self.good())
        for ct in ["text/plain", "multipart/form-data; boundary=x", "application/xml", None]:
            with self.subTest(ct):
                r = self.s.token(body, {"Content-Type": ct} if ct else {})
                self.assertOAuthError(r, 400, "invalid_request", f"Content-Type {ct}")
        # a charset parameter on the right type is fine
        r = self.s.token(body, {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
        self.assertToken(r, "form with charset")

    def test_json_non_string_member_400(self):
        r = self.s.token({"client_id": self.cid, "client_secret": 12345})
        self.assertOAuthError(r, 400, "invalid_request", "client_secret: number")
        r = self.s.token(b'["x"]', {"Content-Type": "application/json"})
        self.assertOAuthError(r, 400, "invalid_request", "JSON array")
        r = self.s.token(b'{"client_id":', {"Content-Type": "application/json"})
        self.assertOAuthError(r, 400, "invalid_request", "truncated JSON")

    def test_get_token_405_with_allow(self):
        for method in ["GET", "PUT", "DELETE"]:
            with self.subTest(method):
                r = http(method, self.s.auth.port, "/api/auth/token")
                self.assertJsonError(r, 405, "method_not_allowed", f"{method} /api/auth/token")
                self.assertEqual(r.header("Allow"), "POST", r)

    def test_unknown_route_404(self):
        for path in ["/api/auth/nope", "/api/auth/token/", "/", "/api/auth/tokens",
                     "/metrics"]:
            with self.subTest(path):
                r = self.s.auth.get(path)
                self.assertJsonError(r, 404, "not_found", f"GET {path}")
        r = self.s.auth.post("/api/auth/nope", "{}")
        self.assertJsonError(r, 404, "not_found", "POST /api/auth/nope")

    def test_errors_through_nginx_keep_status_and_headers(self):
        r = self.s.nginx.post("/api/auth/token", form([CC]), FORM)
        self.assertOAuthError(r, 401, "invalid_client", "through nginx")
        r = self.s.nginx.post("/api/auth/token", form(self.good()), FORM)
        doc = self.assertToken(r, "through nginx")
        self.s.tokens.add(doc["access_token"])
        self.assertEqual(doc["scope"], "currency:read")


class ConcurrentTokens(Base):
    def test_parallel_token_requests(self):
        from concurrent.futures import ThreadPoolExecutor
        clients = [self.s.new_client(f"par{i}") for i in range(4)]

        def one(i):
            cid, secret = clients[i % 4]
            if i % 2:
                return cid, self.s.token(form([CC]), {**FORM, "Authorization": basic(cid, secret)})
            return cid, self.s.token_post(cid, secret)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(96)))
        for cid, r in results:
            doc = self.assertToken(r, "parallel")
            self.assertEqual(jwt_parts(doc["access_token"])[1]["sub"], cid)
        jtis = {jwt_parts(r.json()["access_token"])[1]["jti"] for _, r in results}
        self.assertEqual(len(jtis), 96)
        self.assertTrue(self.s.auth.alive())
