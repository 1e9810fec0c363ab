"""Tokens checked by an independent verifier (node jose), and the operator CLI."""

import json

from harness import DEFAULT_AUDIENCE, EXTRA_RESOURCE, FORM, basic, form, jose_verify, jwt_parts

from .base import Base

CC = ("grant_type", "client_credentials")


class VerifiedTokens(Base):
    @classmethod
    def setUpClass(cls):
        import harness
        cls.cid, cls.secret = harness.STACK.new_client("jose")

    def test_two_tokens_verify_with_jose(self):
        docs = [self.assertToken(self.s.token_post(self.cid, self.secret)) for _ in range(2)]
        tokens = [d["access_token"] for d in docs]
        out = jose_verify(tokens)
        kids = out["jwks"]["kids"]
        self.assertTrue(kids and all(isinstance(k, str) and k for k in kids), out["jwks"])
        for key in out["jwks"]["keys"]:
            self.assertEqual((key.get("kty"), key.get("crv")), ("EC", "P-256"), key)
            self.assertNotIn("d", key, "private key material in the JWKS")
        jtis = set()
        for doc, res in zip(docs, out["results"]):
            self.assertTrue(res["ok"], res)
            h, c = res["header"], res["payload"]
            self.assertEqual(h["alg"], "ES256")
            self.assertEqual(h["typ"], "at+jwt")
            self.assertIn(h["kid"], kids)
            self.assertEqual(c["iss"], self.s.issuer)
            self.assertEqual(c["sub"], self.cid)
            self.assertEqual(c["client_id"], self.cid)
            self.assertEqual(c["aud"], DEFAULT_AUDIENCE)
            self.assertEqual(c["scope"], "currency:read")
            self.assertEqual(c["scope"], doc["scope"])
            self.assertIsInstance(c["iat"], int)
            self.assertIsInstance(c["exp"], int)
            self.assertEqual(c["exp"] - c["iat"], 900)
            self.assertEqual(doc["expires_in"], 900)
            self.assertIsInstance(c["jti"], str)
            self.assertGreaterEqual(len(c["jti"]), 16)
            self.assertNotIn("role", c)
            jtis.add(c["jti"])
        self.assertEqual(len(jtis), 2, "jti must be unique per token")

    def test_jose_rejects_a_tampered_token(self):
        # The verifier is not vacuous: a modified payload or signature fails.
        tok = self.assertToken(self.s.token_post(self.cid, self.secret))["access_token"]
        h, p, sig = tok.split(".")
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        out = jose_verify([f"{h}.{p}.{flipped}", tok], audience=("https://wrong.example/",))
        self.assertFalse(out["results"][0]["ok"], out)
        self.assertFalse(out["results"][1]["ok"], "wrong audience must fail")
        self.assertEqual(out["results"][1]["code"], "ERR_JWT_CLAIM_VALIDATION_FAILED")

    def test_resource_audience_verifies(self):
        r = self.s.token_post(self.cid, self.secret, [("resource", EXTRA_RESOURCE)])
        tok = self.assertToken(r)["access_token"]
        res = jose_verify([tok], audience=(EXTRA_RESOURCE,))["results"][0]
        self.assertTrue(res["ok"], res)
        self.assertEqual(res["payload"]["aud"], EXTRA_RESOURCE)

    def test_per_client_ttl_from_cli(self):
        cid = self.s.uid("ttl60")
        p = self.s.cli_create("--id", cid, "--ttl", "60")
        self.assertEqual(p.returncode, 0, p.stderr)
        secret = json.loads(p.stdout)["client_secret"]
        doc = self.assertToken(self.s.token_post(cid, secret))
        self.assertEqual(doc["expires_in"], 60)
        res = jose_verify([doc["access_token"]])["results"][0]
        self.assertTrue(res["ok"], res)
        self.assertEqual(res["payload"]["exp"] - res["payload"]["iat"], 60)
        for bad in ["4", "86401", "abc", ""]:
            with self.subTest(ttl=bad):
                p = self.s.cli_create("--id", self.s.uid("badttl"), "--ttl", bad)
                self.assertEqual(p.returncode, 2, (p.stdout, p.stderr))


class OperatorCli(Base):
    def test_admin_client_create_and_token(self):
        cid = self.s.uid("admin-x")
        p = self.s.cli_create("--id", cid, "--scopes", "currency:read currency:write",
                              "--role", "admin")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, p.stdout)
        doc = json.loads(lines[0])
        self.assertEqual(doc["client_id"], cid)
        self.assertEqual(doc["role"], "admin")
        self.assertEqual(doc["scope"], "currency:read currency:write")
        self.assertRegex(doc["client_secret"], r"^[A-Za-z0-9_-]{43}$")
        secret = doc["client_secret"]
        self.assertNotIn(secret, p.stderr)

        r = self.s.token(form([CC]), {**FORM, "Authorization": basic(cid, secret)})
        tok = self.assertToken(r, "admin token", scope="currency:read currency:write")
        res = jose_verify([tok["access_token"]])["results"][0]
        self.assertTrue(res["ok"], res)
        self.assertEqual(res["payload"]["role"], "admin")
        self.assertEqual(res["payload"]["scope"], "currency:read currency:write")
        # a narrower request is honoured
        r = self.s.token_post(cid, secret, [("scope", "currency:write")])
        self.assertEqual(jwt_parts(self.assertToken(r, scope="currency:write")["access_token"])
                         [1]["role"], "admin")
        (row,) = self.s.pg.query(f"SELECT registered_by, role FROM auth.clients "
                                 f"WHERE client_id = '{cid}'")
        self.assertEqual(row, ["operator", "admin"])

        # again: refused, with a message, and the first secret still works
        p = self.s.cli_create("--id", cid, "--scopes", "currency:read", "--role", "admin")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("already exists", p.stderr)
        self.assertNotIn("client_secret", p.stdout)
        self.assertToken(self.s.token_post(cid, secret), "after duplicate create")

    def test_chosen_secret_is_not_printed(self):
        cid = self.s.uid("cli-chosen")
        secret = "operator-chosen-" + self.s.run_id
        self.s.secrets.add(secret)
        p = self.s.cli_create("--id", cid, "--secret", secret)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(secret, p.stdout + p.stderr)
        self.assertNotIn("client_secret", json.loads(p.stdout))
        self.assertToken(self.s.token_post(cid, secret), "chosen secret")

    def test_invalid_arguments_exit_2(self):
        for args in [("--id", "bad id!"), ("--id", "x" * 200), ("--id", "-dash"),
                     ("--id", "x'; DROP TABLE auth.clients;--"), ("--scopes", "only-scopes"),
                     ("--id", self.s.uid("badrole"), "--role", "Admin!"),
                     ("--id", self.s.uid("badscope"), "--scopes", 'a "b'),
                     ("--id", self.s.uid("short"), "--secret", "abc"),
                     ("--id", self.s.uid("unknown-opt"), "--frobnicate")]:
            with self.subTest(args=args):
                p = self.s.cli_create(*args)
                self.assertEqual(p.returncode, 2, (p.stdout, p.stderr))
                self.assertTrue(p.stderr.strip(), "a message on stderr")
                self.assertEqual(p.stdout.strip(), "")
        self.assertEqual(self.s.pg.query("SELECT count(*) FROM auth.clients WHERE client_id = "
                                         f"'{self.s.uid('badrole')}'"), [["0"]])

    def test_cli_runs_are_sanitizer_clean(self):
        p = self.s.cli_create("--id", self.s.uid("cli-clean"))
        self.assertEqual(p.returncode, 0, p.stderr)
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            self.assertNotIn(marker, p.stderr)
