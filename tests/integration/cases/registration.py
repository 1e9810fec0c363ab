"""POST /api/auth/register against the daemon directly."""

import json
import re

from harness import FORM, form

from .base import Base

B64URL_256 = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Registration(Base):
    def register(self, body, **kw):
        return self.s.register(body, **kw)

    def test_seed_shape_201_without_secret_echo(self):
        cid = self.s.uid("seedshape")
        r = self.register({"client_id": cid, "client_secret": "secret", "app_name": "Test"})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.header("Content-Type").startswith("application/json"))
        doc = r.json()
        self.assertEqual(doc["client_id"], cid)
        self.assertEqual(doc["app_name"], "Test")
        self.assertEqual(doc["scope"], "currency:read")
        self.assertNotIn("client_secret", doc)
        self.assertNotIn(b"secret\"", r.body)
        self.assertNotIn("role", doc)
        self.assertEqual(r.header("Cache-Control"), "no-store")

    def test_omitted_secret_is_generated_and_works(self):
        cid = self.s.uid("gensecret")
        r = self.register({"client_id": cid, "app_name": "gen"})
        self.assertEqual(r.status, 201, r)
        doc = r.json()
        self.assertRegex(doc.get("client_secret", ""), B64URL_256, doc)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        self.assertToken(self.s.token_post(cid, doc["client_secret"]), "generated secret")

    def test_omitted_client_id_is_generated(self):
        secret = "gen-id-" + self.s.run_id + "-secret"
        r = self.register({"client_secret": secret, "app_name": "noid"})
        self.assertEqual(r.status, 201, r)
        cid = r.json().get("client_id")
        self.assertRegex(cid or "", r"^[A-Za-z0-9][A-Za-z0-9._:@-]{7,127}$", r)
        self.assertNotIn("client_secret", r.json())
        self.assertToken(self.s.token_post(cid, secret), "generated client_id")
        # and two such registrations never collide
        r2 = self.register({"client_secret": secret, "app_name": "noid2"})
        self.assertEqual(r2.status, 201, r2)
        self.assertNotEqual(r2.json()["client_id"], cid)

    def test_duplicate_is_409_json(self):
        cid, _ = self.s.new_client("dup")
        r = self.register({"client_id": cid, "client_secret": "another-secret", "app_name": "x"})
        doc = self.assertJsonError(r, 409, "conflict", "duplicate")
        self.assertEqual(doc.get("field"), "client_id")

    def test_invalid_fields_400_naming_the_field(self):
        cases = [
            ("client_id", {"client_id": "has spaces in it", "client_secret": "secret12"}),
            ("client_id", {"client_id": "a" * 200, "client_secret": "secret12"}),
            ("client_id", {"client_id": "x'; DROP TABLE auth.clients;--",
                           "client_secret": "secret12"}),
            ("client_id", {"client_id": "", "client_secret": "secret12"}),
            ("client_id", {"client_id": 42, "client_secret": "secret12"}),
            ("client_id", {"client_id": "-starts-with-dash", "client_secret": "secret12"}),
            ("client_secret", {"client_id": self.s.uid("short"), "client_secret": "abc"}),
            ("client_secret", {"client_id": self.s.uid("notstr"), "client_secret": 12345678}),
            ("client_secret", {"client_id": self.s.uid("ctl"), "client_secret": "abc\u0001defgh"}),
            ("app_name", {"client_id": self.s.uid("longname"), "client_secret": "secret12",
                          "app_name": "n" * 300}),
            ("app_name", {"client_id": self.s.uid("numname"), "client_secret": "secret12",
                          "app_name": ["x"]}),
            ("scope", {"client_id": self.s.uid("wscope"), "client_secret": "secret12",
                       "scope": "currency:read currency:write"}),
            ("scope", {"client_id": self.s.uid("wscope2"), "client_secret": "secret12",
                       "scope": "admin"}),
            ("role", {"client_id": self.s.uid("role"), "client_secret": "secret12",
                      "role": "admin"}),
            ("role", {"client_id": self.s.uid("role2"), "client_secret": "secret12",
                      "roles": ["admin"]}),
        ]
        for field, body in cases:
            with self.subTest(field=field, body=str(body)[:80]):
                r = self.register(body)
                doc = self.assertJsonError(r, 400, "invalid_client_metadata", f"{body}"[:120])
                self.assertEqual(doc.get("field"), field, r)
        # None of them left a row behind, and the table is still there.
        ids = [b["client_id"] for _, b in cases
               if isinstance(b.get("client_id"), str) and b["client_id"].startswith("it")]
        quoted = ", ".join("'" + i + "'" for i in ids)
        rows = self.s.pg.query(f"SELECT count(*) FROM auth.clients WHERE client_id IN ({quoted})")
        self.assertEqual(rows, [["0"]])

    def test_malformed_bodies_400(self):
        for name, raw in [("truncated", b'{"client_id": "abc"'),
                          ("not json", b"client_id=abc"),
                          ("array", b'[{"client_id":"abc","client_secret":"secret12"}]'),
                          ("string", b'"hello"'),
                          ("empty", b""),
                          ("trailing", b'{"client_secret":"secret12"} {}'),
                          ("duplicate keys", b'{"client_id":"a1","client_id":"a2",'
                                             b'"client_secret":"secret12"}')]:
            with self.subTest(name):
                r = self.s.auth.post("/api/auth/register", raw,
                                     {"Content-Type": "application/json"})
                self.assertJsonError(r, 400, "invalid_request", name)

    def test_wrong_content_type_415(self):
        body = json.dumps({"client_id": self.s.uid("ct"), "client_secret": "secret12"})
        for ct in ["text/plain", "application/x-www-form-urlencoded", None]:
            with self.subTest(ct):
                headers = {"Content-Type": ct} if ct else {}
                r = self.s.auth.post("/api/auth/register", body, headers)
                self.assertJsonError(r, 415, None, f"Content-Type {ct}")
        # parameters after the media type are fine
        r = self.s.auth.post("/api/auth/register", json.dumps(
            {"client_id": self.s.uid("ctparam"), "client_secret": "secret12"}),
            {"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 201, r)
        self.s.secrets.add("secret12")

    def test_body_over_cap_413(self):
        big = json.dumps({"client_id": self.s.uid("big"), "client_secret": "secret12",
                          "app_name": "x" * 40000})
        r = self.s.auth.post("/api/auth/register", big, {"Content-Type": "application/json"})
        self.assertJsonError(r, 413, None, "Content-Length over the cap")
        r = self.s.auth.post("/api/auth/register", big, {"Content-Type": "application/json"},
                             chunked=True)
        self.assertJsonError(r, 413, None, "chunked body over the cap")
        # the daemon is fine afterwards
        self.assertEqual(self.s.auth.get("/api/auth/health").status, 200)

    def test_self_registered_client_never_gets_write_or_role(self):
        cid, secret = self.s.new_client("nowrite")
        r = self.s.token_post(cid, secret, [("scope", "currency:write")])
        self.assertOAuthError(r, 400, "invalid_scope", "scope=currency:write")
        r = self.s.token_post(cid, secret, [("scope", "currency:read currency:write")])
        self.assertOAuthError(r, 400, "invalid_scope", "scope=currency:read currency:write")
        doc = self.assertToken(self.s.token_post(cid, secret), "default scope")
        self.assertEqual(doc["scope"], "currency:read")
        from harness import jwt_parts
        _, claims = jwt_parts(doc["access_token"])
        self.assertNotIn("role", claims)
        row = self.s.pg.query(f"SELECT scopes, coalesce(role, '<null>'), registered_by "
                              f"FROM auth.clients WHERE client_id = '{cid}'")
        self.assertEqual(row, [["currency:read", "<null>", "self"]])

    def test_secret_is_stored_hashed(self):
        cid, secret = self.s.new_client("hashed")
        (row,) = self.s.pg.query(f"SELECT secret_hash FROM auth.clients WHERE client_id = '{cid}'")
        self.assertNotIn(secret, row[0])
        self.assertTrue(row[0].startswith("$scrypt$ln=12,"), row[0])

    def test_form_body_is_not_a_registration(self):
        r = self.s.auth.post("/api/auth/register",
                             form({"client_id": self.s.uid("f"), "client_secret": "secret12"}),
                             FORM)
        self.assertJsonError(r, 415, None, "form body")

    def test_concurrent_duplicates_one_wins(self):
        # The duplicate check and the INSERT race: exactly one 201, the rest 409, no 5xx.
        from concurrent.futures import ThreadPoolExecutor
        cid = self.s.uid("race")
        body = {"client_id": cid, "client_secret": "race-secret-" + self.s.run_id}
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: self.register(dict(body)), range(8)))
        statuses = sorted(r.status for r in results)
        self.assertEqual(statuses.count(201), 1, results)
        self.assertEqual(statuses.count(409), 7, results)
        for r in results:
            if r.status == 409:
                self.assertJsonError(r, 409, "conflict")
